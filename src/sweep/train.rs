//! Training and scoring one config: CV folds (their scores and learning curves streamed to the
//! trackers as they happen), the refit on every training row, the hold-out score, and the
//! run's artifacts.

use crate::config::{EtlSpec, Scale};
use crate::etl::Preprocessor;
use crate::eval::{self, Scores};
use crate::models::{self, FitContext, Task, TrainSet};
use crate::track::{now_ms, Metric, Tracker};
use anyhow::{Context, Result};
use ndarray::{Array1, Array2};
use serde_json::json;
use std::collections::BTreeMap;

use super::importance::{mean_drops, permutation_drops, Scored};
use super::plots::{curve_files, run_plots};
use super::*;

pub(crate) fn class_labels(prep: &Prepared) -> Vec<String> {
    prep.labels
        .as_ref()
        .map(|l| l.classes.clone())
        .unwrap_or_default()
}

pub(crate) fn score(
    prep: &Prepared,
    plan: &TrainPlan,
    y: &[f64],
    pred: &models::Prediction,
) -> Scores {
    match prep.task {
        Task::Classification => {
            eval::classification_scores(y, &pred.values, pred.proba.as_ref(), &class_labels(prep))
        }
        Task::Regression => {
            let bins = plan
                .target_bins
                .clone()
                .unwrap_or(eval::TargetBins::ByValue);
            eval::regression_scores(y, &pred.values, &bins)
        }
    }
}

pub struct Fitted {
    pub preprocessor: Preprocessor,
    pub model: Box<dyn models::FittedModel>,
}

/// The ETL a config's preprocessing is fitted with: a kind that trains on unscaled inputs
/// (from its algorithm version `unscaled_from` on) skips `etl.scale`.
pub fn etl_for<'a>(etl: &'a EtlSpec, model: &ModelConfig) -> std::borrow::Cow<'a, EtlSpec> {
    let unscaled = models::kind_spec(&model.kind).is_some_and(|k| k.unscaled(model.algorithm()));
    if unscaled && etl.scale != Scale::None {
        std::borrow::Cow::Owned(EtlSpec {
            scale: Scale::None,
            ..etl.clone()
        })
    } else {
        std::borrow::Cow::Borrowed(etl)
    }
}

/// Fits preprocessing and model on `rows`.
pub fn fit_on(prep: &Prepared, plan: &TrainPlan, rows: &[usize], seed: u64) -> Result<Fitted> {
    Ok(fit_with_curve(prep, plan, rows, seed, None, None)?.0)
}

/// Fits the plan's model on `rows`, scoring `eval_rows` along its learning curve when given;
/// returns the eval rows' model matrix with the model, for scoring them without building it
/// again (a million-row fold's matrix is tens of MB).
pub fn fit_with_curve(
    prep: &Prepared,
    plan: &TrainPlan,
    rows: &[usize],
    seed: u64,
    eval_rows: Option<&[usize]>,
    curve: Option<&Curve<'_>>,
) -> Result<(Fitted, Option<Array2<f64>>)> {
    let inputs = FoldInputs::of(prep, plan, rows, eval_rows)?;
    let model = models::fit(
        &plan.model,
        &inputs.set(prep),
        &inputs.context(plan, seed, curve),
    )?;
    Ok(inputs.fitted(model))
}

/// A training fold's model matrix, built by its own preprocessing, and its evaluation rows'.
struct FoldInputs {
    preprocessor: Preprocessor,
    x: Array2<f64>,
    y: Array1<f64>,
    eval: Option<(Array2<f64>, Array1<f64>)>,
}

impl FoldInputs {
    fn of(
        prep: &Prepared,
        plan: &TrainPlan,
        rows: &[usize],
        eval_rows: Option<&[usize]>,
    ) -> Result<FoldInputs> {
        let etl = etl_for(&prep.loaded.config.etl, &plan.model);
        let preprocessor = Preprocessor::fit(&prep.table, rows, &etl);
        let x = preprocessor.transform(&prep.table, rows)?;
        let y: Array1<f64> = rows.iter().map(|r| prep.y[*r]).collect();
        let eval = eval_rows
            .map(|r| -> Result<(Array2<f64>, Array1<f64>)> {
                let x = preprocessor.transform(&prep.table, r)?;
                let y: Array1<f64> = r.iter().map(|i| prep.y[*i]).collect();
                Ok((x, y))
            })
            .transpose()?;
        Ok(FoldInputs {
            preprocessor,
            x,
            y,
            eval,
        })
    }

