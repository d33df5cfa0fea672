//! The subcommands besides the training itself: sweep's front end, validate, models, runs, show.

use crate::config::{self, ConfigError};
use crate::models;
use crate::report::{self, new_table};
use crate::sweep::mean_std;
use crate::sweep::{self, SweepOptions};
use crate::sweep_parent;
use crate::track::mlflow::{MlflowStore, RunListing};
use crate::track::wandb;
use anyhow::{bail, Result};
use comfy_table::Cell;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

fn select_only(
    configs: Vec<models::ModelConfig>,
    only: &[String],
    file: &Path,
) -> Result<Vec<models::ModelConfig>> {
    if only.is_empty() {
        return Ok(configs);
    }
    let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
    let kept: Vec<_> = configs
        .into_iter()
        .filter(|c| only.iter().any(|o| c.name.starts_with(o.as_str())))
        .collect();
    if kept.is_empty() {
        bail!(ConfigError::new(
            file.display().to_string(),
            format!(
                "--only {} matches no model config; names: {}",
                only.join(", "),
                names.join(", ")
            )
        ));
    }
    Ok(kept)
}

pub fn sweep_command(path: &Path, opts: &SweepOptions) -> Result<ExitCode> {
    let loaded = config::load_config(path, &opts.sets)?;
    let prep = sweep::prepare(loaded)?;
    let mut configs = config::expand_sweeps(&prep.loaded, prep.task)?;
    let store_path = sweep::tracking_path(opts.tracking_uri.as_deref(), Some(&prep.loaded))?;
    sweep::resolve_run_members(&mut configs, &store_path, prep.task, path)?;
    let configs = select_only(configs, &opts.only, path)?;
    // Everything is checked (W&B settings too) before the parent run is written.
    wandb::resolve(
        prep.loaded.config.tracking.wandb.as_ref(),
        &prep.loaded.config.experiment,
        &prep.loaded.path.display().to_string(),
    )?;
    crate::track::check_others(&prep.loaded.config.tracking)?;
    check_first_run_free(&store_path, opts.version, configs.len())?;
    let parent = sweep_parent::start(&prep, opts, configs.len())?;
    let opts = SweepOptions {
        parent_run: Some(parent.run_uuid.clone()),
        ..opts.clone()
    };
    let trained = train_batches(&prep, configs, &opts);
    let mut report = match trained {
        Ok(r) => r,
        Err(e) => {
            sweep_parent::fail(&parent);
            return Err(e);
        }
    };
    let parent_done = sweep_parent::finish(&parent, &prep, &mut report);
    if let Err(e) = &parent_done {
        // The runs are logged; only the summary run is incomplete. Say so, and report them.
        eprintln!("error: the sweep's parent run could not be completed: {e:#}");
        sweep_parent::fail(&parent);
    }
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report::print_sweep(&report, opts.wide);
    }
    let failed = report.runs.iter().any(|r| r.status != "FINISHED") || parent_done.is_err();
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--first-run tN`: every number the sweep needs must be free, checked before anything is
/// written (the store checks again when it numbers the runs).
fn check_first_run_free(store_path: &Path, first: Option<i64>, n: usize) -> Result<()> {
    let Some(first) = first else {
        return Ok(());
    };
    if !store_path.is_file() {
        return Ok(());
    }
    let store = MlflowStore::open_read_only(store_path)?;
    let taken: Vec<String> = store
        .training_runs()?
        .iter()
        .filter(|r| r.version >= first && r.version < first + n as i64)
        .map(|r| format!("t{}", r.version))
        .collect();
    if let Some(t) = taken.first() {
        bail!(ConfigError::new(
            "--first-run",
            format!(
                "training version {t} is already taken in {}; the sweep needs t{first}..t{} free: pick a free number or leave --first-run out",
                store_path.display(),
                first + n as i64 - 1
            )
        ));
    }
    Ok(())
}

/// The sweep's configs, then (with `--ensemble top=N`) their ensembles, as one report.
fn train_batches(
    prep: &sweep::Prepared,
    configs: Vec<models::ModelConfig>,
    opts: &SweepOptions,
) -> Result<sweep::SweepReport> {
    crate::schedule::run_sweep(prep, configs, opts, opts.json)
}

pub fn validate_command(
    path: &Path,
    sets: &[String],
    uri: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let loaded = config::load_config(path, sets)?;
    let prep = sweep::prepare(loaded)?;
    let mut configs = config::expand_sweeps(&prep.loaded, prep.task)?;
    let store_path = sweep::tracking_path(uri, Some(&prep.loaded))?;
    sweep::resolve_run_members(&mut configs, &store_path, prep.task, path)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "schema": crate::JSON_SCHEMA,
                "config": prep.loaded.config,
                "task": prep.task,
                "task_reason": prep.task_reason,
                "primary_metric": prep.primary_metric,
                "rows": prep.table.n_rows,
                "features": prep.table.features.iter().map(|f| &f.name).collect::<Vec<_>>(),
                "labels": prep.labels,
                "models": configs,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: valid. {} rows, {} feature columns, target \"{}\": {} ({}); primary metric {}.",
        path.display(),
        prep.table.n_rows,
        prep.table.features.len(),
        prep.loaded.config.data.target,
        prep.task,
        prep.task_reason,
        prep.primary_metric
    );
    let mut t = new_table(&[
        "#",
        "name",
        "kind",
        "hyperparameters (defaults made explicit)",
    ]);
    for (i, c) in configs.iter().enumerate() {
        let mut params = c
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        if !c.members.is_empty() {
            let members: Vec<String> = c
                .members
                .iter()
                .map(|m| match &m.from_run {
                    Some(t) => format!("{t} {}", m.name),
                    None => m.name.clone(),
                })
                .collect();
            params.push_str(&format!(" members={}", members.join(",")));
        }
        t.add_row(vec![
            Cell::new(i + 1),
            Cell::new(&c.name),
            Cell::new(&c.kind),
            Cell::new(params),
        ]);
    }
    println!("{t}");
    println!("{} model configs; nothing was trained.", configs.len());
    Ok(ExitCode::SUCCESS)
}

pub fn models_command(json: bool) -> Result<ExitCode> {
    if json {
        let doc: Vec<_> = models::kind_specs()
            .map(|k| json!({
                "kind": k.kind,
                "tasks": k.tasks,
                "backend": k.backend,
                "help": k.help,
                "params": k.params.iter().map(|p| json!({"name": p.name, "type": p.ty.to_string(), "default": models::default_value(p), "help": p.help})).collect::<Vec<_>>(),
            }))
            .collect();
        let doc = json!({"schema": crate::JSON_SCHEMA, "kinds": doc});
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    for k in models::kind_specs() {
        let tasks: Vec<String> = k.tasks.iter().map(|t| t.to_string()).collect();
        println!(
            "{} — {} [{}]; backend: {}",
            k.kind,
            k.help,
            tasks.join(", "),
            k.backend
        );
        let mut t = new_table(&["parameter", "type and range", "default", "meaning"]);
        for p in k.params {
            t.add_row(vec![
                Cell::new(p.name),
                Cell::new(p.ty.to_string()),
                Cell::new(models::default_value(p).to_string()),
                Cell::new(p.help),
            ]);
        }
        println!("{t}\n");
    }
    Ok(ExitCode::SUCCESS)
}

/// The store, for a command that only reads it: nothing in the file changes.
fn open_store(uri: Option<&str>) -> Result<MlflowStore> {
    let path = sweep::tracking_path(uri, None)?;
    MlflowStore::open_read_only(&path)
}

/// `runner runs` filters: experiment, state, a metric to sort by and a count.
#[derive(Debug, Default)]
pub struct RunsFilter {
    pub experiment: Option<String>,
    pub sort: Option<String>,
    pub status: Option<String>,
    pub limit: Option<usize>,
}

const STATES: &[&str] = &["finished", "failed", "running", "scheduled", "killed"];

fn usage_error(flag: &str, message: String) -> anyhow::Error {
    ConfigError::new(flag, message).into()
}

/// The runs the filter keeps, in its order.
fn filter_runs(mut runs: Vec<RunListing>, filter: &RunsFilter) -> Result<Vec<RunListing>> {
    if let Some(e) = &filter.experiment {
        let names: std::collections::BTreeSet<&str> =
            runs.iter().map(|r| r.experiment.as_str()).collect();
        if !names.contains(e.as_str()) {
            let names: Vec<&str> = names.into_iter().collect();
            bail!(usage_error(
                "--experiment",
                format!(
                    "no experiment \"{e}\" in the store; experiments: {}{}",
                    models::quoted_list(&names),
                    crate::suggest::hint(e, &names)
                )
            ));
        }
        runs.retain(|r| &r.experiment == e);
    }
    if let Some(state) = &filter.status {
        let state = state.to_lowercase();
        if !STATES.contains(&state.as_str()) {
            bail!(usage_error(
                "--status",
                format!(
                    "unknown state \"{state}\"; valid: {}{}",
                    models::quoted_list(STATES),
                    crate::suggest::hint(&state, STATES)
                )
            ));
        }
        runs.retain(|r| r.status.to_lowercase() == state);
    }
    if let Some(metric) = &filter.sort {
        let known: std::collections::BTreeSet<String> = runs
            .iter()
            .flat_map(|r| mean_std::all(&r.metrics).into_keys())
            .collect();
        if !known.contains(metric) && !runs.is_empty() {
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            bail!(usage_error(
                "--sort",
                format!(
                    "no run has the metric \"{metric}\"; metrics: {}{}",
                    models::quoted_list(&known),
                    crate::suggest::hint(metric, &known)
                )
            ));
        }
        let higher = config::higher_is_better(metric);
        let value = |r: &RunListing| {
            mean_std::get(&r.metrics, metric)
                .map(|(m, _)| if higher { -m } else { m })
                .filter(|m| !m.is_nan())
        };
        // Runs without the metric go last; ties keep run order.
        runs.sort_by(|a, b| match (value(a), value(b)) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
    }
    if let Some(n) = filter.limit {
        runs.truncate(n);
    }
    Ok(runs)
}

pub fn runs_command(
    uri: Option<&str>,
    filter: &RunsFilter,
    wide: bool,
    json: bool,
) -> Result<ExitCode> {
    let store = open_store(uri)?;
    let gone = derive_killed(&store)?;
    let mut runs = store.run_list()?;
    for r in runs.iter_mut().filter(|r| gone.contains_key(&r.run_uuid)) {
        r.status = "KILLED".into();
    }
    let runs = filter_runs(runs, filter)?;
    if json {
        let doc: Vec<_> = runs
            .iter()
            .map(|r| json!({"version": format!("t{}", r.version), "experiment": r.experiment, "name": r.name, "kind": r.kind, "etl_version": format!("v{}", r.etl_version), "status": r.status, "status_reason": gone.get(&r.run_uuid), "run_uuid": r.run_uuid, "metrics": (!r.metrics.is_null()).then(|| mean_std_json(&r.metrics))}))
            .collect();
        let doc = json!({"schema": crate::JSON_SCHEMA, "store": store.path, "runs": doc});
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    let header = [
        "run",
        "experiment",
        "config",
        "kind",
        "etl",
        "status",
        "primary metric",
        "value ± std",
    ];
    let mut texts: Vec<Vec<String>> = Vec::with_capacity(runs.len());
    for r in &runs {
        let metric = r.primary_metric.clone();
        let value = mean_std::get(&r.metrics, &metric)
            .map(|(m, s)| format!("{m:.4} ± {s:.4}"))
            .unwrap_or_else(|| "-".into());
        texts.push(vec![
            format!("t{}", r.version),
            r.experiment.clone(),
            // The MLflow run name is `tN-<config>`; the run column already says tN.
            r.name
                .strip_prefix(&format!("t{}-", r.version))
                .unwrap_or(&r.name)
                .to_string(),
            r.kind.clone(),
            format!("v{}", r.etl_version),
            shown_status(&r.status, gone.get(&r.run_uuid)),
            metric,
            value,
        ]);
    }
    let rows: Vec<Vec<Cell>> = texts
        .iter()
        .map(|t| t.iter().map(Cell::new).collect())
        .collect();
    // Least important first: the ETL version, the kind, the experiment, the metric's name.
    report::print_fitted(&header, &rows, &texts, &[4, 3, 1, 6], wide);
    println!("{} training runs in {}", runs.len(), store.path.display());
    Ok(ExitCode::SUCCESS)
}

/// Runs the store still calls RUNNING or SCHEDULED whose owner is gone, with the reason: what
/// the next writing command will mark KILLED. Read-only commands show them so and write nothing.
fn derive_killed(store: &MlflowStore) -> Result<std::collections::BTreeMap<String, String>> {
    Ok(store.gone_runs()?.into_iter().collect())
}

/// "KILLED (process gone)" for a run whose owner is gone, else the stored status.
fn shown_status(status: &str, gone: Option<&String>) -> String {
    match gone {
        Some(reason) => format!(
            "KILLED ({})",
            reason.split_once(':').map(|(why, _)| why).unwrap_or(reason)
        ),
        None => status.to_string(),
    }
}

/// A stored summary's metrics as `{"name": {"mean": .., "std": ..}}`, whatever shape they were
/// stored in.
fn mean_std_json(metrics: &serde_json::Value) -> serde_json::Value {
    let all = mean_std::all(metrics);
    json!(all
        .into_iter()
        .map(|(k, (mean, std))| (k, json!({"mean": mean, "std": std})))
        .collect::<serde_json::Map<_, _>>())
}

pub fn show_command(uri: Option<&str>, version: &str, json: bool) -> Result<ExitCode> {
    let store = open_store(uri)?;
    if let Some(n) = version
        .strip_prefix('v')
        .and_then(|n| n.parse::<i64>().ok())
    {
        let rec = store.require_etl_record(n)?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"schema": crate::JSON_SCHEMA, "version": version, "record": rec})
                )?
            );
        } else {
            println!("ETL version {version}");
            println!("{}", serde_json::to_string_pretty(&rec)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let n = sweep::check_version_arg(version)
        .map_err(|m| anyhow::anyhow!("{m}, or an ETL version as v1, v2, ..."))?;
    let Some(run) = store.training_run(n)? else {
        bail!(
            "training run {version} is not in {}; `runner runs` lists them",
            store.path.display()
        );
    };
    let gone = derive_killed(&store)?;
    let status = shown_status(&run.status, gone.get(&run.run_uuid));
    let params = store.params(&run.run_uuid)?;
    let tags = store.tags(&run.run_uuid)?;
    let metrics = store.latest_metrics(&run.run_uuid)?;
    let dir = store.artifact_dir(&run.run_uuid)?;
    let mut artifacts: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    artifacts.sort();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "schema": crate::JSON_SCHEMA, "version": version, "run_uuid": run.run_uuid, "name": run.name, "kind": run.kind, "status": status, "status_reason": gone.get(&run.run_uuid),
                "etl_version": format!("v{}", run.etl_version), "record": run.record, "summary": run.summary,
                "params": params, "tags": tags, "metrics": metrics, "artifact_dir": dir, "artifacts": artifacts,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Training run {version}: {} ({}), status {}, ETL v{}, MLflow run {}",
        run.name, run.kind, status, run.etl_version, run.run_uuid
    );
    let mut t = new_table(&["param", "value"]);
    for (k, v) in &params {
        t.add_row(vec![Cell::new(k), Cell::new(v)]);
    }
    println!("{t}");
    let mut t = new_table(&["metric", "value"]);
    for (k, v) in metrics.iter().filter(|(k, _)| !is_fold_metric(k)) {
        t.add_row(vec![Cell::new(k), Cell::new(format!("{v:.6}"))]);
    }
    println!("{t}");
    let mut t = new_table(&["tag", "value"]);
    for (k, v) in &tags {
        t.add_row(vec![Cell::new(k), Cell::new(v)]);
    }
    println!("{t}");
    println!(
        "Recorded for replay: {}",
        serde_json::to_string_pretty(&run.record)?
    );
    println!("Artifacts in {}: {}", dir.display(), artifacts.join(", "));
    Ok(ExitCode::SUCCESS)
}

/// A per-fold value (`fold2/accuracy`, `fold0/valid_loss`) or, in stores written before JSON
/// schema 2, `fold/accuracy`.
fn is_fold_metric(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("fold") else {
        return false;
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    rest[digits..].starts_with('/')
}

/// A run's W&B spool: beside the store, or (written by releases before 0.2) in the run's
/// MLflow folder.
fn wandb_spool(store: &MlflowStore, run_uuid: &str) -> Result<std::path::PathBuf> {
    let dir = wandb::WandbSink::spool_dir(&wandb::spool_root(&store.path), run_uuid);
    if dir.exists() {
        return Ok(dir);
    }
    let art = store.artifact_dir(run_uuid)?;
    Ok(art.parent().unwrap_or(&art).join("wandb"))
}

/// `runner wandb-sync [tN ...]`: sends what W&B has not acknowledged of the given runs (all runs
/// with a spool when none is named), resuming where each stopped.
pub fn wandb_sync_command(
    uri: Option<&str>,
    versions: &[String],
    timeout_s: f64,
    json: bool,
) -> Result<ExitCode> {
    let store = MlflowStore::open_existing(&sweep::tracking_path(uri, None)?)?;
    let mut runs = store.training_runs()?;
    if !versions.is_empty() {
        let wanted: Vec<i64> = versions
            .iter()
            .map(|v| sweep::check_version_arg(v).map_err(|m| anyhow::anyhow!(m)))
            .collect::<Result<_>>()?;
        for w in &wanted {
            if !runs.iter().any(|r| r.version == *w) {
                bail!("training run t{w} is not in {}", store.path.display());
            }
        }
        runs.retain(|r| wanted.contains(&r.version));
    }
    let mut dirs = Vec::new();
    let mut names = std::collections::BTreeMap::new();
    for r in &runs {
        let dir = wandb_spool(&store, &r.run_uuid)?;
        if crate::track::wandb::has_pending(&dir) {
            names.insert(dir.clone(), format!("t{}", r.version));
            dirs.push(dir);
        } else if !versions.is_empty() && !dir.join("spool.jsonl").exists() {
            bail!(
                "t{} has no W&B spool: W&B was not configured when it ran",
                r.version
            );
        }
    }
    let (synced, pending) = crate::track::wandb::sync_dirs(&dirs, timeout_s)?;
    let synced: Vec<&String> = synced.iter().map(|d| &names[d]).collect();
    let pending: Vec<(&String, &String)> = pending.iter().map(|(d, m)| (&names[d], m)).collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"schema": crate::JSON_SCHEMA, "synced": synced, "pending": pending.iter().map(|(v, m)| json!({"version": v, "reason": m})).collect::<Vec<_>>()})
            )?
        );
    } else {
        if dirs.is_empty() {
            println!(
                "Nothing to send: every W&B spool in {} is fully sent.",
                store.path.display()
            );
        }
        for v in &synced {
            println!("{v}: sent to W&B");
        }
        for (v, m) in &pending {
            println!("{v}: not fully sent ({m}); run `runner wandb-sync` again");
        }
    }
    Ok(if pending.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
