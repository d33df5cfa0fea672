//! The parent run of a sweep. MLflow groups a search under one run: every training run of the
//! sweep carries the tag `mlflow.parentRunId`, and the UI nests them under the parent. The parent
//! holds the sweep's settings (params), the comparison chart and the leaderboard (artifacts), and
//! no model, so "one model per run" still holds for the training runs.

use crate::report::ranked;
use crate::sweep::{self, Prepared, RunResult, SweepOptions, SweepReport};
use crate::track::mlflow::MlflowStore;
use crate::track::{now_ms, RunSpec, RunStatus, TrackedRun, Tracker};
use anyhow::Result;
use std::path::PathBuf;

/// A started parent run.
pub struct SweepParent {
    pub run_uuid: String,
    store: PathBuf,
}

/// Creates the parent run, RUNNING, in the sweep's experiment. Called after every check has
/// passed, so a mistake in the config never leaves an empty parent behind.
pub fn start(prep: &Prepared, opts: &SweepOptions, n_configs: usize) -> Result<SweepParent> {
    let store_path = sweep::tracking_path(opts.tracking_uri.as_deref(), Some(&prep.loaded))?;
    let store = MlflowStore::open(&store_path)?;
    let c = &prep.loaded.config;
    let mut params = vec![
        ("config".to_string(), prep.loaded.path.display().to_string()),
        ("experiment".into(), c.experiment.clone()),
        ("task".into(), prep.task.to_string()),
        ("primary_metric".into(), prep.primary_metric.clone()),
        ("configs".into(), n_configs.to_string()),
        ("seed".into(), c.seed.to_string()),
        ("cv.folds".into(), c.cv.folds.to_string()),
        ("cv.repeats".into(), c.cv.repeats.to_string()),
    ];
    let lists = [("set", &opts.sets), ("only", &opts.only)];
    for (key, values) in lists {
        if !values.is_empty() {
            params.push((key.into(), values.join(" ")));
        }
    }
    if let Some(n) = opts.ensemble_top {
        params.push(("ensemble_top".into(), n.to_string()));
    }
    let name = format!("sweep-{}", c.experiment);
    let spec = RunSpec {
        run_uuid: uuid::Uuid::new_v4().simple().to_string(),
        name: name.clone(),
        experiment: c.experiment.clone(),
        user: sweep::user(),
        start_ms: now_ms(),
        git_commit: sweep::GIT_COMMIT.to_string(),
        params,
        tags: vec![
            ("mlflow.runName".into(), name),
            ("mlflow.user".into(), sweep::user()),
            (
                "mlflow.source.name".into(),
                format!("runner sweep {}", prep.loaded.path.display()),
            ),
            ("mlflow.source.type".into(), "LOCAL".into()),
            ("mlflow.source.git.commit".into(), sweep::GIT_COMMIT.into()),
            ("runner.sweep".into(), "parent".into()),
        ],
        dataset: None,
    };
    let run_uuid = spec.run_uuid.clone();
    store.create_run(&TrackedRun {
        spec,
        version: None,
        kind: "sweep".into(),
        record: serde_json::Value::Null,
        curve_axis: "step",
        group: None,
    })?;
    store.start_run(&run_uuid)?;
    Ok(SweepParent {
        run_uuid,
        store: store_path,
    })
}

/// Names the parent after its runs (`sweep-t1-t14`), logs the comparison chart and the
/// leaderboard into it, and finishes it. Sets the report's chart path.
pub fn finish(parent: &SweepParent, prep: &Prepared, report: &mut SweepReport) -> Result<()> {
    let store = MlflowStore::open_existing(&parent.store)?;
    let versions: Vec<i64> = report
        .runs
        .iter()
        .filter_map(|r| sweep::parse_version(&r.version, 't').ok())
        .collect();
    let (lo, hi) = (
        versions.iter().min().copied().unwrap_or(0),
        versions.iter().max().copied().unwrap_or(0),
    );
    let name = format!("sweep-t{lo}-t{hi}");
    store.rename_run(&parent.run_uuid, &name)?;
    let metric = &prep.primary_metric;
    let chart_name = format!("sweep_t{lo}-t{hi}_{}.svg", sweep::sanitize(metric));
    store.log_artifact(
        &parent.run_uuid,
        &chart_name,
        sweep::comparison_svg(prep, &report.runs).as_bytes(),
    )?;
    store.log_artifact(
        &parent.run_uuid,
        "leaderboard.csv",
        leaderboard_csv(report).as_bytes(),
    )?;
    let higher = crate::config::higher_is_better(metric);
    for (name, bytes) in crate::search_plots::search_plots(&report.runs, metric, higher) {
        store.log_artifact(&parent.run_uuid, &name, &bytes)?;
    }
    if let Some(best) = ranked(report).first() {
        let (mean, std) = best.metrics[metric];
        store.log_metrics(
            &parent.run_uuid,
            &[
                metric_point(&format!("best_{metric}"), mean),
                metric_point(&format!("best_{metric}_std"), std),
            ],
        )?;
        store.set_tags(
            &parent.run_uuid,
            &[("runner.best_run".into(), best.version.clone())],
        )?;
    }
    store.finish_run(&parent.run_uuid, RunStatus::Finished, now_ms())?;
    report.comparison_chart = Some(
        store
            .artifact_dir(&parent.run_uuid)?
            .join(chart_name)
            .display()
            .to_string(),
    );
    report.parent_run = Some(parent.run_uuid.clone());
    Ok(())
}

/// Ends the parent as FAILED when the sweep itself stopped with an error.
pub fn fail(parent: &SweepParent) {
    if let Ok(store) = MlflowStore::open_existing(&parent.store) {
        if let Err(e) = store.finish_run(&parent.run_uuid, RunStatus::Failed, now_ms()) {
            eprintln!("warning: could not mark the sweep's parent run FAILED: {e:#}");
        }
    }
}

fn metric_point(key: &str, value: f64) -> crate::track::Metric {
    crate::track::Metric {
        key: key.to_string(),
        value,
        step: 0,
        timestamp_ms: now_ms(),
    }
}

/// The leaderboard as CSV: rank, run, name, kind, then every metric's mean and std, best first;
/// failed runs last with their error.
fn leaderboard_csv(report: &SweepReport) -> String {
    let metrics: std::collections::BTreeSet<&String> =
        report.runs.iter().flat_map(|r| r.metrics.keys()).collect();
    let mut out = String::from("rank,run,name,kind,status");
    for m in &metrics {
        out.push_str(&format!(",{m},{m}_std"));
    }
    out.push_str(",fit_seconds,error\n");
    let ranked = ranked(report);
    let rest = report
        .runs
        .iter()
        .filter(|r| !ranked.iter().any(|x| x.run_uuid == r.run_uuid));
    let rows: Vec<(String, &RunResult)> = ranked
        .iter()
        .enumerate()
        .map(|(i, r)| ((i + 1).to_string(), *r))
        .chain(rest.map(|r| (String::new(), r)))
        .collect();
    for (rank, r) in rows {
        out.push_str(&format!(
            "{rank},{},{},{},{}",
            r.version,
            csv_field(&r.name),
            r.kind,
            r.status
        ));
        for m in &metrics {
            match r.metrics.get(*m) {
                Some((mean, std)) => out.push_str(&format!(",{mean},{std}")),
                None => out.push_str(",,"),
            }
        }
        out.push_str(&format!(
            ",{},{}\n",
            r.fit_seconds,
            csv_field(r.error.as_deref().unwrap_or(""))
        ));
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
