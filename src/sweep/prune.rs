//! Median pruning of a search's trials, as Optuna's `MedianPruner`: after each CV fold, a
//! trial whose running mean of the primary metric is worse than the median of the finished
//! trials' running means at the same fold stops there (once `startup` trials have finished).
//! The last fold is never pruned: the trial is complete by then.

use std::sync::Mutex;

/// Why and where a trial stopped: kept in its summary, so that replay stops it at the same
/// fold.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pruned {
    /// CV folds it trained.
    pub folds: usize,
    pub reason: String,
}

/// The finished trials' running means, shared by a search and the runs it asks for.
#[derive(Debug)]
pub struct MedianPruner {
    startup: usize,
    higher_is_better: bool,
    metric: String,
    /// Per finished trial: the running mean of the metric after each fold.
    finished: Mutex<Vec<Vec<f64>>>,
}

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
    pub fn new(startup: usize, higher_is_better: bool, metric: &str) -> MedianPruner {
        MedianPruner {
            startup,
            higher_is_better,
            metric: metric.to_string(),
            finished: Mutex::new(Vec::new()),
        }
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
        let running = *running_means(fold_values).last()?;
        let finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        let mut at: Vec<f64> = finished
            .iter()
            .filter_map(|m| m.get(done - 1).copied())
            .filter(|v| v.is_finite())
            .collect();
        if at.len() < self.startup.max(1) {
            return None;
        }
        at.sort_by(f64::total_cmp);
        let n = at.len();
        let median = if n % 2 == 1 {
            at[n / 2]
        } else {
            (at[n / 2 - 1] + at[n / 2]) / 2.0
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prunes_below_the_median_after_the_startup_trials() {
        let p = MedianPruner::new(3, true, "accuracy");
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
        let lower = MedianPruner::new(1, false, "mae");
        lower.record(&[1.0, 1.0]);
        assert!(lower.check(1, 2, &[1.5]).is_some());
    }
}
