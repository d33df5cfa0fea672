//! Benchmark: logging to an MLflow tracking server through runner's REST tracker. RUNS runs,
//! each created with 10 params and 5 tags, then 3 metrics x 100 steps, either streamed (one
//! log_metrics call per step, as training logs them; the tracker's sender batches what queues
//! up) or in bulk (one call of 300 values), then finished; the clock stops when everything is
//! sent. `store` streams as the server store does (`--tracking-uri http://...`): each run's
//! number claimed in runner's registry on the server first, and each run's end waited for
//! (checked, then sent) before the next run starts. Prints one JSON line. Run by
//! examples/bench_server.sh, beside the Python client.
//!   cargo run --release --example bench_rest -- http://127.0.0.1:5000 streamed 50
use runner::track::mlflow_rest::{settings, MlflowServer};
use runner::track::server_registry::ServerRegistry;
use runner::track::{Metric, RunSpec, RunStatus, TrackedRun, Tracker};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:5000".into());
    let mode = args.get(2).cloned().unwrap_or_else(|| "streamed".into());
    let n_runs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(50);
    let mut to = settings(&url, "bench")?;
    to.as_store = mode == "store";
    let registry = (mode == "store")
        .then(|| ServerRegistry::open(to.clone()))
        .transpose()?;
    let server = MlflowServer::open(to)?;
    let experiment = format!("bench-runner-{mode}-{}", std::process::id());
    let started = std::time::Instant::now();
    for i in 0..n_runs {
        let run_uuid = format!("{:032x}", (std::process::id() as u128) << 32 | i as u128);
        if let Some(registry) = &registry {
            registry.claim_number("t", &run_uuid, None)?;
        }
        let spec = RunSpec {
            run_uuid: run_uuid.clone(),
            name: format!("run{i}"),
            experiment: experiment.clone(),
            user: "bench".into(),
            start_ms: runner::track::now_ms(),
            git_commit: String::new(),
            params: (0..10)
                .map(|p| (format!("param_{p}"), (p * i).to_string()))
                .collect(),
            tags: (0..5)
                .map(|t| (format!("tag_{t}"), t.to_string()))
                .collect(),
            dataset: None,
        };
        server.create_run(&TrackedRun {
            spec,
            version: None,
            kind: "bench".into(),
            record: serde_json::Value::Null,
            curve_axis: "step",
            group: None,
        })?;
        server.start_run(&run_uuid)?;
        let point = |key: &str, step: i64| Metric {
            key: key.into(),
            value: 1.0 / (step + 1) as f64,
            step,
            timestamp_ms: runner::track::now_ms(),
        };
        let step_points = |step: i64| ["loss", "val_loss", "accuracy"].map(|k| point(k, step));
        if mode == "bulk" {
            let all: Vec<Metric> = (0..100).flat_map(step_points).collect();
            server.log_metrics(&run_uuid, &all)?;
        } else {
            for step in 0..100 {
                server.log_metrics(&run_uuid, &step_points(step))?;
            }
        }
        server.finish_run(&run_uuid, RunStatus::Finished, runner::track::now_ms())?;
    }
    // Everything queued is sent before the clock stops.
    for note in server.close() {
        eprintln!("{note}");
    }
    let s = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"client": "runner", "mode": mode, "runs": n_runs, "seconds": s,
            "runs_per_s": n_runs as f64 / s, "metric_values_per_s": (n_runs * 300) as f64 / s})
    );
    Ok(())
}
