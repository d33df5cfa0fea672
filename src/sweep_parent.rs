//! The parent run of a sweep. MLflow groups a search under one run: every training run of the
//! sweep carries the tag `mlflow.parentRunId`, and the UI nests them under the parent. The parent
//! holds the sweep's settings (params), the comparison chart and the leaderboard (artifacts), and
//! no model, so "one model per run" still holds for the training runs.

use crate::report::ranked;
use crate::shard::Entry;
use crate::sweep::{self, Prepared, RunResult, SweepOptions, SweepReport};
use crate::track::mlflow::sweeps::SWEEP_NAME_TAG;
use crate::track::mlflow::{MlflowStore, TrainingRunRow};
use crate::track::mlflow_rest::MlflowServer;
use crate::track::{now_ms, RunSpec, RunStatus, TrackedRun, Tracker, Trackers};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A sweep's parent run, joined by this process.
pub struct SweepParent {
    pub run_uuid: String,
    /// The sweep's name (`runner.sweep_name`).
    pub name: String,
    /// Whether this process created it (else it continues a sweep of that name).
    pub created: bool,
    store: PathBuf,
}

/// The file on the parent run that lists the sweep's configs, for every shard and for
/// `runner sweep-status`.
pub const CONFIGS_FILE: &str = "configs.json";

/// Refuses, before anything is written, to continue a sweep of this name whose configs differ
/// from these (a changed config under a fixed `sweep.name`, or shards of different builds).
pub fn check_same_plan(store_path: &Path, name: &str, entries: &[Entry]) -> Result<()> {
    // A file that is not a store runner can read is refused by the writing open, with its
    // reason; there is no sweep to compare with here.
    // A server's replica is read (copied in first) even on a host that has none yet.
    let replica = crate::track::server_registry::bound_url(store_path)?.is_some();
    let store = (store_path.is_file() || replica).then(|| MlflowStore::open_read_only(store_path));
    let Some(Ok(store)) = store else {
        return Ok(());
    };
    let Ok(Some(parent)) = store.find_sweep(name) else {
        return Ok(());
    };
    let stored = stored_entries(&store, &parent)?;
    if stored.as_deref().is_some_and(|s| s != entries) {
        bail!(crate::config::ConfigError::new(
            "sweep.name",
            format!("the sweep `{name}` in {} trains other configs than this one: pass --restart to start it anew, or give this sweep another name", crate::track::store_label(store_path))
        ));
    }
    Ok(())
}

