//! `runner replay tN [--check] [--set k=v]`: retrains a run from the store alone and compares
//! every fold metric with the original, bit for bit.

use crate::config::{CvConfig, LoadedConfig, TaskChoice};
use crate::models::{self, check_value, kind_spec, Task};
use crate::replay::{parse_version, reload_etl};
use crate::report::new_table;
use crate::sweep::{self, SweepOptions, TrainPlan};
use crate::track::mlflow::{MlflowStore, TrainingRunRow};
use anyhow::{anyhow, bail, Context, Result};
use comfy_table::Cell;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Applies `--set key=value` to a recorded plan; returns the changes as `key: old -> new`.
/// `value` parsed, if it lies in `range`.
fn parse_within<T: std::str::FromStr + PartialOrd>(
    value: &str,
    range: impl std::ops::RangeBounds<T>,
) -> Option<T> {
    value.parse().ok().filter(|v| range.contains(v))
}

fn apply_sets(plan: &mut TrainPlan, sets: &[String]) -> Result<Vec<String>> {
    let mut changes = Vec::new();
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .ok_or_else(|| anyhow!("--set `{set}` is not of the form key=value"))?;
        let (key, value) = (key.trim(), value.trim());
        let parse_err = |what: &str| anyhow!("--set {key}={value}: {what}");
        let old;
        match key {
            "seed" => {
                old = plan.seed.to_string();
                plan.seed = value
                    .parse()
                    .map_err(|_| parse_err("must be a non-negative integer"))?;
            }
            "threads" => {
                old = plan.threads.to_string();
                plan.threads = parse_within(value, 1..=usize::MAX)
                    .ok_or_else(|| parse_err("must be an integer >= 1"))?;
            }
            "cv.folds" => {
                old = plan.folds.to_string();
                plan.folds = parse_within(value, 2..=100)
                    .ok_or_else(|| parse_err("must be an integer in 2..=100"))?;
            }
            "cv.repeats" => {
                old = plan.repeats.to_string();
                plan.repeats = parse_within(value, 1..=100)
                    .ok_or_else(|| parse_err("must be an integer in 1..=100"))?;
            }
            "cv.stratified" => {
                old = plan.stratified.to_string();
                plan.stratified = value
                    .parse()
                    .map_err(|_| parse_err("must be true or false"))?;
            }
            "pruned" => {
                old = (plan.stop_after_folds.is_some() || plan.stop_at_round.is_some()).to_string();
                if value != "false" {
                    return Err(parse_err("only `pruned=false` (train every fold) is valid"));
                }
                plan.stop_after_folds = None;
                plan.stop_at_round = None;
            }
            "fold_jobs" => {
                old = plan.fold_jobs.to_string();
                plan.fold_jobs = parse_within(value, 1..=usize::MAX)
                    .ok_or_else(|| parse_err("must be a whole number of folds, 1 or more"))?;
            }
            "refit" => {
                old = (!plan.cv_only).to_string();
                if value != "true" {
                    return Err(parse_err(
                        "only `refit=true` (refit on all rows and save the model) is valid",
                    ));
                }
                plan.cv_only = false;
            }
            "cv.holdout" => {
                old = plan.holdout.to_string();
                plan.holdout = parse_within(value, 0.0..0.9)
                    .ok_or_else(|| parse_err("must be a share in [0, 0.9)"))?;
            }
            other => {
                let param = other.strip_prefix("models.").unwrap_or(other);
                let spec = kind_spec(&plan.model.kind).ok_or_else(|| {
                    anyhow!(
                        "the run records an unknown model kind `{}`",
                        plan.model.kind
                    )
                })?;
                let p = spec.params.iter().find(|p| p.name == param).ok_or_else(|| {
                    let valid: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
                    anyhow!(
                        "--set {other}: not a replay setting; valid: seed, threads, fold_jobs, cv.folds, cv.repeats, cv.stratified, cv.holdout, pruned=false, refit=true, or a {} parameter ({})",
                        plan.model.kind,
                        models::quoted_list(&valid)
                    )
                })?;
                let tv = crate::config::parse_cli_value(value);
                let pv = match tv {
                    toml::Value::Integer(i) => models::ParamValue::Int(i),
                    toml::Value::Float(x) => models::ParamValue::Float(x),
                    toml::Value::Boolean(b) => models::ParamValue::Bool(b),
                    toml::Value::String(s) => models::ParamValue::Str(s),
                    _ => bail!("--set {other}: must be a single value"),
                };
                let pv = check_value(p, &pv).map_err(|m| anyhow!("--set {other}: {m}"))?;
                old = plan
                    .model
                    .params
                    .get(param)
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                plan.model.params.insert(param.to_string(), pv);
            }
        }
        changes.push(format!("{key}: {old} -> {value}"));
    }
    Ok(changes)
}