    fn set<'a>(&'a self, prep: &'a Prepared) -> TrainSet<'a> {
        TrainSet {
            x: self.x.view(),
            y: self.y.view(),
            task: prep.task,
            n_classes: prep.labels.as_ref().map(|l| l.classes.len()).unwrap_or(0),
            labels: prep.labels.as_ref().map(|l| l.classes.as_slice()),
        }
    }

    fn context<'a>(
        &'a self,
        plan: &TrainPlan,
        seed: u64,
        curve: Option<&'a Curve<'a>>,
    ) -> FitContext<'a> {
        FitContext {
            seed,
            threads: plan.threads,
            eval: self.eval.as_ref().map(|(x, y)| (x.view(), y.view())),
            curve,
            feature_names: Some(&self.preprocessor.output_names),
        }
    }

    fn fitted(self, model: Box<dyn models::FittedModel>) -> (Fitted, Option<Array2<f64>>) {
        let fitted = Fitted {
            preprocessor: self.preprocessor,
            model,
        };
        (fitted, self.eval.map(|(x, _)| x))
    }
}

pub fn predict_rows(
    prep: &Prepared,
    fitted: &Fitted,
    rows: &[usize],
) -> Result<models::Prediction> {
    let x: Array2<f64> = fitted.preprocessor.transform(&prep.table, rows)?;
    fitted.model.predict(x.view())
}

/// Seed for the model of fold `i` (and `u64::MAX` for the refit): distinct per fold, fixed by
/// the run's seed.
pub fn fold_seed(seed: u64, i: u64) -> u64 {
    crate::rng::SplitMix64::derive(seed, 0xF17 ^ i).next_u64()
}

/// What the CV folds of one config gave.
pub(crate) struct CvOutcome {
    /// Each metric's value per fold.
    fold_metrics: BTreeMap<String, Vec<f64>>,
    /// The confusion matrix summed over every fold (classification).
    pooled: Vec<Vec<usize>>,
    /// The learning curve of each fold of the first repeat.
    fold_curves: Vec<Vec<(i64, String, f64)>>,
    /// Regression: out-of-fold (true, predicted) of the first repeat, for its plots.
    oof: Vec<(f64, f64)>,
    /// Permutation importance on each fold of the first repeat: the primary metric's drop per
    /// model input column.
    permutation: Vec<Vec<(String, f64)>>,
    /// Two classes: (is the second class, its out-of-fold probability) of the first repeat, for
    /// the ROC and precision-recall curves.
    oof_scores: Vec<(bool, f64)>,
    /// The search's pruner stopped the run after some folds.
    pruned: Option<super::prune::Pruned>,
}

/// A step-0 metric measured at `ts`.
pub(crate) fn metric(key: String, value: f64, ts: i64) -> Metric {
    Metric {
        key,
        value,
        step: 0,
        timestamp_ms: ts,
    }
}

/// What training and scoring one fold gave, before it joins the run's outcome.
struct FoldOutcome {
    /// Its learning curve as (round, metric, value).
    points: Vec<(i64, String, f64)>,
    /// Where the pruner stopped its learning curve, if it did.
    stopped: Option<(i64, String)>,
    y: Vec<f64>,
    pred: models::Prediction,
    scores: Scores,
    threshold: Option<f64>,
    /// Permutation importance (first repeat, full runs only).
    drops: Option<Vec<(String, f64)>>,
}

/// Trains fold `i` on `threads` threads and scores its validation rows.
#[allow(clippy::too_many_arguments)]
fn train_fold(
    prep: &Prepared,
    plan: &TrainPlan,
    fold: &eval::Fold,
    i: usize,
    threads: usize,
    run_uuid: &str,
    trackers: &dyn Tracker,
) -> Result<FoldOutcome> {
    let curve = judged(plan, i, live_curve(trackers, run_uuid, format!("fold{i}")));
    let seed = fold_seed(plan.seed, i as u64);
    let fold_plan = TrainPlan {
        threads,
        ..plan.clone()
    };
    let eval_rows = Some(fold.test.as_slice());
    crate::interrupt::check()?;
    let (fitted, x) = fit_with_curve(prep, &fold_plan, &fold.train, seed, eval_rows, Some(&curve))?;
    score_fold(prep, plan, fold, i, fitted, x, curve)
}

