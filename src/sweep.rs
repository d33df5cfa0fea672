//! `runner sweep`: validate everything, build the ETL version, then train every model config
//! with cross-validation, logging one MLflow run per config.

use crate::config::ConfigError;
use crate::data;
use crate::etl::Preprocessor;
use crate::eval::{self, Fold, Scores};
use crate::models::{self, FitContext, ModelConfig, Task, TrainSet};
use crate::track::mlflow::MlflowStore;
use crate::track::{now_ms, Metric, RunSpec, RunStatus, Tracker};
use anyhow::{Context, Result};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

pub use crate::types::{GIT_COMMIT, LIB_VERSIONS, RUNNER_VERSION};

pub use crate::prepare::{
    build_etl, dataset_input, etl_identity, prepare, prepare_from, primary_metric, run_etl,
    Prepared,
};
pub use crate::progress::Progress;
pub use crate::track::{sanitize, tracking_path, user};

/// How one config is trained and scored; recorded with the run so it can be replayed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainPlan {
    pub model: ModelConfig,
    pub seed: u64,
    pub threads: usize,
    pub folds: usize,
    pub repeats: usize,
    pub stratified: bool,
    pub holdout: f64,
    /// Smoke runs train on at most this many rows.
    pub max_rows: Option<usize>,
}

pub struct Splits {
    pub cv_rows: Vec<usize>,
    pub holdout_rows: Vec<usize>,
    pub folds: Vec<Fold>,
}

pub fn make_splits(task: Task, y: &[f64], plan: &TrainPlan) -> Splits {
    let (mut cv_rows, holdout_rows) = eval::holdout_split(task, y, plan.holdout, plan.seed);
    if let Some(max) = plan.max_rows {
        if cv_rows.len() > max {
            let sub: Vec<f64> = cv_rows.iter().map(|r| y[*r]).collect();
            let share = 1.0 - max as f64 / cv_rows.len() as f64;
            let (keep, _) = eval::holdout_split(task, &sub, share, plan.seed ^ 0x5A0C);
            cv_rows = keep.into_iter().map(|i| cv_rows[i]).collect();
        }
    }
    let folds = eval::k_fold(
        task,
        y,
        &cv_rows,
        plan.folds,
        plan.repeats,
        plan.stratified,
        plan.seed,
    );
    Splits {
        cv_rows,
        holdout_rows,
        folds,
    }
}

/// The SHA-256 of the folds' row lists (their JSON; lists of numbers always serialise).
pub fn folds_digest(folds: &[Fold]) -> String {
    data::sha256_hex(serde_json::to_string(folds).unwrap_or_default().as_bytes())
}

/// Named artifact contents: ("stem.ext", bytes); stored as `stem_tN.ext`.
pub type Artifacts = Vec<(String, Vec<u8>)>;

/// The outcome of training one config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub version: String,
    pub run_uuid: String,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub error: Option<String>,
    /// Mean and standard deviation over folds; written as `{"mean": .., "std": ..}`, read from
    /// that or from the `[mean, std]` pairs of stores written before JSON schema 2.
    #[serde(with = "mean_std")]
    pub metrics: BTreeMap<String, (f64, f64)>,
    /// Every fold's value of every metric, in fold order.
    pub fold_metrics: BTreeMap<String, Vec<f64>>,
    pub holdout: BTreeMap<String, f64>,
    pub per_class: Vec<eval::ClassStats>,
    pub confusion: Vec<Vec<usize>>,
    pub fit_seconds: f64,
}

fn class_labels(prep: &Prepared) -> Vec<String> {
    prep.labels
        .as_ref()
        .map(|l| l.classes.clone())
        .unwrap_or_default()
}

fn score(prep: &Prepared, y: &[f64], pred: &models::Prediction) -> Scores {
    match prep.task {
        Task::Classification => {
            eval::classification_scores(y, &pred.values, pred.proba.as_ref(), &class_labels(prep))
        }
        Task::Regression => eval::regression_scores(y, &pred.values),
    }
}

pub struct Fitted {
    pub preprocessor: Preprocessor,
    pub model: Box<dyn models::FittedModel>,
}

/// Fits preprocessing and model on `rows`.
pub fn fit_on(prep: &Prepared, plan: &TrainPlan, rows: &[usize], seed: u64) -> Result<Fitted> {
    fit_with_curve(prep, plan, rows, seed, None, None)
}

pub use crate::models::Curve;

