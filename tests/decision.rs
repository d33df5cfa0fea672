//! A classifier's decision step as a user sees it: a two-class threshold chosen for a named
//! metric and probability calibration, both fitted inside each training fold, recorded with
//! the run, and applied by `predict`, `replay` and the exported ONNX model.
mod common;

use common::*;
use serde_json::Value;

/// Red wines of grades 6 and 7 only: two classes, about 1:3.
const CONFIG: &str = "experiment = \"six-or-seven\"\nsweeps = [\"sweep.toml\"]\nprimary_metric = \"f1\"\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[etl]\nfilter = [\"quality >= 6\", \"quality <= 7\"]\nscale = \"standard\"\n[cv]\nfolds = 3\n";

const SWEEP: &str = concat!(
    "[[models]]\nname = \"lr\"\nkind = \"logistic_regression\"\n",
    "[[models]]\nname = \"lr-f1\"\nkind = \"logistic_regression\"\nthreshold = \"f1\"\n",
    "[[models]]\nname = \"nb\"\nkind = \"naive_bayes\"\n",
    "[[models]]\nname = \"nb-isotonic\"\nkind = \"naive_bayes\"\ncalibration = \"isotonic\"\n",
    "[[models]]\nname = \"forest-platt-ba\"\nkind = \"random_forest\"\nn_trees = 20\ncalibration = \"platt\"\nthreshold = \"balanced_accuracy\"\n",
    "[[models]]\nname = \"vote\"\nkind = \"voting\"\nmembers = [\"nb-isotonic\", \"lr\"]\ncalibration = \"isotonic\"\nthreshold = \"recall>=0.8\"\n",
);

fn mean(run: &Value, metric: &str) -> f64 {
    run["metrics"][metric]["mean"].as_f64().unwrap()
}

/// `runner predict tN --proba` on `input`: (label, probability of grade 7) per row.
fn predicted(dir: &std::path::Path, tv: &str, input: &str) -> Vec<(String, f64)> {
    let out = run_ok(runner(dir).args(["predict", tv, "--input", input, "--proba"]));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), "row,prediction,proba_6,proba_7");
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            (cells[1].to_string(), cells[3].parse().unwrap())
        })
        .collect()
}

