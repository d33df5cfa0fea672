//! `runner sweep` writes a store that the real MLflow client (PyPI mlflow 3.17.2) reads in full.
mod common;
use common::*;
use serde_json::Value;

fn find_run<'a>(store: &'a Value, experiment: &str, prefix: &str) -> &'a Value {
    let exp = store["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == experiment)
        .expect("experiment exists");
    exp["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_name"].as_str().unwrap().contains(prefix))
        .unwrap_or_else(|| panic!("no run named *{prefix}*"))
}

#[test]
fn mlflow_reads_every_part_of_a_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = repo().join("configs/wine.toml");
    let out = run_ok(runner(dir.path()).args(["sweep"]).arg(&cfg).args([
        "--only", "forest", "--only", "tree", "--jobs", "2", "--json",
    ]));
    let report = stdout_json(&out);
    assert_eq!(report["runs"].as_array().unwrap().len(), 2);
    let db = dir.path().join("mlflow.db");
    assert!(db.exists(), "the default store is ./mlflow.db");
    let store = read_with_mlflow(&db);

    let run = find_run(&store, "wine-quality", "forest");
    assert_eq!(run["status"], "FINISHED");
    assert!(run["end_time"].as_i64().unwrap() >= run["start_time"].as_i64().unwrap());
    let name = run["run_name"].as_str().unwrap();
    assert!(name.starts_with('t') && name.ends_with("-forest"), "{name}");
    // Params: resolved hyperparameters with defaults, seed, CV settings, ETL version.
    let p = &run["params"];
    assert_eq!(p["n_trees"], "100");
    assert_eq!(
        p["max_features"], "auto",
        "the default: the square root of the features for classes"
    );
    assert_eq!(p["seed"], "42");
    assert_eq!(p["cv.folds"], "5");
    assert_eq!(p["etl_version"], "v1");
    assert_eq!(p["label_mapping"], "0=3,1=4,2=5,3=6,4=7,5=8");
    // Metrics: each fold's under its own key, mean and std, per class with original labels.
    assert!(
        run["metrics"].get("fold/accuracy").is_none(),
        "no metric whose displayed value is only the last fold's"
    );
    let fold_values: Vec<f64> = (0..5)
        .map(|i| {
            let history = run["history"][format!("fold{i}/accuracy")]
                .as_array()
                .unwrap();
            assert_eq!(history.len(), 1, "one value per fold key");
            history[0][1].as_f64().unwrap()
        })
        .collect();
    let mean = fold_values.iter().sum::<f64>() / 5.0;
    assert!(
        (run["metrics"]["accuracy"].as_f64().unwrap() - mean).abs() < 1e-12,
        "accuracy is the fold mean"
    );
    assert!(run["metrics"]["accuracy_std"].as_f64().unwrap() > 0.0);
    assert!(
        run["metrics"]["class_8/recall"].is_number(),
        "per-class metrics use the original grades"
    );
    assert_eq!(run["metrics"]["class_3/support"].as_f64().unwrap(), 10.0);
    // Mean decrease in impurity, normalised: sums to 1, alcohol first (as known for this data).
    let imp: Vec<(&String, f64)> = run["metrics"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("importance_impurity/"))
        .map(|(k, v)| (k, v.as_f64().unwrap()))
        .collect();
    assert_eq!(imp.len(), 11);
    assert!((imp.iter().map(|(_, v)| v).sum::<f64>() - 1.0).abs() < 1e-9);
    let top = imp.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    assert_eq!(top.0.as_str(), "importance_impurity/alcohol");
    // Tags.
    let t = &run["tags"];
    assert!(t["runner.training_version"]
        .as_str()
        .unwrap()
        .starts_with('t'));
    assert_eq!(t["runner.etl_version"], "v1");
    assert_eq!(t["mlflow.source.type"], "LOCAL");
    assert!(t["mlflow.source.git.commit"].as_str().is_some());
    assert!(t["mlflow.user"].as_str().is_some());
    assert!(t["runner.runner_version"].as_str().is_some());
    // Artifacts.
    let tv = t["runner.training_version"].as_str().unwrap();
    let arts = artifact_names(run);
    for want in [
        format!("model_{tv}.json"),
        "confusion_matrix.csv".into(),
        "per_class_report.md".into(),
        "config.json".into(),
        format!("confusion_matrix_{tv}.svg"),
        format!("per_class_{tv}.svg"),
        format!("predictions_{tv}.csv"),
        format!("feature_importance_{tv}.csv"),
        format!("feature_importance_{tv}.svg"),
    ] {
        assert!(
            arts.contains(&want.as_str()),
            "missing artifact {want} in {arts:?}"
        );
    }
    // The ETL version as the run's dataset input.
    let input = &run["inputs"][0];
    assert_eq!(input["name"], "wine-quality-v1");
    assert_eq!(input["source"]["uri"], "builtin:winequality-red");
    assert_eq!(input["profile"]["num_rows"], 1599);
    let cols: Vec<&str> = input["schema"]["mlflow_colspec"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(cols.contains(&"alcohol") && cols.contains(&"quality"));
    assert_eq!(input["tags"]["mlflow.data.context"], "training");
    // Both runs share one dataset and one ETL version.
    let tree = find_run(&store, "wine-quality", "tree");
    assert_eq!(tree["inputs"][0]["digest"], input["digest"]);
}