/// Scores fold `i`'s model on its validation rows (`x`, their model matrix): its outcome.
fn score_fold(
    prep: &Prepared,
    plan: &TrainPlan,
    fold: &eval::Fold,
    i: usize,
    fitted: Fitted,
    x: Option<Array2<f64>>,
    curve: Curve<'_>,
) -> Result<FoldOutcome> {
    crate::interrupt::check()?;
    let stopped = curve.stopped();
    let points = finish_curve(curve)?;
    let x = x.context("the fold's validation rows")?;
    let pred = fitted.model.predict(x.view())?;
    let y: Vec<f64> = fold.test.iter().map(|r| prep.y[*r]).collect();
    let scores = score(prep, plan, &y, &pred);
    let measure = plan.permutation_importance && !plan.cv_only;
    let drops = if fold.repeat == 0 && measure && stopped.is_none() {
        let baseline = scores.metrics.get(&prep.primary_metric).copied();
        let scored = Scored {
            x: &x,
            y: &y,
            baseline: baseline.unwrap_or(f64::NAN),
        };
        Some(permutation_drops(prep, plan, &fitted, scored, i as u64)?)
    } else {
        None
    };
    Ok(FoldOutcome {
        points,
        stopped,
        y,
        pred,
        scores,
        threshold: fitted.model.threshold(),
        drops,
    })
}

/// A run's CV folds and where their outcomes go: what every wave of folds trains with.
struct FoldRun<'a> {
    prep: &'a Prepared,
    plan: &'a TrainPlan,
    splits: &'a Splits,
    run_uuid: &'a str,
    trackers: &'a dyn Tracker,
}

impl FoldRun<'_> {
    /// Trains the next wave of folds from `first`: a repeat's folds stacked where the kind trains
    /// them so (as `plan.fold_jobs` stacks side by side), else `plan.fold_jobs` folds side by
    /// side. How many it took, and their outcomes in fold order.
    fn next_wave(&self, first: usize) -> (usize, Vec<Result<FoldOutcome>>) {
        let rest = &self.splits.folds[first..];
        if !models::trains_folds_stacked(&self.plan.model, self.prep.task) {
            let n = self.plan.fold_jobs.clamp(1, rest.len());
            return (n, self.side_by_side(first, n));
        }
        let repeat = rest[0].repeat;
        let n = rest.iter().take_while(|f| f.repeat == repeat).count();
        match self.stacks_side_by_side(first, n) {
            Ok(outcomes) => (n, outcomes.into_iter().map(Ok).collect()),
            Err(e) => (n, vec![Err(e)]),
        }
    }

    /// Trains the folds `first..first + n` as `plan.fold_jobs` stacks of near-equal size side by
    /// side (a fold's network does not depend on the folds stacked beside it, to the bit); their
    /// outcomes in fold order.
    fn stacks_side_by_side(&self, first: usize, n: usize) -> Result<Vec<FoldOutcome>> {
        let stacks = self.plan.fold_jobs.clamp(1, n);
        if stacks == 1 {
            return self.stacked(first, n);
        }
        let bounds: Vec<usize> = (0..=stacks).map(|s| first + s * n / stacks).collect();
        let parts = at_once(stacks, |s| {
            self.stacked(bounds[s], bounds[s + 1] - bounds[s])
        });
        let mut outcomes = Vec::with_capacity(n);
        for part in parts {
            outcomes.extend(part?);
        }
        Ok(outcomes)
    }

    /// Trains the folds `first..first + n` at once, each on its share of the plan's threads;
    /// their outcomes in fold order. A panic in a fold reaches the run's own handler (`run_one`).
    fn side_by_side(&self, first: usize, n: usize) -> Vec<Result<FoldOutcome>> {
        let (prep, plan, total) = (self.prep, self.plan, self.splits.folds.len());
        let folds = &self.splits.folds[first..first + n];
        let threads = (plan.threads / n).max(1);
        let one = |i: usize, fold: &eval::Fold| {
            train_fold(prep, plan, fold, i, threads, self.run_uuid, self.trackers)
                .with_context(|| format!("fold {} of {total}", i + 1))
        };
        if n == 1 {
            return vec![one(first, &folds[0])];
        }
        at_once(n, |k| one(first + k, &folds[k]))
    }

    /// Trains the folds `first..first + n` as one stacked model (`models::fit_stack`), then
    /// scores each; their outcomes in fold order.
    fn stacked(&self, first: usize, n: usize) -> Result<Vec<FoldOutcome>> {
        let (prep, plan, total) = (self.prep, self.plan, self.splits.folds.len());
        let folds = &self.splits.folds[first..first + n];
        let inputs = (folds.iter())
            .map(|fold| FoldInputs::of(prep, plan, &fold.train, Some(&fold.test)))
            .collect::<Result<Vec<_>>>()?;
        let curves: Vec<Curve> = (first..first + n)
            .map(|i| {
                let live = live_curve(self.trackers, self.run_uuid, format!("fold{i}"));
                judged(plan, i, live)
            })
            .collect();
        crate::interrupt::check()?;
        let sets: Vec<TrainSet> = inputs.iter().map(|f| f.set(prep)).collect();
        let ctxs: Vec<FitContext> = (inputs.iter().zip(&curves).enumerate())
            .map(|(k, (f, curve))| {
                f.context(plan, fold_seed(plan.seed, (first + k) as u64), Some(curve))
            })
            .collect();
        let models = models::fit_stack(&plan.model, &sets, &ctxs)
            .with_context(|| format!("folds {} to {} of {total}", first + 1, first + n))?;
        drop((sets, ctxs));
        (inputs.into_iter().zip(models).zip(curves).enumerate())
            .map(|(k, ((f, model), curve))| {
                let (fitted, x) = f.fitted(model);
                score_fold(prep, plan, &folds[k], first + k, fitted, x, curve)
                    .with_context(|| format!("fold {} of {total}", first + k + 1))
            })
            .collect()
    }
}

