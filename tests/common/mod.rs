//! Helpers shared by the integration tests: run the real binary, read stores with the real
//! MLflow client.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn runner(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runner"));
    c.current_dir(cwd);
    c.env_remove("MLFLOW_TRACKING_URI");
    for v in [
        "WANDB_API_KEY",
        "WANDB_MODE",
        "WANDB_BASE_URL",
        "WANDB_PROJECT",
        "WANDB_ENTITY",
        // A test run inside a Kubernetes Job or a Slurm array is not a shard of its sweeps.
        "JOB_COMPLETION_INDEX",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_COUNT",
        "RUNNER_SHARD_COUNT",
    ] {
        c.env_remove(v);
    }
    c
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("runner starts");
    assert!(
        out.status.success(),
        "runner failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The Python of the venv that tests/setup.sh made, with the real MLflow client.
pub fn mlflow_python() -> PathBuf {
    if let Ok(p) = std::env::var("RUNNER_MLFLOW_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = PathBuf::from(home).join(".cache/runner/mlflow-venv/bin/python");
    assert!(
        p.exists(),
        "the real MLflow client is missing: run tests/run.sh (or tests/setup.sh) first"
    );
    p
}

pub fn sqlite_uri(db: &Path) -> String {
    format!(
        "sqlite:///{}",
        std::fs::canonicalize(db.parent().unwrap())
            .unwrap()
            .join(db.file_name().unwrap())
            .display()
    )
}

/// Runs a command that must succeed and print JSON; that JSON.
pub fn json_of(cmd: &mut Command) -> Value {
    let out = cmd.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("it prints JSON")
}

/// Everything the real MLflow client reads from the store, as JSON (see tests/mlflow_read.py).
/// Fails on any warning MLflow prints while reading.
pub fn read_with_mlflow(db: &Path) -> Value {
    let out = Command::new(mlflow_python())
        .arg(repo().join("tests/mlflow_read.py"))
        .arg(sqlite_uri(db))
        .output()
        .expect("python starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "MLflow could not read the store:\n{stderr}"
    );
    assert!(
        !stderr.to_lowercase().contains("warning"),
        "MLflow warned while reading:\n{stderr}"
    );
    serde_json::from_slice(&out.stdout).expect("reader prints JSON")
}

pub fn create_with_mlflow(db: &Path) {
    let out = Command::new(mlflow_python())
        .arg(repo().join("tests/mlflow_read.py"))
        .arg("create")
        .arg(sqlite_uri(db))
        .output()
        .expect("python starts");
    assert!(
        out.status.success(),
        "MLflow could not create a store:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a config (and its sweep) into `dir`; returns the config path.
pub fn write_config(dir: &Path, config: &str, sweep: &str) -> PathBuf {
    std::fs::write(dir.join("sweep.toml"), sweep).unwrap();
    let p = dir.join("config.toml");
    std::fs::write(&p, config).unwrap();
    p
}

/// A run's artifact file, found under any experiment of the store in `dir`.
pub fn artifact(dir: &Path, run_uuid: &str, name: &str) -> PathBuf {
    for exp in std::fs::read_dir(dir.join("mlruns")).unwrap().flatten() {
        let p = exp.path().join(run_uuid).join("artifacts").join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("no artifact {name} for run {run_uuid}")
}

/// The runs of one experiment, as the MLflow client read them.
pub fn experiment_runs(store: &Value, experiment: &str) -> Vec<Value> {
    store["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == experiment)
        .unwrap_or_else(|| panic!("no experiment {experiment}"))["runs"]
        .as_array()
        .unwrap()
        .clone()
}

/// A JSON file, parsed.
pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// `runner sweep CONFIG --json [args]` in `dir`, which must succeed; its report.
pub fn sweep_json(dir: &Path, config: &Path, args: &[&str]) -> Value {
    stdout_json(&run_ok(
        runner(dir)
            .args(["sweep"])
            .arg(config)
            .arg("--json")
            .args(args),
    ))
}

/// The artifact paths of a run as the MLflow client listed them.
pub fn artifact_names(run: &Value) -> Vec<&str> {
    run["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

/// Every file under `dir`, recursively (none when it cannot be read).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Runs an exported ONNX model in onnxruntime from PyPI (tests/onnx_check.py).
pub fn onnxruntime(model: &Path, data: &Path) -> serde_json::Value {
    let out = std::process::Command::new(mlflow_python())
        .arg(repo().join("tests/onnx_check.py"))
        .arg(model)
        .arg(data)
        .output()
        .expect("python starts");
    assert!(
        out.status.success(),
        "onnxruntime failed on {}:\n{}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs a command that must be refused as the user's mistake: asserts exit code 2 and returns
/// its standard error.
pub fn refused(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runner starts");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

/// The config of the sharded-sweep tests: the red wine, 2 folds, its sweep in `sweep.toml`.
pub const SHARD_CONFIG: &str = r#"
experiment = "shards"
seed = 3
sweeps = ["sweep.toml"]
[data]
source = "builtin:winequality-red"
target = "quality"
[cv]
folds = 2
"#;

/// 10 depths x 4 leaf sizes: 40 configs.
pub const FORTY_TREES: &str = r#"
[[models]]
kind = "decision_tree"
name = "tree"
max_depth = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
min_samples_leaf = [1, 2, 4, 8]
"#;

/// The one sweep name every shard's `--json` report gives, asserting that one of them
/// completed the sweep (the shard that ended last).
pub fn the_one_sweep(reports: &[Value]) -> String {
    let names: std::collections::BTreeSet<&str> = (reports.iter())
        .map(|r| r["sweep"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "one sweep name for all shards: {names:?}");
    assert!(
        reports.iter().any(|r| r["sweep"]["complete"] == true),
        "the shard that ends last completes the sweep; each shard saw: {:?}",
        reports.iter().map(|r| &r["sweep"]).collect::<Vec<_>>()
    );
    names.into_iter().next().unwrap().to_string()
}
