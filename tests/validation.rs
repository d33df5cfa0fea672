//! Bad input fails before anything trains: exit code 2, a message naming the file, line, key and
//! what would be valid, and no store written.
mod common;
use common::*;
use std::path::Path;

const SWEEP: &str = "[[models]]\nkind = \"naive_bayes\"\n";

fn config(extra_top: &str, data: &str, cv: &str) -> String {
    format!(
        "experiment = \"e\"\n{extra_top}sweeps = [\"sweep.toml\"]\n\n[data]\n{data}\n[cv]\n{cv}\n"
    )
}

const DATA: &str = "source = \"builtin:winequality-red\"\ntarget = \"quality\"\n";

/// Runs `runner sweep` and expects a config error; returns stderr.
fn fails(dir: &Path, cfg: &str, sweep: &str) -> String {
    let path = write_config(dir, cfg, sweep);
    let out = runner(dir).args(["sweep"]).arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, got {:?}: {err}",
        out.status
    );
    assert!(
        !dir.join("mlflow.db").exists(),
        "nothing may be written on a config error"
    );
    err
}

#[test]
fn unknown_config_key() {
    let d = tempfile::tempdir().unwrap();
    let e = fails(d.path(), &config("sed = 4\n", DATA, "folds = 5"), SWEEP);
    assert!(e.contains("config.toml:2:1"), "{e}");
    assert!(
        e.contains("unknown field `sed`") && e.contains("`seed`"),
        "{e}"
    );
}

#[test]
fn wrong_type() {
    let d = tempfile::tempdir().unwrap();
    let e = fails(d.path(), &config("", DATA, "folds = \"five\""), SWEEP);
    assert!(
        e.contains("config.toml:9:9") && e.contains("cv.folds"),
        "{e}"
    );
    assert!(
        e.contains("invalid type: string \"five\", expected usize"),
        "{e}"
    );
}

#[test]
fn out_of_range_value() {
    let d = tempfile::tempdir().unwrap();
    let e = fails(d.path(), &config("", DATA, "folds = 1"), SWEEP);
    assert!(
        e.contains("config.toml:9:1") && e.contains("cv.folds") && e.contains("2..=100"),
        "{e}"
    );
}

#[test]
fn out_of_range_from_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let path = write_config(d.path(), &config("", DATA, "folds = 5"), SWEEP);
    let out = runner(d.path())
        .args(["sweep"])
        .arg(&path)
        .args(["--set", "cv.folds=1"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        e.contains("--set") && e.contains("cv.folds") && e.contains("2..=100"),
        "{e}"
    );
}

#[test]
fn unknown_model_kind() {
    let d = tempfile::tempdir().unwrap();
    let e = fails(
        d.path(),
        &config("", DATA, "folds = 5"),
        "[[models]]\nkind = \"naive_bayes\"\n\n[[models]]\nkind = \"xgbost\"\n",
    );
    assert!(
        e.contains("sweep.toml:5:1") && e.contains("models[1].kind"),
        "{e}"
    );
    assert!(
        e.contains("\"random_forest\"") && e.contains("\"xgbost\""),
        "{e}"
    );
}

#[test]
fn unknown_and_out_of_range_model_parameters() {
    let d = tempfile::tempdir().unwrap();
    let e = fails(
        d.path(),
        &config("", DATA, "folds = 5"),
        "[[models]]\nkind = \"random_forest\"\nn_tres = 10\n",
    );
    assert!(
        e.contains("sweep.toml:3:1") && e.contains("models[0].n_tres") && e.contains("\"n_trees\""),
        "{e}"
    );
    let e = fails(
        d.path(),
        &config("", DATA, "folds = 5"),
        "[[models]]\nkind = \"random_forest\"\nn_trees = [10, 0]\n",
    );
    assert!(
        e.contains("sweep.toml:3:1") && e.contains("integer in 1..=5000, got 0"),
        "{e}"
    );
    let e = fails(
        d.path(),
        &config("", DATA, "folds = 5"),
        "[[models]]\nkind = \"svm\"\nkernel = \"rbf2\"\n",
    );
    assert!(e.contains("one of \"rbf\", \"linear\", \"poly\""), "{e}");
}

#[test]
fn a_model_that_cannot_do_the_task() {
    let d = tempfile::tempdir().unwrap();
    let e = fails(
        d.path(),
        &config("task = \"regression\"\n", DATA, "folds = 5"),
        "[[models]]\nkind = \"naive_bayes\"\n",
    );
    assert!(
        e.contains("cannot do regression") && e.contains("\"linear\""),
        "{e}"
    );
}

