//! How a sweep chooses its configs: an ask/tell loop. A [`Strategy`] yields the next config to
//! train given the results told so far; the sweep's workers ask, train and tell. Grid and random
//! search are [`Listed`] (their configs are drawn when the sweep files are read, so a seed fixes
//! them); [`TopEnsembles`] follows another strategy and then asks for ensembles of its best runs.
//! [`Tpe`] searches one sweep entry trial by trial; [`Chain`] runs strategies one after another.

use crate::config::Study;
use crate::models::{self, ModelConfig};
use crate::sweep::prune::{Pruner, RoundRule, ASHA_MIN_ROUNDS, ASHA_REDUCTION_FACTOR};
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
    /// It saved a model (a search trial scored by CV only did not).
    pub has_model: bool,
}

/// A trial an earlier sweep of the same search trained, as the store holds it.
#[derive(Debug, Clone)]
pub struct EarlierTrial {
    pub config: ModelConfig,
    /// The mean of the primary metric over the folds it trained (none when it was pruned
    /// inside its first fold).
    pub score: Option<f64>,
    /// The primary metric of each fold it trained.
    pub folds: Vec<f64>,
    pub pruned: bool,
    /// Its first fold's validation loss by round (for `prune = "rounds"` and `"asha"`).
    pub first_fold_losses: Vec<f64>,
}

/// The store a sharded search shares with its other shards (`--shard i/n`): each shard asks
/// it before every trial, so that TPE learns from every shard's trials.
pub trait SharedTrials: Send {
    /// Every trial of the search the store holds that has ended (finished or pruned), from
    /// every shard and earlier attempt, in the order they were numbered.
    fn ended(&mut self) -> anyhow::Result<Vec<EarlierTrial>>;
    /// Claims the search's best run for this process: true for one process only (another
    /// may take the claim over once its holder is gone).
    fn claim_best(&mut self) -> anyhow::Result<bool>;
}

/// A sharded search's part: the trial numbers `k` with `k mod count == index` (0-based), and
/// the store it shares.
pub struct SearchShard {
    pub index: usize,
    pub count: usize,
    pub store: Box<dyn SharedTrials>,
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
    fn pruner(&self, _config: &ModelConfig) -> Option<Arc<Pruner>> {
        None
    }
    /// Whether the run of a config it just gave is refitted on all rows and saves a model
    /// (a search's trials with `refit = "best"` are scored by their CV folds only).
    fn refits(&self, _config: &ModelConfig) -> bool {
        true
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
        let single = !models::is_ensemble(&told.config.kind) && !told.pruned && told.has_model;
        if let (Some(score), true) = (told.score, single) {
            self.finished
                .push((score, told.version.to_string(), told.config.clone()));
        }
    }

    fn annotate(&self, config: &ModelConfig) -> Option<serde_json::Value> {
        self.inner.annotate(config)
    }

    fn pruner(&self, config: &ModelConfig) -> Option<Arc<Pruner>> {
        self.inner.pruner(config)
    }

