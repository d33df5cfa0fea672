//! XGBoost and LightGBM from the real libraries: their saved models predict the same in the
//! Python packages, learning curves reach the store, early stopping keeps the best round.
#![cfg(all(feature = "xgboost", feature = "lightgbm"))]
mod common;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn gbm_python() -> PathBuf {
    PathBuf::from(
        std::env::var("RUNNER_GBM_PYTHON")
            .expect("RUNNER_GBM_PYTHON is set by tests/run.sh (tests/gbm-env.sh)"),
    )
}

const CONFIG: &str = "experiment = \"gbm\"\nseed = 42\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[cv]\nfolds = 3\n";

#[test]
fn saved_models_predict_the_same_in_the_python_packages() {
    let d = tempfile::tempdir().unwrap();
    let sweep = "[[models]]\nkind = \"xgboost\"\nname = \"xgb\"\nn_rounds = 60\nmax_depth = 5\nlearning_rate = 0.2\n[[models]]\nkind = \"lightgbm\"\nname = \"lgbm\"\nn_rounds = 60\nlearning_rate = 0.2\nclass_weight = \"balanced\"\n";
    let cfg = write_config(d.path(), CONFIG, sweep);
    let report = stdout_json(&run_ok(
        runner(d.path()).args(["sweep"]).arg(&cfg).args(["--json"]),
    ));
    run_ok(runner(d.path()).args(["reload-etl", "v1", "--out", "data.csv"]));
    for run in report["runs"].as_array().unwrap() {
        assert_eq!(run["status"], "FINISHED", "{}", run["error"]);
        // Feature importance from the library (XGBoost gain, LightGBM split and gain): on this
        // data alcohol is among the three most useful features.
        let imp = std::fs::read_to_string(artifact(
            d.path(),
            run["run_uuid"].as_str().unwrap(),
            &format!(
                "feature_importance_{}.csv",
                run["version"].as_str().unwrap()
            ),
        ))
        .unwrap();
        let mut rows: Vec<(String, f64)> = imp
            .lines()
            .skip(1)
            .map(|l| {
                let c: Vec<&str> = l.split(',').collect();
                (
                    c[0].trim_matches('"').to_string(),
                    c[c.len() - 1].parse().unwrap(),
                )
            })
            .collect();
        assert_eq!(rows.len(), 11);
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert!(
            rows[..3].iter().any(|(n, _)| n == "alcohol"),
            "{}: {rows:?}",
            run["kind"]
        );
        let (kind, tv, id) = (
            run["kind"].as_str().unwrap(),
            run["version"].as_str().unwrap(),
            run["run_uuid"].as_str().unwrap(),
        );
        let model = artifact(
            d.path(),
            id,
            &format!(
                "model_{tv}.{}",
                if kind == "xgboost" { "json" } else { "txt" }
            ),
        );
        let preds = artifact(d.path(), id, &format!("predictions_{tv}.csv"));
        let out = Command::new(gbm_python())
            .arg(repo().join("tests/gbm_check.py"))
            .args([kind])
            .arg(&model)
            .arg(d.path().join("data.csv"))
            .arg("quality")
            .arg(&preds)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["rows"], 1599);
        assert!(r["max_abs_diff"].as_f64().unwrap() < 1e-6, "{kind}: {r}");
        assert_eq!(r["labels_equal"], true, "{kind}: {r}");
    }
}

