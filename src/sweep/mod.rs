//! Training a sweep's configs: the plan of each (recorded with its run, so it replays), its
//! splits, its result, and the report of a sweep. `train` trains and scores one config, `run`
//! takes it through its run's lifecycle, `record` says what the run records, `plots` draws it;
//! `schedule` runs many.

use crate::data;
use crate::eval::{self, Fold};
use crate::models::{self, ModelConfig, Task};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod importance;
mod mlflow_model;
mod plots;
pub mod prune;
mod record;
mod run;
mod train;

pub use plots::comparison_svg;
pub use record::{
    check_class_params, check_ensemble_arg, members_tag, resolve_run_members, run_params,
    run_record, run_tags,
};
pub use run::run_one;
pub use train::{fit_on, fit_with_curve, fold_seed, predict_rows, train_config, Fitted};

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
    /// CV folds trained at once, sharing `threads` (runs recorded before this trained one at
    /// a time).
    #[serde(default = "one_at_a_time")]
    pub fold_jobs: usize,
    pub folds: usize,
    pub repeats: usize,
    pub stratified: bool,
    pub holdout: f64,
    /// Smoke runs train on at most this many rows.
    pub max_rows: Option<usize>,
    /// Regression: the bins of the per-bin MAE. Runs recorded before bins were have none, which
    /// means one bin per rounded value, as they were scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_bins: Option<eval::TargetBins>,
    /// The replay of a pruned trial stops after this many folds, as the trial did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_after_folds: Option<usize>,
    /// ... or at this round of its first fold's learning curve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_at_round: Option<i64>,
    /// A search trial scored by its CV folds only (`[search] refit = "best"`): no refit, no
    /// model, no importance; its search trains the best trial in full once it ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cv_only: bool,
    /// Whether the folds measure permutation importance (`cv.importance`; runs recorded
    /// before the key did).
    #[serde(default = "measured", skip_serializing_if = "is_measured")]
    pub permutation_importance: bool,
    /// A search's median pruner: the run stops after a fold that falls below it.
    #[serde(skip)]
    pub pruner: Option<std::sync::Arc<prune::Pruner>>,
}

pub struct Splits {
    pub cv_rows: Vec<usize>,
    pub holdout_rows: Vec<usize>,
    pub folds: Vec<Fold>,
}

