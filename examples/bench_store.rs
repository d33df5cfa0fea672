//! Benchmark: time to write 100 runs x (10 params + 3 metrics x 100 steps) into a fresh MLflow
//! SQLite store through runner's store code. Run: cargo run --release --example bench_store
use runner::track::mlflow::MlflowStore;
use runner::track::{Metric, RunSpec, Tracker};

fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("runner-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("bench.db");
    let t0 = std::time::Instant::now();
    let store = MlflowStore::open(&db)?;
    let created = t0.elapsed();
    let (exp, loc) = store.experiment("bench")?;
    let t1 = std::time::Instant::now();
    let mut specs: Vec<_> = (0..100)
        .map(|i| {
            let spec = RunSpec {
                run_uuid: format!("{:032x}", i + 1),
                name: format!("run{i}"),
                experiment: "bench".into(),
                user: "bench".into(),
                start_ms: 0,
                git_commit: "none".into(),
                params: (0..10)
                    .map(|p| (format!("param_{p}"), format!("{}", p * i)))
                    .collect(),
                tags: vec![],
                dataset: None,
            };
            (spec, "bench".to_string(), serde_json::json!({}))
        })
        .collect();
    store.create_runs(exp, &loc, 1, &mut specs, None)?;
    let after_create = t1.elapsed();
    for (spec, _, _) in &specs {
        let metrics: Vec<Metric> = (0..100)
            .flat_map(|step| {
                ["loss", "val_loss", "accuracy"]
                    .into_iter()
                    .map(move |k| Metric {
                        key: k.to_string(),
                        value: 1.0 / (step as f64 + 1.0),
                        step,
                        timestamp_ms: 1_700_000_000_000 + step,
                    })
            })
            .collect();
        store.log_metrics(&spec.run_uuid, &metrics)?;
        store.finish_run(&spec.run_uuid, runner::track::RunStatus::Finished, 1)?;
    }
    let write = t1.elapsed();
    println!(
        "store created (MLflow schema, 65 tables): {:.3} s",
        created.as_secs_f64()
    );
    println!(
        "100 runs x (10 params + 3 metrics x 100 steps): {:.3} s (runs and params {:.3} s, metrics and status {:.3} s)",
        write.as_secs_f64(),
        after_create.as_secs_f64(),
        (write - after_create).as_secs_f64()
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
