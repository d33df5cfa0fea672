//! Pruning a search's trials. After each CV fold, as Optuna's `MedianPruner`: a trial whose
//! best running mean of the primary metric so far is worse than the median of the finished
//! trials' running means at the same fold stops there (once `startup` trials have finished).
//! The last fold is never pruned: the trial is complete by then.
//!
//! Iterative models (boosters, networks) can also be judged inside their first fold, on the
//! validation loss of their learning curve ([`RoundRule`]):
//! - `prune = "rounds"`: from round [`WARMUP_ROUNDS`] on, a loss worse than the median of the
//!   finished trials' first-fold losses at that round stops the trial (median pruning per
//!   round, as Optuna's pruner does with intermediate values);
//! - `prune = "asha"`: asynchronous successive halving (Li et al., as Optuna's
//!   `SuccessiveHalvingPruner`). Rungs sit after `min_rounds * reduction_factor^k` rounds; a
//!   trial reaching a rung records its loss there and goes on only if that loss is among the
//!   best `1 / reduction_factor` of every loss recorded at that rung, by finished, pruned and
//!   running trials alike (the first trial at a rung always goes on).
//!
//! Both favour trials that learn fast (a low learning rate starts slow), so neither is the
//! default.

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

/// How rounds of an iterative model's first fold are judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RoundRule {
    /// Only folds are judged (`prune = "median"`).
    Off,
    /// Against the median of the finished trials at the same round (`prune = "rounds"`).
    Median,
    /// Successive halving at rungs (`prune = "asha"`).
    Asha {
        min_rounds: i64,
        reduction_factor: usize,
    },
}

/// Defaults of `prune = "asha"`: the first rung after this many rounds...
pub const ASHA_MIN_ROUNDS: i64 = 10;
/// ...and each rung keeps the best third of what reached it.
pub const ASHA_REDUCTION_FACTOR: usize = 3;

/// What a search has seen of its trials, shared by the search and the runs it asks for: the
/// finished trials' running means per fold, and their (or, for ASHA, every trial's) first-fold
/// losses by round.
#[derive(Debug)]
pub struct Pruner {
    startup: usize,
    higher_is_better: bool,
    metric: String,
    /// Per finished trial: the running mean of the metric after each fold.
    finished: Mutex<Vec<Vec<f64>>>,
    /// Per finished trial of an iterative kind: its first fold's validation loss by round
    /// (`prune = "rounds"`).
    curves: Mutex<Vec<Vec<f64>>>,
    /// Per ASHA rung: the losses every trial that reached it had there.
    rungs: Mutex<Vec<Vec<f64>>>,
    rounds: RoundRule,
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

impl Pruner {
    pub fn new(startup: usize, higher_is_better: bool, metric: &str, rounds: RoundRule) -> Pruner {
        Pruner {
            startup,
            higher_is_better,
            metric: metric.to_string(),
            finished: Mutex::new(Vec::new()),
            curves: Mutex::new(Vec::new()),
            rungs: Mutex::new(Vec::new()),
            rounds,
        }
    }

    /// Whether the first fold's rounds are judged, so that the runs it judges must stream their
    /// learning curve.
    pub fn judges_rounds(&self) -> bool {
        self.rounds != RoundRule::Off
    }

    /// A trial of this sweep finished every fold, with this first-fold validation loss by
    /// round (ASHA recorded its rungs as they were reached).
    pub fn record_curve(&self, losses: Vec<f64>) {
        if self.rounds == RoundRule::Median && !losses.is_empty() {
            let mut curves = self.curves.lock().unwrap_or_else(|e| e.into_inner());
            curves.push(losses);
        }
    }

    /// A trial an earlier sweep of the search trained, with its first-fold validation loss by
    /// round as the store holds it: the median takes finished trials' curves, ASHA every
    /// trial's losses at the rungs it reached.
    pub fn resume_curve(&self, losses: Vec<f64>, pruned: bool) {
        match self.rounds {
            RoundRule::Median if !pruned => self.record_curve(losses),
            RoundRule::Asha { .. } => {
                for (round, value) in losses.into_iter().enumerate() {
                    if let Some(rung) = self.rung_at(round as i64) {
                        self.join_rung(rung, value);
                    }
                }
            }
            _ => {}
        }
    }

    /// The ASHA rung after round `round` (0-based), if one is there.
    fn rung_at(&self, round: i64) -> Option<usize> {
        let RoundRule::Asha {
            min_rounds,
            reduction_factor,
        } = self.rounds
        else {
            return None;
        };
        let mut at = min_rounds.max(1);
        for rung in 0.. {
            if round + 1 == at {
                return Some(rung);
            }
            if round + 1 < at {
                return None;
            }
            at = at.saturating_mul(reduction_factor.max(2) as i64);
        }
        None
    }