/// `job(k)` for each `k` in `0..n`, each on a thread of its own, all at once; the results in
/// order. A panic in a job reaches the caller's thread.
fn at_once<R: Send>(n: usize, job: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let job = &job;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|k| s.spawn(move || job(k))).collect();
        (handles.into_iter())
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Trains and scores every CV fold, `plan.fold_jobs` at a time (a repeat's folds at once where
/// they train stacked); each fold's scores reach the
/// trackers in fold order as its wave ends. The outcome does not depend on how many run at
/// once: each fold has its own seed, and the pruner judges the folds in order.
pub(crate) fn cross_validate(
    prep: &Prepared,
    plan: &TrainPlan,
    splits: &Splits,
    run_uuid: &str,
    trackers: &dyn Tracker,
    progress: &Progress,
) -> Result<CvOutcome> {
    let k = prep.labels.as_ref().map(|l| l.classes.len()).unwrap_or(0);
    let mut cv = CvOutcome {
        fold_metrics: BTreeMap::new(),
        pooled: vec![vec![0usize; k]; k],
        fold_curves: Vec::new(),
        oof: Vec::new(),
        permutation: Vec::new(),
        oof_scores: Vec::new(),
        pruned: None,
    };
    let total = splits.folds.len();
    let run = FoldRun {
        prep,
        plan,
        splits,
        run_uuid,
        trackers,
    };
    let mut first = 0;
    while first < total && cv.pruned.is_none() {
        let (n, wave) = run.next_wave(first);
        crate::memory::release_free();
        for (k, outcome) in wave.into_iter().enumerate() {
            let i = first + k;
            let repeat = splits.folds[i].repeat;
            cv.pruned = absorb_fold(
                prep, plan, &mut cv, outcome?, i, repeat, total, run_uuid, trackers,
            )?;
            progress.tick(&format!("{} fold {}", plan.model.name, i + 1));
            if cv.pruned.is_some() {
                break;
            }
        }
        first += n;
    }
    Ok(cv)
}

/// Adds fold `i`'s outcome to the run's and sends its metrics; whether the run stops there.
#[allow(clippy::too_many_arguments)]
fn absorb_fold(
    prep: &Prepared,
    plan: &TrainPlan,
    cv: &mut CvOutcome,
    fold: FoldOutcome,
    i: usize,
    repeat: usize,
    total: usize,
    run_uuid: &str,
    trackers: &dyn Tracker,
) -> Result<Option<super::prune::Pruned>> {
    if let Some((round, reason)) = fold.stopped {
        return Ok(Some(super::prune::Pruned {
            folds: i,
            reason,
            round: Some(round),
        }));
    }
    let FoldOutcome {
        y, pred, scores, ..
    } = fold;
    if repeat == 0 {
        cv.fold_curves.push(fold.points);
        if prep.task == Task::Regression {
            (cv.oof).extend(y.iter().copied().zip(pred.values.iter().copied()));
        }
        cv.permutation.extend(fold.drops);
        if let Some(p) = pred.proba.as_ref().filter(|p| p.ncols() == 2) {
            let truth = y.iter().map(|t| *t == 1.0);
            cv.oof_scores.extend(truth.zip(p.column(1).iter().copied()));
        }
    }
    let ts = now_ms();
    let mut batch = Vec::new();
    if let Some(t) = fold.threshold {
        batch.push(metric(format!("fold{i}/threshold"), t, ts));
    }
    for (m, v) in &scores.metrics {
        cv.fold_metrics.entry(m.clone()).or_default().push(*v);
        batch.push(metric(format!("fold{i}/{m}"), *v, ts));
    }
    trackers.log_metrics(run_uuid, &batch)?;
    for (t, row) in scores.confusion.iter().enumerate() {
        for (p, c) in row.iter().enumerate() {
            cv.pooled[t][p] += c;
        }
    }
    Ok(pruned_after(prep, plan, &cv.fold_metrics, i + 1, total))
}

/// Whether the run stops after fold `done` of `total`: its search's pruner says so, or it is
/// the replay of a trial that was pruned there.
fn pruned_after(
    prep: &Prepared,
    plan: &TrainPlan,
    fold_metrics: &BTreeMap<String, Vec<f64>>,
    done: usize,
    total: usize,
) -> Option<super::prune::Pruned> {
    if done >= total {
        return None;
    }
    let reason = match (plan.stop_after_folds, &plan.pruner) {
        (Some(n), _) if n == done => Some(format!(
            "after fold {done} of {total}, as the trial it replays was"
        )),
        (Some(_), _) => None,
        (None, Some(pruner)) => {
            let values = fold_metrics.get(&prep.primary_metric)?;
            pruner.check(done, total, values)
        }
        (None, None) => None,
    }?;
    Some(super::prune::Pruned {
        folds: done,
        reason,
        round: None,
    })
}

/// The first fold's learning curve, judged round by round by the search's pruner (or stopped
/// at the round where the trial it replays was).
fn judged<'a>(plan: &TrainPlan, fold: usize, curve: Curve<'a>) -> Curve<'a> {
    use super::prune::judged_metric;
    if fold != 0 {
        return curve;
    }
    match (plan.stop_at_round, &plan.pruner) {
        (Some(at), _) => curve.judged(Box::new(move |round, metric, _| {
            (round == at && judged_metric(metric))
                .then(|| format!("at round {at} of fold 1, as the trial it replays was"))
        })),
        (None, Some(pruner)) => {
            let pruner = pruner.clone();
            // One loss a round: the first validation loss the model records (XGBoost and
            // LightGBM record one; a network's regression records valid_loss before valid_mae).
            let key = std::sync::OnceLock::new();
            curve.judged(Box::new(move |round, metric, value| {
                let ours =
                    judged_metric(metric) && key.get_or_init(|| metric.to_string()) == metric;
                ours.then(|| pruner.check_round(round, metric, value))?
            }))
        }
        (None, None) => curve,
    }
}

