//! Voting and stacking ensembles (better than their members on the red wine, members' runs
//! recorded, replayable) and `runner predict` (the saved model gives the run's own predictions,
//! and input that does not match is refused by name).
mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

const CONFIG: &str = "experiment = \"ens\"\nseed = 42\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[etl]\nscale = \"standard\"\n[cv]\nfolds = 5\n";

const MEMBERS: &str = "[[models]]\nkind = \"random_forest\"\nname = \"forest\"\nn_trees = 60\n[[models]]\nkind = \"knn\"\nname = \"knn\"\nk = [5, 15]\nweights = \"distance\"\n[[models]]\nkind = \"logistic_regression\"\nname = \"logistic\"\n";

fn accuracy_and_f1(run: &Value) -> (f64, f64) {
    (
        run["metrics"]["accuracy"]["mean"].as_f64().unwrap(),
        run["metrics"]["f1_macro"]["mean"].as_f64().unwrap(),
    )
}

#[test]
fn ensembles_beat_their_best_member_and_record_the_members_runs() {
    let d = tempfile::tempdir().unwrap();
    let sweep = format!(
        "{MEMBERS}[[models]]\nkind = \"voting\"\nname = \"vote\"\nmembers = [\"forest\", \"knn[k=15]\", \"logistic\"]\n[[models]]\nkind = \"stacking\"\nname = \"stack\"\nmembers = [\"forest\", \"knn[k=15]\", \"logistic\"]\ninner_folds = 4\n"
    );
    let cfg = write_config(d.path(), CONFIG, &sweep);
    let report = sweep_json(d.path(), &cfg, &[]);
    let runs: BTreeMap<String, &Value> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r))
        .collect();
    let members = ["forest", "knn[k=15]", "logistic"];
    let best_acc = members
        .iter()
        .map(|m| accuracy_and_f1(runs[*m]).0)
        .fold(0.0, f64::max);
    let best_f1 = members
        .iter()
        .map(|m| accuracy_and_f1(runs[*m]).1)
        .fold(0.0, f64::max);
    for e in ["vote", "stack"] {
        let (acc, f1) = accuracy_and_f1(runs[e]);
        eprintln!("{e}: accuracy {acc:.4} (best member {best_acc:.4}), macro F1 {f1:.4} (best member {best_f1:.4})");
        assert!(
            acc > best_acc || f1 > best_f1,
            "{e} beats no member: accuracy {acc} vs {best_acc}, f1 {f1} vs {best_f1}"
        );
    }
    // The MLflow client sees which runs the members are.
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let mlflow_runs = experiment_runs(&store, "ens");
    let tag = |name: &str| -> String {
        mlflow_runs
            .iter()
            .find(|r| {
                r["tags"]["mlflow.runName"]
                    .as_str()
                    .unwrap()
                    .ends_with(name)
            })
            .unwrap()["tags"]["runner.members"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let expected = members
        .iter()
        .map(|m| format!("{} {m}", runs[*m]["version"].as_str().unwrap()))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(tag("-stack"), expected);
    assert_eq!(tag("-vote"), expected);
    // An ensemble replays bit for bit from the store alone (members included).
    std::fs::remove_file(d.path().join("sweep.toml")).unwrap();
    run_ok(runner(d.path()).args([
        "replay",
        runs["stack"]["version"].as_str().unwrap(),
        "--check",
    ]));
}

#[test]
fn ensemble_top_n_and_members_from_earlier_runs() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), CONFIG, MEMBERS);
    let report = sweep_json(
        d.path(),
        &cfg,
        &["--ensemble", "top=2", "--set", "cv.folds=3"],
    );
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "4 configs and 2 ensembles");
    // One comparison chart over the sweep and its ensembles.
    let chart = std::path::PathBuf::from(report["comparison_chart"].as_str().unwrap());
    assert!(
        chart.ends_with("sweep_t1-t6_accuracy.svg"),
        "{}",
        chart.display()
    );
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.contains("voting[top2]") && svg.contains("t1 "),
        "every run is on the chart"
    );
    let charts = std::fs::read_dir(chart.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("sweep_"))
        .count();
    assert_eq!(charts, 1, "no partial charts left behind");
    // The two best single models by accuracy are the members.
    let mut singles: Vec<&Value> = runs[..4].iter().collect();
    singles.sort_by(|a, b| accuracy_and_f1(b).0.total_cmp(&accuracy_and_f1(a).0));
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let voting = experiment_runs(&store, "ens")
        .into_iter()
        .find(|r| r["tags"]["runner.model_kind"] == "voting")
        .expect("a voting run");
    assert_eq!(
        voting["tags"]["runner.members"].as_str().unwrap(),
        format!(
            "{} {}, {} {}",
            singles[0]["version"].as_str().unwrap(),
            singles[0]["name"].as_str().unwrap(),
            singles[1]["version"].as_str().unwrap(),
            singles[1]["name"].as_str().unwrap()
        )
    );
    // A later sweep names earlier runs as members; a missing run is a config error.
    let later = "[[models]]\nkind = \"voting\"\nname = \"old-pair\"\nmembers = [\"t1\", \"t3\"]\nvoting = \"hard\"\n";
    std::fs::write(d.path().join("sweep.toml"), later).unwrap();
    let report = sweep_json(d.path(), &cfg, &["--set", "cv.folds=3"]);
    let r = &report["runs"][0];
    assert_eq!(r["status"], "FINISHED");
    std::fs::write(d.path().join("sweep.toml"), later.replace("t3", "t99")).unwrap();
    let out = runner(d.path()).args(["sweep"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("t99") && err.contains("no training run"),
        "{err}"
    );
}