    /// Adds a trial's loss at a rung; returns the losses recorded there, sorted.
    fn join_rung(&self, rung: usize, value: f64) -> Vec<f64> {
        let mut rungs = self.rungs.lock().unwrap_or_else(|e| e.into_inner());
        if rungs.len() <= rung {
            rungs.resize(rung + 1, Vec::new());
        }
        rungs[rung].push(value);
        let mut sorted = rungs[rung].clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    /// At `round` of the first fold, with validation loss `value` of `metric`: why the trial
    /// stops, if it does. A run passes each round's loss once, of one metric.
    pub fn check_round(&self, round: i64, metric: &str, value: f64) -> Option<String> {
        if !judged_metric(metric) || !value.is_finite() {
            return None;
        }
        match self.rounds {
            RoundRule::Off => None,
            RoundRule::Median => self.below_median_at_round(round, metric, value),
            RoundRule::Asha {
                reduction_factor, ..
            } => {
                let rung = self.rung_at(round)?;
                let at = self.join_rung(rung, value);
                let kept = (at.len() / reduction_factor).max(1);
                let cut = at[kept - 1];
                (value > cut).then(|| {
                    format!(
                        "at rung {rung} (round {round} of fold 1): {metric} {value:.4} is not among the best {kept} of the {} trials that reached it (cut {cut:.4})",
                        at.len()
                    )
                })
            }
        }
    }

    fn below_median_at_round(&self, round: i64, metric: &str, value: f64) -> Option<String> {
        if round < WARMUP_ROUNDS {
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
        let p = Pruner::new(3, true, "accuracy", RoundRule::Off);
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
        let lower = Pruner::new(1, false, "mae", RoundRule::Off);
        lower.record(&[1.0, 1.0]);
        assert!(lower.check(1, 2, &[1.5]).is_some());
    }

    #[test]
    fn rounds_are_judged_on_validation_losses_of_finished_curves() {
        let p = Pruner::new(2, true, "accuracy", RoundRule::Median);
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
        let folds_only = Pruner::new(1, true, "accuracy", RoundRule::Off);
        folds_only.record_curve(vec![1.0; w + 3]);
        assert_eq!(folds_only.check_round(11, "valid_mlogloss", 9.0), None);
    }

    #[test]
    fn asha_keeps_the_best_share_of_each_rung() {
        let asha = RoundRule::Asha {
            min_rounds: 2,
            reduction_factor: 2,
        };
        let p = Pruner::new(5, true, "accuracy", asha);
        // Rungs after 2, 4, 8 rounds: rounds 1, 3, 7 (0-based).
        assert_eq!(p.check_round(0, "valid_loss", 9.0), None, "not a rung");
        assert_eq!(
            p.check_round(1, "valid_loss", 1.0),
            None,
            "the first always goes on"
        );
        assert!(
            p.check_round(1, "valid_loss", 2.0).is_some(),
            "worse than the best of 2"
        );
        assert_eq!(p.check_round(1, "valid_loss", 0.5), None);
        // Four at rung 0 (1.0, 2.0, 0.5, 0.9): the best two go on.
        assert_eq!(p.check_round(1, "valid_loss", 0.9), None);
        let why = p.check_round(1, "valid_loss", 1.5).unwrap();
        assert!(why.contains("best 2 of the 5 trials"), "{why}");
        assert_eq!(p.check_round(3, "valid_loss", 3.0), None, "alone at rung 1");
        assert!(p.check_round(7, "valid_loss", 3.0).is_none());
        assert_eq!(p.check_round(1, "valid_accuracy", 0.0), None, "not a loss");
        // An earlier sweep's trial joins every rung it reached, pruned or not.
        let resumed = Pruner::new(5, true, "accuracy", asha);
        resumed.resume_curve(vec![5.0, 0.1, 5.0, 5.0], true);
        assert!(resumed.check_round(1, "valid_loss", 0.2).is_some());
        assert!(resumed.check_round(3, "valid_loss", 5.5).is_some());
        // The median rule takes only finished trials' curves; ASHA none from live trials.
        let median = Pruner::new(1, true, "accuracy", RoundRule::Median);
        median.resume_curve(vec![1.0; 20], true);
        assert_eq!(median.check_round(12, "valid_loss", 9.0), None);
        p.record_curve(vec![0.0; 8]);
        assert_eq!(
            p.check_round(3, "valid_loss", 2.9),
            None,
            "a finished trial's curve did not join"
        );
    }
}
