//! Every training run's model is an MLflow model: the real MLflow client loads it with
//! `mlflow.pyfunc` (by run, by model id and by registered alias) and predicts a raw pandas
//! frame as `runner predict` does; the registry and `mlflow models serve` work on it.
mod common;

use common::*;
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// White wines with a text column (`sweetness`, some missing) and a whole-number column, as a
/// user's CSV: training rows, and new rows with an unseen category and missing values.
fn write_data(dir: &Path) {
    let text = std::fs::read_to_string(repo().join("tests/data/winequality-white.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    let with_sweetness = |i: usize, r: &[String], new: bool| {
        let sugar: f64 = r[3].parse().unwrap();
        let mut cells = r.to_vec();
        cells[5] = format!("{}", cells[5].parse::<f64>().unwrap().round() as i64);
        if new && i.is_multiple_of(17) {
            cells[10] = String::new(); // alcohol missing
        }
        let sweet = match (i % 23, new) {
            (0, _) => "",
            (1, true) => "syrupy", // never seen in training
            _ if sugar > 10.0 => "sweet",
            _ if sugar > 3.0 => "medium",
            _ => "dry",
        };
        cells.push(sweet.to_string());
        cells.join(",")
    };
    let csv = |range: std::ops::Range<usize>, new: bool| {
        let mut out = format!("{header},sweetness\n");
        for i in range {
            out.push_str(&with_sweetness(i, &rows[i], new));
            out.push('\n');
        }
        out
    };
    std::fs::write(dir.join("white.csv"), csv(0..900, false)).unwrap();
    std::fs::write(dir.join("new.csv"), csv(900..1100, true)).unwrap();
}

fn classifiers() -> String {
    let mut s = String::from(concat!(
        "[[models]]\nkind = \"decision_tree\"\nmax_depth = 6\n",
        "[[models]]\nkind = \"random_forest\"\nn_trees = 15\n",
        "[[models]]\nkind = \"logistic_regression\"\n",
        "[[models]]\nkind = \"knn\"\nname = \"knn\"\nclass_weight = \"balanced\"\n",
        "[[models]]\nkind = \"svm\"\nname = \"svm\"\n",
        "[[models]]\nkind = \"naive_bayes\"\nname = \"nb\"\n",
        "[[models]]\nkind = \"voting\"\nmembers = [\"knn\", \"svm\", \"nb\"]\nvoting = \"hard\"\n",
        "[[models]]\nkind = \"stacking\"\nmembers = [\"knn\", \"nb\"]\npassthrough = true\ninner_folds = 3\n",
    ));
    if cfg!(feature = "xgboost") {
        s.push_str("[[models]]\nkind = \"xgboost\"\nn_rounds = 20\n");
    }
    if cfg!(feature = "lightgbm") {
        s.push_str("[[models]]\nkind = \"lightgbm\"\nn_rounds = 20\n");
    }
    if cfg!(feature = "torch") {
        s.push_str("[[models]]\nkind = \"mlp\"\nepochs = 5\n");
    }
    s
}

fn config(task: &str) -> String {
    format!("experiment = \"white-{task}\"\nseed = 3\ntask = \"{task}\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"white.csv\"\ntarget = \"quality\"\n[etl]\nimpute = \"median\"\nencode = \"onehot\"\nscale = \"standard\"\ntransform = {{ \"residual sugar\" = \"log1p\", \"chlorides\" = \"yeo-johnson\" }}\n[cv]\nfolds = 3\n")
}

/// Runs tests/pyfunc_check.py: predictions of each model URI on `input`, and what the MLflow
/// client lists (logged models, run outputs, the registry).
fn pyfunc(dir: &Path, input: &str, uris: &[String]) -> Value {
    let out = Command::new(mlflow_python())
        .arg(repo().join("tests/pyfunc_check.py"))
        .arg(sqlite_uri(&dir.join("mlflow.db")))
        .arg(dir.join(input))
        .args(uris)
        .output()
        .expect("python starts");
    assert!(
        out.status.success(),
        "the MLflow client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `runner predict MODEL --input new.csv [--proba]` as CSV columns by header.
fn runner_predict(dir: &Path, model: &str, proba: bool) -> Vec<(String, Vec<String>)> {
    let mut cmd = runner(dir);
    cmd.args(["predict", model, "--input", "new.csv"]);
    if proba {
        cmd.arg("--proba");
    }
    let text = String::from_utf8(run_ok(&mut cmd).stdout).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    header
        .iter()
        .enumerate()
        .map(|(j, h)| (h.clone(), rows.iter().map(|r| r[j].clone()).collect()))
        .collect()
}

/// The pyfunc model's predictions equal runner's: the same labels (or values within float
/// rounding) and class probabilities within float rounding, one per input row.
fn assert_same(what: &str, pyfunc: &Value, runner: &[(String, Vec<String>)]) {
    let rows = runner[0].1.len();
    assert_eq!(rows, 200, "runner predicts every new row");
    for (column, expected) in runner.iter().filter(|(c, _)| c != "row") {
        let got = pyfunc[column]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no column {column} in {pyfunc}"));
        assert_eq!(got.len(), rows, "{what}: {column} has one value per row");
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            let e_num: Option<f64> = e.parse().ok();
            let same = match (g.as_f64(), e_num) {
                (Some(g), Some(e)) if column == "prediction" && g.fract() == 0.0 => g == e,
                (Some(g), Some(e)) => (g - e).abs() <= 1e-5 * e.abs().max(1.0),
                _ => g.as_str() == Some(e.as_str()),
            };
            assert!(same, "{what}: row {i} {column}: pyfunc {g}, runner {e}");
        }
    }
}

/// Loads each run's `runs:/<id>/model` with pyfunc, predicts new.csv and compares with
/// `runner predict` (with `--proba` for classifiers); returns what the client read.
fn pyfunc_matches_predict(dir: &Path, runs: &[Value], proba: bool) -> Value {
    let uris: Vec<String> = runs
        .iter()
        .map(|r| format!("runs:/{}/model", r["run_uuid"].as_str().unwrap()))
        .collect();
    let read = pyfunc(dir, "new.csv", &uris);
    for (r, uri) in runs.iter().zip(&uris) {
        let tv = r["version"].as_str().unwrap();
        let expected = runner_predict(dir, tv, proba);
        let what = format!("{tv} {}", r["kind"]);
        assert_same(&what, &read["predictions"][uri], &expected);
    }
    read
}

#[test]
fn every_runs_pyfunc_model_predicts_a_raw_frame_as_runner_does() {
    let d = tempfile::tempdir().unwrap();
    write_data(d.path());
    let cfg = write_config(d.path(), &config("classification"), &classifiers());
    let report = sweep_json(d.path(), &cfg, &[]);
    // Every kind has an MLflow model: ensembles, KNN, SVM and naive Bayes too.
    let runs = report["runs"].as_array().unwrap();
    let read = pyfunc_matches_predict(d.path(), runs, true);
    // One logged model per run, linked to its run (the UI's Models column).
    let logged = read["logged_models"].as_array().unwrap();
    assert_eq!(logged.len(), runs.len(), "{logged:?}");
    for r in runs {
        let id = r["run_uuid"].as_str().unwrap();
        let m = logged.iter().find(|m| m["run_id"] == id).unwrap();
        assert_eq!(m["name"], "model");
        assert_eq!(read["run_outputs"][id][0], m["model_id"]);
    }
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let training = experiment_runs(&store, "white-classification")
        .into_iter()
        .filter(|r| r["tags"]["runner.sweep"] != "parent")
        .collect::<Vec<_>>();
    assert_eq!(training.len(), runs.len());
    for run in training {
        assert_eq!(run["tags"]["runner.mlflow_model"], "model", "{run}");
    }
    // The same model by its own id.
    let first = &logged[0];
    let by_id = format!("models:/{}", first["model_id"].as_str().unwrap());
    let again = pyfunc(d.path(), "new.csv", std::slice::from_ref(&by_id));
    let run_uri = format!("runs:/{}/model", first["run_id"].as_str().unwrap());
    assert_eq!(
        again["predictions"][&by_id], read["predictions"][&run_uri],
        "models:/m-<id> and runs:/<id>/model are the same model"
    );
}

#[test]
fn regression_models_predict_values_through_pyfunc() {
    let d = tempfile::tempdir().unwrap();
    write_data(d.path());
    let sweep = concat!(
        "[[models]]\nkind = \"linear\"\nname = \"linear\"\n",
        "[[models]]\nkind = \"random_forest\"\nn_trees = 10\n",
        "[[models]]\nkind = \"knn\"\nname = \"knn\"\n",
        "[[models]]\nkind = \"svm\"\n",
        "[[models]]\nkind = \"voting\"\nmembers = [\"linear\", \"knn\"]\n",
        "[[models]]\nkind = \"stacking\"\nmembers = [\"linear\", \"knn\"]\ninner_folds = 3\n",
    );
    let cfg = write_config(d.path(), &config("regression"), sweep);
    let report = sweep_json(d.path(), &cfg, &[]);
    let runs = report["runs"].as_array().unwrap();
    pyfunc_matches_predict(d.path(), runs, false);
}

/// Turns the grade into a two-class target: `good` is "yes" from grade 7 on, else "no".
fn two_classes(dir: &Path) {
    for file in ["white.csv", "new.csv"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let lines: Vec<String> = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let mut cells: Vec<String> = l.split(',').map(String::from).collect();
                cells[11] = match i {
                    0 => "good".into(),
                    _ if cells[11].parse::<f64>().unwrap() >= 7.0 => "yes".into(),
                    _ => "no".into(),
                };
                cells.join(",")
            })
            .collect();
        std::fs::write(dir.join(file), lines.join("\n") + "\n").unwrap();
    }
}

