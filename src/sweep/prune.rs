//! Median pruning of a search's trials, as Optuna's `MedianPruner`: after each CV fold, a
//! trial whose best running mean of the primary metric so far is worse than the median of the
//! finished trials' running means at the same fold stops there (once `startup` trials have
//! finished).
//! The last fold is never pruned: the trial is complete by then. With `prune = "rounds"`,
//! iterative models (boosters, networks) are judged within the first fold too: from round
//! [`WARMUP_ROUNDS`] on, a validation loss worse than the median of the finished trials'
//! first-fold losses at that round stops the trial (median pruning per round, as Optuna's
//! pruner does with intermediate values; not ASHA's rungs). It favours trials that learn fast
//! (a low learning rate starts slow), so it is not the default.

use std::sync::Mutex;

/// Why and where a trial stopped: kept in its summary, so that replay stops it at the same
/// fold.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pruned {
    /// CV folds it trained.
    pub folds: usize,
    pub reason: String,
    /// Pruned at this round of its first fold's learning curve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<i64>,
}

/// Whether a learning curve's metric is a validation loss (lower is better), which the
/// per-round pruning judges.
pub fn judged_metric(name: &str) -> bool {
    name.starts_with("valid_")
        && ["loss", "rmse", "mae", "l1", "l2", "error"]
            .iter()
            .any(|k| name.contains(k))
}

/// The finished trials' running means, shared by a search and the runs it asks for.
#[derive(Debug)]
pub struct MedianPruner {
    startup: usize,
    higher_is_better: bool,
    metric: String,
    /// Per finished trial: the running mean of the metric after each fold.
    finished: Mutex<Vec<Vec<f64>>>,
    /// Per finished trial of an iterative kind: its first fold's validation loss by round.
    curves: Mutex<Vec<Vec<f64>>>,
    /// Whether rounds of the first fold are judged too (`prune = "rounds"`).
    by_rounds: bool,
}

/// Rounds of the first fold that are never judged.
pub const WARMUP_ROUNDS: i64 = 10;

/// Running means of fold values: after fold 1, 2, ...
pub fn running_means(values: &[f64]) -> Vec<f64> {
    let mut sum = 0.0;
    (values.iter().enumerate())
        .map(|(i, v)| {
            sum += v;
            sum / (i + 1) as f64
        })
        .collect()
}

impl MedianPruner {
    pub fn new(
        startup: usize,
        higher_is_better: bool,
        metric: &str,
        by_rounds: bool,
    ) -> MedianPruner {
        MedianPruner {
            startup,
            higher_is_better,
            metric: metric.to_string(),
            finished: Mutex::new(Vec::new()),
            curves: Mutex::new(Vec::new()),
            by_rounds,
        }
    }

    /// A finished trial's first-fold validation loss by round.
    pub fn record_curve(&self, losses: Vec<f64>) {
        if !losses.is_empty() {
            let mut curves = self.curves.lock().unwrap_or_else(|e| e.into_inner());
            curves.push(losses);
        }
    }

    /// At `round` of the first fold, with validation loss `value` of `metric`: why the trial
    /// stops, if it does.
    pub fn check_round(&self, round: i64, metric: &str, value: f64) -> Option<String> {
        let warm = self.by_rounds && round >= WARMUP_ROUNDS;
        if !warm || !judged_metric(metric) || !value.is_finite() {
            return None;
        }
        let curves = self.curves.lock().unwrap_or_else(|e| e.into_inner());
        let mut at: Vec<f64> = (curves.iter())
            .filter_map(|c| c.get(usize::try_from(round).ok()?).copied())
            .filter(|v| v.is_finite())
            .collect();
        if at.len() < self.startup.max(1) {
            return None;
        }
        let median = median(&mut at);
        (value > median).then(|| {
            format!(
                "at round {round} of fold 1: {metric} {value:.4} is worse than the median {median:.4} of {} finished trials",
                at.len()
            )
        })
    }

    /// A trial that finished every fold, with its metric per fold.
    pub fn record(&self, fold_values: &[f64]) {
        let mut finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        finished.push(running_means(fold_values));
    }

    /// After fold `done` (1-based) of `total`, with the trial's metric so far: why it stops,
    /// if it does.
    pub fn check(&self, done: usize, total: usize, fold_values: &[f64]) -> Option<String> {
        if done >= total || fold_values.is_empty() {
            return None;
        }
        // The trial's best running mean so far, as Optuna's MedianPruner takes the trial's best
        // intermediate value against the others' values at this step.
        let means = running_means(fold_values);
        let best = |a: f64, b: f64| {
            if self.higher_is_better {
                a.max(b)
            } else {
                a.min(b)
            }
        };
        let running = means.iter().copied().reduce(best)?;
        let finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        let mut at: Vec<f64> = finished
            .iter()
            .filter_map(|m| m.get(done - 1).copied())
            .filter(|v| v.is_finite())
            .collect();
        if at.len() < self.startup.max(1) {
            return None;
        }
        let n = at.len();
        let median = median(&mut at);
        let worse = if self.higher_is_better {
            running < median
        } else {
            running > median
        };
        worse.then(|| {
            format!(
                "after fold {done} of {total}: {} {running:.4} is worse than the median {median:.4} of {n} finished trials",
                self.metric
            )
        })
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prunes_below_the_median_after_the_startup_trials() {
        let p = MedianPruner::new(3, true, "accuracy", false);
        p.record(&[0.6, 0.6, 0.6]);
        p.record(&[0.7, 0.7, 0.7]);
        assert_eq!(
            p.check(1, 3, &[0.1]),
            None,
            "two finished: still starting up"
        );
        p.record(&[0.8, 0.8, 0.8]);
        assert!(p
            .check(1, 3, &[0.65])
            .unwrap()
            .contains("median 0.7000 of 3"));
        assert_eq!(p.check(1, 3, &[0.75]), None);
        assert_eq!(
            p.check(3, 3, &[0.1, 0.1, 0.1]),
            None,
            "the last fold is complete"
        );
        let lower = MedianPruner::new(1, false, "mae", false);
        lower.record(&[1.0, 1.0]);
        assert!(lower.check(1, 2, &[1.5]).is_some());
    }

    #[test]
    fn rounds_are_judged_on_validation_losses_of_finished_curves() {
        let p = MedianPruner::new(2, true, "accuracy", true);
        let w = WARMUP_ROUNDS as usize;
        p.record_curve(vec![1.0; w + 3]);
        assert_eq!(
            p.check_round(12, "valid_mlogloss", 2.0),
            None,
            "one curve only"
        );
        p.record_curve(vec![1.2; w + 2]);
        assert!(p.check_round(11, "valid_mlogloss", 1.15).is_some());
        assert_eq!(p.check_round(11, "valid_mlogloss", 1.05), None);
        assert_eq!(p.check_round(5, "valid_mlogloss", 9.0), None, "warming up");
        assert_eq!(
            p.check_round(12, "valid_mlogloss", 9.0),
            None,
            "one curve reached it"
        );
        assert_eq!(p.check_round(11, "valid_accuracy", 0.0), None, "not a loss");
        let folds_only = MedianPruner::new(1, true, "accuracy", false);
        folds_only.record_curve(vec![1.0; w + 3]);
        assert_eq!(folds_only.check_round(11, "valid_mlogloss", 9.0), None);
    }
}
