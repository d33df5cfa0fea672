//! How a sweep chooses its configs: an ask/tell loop. A [`Strategy`] yields the next config to
//! train given the results told so far; the sweep's workers ask, train and tell. Grid and random
//! search are [`Listed`] (their configs are drawn when the sweep files are read, so a seed fixes
//! them); [`TopEnsembles`] follows another strategy and then asks for ensembles of its best runs.
//! [`Tpe`] searches one sweep entry trial by trial; [`Chain`] runs strategies one after another.

use crate::config::Study;
use crate::models::{self, ModelConfig};
use crate::sweep::prune::MedianPruner;
use crate::tpe::{Observed, Sampler};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a strategy answers when asked for the next config.
#[derive(Debug, Clone, PartialEq)]
pub enum Ask {
    /// Train this config next.
    Next(ModelConfig),
    /// The next config depends on runs still training: ask again after the next tell.
    Wait,
    /// Nothing more to train.
    Done,
}

/// A trained run, as a strategy hears of it.
#[derive(Debug, Clone)]
pub struct Told<'a> {
    pub config: &'a ModelConfig,
    /// Its run, "t3".
    pub version: &'a str,
    /// The mean of the sweep's primary metric over the folds; none when the run failed.
    pub score: Option<f64>,
    /// The primary metric of each fold it trained.
    pub folds: &'a [f64],
    /// Its search's pruner stopped it early (its score is of the folds it trained).
    pub pruned: bool,
}

/// Chooses a sweep's configs one at a time.
pub trait Strategy: Send {
    /// The next config to train.
    fn ask(&mut self) -> Ask;
    /// A run asked for earlier has ended.
    fn tell(&mut self, told: &Told);
    /// The most configs it will still yield, when it knows (for the progress bar).
    fn remaining(&self) -> Option<usize>;
    /// What the run of a config it just gave records of the search (`search` in its record,
    /// tags `runner.search` and `runner.trial`), if it searched for it.
    fn annotate(&self, _config: &ModelConfig) -> Option<serde_json::Value> {
        None
    }
    /// The pruner that may stop the run of a config it just gave after a fold.
    fn pruner(&self, _config: &ModelConfig) -> Option<Arc<MedianPruner>> {
        None
    }
}

/// The configs of the sweep files, in order: grid search, or the seeded random sample of it.
/// An ensemble waits until the members it names from this sweep have been told.
pub struct Listed {
    queue: VecDeque<ModelConfig>,
    /// Every config name of the sweep.
    listed: BTreeSet<String>,
    told: BTreeSet<String>,
}

impl Listed {
    pub fn new(configs: Vec<ModelConfig>) -> Listed {
        Listed {
            listed: configs.iter().map(|c| c.name.clone()).collect(),
            queue: configs.into(),
            told: BTreeSet::new(),
        }
    }

    /// Whether `c` names a member this sweep trains that has not been told yet.
    fn waits_for_members(&self, c: &ModelConfig) -> bool {
        c.members.iter().any(|m| {
            m.from_run.is_none() && self.listed.contains(&m.name) && !self.told.contains(&m.name)
        })
    }
}

impl Strategy for Listed {
    fn ask(&mut self) -> Ask {
        match self.queue.front() {
            None => Ask::Done,
            Some(next) if self.waits_for_members(next) => Ask::Wait,
            Some(_) => self.queue.pop_front().map_or(Ask::Done, Ask::Next),
        }
    }

    fn tell(&mut self, told: &Told) {
        self.told.insert(told.config.name.clone());
    }

    fn remaining(&self) -> Option<usize> {
        Some(self.queue.len())
    }
}

/// Another strategy's configs, then soft voting and stacking over the `n` best single-model
/// runs it produced (`--ensemble top=N`), members taken from those runs.
pub struct TopEnsembles {
    inner: Box<dyn Strategy>,
    n: usize,
    higher_is_better: bool,
    /// Finished single-model runs: (score, version, config).
    finished: Vec<(f64, String, ModelConfig)>,
    /// The ensembles, once the inner strategy is done and every run told.
    ensembles: Option<VecDeque<ModelConfig>>,
    in_flight: usize,
}

