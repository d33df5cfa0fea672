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
        .any(|w| w.contains("\"chlorides\" is heavily skewed") && w.contains("log1p")));
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
