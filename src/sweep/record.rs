//! What a run records: its full record (replayable from the store alone), its MLflow params
//! and tags, and the runs its ensemble members came from.

use crate::config::ConfigError;
use crate::models::{self, ModelConfig, Task};
use crate::track::mlflow::MlflowStore;
use anyhow::{Context, Result};
use serde_json::json;

use super::*;

/// Builds the run record that makes a run replayable from the store alone.
pub fn run_record(
    prep: &Prepared,
    plan: &TrainPlan,
    etl_version: i64,
    splits: &Splits,
) -> serde_json::Value {
    let mut record = record_fields(prep, plan, etl_version, splits);
    if let Some(file) = &prep.folds_file {
        record["folds_file_sha256"] = json!(file.sha256);
    }
    record
}

fn record_fields(
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
            format!("{:?}", super::train::etl_for(&c.etl, &plan.model).scale).to_lowercase(),
        ),
    ]);
    if !c.etl.transform.is_empty() {
        let list: Vec<String> = (c.etl.transform.iter())
            .map(|(col, t)| {
                let name = serde_json::to_value(t)
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                format!("{col}={}", name.trim_matches('"'))
            })
            .collect();
        p.push(("etl.transform".into(), list.join(",")));
    }
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
    let etl = &prep.loaded.config.etl;
    if super::train::etl_for(etl, &plan.model).scale != etl.scale {
        t.push((
            "runner.unscaled".into(),
            format!(
                "{} trains on unscaled inputs (splits do not change with scaling, and its native files read raw columns); etl.scale = {:?} applies to the other kinds",
                plan.model.kind,
                format!("{:?}", etl.scale).to_lowercase()
            ),
        ));
    }
    t
}

/// What the data's classes decide of the configs, checked before anything is written (exit
/// 2): every label `class_weights` names is a class of the data, and a `threshold` is given
/// only for two classes and only to a run's own model (an ensemble's, not a member's).
pub fn check_class_params(configs: &[ModelConfig], prep: &Prepared) -> Result<()> {
    let Some(labels) = &prep.labels else {
        return Ok(());
    };
    check_thresholds(configs, prep, labels.classes.len())?;
    for c in configs {
        let Some(text) = c.params.get("class_weights").map(|v| v.to_string()) else {
            continue;
        };
        let given = models::parse_class_weights(&text).map_err(anyhow::Error::msg)?;
        if let Some((label, _)) = given.iter().find(|(l, _)| !labels.classes.contains(l)) {
            return Err(ConfigError::new(
                prep.loaded.path.display().to_string(),
                format!(
                    "class_weights of \"{}\" names \"{label}\", which is not a class of the data; the classes are {}",
                    c.name,
                    labels.classes.join(", ")
                ),
            )
            .key("class_weights")
            .into());
        }
    }
    Ok(())
}

fn check_thresholds(configs: &[ModelConfig], prep: &Prepared, classes: usize) -> Result<()> {
    let given = |c: &ModelConfig| {
        c.params
            .get("threshold")
            .is_some_and(|v| v.to_string() != "none")
    };
    let file = prep.loaded.path.display().to_string();
    for c in configs {
        if given(c) && classes != 2 {
            let message = format!(
                "threshold of \"{}\" splits two classes; the data has {classes}: leave it out, or use calibration",
                c.name
            );
            return Err(ConfigError::new(&file, message).key("threshold").into());
        }
        if let Some(m) = c.members.iter().find(|m| given(m)) {
            let message = format!(
                "member \"{}\" of \"{}\" has a threshold, which an ensemble does not use: give it to \"{}\" itself",
                m.name, c.name, c.name
            );
            return Err(ConfigError::new(&file, message).key("threshold").into());
        }
    }
    Ok(())
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
                    crate::track::store_label(store_path)
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