impl TopEnsembles {
    pub fn new(inner: Box<dyn Strategy>, n: usize, higher_is_better: bool) -> TopEnsembles {
        TopEnsembles {
            inner,
            n,
            higher_is_better,
            finished: Vec::new(),
            ensembles: None,
            in_flight: 0,
        }
    }

    /// Voting and stacking over the best `n` finished runs (ties to the earlier run).
    fn build(&mut self) -> VecDeque<ModelConfig> {
        let higher = self.higher_is_better;
        self.finished.sort_by(|a, b| {
            let ord = if higher {
                b.0.total_cmp(&a.0)
            } else {
                a.0.total_cmp(&b.0)
            };
            ord.then_with(|| a.1.cmp(&b.1))
        });
        let best: Vec<ModelConfig> = self
            .finished
            .iter()
            .take(self.n)
            .map(|(_, version, c)| ModelConfig {
                from_run: Some(version.clone()),
                ..c.clone()
            })
            .collect();
        if best.len() < 2 {
            eprintln!(
                "--ensemble top={}: needs at least two finished single-model runs; this sweep has {}, so no ensemble is trained",
                self.n,
                best.len()
            );
            return VecDeque::new();
        }
        ["voting", "stacking"]
            .iter()
            .filter_map(|kind| {
                let name = format!("{kind}[top{}]", best.len());
                let defaults = ModelConfig::with_defaults(kind, &name).ok()?;
                Some(ModelConfig {
                    members: best.clone(),
                    ..defaults
                })
            })
            .collect()
    }
}

impl Strategy for TopEnsembles {
    fn ask(&mut self) -> Ask {
        if self.ensembles.is_none() {
            match self.inner.ask() {
                Ask::Next(c) => {
                    self.in_flight += 1;
                    return Ask::Next(c);
                }
                Ask::Wait => return Ask::Wait,
                Ask::Done if self.in_flight > 0 => return Ask::Wait,
                Ask::Done => self.ensembles = Some(self.build()),
            }
        }
        match self.ensembles.as_mut().and_then(VecDeque::pop_front) {
            Some(c) => Ask::Next(c),
            None => Ask::Done,
        }
    }

    fn tell(&mut self, told: &Told) {
        if self.ensembles.is_some() {
            return;
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        self.inner.tell(told);
        let single = !models::is_ensemble(&told.config.kind) && !told.pruned;
        if let (Some(score), true) = (told.score, single) {
            self.finished
                .push((score, told.version.to_string(), told.config.clone()));
        }
    }

    fn annotate(&self, config: &ModelConfig) -> Option<serde_json::Value> {
        self.inner.annotate(config)
    }

    fn pruner(&self, config: &ModelConfig) -> Option<Arc<MedianPruner>> {
        self.inner.pruner(config)
    }

    fn remaining(&self) -> Option<usize> {
        match &self.ensembles {
            Some(e) => Some(e.len()),
            None => self.inner.remaining().map(|r| r + 2),
        }
    }
}

/// TPE over one study: each ask samples the next trial from the trials told so far (random
/// for the first `startup_trials`); it stops at `trials`, or once `timeout_s` has passed since
/// its first ask. With one worker the sequence of trials is fixed by the seed.
pub struct Tpe {
    study: Study,
    sampler: Sampler,
    higher_is_better: bool,
    /// Trials trained at once (the sweep's workers): asks beyond them wait for a tell.
    parallel: usize,
    /// What identifies the search (space, seed, data and metric): an earlier sweep's trials
    /// with the same one are continued.
    signature: String,
    asked: usize,
    started: Option<Instant>,
    /// The values of each asked trial, by config name.
    pending: BTreeMap<String, (usize, Vec<f64>)>,
    observed: Vec<Observed>,
    /// `prune = "median"` (the default): stops trials below the finished ones' median.
    pruner: Option<Arc<MedianPruner>>,
}

impl Tpe {
    pub fn new(
        study: Study,
        higher_is_better: bool,
        metric: &str,
        parallel: usize,
        signature: String,
    ) -> Tpe {
        let pruner = match study.search.prune.as_deref() {
            Some("none") => None,
            how => {
                let by_rounds = how == Some("rounds");
                Some(Arc::new(MedianPruner::new(
                    5,
                    higher_is_better,
                    metric,
                    by_rounds,
                )))
            }
        };
        Tpe {
            sampler: study.sampler(),
            study,
            higher_is_better,
            parallel: parallel.max(1),
            pruner,
            signature,
            asked: 0,
            started: None,
            pending: BTreeMap::new(),
            observed: Vec::new(),
        }
    }