/// The folds a pruned trial trained before its pruner stopped it.
fn pruned_folds(run: &TrainingRunRow) -> Option<usize> {
    let folds = run.summary.as_ref()?["pruned"]["folds"].as_u64()?;
    usize::try_from(folds).ok()
}

fn fold_metrics_of(summary: &Value) -> BTreeMap<String, Vec<f64>> {
    serde_json::from_value(summary["fold_metrics"].clone()).unwrap_or_default()
}

/// Bit-for-bit equality, NaN equal to NaN.
fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// The config and plan a run recorded, with `--set` changes applied to the plan (returned in
/// words), ready to prepare the data again.
fn recorded_setup(
    run: &TrainingRunRow,
    sets: &[String],
) -> Result<(LoadedConfig, TrainPlan, Vec<String>)> {
    let rec = &run.record;
    let mut config: crate::config::Config =
        serde_json::from_value(rec["config"].clone()).context("run record has no config")?;
    let task: Task =
        serde_json::from_value(rec["task"].clone()).context("run record has no task")?;
    config.task = match task {
        Task::Classification => TaskChoice::Classification,
        Task::Regression => TaskChoice::Regression,
    };
    let mut plan: TrainPlan =
        serde_json::from_value(rec["plan"].clone()).context("run record has no plan")?;
    let pruned = run.summary.as_ref().map(|s| &s["pruned"]);
    plan.stop_at_round = pruned.and_then(|p| p["round"].as_i64());
    if plan.stop_at_round.is_none() {
        plan.stop_after_folds = pruned_folds(run);
    }
    let changes = apply_sets(&mut plan, sets)?;
    config.seed = plan.seed;
    config.cv = CvConfig {
        folds: plan.folds,
        stratified: plan.stratified,
        repeats: plan.repeats,
        holdout: plan.holdout,
        ..config.cv.clone()
    };
    let loaded = LoadedConfig {
        path: PathBuf::from(rec["config_file"].as_str().unwrap_or("(recorded config)")),
        text: String::new(),
        config,
        model_overrides: Vec::new(),
        search_override: None,
    };
    Ok((loaded, plan, changes))
}

/// Each fold metric of the original run against the replay's: (rows for the report, whether
/// every one is identical bit for bit).
fn compare_folds(run: &TrainingRunRow, new: &sweep::RunResult) -> (Vec<Value>, bool) {
    let before = run
        .summary
        .as_ref()
        .map(fold_metrics_of)
        .unwrap_or_default();
    let mut rows = Vec::new();
    let ended = new.status == "FINISHED" || new.pruned.is_some();
    let mut all_match = ended && !before.is_empty();
    for (metric, old) in &before {
        let now = new.fold_metrics.get(metric).cloned().unwrap_or_default();
        let identical = old.len() == now.len() && old.iter().zip(&now).all(|(a, b)| same(*a, *b));
        let max_diff = old
            .iter()
            .zip(&now)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        all_match &= identical;
        rows.push(json!({
            "metric": metric,
            "original_mean": sweep_mean(old),
            "replay_mean": sweep_mean(&now),
            "max_fold_diff": max_diff,
            "identical": identical,
        }));
    }
    (rows, all_match)
}

