//! `runner wandb-sync [tN ...]`: sends what W&B has not acknowledged.

use crate::sweep::{self};
use crate::track::mlflow::MlflowStore;
use crate::track::wandb;
use anyhow::{bail, Result};
use serde_json::json;
use std::process::ExitCode;

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
                bail!(
                    "training run t{w} is not in {}",
                    crate::track::store_label(&store.path)
                );
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