    fn refits(&self, config: &ModelConfig) -> bool {
        self.inner.refits(config)
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
    pruner: Option<Arc<Pruner>>,
    /// The best finished trial so far: (score, minimised; its trial number and config).
    best: Option<(f64, usize, ModelConfig)>,
    /// `refit = "best"` (the default): trials are scored by CV only; once all have ended the
    /// best is trained in full, as `<entry>#best[..]`, unless a run of that config already was.
    best_run: BestRun,
    /// Sharded: the trial numbers this process takes, and the store it reads before each ask.
    shard: Option<SearchShard>,
    /// Trial numbers that have ended (told here, or read from the shared store).
    ended: std::collections::BTreeSet<usize>,
}

/// How a search's pruner judges the rounds of its trials' first folds.
fn round_rule(search: &crate::config::SearchConfig, prune: Option<&str>) -> RoundRule {
    match prune {
        Some("rounds") => RoundRule::Median,
        Some("asha") => RoundRule::Asha {
            min_rounds: search.min_rounds.unwrap_or(ASHA_MIN_ROUNDS),
            reduction_factor: search.reduction_factor.unwrap_or(ASHA_REDUCTION_FACTOR),
        },
        _ => RoundRule::Off,
    }
}

/// Where a search stands with its best trial's full run.
#[derive(Debug, Clone, PartialEq)]
enum BestRun {
    /// `refit = "every"`: every trial is a full run.
    NotWanted,
    /// Asked once every trial has ended; the parameters of those earlier sweeps trained.
    Wanted(Vec<BTreeMap<String, models::ParamValue>>),
    /// Asked for: its name and the trial it trains in full.
    Asked(String, usize),
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
                let rounds = round_rule(&study.search, how);
                Some(Arc::new(Pruner::new(5, higher_is_better, metric, rounds)))
            }
        };
        let best_run = if study.search.refit.as_deref() == Some("every") {
            BestRun::NotWanted
        } else {
            BestRun::Wanted(Vec::new())
        };
        Tpe {
            best: None,
            best_run,
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
            shard: None,
            ended: Default::default(),
        }
    }

    /// Takes only this shard's trial numbers, and learns from every shard's trials.
    pub fn sharded(mut self, shard: SearchShard) -> Tpe {
        self.shard = Some(shard);
        self
    }

    pub fn signature(&self) -> &str {
        &self.signature
    }

    /// Continues from the trials an earlier sweep of the same search trained, in the order
    /// they were told. Their numbers are not asked again; a best trial trained in full then
    /// is not trained again.
    pub fn resume(&mut self, done: &[EarlierTrial]) {
        for earlier in done {
            if let Some(trial) = self.take_earlier(earlier) {
                self.asked = self.asked.max(trial + 1);
            }
        }
    }

    /// An ended trial from the store joins the history (once): its trial number, if it is one
    /// of this search's trials.
    fn take_earlier(&mut self, earlier: &EarlierTrial) -> Option<usize> {
        let (cfg, pruned) = (&earlier.config, earlier.pruned);
        let Some(trial) = self.study.trial_of(&cfg.name) else {
            if let (BestRun::Wanted(trained), true) =
                (&mut self.best_run, self.study.is_best(&cfg.name))
            {
                if !trained.contains(&cfg.params) {
                    trained.push(cfg.params.clone());
                }
            }
            return None;
        };
        if !self.ended.insert(trial) || self.pending.values().any(|(t, _)| *t == trial) {
            return None;
        }
        if let Some(p) = &self.pruner {
            if !pruned {
                p.record(&earlier.folds);
            }
            p.resume_curve(earlier.first_fold_losses.clone(), pruned);
        }
        let values = self.study.values_of(cfg)?;
        self.observe(trial, values, cfg, earlier.score, pruned);
        Some(trial)
    }

    /// Sharded: reads the trials every shard has ended since the last ask; the next trial
    /// number of this shard that has not ended, if it is within `trials`.
    fn next_shared_trial(&mut self, trials: usize) -> Option<usize> {
        let shard = self.shard.as_mut()?;
        let (index, count) = (shard.index, shard.count);
        match shard.store.ended() {
            Ok(earlier) => {
                for e in &earlier {
                    self.take_earlier(e);
                }
            }
            Err(e) => {
                eprintln!("warning: the search could not read the other shards' trials: {e:#}")
            }
        }
        let asked = |t: &usize| self.pending.values().any(|(p, _)| p == t);
        (self.asked..trials)
            .filter(|t| t % count == index)
            .find(|t| !self.ended.contains(t) && !asked(t))
    }

    /// Sharded: whether every trial of the search has ended in the store, so that this process
    /// may train the best one in full, and has claimed that.
    fn may_train_best(&mut self, trials: usize) -> bool {
        if self.shard.is_none() || self.best_run == BestRun::NotWanted {
            return true;
        }
        if (0..trials).any(|t| !self.ended.contains(&t)) {
            return false;
        }
        let Some(shard) = self.shard.as_mut() else {
            return true;
        };
        shard.store.claim_best().unwrap_or_else(|e| {
            eprintln!("warning: could not claim the search's best run: {e:#}");
            false
        })
    }

    /// A trial's score joins the sampler's history: a pruned trial counts as the worst trial so
    /// far (as Optuna's TPE ranks pruned trials below finished ones).
    fn observe(
        &mut self,
        trial: usize,
        values: Vec<f64>,
        cfg: &ModelConfig,
        score: Option<f64>,
        pruned: bool,
    ) {
        let own =
            (score.filter(|s| s.is_finite())).map(|s| if self.higher_is_better { -s } else { s });
        if let (Some(s), false) = (own, pruned) {
            if self.best.as_ref().is_none_or(|(b, _, _)| s < *b) {
                self.best = Some((s, trial, cfg.clone()));
            }
        }
        let worst = self.observed.iter().map(|o| o.score).reduce(f64::max);
        let score = if pruned { worst.or(own) } else { own };
        if let Some(score) = score {
            self.observed.push(Observed {
                trial,
                values,
                score,
            });
        }
    }

    /// Once every trial has ended, the best one trained in full (`refit = "best"`).
    fn ask_best(&mut self) -> Ask {
        let BestRun::Wanted(trained) = &self.best_run else {
            return Ask::Done;
        };
        if !self.pending.is_empty() {
            return Ask::Wait;
        }
        let Some((_, trial, cfg)) = &self.best else {
            return Ask::Done;
        };
        if trained.contains(&cfg.params) {
            return Ask::Done;
        }
        let best = self.study.best_config(*trial, cfg);
        self.best_run = BestRun::Asked(best.name.clone(), *trial);
        Ask::Next(best)
    }

    fn out_of_time(&self) -> bool {
        let limit = self.study.search.timeout_s.map(Duration::from_secs_f64);
        matches!((self.started, limit), (Some(s), Some(l)) if s.elapsed() >= l)
    }
}