/// The comparison as a table: each metric's mean before and after, and whether it matches.
fn print_comparison(version: &str, new: &sweep::RunResult, rows: &[Value], all_match: bool) {
    let header = [
        "metric",
        version,
        &new.version,
        "max |fold diff|",
        "bit for bit",
    ];
    let mut t = new_table(&header);
    let number = |r: &Value, key: &str| r[key].as_f64().unwrap_or(f64::NAN);
    for r in rows {
        let identical = r["identical"].as_bool().unwrap_or(false);
        t.add_row(vec![
            Cell::new(r["metric"].as_str().unwrap_or("")),
            Cell::new(format!("{:.6}", number(r, "original_mean"))),
            Cell::new(format!("{:.6}", number(r, "replay_mean"))),
            Cell::new(format!("{:.3e}", number(r, "max_fold_diff"))),
            Cell::new(if identical { "yes" } else { "NO" }),
        ]);
    }
    println!("{t}");
    println!(
        "Tolerance: none (every model of this build is deterministic given its seed and thread count). {}",
        if all_match { "Every fold metric matches bit for bit." } else { "Some fold metrics differ." }
    );
}

/// The training run `version` of the store, which `--check` needs FINISHED.
fn run_to_replay(store: &MlflowStore, version: &str, check: bool) -> Result<TrainingRunRow> {
    let n = parse_version(version, 't')?;
    let Some(run) = store.training_run(n)? else {
        bail!(
            "training run {version} is not in {}; `runner runs` lists them",
            crate::track::store_label(&store.path)
        );
    };
    if check && run.status != "FINISHED" && pruned_folds(&run).is_none() {
        bail!(
            "{version} ended with status {}: there are no metrics to check against",
            run.status
        );
    }
    Ok(run)
}

/// What a replay did: the original run, its replay and each fold metric side by side.
pub struct Replayed {
    pub version: String,
    pub etl_version: i64,
    pub changes: Vec<String>,
    pub new: sweep::RunResult,
    pub rows: Vec<serde_json::Value>,
    /// Every fold metric is identical bit for bit.
    pub identical: bool,
}

impl Replayed {
    /// `runner replay --json`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "schema": crate::JSON_SCHEMA, "original": self.version, "replay": self.new.version, "status": self.new.status, "changes": self.changes,
            "tolerance": 0.0, "identical": self.identical, "metrics": self.rows,
        })
    }
}

/// What to replay: a run of a store, its settings changed or not, on its recorded input or
/// another copy of it.
pub struct ReplayRequest<'a> {
    pub store_path: &'a Path,
    /// Where the replay's run is logged (`--tracking-uri`), as a sweep would.
    pub tracking_uri: Option<String>,
    /// `t3`.
    pub version: &'a str,
    /// Requires the original to be FINISHED (its metrics are compared).
    pub check: bool,
    /// `--set` changes to the recorded settings.
    pub sets: &'a [String],
    /// `--input`: a copy of the recorded input (a file, or a `frame:` source).
    pub input: Option<&'a Path>,
}