/// A two-class model's calibration and decision threshold are part of its MLflow model:
/// pyfunc gives runner's labels and calibrated probabilities, ensembles and boosters included.
#[test]
fn calibration_and_thresholds_reach_the_pyfunc_model() {
    let d = tempfile::tempdir().unwrap();
    write_data(d.path());
    two_classes(d.path());
    let mut sweep = String::from(concat!(
        "[[models]]\nname = \"lr\"\nkind = \"logistic_regression\"\nthreshold = \"f1\"\n",
        "[[models]]\nname = \"lr-raw\"\nkind = \"logistic_regression\"\n",
        "[[models]]\nname = \"nb\"\nkind = \"naive_bayes\"\ncalibration = \"isotonic\"\n",
        "[[models]]\nkind = \"random_forest\"\nn_trees = 15\ncalibration = \"platt\"\nthreshold = \"precision>=0.6\"\n",
        "[[models]]\nkind = \"voting\"\nmembers = [\"lr-raw\", \"nb\"]\nthreshold = \"balanced_accuracy\"\n",
    ));
    if cfg!(feature = "xgboost") {
        sweep.push_str("[[models]]\nkind = \"xgboost\"\nn_rounds = 20\ncalibration = \"isotonic\"\nthreshold = \"0.3\"\n");
    }
    let config = config("classification").replace("target = \"quality\"", "target = \"good\"");
    let cfg = write_config(d.path(), &config, &sweep);
    let report = sweep_json(d.path(), &cfg, &[]);
    let runs = report["runs"].as_array().unwrap();
    let read = pyfunc_matches_predict(d.path(), runs, true);
    // The F1 threshold is in force in the MLflow model: some rows are "yes" below 0.5.
    let lr = &read["predictions"][format!("runs:/{}/model", runs[0]["run_uuid"].as_str().unwrap())];
    let below = (lr["prediction"].as_array().unwrap().iter())
        .zip(lr["proba_yes"].as_array().unwrap())
        .filter(|(label, p)| *label == "yes" && p.as_f64().unwrap() < 0.5)
        .count();
    assert!(below > 0, "{lr}");
}