/// The rows a plan trains and scores: its hold-out, and its CV folds (drawn from the seed, or
/// `fixed` per row from a folds file).
pub fn make_splits(task: Task, y: &[f64], plan: &TrainPlan, fixed: Option<&[usize]>) -> Splits {
    if let Some(fold_of) = fixed {
        return fixed_splits(fold_of);
    }
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

/// Every row in CV, in the folds a file gave them.
fn fixed_splits(fold_of: &[usize]) -> Splits {
    let k = fold_of.iter().max().map_or(0, |m| m + 1);
    let folds = (0..k)
        .map(|f| {
            let (test, train): (Vec<usize>, Vec<usize>) =
                (0..fold_of.len()).partition(|r| fold_of[*r] == f);
            Fold {
                repeat: 0,
                index: f,
                train,
                test,
            }
        })
        .collect();
    Splits {
        cv_rows: (0..fold_of.len()).collect(),
        holdout_rows: Vec::new(),
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
    /// A search's trial stopped early by its pruner (status KILLED): where and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned: Option<prune::Pruned>,
    pub holdout: BTreeMap<String, f64>,
    pub per_class: Vec<eval::ClassStats>,
    pub confusion: Vec<Vec<usize>>,
    pub fit_seconds: f64,
}

pub use crate::models::Curve;

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
    /// `--register-best NAME[@ALIAS]`: the registered model the best run's model joins.
    pub register_best: Option<(String, Option<String>)>,
    /// `--search`/`--trials`: over every sweep file's `[search]`.
    pub search: Option<crate::config::SearchOverride>,
    /// `--shard i/n`: this process trains the configs whose index is i mod n.
    pub shard: Option<(usize, usize)>,
    /// `--shard-count N`: the number of shards when the environment gives only the index.
    pub shard_count: Option<usize>,
    /// `--restart`: a new sweep under the name, rather than continuing the one stored.
    pub restart: bool,
    /// The named sweep the runs belong to: each run records its config's key under it.
    pub sweep_name: Option<String>,
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn one_at_a_time() -> usize {
    1
}

fn measured() -> bool {
    true
}

fn is_measured(measure: &bool) -> bool {
    *measure
}

/// Tables up to this many cells train their CV folds in parallel when a run has several
/// threads: small fits use one thread poorly shared, and a fold's copy of the data is small.
const PARALLEL_FOLDS_MAX_CELLS: usize = 1 << 20;

/// The plans of a sweep: one per model config, with the thread share of each.
pub fn plans(prep: &Prepared, configs: &[ModelConfig], jobs: usize, smoke: bool) -> Vec<TrainPlan> {
    let cv = &prep.loaded.config.cv;
    let threads = (cores() / jobs.max(1)).max(1);
    let cells = prep.table.n_rows * prep.table.features.len().max(1);
    let fold_jobs = if cells <= PARALLEL_FOLDS_MAX_CELLS {
        threads
    } else {
        1
    };
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
                fold_jobs,
                folds: if smoke { 2 } else { cv.folds },
                repeats: if smoke { 1 } else { cv.repeats },
                stratified: cv.stratified,
                holdout: if smoke { 0.0 } else { cv.holdout },
                max_rows: if smoke { Some(400) } else { None },
                target_bins: (prep.task == Task::Regression).then(|| prep.target_bins.clone()),
                stop_after_folds: None,
                stop_at_round: None,
                cv_only: false,
                permutation_importance: cv.importance == crate::config::Importance::Permutation,
                pruner: None,
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
    /// The named sweep: its name, this process's shard, and how many configs stand where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<serde_json::Value>,
}

pub use crate::types::{check_version_arg, parse_version};

/// A kernel SVM's fit on 5,000 rows of two classes, with its Platt folds, measured on a 2-core
/// machine (`examples/bench_scale.sh`: 1.3-1.45 s with algorithm 2): its time grows with the
/// square of the rows.
const SVM_SECONDS_AT_5K: f64 = 1.5;

/// Warnings, before anything trains, for configs that will take very long on this table: a
/// kernel SVM's estimated time, from its quadratic growth in rows (one model per class for
/// more than two classes), for its folds and refit. `configs` and the searched entries of
/// `studies` are looked at.
pub fn size_warnings(
    prep: &Prepared,
    configs: &[ModelConfig],
    studies: &[crate::config::Study],
) -> Vec<String> {
    let cv = &prep.loaded.config.cv;
    let rows = (prep.table.n_rows as f64 * (1.0 - cv.holdout)).max(0.0);
    let fit_rows = rows * (cv.folds as f64 - 1.0) / cv.folds as f64;
    let classes = prep.labels.as_ref().map_or(1, |l| l.classes.len());
    let models = if classes > 2 { classes } else { 1 } as f64;
    let fits = (cv.folds * cv.repeats + 1) as f64;
    let per_fit = SVM_SECONDS_AT_5K * (fit_rows / 5000.0).powi(2) * models;
    let minutes = per_fit * fits / 60.0;
    if minutes < 10.0 {
        return Vec::new();
    }
    let bases = studies.iter().map(|s| &s.base);
    (configs.iter().chain(bases))
        .filter(|c| c.kind == "svm")
        .map(|c| {
            format!(
                "{}: a kernel SVM on {} rows will take about {minutes:.0} minutes ({} fits of about {per_fit:.0} s; the time grows with the square of the rows): consider a sample of the rows, `--smoke`, or a booster",
                c.name, rows as usize, fits as usize
            )
        })
        .collect()
}

/// Runs that finished, best first by the primary metric.
pub fn ranked(report: &SweepReport) -> Vec<&RunResult> {
    let key = &report.primary_metric;
    let mut ok: Vec<&RunResult> = report
        .runs
        .iter()
        .filter(|r| r.status == "FINISHED" && r.metrics.contains_key(key))
        .collect();
    ok.sort_by(|a, b| {
        let (x, y) = (a.metrics[key].0, b.metrics[key].0);
        let ord = if report.higher_is_better {
            y.total_cmp(&x)
        } else {
            x.total_cmp(&y)
        };
        // A search's best trial trained in full ties with its trial: the one with a model first.
        let full = |r: &RunResult| crate::config::space::is_best_of_search(&r.name);
        ord.then_with(|| full(b).cmp(&full(a)))
            .then_with(|| a.version.cmp(&b.version))
    });
    ok
}

#[cfg(test)]
mod tests {
    use super::plots::learning_curve_svg;
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