/// Reads a predictions CSV into (prediction, probabilities) per row.
fn read_predictions(path: &Path) -> Vec<(String, Vec<f64>)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let pred = header.iter().position(|h| *h == "prediction").unwrap();
    lines
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            let proba = header
                .iter()
                .zip(&c)
                .filter(|(h, _)| h.starts_with("proba_"))
                .map(|(_, v)| v.parse().unwrap())
                .collect();
            (c[pred].to_string(), proba)
        })
        .collect()
}

#[test]
fn predict_gives_each_runs_own_predictions_and_refuses_mismatched_input() {
    let d = tempfile::tempdir().unwrap();
    let mut sweep = String::from("[[models]]\nkind = \"decision_tree\"\n[[models]]\nkind = \"random_forest\"\nn_trees = 20\n[[models]]\nkind = \"logistic_regression\"\n[[models]]\nkind = \"svm\"\n[[models]]\nkind = \"knn\"\n[[models]]\nkind = \"naive_bayes\"\n");
    let mut members = vec!["random_forest", "knn"];
    if cfg!(feature = "xgboost") {
        sweep.push_str("[[models]]\nkind = \"xgboost\"\nn_rounds = 30\n");
        members.push("xgboost");
    }
    if cfg!(feature = "lightgbm") {
        sweep.push_str("[[models]]\nkind = \"lightgbm\"\nn_rounds = 30\n");
    }
    if cfg!(feature = "torch") {
        sweep.push_str("[[models]]\nkind = \"mlp\"\nepochs = 5\n");
        members.push("mlp");
    }
    sweep.push_str(&format!(
        "[[models]]\nkind = \"stacking\"\nmembers = {members:?}\ninner_folds = 3\n"
    ));
    let cfg = write_config(d.path(), CONFIG, &sweep);
    let report = sweep_json(d.path(), &cfg, &["--set", "cv.folds=2"]);
    run_ok(runner(d.path()).args(["reload-etl", "v1", "--out", "new.csv"]));
    for run in report["runs"].as_array().unwrap() {
        assert_eq!(run["status"], "FINISHED", "{}", run["error"]);
        let tv = run["version"].as_str().unwrap();
        let out = d.path().join(format!("p_{tv}.csv"));
        run_ok(
            runner(d.path())
                .args(["predict", tv, "--input", "new.csv", "--proba", "--out"])
                .arg(&out),
        );
        let got = read_predictions(&out);
        let want = read_predictions(&artifact(
            d.path(),
            run["run_uuid"].as_str().unwrap(),
            &format!("predictions_{tv}.csv"),
        ));
        assert_eq!(got.len(), 1599);
        assert_eq!(got.len(), want.len());
        let kind = run["kind"].as_str().unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.0, w.0, "{kind} row {i}: label");
            assert!(
                ["3", "4", "5", "6", "7", "8"].contains(&g.0.as_str()),
                "decoded label"
            );
            for (a, b) in g.1.iter().zip(&w.1) {
                assert!((a - b).abs() <= 1e-12, "{kind} row {i}: {a} vs {b}");
            }
        }
    }
    // Input that does not match what the run was trained on.
    let text = std::fs::read_to_string(d.path().join("new.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let ph = header.iter().position(|h| *h == "pH").unwrap();
    let without: String = text
        .lines()
        .map(|l| {
            let mut c: Vec<&str> = l.split(',').collect();
            c.remove(ph);
            c.join(",") + "\n"
        })
        .collect();
    std::fs::write(d.path().join("no_ph.csv"), without).unwrap();
    let as_text: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut c: Vec<&str> = l.split(',').collect();
            if i > 0 {
                c[ph] = "acidic";
            }
            c.join(",") + "\n"
        })
        .collect();
    std::fs::write(d.path().join("text_ph.csv"), as_text).unwrap();
    for (file, needle) in [
        (
            "no_ph.csv",
            "lacks 1 column(s) that t1 was trained on: \"pH\"",
        ),
        ("text_ph.csv", "column \"pH\" holds text"),
        ("absent.csv", "no such input file"),
    ] {
        let out = runner(d.path())
            .args(["predict", "t1", "--input", file])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(err.contains(needle) && err.contains(file), "{file}: {err}");
        assert!(out.stdout.is_empty(), "{file}: nothing predicted");
    }
}