/// Fits on `rows`; iterative models also score `eval_rows` each round into `curve`.
pub fn fit_with_curve(
    prep: &Prepared,
    plan: &TrainPlan,
    rows: &[usize],
    seed: u64,
    eval_rows: Option<&[usize]>,
    curve: Option<&Curve<'_>>,
) -> Result<Fitted> {
    let preprocessor = Preprocessor::fit(&prep.table, rows, &prep.loaded.config.etl);
    let x = preprocessor.transform(&prep.table, rows)?;
    let y: Array1<f64> = rows.iter().map(|r| prep.y[*r]).collect();
    let data = TrainSet {
        x: x.view(),
        y: y.view(),
        task: prep.task,
        n_classes: prep.labels.as_ref().map(|l| l.classes.len()).unwrap_or(0),
    };
    let eval = eval_rows
        .map(|r| -> Result<(Array2<f64>, Array1<f64>)> {
            let x = preprocessor.transform(&prep.table, r)?;
            let y: Array1<f64> = r.iter().map(|i| prep.y[*i]).collect();
            Ok((x, y))
        })
        .transpose()?;
    let ctx = FitContext {
        seed,
        threads: plan.threads,
        eval: eval.as_ref().map(|(x, y)| (x.view(), y.view())),
        curve,
    };
    let model = models::fit(&plan.model, &data, &ctx)?;
    Ok(Fitted {
        preprocessor,
        model,
    })
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
struct CvOutcome {
    /// Each metric's value per fold.
    fold_metrics: BTreeMap<String, Vec<f64>>,
    /// The confusion matrix summed over every fold (classification).
    pooled: Vec<Vec<usize>>,
    /// The learning curve of each fold of the first repeat.
    fold_curves: Vec<Vec<(i64, String, f64)>>,
    /// Out-of-fold (true, predicted) of the first repeat, for the regression plots.
    oof: Vec<(f64, f64)>,
}

/// A step-0 metric measured at `ts`.
fn metric(key: String, value: f64, ts: i64) -> Metric {
    Metric {
        key,
        value,
        step: 0,
        timestamp_ms: ts,
    }
}

/// Trains and scores every CV fold; each fold's scores reach the trackers as it ends.
fn cross_validate(
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
    };
    for (i, fold) in splits.folds.iter().enumerate() {
        let curve = live_curve(trackers, run_uuid, format!("fold{i}"));
        let seed = fold_seed(plan.seed, i as u64);
        let fitted = fit_with_curve(
            prep,
            plan,
            &fold.train,
            seed,
            Some(&fold.test),
            Some(&curve),
        )
        .with_context(|| format!("fold {} of {}", i + 1, splits.folds.len()))?;
        let points = finish_curve(curve)?;
        let pred = predict_rows(prep, &fitted, &fold.test)?;
        if fold.repeat == 0 {
            cv.fold_curves.push(points);
            let truth = fold.test.iter().map(|r| prep.y[*r]);
            cv.oof.extend(truth.zip(pred.values.iter().copied()));
        }
        let y: Vec<f64> = fold.test.iter().map(|r| prep.y[*r]).collect();
        let s = score(prep, &y, &pred);
        let ts = now_ms();
        let mut batch = Vec::new();
        for (m, v) in &s.metrics {
            cv.fold_metrics.entry(m.clone()).or_default().push(*v);
            batch.push(metric(format!("fold{i}/{m}"), *v, ts));
        }
        trackers.log_metrics(run_uuid, &batch)?;
        for (t, row) in s.confusion.iter().enumerate() {
            for (p, c) in row.iter().enumerate() {
                cv.pooled[t][p] += c;
            }
        }
        progress.tick(&format!("{} fold {}", plan.model.name, i + 1));
    }
    Ok(cv)
}

