//! `runner diff tA tB`: what differs between two runs' configs, plans and metrics.

use crate::replay::parse_version;
use crate::report::new_table;
use crate::track::mlflow::{MlflowStore, TrainingRunRow};
use anyhow::{anyhow, Result};
use comfy_table::Cell;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn comparable(run: &TrainingRunRow) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let r = &run.record;
    for key in [
        "plan",
        "config",
        "labels",
        "task",
        "runner_version",
        "git_commit",
        "libraries",
        "etl_version",
        "folds_sha256",
    ] {
        flatten(key, &r[key], &mut out);
    }
    out.remove("plan.model.name");
    out
}

pub fn diff_command(store_path: &Path, a: &str, b: &str, json_out: bool) -> Result<ExitCode> {
    let store = MlflowStore::open_read_only(store_path)?;
    let get = |v: &str| -> Result<TrainingRunRow> {
        let n = parse_version(v, 't')?;
        store.training_run(n)?.ok_or_else(|| {
            anyhow!(
                "training run {v} is not in {}",
                crate::track::store_label(&store.path)
            )
        })
    };
    let (ra, rb) = (get(a)?, get(b)?);
    let (ca, cb) = (comparable(&ra), comparable(&rb));
    let keys: std::collections::BTreeSet<&String> = ca.keys().chain(cb.keys()).collect();
    let mut settings = Vec::new();
    for k in keys {
        let (x, y) = (ca.get(k), cb.get(k));
        if x != y {
            settings.push(json!({"key": k, a: x, b: y}));
        }
    }
    let ma: BTreeMap<String, (f64, f64)> = ra
        .summary
        .as_ref()
        .map(|s| crate::sweep::mean_std::all(&s["metrics"]))
        .unwrap_or_default();
    let mb: BTreeMap<String, (f64, f64)> = rb
        .summary
        .as_ref()
        .map(|s| crate::sweep::mean_std::all(&s["metrics"]))
        .unwrap_or_default();
    let metric_keys: std::collections::BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    let metrics: Vec<Value> = metric_keys
        .into_iter()
        .map(|k| {
            let (x, y) = (ma.get(k).map(|v| v.0), mb.get(k).map(|v| v.0));
            json!({"metric": k, a: x, b: y, "delta": match (x, y) { (Some(x), Some(y)) => Some(y - x), _ => None }})
        })
        .collect();
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"schema": crate::JSON_SCHEMA, "a": a, "b": b, "settings": settings, "metrics": metrics})
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{a}: {} ({}), ETL v{}   {b}: {} ({}), ETL v{}",
        ra.name, ra.kind, ra.etl_version, rb.name, rb.kind, rb.etl_version
    );
    if settings.is_empty() {
        println!("Settings: identical (config, model, seed, folds, ETL, labels, versions).");
    } else {
        let mut t = new_table(&["setting", a, b]);
        for s in &settings {
            t.add_row(vec![
                Cell::new(s["key"].as_str().unwrap_or("")),
                Cell::new(s[a].as_str().unwrap_or("-")),
                Cell::new(s[b].as_str().unwrap_or("-")),
            ]);
        }
        println!("{t}");
    }
    let mut t = new_table(&["metric (mean over folds)", a, b, "delta"]);
    for m in &metrics {
        let f = |v: &Value| {
            v.as_f64()
                .map(|x| format!("{x:.4}"))
                .unwrap_or_else(|| "-".into())
        };
        t.add_row(vec![
            Cell::new(m["metric"].as_str().unwrap_or("")),
            Cell::new(f(&m[a])),
            Cell::new(f(&m[b])),
            Cell::new(f(&m["delta"])),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}
