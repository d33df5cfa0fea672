//! `runner show tN`: one run: its config, metrics and artifacts.

use super::{derive_killed, open_store, shown_status};
use crate::report::new_table;
use crate::sweep::{self};
use anyhow::{bail, Result};
use comfy_table::Cell;
use serde_json::json;
use std::process::ExitCode;

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
            crate::track::store_label(&store.path)
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