#[test]
fn missing_data_file() {
    let d = tempfile::tempdir().unwrap();
    let e = fails(
        d.path(),
        &config(
            "",
            "source = \"nowhere.csv\"\ntarget = \"quality\"\n",
            "folds = 5",
        ),
        SWEEP,
    );
    assert!(
        e.contains("config.toml:5:1")
            && e.contains("data.source")
            && e.contains("\"nowhere.csv\" not found"),
        "{e}"
    );
}

#[test]
fn missing_target_column() {
    let d = tempfile::tempdir().unwrap();
    let e = fails(
        d.path(),
        &config(
            "",
            "source = \"builtin:winequality-red\"\ntarget = \"grade\"\n",
            "folds = 5",
        ),
        SWEEP,
    );
    assert!(
        e.contains("data.target")
            && e.contains("\"grade\" does not exist")
            && e.contains("\"quality\""),
        "{e}"
    );
}

#[test]
fn missing_sweep_file_and_bad_toml() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config("", DATA, "folds = 5").replace("sweep.toml", "nope.toml");
    let e = fails(d.path(), &cfg, SWEEP);
    assert!(e.contains("\"nope.toml\" not found"), "{e}");
    let e = fails(
        d.path(),
        &config("", DATA, "folds = 5"),
        "[[models]\nkind = 1\n",
    );
    assert!(e.contains("sweep.toml:1:"), "{e}");
}

#[test]
fn validate_prints_expanded_configs_and_trains_nothing() {
    let d = tempfile::tempdir().unwrap();
    let path = write_config(
        d.path(),
        &config("", DATA, "folds = 5"),
        "[[models]]\nkind = \"knn\"\nk = [3, 5, 7]\n",
    );
    let out = run_ok(
        runner(d.path())
            .args(["validate"])
            .arg(&path)
            .args(["--json"]),
    );
    let v = stdout_json(&out);
    assert_eq!(v["models"].as_array().unwrap().len(), 3);
    assert_eq!(v["models"][2]["name"], "knn[k=7]");
    assert_eq!(
        v["models"][0]["params"]["weights"], "uniform",
        "defaults are explicit"
    );
    assert_eq!(v["task"], "classification");
    assert!(!d.path().join("mlflow.db").exists());
}

#[test]
fn models_lists_every_kind_with_ranges() {
    let d = tempfile::tempdir().unwrap();
    let v = stdout_json(&run_ok(runner(d.path()).args(["models", "--json"])));
    assert_eq!(v["schema"], 2);
    let kinds: Vec<&str> = v["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    for k in [
        "decision_tree",
        "random_forest",
        "logistic_regression",
        "svm",
        "knn",
        "naive_bayes",
        "linear",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let rf = v["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "random_forest")
        .unwrap();
    let n = rf["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "n_trees")
        .unwrap();
    assert_eq!(n["default"], 100);
    assert_eq!(n["type"], "integer in 1..=5000");
}

/// A kernel SVM on a table too large for it is announced before anything trains, with an
/// estimate; other kinds on the same table, and the SVM on a small one, are not.
#[test]
fn a_kernel_svm_on_a_large_table_is_warned_with_an_estimate() {
    let d = tempfile::tempdir().unwrap();
    let mut csv = String::from("a,b,c,y\n");
    for i in 0..80_000u64 {
        let (a, b) = ((i * 7919) % 1000, (i * 104_729) % 997);
        csv.push_str(&format!("{a},{b},{},{}\n", (a + b) % 13, (a + b) % 2));
    }
    std::fs::write(d.path().join("big.csv"), csv).unwrap();
    let config = "experiment = \"big\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"big.csv\"\ntarget = \"y\"\n";
    let warned = |sweep: &str| {
        let cfg = write_config(d.path(), config, sweep);
        let out = run_ok(runner(d.path()).args(["validate"]).arg(&cfg));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err =
        warned("[[models]]\nkind = \"svm\"\nname = \"rbf\"\n[[models]]\nkind = \"naive_bayes\"\n");
    assert!(
        err.contains("warning: rbf: a kernel SVM on 80000 rows will take about"),
        "{err}"
    );
    assert!(!err.contains("naive_bayes"), "{err}");
    assert!(!warned("[[models]]\nkind = \"naive_bayes\"\n").contains("warning"));
    assert!(
        !d.path().join("mlflow.db").exists(),
        "validate writes nothing"
    );
}