#[test]
fn a_threshold_and_calibration_fitted_inside_the_training_folds_reach_predict_and_onnx() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), CONFIG, SWEEP);
    let report = sweep_json(d.path(), &cfg, &[]);
    let runs = report["runs"].as_array().unwrap();
    assert!(runs.iter().all(|r| r["status"] == "FINISHED"), "{report}");
    let [lr, lr_f1, nb, nb_iso, forest, vote] = [0, 1, 2, 3, 4, 5].map(|i| &runs[i]);
    // The F1 threshold raises the rarer grade's F1 over the most probable class.
    let (f1, f1_tuned) = (mean(lr, "f1"), mean(lr_f1, "f1"));
    assert!(f1_tuned > f1 + 0.05, "f1 {f1} -> {f1_tuned}");
    // Isotonic calibration improves naive Bayes' probabilities: Brier score and log loss.
    for m in ["brier", "log_loss"] {
        let (raw, calibrated) = (mean(nb, m), mean(nb_iso, m));
        assert!(calibrated < raw - 0.005, "{m}: {raw} -> {calibrated}");
    }
    // A threshold for balanced accuracy over Platt-scaled probabilities, and one for a recall
    // target over an ensemble of a calibrated and a raw member, calibrated again.
    assert!(mean(forest, "balanced_accuracy") > 0.65, "{forest}");
    assert!(mean(vote, "recall") >= 0.7, "{vote}");

    // Each fold chose its own threshold on its own training rows; the run's comes from all.
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let logged = experiment_runs(&store, "six-or-seven");
    let run = |r: &Value| {
        logged
            .iter()
            .find(|l| l["run_id"] == r["run_uuid"])
            .cloned()
            .unwrap()
    };
    let tuned = run(lr_f1);
    let folds: Vec<f64> = (0..3)
        .map(|i| {
            tuned["metrics"][format!("fold{i}/threshold")]
                .as_f64()
                .unwrap()
        })
        .collect();
    let threshold = tuned["metrics"]["threshold"].as_f64().unwrap();
    assert!(folds.iter().all(|t| *t > 0.0 && *t < 1.0), "{folds:?}");
    assert!(folds.windows(2).any(|w| w[0] != w[1]), "{folds:?}");
    assert!(
        threshold < 0.5,
        "grade 7 is rare: F1 wants a low threshold, {threshold}"
    );
    assert_eq!(tuned["params"]["threshold"], "f1");
    assert!(run(lr)["metrics"]["threshold"].is_null());
    assert!(run(nb_iso)["metrics"]["threshold"].is_null());

    // predict applies the recorded threshold: grade 7 from that probability on, below 0.5 too.
    run_ok(runner(d.path()).args(["reload-etl", "v1", "--out", "wines.csv"]));
    let rows = predicted(d.path(), "t2", "wines.csv");
    assert_eq!(rows.len(), 638 + 199);
    for (label, p) in &rows {
        assert_eq!(label == "7", *p >= threshold, "{label} at {p}");
    }
    assert!(rows.iter().any(|(l, p)| l == "7" && *p < 0.5));

    // The exported ONNX model calibrates and thresholds the same way.
    for tv in ["t2", "t4", "t5", "t6"] {
        run_ok(runner(d.path()).args(["export", tv, "--format", "onnx", "--out", "x"]));
        let onnx = onnxruntime(
            &d.path().join(format!("x/model_{tv}.onnx")),
            &d.path().join("wines.csv"),
        );
        let ours = predicted(d.path(), tv, "wines.csv");
        for (i, (label, p)) in ours.iter().enumerate() {
            assert_eq!(onnx["label"][i].to_string(), *label, "{tv} row {i}");
            let q = onnx["probabilities"][i][1].as_f64().unwrap();
            assert!((p - q).abs() < 1e-6, "{tv} row {i}: {p} vs {q}");
        }
    }

    // Replay refits the inner CV too, bit for bit.
    for tv in ["t2", "t6"] {
        let out = run_ok(runner(d.path()).args(["replay", tv, "--check", "--json"]));
        assert_eq!(stdout_json(&out)["identical"], true, "{tv}");
    }
}

/// A threshold splits two classes and calibration maps class probabilities: asked of more
/// classes, a regression or with an unknown rule, each is refused before anything is written.
#[test]
fn thresholds_and_calibration_outside_their_use_are_refused_by_key() {
    let d = tempfile::tempdir().unwrap();
    let wine = "experiment = \"w\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n";
    let regression = wine.replace("[data]", "task = \"regression\"\n[data]");
    let f1 = wine.replace("[data]", "primary_metric = \"f1\"\n[data]");
    let cases = [
        (wine, "kind = \"knn\"\nthreshold = \"f1\"", "the data has 6"),
        (&f1, "kind = \"knn\"", "use f1_macro"),
        (
            wine,
            "kind = \"knn\"\nthreshold = \"precision>=2\"",
            "\"recall>=R\"",
        ),
        (
            &regression,
            "kind = \"random_forest\"\ncalibration = \"platt\"",
            "models[0].calibration",
        ),
        (
            &regression,
            "kind = \"random_forest\"\nthreshold = \"f1\"",
            "models[0].threshold",
        ),
    ];
    for (config, model, expected) in cases {
        let cfg = write_config(d.path(), config, &format!("[[models]]\n{model}\n"));
        let err = refused(runner(d.path()).args(["sweep"]).arg(&cfg));
        assert!(err.contains(expected), "{model}: {err}");
        assert!(!d.path().join("mlflow.db").exists(), "nothing written");
    }
}
