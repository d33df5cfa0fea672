//! The subcommands besides the training itself: sweep's front end, validate, models, runs, show.

use crate::config::{self, ConfigError};
use crate::models::{self, KINDS};
use crate::report::{self, new_table};
use crate::sweep::{self, SweepOptions};
use crate::track::mlflow::MlflowStore;
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
    let report = match opts.ensemble_top {
        None => sweep::run_sweep(&prep, configs, opts, opts.json)?,
        Some(n) => {
            // Two batches (the configs, then their ensembles) and one chart over both.
            let batch = SweepOptions {
                no_chart: true,
                ..opts.clone()
            };
            let mut report = sweep::run_sweep(&prep, configs.clone(), &batch, opts.json)?;
            let ensembles = sweep::top_ensembles(&report, &configs, n)?;
            let more = sweep::run_sweep(&prep, ensembles, &batch, opts.json)?;
            report.runs.extend(more.runs);
            report.wall_seconds += more.wall_seconds;
            let (_, location) = MlflowStore::open_existing(Path::new(&report.store))?
                .experiment(&report.experiment)?;
            report.comparison_chart =
                sweep::comparison_chart(&prep, &report.runs, Path::new(&location));
            report
        }
    };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report::print_sweep(&report);
    }
    let failed = report.runs.iter().any(|r| r.status != "FINISHED");
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
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
        let doc: Vec<_> = KINDS
            .iter()
            .map(|k| json!({
                "kind": k.kind,
                "tasks": k.tasks,
                "backend": k.backend,
                "help": k.help,
                "params": k.params.iter().map(|p| json!({"name": p.name, "type": p.ty.to_string(), "default": models::default_value(p), "help": p.help})).collect::<Vec<_>>(),
            }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    for k in KINDS {
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

fn open_store(uri: Option<&str>) -> Result<MlflowStore> {
    let path = sweep::tracking_path(uri, None)?;
    MlflowStore::open_existing(&path)
}

pub fn runs_command(uri: Option<&str>, json: bool) -> Result<ExitCode> {
    let store = open_store(uri)?;
    let runs = store.training_runs()?;
    if json {
        let doc: Vec<_> = runs
            .iter()
            .map(|r| json!({"version": format!("t{}", r.version), "name": r.name, "kind": r.kind, "etl_version": format!("v{}", r.etl_version), "status": r.status, "run_uuid": r.run_uuid, "metrics": r.summary.as_ref().map(|s| s["metrics"].clone())}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = new_table(&[
        "run",
        "name",
        "kind",
        "etl",
        "status",
        "primary metric",
        "value ± std",
    ]);
    for r in &runs {
        let metric = r.record["primary_metric"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let value = r
            .summary
            .as_ref()
            .and_then(|s| s["metrics"][&metric].as_array().cloned())
            .map(|a| {
                format!(
                    "{:.4} ± {:.4}",
                    a[0].as_f64().unwrap_or(f64::NAN),
                    a[1].as_f64().unwrap_or(f64::NAN)
                )
            })
            .unwrap_or_else(|| "-".into());
        t.add_row(vec![
            Cell::new(format!("t{}", r.version)),
            Cell::new(&r.name),
            Cell::new(&r.kind),
            Cell::new(format!("v{}", r.etl_version)),
            Cell::new(&r.status),
            Cell::new(metric),
            Cell::new(value),
        ]);
    }
    println!("{t}");
    println!("{} training runs in {}", runs.len(), store.path.display());
    Ok(ExitCode::SUCCESS)
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
                serde_json::to_string_pretty(&json!({"version": version, "record": rec}))?
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
                "version": version, "run_uuid": run.run_uuid, "name": run.name, "kind": run.kind, "status": run.status,
                "etl_version": format!("v{}", run.etl_version), "record": run.record, "summary": run.summary,
                "params": params, "tags": tags, "metrics": metrics, "artifact_dir": dir, "artifacts": artifacts,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Training run {version}: {} ({}), status {}, ETL v{}, MLflow run {}",
        run.name, run.kind, run.status, run.etl_version, run.run_uuid
    );
    let mut t = new_table(&["param", "value"]);
    for (k, v) in &params {
        t.add_row(vec![Cell::new(k), Cell::new(v)]);
    }
    println!("{t}");
    let mut t = new_table(&["metric", "value"]);
    for (k, v) in metrics.iter().filter(|(k, _)| !k.starts_with("fold/")) {
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

/// `runner wandb-sync [tN ...]`: sends what W&B has not acknowledged of the given runs (all runs
/// with a spool when none is named), resuming where each stopped.
pub fn wandb_sync_command(
    uri: Option<&str>,
    versions: &[String],
    timeout_s: f64,
    json: bool,
) -> Result<ExitCode> {
    let store = open_store(uri)?;
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
        let art = store.artifact_dir(&r.run_uuid)?;
        let dir = art.parent().unwrap_or(&art).join("wandb");
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
                &json!({"synced": synced, "pending": pending.iter().map(|(v, m)| json!({"version": v, "reason": m})).collect::<Vec<_>>()})
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
