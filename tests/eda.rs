//! `runner eda`: the report a person reads, and an EDA run the real MLflow client reads.
mod common;
use common::*;
use std::path::PathBuf;

#[test]
fn eda_reports_the_red_wine_and_logs_an_mlflow_run() {
    let d = tempfile::tempdir().unwrap();
    let out = run_ok(
        runner(d.path())
            .args(["eda"])
            .arg(repo().join("configs/wine.toml"))
            .args(["--json", "--out", "eda.md"]),
    );
    let v = stdout_json(&out);
    let r = &v["report"];
    assert_eq!(r["rows"], 1599);
    assert_eq!(r["target_counts"]["3"], 10);
    assert_eq!(r["target_counts"]["8"], 18);
    assert!(
        (r["imbalance_ratio"].as_f64().unwrap() - 68.1).abs() < 1e-9,
        "681 / 10"
    );
    let warnings: Vec<&str> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("class 3 has only 10 rows")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("class 8 has only 18 rows")),
        "{warnings:?}"
    );
    assert!(warnings
        .iter()
        .any(|w| w.contains("\"chlorides\" is heavily skewed")
            && w.contains("add `transform = { \"chlorides\" = \"log1p\" }` under [etl]")));
    let alcohol = r["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "alcohol")
        .unwrap();
    // Known for this data set: alcohol correlates 0.476 with quality.
    assert!((alcohol["corr_with_target"].as_f64().unwrap() - 0.476).abs() < 0.001);
    let k6 = r["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["k"] == 6)
        .unwrap();
    let table: u64 = k6["contingency"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|c| c.as_u64().unwrap()))
        .sum();
    assert_eq!(table, 1599, "every row in the contingency table");
    assert!(
        k6["adjusted_rand_index"].as_f64().unwrap() < 0.3,
        "physicochemical clusters do not follow the grades"
    );
    assert!(std::fs::read_to_string(d.path().join("eda.md"))
        .unwrap()
        .contains("## k-means, k = 6"));
    assert!(std::fs::read_to_string(d.path().join("eda.md"))
        .unwrap()
        .contains("![correlation_heatmap.svg](correlation_heatmap.svg)"));
    assert!(
        d.path().join("correlation_heatmap.svg").exists(),
        "the pictures sit beside --out"
    );
    // The EDA run, read back by MLflow.
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let exp = store["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "wine-quality")
        .unwrap();
    let run = &exp["runs"][0];
    assert_eq!(run["run_name"], "eda-v1");
    assert_eq!(run["status"], "FINISHED");
    assert_eq!(run["tags"]["runner.kind"], "eda");
    assert_eq!(run["tags"]["runner.etl_version"], "v1");
    assert_eq!(run["inputs"][0]["name"], "wine-quality-v1");
    assert!(run["metrics"]["kmeans_k6/nmi"].is_number());
    let arts = artifact_names(run);
    for want in [
        "eda.json",
        "eda_report.md",
        "target_distribution.svg",
        "correlation_heatmap.svg",
        "clusters_vs_target.svg",
        "hist_alcohol.svg",
    ] {
        assert!(arts.contains(&want), "{want} missing: {arts:?}");
    }
    // The plots are real pictures: well-formed SVG, one bar per grade, the 11 x 11 heatmap.
    let dir = PathBuf::from(
        run["artifact_uri"]
            .as_str()
            .unwrap()
            .trim_start_matches("file://"),
    );
    let target = std::fs::read_to_string(dir.join("target_distribution.svg")).unwrap();
    assert!(target.starts_with("<svg") && target.trim_end().ends_with("</svg>"));
    assert_eq!(target.matches("<title>").count(), 6, "one bar per grade");
    assert!(target.contains("<title>5: 681</title>"));
    let heat = std::fs::read_to_string(dir.join("correlation_heatmap.svg")).unwrap();
    assert_eq!(heat.matches("<rect x=").count(), 121);
    // A later sweep on the same ETL reuses its version.
    let s = stdout_json(&run_ok(
        runner(d.path())
            .args(["sweep"])
            .arg(repo().join("configs/wine.toml"))
            .args(["--only", "gaussian-nb", "--json"]),
    ));
    assert_eq!(s["etl_version"], "v1");
    assert_eq!(
        s["runs"][0]["version"], "t1",
        "an EDA run takes no training number"
    );
}

/// EDA's advice, followed as written: the config line it names trains, and the fitted
/// transforms reach the run's record, `runner predict`, the ONNX export and the MLflow model.
#[test]
fn the_transform_line_eda_suggests_trains_and_predicts_everywhere() {
    let d = tempfile::tempdir().unwrap();
    let out = run_ok(
        runner(d.path())
            .args(["eda"])
            .arg(repo().join("configs/wine.toml"))
            .arg("--json"),
    );
    let report = stdout_json(&out);
    let advice: Vec<String> = report["report"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["suggested_transform"].as_str())
        .filter_map(|t| t.split('`').nth(1).map(str::to_string))
        .collect();
    let chlorides = advice.iter().find(|a| a.contains("chlorides")).unwrap();
    // Each suggested line names one column; merge them into one table, plus a Yeo-Johnson.
    let pairs: Vec<String> = advice
        .iter()
        .map(|a| {
            a.trim_start_matches("transform = { ")
                .trim_end_matches(" }")
                .to_string()
        })
        .chain(["\"alcohol\" = \"yeo-johnson\"".to_string()])
        .collect();
    assert!(chlorides.starts_with("transform = {"), "{chlorides}");
    let config = format!(
        "experiment = \"transforms\"\nseed = 1\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[etl]\nscale = \"standard\"\ntransform = {{ {} }}\n[cv]\nfolds = 3\n",
        pairs.join(", ")
    );
    let sweep = "[[models]]\nkind = \"logistic_regression\"\n[[models]]\nkind = \"knn\"\n";
    let cfg = write_config(d.path(), &config, sweep);
    let report = sweep_json(d.path(), &cfg, &[]);
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let run = experiment_runs(&store, "transforms")
        .into_iter()
        .find(|r| r["run_id"] == report["runs"][0]["run_uuid"])
        .unwrap();
    let recorded = run["params"]["etl.transform"].as_str().unwrap();
    assert!(
        recorded.contains("alcohol=yeo-johnson") && recorded.contains("chlorides=log1p"),
        "{recorded}"
    );
    // The fitted lambda is saved with the model.
    let saved = read_json(&artifact(
        d.path(),
        report["runs"][0]["run_uuid"].as_str().unwrap(),
        "model_t1.json",
    ));
    assert!(saved.to_string().contains("yeo_johnson"), "{saved}");
    run_ok(runner(d.path()).args(["reload-etl", "v1", "--out", "new.csv"]));
    for tv in ["t1", "t2"] {
        let predicted =
            run_ok(runner(d.path()).args(["predict", tv, "--input", "new.csv", "--proba"]));
        run_ok(runner(d.path()).args(["export", tv, "--format", "onnx", "--out", "x"]));
        let onnx = std::process::Command::new(mlflow_python())
            .arg(repo().join("tests/onnx_check.py"))
            .arg(d.path().join(format!("x/model_{tv}.onnx")))
            .arg(d.path().join("new.csv"))
            .output()
            .unwrap();
        assert!(
            onnx.status.success(),
            "{}",
            String::from_utf8_lossy(&onnx.stderr)
        );
        let onnx: serde_json::Value = serde_json::from_slice(&onnx.stdout).unwrap();
        let text = String::from_utf8(predicted.stdout).unwrap();
        for (i, line) in text.lines().skip(1).enumerate() {
            let ours: Vec<f64> = line
                .split(',')
                .skip(2)
                .map(|v| v.parse().unwrap())
                .collect();
            for (a, b) in ours
                .iter()
                .zip(onnx["probabilities"][i].as_array().unwrap())
            {
                let b = b.as_f64().unwrap();
                assert!((a - b).abs() < 1e-9, "{tv} row {i}: runner {a}, onnx {b}");
            }
        }
    }
    // A transform outside its domain, or on a column that is not there: exit 2, by name.
    let bad = config.replace(
        "\"alcohol\" = \"yeo-johnson\"",
        "\"alcohol\" = \"sqrt\", \"acohol\" = \"log1p\"",
    );
    let cfg = write_config(d.path(), &bad, sweep);
    let out = runner(d.path())
        .args(["validate"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("etl.transform") && err.contains("did you mean \"alcohol\""),
        "{err}"
    );
}