/// The first fold's validation loss by round, for the pruner's record of finished trials.
fn first_fold_losses(fold_curves: &[Vec<(i64, String, f64)>]) -> Vec<f64> {
    let Some(points) = fold_curves.first() else {
        return Vec::new();
    };
    let Some(key) = points
        .iter()
        .map(|(_, k, _)| k)
        .find(|k| super::prune::judged_metric(k))
    else {
        return Vec::new();
    };
    let mut losses: Vec<(i64, f64)> = (points.iter())
        .filter(|(_, k, _)| k == key)
        .map(|(r, _, v)| (*r, *v))
        .collect();
    losses.sort_by_key(|(r, _)| *r);
    losses.into_iter().map(|(_, v)| v).collect()
}

/// Mean and spread of each metric over the folds, and the per-class figures, as the run's
/// metrics (`accuracy`, `accuracy_std`, `class_5/f1`, ...).
pub(crate) fn summary_metrics(
    fold_metrics: &BTreeMap<String, Vec<f64>>,
    per_class: &[eval::ClassStats],
    ts: i64,
) -> (BTreeMap<String, (f64, f64)>, Vec<Metric>) {
    let mut metrics = BTreeMap::new();
    let mut batch = Vec::new();
    for (m, values) in fold_metrics {
        let (mean, std) = eval::mean_std(values);
        metrics.insert(m.clone(), (mean, std));
        batch.push(metric(m.clone(), mean, ts));
        batch.push(metric(format!("{m}_std"), std, ts));
    }
    for c in per_class {
        let label = sanitize(&c.label);
        for (name, v) in [
            ("precision", c.precision),
            ("recall", c.recall),
            ("f1", c.f1),
            ("support", c.support as f64),
        ] {
            batch.push(metric(format!("class_{label}/{name}"), v, ts));
        }
    }
    (metrics, batch)
}

