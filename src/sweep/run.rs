//! One run's lifecycle on the trackers: started, trained, its artifacts logged, finished, or
//! FAILED with its error (retried, and never stopping the other runs).

use crate::models::Task;
use crate::track::{now_ms, RunSpec, RunStatus, Tracker};
use anyhow::Result;
use serde_json::json;
use std::collections::BTreeMap;

use super::train::class_labels;
use super::*;

/// Tries a store write three times (a full disk or a locked file may clear), 0.2 s and 1 s
/// apart.
pub(crate) fn with_retries(mut write: impl FnMut() -> Result<()>) -> Result<()> {
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
pub(crate) fn record_failure(trackers: &dyn Tracker, run_uuid: &str, msg: String) -> String {
    record_end(trackers, run_uuid, RunStatus::Failed, msg)
}

/// Records a run that ended early: FAILED with its error (`runner.error`) or KILLED with its
/// reason (`runner.killed_reason`), tags and status each retried; the message to report.
fn record_end(trackers: &dyn Tracker, run_uuid: &str, status: RunStatus, msg: String) -> String {
    let (key, word) = match status {
        RunStatus::Killed => ("runner.killed_reason", "killed"),
        _ => ("runner.error", "failed"),
    };
    let tags = [
        (key.to_string(), msg.clone()),
        ("mlflow.note.content".to_string(), format!("{word}: {msg}")),
    ];
    let tagged = with_retries(|| trackers.set_tags(run_uuid, &tags));
    let ended = with_retries(|| trackers.finish_run(run_uuid, status, now_ms()));
    match (ended, tagged) {
        (Err(e), _) => format!(
            "{msg}; recording {} also failed after 3 tries: {e:#}",
            status.as_mlflow()
        ),
        (Ok(()), Err(e)) => format!("{msg}; recording the reason as a tag failed: {e:#}"),
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
    trackers: &dyn Tracker,
    progress: &Progress,
) -> RunResult {
    let tv = format!("t{version}");
    let attempt = || -> Result<RunResult> {
        trackers.start_run(&spec.run_uuid)?;
        let (mut result, artifacts) =
            train_config(prep, plan, splits, &spec.run_uuid, trackers, progress)?;
        result.version = tv.clone();
        if let Some(pruned) = &result.pruned {
            let tags = [
                ("runner.pruned".to_string(), "true".to_string()),
                ("runner.pruned_reason".to_string(), pruned.reason.clone()),
                (
                    "mlflow.note.content".to_string(),
                    format!("pruned {}", pruned.reason),
                ),
            ];
            trackers.set_tags(&spec.run_uuid, &tags)?;
            trackers.record_summary(&spec.run_uuid, &serde_json::to_value(&result)?)?;
            trackers.finish_run(&spec.run_uuid, RunStatus::Killed, now_ms())?;
            return Ok(result);
        }
        for (name, bytes) in &artifacts {
            // "model.json" -> "model_t3.json"
            let (stem, ext) = name.split_once('.').unwrap_or((name.as_str(), "bin"));
            trackers.log_artifact(&spec.run_uuid, &format!("{stem}_{tv}.{ext}"), bytes)?;
        }
        if plan.cv_only {
            let why = "none: a search trial scored by CV only (refit = \"best\"); its search's best trial is trained in full as <entry>#best";
            let tags = [("runner.mlflow_model".to_string(), why.to_string())];
            trackers.set_tags(&spec.run_uuid, &tags)?;
        } else {
            log_mlflow_model(prep, &tv, &spec.run_uuid, &artifacts, trackers, progress)?;
        }
        write_report_artifacts(prep, plan, record, &result, trackers)?;
        trackers.record_summary(&spec.run_uuid, &serde_json::to_value(&result)?)?;
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
        Ok(r) if r.pruned.is_some() => {
            let why = r.pruned.as_ref().map_or("", |p| p.reason.as_str());
            progress.line(&format!("{tv} {:<40} pruned {why}", r.name));
            r
        }
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
            let (status, msg) = if crate::interrupt::is_interrupt(&e) {
                let reason = crate::interrupt::REASON.to_string();
                (
                    "KILLED",
                    record_end(trackers, &spec.run_uuid, RunStatus::Killed, reason),
                )
            } else {
                (
                    "FAILED",
                    record_failure(trackers, &spec.run_uuid, format!("{e:#}")),
                )
            };
            progress.line(&format!("{tv} {} {status}: {msg}", plan.model.name));
            RunResult {
                version: tv,
                run_uuid: spec.run_uuid.clone(),
                name: plan.model.name.clone(),
                kind: plan.model.kind.clone(),
                status: status.into(),
                error: Some(msg),
                metrics: BTreeMap::new(),
                fold_metrics: BTreeMap::new(),
                pruned: None,
                holdout: BTreeMap::new(),
                per_class: Vec::new(),
                confusion: Vec::new(),
                fit_seconds: 0.0,
            }
        }
    }
}

/// Logs the run's MLflow model. A model that cannot be built leaves the trained run intact:
/// the `runner.mlflow_model` tag says why it has none.
fn log_mlflow_model(
    prep: &Prepared,
    tv: &str,
    run_uuid: &str,
    artifacts: &super::Artifacts,
    trackers: &dyn Tracker,
    progress: &Progress,
) -> Result<()> {
    let why_none = match super::mlflow_model::model_package(prep, tv, artifacts) {
        Ok(Ok(pkg)) => {
            trackers.log_model(run_uuid, &pkg)?;
            return trackers.set_tags(run_uuid, &[("runner.mlflow_model".into(), "model".into())]);
        }
        Ok(Err(reason)) => reason,
        Err(e) => {
            progress.line(&format!("{tv}: no MLflow model: {e:#}"));
            format!("{e:#}")
        }
    };
    trackers.set_tags(
        run_uuid,
        &[("runner.mlflow_model".into(), format!("none: {why_none}"))],
    )
}

pub(crate) fn write_report_artifacts(
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