#[test]
fn predict_regression_values_and_filters() {
    let d = tempfile::tempdir().unwrap();
    let config = "experiment = \"reg\"\nseed = 42\ntask = \"regression\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[etl]\nfilter = [\"alcohol > 9\"]\n";
    let cfg = write_config(
        d.path(),
        config,
        "[[models]]\nkind = \"linear\"\n[[models]]\nkind = \"voting\"\nmembers = [\"linear\", \"forest\"]\n[[models]]\nkind = \"random_forest\"\nname = \"forest\"\nn_trees = 10\n",
    );
    let out = runner(d.path()).args(["sweep"]).arg(&cfg).output().unwrap();
    // Members must be defined above the ensemble that names them.
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("member \"forest\""));
    write_config(
        d.path(),
        config,
        "[[models]]\nkind = \"linear\"\n[[models]]\nkind = \"random_forest\"\nname = \"forest\"\nn_trees = 10\n[[models]]\nkind = \"voting\"\nmembers = [\"linear\", \"forest\"]\n",
    );
    run_ok(
        runner(d.path())
            .args(["sweep"])
            .arg(&cfg)
            .args(["--set", "cv.folds=2"]),
    );
    // The builtin data, unfiltered: rows with alcohol <= 9 are dropped by the recorded filter.
    let raw = "fixed acidity,volatile acidity,citric acid,residual sugar,chlorides,free sulfur dioxide,total sulfur dioxide,density,pH,sulphates,alcohol\n7.4,0.7,0.0,1.9,0.076,11.0,34.0,0.9978,3.51,0.56,9.4\n7.8,0.88,0.0,2.6,0.098,25.0,67.0,0.9968,3.2,0.68,8.9\n7.8,0.76,0.04,2.3,0.092,15.0,54.0,0.997,3.26,0.65,9.8\n";
    std::fs::write(d.path().join("new.csv"), raw).unwrap();
    for tv in ["t1", "t2", "t3"] {
        let out = run_ok(runner(d.path()).args(["predict", tv, "--input", "new.csv"]));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[0], "row,prediction");
        assert_eq!(rows.len(), 3, "{tv}: the filtered row is left out:\n{text}");
        assert!(
            rows[1].starts_with("0,") && rows[2].starts_with("2,"),
            "{text}"
        );
        let v: f64 = rows[1].split(',').nth(1).unwrap().parse().unwrap();
        assert!((3.0..=8.5).contains(&v), "{tv}: a wine grade, got {v}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("alcohol > 9"));
    }
    let out = runner(d.path())
        .args(["predict", "t1", "--input", "new.csv", "--proba"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("regression"));
}