/// The configs the parent run lists, if it lists them (a sweep of an older runner does not).
pub fn stored_entries(store: &MlflowStore, parent: &str) -> Result<Option<Vec<Entry>>> {
    let path = store.artifact_dir(parent)?.join(CONFIGS_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    Ok(Some(serde_json::from_value(doc["configs"].clone())?))
}

/// Joins the sweep `name`: its parent run RUNNING again, or a new one (with `restart`, or
/// when the store has none), which lists the sweep's configs. Called after every check has
/// passed, so a mistake in the config never leaves an empty parent behind.
pub fn join(
    prep: &Prepared,
    opts: &SweepOptions,
    name: &str,
    entries: &[Entry],
    n_planned: usize,
) -> Result<SweepParent> {
    let store_path = sweep::tracking_path(opts.tracking_uri.as_deref(), Some(&prep.loaded))?;
    let store = MlflowStore::open(&store_path)?;
    let c = &prep.loaded.config;
    let (experiment_id, artifact_location) = store.experiment(&c.experiment)?;
    let spec = parent_spec(prep, opts, name, n_planned);
    let (run_uuid, created) =
        store.join_sweep(experiment_id, &artifact_location, &spec, name, opts.restart)?;
    if created {
        let listing = serde_json::json!({ "sweep": name, "configs": entries });
        let listing = serde_json::to_vec_pretty(&listing)?;
        store.log_artifact(&run_uuid, CONFIGS_FILE, &listing)?;
        if let Some(server) = mirror(prep, &store_path)? {
            mirror_parent(&server, spec, &run_uuid, &listing);
        }
    }
    Ok(SweepParent {
        run_uuid,
        name: name.to_string(),
        created,
        store: store_path,
    })
}

/// Creates the new parent run on the MLflow server, and waits until it is there: every run of
/// the sweep names it as its parent.
fn mirror_parent(server: &MlflowServer, spec: RunSpec, run_uuid: &str, listing: &[u8]) {
    let parent = TrackedRun {
        spec: RunSpec {
            run_uuid: run_uuid.to_string(),
            ..spec
        },
        version: None,
        kind: "sweep".into(),
        record: serde_json::Value::Null,
        curve_axis: "step",
        group: None,
    };
    // The server is a mirror: what it misses is said, and the sweep goes on.
    let sent = (server.create_run(&parent))
        .and_then(|()| server.start_run(run_uuid))
        .and_then(|()| server.log_artifact(run_uuid, CONFIGS_FILE, listing));
    if let Err(e) = sent {
        eprintln!("MLflow server: the sweep's parent run: {e:#}");
    }
    for note in server.close() {
        eprintln!("{note}");
    }
}

/// The MLflow server that gets the sweep's runs (the store's, or the config's mirror), if any.
fn mirror(prep: &Prepared, store: &Path) -> Result<Option<MlflowServer>> {
    let settings = crate::track::server_settings(&prep.loaded.config.tracking, store)?;
    settings.map(MlflowServer::open).transpose()
}

/// The MLflow server the config mirrors runs to, knowing the parent run (another shard may
/// have created it there); none when there is none, or it cannot be reached (said).
fn mirror_of(prep: &Prepared, parent: &SweepParent) -> Option<MlflowServer> {
    let found = mirror(prep, &parent.store).and_then(|server| match &server {
        Some(s) => s
            .find_run(&parent.run_uuid, &prep.loaded.config.experiment)
            .map(|_| server),
        None => Ok(None),
    });
    found.unwrap_or_else(|e| {
        eprintln!("MLflow server: the sweep's parent run: {e:#}");
        None
    })
}

/// The parent run as first created: the sweep's settings as params, its name as a tag.
fn parent_spec(prep: &Prepared, opts: &SweepOptions, name: &str, n_planned: usize) -> RunSpec {
    let c = &prep.loaded.config;
    let mut params = vec![
        ("config".to_string(), prep.loaded.path.display().to_string()),
        ("experiment".into(), c.experiment.clone()),
        ("task".into(), prep.task.to_string()),
        ("primary_metric".into(), prep.primary_metric.clone()),
        ("configs".into(), n_planned.to_string()),
        ("seed".into(), c.seed.to_string()),
        ("cv.folds".into(), c.cv.folds.to_string()),
        ("cv.repeats".into(), c.cv.repeats.to_string()),
        ("sweep_name".into(), name.to_string()),
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
    let run_name = format!("sweep-{}", c.experiment);
    RunSpec {
        run_uuid: uuid::Uuid::new_v4().simple().to_string(),
        name: run_name.clone(),
        experiment: c.experiment.clone(),
        user: sweep::user(),
        start_ms: now_ms(),
        git_commit: sweep::GIT_COMMIT.to_string(),
        params,
        tags: vec![
            ("mlflow.runName".into(), run_name),
            ("mlflow.user".into(), sweep::user()),
            (
                "mlflow.source.name".into(),
                format!("runner sweep {}", prep.loaded.path.display()),
            ),
            ("mlflow.source.type".into(), "LOCAL".into()),
            ("mlflow.source.git.commit".into(), sweep::GIT_COMMIT.into()),
            ("runner.sweep".into(), "parent".into()),
            (SWEEP_NAME_TAG.into(), name.to_string()),
        ],
        dataset: None,
    }
}

/// Where one config of a sweep stands, across every shard and retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigState {
    /// It has a FINISHED run: done, never trained again.
    Finished,
    /// A run of it is RUNNING or SCHEDULED, its owner alive.
    Running,
    /// Its newest run FAILED: a retry trains it again.
    Failed,
    /// Its newest run was KILLED (its process gone, or pruned): a retry trains it again.
    Killed,
    /// No run yet.
    Missing,
}

impl ConfigState {
    /// Whether the config has ended for good in this sweep: FINISHED, or FAILED (a retry
    /// trains a failed one again, but the sweep can be summed up).
    pub fn ended(self) -> bool {
        matches!(self, ConfigState::Finished | ConfigState::Failed)
    }

    /// Whether a shard owning the config trains it now: not FINISHED, not training elsewhere.
    pub fn needs_run(self) -> bool {
        !matches!(self, ConfigState::Finished | ConfigState::Running)
    }
}

/// A config of the sweep with its state and the run that gives it.
pub struct ConfigProgress {
    pub entry: Entry,
    pub state: ConfigState,
    pub run: Option<TrainingRunRow>,
}

/// Where each config of the sweep stands: its FINISHED run if it has one, else its newest run.
pub fn progress(
    store: &MlflowStore,
    parent: &str,
    entries: &[Entry],
) -> Result<Vec<ConfigProgress>> {
    let runs = store.sweep_runs(parent)?;
    let key_of = |r: &TrainingRunRow| r.record["sweep"]["config"].as_str().map(str::to_string);
    Ok(entries
        .iter()
        .map(|entry| {
            let mine: Vec<&TrainingRunRow> = (runs.iter())
                .filter(|r| key_of(r).as_deref() == Some(entry.key.as_str()))
                .collect();
            let chosen = (mine.iter().find(|r| r.status == "FINISHED"))
                .or_else(|| mine.iter().max_by_key(|r| r.version));
            let state = match chosen.map(|r| r.status.as_str()) {
                None => ConfigState::Missing,
                Some("FINISHED") => ConfigState::Finished,
                Some("RUNNING" | "SCHEDULED") => ConfigState::Running,
                Some("FAILED") => ConfigState::Failed,
                Some(_) => ConfigState::Killed,
            };
            ConfigProgress {
                entry: entry.clone(),
                state,
                run: chosen.map(|r| (*r).clone()),
            }
        })
        .collect())
}

/// The runs of the sweep's searches (TPE trials and best runs), every shard's.
pub fn search_runs(parent: &SweepParent) -> Result<Vec<TrainingRunRow>> {
    let store = MlflowStore::open_existing(&parent.store)?;
    store.refresh_around(&parent.run_uuid)?;
    let runs = store.sweep_runs(&parent.run_uuid)?;
    Ok(runs
        .into_iter()
        .filter(|r| r.record["search"].is_object())
        .collect())
}

/// Whether a stored run is a search trial its pruner stopped (KILLED with `pruned` in its
/// summary).
pub fn was_pruned(run: &TrainingRunRow) -> bool {
    run.summary.as_ref().is_some_and(|s| !s["pruned"].is_null())
}

/// A search a sharded sweep runs: its name, its number of trials, and whether its best trial is
/// trained in full at the end.
#[derive(Debug, Clone)]
pub struct SearchPlan {
    pub name: String,
    pub trials: usize,
    pub best_run: bool,
}

/// Whether every trial of each search has ended (finished, or pruned) in these runs, and its
/// best trial has been trained in full where that is wanted.
pub fn searches_ended(plans: &[SearchPlan], runs: &[TrainingRunRow]) -> bool {
    plans.iter().all(|plan| {
        let of_plan = (runs.iter()).filter(|r| r.record["search"]["search"] == plan.name.as_str());
        let ended = |r: &&TrainingRunRow| r.status == "FINISHED" || was_pruned(r);
        let mut trials = std::collections::BTreeSet::new();
        let mut best = false;
        for r in of_plan.filter(ended) {
            if r.record["search"]["best"] == true {
                best |= r.status == "FINISHED";
            } else if let Some(t) = r.record["search"]["trial"].as_u64() {
                trials.insert(t);
            }
        }
        trials.len() >= plan.trials && (best || !plan.best_run)
    })
}

/// A stored run as the leaderboard shows it: its summary, or (a run without one: failed,
/// killed, still running) its number, name, kind and status.
pub fn stored_result(run: &TrainingRunRow) -> RunResult {
    let from_summary = run
        .summary
        .clone()
        .and_then(|s| serde_json::from_value::<RunResult>(s).ok());
    from_summary.unwrap_or_else(|| RunResult {
        version: format!("t{}", run.version),
        run_uuid: run.run_uuid.clone(),
        name: (run.name.strip_prefix(&format!("t{}-", run.version)))
            .unwrap_or(&run.name)
            .to_string(),
        kind: run.kind.clone(),
        status: run.status.clone(),
        error: None,
        metrics: Default::default(),
        fold_metrics: Default::default(),
        pruned: None,
        holdout: Default::default(),
        per_class: Vec::new(),
        confusion: Vec::new(),
        fit_seconds: 0.0,
    })
}

/// [`progress`] of the sweep of `parent`, from its store.
pub fn open_progress(parent: &SweepParent, entries: &[Entry]) -> Result<Vec<ConfigProgress>> {
    let store = MlflowStore::open_existing(&parent.store)?;
    // A server's replica first copies in what other hosts' shards have done.
    store.refresh_around(&parent.run_uuid)?;
    progress(&store, &parent.run_uuid, entries)
}

/// The report of a sweep this process trained nothing for (every config done, or being
/// trained by other shards): its runs come from the store.
pub fn empty_report(prep: &Prepared, parent: &SweepParent) -> Result<SweepReport> {
    let store = MlflowStore::open_existing(&parent.store)?;
    let (etl_version, etl_new) = store.etl_version(&prep.etl_key, &prep.etl_record)?;
    Ok(SweepReport {
        schema: crate::JSON_SCHEMA,
        experiment: prep.loaded.config.experiment.clone(),
        store: crate::track::store_label(&parent.store),
        etl_version: format!("v{etl_version}"),
        etl_reused: !etl_new,
        task: prep.task,
        task_reason: prep.task_reason.clone(),
        primary_metric: prep.primary_metric.clone(),
        higher_is_better: crate::config::higher_is_better(&prep.primary_metric),
        runs: Vec::new(),
        wall_seconds: 0.0,
        start_to_first_training_ms: None,
        wandb: None,
        comparison_chart: None,
        parent_run: None,
        sweep: None,
    })
}

/// Lets other shards finish the parent: it stays RUNNING, no longer this process's.
pub fn leave(parent: &SweepParent) -> Result<()> {
    MlflowStore::open_existing(&parent.store)?.leave_sweep(&parent.run_uuid)
}

/// Names the parent after its runs (`sweep-t1-t14`), logs the comparison chart and the
/// leaderboard into it, and finishes it. Sets the report's chart path.
pub fn finish(parent: &SweepParent, prep: &Prepared, report: &mut SweepReport) -> Result<()> {
    let store = MlflowStore::open_existing(&parent.store)?;
    let server = mirror_of(prep, parent);
    let both = Trackers::new(&store, server.iter().map(|s| s as &dyn Tracker).collect());
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
    both.set_tags(&parent.run_uuid, &[("mlflow.runName".into(), name.clone())])?;
    let metric = &prep.primary_metric;
    let chart_name = format!("sweep_t{lo}-t{hi}_{}.svg", sweep::sanitize(metric));
    both.log_artifact(
        &parent.run_uuid,
        &chart_name,
        sweep::comparison_svg(prep, &report.runs).as_bytes(),
    )?;
    both.log_artifact(
        &parent.run_uuid,
        "leaderboard.csv",
        leaderboard_csv(report).as_bytes(),
    )?;
    let higher = crate::config::higher_is_better(metric);
    for (name, bytes) in crate::search_plots::search_plots(&report.runs, metric, higher) {
        both.log_artifact(&parent.run_uuid, &name, &bytes)?;
    }
    if let Some(best) = ranked(report).first() {
        let (mean, std) = best.metrics[metric];
        both.log_metrics(
            &parent.run_uuid,
            &[
                metric_point(&format!("best_{metric}"), mean),
                metric_point(&format!("best_{metric}_std"), std),
            ],
        )?;
        both.set_tags(
            &parent.run_uuid,
            &[("runner.best_run".into(), best.version.clone())],
        )?;
    }
    both.finish_run(&parent.run_uuid, RunStatus::Finished, now_ms())?;
    for note in both.close() {
        eprintln!("{note}");
    }
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
/// Ends the parent run KILLED after an interrupt, with the reason.
pub fn kill(parent: &SweepParent) -> Result<()> {
    let store = MlflowStore::open_existing(&parent.store)?;
    let reason = crate::interrupt::REASON.to_string();
    store.set_tags(&parent.run_uuid, &[("runner.killed_reason".into(), reason)])?;
    store.finish_run(&parent.run_uuid, RunStatus::Killed, now_ms())
}

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
