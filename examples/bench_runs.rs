//! Builds a store with 10,000 training runs (each with a realistic record and summary: 12
//! metrics with mean and std, per-fold values, per-class figures) for timing `runner runs` on
//! it. Run: cargo run --release --example bench_runs -- PATH.db [RUNS]
use runner::track::mlflow::MlflowStore;
use runner::track::{RunSpec, RunStatus, Tracker};
use serde_json::json;

fn summary(i: usize) -> serde_json::Value {
    let x = (i as f64 * 0.618).fract();
    let metrics: serde_json::Map<String, serde_json::Value> = [
        "accuracy",
        "balanced_accuracy",
        "f1_macro",
        "f1_weighted",
        "precision_macro",
        "recall_macro",
        "log_loss",
        "roc_auc_ovr",
        "mcc",
        "kappa",
        "brier",
        "top2",
    ]
    .iter()
    .map(|m| (m.to_string(), json!({"mean": 0.5 + 0.2 * x, "std": 0.02})))
    .collect();
    let folds: serde_json::Map<String, serde_json::Value> = metrics
        .keys()
        .map(|m| (m.clone(), json!([0.5, 0.6, 0.55, 0.58, 0.61])))
        .collect();
    let per_class: Vec<_> = (3..9)
        .map(|c| json!({"label": c.to_string(), "precision": x, "recall": x, "f1": x, "support": 100}))
        .collect();
    json!({"version": format!("t{}", i + 1), "metrics": metrics, "fold_metrics": folds,
           "per_class": per_class, "status": "FINISHED", "fit_seconds": 1.5})
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let db = std::path::PathBuf::from(args.get(1).expect("usage: bench_runs PATH.db [RUNS]"));
    let n: usize = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let store = MlflowStore::open(&db)?;
    let t0 = std::time::Instant::now();
    for batch in 0..n.div_ceil(1000) {
        let experiment = format!("bench-{}", batch % 4);
        let (exp, loc) = store.experiment(&experiment)?;
        let count = 1000.min(n - batch * 1000);
        let mut specs: Vec<_> = (0..count)
            .map(|j| {
                let i = batch * 1000 + j;
                let spec = RunSpec {
                    run_uuid: format!("{:032x}", i + 1),
                    name: format!("config{i}"),
                    experiment: experiment.clone(),
                    user: "bench".into(),
                    start_ms: 1_700_000_000_000,
                    git_commit: "none".into(),
                    params: vec![("seed".into(), "42".into())],
                    tags: vec![],
                    dataset: None,
                };
                let record = json!({"primary_metric": "accuracy", "config": {"kind": "random_forest",
                    "params": {"n_trees": 100, "max_depth": 12}}, "seed": 42, "cv": {"folds": 5}});
                (spec, "random_forest".to_string(), record)
            })
            .collect();
        store.create_runs(exp, &loc, 1, &mut specs, None)?;
        for (j, (spec, _, _)) in specs.iter().enumerate() {
            store.set_summary(&spec.run_uuid, &summary(batch * 1000 + j))?;
            store.finish_run(&spec.run_uuid, RunStatus::Finished, 1)?;
        }
    }
    println!(
        "{n} training runs written to {} in {:.1} s",
        db.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