    pub fn signature(&self) -> &str {
        &self.signature
    }

    /// Continues from trials an earlier sweep of the same search trained: (config, score,
    /// fold values, pruned). Their numbers are not asked again.
    pub fn resume(&mut self, done: &[(ModelConfig, f64, Vec<f64>, bool)]) {
        for (cfg, score, folds, pruned) in done {
            if let (Some(p), false) = (&self.pruner, pruned) {
                p.record(folds);
            }
            let (Some(trial), Some(values)) =
                (self.study.trial_of(&cfg.name), self.study.values_of(cfg))
            else {
                continue;
            };
            self.asked = self.asked.max(trial + 1);
            let score = if self.higher_is_better {
                -score
            } else {
                *score
            };
            self.observed.push(Observed {
                trial,
                values,
                score,
            });
        }
    }

    fn out_of_time(&self) -> bool {
        let limit = self.study.search.timeout_s.map(Duration::from_secs_f64);
        matches!((self.started, limit), (Some(s), Some(l)) if s.elapsed() >= l)
    }
}

impl Strategy for Tpe {
    fn ask(&mut self) -> Ask {
        let trials = self.study.search.trials.unwrap_or(usize::MAX);
        if self.asked >= trials || self.out_of_time() {
            return Ask::Done;
        }
        if self.pending.len() >= self.parallel {
            return Ask::Wait;
        }
        self.started.get_or_insert_with(Instant::now);
        let trial = self.asked;
        self.asked += 1;
        let values = self.sampler.suggest(trial, &self.observed);
        let cfg = self.study.config(trial, &values);
        self.pending.insert(cfg.name.clone(), (trial, values));
        Ask::Next(cfg)
    }

    fn tell(&mut self, told: &Told) {
        let Some((trial, values)) = self.pending.remove(&told.config.name) else {
            return;
        };
        if self.pending.is_empty() && self.out_of_time() {
            self.asked = usize::MAX;
        }
        if let (Some(p), false, Some(_)) = (&self.pruner, told.pruned, told.score) {
            p.record(told.folds);
        }
        let told_score = told.score.filter(|s| s.is_finite());
        let own = told_score.map(|s| if self.higher_is_better { -s } else { s });
        // A pruned trial ranks below every finished one (as Optuna's TPE orders them): it
        // counts as the worst trial so far.
        let worst = self.observed.iter().map(|o| o.score).reduce(f64::max);
        let score = if told.pruned { worst.or(own) } else { own };
        if let Some(score) = score {
            self.observed.push(Observed {
                trial,
                values,
                score,
            });
        }
    }

    fn remaining(&self) -> Option<usize> {
        let trials = self.study.search.trials?;
        Some(trials.saturating_sub(self.asked))
    }

    fn pruner(&self, config: &ModelConfig) -> Option<Arc<MedianPruner>> {
        self.pending.get(&config.name)?;
        self.pruner.clone()
    }

