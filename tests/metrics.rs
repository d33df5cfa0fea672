//! Task metrics as a user sees them: a binary problem is scored and can be ranked by ROC-AUC
//! and PR-AUC, and the real MLflow client reads them.
mod common;

use common::*;

#[test]
fn a_binary_sweep_ranks_by_roc_auc_and_logs_pr_auc() {
    let d = tempfile::tempdir().unwrap();
    // Grades 5 and 6 only: two classes.
    let cfg = write_config(
        d.path(),
        "experiment = \"wine-binary\"\nsweeps = [\"sweep.toml\"]\nprimary_metric = \"roc_auc\"\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[etl]\nfilter = [\"quality >= 5\", \"quality <= 6\"]\nscale = \"standard\"\n[cv]\nfolds = 3\n",
        "[[models]]\nkind = \"logistic_regression\"\n[[models]]\nkind = \"decision_tree\"\nmax_depth = 1\n",
    );
    let report = sweep_json(d.path(), &cfg, &[]);
    assert_eq!(report["primary_metric"], "roc_auc");
    assert_eq!(report["higher_is_better"], true);
    let auc = |r: &serde_json::Value, key: &str| r["metrics"][key]["mean"].as_f64().unwrap();
    let runs = report["runs"].as_array().unwrap();
    for r in runs {
        for key in ["roc_auc", "pr_auc"] {
            let v = auc(r, key);
            assert!(v > 0.5 && v <= 1.0, "{} {key} = {v}", r["name"]);
        }
        assert!(r["fold_metrics"]["roc_auc"].as_array().unwrap().len() == 3);
    }
    // A one-split stump ranks a wine's quality worse than logistic regression on every feature.
    let (lr, stump) = (auc(&runs[0], "roc_auc"), auc(&runs[1], "roc_auc"));
    assert!(lr > stump, "logistic {lr} vs stump {stump}");
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let logged = experiment_runs(&store, "wine-binary");
    let lr_run = logged
        .iter()
        .find(|r| r["run_id"] == runs[0]["run_uuid"])
        .expect("the logistic run is in MLflow");
    assert!(lr_run["metrics"]["roc_auc"].as_f64().is_some(), "{lr_run}");
    assert!(
        lr_run["metrics"]["fold0/pr_auc"].as_f64().is_some(),
        "{lr_run}"
    );
}

/// A continuous target gets a handful of quantile bins for its per-bin MAE, not one per value.
#[test]
fn a_continuous_target_gets_quantile_bins_and_the_users_edges() {
    let d = tempfile::tempdir().unwrap();
    let config = |extra: &str| {
        format!("experiment = \"alcohol\"\nsweeps = [\"sweep.toml\"]\ntask = \"regression\"\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"alcohol\"\n[cv]\nfolds = 3\n{extra}")
    };
    let sweep = "[[models]]\nkind = \"linear\"\n";
    let bins = |report: &serde_json::Value| -> Vec<String> {
        let metrics = report["runs"][0]["metrics"].as_object().unwrap();
        metrics
            .keys()
            .filter(|k| k.starts_with("mae_bin"))
            .cloned()
            .collect()
    };
    let cfg = write_config(d.path(), &config(""), sweep);
    let report = sweep_json(d.path(), &cfg, &[]);
    assert_eq!(
        bins(&report),
        [
            "mae_bin_q1",
            "mae_bin_q2",
            "mae_bin_q3",
            "mae_bin_q4",
            "mae_bin_q5"
        ]
    );
    let cfg = write_config(
        d.path(),
        &config("regression_bin_edges = [10.0, 12.0]\n"),
        sweep,
    );
    let report = sweep_json(d.path(), &cfg, &[]);
    assert_eq!(bins(&report), ["mae_bin_q1", "mae_bin_q2", "mae_bin_q3"]);
    let cfg = write_config(
        d.path(),
        &config("regression_bin_edges = [12.0, 10.0]\n"),
        sweep,
    );
    let out = runner(d.path()).arg("sweep").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cv.regression_bin_edges"));
}
