//! `runner_ml._native`: the library's commands for the Python package, with JSON in and out.
//!
//! Each call runs on a worker thread while the calling thread waits without the GIL, looking
//! for signals every 100 ms: other Python threads run meanwhile, and a KeyboardInterrupt
//! (Ctrl-C, a kernel interrupt) asks training to stop (`runner::interrupt`), waits for the runs
//! to end KILLED and is raised again. A failure comes back as `{"error": {...}}` (with the
//! config error's file, line and key when it is one), which the Python side raises.

use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use runner::commands as cmd;
use runner::config;
use runner::frames::{self, ArrowArrayStream};
use runner::types::ConfigError;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// The error document the Python side turns into `ConfigError` or `RunnerError`.
fn error_json(e: &anyhow::Error) -> Value {
    let config = e.chain().find_map(|c| c.downcast_ref::<ConfigError>());
    match config {
        Some(c) => json!({"error": {
            "kind": "config", "message": c.message, "file": c.file, "line": c.line, "key": c.key,
            "text": format!("{e:#}"),
        }}),
        None => json!({"error": {"kind": "runner", "text": format!("{e:#}")}}),
    }
}

/// Runs `work` on a worker thread; the GIL is released while it runs. A KeyboardInterrupt
/// stops it through `runner::interrupt` and is raised once it has returned.
fn detached<F>(py: Python<'_>, work: F) -> PyResult<String>
where
    F: FnOnce() -> anyhow::Result<Value> + Send + 'static,
{
    let handle = std::thread::spawn(work);
    let mut interrupted: Option<PyErr> = None;
    while !handle.is_finished() {
        py.detach(|| {
            let until = std::time::Instant::now() + Duration::from_millis(100);
            while !handle.is_finished() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        if interrupted.is_none() {
            if let Err(e) = py.check_signals() {
                runner::interrupt::request();
                interrupted = Some(e);
            }
        }
    }
    let outcome = handle.join();
    if let Some(e) = interrupted {
        return Err(e);
    }
    let doc = match outcome {
        Ok(Ok(doc)) => doc,
        Ok(Err(e)) => error_json(&e),
        Err(_) => json!({"error": {"kind": "runner", "text": "internal error: the call panicked"}}),
    };
    Ok(doc.to_string())
}

/// A call's options, a JSON object written by the Python side.
fn options(text: &str) -> PyResult<Value> {
    serde_json::from_str(text).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

fn strings(v: &Value) -> Vec<String> {
    (v.as_array().into_iter().flatten())
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(String::from)
}

/// The config as given: a file's path, TOML text or a dict as JSON, which stand for
/// `<cwd>/notebook.toml` (their relative paths resolve against the working folder).
fn load(o: &Value, sets: &[String]) -> anyhow::Result<config::LoadedConfig> {
    let stands_for = std::env::current_dir()?.join("notebook.toml");
    let given = o["config"].as_str().unwrap_or_default();
    Ok(match o["config_kind"].as_str() {
        Some("path") => config::load_config(&PathBuf::from(given), sets)?,
        Some("toml") => config::load_config_text(given.to_string(), &stands_for, sets)?,
        _ => {
            let toml = config::toml_from_json(given, "config")?;
            config::load_config_text(toml, &stands_for, sets)?
        }
    })
}

/// Each run's artifact folder, by run id.
fn artifact_dirs(report: &runner::sweep::SweepReport) -> anyhow::Result<Value> {
    let path = runner::track::store_of_label(&report.store)?;
    let store = runner::track::mlflow::MlflowStore::open_read_only(&path)?;
    let mut dirs = serde_json::Map::new();
    for run in &report.runs {
        let dir = store.artifact_dir(&run.run_uuid)?;
        dirs.insert(run.run_uuid.clone(), json!(dir));
    }
    Ok(Value::Object(dirs))
}

/// `runner sweep`: `{"report": <sweep --json>, "status_line", "failed", "interrupted"}`.
#[pyfunction]
fn sweep(py: Python<'_>, options_json: &str) -> PyResult<String> {
    let o = options(options_json)?;
    detached(py, move || {
        let opts = runner::sweep::SweepOptions {
            sets: strings(&o["set"]),
            only: strings(&o["only"]),
            jobs: o["jobs"].as_u64().map(|n| n as usize),
            tracking_uri: text(&o["tracking_uri"]),
            restart: o["restart"].as_bool().unwrap_or(false),
            smoke: o["smoke"].as_bool().unwrap_or(false),
            json: !o["verbose"].as_bool().unwrap_or(true),
            ..Default::default()
        };
        let loaded = load(&o, &opts.sets)?;
        let outcome = cmd::sweep::run_sweep(loaded, &opts)?;
        let dirs = artifact_dirs(&outcome.report)?;
        Ok(json!({
            "report": outcome.report, "status_line": outcome.status_line,
            "failed": outcome.failed, "interrupted": outcome.interrupted,
            "artifact_dirs": dirs,
        }))
    })
}

/// `runner runs --json`.
#[pyfunction]
fn list_runs(py: Python<'_>, options_json: &str) -> PyResult<String> {
    let o = options(options_json)?;
    detached(py, move || {
        let filter = cmd::runs::RunsFilter {
            experiment: text(&o["experiment"]),
            sort: text(&o["sort"]),
            status: text(&o["status"]),
            limit: o["limit"].as_u64().map(|n| n as usize),
        };
        cmd::runs::runs_json(o["tracking_uri"].as_str(), &filter)
    })
}

/// `runner models --json`.
#[pyfunction]
fn list_models() -> String {
    cmd::models::models_json().to_string()
}

/// `runner replay tN --json`.
#[pyfunction]
fn replay_run(py: Python<'_>, options_json: &str) -> PyResult<String> {
    let o = options(options_json)?;
    detached(py, move || {
        runner::interrupt::clear();
        let uri = text(&o["tracking_uri"]);
        let store = runner::sweep::tracking_path(uri.as_deref(), None)?;
        let input = text(&o["input"]).map(PathBuf::from);
        let version = o["version"].as_str().unwrap_or_default();
        let check = o["check"].as_bool().unwrap_or(false);
        let sets = strings(&o["set"]);
        let request = cmd::replay::ReplayRequest {
            store_path: &store,
            tracking_uri: uri,
            version,
            check,
            sets: &sets,
            input: input.as_deref(),
        };
        let r = cmd::replay::replay_run(&request, true)?;
        let mut doc = r.to_json();
        doc["run"] = serde_json::to_value(&r.new)?;
        Ok(doc)
    })
}

/// `runner predict tN --input FILE`: `{"csv": ..., "rows": .., "filters": [..]}`.
#[pyfunction]
fn predict(py: Python<'_>, options_json: &str) -> PyResult<String> {
    let o = options(options_json)?;
    detached(py, move || {
        let version = o["version"].as_str().unwrap_or_default();
        let input = PathBuf::from(o["input"].as_str().unwrap_or_default());
        let saved = runner::predict::open_saved(o["tracking_uri"].as_str(), version)?;
        let p = runner::predict::predict_file(&saved, &input)?;
        let proba = o["proba"].as_bool().unwrap_or(false);
        let csv = runner::predict::to_csv(&saved, &p, proba)?;
        Ok(json!({"csv": csv, "input_rows": p.input_rows, "filters": p.filters}))
    })
}

/// `runner reload-etl vN --out FILE --json`.
#[pyfunction]
fn reload_etl(py: Python<'_>, options_json: &str) -> PyResult<String> {
    let o = options(options_json)?;
    detached(py, move || {
        let store = runner::sweep::tracking_path(o["tracking_uri"].as_str(), None)?;
        let input = text(&o["input"]).map(PathBuf::from);
        let out = PathBuf::from(o["out"].as_str().unwrap_or_default());
        let version = o["version"].as_str().unwrap_or_default();
        cmd::reload_etl::reload_etl_json(&store, version, input.as_deref(), &out)
    })
}

/// `runner eda CONFIG --json`, with the Markdown and the plots.
#[pyfunction]
fn eda(py: Python<'_>, options_json: &str) -> PyResult<String> {
    let o = options(options_json)?;
    detached(py, move || {
        let sets = strings(&o["set"]);
        let loaded = load(&o, &sets)?;
        let e = cmd::eda::run_eda(loaded, o["tracking_uri"].as_str())?;
        Ok(json!({
            "run_uuid": e.run_uuid, "etl_version": format!("v{}", e.etl_version),
            "report": e.report, "markdown": e.markdown, "plots": e.pictures,
            "store": e.store_path,
        }))
    })
}

/// Takes a DataFrame's Arrow C stream (`df.__arrow_c_stream__()`, a PyCapsule) without copying
/// its buffers and keeps it for this process; returns its source, `frame:<sha256>`.
#[pyfunction]
fn register_frame(py: Python<'_>, stream: &Bound<'_, PyCapsule>) -> PyResult<String> {
    let pointer = stream.pointer_checked(Some(c"arrow_array_stream"))?;
    // SAFETY: a capsule named arrow_array_stream holds an ArrowArrayStream (the Arrow PyCapsule
    // interface); it is moved out and the capsule's left released, as the consumer must.
    let taken = unsafe {
        std::ptr::replace(
            pointer.as_ptr().cast::<ArrowArrayStream>(),
            ArrowArrayStream::empty(),
        )
    };
    let registered = py.detach(move || {
        // SAFETY: the stream came from the capsule above, as its producer exported it.
        let df = unsafe { frames::from_c_stream(Box::new(taken)) }?;
        frames::register(df)
    });
    match registered {
        Ok((source, _)) => Ok(source),
        Err(e) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "the DataFrame could not be read through Arrow: {e:#}"
        ))),
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sweep, m)?)?;
    m.add_function(wrap_pyfunction!(list_runs, m)?)?;
    m.add_function(wrap_pyfunction!(list_models, m)?)?;
    m.add_function(wrap_pyfunction!(replay_run, m)?)?;
    m.add_function(wrap_pyfunction!(predict, m)?)?;
    m.add_function(wrap_pyfunction!(reload_etl, m)?)?;
    m.add_function(wrap_pyfunction!(eda, m)?)?;
    m.add_function(wrap_pyfunction!(register_frame, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The libtorch of the networks' helper program (this module never loads it); empty without
    // the torch backend.
    m.add("libtorch_version", env!("RUNNER_LIBTORCH_VERSION"))?;
    Ok(())
}