    fn annotate(&self, config: &ModelConfig) -> Option<serde_json::Value> {
        let (trial, _) = self.pending.get(&config.name)?;
        Some(serde_json::json!({
            "strategy": self.study.search.strategy,
            "search": self.study.name,
            "trial": trial + 1,
            "signature": self.signature,
        }))
    }
}

/// Strategies one after another: the next is asked once the one before is done.
pub struct Chain {
    parts: VecDeque<Box<dyn Strategy>>,
}

impl Chain {
    pub fn new(parts: Vec<Box<dyn Strategy>>) -> Chain {
        Chain {
            parts: parts.into(),
        }
    }
}

impl Strategy for Chain {
    fn ask(&mut self) -> Ask {
        while let Some(first) = self.parts.front_mut() {
            match first.ask() {
                Ask::Done => {
                    self.parts.pop_front();
                }
                other => return other,
            }
        }
        Ask::Done
    }

    fn tell(&mut self, told: &Told) {
        for p in &mut self.parts {
            p.tell(told);
        }
    }

    fn remaining(&self) -> Option<usize> {
        self.parts.iter().map(|p| p.remaining()).sum()
    }

    fn annotate(&self, config: &ModelConfig) -> Option<serde_json::Value> {
        self.parts.iter().find_map(|p| p.annotate(config))
    }

    fn pruner(&self, config: &ModelConfig) -> Option<Arc<MedianPruner>> {
        self.parts.iter().find_map(|p| p.pruner(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, kind: &str) -> ModelConfig {
        ModelConfig::with_defaults(kind, name).unwrap()
    }

    fn tell(s: &mut dyn Strategy, c: &ModelConfig, version: &str, score: f64) {
        s.tell(&Told {
            folds: &[],
            pruned: false,
            config: c,
            version,
            score: Some(score),
        });
    }

    #[test]
    fn an_ensemble_waits_for_the_members_it_names_then_follows() {
        let a = config("a", "decision_tree");
        let b = config("b", "naive_bayes");
        let mut vote = config("vote", "voting");
        vote.members = vec![a.clone(), b.clone()];
        let mut s = Listed::new(vec![a.clone(), b.clone(), vote.clone()]);
        assert_eq!(s.ask(), Ask::Next(a.clone()));
        assert_eq!(s.ask(), Ask::Next(b.clone()));
        assert_eq!(s.ask(), Ask::Wait, "members still training");
        tell(&mut s, &a, "t1", 0.5);
        assert_eq!(s.ask(), Ask::Wait);
        tell(&mut s, &b, "t2", 0.6);
        assert_eq!(s.ask(), Ask::Next(vote));
        assert_eq!(s.ask(), Ask::Done);
    }

    #[test]
    fn top_ensembles_are_asked_for_after_every_run_is_told_and_use_the_best() {
        let cs: Vec<ModelConfig> = ["a", "b", "c"]
            .iter()
            .map(|n| config(n, "decision_tree"))
            .collect();
        let mut s = TopEnsembles::new(Box::new(Listed::new(cs.clone())), 2, false);
        assert_eq!(s.remaining(), Some(5));
        for c in &cs {
            assert_eq!(s.ask(), Ask::Next(c.clone()));
        }
        tell(&mut s, &cs[0], "t1", 0.9);
        tell(&mut s, &cs[1], "t2", 0.1);
        assert_eq!(s.ask(), Ask::Wait, "c is still training");
        tell(&mut s, &cs[2], "t3", 0.5);
        let Ask::Next(voting) = s.ask() else {
            panic!("voting next")
        };
        assert_eq!(voting.kind, "voting");
        let members: Vec<_> = voting
            .members
            .iter()
            .map(|m| m.from_run.clone().unwrap())
            .collect();
        assert_eq!(members, ["t2", "t3"], "lower is better: the two lowest");
        assert!(matches!(s.ask(), Ask::Next(c) if c.kind == "stacking"));
        assert_eq!(s.ask(), Ask::Done);
    }
}
