//! `runner validate <config>`: checks the config and sweeps and lists the configs they expand to.

use crate::config::{self};
use crate::report::new_table;
use crate::sweep::{self};
use anyhow::Result;
use comfy_table::Cell;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

pub fn validate_command(
    path: &Path,
    sets: &[String],
    uri: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let loaded = config::load_config(path, sets)?;
    let prep = sweep::prepare(loaded)?;
    let mut configs = config::expand_sweeps(&prep.loaded, prep.task)?;
    crate::sweep::check_class_params(&configs, &prep)?;
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
