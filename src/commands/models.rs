//! `runner models`: every model kind with its hyperparameters, from the registry.

use crate::models;
use crate::report::new_table;
use anyhow::Result;
use comfy_table::Cell;
use serde_json::json;
use std::process::ExitCode;

/// `runner models --json`: every kind with its tasks, backend and parameters' defaults.
pub fn models_json() -> serde_json::Value {
    let doc: Vec<_> = models::kind_specs()
        .map(|k| json!({
            "kind": k.kind,
            "tasks": k.tasks,
            "backend": k.backend,
            "help": k.help,
            "params": k.params.iter().map(|p| json!({"name": p.name, "type": p.ty.to_string(), "default": models::default_value(p), "help": p.help})).collect::<Vec<_>>(),
        }))
        .collect();
    json!({"schema": crate::JSON_SCHEMA, "kinds": doc})
}

pub fn models_command(json: bool) -> Result<ExitCode> {
    if json {
        let doc = models_json();
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