/// The version of the run with the best mean accuracy in a sweep report.
fn best_run(report: &Value) -> String {
    let accuracy = |r: &&Value| r["metrics"]["accuracy"]["mean"].as_f64().unwrap();
    let runs = report["runs"].as_array().unwrap();
    let best = runs
        .iter()
        .max_by(|a, b| accuracy(a).total_cmp(&accuracy(b)))
        .unwrap();
    best["version"].as_str().unwrap().to_string()
}

#[test]
fn registry_aliases_reach_pyfunc_runner_predict_and_serving() {
    let d = tempfile::tempdir().unwrap();
    write_data(d.path());
    let sweep = "[[models]]\nkind = \"decision_tree\"\nmax_depth = 1\n[[models]]\nkind = \"random_forest\"\nn_trees = 15\n";
    let cfg = write_config(d.path(), &config("classification"), sweep);
    let report = sweep_json(d.path(), &cfg, &["--register-best", "white@champion"]);
    let best = best_run(&report);
    // A second sweep's best becomes version 2, without an alias.
    let out = run_ok(
        runner(d.path())
            .args(["sweep"])
            .arg(&cfg)
            .args(["--register-best", "white"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("registered as white version 2"), "{err}");
    // A run that does not exist cannot be registered: named, exit 2.
    let refused = runner(d.path())
        .args(["register", "t99", "--name", "white"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("t99") && why.contains("no training run"),
        "{why}"
    );
    run_ok(runner(d.path()).args(["register", "t1", "--name", "white", "--alias", "stump"]));
    let read = pyfunc(
        d.path(),
        "new.csv",
        &["models:/white@champion".into(), "models:/white/3".into()],
    );
    let registered = &read["registered"]["white"];
    assert_eq!(registered["aliases"]["champion"], 1);
    assert_eq!(registered["aliases"]["stump"], 3);
    assert_eq!(registered["versions"].as_array().unwrap().len(), 3);
    let champion = runner_predict(d.path(), "models:/white@champion", true);
    assert_eq!(champion, runner_predict(d.path(), &best, true));
    assert_same(
        "champion",
        &read["predictions"]["models:/white@champion"],
        &champion,
    );
    let stump = runner_predict(d.path(), "models:/white/3", true);
    assert_eq!(stump, runner_predict(d.path(), "t1", true));
    assert_same("version 3", &read["predictions"]["models:/white/3"], &stump);
    let missing = runner(d.path())
        .args(["predict", "models:/white@nobody", "--input", "new.csv"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    // `mlflow models serve` answers /invocations with the same predictions.
    let served = serve_and_invoke(d.path(), "models:/white@champion");
    assert_same("served", &served, &champion);
}

/// Starts `mlflow models serve -m MODEL --env-manager local` on a free loopback port, posts
/// new.csv as a `dataframe_split` and returns the predictions as columns.
fn serve_and_invoke(dir: &Path, model: &str) -> Value {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let venv_bin = mlflow_python().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut server = Command::new(venv_bin.join("mlflow"))
        .args(["models", "serve", "-m", model, "--env-manager", "local"])
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .env("MLFLOW_TRACKING_URI", sqlite_uri(&dir.join("mlflow.db")))
        .env("PATH", path)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("mlflow starts");
    let script = format!(
        r#"
import json, sys, time, urllib.request
import pandas as pd
frame = pd.read_csv({input:?}, dtype={{"total sulfur dioxide": "float64"}})
body = json.dumps({{"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}}).encode()
for _ in range(240):
    try:
        urllib.request.urlopen("http://127.0.0.1:{port}/health", timeout=1)
        break
    except Exception:
        time.sleep(0.25)
req = urllib.request.Request("http://127.0.0.1:{port}/invocations", data=body, headers={{"Content-Type": "application/json"}})
rows = json.load(urllib.request.urlopen(req, timeout=60))["predictions"]
print(json.dumps({{k: [r[k] for r in rows] for k in rows[0]}}))
"#,
        input = dir.join("new.csv").display().to_string(),
    );
    let out = Command::new(mlflow_python()).args(["-c", &script]).output();
    // The server runs uvicorn in a child: stop its whole process group.
    unsafe { libc::kill(-(server.id() as i32), libc::SIGTERM) };
    let _ = server.wait();
    let out = out.expect("python starts");
    assert!(
        out.status.success(),
        "serving failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