pub fn replay_command(req: &ReplayRequest, json_out: bool) -> Result<ExitCode> {
    let (version, check) = (req.version, req.check);
    let r = replay_run(req, json_out)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&r.to_json())?);
    } else {
        let with = if r.changes.is_empty() {
            String::new()
        } else {
            format!(" with {}", r.changes.join("; "))
        };
        println!(
            "Replayed {version} as {} ({}, ETL v{} verified){with}",
            r.new.version, r.new.status, r.etl_version,
        );
        print_comparison(version, &r.new, &r.rows, r.identical);
    }
    if r.new.status != "FINISHED" && r.new.pruned.is_none() {
        bail!(
            "the replay {} failed: {}",
            r.new.version,
            r.new.error.as_deref().unwrap_or("unknown error")
        );
    }
    if check && !r.identical {
        eprintln!(
            "error: replay check failed: {} does not reproduce {version} bit for bit",
            r.new.version
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Retrains a run from its record on its verified ETL version (with `sets` changed) as a new
/// run, and compares their fold metrics.
pub fn replay_run(req: &ReplayRequest, quiet: bool) -> Result<Replayed> {
    let (version, check, sets) = (req.version, req.check, req.sets);
    let store = MlflowStore::open_read_only(req.store_path)?;
    let run = run_to_replay(&store, version, check)?;
    let reloaded = reload_etl(&store, run.etl_version, req.input)?;
    let rec = &run.record;
    let (loaded, plan, changes) = recorded_setup(&run, sets)?;
    let prep = sweep::prepare_from(loaded, reloaded.input.clone())?;
    if serde_json::to_value(&prep.labels)? != rec["labels"] {
        bail!(
            "the label mapping rebuilt from ETL v{} differs from the one recorded with {version}",
            run.etl_version
        );
    }
    let recorded_file = rec["folds_file_sha256"].as_str();
    let file_now = prep.folds_file.as_ref().map(|f| f.sha256.as_str());
    if recorded_file.is_some() && recorded_file != file_now {
        bail!(
            "the folds file cv.assignments = {:?} has changed since {version} (sha256 {} then, {} now); restore it to replay",
            prep.loaded.config.cv.assignments.as_deref().unwrap_or(""),
            recorded_file.unwrap_or(""),
            file_now.unwrap_or("none")
        );
    }
    let splits = sweep::make_splits(prep.task, &prep.y, &plan, prep.fixed_folds());
    let same_folds =
        sweep::folds_digest(&splits.folds) == rec["folds_sha256"].as_str().unwrap_or("");
    if changes.is_empty() && !same_folds {
        bail!("the fold assignment regenerated for {version} differs from the recorded one (sha256 {})", rec["folds_sha256"]);
    }
    let mut tags = vec![("runner.replay_of".to_string(), version.to_string())];
    if !changes.is_empty() {
        tags.push(("runner.replay_changes".into(), changes.join("; ")));
    }
    let opts = SweepOptions {
        tracking_uri: req.tracking_uri.clone(),
        ..Default::default()
    };
    let report = crate::schedule::run_plans(&prep, vec![plan], 1, &opts, quiet, &tags)?;
    let new = report
        .runs
        .into_iter()
        .next()
        .context("the replay trained no run")?;
    let (mut rows, mut identical) = compare_folds(&run, &new);
    if rows.is_empty() && new.pruned.is_some() {
        (rows, identical) = compare_curves(&store, &run.run_uuid, &new.run_uuid)?;
    }
    Ok(Replayed {
        version: version.to_string(),
        etl_version: run.etl_version,
        changes,
        new,
        rows,
        identical,
    })
}

/// A trial pruned inside its first fold has no fold metric: each of the original's first-fold
/// learning curves against the replay's, point by point as the store holds them.
fn compare_curves(
    store: &MlflowStore,
    original: &str,
    replayed: &str,
) -> Result<(Vec<Value>, bool)> {
    let keys: Vec<String> = (store.latest_metrics(original)?.into_iter())
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("fold0/"))
        .collect();
    let mut rows = Vec::new();
    for key in &keys {
        let old = store.metric_history(original, key)?;
        let now = store.metric_history(replayed, key)?;
        let identical = old.len() == now.len()
            && (old.iter().zip(&now)).all(|(a, b)| a.0 == b.0 && same(a.1, b.1));
        let max_diff = (old.iter().zip(&now))
            .map(|(a, b)| (a.1 - b.1).abs())
            .fold(0.0, f64::max);
        let last = |h: &[(i64, f64)]| h.last().map(|p| p.1);
        rows.push(json!({
            "metric": format!("{key} (curve, {} rounds, last value)", old.len()),
            "original_mean": last(&old),
            "replay_mean": last(&now),
            "max_fold_diff": max_diff,
            "identical": identical,
        }));
    }
    let all = !rows.is_empty() && rows.iter().all(|r| r["identical"] == true);
    Ok((rows, all))
}

fn sweep_mean(v: &[f64]) -> f64 {
    crate::eval::mean_std(v).0
}