impl Strategy for Tpe {
    fn ask(&mut self) -> Ask {
        let trials = self.study.search.trials.unwrap_or(usize::MAX);
        if self.pending.len() >= self.parallel && self.asked < trials && !self.out_of_time() {
            return Ask::Wait;
        }
        let next = match self.shard.is_some() {
            true => self.next_shared_trial(trials),
            false => Some(self.asked).filter(|t| *t < trials),
        };
        let Some(trial) = next.filter(|_| !self.out_of_time()) else {
            // A shard asks again once its last trials are told: it may be the last to end.
            if self.shard.is_some() && !self.pending.is_empty() {
                return Ask::Wait;
            }
            if !self.may_train_best(trials) {
                return Ask::Done;
            }
            return self.ask_best();
        };
        self.started.get_or_insert_with(Instant::now);
        self.asked = trial + 1;
        let values = self.sampler.suggest(trial, &self.observed);
        let cfg = self.study.config(trial, &values);
        self.pending.insert(cfg.name.clone(), (trial, values));
        Ask::Next(cfg)
    }

    fn tell(&mut self, told: &Told) {
        let Some((trial, values)) = self.pending.remove(&told.config.name) else {
            return;
        };
        self.ended.insert(trial);
        if self.pending.is_empty() && self.out_of_time() {
            self.asked = usize::MAX;
        }
        if let (Some(p), false, Some(_)) = (&self.pruner, told.pruned, told.score) {
            p.record(told.folds);
        }
        self.observe(trial, values, told.config, told.score, told.pruned);
    }

    fn remaining(&self) -> Option<usize> {
        let trials = self.study.search.trials?;
        let best = usize::from(matches!(self.best_run, BestRun::Wanted(_)));
        Some(trials.saturating_sub(self.asked) + best)
    }

    fn refits(&self, config: &ModelConfig) -> bool {
        self.best_run == BestRun::NotWanted || !self.pending.contains_key(&config.name)
    }

    fn pruner(&self, config: &ModelConfig) -> Option<Arc<Pruner>> {
        self.pending.get(&config.name)?;
        self.pruner.clone()
    }