/// An importance table and chart (artifacts `<stem>.csv` and `<stem>.svg`, the chart of the
/// last kind) and one metric per column and kind (`importance_<kind>/<column>`).
pub(crate) fn importance_files(
    stem: &str,
    names: &[String],
    importances: &[(&str, Vec<f64>)],
    ts: i64,
) -> (Artifacts, Vec<Metric>) {
    let Some((kind, values)) = importances.last() else {
        return (Vec::new(), Vec::new());
    };
    let mut csv = String::from("feature");
    for (kind, _) in importances {
        csv.push_str(&format!(",{kind}"));
    }
    csv.push('\n');
    for (j, name) in names.iter().enumerate() {
        csv.push_str(&format!("\"{name}\""));
        for (_, v) in importances {
            csv.push_str(&format!(",{}", v.get(j).copied().unwrap_or(0.0)));
        }
        csv.push('\n');
    }
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|a, b| values[*b].total_cmp(&values[*a]));
    let labels: Vec<String> = order
        .iter()
        .map(|j| names.get(*j).cloned().unwrap_or_default())
        .collect();
    let sorted: Vec<f64> = order.iter().map(|j| values[*j]).collect();
    let title = format!("Feature importance ({kind})");
    let chart = crate::plot::bar_chart(&title, kind, &labels, &sorted, None);
    let artifacts = vec![
        (format!("{stem}.csv"), csv.into_bytes()),
        (format!("{stem}.svg"), chart.into_bytes()),
    ];
    let metrics = importances
        .iter()
        .flat_map(|(kind, values)| {
            names
                .iter()
                .zip(values)
                .map(move |(n, v)| metric(format!("importance_{kind}/{}", sanitize(n)), *v, ts))
        })
        .collect();
    (artifacts, metrics)
}

/// The refitted model's own importance where the backend has it (impurity, gain, split), and
/// the permutation importance of the CV folds for every kind.
fn importance_outputs(fitted: &Fitted, cv: &CvOutcome, ts: i64) -> (Artifacts, Vec<Metric>) {
    let names = &fitted.preprocessor.output_names;
    let own = fitted.model.feature_importance();
    let (mut artifacts, mut metrics) = importance_files("feature_importance", names, &own, ts);
    if !cv.permutation.is_empty() {
        let drops = mean_drops(&cv.permutation, names);
        let perm = [("permutation", drops)];
        let (a, m) = importance_files("permutation_importance", names, &perm, ts);
        artifacts.extend(a);
        metrics.extend(m);
    }
    (artifacts, metrics)
}

/// The run's model files: the backend's native ones and runner's own document, which holds
/// the config, labels, preprocessing and fitted state `predict` and `replay` load.
pub(crate) fn model_artifacts(
    prep: &Prepared,
    plan: &TrainPlan,
    fitted: &Fitted,
) -> Result<Artifacts> {
    let native = fitted.model.native();
    let mut artifacts: Artifacts = native
        .iter()
        .map(|(ext, bytes)| (format!("model.{ext}"), bytes.clone()))
        .collect();
    let name = if native.is_empty() {
        "model.json"
    } else {
        "runner_model.json"
    };
    let document = json!({
        "format": "runner-model/1",
        "task": prep.task,
        "model": plan.model,
        "labels": prep.labels,
        "feature_names": fitted.preprocessor.output_names,
        "preprocessor": fitted.preprocessor,
        "fitted": fitted.model.to_json()?,
    });
    artifacts.push((name.to_string(), serde_json::to_vec(&document)?));
    Ok(artifacts)
}