/// Exports every finished run of `report` as ONNX, runs it in onnxruntime on `input` and
/// compares with `runner predict`. Returns how many models were compared.
fn onnx_matches_predict(dir: &Path, report: &Value, input: &str) -> usize {
    let mut checked = 0;
    for run in report["runs"].as_array().unwrap() {
        let (tv, kind) = (
            run["version"].as_str().unwrap(),
            run["kind"].as_str().unwrap(),
        );
        let out = runner(dir)
            .args(["export", tv, "--format", "onnx", "--out", "export"])
            .output()
            .unwrap();
        checked += 1;
        assert!(
            out.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let onnx = onnxruntime(
            &dir.join(format!("export/model_{tv}.onnx")),
            &dir.join(input),
        );
        let p = dir.join(format!("p_{tv}.csv"));
        run_ok(
            runner(dir)
                .args(["predict", tv, "--input", input, "--proba", "--out"])
                .arg(&p),
        );
        let ours = read_predictions(&p);
        let labels = onnx["label"].as_array().unwrap();
        let proba = onnx["probabilities"].as_array().unwrap();
        assert_eq!(labels.len(), ours.len());
        // Trees and the networks compute in float inside onnxruntime; logistic stays in double.
        let tol = if kind == "logistic_regression" {
            1e-12
        } else {
            1e-5
        };
        let mut label_diffs = 0;
        for (i, (l, (label, pr))) in labels.iter().zip(&ours).enumerate() {
            let theirs: Vec<f64> = proba[i]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            for (a, b) in theirs.iter().zip(pr) {
                assert!(
                    (a - b).abs() <= tol,
                    "{kind} row {i}: onnxruntime {a}, runner {b}"
                );
            }
            let l = l
                .as_i64()
                .map(|v| v.to_string())
                .or_else(|| l.as_str().map(str::to_string))
                .unwrap();
            if l != *label {
                // Only where two classes are within float rounding of each other.
                let mut s = pr.clone();
                s.sort_by(|a, b| b.total_cmp(a));
                assert!(s[0] - s[1] < 1e-5, "{kind} row {i}: label {l} vs {label}");
                label_diffs += 1;
            }
        }
        assert!(label_diffs <= 2, "{kind}: {label_diffs} labels differ");
    }
    checked
}

#[test]
fn onnx_exports_predict_the_same_in_onnxruntime() {
    let d = tempfile::tempdir().unwrap();
    let mut sweep = String::from("[[models]]\nkind = \"decision_tree\"\n[[models]]\nkind = \"random_forest\"\nn_trees = 30\n[[models]]\nkind = \"logistic_regression\"\n[[models]]\nkind = \"knn\"\nname = \"knn\"\n");
    // KNN, SVM, naive Bayes and both ensembles over them.
    sweep.push_str(concat!(
        "[[models]]\nkind = \"svm\"\nname = \"svm\"\n[[models]]\nkind = \"naive_bayes\"\nname = \"nb\"\n",
        "[[models]]\nkind = \"voting\"\nmembers = [\"knn\", \"svm\", \"nb\"]\n",
        "[[models]]\nkind = \"stacking\"\nmembers = [\"knn\", \"nb\"]\ninner_folds = 2\n",
    ));
    if cfg!(feature = "torch") {
        sweep.push_str(
            "[[models]]\nkind = \"mlp\"\nepochs = 5\nhidden = \"16,8\"\nactivation = \"gelu\"\n",
        );
        sweep.push_str("[[models]]\nkind = \"cnn\"\nepochs = 3\nchannels = 4\npool = \"avg\"\nactivation = \"tanh\"\n");
        sweep.push_str("[[models]]\nkind = \"lstm\"\nepochs = 3\nhidden_size = 8\nnum_layers = 2\nbidirectional = true\nhidden = \"8\"\n");
    }
    if cfg!(feature = "xgboost") {
        sweep.push_str("[[models]]\nkind = \"xgboost\"\nn_rounds = 40\n");
    }
    if cfg!(feature = "lightgbm") {
        sweep.push_str("[[models]]\nkind = \"lightgbm\"\nn_rounds = 40\n");
    }
    // Missing values in the input are filled inside the graph as in the runner.
    let cfg = write_config(
        d.path(),
        &CONFIG.replace(
            "scale = \"standard\"",
            "scale = \"standard\"\nimpute = \"median\"",
        ),
        &sweep,
    );
    let report = sweep_json(d.path(), &cfg, &["--set", "cv.folds=2"]);
    run_ok(runner(d.path()).args(["reload-etl", "v1", "--out", "new.csv"]));
    // Blank a few cells: both sides must fill them with the training median.
    let text = std::fs::read_to_string(d.path().join("new.csv")).unwrap();
    let holes: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut c: Vec<&str> = l.split(',').collect();
            if i > 0 && i % 50 == 0 {
                c[i % 11] = "";
            }
            c.join(",") + "\n"
        })
        .collect();
    std::fs::write(d.path().join("new.csv"), holes).unwrap();
    let checked = onnx_matches_predict(d.path(), &report, "new.csv");
    assert!(checked >= 9, "{checked} models checked");
    // Native and TorchScript exports copy the saved files.
    let out =
        run_ok(runner(d.path()).args(["export", "t2", "--format", "native", "--out", "native"]));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("model_t2.json"), "{listed}");
    let out = runner(d.path())
        .args(["export", "t2", "--format", "torchscript", "--out", "ts"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TorchScript export covers the networks"));
}

#[test]
fn onnx_export_of_two_class_models() {
    let d = tempfile::tempdir().unwrap();
    // Grades 5 and 6 only: two classes.
    let config = CONFIG.replace(
        "[etl]\n",
        "[etl]\nfilter = [\"quality >= 5\", \"quality <= 6\"]\n",
    );
    let mut sweep = String::from("[[models]]\nkind = \"random_forest\"\nn_trees = 20\n[[models]]\nkind = \"logistic_regression\"\n");
    if cfg!(feature = "xgboost") {
        sweep.push_str("[[models]]\nkind = \"xgboost\"\nn_rounds = 30\n");
    }
    if cfg!(feature = "lightgbm") {
        sweep.push_str("[[models]]\nkind = \"lightgbm\"\nn_rounds = 30\n");
    }
    let cfg = write_config(d.path(), &config, &sweep);
    let report = sweep_json(d.path(), &cfg, &["--set", "cv.folds=2"]);
    run_ok(runner(d.path()).args(["reload-etl", "v1", "--out", "new.csv"]));
    let checked = onnx_matches_predict(d.path(), &report, "new.csv");
    assert_eq!(checked, report["runs"].as_array().unwrap().len());
}

#[test]
fn onnx_export_of_regressors() {
    let d = tempfile::tempdir().unwrap();
    let config = "experiment = \"reg\"\nseed = 42\ntask = \"regression\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[etl]\nscale = \"minmax\"\n[cv]\nfolds = 2\n";
    let cfg = write_config(
        d.path(),
        config,
        &format!(
            "[[models]]\nkind = \"linear\"\n[[models]]\nkind = \"random_forest\"\nn_trees = 20\n{}{}",
            if cfg!(feature = "xgboost") {
                "[[models]]\nkind = \"xgboost\"\nn_rounds = 30\n"
            } else {
                ""
            },
            if cfg!(feature = "lightgbm") {
                "[[models]]\nkind = \"lightgbm\"\nn_rounds = 30\n"
            } else {
                ""
            }
        ),
    );
    let report = sweep_json(d.path(), &cfg, &[]);
    run_ok(runner(d.path()).args(["reload-etl", "v1", "--out", "new.csv"]));
    let runs: Vec<(&str, f64)> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let tol = if r["kind"] == "linear" { 1e-9 } else { 1e-5 };
            (r["version"].as_str().unwrap(), tol)
        })
        .collect();
    for (tv, tol) in runs {
        run_ok(runner(d.path()).args(["export", tv, "--format", "onnx", "--out", "x"]));
        let onnx = onnxruntime(
            &d.path().join(format!("x/model_{tv}.onnx")),
            &d.path().join("new.csv"),
        );
        let out = run_ok(runner(d.path()).args(["predict", tv, "--input", "new.csv"]));
        let ours: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        let theirs = onnx["value"].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(theirs) {
            let b = b.as_f64().unwrap();
            assert!(
                (a - b).abs() <= tol * a.abs().max(1.0),
                "{tv}: runner {a}, onnxruntime {b}"
            );
        }
    }
}