    fn annotate(&self, config: &ModelConfig) -> Option<serde_json::Value> {
        let (trial, best) = match (&self.best_run, self.pending.get(&config.name)) {
            (_, Some((trial, _))) => (*trial, false),
            (BestRun::Asked(name, trial), None) if *name == config.name => (*trial, true),
            _ => return None,
        };
        let mut note = serde_json::json!({
            "strategy": self.study.search.strategy,
            "search": self.study.name,
            "trial": trial + 1,
            "signature": self.signature,
        });
        if best {
            note["best"] = serde_json::Value::Bool(true);
        }
        if let (Some(shard), false) = (&self.shard, best) {
            // Asked with the trials every shard had ended by then.
            note["shard"] = format!("{}/{}", shard.index, shard.count).into();
            note["ended_before"] = self.ended.len().into();
        }
        Some(note)
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

    fn pruner(&self, config: &ModelConfig) -> Option<Arc<Pruner>> {
        self.parts.iter().find_map(|p| p.pruner(config))
    }

    fn refits(&self, config: &ModelConfig) -> bool {
        self.parts.iter().all(|p| p.refits(config))
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
            has_model: true,
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

#[cfg(test)]
mod tpe_tests {
    use super::*;
    use crate::config::{Axis, SearchConfig};
    use crate::models::ParamValue;

    fn study(trials: usize, refit: Option<&str>) -> Study {
        let depths = (1..=4).map(ParamValue::Int).collect();
        Study {
            name: "tree".into(),
            base: ModelConfig::with_defaults("decision_tree", "tree").unwrap(),
            space: vec![("max_depth".into(), Axis::Values(depths))],
            search: SearchConfig {
                strategy: "tpe".into(),
                trials: Some(trials),
                seed: Some(3),
                timeout_s: None,
                startup_trials: None,
                multivariate: None,
                prune: Some("none".into()),
                min_rounds: None,
                reduction_factor: None,
                refit: refit.map(str::to_string),
            },
            seed: 3,
        }
    }

    fn next(s: &mut Tpe) -> ModelConfig {
        match s.ask() {
            Ask::Next(c) => c,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    fn told(s: &mut Tpe, c: &ModelConfig, score: f64) {
        s.tell(&Told {
            config: c,
            version: "t0",
            score: Some(score),
            folds: &[score],
            pruned: false,
            has_model: false,
        });
    }

    #[test]
    fn the_best_trial_is_asked_once_after_every_trial_is_told_and_refits() {
        let mut s = Tpe::new(study(2, None), true, "accuracy", 2, "sig".into());
        let (a, b) = (next(&mut s), next(&mut s));
        assert!(
            !s.refits(&a) && !s.refits(&b),
            "trials are scored by CV only"
        );
        told(&mut s, &a, 0.7);
        assert_eq!(s.ask(), Ask::Wait, "b may still beat a");
        told(&mut s, &b, 0.6);
        let best = next(&mut s);
        assert_eq!(best.params, a.params);
        assert!(
            best.name.starts_with("tree#best[max_depth="),
            "{}",
            best.name
        );
        assert!(s.refits(&best));
        assert_eq!(s.annotate(&best).unwrap()["best"], true);
        assert_eq!(s.ask(), Ask::Done);
        // `refit = "every"`: every trial is a full run, and none is trained again.
        let mut every = Tpe::new(study(1, Some("every")), true, "accuracy", 1, "sig".into());
        let only = next(&mut every);
        assert!(every.refits(&only));
        told(&mut every, &only, 0.5);
        assert_eq!(every.ask(), Ask::Done);
    }

    #[test]
    fn a_resumed_search_does_not_train_its_best_again_unless_a_new_trial_beats_it() {
        let mut first = Tpe::new(study(1, None), true, "accuracy", 1, "sig".into());
        let trial = next(&mut first);
        told(&mut first, &trial, 0.7);
        let best = next(&mut first);
        let earlier = |c: &ModelConfig, score: f64| EarlierTrial {
            config: c.clone(),
            score: Some(score),
            folds: vec![score],
            pruned: false,
            first_fold_losses: Vec::new(),
        };
        let mut more = Tpe::new(study(2, None), true, "accuracy", 1, "sig".into());
        more.resume(&[earlier(&trial, 0.7), earlier(&best, 0.7)]);
        let second = next(&mut more);
        assert!(second.name.starts_with("tree#2["), "{}", second.name);
        told(&mut more, &second, 0.6);
        assert_eq!(
            more.ask(),
            Ask::Done,
            "the best is still trial 1, already trained"
        );
    }
}
