//! A tracker that appends every run event to a JSON-lines file, one object per line, flushed as
//! it happens: a CI log that `tail -f`, `jq` or a test can read while a sweep runs. Set with
//! `[tracking] jsonl = "runs.jsonl"` (relative to the working folder, like the store's URI).
//!
//! Each line has `event` (create_run, start_run, params, metrics, tags, artifact, finish_run),
//! `run` (the run id) and `time_ms`; the rest depends on the event.

use super::{Metric, RunStatus, TrackedRun, Tracker};
use crate::config::ConfigError;
use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct JsonlTracker {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

fn pairs(items: &[(String, String)]) -> Value {
    Value::Object(
        items
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect::<Map<String, Value>>(),
    )
}

/// A metric value as JSON: non-finite values as the strings "NaN", "Infinity", "-Infinity".
fn number(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else if v.is_nan() {
        json!("NaN")
    } else if v > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    }
}

impl JsonlTracker {
    /// Opens `path` for appending (creating it and its folder). A path that cannot be opened
    /// is a mistake in the config (exit 2).
    pub fn open(path: &Path) -> Result<JsonlTracker> {
        let unusable = |e: std::io::Error| {
            ConfigError::new(
                "[tracking] jsonl",
                format!("cannot open the JSON-lines log {}: {e}", path.display()),
            )
            .key("jsonl")
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(unusable)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(unusable)?;
        Ok(JsonlTracker {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    fn write(&self, event: &str, run_uuid: &str, fields: Value) -> Result<()> {
        let mut line = json!({"event": event, "run": run_uuid, "time_ms": super::now_ms()});
        if let (Some(line), Value::Object(fields)) = (line.as_object_mut(), fields) {
            line.extend(fields);
        }
        let mut bytes = serde_json::to_vec(&line)?;
        bytes.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&bytes)
            .and_then(|()| file.flush())
            .with_context(|| format!("JSON-lines log {}", self.path.display()))
    }
}

impl Tracker for JsonlTracker {
    fn name(&self) -> &str {
        "JSON-lines log"
    }
    fn create_run(&self, run: &TrackedRun) -> Result<()> {
        let spec = &run.spec;
        self.write(
            "create_run",
            &spec.run_uuid,
            json!({
                "name": spec.name,
                "experiment": spec.experiment,
                "version": run.version,
                "kind": run.kind,
                "user": spec.user,
                "start_ms": spec.start_ms,
                "params": pairs(&spec.params),
                "tags": pairs(&spec.tags),
            }),
        )
    }
    fn start_run(&self, run_uuid: &str) -> Result<()> {
        self.write("start_run", run_uuid, json!({}))
    }
    fn log_params(&self, run_uuid: &str, params: &[(String, String)]) -> Result<()> {
        self.write("params", run_uuid, json!({"params": pairs(params)}))
    }
    fn log_metrics(&self, run_uuid: &str, metrics: &[Metric]) -> Result<()> {
        let metrics: Vec<Value> = metrics
            .iter()
            .map(|m| json!({"key": m.key, "value": number(m.value), "step": m.step, "timestamp_ms": m.timestamp_ms}))
            .collect();
        self.write("metrics", run_uuid, json!({ "metrics": metrics }))
    }
    fn set_tags(&self, run_uuid: &str, tags: &[(String, String)]) -> Result<()> {
        self.write("tags", run_uuid, json!({"tags": pairs(tags)}))
    }
    fn log_artifact(&self, run_uuid: &str, file_name: &str, bytes: &[u8]) -> Result<()> {
        self.write(
            "artifact",
            run_uuid,
            json!({"name": file_name, "bytes": bytes.len(), "sha256": crate::data::sha256_hex(bytes)}),
        )
    }
    fn finish_run(&self, run_uuid: &str, status: RunStatus, end_ms: i64) -> Result<()> {
        self.write(
            "finish_run",
            run_uuid,
            json!({"status": status.as_mlflow(), "end_ms": end_ms}),
        )
    }
}