#[test]
fn runs_are_added_to_a_store_that_mlflow_created() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("existing.db");
    create_with_mlflow(&db);
    let cfg = repo().join("configs/wine.toml");
    run_ok(
        runner(dir.path())
            .args(["sweep"])
            .arg(&cfg)
            .args(["--only", "gaussian-nb", "--tracking-uri"])
            .arg(sqlite_uri(&db)),
    );
    let store = read_with_mlflow(&db);
    let theirs = find_run(&store, "made-by-mlflow", "python-run");
    assert_eq!(
        theirs["history"]["loss"].as_array().unwrap().len(),
        3,
        "MLflow's own run is intact"
    );
    let ours = find_run(&store, "wine-quality", "gaussian-nb");
    assert_eq!(ours["status"], "FINISHED");
    assert!(ours["metrics"]["accuracy"].as_f64().unwrap() > 0.4);
}

#[test]
fn runs_and_show_read_the_store_back() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = repo().join("configs/wine.toml");
    run_ok(
        runner(dir.path())
            .args(["sweep"])
            .arg(&cfg)
            .args(["--only", "gaussian-nb"]),
    );
    let runs = stdout_json(&run_ok(runner(dir.path()).args(["runs", "--json"])));
    let runs = &runs["runs"];
    assert_eq!(runs[0]["version"], "t1");
    assert_eq!(runs[0]["status"], "FINISHED");
    assert_eq!(runs[0]["etl_version"], "v1");
    let show = stdout_json(&run_ok(runner(dir.path()).args(["show", "t1", "--json"])));
    assert_eq!(show["kind"], "naive_bayes");
    assert_eq!(show["record"]["plan"]["seed"], 42);
    assert_eq!(show["record"]["labels"]["classes"][0], "3");
    let v = stdout_json(&run_ok(runner(dir.path()).args(["show", "v1", "--json"])));
    assert_eq!(v["record"]["n_rows"], 1599);
    assert_eq!(v["record"]["target_distribution"]["3"], 10);
    assert_eq!(v["record"]["target_distribution"]["8"], 18);
    // A second sweep with the same ETL reuses v1 and continues the run numbers.
    let again = stdout_json(&run_ok(
        runner(dir.path()).args(["sweep"]).arg(&cfg).args([
            "--only",
            "gaussian-nb",
            "--json",
            "--restart",
        ]),
    ));
    assert_eq!(again["etl_version"], "v1");
    assert_eq!(again["etl_reused"], true);
    assert_eq!(again["runs"][0]["version"], "t2");
    // Same seed, same folds: the same metrics.
    assert_eq!(
        again["runs"][0]["fold_metrics"],
        stdout_json(&run_ok(runner(dir.path()).args(["show", "t1", "--json"])))["summary"]
            ["fold_metrics"]
    );
}

#[test]
fn a_chosen_version_number_is_used_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = repo().join("configs/wine.toml");
    let r = stdout_json(&run_ok(
        runner(dir.path()).args(["sweep"]).arg(&cfg).args([
            "--only",
            "gaussian-nb",
            "--first-run",
            "t7",
            "--json",
        ]),
    ));
    assert_eq!(r["runs"][0]["version"], "t7");
    let out = runner(dir.path())
        .args(["sweep"])
        .arg(&cfg)
        .args(["--only", "gaussian-nb", "--first-run", "t7"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("t7 is already taken"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_processes_at_once_never_share_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = repo().join("configs/wine.toml");
    let spawn = || {
        runner(dir.path())
            .args(["sweep"])
            .arg(&cfg)
            // Two sweeps of their own (else the second would continue the first's).
            .args([
                "--only",
                "gaussian-nb",
                "--only",
                "knn",
                "--json",
                "--restart",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut versions = Vec::new();
    let mut etl = Vec::new();
    for out in [&a, &b] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = stdout_json(out);
        etl.push(r["etl_version"].as_str().unwrap().to_string());
        versions.extend(
            r["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["version"].as_str().unwrap().to_string()),
        );
    }
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), 6, "{versions:?}");
    assert_eq!(etl, vec!["v1", "v1"]);
}