/// Trains one config: CV folds, then a refit on all training rows (the run's model), then the
/// hold-out score. Metrics go to the trackers as they are produced. A search trial with
/// `refit = "best"` (`plan.cv_only`) stops after its folds: no refit, model or importance.
pub fn train_config(
    prep: &Prepared,
    plan: &TrainPlan,
    splits: &Splits,
    run_uuid: &str,
    trackers: &dyn Tracker,
    progress: &Progress,
) -> Result<(RunResult, Artifacts)> {
    crate::interrupt::check()?;
    let started = std::time::Instant::now();
    let mut cv = cross_validate(prep, plan, splits, run_uuid, trackers, progress)?;
    // Per-class figures come from the out-of-fold predictions pooled over all folds.
    let per_class = if prep.task == Task::Classification {
        per_class_from_confusion(&cv.pooled, &class_labels(prep))
    } else {
        Vec::new()
    };
    let ts = now_ms();
    let (metrics, mut batch) = summary_metrics(&cv.fold_metrics, &per_class, ts);
    let mut result = RunResult {
        version: String::new(),
        run_uuid: run_uuid.to_string(),
        name: plan.model.name.clone(),
        kind: plan.model.kind.clone(),
        status: "FINISHED".into(),
        error: None,
        metrics,
        fold_metrics: std::mem::take(&mut cv.fold_metrics),
        pruned: cv.pruned.take(),
        holdout: BTreeMap::new(),
        per_class,
        confusion: cv.pooled.clone(),
        fit_seconds: 0.0,
    };
    if result.pruned.is_some() {
        // Partial metrics of the folds it trained; no refit, no model.
        trackers.log_metrics(run_uuid, &batch)?;
        result.status = "KILLED".into();
        result.fit_seconds = started.elapsed().as_secs_f64();
        return Ok((result, Vec::new()));
    }
    if let Some(pruner) = &plan.pruner {
        pruner.record_curve(first_fold_losses(&cv.fold_curves));
    }
    let cv_seconds = started.elapsed().as_secs_f64();
    batch.push(metric("cv_seconds".into(), cv_seconds, ts));
    let artifacts = if plan.cv_only {
        cv_plots(prep, &cv, &[])
    } else {
        let (refit_batch, artifacts) =
            refit(prep, plan, splits, &cv, &mut result, run_uuid, trackers)?;
        progress.tick(&format!("{} refit", plan.model.name));
        batch.extend(refit_batch);
        artifacts
    };
    // Into the run's final batch (one history line on W&B).
    trackers.log_metrics(run_uuid, &batch)?;
    result.fit_seconds = started.elapsed().as_secs_f64();
    Ok((result, artifacts))
}

/// The run's charts of its out-of-fold results and learning curves (with the refit's, when it
/// has one), and their tables.
fn cv_plots(prep: &Prepared, cv: &CvOutcome, refit_curve: &[(i64, String, f64)]) -> Artifacts {
    let mut plots = run_plots(prep, &cv.pooled, &cv.fold_curves, refit_curve, &cv.oof);
    plots.extend(curve_files(&cv.oof_scores));
    plots
}

/// The run's model: refitted on every training row, scored on the hold-out; its metrics
/// (hold-out, threshold, importance, refit time) and every artifact of the run.
fn refit(
    prep: &Prepared,
    plan: &TrainPlan,
    splits: &Splits,
    cv: &CvOutcome,
    result: &mut RunResult,
    run_uuid: &str,
    trackers: &dyn Tracker,
) -> Result<(Vec<Metric>, Artifacts)> {
    let ts = now_ms();
    let refit_start = std::time::Instant::now();
    let curve = live_curve(trackers, run_uuid, "refit".to_string());
    let seed = fold_seed(plan.seed, u64::MAX);
    let (fitted, _) = fit_with_curve(prep, plan, &splits.cv_rows, seed, None, Some(&curve))
        .context("refit on all training rows")?;
    crate::memory::release_free();
    crate::interrupt::check()?;
    let refit_curve = finish_curve(curve)?;
    let mut batch = Vec::new();
    if !splits.holdout_rows.is_empty() {
        let pred = predict_rows(prep, &fitted, &splits.holdout_rows)?;
        let y: Vec<f64> = splits.holdout_rows.iter().map(|r| prep.y[*r]).collect();
        for (m, v) in score(prep, plan, &y, &pred).metrics {
            batch.push(metric(format!("holdout/{m}"), v, ts));
            result.holdout.insert(m, v);
        }
    }
    if let Some(t) = fitted.model.threshold() {
        batch.push(metric("threshold".into(), t, ts));
    }
    let refit_seconds = refit_start.elapsed().as_secs_f64();
    batch.push(metric("refit_seconds".into(), refit_seconds, ts));
    let shown = predictions_sample(&splits.cv_rows, plan.seed);
    let train_pred = predict_rows(prep, &fitted, &shown)?;
    let mut artifacts: Artifacts = vec![(
        "predictions.csv".to_string(),
        predictions_csv(prep, &shown, &train_pred).into_bytes(),
    )];
    artifacts.extend(cv_plots(prep, cv, &refit_curve));
    let (importance_files, importance_metrics) = importance_outputs(&fitted, cv, ts);
    artifacts.extend(importance_files);
    batch.extend(importance_metrics);
    artifacts.extend(model_artifacts(prep, plan, &fitted)?);
    Ok((batch, artifacts))
}