/// Mean and spread of each metric over the folds, and the per-class figures, as the run's
/// metrics (`accuracy`, `accuracy_std`, `class_5/f1`, ...).
fn summary_metrics(
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

/// Feature importance of the refitted model, where the backend has it: a table and a chart
/// (artifacts) and one metric per feature.
fn importance_outputs(fitted: &Fitted, ts: i64) -> (Artifacts, Vec<Metric>) {
    let importances = fitted.model.feature_importance();
    let Some((kind, values)) = importances.last() else {
        return (Vec::new(), Vec::new());
    };
    let names = &fitted.preprocessor.output_names;
    let mut csv = String::from("feature");
    for (kind, _) in &importances {
        csv.push_str(&format!(",{kind}"));
    }
    csv.push('\n');
    for (j, name) in names.iter().enumerate() {
        csv.push_str(&format!("\"{name}\""));
        for (_, v) in &importances {
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
        ("feature_importance.csv".into(), csv.into_bytes()),
        ("feature_importance.svg".into(), chart.into_bytes()),
    ];
    let metrics = names
        .iter()
        .zip(values)
        .map(|(n, v)| metric(format!("importance_{kind}/{}", sanitize(n)), *v, ts))
        .collect();
    (artifacts, metrics)
}

/// The run's model files: the backend's native ones and runner's own document, which holds
/// the config, labels, preprocessing and fitted state `predict` and `replay` load.
fn model_artifacts(prep: &Prepared, plan: &TrainPlan, fitted: &Fitted) -> Result<Artifacts> {
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
/// hold-out score. Metrics go to the trackers as they are produced.
pub fn train_config(
    prep: &Prepared,
    plan: &TrainPlan,
    splits: &Splits,
    run_uuid: &str,
    trackers: &dyn Tracker,
    progress: &Progress,
) -> Result<(RunResult, Artifacts)> {
    let started = std::time::Instant::now();
    let cv = cross_validate(prep, plan, splits, run_uuid, trackers, progress)?;
    // Per-class figures come from the out-of-fold predictions pooled over all folds.
    let per_class = if prep.task == Task::Classification {
        per_class_from_confusion(&cv.pooled, &class_labels(prep))
    } else {
        Vec::new()
    };
    let ts = now_ms();
    let (metrics, mut batch) = summary_metrics(&cv.fold_metrics, &per_class, ts);
    // The run's model: refitted on every training row.
    let cv_seconds = started.elapsed().as_secs_f64();
    let refit_start = std::time::Instant::now();
    let curve = live_curve(trackers, run_uuid, "refit".to_string());
    let seed = fold_seed(plan.seed, u64::MAX);
    let fitted = fit_with_curve(prep, plan, &splits.cv_rows, seed, None, Some(&curve))
        .context("refit on all training rows")?;
    let refit_curve = finish_curve(curve)?;
    let refit_seconds = refit_start.elapsed().as_secs_f64();
    progress.tick(&format!("{} refit", plan.model.name));
    let mut holdout = BTreeMap::new();
    if !splits.holdout_rows.is_empty() {
        let pred = predict_rows(prep, &fitted, &splits.holdout_rows)?;
        let y: Vec<f64> = splits.holdout_rows.iter().map(|r| prep.y[*r]).collect();
        for (m, v) in score(prep, &y, &pred).metrics {
            batch.push(metric(format!("holdout/{m}"), v, ts));
            holdout.insert(m, v);
        }
    }
    batch.push(metric("cv_seconds".into(), cv_seconds, ts));
    batch.push(metric("refit_seconds".into(), refit_seconds, ts));

    let train_pred = predict_rows(prep, &fitted, &splits.cv_rows)?;
    let mut artifacts: Artifacts = vec![(
        "predictions.csv".to_string(),
        predictions_csv(prep, &splits.cv_rows, &train_pred).into_bytes(),
    )];
    let plots = run_plots(prep, &cv.pooled, &cv.fold_curves, &refit_curve, &cv.oof);
    artifacts.extend(plots);
    let (importance_files, importance_metrics) = importance_outputs(&fitted, ts);
    artifacts.extend(importance_files);
    // Into the run's final batch (one history line on W&B).
    batch.extend(importance_metrics);
    trackers.log_metrics(run_uuid, &batch)?;
    artifacts.extend(model_artifacts(prep, plan, &fitted)?);
    let result = RunResult {
        version: String::new(),
        run_uuid: run_uuid.to_string(),
        name: plan.model.name.clone(),
        kind: plan.model.kind.clone(),
        status: "FINISHED".into(),
        error: None,
        metrics,
        fold_metrics: cv.fold_metrics,
        holdout,
        per_class,
        confusion: cv.pooled,
        fit_seconds: started.elapsed().as_secs_f64(),
    };
    Ok((result, artifacts))
}

/// A learning curve that reaches the trackers while the model trains: each round's metrics as
/// one batch `<prefix>/<metric>` (step = round, the time it was measured), sent when the next
/// round starts, so `mlflow ui` and W&B draw the curve as it grows.
fn live_curve<'a>(trackers: &'a dyn Tracker, run_uuid: &'a str, prefix: String) -> Curve<'a> {
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
fn finish_curve(curve: Curve<'_>) -> Result<Vec<(i64, String, f64)>> {
    Ok(curve
        .finish()?
        .into_iter()
        .map(|(round, key, value, _)| (round, key, value))
        .collect())
}

/// The pictures of a run: confusion matrix and per-class F1 (classification), predicted against
/// actual and residuals from out-of-fold predictions (regression), learning curves (iterative
/// models).
fn run_plots(
    prep: &Prepared,
    confusion: &[Vec<usize>],
    folds: &[Vec<(i64, String, f64)>],
    refit: &[(i64, String, f64)],
    oof: &[(f64, f64)],
) -> Artifacts {
    use crate::plot;
    let mut out: Artifacts = Vec::new();
    if let Some(l) = &prep.labels {
        let m: Vec<Vec<f64>> = confusion
            .iter()
            .map(|r| r.iter().map(|c| *c as f64).collect())
            .collect();
        out.push((
            "confusion_matrix.svg".into(),
            plot::heatmap(
                "Confusion matrix (out-of-fold, all folds)",
                &l.classes,
                &l.classes,
                &m,
                "true",
                "predicted",
            )
            .into_bytes(),
        ));
        let stats = per_class_from_confusion(confusion, &l.classes);
        let series = vec![
            (
                "precision".to_string(),
                stats.iter().map(|c| c.precision).collect(),
            ),
            (
                "recall".to_string(),
                stats.iter().map(|c| c.recall).collect(),
            ),
            ("F1".to_string(), stats.iter().map(|c| c.f1).collect()),
        ];
        out.push((
            "per_class.svg".into(),
            plot::grouped_bars(
                "Precision, recall and F1 per class (out-of-fold)",
                "score",
                &l.classes,
                &series,
            )
            .into_bytes(),
        ));
    } else if !oof.is_empty() {
        out.push((
            "predicted_vs_actual.svg".into(),
            plot::scatter(
                "Predicted against actual (out-of-fold)",
                "actual",
                "predicted",
                oof,
                true,
            )
            .into_bytes(),
        ));
        let res: Vec<(f64, f64)> = oof.iter().map(|(t, p)| (*p, p - t)).collect();
        out.push((
            "residuals.svg".into(),
            plot::scatter(
                "Residuals (out-of-fold)",
                "predicted",
                "predicted - actual",
                &res,
                false,
            )
            .into_bytes(),
        ));
    }
    if folds.iter().any(|f| !f.is_empty()) || !refit.is_empty() {
        out.push((
            "learning_curve.svg".into(),
            learning_curve_svg(folds, refit).into_bytes(),
        ));
    }
    out
}

/// Every loss curve: each fold faint, their mean (over the folds that reached each round, since
/// early stopping ends folds at different rounds) solid, the refit dashed.
fn learning_curve_svg(folds: &[Vec<(i64, String, f64)>], refit: &[(i64, String, f64)]) -> String {
    use crate::plot::{Line, Stroke};
    let is_loss = |key: &str| key.contains("loss") || key.contains("rmse");
    let keys: std::collections::BTreeSet<&String> = folds
        .iter()
        .flatten()
        .chain(refit)
        .map(|(_, k, _)| k)
        .filter(|k| is_loss(k))
        .collect();
    let curve = |points: &[(i64, String, f64)], key: &str| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter(|(_, k, _)| k == key)
            .map(|(r, _, v)| (*r as f64, *v))
            .collect()
    };
    let mut lines = Vec::new();
    for (color, key) in keys.into_iter().enumerate() {
        let mut sums: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
        for (i, fold) in folds.iter().enumerate() {
            let points = curve(fold, key);
            for (r, v) in &points {
                let e = sums.entry(*r as i64).or_insert((0.0, 0));
                e.0 += v;
                e.1 += 1;
            }
            lines.push(Line {
                name: (i == 0).then(|| format!("{key}, each fold")),
                color,
                stroke: Stroke::Faint,
                points,
            });
        }
        if !sums.is_empty() {
            lines.push(Line {
                name: Some(format!("{key}, mean of {} folds", folds.len())),
                color,
                stroke: Stroke::Solid,
                points: sums
                    .into_iter()
                    .map(|(r, (sum, n))| (r as f64, sum / n as f64))
                    .collect(),
            });
        }
        let refit_points = curve(refit, key);
        if !refit_points.is_empty() {
            lines.push(Line {
                name: Some(format!("{key}, refit")),
                color,
                stroke: Stroke::Dashed,
                points: refit_points,
            });
        }
    }
    crate::plot::lines_chart("Learning curve", "round / epoch", "loss", &lines, true)
}

/// The refitted model's predictions on every training row, with decoded labels.
fn predictions_csv(prep: &Prepared, rows: &[usize], pred: &models::Prediction) -> String {
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

fn per_class_from_confusion(confusion: &[Vec<usize>], labels: &[String]) -> Vec<eval::ClassStats> {
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

/// What the user asked of `runner sweep`.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    pub sets: Vec<String>,
    pub only: Vec<String>,
    pub jobs: Option<usize>,
    pub smoke: bool,
    pub json: bool,
    pub tracking_uri: Option<String>,
    pub version: Option<i64>,
    /// `--ensemble top=N`: after the sweep, a voting and a stacking ensemble of the N best.
    pub ensemble_top: Option<usize>,
    /// The sweep's parent run: every training run gets `mlflow.parentRunId` pointing at it.
    pub parent_run: Option<String>,
    /// `--wide`: every leaderboard column, however wide the terminal.
    pub wide: bool,
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The plans of a sweep: one per model config, with the thread share of each.
pub fn plans(prep: &Prepared, configs: &[ModelConfig], jobs: usize, smoke: bool) -> Vec<TrainPlan> {
    let cv = &prep.loaded.config.cv;
    let threads = (cores() / jobs.max(1)).max(1);
    configs
        .iter()
        .map(|m| {
            let mut model = m.clone();
            if smoke {
                shrink_for_smoke(&mut model);
            }
            TrainPlan {
                model,
                seed: prep.loaded.config.seed,
                threads,
                folds: if smoke { 2 } else { cv.folds },
                repeats: if smoke { 1 } else { cv.repeats },
                stratified: cv.stratified,
                holdout: if smoke { 0.0 } else { cv.holdout },
                max_rows: if smoke { Some(400) } else { None },
            }
        })
        .collect()
}

fn shrink_for_smoke(m: &mut ModelConfig) {
    for (key, cap) in [
        ("n_trees", 10i64),
        ("max_iterations", 50),
        ("n_rounds", 10),
        ("epochs", 3),
    ] {
        if let Some(models::ParamValue::Int(v)) = m.params.get_mut(key) {
            *v = (*v).min(cap);
        }
    }
}

/// Builds the run record that makes a run replayable from the store alone.
pub fn run_record(
    prep: &Prepared,
    plan: &TrainPlan,
    etl_version: i64,
    splits: &Splits,
) -> serde_json::Value {
    json!({
        "runner_version": RUNNER_VERSION,
        "git_commit": GIT_COMMIT,
        "libraries": LIB_VERSIONS,
        "experiment": prep.loaded.config.experiment,
        "config_file": prep.loaded.path.display().to_string(),
        "config": prep.loaded.config,
        "plan": plan,
        "task": prep.task,
        "task_reason": prep.task_reason,
        "labels": prep.labels,
        "etl_version": format!("v{etl_version}"),
        "folds_sha256": folds_digest(&splits.folds),
        "primary_metric": prep.primary_metric,
    })
}

/// Each metric's mean and standard deviation over folds, as `{"mean": .., "std": ..}` objects.
pub mod mean_std {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize)]
    struct MeanStd {
        mean: f64,
        std: f64,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Object(MeanStd),
        Pair(f64, f64),
    }

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, (f64, f64)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let objects: BTreeMap<&String, MeanStd> = m
            .iter()
            .map(|(k, &(mean, std))| (k, MeanStd { mean, std }))
            .collect();
        objects.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, (f64, f64)>, D::Error> {
        let raw = BTreeMap::<String, Either>::deserialize(d)?;
        Ok(raw
            .into_iter()
            .map(|(k, v)| match v {
                Either::Object(o) => (k, (o.mean, o.std)),
                Either::Pair(m, s) => (k, (m, s)),
            })
            .collect())
    }

    /// One metric's (mean, std) from a stored summary's `metrics` object, in either shape.
    pub fn get(metrics: &serde_json::Value, key: &str) -> Option<(f64, f64)> {
        let v = &metrics[key];
        match (v["mean"].as_f64(), v["std"].as_f64()) {
            (Some(m), Some(s)) => Some((m, s)),
            _ => Some((v[0].as_f64()?, v[1].as_f64()?)),
        }
    }

    /// Every metric of a stored summary's `metrics` object, in either shape.
    pub fn all(metrics: &serde_json::Value) -> BTreeMap<String, (f64, f64)> {
        #[derive(Deserialize)]
        struct Wrapper(#[serde(deserialize_with = "deserialize")] BTreeMap<String, (f64, f64)>);
        serde_json::from_value::<Wrapper>(metrics.clone())
            .map(|w| w.0)
            .unwrap_or_default()
    }
}

/// Everything a sweep did, for printing.
#[derive(Debug, Serialize)]
pub struct SweepReport {
    /// The version of this JSON document's shape (`runner sweep --json`).
    pub schema: u32,
    pub experiment: String,
    pub store: String,
    pub etl_version: String,
    pub etl_reused: bool,
    pub task: Task,
    pub task_reason: String,
    pub primary_metric: String,
    pub higher_is_better: bool,
    pub runs: Vec<RunResult>,
    pub wall_seconds: f64,
    /// From process start to the first model fit (data loaded, ETL run, store written).
    pub start_to_first_training_ms: Option<f64>,
    /// What W&B did: its mode, the runs whose spool was not fully sent when the sweep ended,
    /// and how long the sweep waited for it after training.
    pub wandb: Option<serde_json::Value>,
    /// The sweep's comparison chart (SVG), an artifact of the sweep's parent run.
    pub comparison_chart: Option<String>,
    /// The MLflow run that groups the sweep's runs.
    pub parent_run: Option<String>,
}

/// The sweep at a glance: the primary metric of every run with its fold spread, as SVG.
pub fn comparison_svg(prep: &Prepared, runs: &[RunResult]) -> String {
    let metric = &prep.primary_metric;
    let done: Vec<&RunResult> = runs
        .iter()
        .filter(|r| r.metrics.contains_key(metric))
        .collect();
    let labels: Vec<String> = done
        .iter()
        .map(|r| format!("{} {}", r.version, r.name))
        .collect();
    let means: Vec<f64> = done.iter().map(|r| r.metrics[metric].0).collect();
    let stds: Vec<f64> = done.iter().map(|r| r.metrics[metric].1).collect();
    crate::plot::bar_chart(
        &format!(
            "{}: {metric} per config (mean ± std over folds)",
            prep.loaded.config.experiment
        ),
        metric,
        &labels,
        &means,
        Some(&stds),
    )
}

/// Tries a store write three times (a full disk or a locked file may clear), 0.2 s and 1 s
/// apart.
fn with_retries(mut write: impl FnMut() -> Result<()>) -> Result<()> {
    let mut last = None;
    for wait_ms in [0, 200, 1000] {
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        match write() {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
}

/// Records a run as FAILED with its error, retrying; returns the message to report, which says
/// so when even that could not be written (the run then stays unfinished in the store until the
/// next runner command that writes there marks it KILLED).
fn record_failure(trackers: &dyn Tracker, run_uuid: &str, msg: String) -> String {
    let tags = [
        ("runner.error".to_string(), msg.clone()),
        ("mlflow.note.content".to_string(), format!("failed: {msg}")),
    ];
    let tagged = with_retries(|| trackers.set_tags(run_uuid, &tags));
    let status = with_retries(|| trackers.finish_run(run_uuid, RunStatus::Failed, now_ms()));
    match (status, tagged) {
        (Err(e), _) => format!("{msg}; recording FAILED also failed after 3 tries: {e:#}"),
        (Ok(()), Err(e)) => format!("{msg}; recording the error as a tag failed: {e:#}"),
        (Ok(()), Ok(())) => msg,
    }
}

/// Trains one run and records how it ended. A failure marks the run FAILED with its error and
/// never stops the other configs.
#[allow(clippy::too_many_arguments)]
pub fn run_one(
    prep: &Prepared,
    plan: &TrainPlan,
    splits: &Splits,
    spec: &RunSpec,
    record: &serde_json::Value,
    version: i64,
    store: &MlflowStore,
    trackers: &dyn Tracker,
    progress: &Progress,
) -> RunResult {
    let tv = format!("t{version}");
    let attempt = || -> Result<RunResult> {
        trackers.start_run(&spec.run_uuid)?;
        let (mut result, artifacts) =
            train_config(prep, plan, splits, &spec.run_uuid, trackers, progress)?;
        result.version = tv.clone();
        for (name, bytes) in artifacts {
            // "model.json" -> "model_t3.json"
            let (stem, ext) = name.split_once('.').unwrap_or((name.as_str(), "bin"));
            trackers.log_artifact(&spec.run_uuid, &format!("{stem}_{tv}.{ext}"), &bytes)?;
        }
        write_report_artifacts(prep, plan, record, &result, trackers)?;
        store.set_summary(&spec.run_uuid, &serde_json::to_value(&result)?)?;
        trackers.finish_run(&spec.run_uuid, RunStatus::Finished, now_ms())?;
        Ok(result)
    };
    // A panic inside a backend becomes this run's failure, never the sweep's.
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(attempt)).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(anyhow::anyhow!("internal error (panic): {msg}"))
        });
    match outcome {
        Ok(r) => {
            let m = r
                .metrics
                .get(&prep.primary_metric)
                .map(|(m, s)| format!("{m:.4} ± {s:.4}"))
                .unwrap_or_default();
            progress.line(&format!(
                "{tv} {:<40} {} {m}  ({:.1}s)",
                r.name, prep.primary_metric, r.fit_seconds
            ));
            r
        }
        Err(e) => {
            let msg = record_failure(trackers, &spec.run_uuid, format!("{e:#}"));
            progress.line(&format!("{tv} {} FAILED: {msg}", plan.model.name));
            RunResult {
                version: tv,
                run_uuid: spec.run_uuid.clone(),
                name: plan.model.name.clone(),
                kind: plan.model.kind.clone(),
                status: "FAILED".into(),
                error: Some(msg),
                metrics: BTreeMap::new(),
                fold_metrics: BTreeMap::new(),
                holdout: BTreeMap::new(),
                per_class: Vec::new(),
                confusion: Vec::new(),
                fit_seconds: 0.0,
            }
        }
    }
}

fn write_report_artifacts(
    prep: &Prepared,
    plan: &TrainPlan,
    record: &serde_json::Value,
    r: &RunResult,
    trackers: &dyn Tracker,
) -> Result<()> {
    trackers.log_artifact(
        &r.run_uuid,
        "config.json",
        &serde_json::to_vec_pretty(&json!({
            "config": prep.loaded.config,
            "model": plan.model,
            "plan": plan,
            "record": record,
        }))?,
    )?;
    let mut metrics_doc = json!({"mean_std": r.metrics, "folds": r.fold_metrics});
    if !r.holdout.is_empty() {
        metrics_doc["holdout"] = serde_json::to_value(&r.holdout)?;
    }
    trackers.log_artifact(
        &r.run_uuid,
        "metrics.json",
        &serde_json::to_vec_pretty(&metrics_doc)?,
    )?;
    if prep.task == Task::Classification {
        let labels = class_labels(prep);
        let mut csv = String::from("true\\predicted");
        for l in &labels {
            csv.push_str(&format!(",{l}"));
        }
        csv.push('\n');
        for (l, row) in labels.iter().zip(&r.confusion) {
            csv.push_str(l);
            for c in row {
                csv.push_str(&format!(",{c}"));
            }
            csv.push('\n');
        }
        trackers.log_artifact(&r.run_uuid, "confusion_matrix.csv", csv.as_bytes())?;
        trackers.log_artifact(
            &r.run_uuid,
            "confusion_matrix.json",
            &serde_json::to_vec_pretty(&json!({"labels": labels, "matrix": r.confusion}))?,
        )?;
        let mut md =
            String::from("| class | precision | recall | f1 | support |\n|---|---|---|---|---|\n");
        for c in &r.per_class {
            md.push_str(&format!(
                "| {} | {:.4} | {:.4} | {:.4} | {} |\n",
                c.label, c.precision, c.recall, c.f1, c.support
            ));
        }
        trackers.log_artifact(&r.run_uuid, "per_class_report.md", md.as_bytes())?;
        trackers.log_artifact(
            &r.run_uuid,
            "per_class_report.json",
            &serde_json::to_vec_pretty(&r.per_class)?,
        )?;
    }
    Ok(())
}

pub fn run_params(prep: &Prepared, plan: &TrainPlan, etl_version: i64) -> Vec<(String, String)> {
    let c = &prep.loaded.config;
    let mut p: Vec<(String, String)> = plan
        .model
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    p.extend([
        ("model.kind".into(), plan.model.kind.clone()),
        ("model.name".into(), plan.model.name.clone()),
        ("seed".into(), plan.seed.to_string()),
        ("threads".into(), plan.threads.to_string()),
        ("task".into(), prep.task.to_string()),
        ("cv.folds".into(), plan.folds.to_string()),
        ("cv.repeats".into(), plan.repeats.to_string()),
        ("cv.stratified".into(), plan.stratified.to_string()),
        ("cv.holdout".into(), plan.holdout.to_string()),
        ("etl_version".into(), format!("v{etl_version}")),
        ("data.source".into(), c.data.source.clone()),
        ("data.target".into(), c.data.target.clone()),
        (
            "etl.impute".into(),
            format!("{:?}", c.etl.impute).to_lowercase(),
        ),
        (
            "etl.encode".into(),
            format!("{:?}", c.etl.encode).to_lowercase(),
        ),
        (
            "etl.scale".into(),
            format!("{:?}", c.etl.scale).to_lowercase(),
        ),
    ]);
    if let Some(l) = &prep.labels {
        p.push((
            "label_mapping".into(),
            l.classes
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{i}={c}"))
                .collect::<Vec<_>>()
                .join(","),
        ));
    }
    p
}

pub fn run_tags(
    prep: &Prepared,
    plan: &TrainPlan,
    etl_version: i64,
    smoke: bool,
) -> Vec<(String, String)> {
    let mut t = vec![
        ("mlflow.user".to_string(), user()),
        (
            "mlflow.source.name".into(),
            format!("runner sweep {}", prep.loaded.path.display()),
        ),
        ("mlflow.source.type".into(), "LOCAL".into()),
        ("mlflow.source.git.commit".into(), GIT_COMMIT.to_string()),
        (
            "mlflow.note.content".into(),
            format!(
                "{} ({}) on ETL v{etl_version}; {} by {}",
                plan.model.name, plan.model.kind, prep.task, prep.primary_metric
            ),
        ),
        ("runner.etl_version".into(), format!("v{etl_version}")),
        ("runner.runner_version".into(), RUNNER_VERSION.to_string()),
        ("runner.model_kind".into(), plan.model.kind.clone()),
        ("runner.libraries".into(), LIB_VERSIONS.to_string()),
    ];
    if smoke {
        t.push(("runner.smoke".into(), "true".into()));
    }
    t
}

/// `top=3` -> 3, for clap.
pub fn check_ensemble_arg(v: &str) -> std::result::Result<usize, String> {
    v.strip_prefix("top=")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| (2..=20).contains(n))
        .ok_or_else(|| format!("\"{v}\" is not an ensemble choice; write top=N with N in 2..=20"))
}

/// Replaces ensemble members that name earlier runs ("t3") with the model configs those runs
/// trained (kept with `from_run`), so that the plan recorded with the ensemble is complete.
pub fn resolve_run_members(
    configs: &mut [ModelConfig],
    store_path: &std::path::Path,
    task: Task,
    file: &std::path::Path,
) -> Result<()> {
    let pending = |m: &ModelConfig| m.from_run.is_some() && m.kind.is_empty();
    if !configs.iter().any(|c| c.members.iter().any(pending)) {
        return Ok(());
    }
    let store = if store_path.is_file() {
        Some(MlflowStore::open_read_only(store_path)?)
    } else {
        None
    };
    let file = file.display().to_string();
    for c in configs.iter_mut() {
        for m in c.members.iter_mut().filter(|m| pending(m)) {
            let t = m.from_run.clone().unwrap_or_default();
            let bad = |msg: String| ConfigError::new(&file, msg).key(format!("{}.members", c.name));
            let row = match &store {
                Some(s) => s.training_run(parse_version(&t, 't').map_err(&bad)?)?,
                None => None,
            }
            .ok_or_else(|| {
                bad(format!(
                    "member \"{t}\" of \"{}\": the store {} has no training run {t} (`runner runs` lists them)",
                    c.name,
                    store_path.display()
                ))
            })?;
            let model: ModelConfig = serde_json::from_value(row.record["plan"]["model"].clone())
                .with_context(|| format!("the record of {t}"))?;
            let run_task: Option<Task> = serde_json::from_value(row.record["task"].clone()).ok();
            if models::is_ensemble(&model.kind) {
                return Err(bad(format!("member \"{t}\" of \"{}\" is itself an ensemble ({}); members must be single models", c.name, model.kind)).into());
            }
            if run_task != Some(task) {
                return Err(bad(format!(
                    "member \"{t}\" of \"{}\" was trained for {} but this sweep does {task}",
                    c.name,
                    run_task
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "another task".into())
                ))
                .into());
            }
            let spec = models::kind_spec(&model.kind).context("unknown kind in a recorded run")?;
            if !spec.available() {
                return Err(bad(format!(
                    "member \"{t}\" of \"{}\" is a {} model, which needs the cargo feature `{}`",
                    c.name,
                    model.kind,
                    spec.feature.unwrap_or("?")
                ))
                .into());
            }
            *m = ModelConfig {
                from_run: Some(t),
                ..model
            };
        }
    }
    Ok(())
}

/// The `runner.members` tag of an ensemble: each member's run (`t3 forest`), found among
/// `batch` (run id, config, version) or taken from the earlier run it names.
pub fn members_tag(plan: &TrainPlan, batch: &[(String, &ModelConfig, i64)]) -> Option<String> {
    if plan.model.members.is_empty() {
        return None;
    }
    Some(
        plan.model
            .members
            .iter()
            .map(|m| {
                let run = m.from_run.clone().or_else(|| {
                    batch
                        .iter()
                        .find(|(_, c, _)| {
                            c.name == m.name && c.kind == m.kind && c.params == m.params
                        })
                        .map(|(_, _, v)| format!("t{v}"))
                });
                match run {
                    Some(t) => format!("{t} {}", m.name),
                    None => m.name.clone(),
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
    )
}

pub use crate::types::{check_version_arg, parse_version};

/// Runs that finished, best first by the primary metric.
pub fn ranked(report: &SweepReport) -> Vec<&RunResult> {
    let key = &report.primary_metric;
    let mut ok: Vec<&RunResult> = report
        .runs
        .iter()
        .filter(|r| r.metrics.contains_key(key))
        .collect();
    ok.sort_by(|a, b| {
        let (x, y) = (a.metrics[key].0, b.metrics[key].0);
        let ord = if report.higher_is_better {
            y.total_cmp(&x)
        } else {
            x.total_cmp(&y)
        };
        ord.then_with(|| a.version.cmp(&b.version))
    });
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_curve_draws_every_fold_faint_and_their_mean() {
        // Five folds that stop at different rounds (early stopping), and a refit.
        let folds: Vec<Vec<(i64, String, f64)>> = (0..5)
            .map(|f| {
                (0..(40 + 10 * f))
                    .flat_map(|r| {
                        let loss = 1.0 / (r as f64 + 1.0) + 0.01 * f as f64;
                        [
                            (r, "train_loss".to_string(), loss),
                            (r, "valid_loss".to_string(), loss + 0.1),
                        ]
                    })
                    .collect()
            })
            .collect();
        let refit: Vec<(i64, String, f64)> = (0..60)
            .map(|r| (r, "train_loss".to_string(), 0.5))
            .collect();
        let svg = learning_curve_svg(&folds, &refit);
        let lines = |style: &str| {
            svg.lines()
                .filter(|l| l.starts_with("<polyline") && l.contains(style))
                .count()
        };
        assert_eq!(lines("stroke-opacity"), 10, "5 folds x 2 curves, faint");
        assert_eq!(lines("stroke-width=\"2\""), 2, "the two means, solid");
        assert_eq!(lines("stroke-dasharray"), 1, "the refit, dashed");
        assert!(svg.contains("valid_loss, mean of 5 folds"));
        assert!(svg.contains("train_loss, refit"));
        // Rounds 0..79: whole-number ticks; losses from 0.0125 up: no negative axis.
        assert!(svg.contains(">20</text>") && !svg.contains(">19.750"));
        assert!(!svg.contains(">-0."), "no tick below zero");
    }

    #[test]
    fn metrics_read_in_both_stored_shapes() {
        let old = serde_json::json!({"accuracy": [0.6, 0.02]});
        let new = serde_json::json!({"accuracy": {"mean": 0.6, "std": 0.02}});
        assert_eq!(mean_std::get(&old, "accuracy"), Some((0.6, 0.02)));
        assert_eq!(mean_std::get(&new, "accuracy"), Some((0.6, 0.02)));
        assert_eq!(mean_std::all(&old), mean_std::all(&new));
    }
}
