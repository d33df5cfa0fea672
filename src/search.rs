//! How a sweep chooses its configs: an ask/tell loop. A [`Strategy`] yields the next config to
//! train given the results told so far; the sweep's workers ask, train and tell. Grid and random
//! search are [`Listed`] (their configs are drawn when the sweep files are read, so a seed fixes
//! them); [`TopEnsembles`] follows another strategy and then asks for ensembles of its best runs.
//! An adaptive search (#15) is one more strategy.

use crate::models::{self, ModelConfig};
use std::collections::{BTreeSet, VecDeque};

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
}

/// Chooses a sweep's configs one at a time.
pub trait Strategy: Send {
    /// The next config to train.
    fn ask(&mut self) -> Ask;
    /// A run asked for earlier has ended.
    fn tell(&mut self, told: &Told);
    /// The most configs it will still yield, when it knows (for the progress bar).
    fn remaining(&self) -> Option<usize>;
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
        if let (Some(score), false) = (told.score, models::is_ensemble(&told.config.kind)) {
            self.finished
                .push((score, told.version.to_string(), told.config.clone()));
        }
    }

    fn remaining(&self) -> Option<usize> {
        match &self.ensembles {
            Some(e) => Some(e.len()),
            None => self.inner.remaining().map(|r| r + 2),
        }
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