/// A learning curve that reaches the trackers while the model trains: each round's metrics as
/// one batch `<prefix>/<metric>` (step = round, the time it was measured), sent when the next
/// round starts, so `mlflow ui` and W&B draw the curve as it grows.
pub(crate) fn live_curve<'a>(
    trackers: &'a dyn Tracker,
    run_uuid: &'a str,
    prefix: String,
) -> Curve<'a> {
    Curve::streaming(Box::new(move |points: &[models::CurvePoint]| {
        let batch: Vec<Metric> = points
            .iter()
            .map(|(round, key, value, at_ms)| Metric {
                key: format!("{prefix}/{key}"),
                value: *value,
                step: *round,
                timestamp_ms: *at_ms,
            })
            .collect();
        trackers.log_metrics(run_uuid, &batch)
    }))
}

/// Sends the curve's last round; its points as (round, metric, value).
pub(crate) fn finish_curve(curve: Curve<'_>) -> Result<Vec<(i64, String, f64)>> {
    Ok(curve
        .finish()?
        .into_iter()
        .map(|(round, key, value, _)| (round, key, value))
        .collect())
}

/// The most training rows `predictions.csv` holds: beyond it, a seeded sample of that many.
pub(crate) const PREDICTIONS_MAX_ROWS: usize = 20_000;

/// The training rows whose predictions the run writes: all of them up to
/// [`PREDICTIONS_MAX_ROWS`], else a seeded sample of that many, in row order. A million-row
/// table then costs 20,000 predictions and about 1 MB per run instead of the whole table
/// (`runner predict` gives every row).
pub(crate) fn predictions_sample(rows: &[usize], seed: u64) -> Vec<usize> {
    if rows.len() <= PREDICTIONS_MAX_ROWS {
        return rows.to_vec();
    }
    let mut picked: Vec<usize> = crate::rng::SplitMix64::derive(seed, 0x9A3D)
        .sorted_sample(rows.len(), PREDICTIONS_MAX_ROWS)
        .into_iter()
        .map(|i| rows[i])
        .collect();
    picked.sort_unstable();
    picked
}

/// The refitted model's predictions on the given training rows, with decoded labels.
pub(crate) fn predictions_csv(
    prep: &Prepared,
    rows: &[usize],
    pred: &models::Prediction,
) -> String {
    let labels = prep.labels.as_ref();
    let mut out = String::from("row,target,prediction");
    if let (Some(l), Some(_)) = (labels, &pred.proba) {
        for c in &l.classes {
            out.push_str(&format!(",proba_{c}"));
        }
    }
    out.push('\n');
    let show = |v: f64| match labels {
        Some(l) => l.classes[v as usize].clone(),
        None => format!("{v}"),
    };
    for (i, r) in rows.iter().enumerate() {
        out.push_str(&format!(
            "{r},{},{}",
            show(prep.y[*r]),
            show(pred.values[i])
        ));
        if let (Some(_), Some(p)) = (labels, &pred.proba) {
            for v in p.row(i) {
                out.push_str(&format!(",{v}"));
            }
        }
        out.push('\n');
    }
    out
}

pub(crate) fn per_class_from_confusion(
    confusion: &[Vec<usize>],
    labels: &[String],
) -> Vec<eval::ClassStats> {
    let mut y = Vec::new();
    let mut p = Vec::new();
    for (t, row) in confusion.iter().enumerate() {
        for (q, c) in row.iter().enumerate() {
            for _ in 0..*c {
                y.push(t as f64);
                p.push(q as f64);
            }
        }
    }
    eval::classification_scores(&y, &p, None, labels).per_class
}