#[test]
fn learning_curves_reach_the_store_and_early_stopping_keeps_the_best_round() {
    let d = tempfile::tempdir().unwrap();
    let sweep = "[[models]]\nkind = \"xgboost\"\nname = \"xgb\"\nn_rounds = 40\n[[models]]\nkind = \"lightgbm\"\nname = \"lgbm-es\"\nn_rounds = 2000\nlearning_rate = 0.3\nearly_stopping_rounds = 10\n";
    let cfg = write_config(d.path(), CONFIG, sweep);
    let report = stdout_json(&run_ok(
        runner(d.path()).args(["sweep"]).arg(&cfg).args(["--json"]),
    ));
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let runs = experiment_runs(&store, "gbm");
    let xgb = runs
        .iter()
        .find(|r| r["run_name"].as_str().unwrap().ends_with("-xgb"))
        .unwrap();
    let train: Vec<f64> = xgb["history"]["fold0/train_mlogloss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[1].as_f64().unwrap())
        .collect();
    let steps: Vec<i64> = xgb["history"]["fold0/train_mlogloss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_i64().unwrap())
        .collect();
    assert_eq!(steps, (0..40).collect::<Vec<_>>(), "step = boosting round");
    assert!(
        train[39] < train[0] * 0.5,
        "the training loss falls: {} -> {}",
        train[0],
        train[39]
    );
    assert_eq!(
        xgb["history"]["fold2/valid_mlogloss"]
            .as_array()
            .unwrap()
            .len(),
        40
    );
    assert_eq!(
        xgb["history"]["refit/train_mlogloss"]
            .as_array()
            .unwrap()
            .len(),
        40
    );
    // Early stopping on an inner split: far fewer than 2000 rounds, the best one kept.
    let es = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "lgbm-es")
        .unwrap();
    let tv = es["version"].as_str().unwrap();
    let wrapper: Value = read_json(&artifact(
        d.path(),
        es["run_uuid"].as_str().unwrap(),
        &format!("runner_model_{tv}.json"),
    ));
    let best = wrapper["fitted"]["best_round"].as_i64().unwrap();
    let lgbm = runs
        .iter()
        .find(|r| r["run_name"].as_str().unwrap().ends_with("-lgbm-es"))
        .unwrap();
    let valid = lgbm["history"]["refit/valid_mlogloss"].as_array().unwrap();
    assert!(
        valid.len() < 200,
        "stopped early after {} rounds",
        valid.len()
    );
    assert_eq!(
        valid.len() as i64,
        best + 11,
        "stops 10 rounds after the best"
    );
    let losses: Vec<f64> = valid.iter().map(|s| s[1].as_f64().unwrap()).collect();
    let min = losses.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(
        losses[best as usize], min,
        "the kept round has the lowest validation loss"
    );
    let text = std::fs::read_to_string(artifact(
        d.path(),
        es["run_uuid"].as_str().unwrap(),
        &format!("model_{tv}.txt"),
    ))
    .unwrap();
    assert_eq!(
        text.matches("Tree=").count() as i64,
        (best + 1) * 6,
        "the saved model has best + 1 rounds of 6 class trees"
    );
}

#[test]
fn red_wine_gbm_targets() {
    let d = tempfile::tempdir().unwrap();
    let clf = stdout_json(&run_ok(
        runner(d.path())
            .args(["sweep"])
            .arg(repo().join("configs/wine.toml"))
            .args(["--only", "xgboost", "--only", "lightgbm", "--json"]),
    ));
    for run in clf["runs"].as_array().unwrap() {
        // 200 rounds, depth 6, learning rate 0.1, stratified 5-fold CV, seed 42.
        assert!(
            run["metrics"]["accuracy"]["mean"].as_f64().unwrap() >= 0.67,
            "{} {}",
            run["name"],
            run["metrics"]["accuracy"]
        );
    }
    let reg = stdout_json(&run_ok(
        runner(d.path())
            .args(["sweep"])
            .arg(repo().join("configs/wine-regression.toml"))
            .args(["--only", "xgboost", "--only", "lightgbm", "--json"]),
    ));
    for run in reg["runs"].as_array().unwrap() {
        assert!(
            run["metrics"]["mae"]["mean"].as_f64().unwrap() <= 0.43,
            "{} {}",
            run["name"],
            run["metrics"]["mae"]
        );
    }
}

/// With `etl.scale = "standard"`, the boosters still train on raw columns and carry their
/// names: `xgboost.Booster(model_file=...)` and `lightgbm.Booster(model_file=...)` on the
/// native file of the run's MLflow model (its xgboost / lightgbm flavour) and a raw pandas
/// frame give what `runner predict` gives. A run records that it skipped the scaling.
#[test]
fn native_boosters_predict_raw_named_columns_as_runner_does() {
    let d = tempfile::tempdir().unwrap();
    let config = format!("{CONFIG}[etl]\nscale = \"standard\"\n");
    let sweep = "[[models]]\nkind = \"xgboost\"\nname = \"xgb\"\nn_rounds = 40\n[[models]]\nkind = \"lightgbm\"\nname = \"lgbm\"\nn_rounds = 40\n[[models]]\nkind = \"logistic_regression\"\nname = \"scaled\"\n";
    let cfg = write_config(d.path(), &config, sweep);
    let report = sweep_json(d.path(), &cfg, &[]);
    run_ok(runner(d.path()).args(["reload-etl", "v1", "--out", "data.csv"]));
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let logged = experiment_runs(&store, "gbm");
    for run in report["runs"].as_array().unwrap() {
        let (kind, tv, id) = (
            run["kind"].as_str().unwrap(),
            run["version"].as_str().unwrap(),
            run["run_uuid"].as_str().unwrap(),
        );
        let mlflow_run = logged.iter().find(|r| r["run_id"] == id).unwrap();
        let scale = mlflow_run["params"]["etl.scale"].as_str().unwrap();
        if kind == "logistic_regression" {
            assert_eq!(scale, "standard", "the other kinds keep the scaling");
            continue;
        }
        assert_eq!(scale, "none", "{kind} trains on unscaled inputs");
        assert!(
            mlflow_run["tags"]["runner.unscaled"]
                .as_str()
                .unwrap()
                .contains("unscaled"),
            "{mlflow_run}"
        );
        // The run's MLflow model carries the booster as its native flavour.
        let model_dir = files_under(&d.path().join("mlruns"))
            .into_iter()
            .find(|p| {
                p.ends_with("MLmodel")
                    && std::fs::read_to_string(p)
                        .unwrap()
                        .contains(&format!("run_id: \"{id}\""))
            })
            .expect("the run logged an MLflow model")
            .parent()
            .unwrap()
            .to_path_buf();
        let mlmodel = std::fs::read_to_string(model_dir.join("MLmodel")).unwrap();
        assert!(mlmodel.contains(&format!("\n  {kind}:\n")), "{mlmodel}");
        let file = if kind == "xgboost" {
            "model.json"
        } else {
            "model.lgb"
        };
        let model = model_dir.join(file);
        let out = Command::new(gbm_python())
            .arg(repo().join("tests/native_check.py"))
            .arg(kind)
            .arg(&model)
            .arg(d.path().join("data.csv"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let native: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(native["feature_names"].as_array().unwrap().len(), 11);
        let predicted =
            run_ok(runner(d.path()).args(["predict", tv, "--input", "data.csv", "--proba"]));
        let text = String::from_utf8(predicted.stdout).unwrap();
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').skip(2).map(|v| v.parse().unwrap()).collect())
            .collect();
        let proba = native["proba"].as_array().unwrap();
        assert_eq!(proba.len(), rows.len());
        for (i, (n, r)) in proba.iter().zip(&rows).enumerate() {
            for (a, b) in n.as_array().unwrap().iter().zip(r) {
                let a = a.as_f64().unwrap();
                assert!(
                    (a - b).abs() < 1e-6,
                    "{kind} row {i}: python {a}, runner {b}"
                );
            }
        }
    }
}
