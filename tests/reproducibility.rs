//! `runner replay tN --check` reproduces every model kind bit for bit from the store alone;
//! `runner reload-etl vN` verifies its input and refuses changed data.
mod common;
use common::*;
use std::path::Path;

fn copy_config(dir: &Path, name: &str, sweep: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("configs")).unwrap();
    std::fs::create_dir_all(dir.join("sweeps")).unwrap();
    std::fs::copy(
        repo().join("sweeps").join(sweep),
        dir.join("sweeps").join(sweep),
    )
    .unwrap();
    let p = dir.join("configs").join(name);
    std::fs::copy(repo().join("configs").join(name), &p).unwrap();
    p
}

#[test]
fn every_model_kind_replays_bit_for_bit_after_the_config_is_deleted() {
    let d = tempfile::tempdir().unwrap();
    let clf = copy_config(d.path(), "wine.toml", "wine-classifiers.toml");
    let reg = copy_config(d.path(), "wine-regression.toml", "wine-regressors.toml");
    let a = stdout_json(&run_ok(
        runner(d.path()).args(["sweep"]).arg(&clf).args(["--json"]),
    ));
    let b = stdout_json(&run_ok(
        runner(d.path()).args(["sweep"]).arg(&reg).args(["--json"]),
    ));
    // Replays must not need the config or sweep files.
    std::fs::remove_dir_all(d.path().join("configs")).unwrap();
    std::fs::remove_dir_all(d.path().join("sweeps")).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for run in a["runs"]
        .as_array()
        .unwrap()
        .iter()
        .chain(b["runs"].as_array().unwrap())
    {
        let v = run["version"].as_str().unwrap();
        let out = run_ok(runner(d.path()).args(["replay", v, "--check", "--json"]));
        let r = stdout_json(&out);
        assert_eq!(
            r["identical"], true,
            "{v} ({}) did not replay bit for bit: {r}",
            run["kind"]
        );
        assert_eq!(r["original"], v);
        kinds.insert(format!(
            "{}/{}",
            run["kind"].as_str().unwrap(),
            if a["runs"].as_array().unwrap().contains(run) {
                "clf"
            } else {
                "reg"
            }
        ));
    }
    for want in [
        "decision_tree/clf",
        "random_forest/clf",
        "logistic_regression/clf",
        "svm/clf",
        "knn/clf",
        "naive_bayes/clf",
        "linear/reg",
        "decision_tree/reg",
        "random_forest/reg",
        "svm/reg",
        "knn/reg",
    ] {
        assert!(kinds.contains(want), "{want} was not replayed: {kinds:?}");
    }
    // Replays are runs of their own, tagged with what they replay.
    let runs = stdout_json(&run_ok(runner(d.path()).args(["runs", "--json"])));
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        2 * (a["runs"].as_array().unwrap().len() + b["runs"].as_array().unwrap().len())
    );
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let replays: Vec<_> = store["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["runs"].as_array().unwrap().iter())
        .filter(|r| r["tags"]["runner.replay_of"].is_string())
        .collect();
    assert_eq!(replays.len(), runs["runs"].as_array().unwrap().len() / 2);
}

#[test]
fn check_fails_when_a_recorded_metric_differs() {
    let d = tempfile::tempdir().unwrap();
    run_ok(
        runner(d.path())
            .args(["sweep"])
            .arg(repo().join("configs/wine.toml"))
            .args(["--only", "gaussian-nb"]),
    );
    // Tamper with the recorded fold accuracies, as if the original run had produced other numbers.
    let conn = rusqlite::Connection::open(d.path().join("mlflow.db")).unwrap();
    let summary: String = conn
        .query_row(
            "SELECT summary_json FROM runner_training_runs WHERE version = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut s: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let acc = s["fold_metrics"]["accuracy"][0].as_f64().unwrap();
    s["fold_metrics"]["accuracy"][0] = serde_json::json!(acc + 1e-12);
    conn.execute(
        "UPDATE runner_training_runs SET summary_json = ?1 WHERE version = 1",
        [s.to_string()],
    )
    .unwrap();
    let out = runner(d.path())
        .args(["replay", "t1", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not reproduce t1 bit for bit"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("NO"));
}

#[test]
fn replay_with_a_change_records_it_and_diff_shows_it() {
    let d = tempfile::tempdir().unwrap();
    run_ok(
        runner(d.path())
            .args(["sweep"])
            .arg(repo().join("configs/wine.toml"))
            .args(["--only", "tree"]),
    );
    let r = stdout_json(&run_ok(
        runner(d.path()).args(["replay", "t1", "--set", "seed=7", "--json"]),
    ));
    assert_eq!(r["changes"][0], "seed: 42 -> 7");
    assert_eq!(r["identical"], false, "another seed gives other folds");
    let show = stdout_json(&run_ok(runner(d.path()).args(["show", "t2", "--json"])));
    let tags: std::collections::BTreeMap<String, String> = show["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t[0].as_str().unwrap().into(), t[1].as_str().unwrap().into()))
        .collect();
    assert_eq!(tags["runner.replay_of"], "t1");
    assert_eq!(tags["runner.replay_changes"], "seed: 42 -> 7");
    let diff = stdout_json(&run_ok(
        runner(d.path()).args(["diff", "t1", "t2", "--json"]),
    ));
    let keys: Vec<&str> = diff["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"plan.seed") && keys.contains(&"folds_sha256"),
        "{keys:?}"
    );
    let bad = runner(d.path())
        .args(["replay", "t1", "--set", "n_tres=3"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"max_depth\""));
}

#[test]
fn reload_etl_verifies_the_input_and_follows_a_moved_copy() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("white.csv");
    std::fs::copy(repo().join("tests/data/winequality-white.csv"), &data).unwrap();
    let cfg = "experiment = \"w\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"white.csv\"\ntarget = \"quality\"\n[etl]\nfilter = [\"alcohol > 9\"]\nscale = \"standard\"\n[cv]\nfolds = 3\n";
    let path = write_config(d.path(), cfg, "[[models]]\nkind = \"naive_bayes\"\n");
    run_ok(runner(d.path()).args(["sweep"]).arg(&path));
    let v = stdout_json(&run_ok(runner(d.path()).args([
        "reload-etl",
        "v1",
        "--json",
        "--out",
        "v1.parquet",
    ])));
    assert_eq!(v["verified"], true);
    let rows = v["n_rows"].as_u64().unwrap();
    assert!(
        rows > 4000 && rows < 4898,
        "the filter dropped some rows: {rows}"
    );
    // The rebuilt table, written as Parquet, is a valid source with the same rows.
    let cfg2 = "experiment = \"w2\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"v1.parquet\"\ntarget = \"quality\"\n";
    let p2 = write_config(d.path(), cfg2, "[[models]]\nkind = \"naive_bayes\"\n");
    let r = stdout_json(&run_ok(
        runner(d.path())
            .args(["validate"])
            .arg(&p2)
            .args(["--json"]),
    ));
    assert_eq!(r["rows"].as_u64().unwrap(), rows);

    // Moved: missing at the recorded path, fine with --input.
    let moved = d.path().join("moved.csv");
    std::fs::rename(&data, &moved).unwrap();
    let out = runner(d.path())
        .args(["reload-etl", "v1"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("white.csv") && e.contains("missing") && e.contains("--input"),
        "{e}"
    );
    run_ok(
        runner(d.path())
            .args(["reload-etl", "v1", "--input"])
            .arg(&moved),
    );
    run_ok(
        runner(d.path())
            .args(["replay", "t1", "--check", "--input"])
            .arg(&moved),
    );

    // Modified: refused, naming the file and both hashes.
    let mut text = std::fs::read_to_string(&moved).unwrap();
    text = text.replacen("\n7,0.27,0.36,20.7", "\n7,0.28,0.36,20.7", 1);
    std::fs::write(&moved, text).unwrap();
    let out = runner(d.path())
        .args(["reload-etl", "v1", "--input"])
        .arg(&moved)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("moved.csv") && e.contains("recorded sha256") && e.contains("current sha256"),
        "{e}"
    );
}

/// A copy of the store that runner at 49265f8 wrote (tests/data/store-49265f8), its artifact
/// locations moved into `dir` as a user moving the folder would.
fn old_release_store(dir: &Path) -> std::path::PathBuf {
    release_store(dir, "store-49265f8")
}

/// A copy of tests/data/`name`/mlflow.db (written in /tmp/fixture), moved into `dir`.
fn release_store(dir: &Path, name: &str) -> std::path::PathBuf {
    let db = dir.join("mlflow.db");
    std::fs::copy(repo().join("tests/data").join(name).join("mlflow.db"), &db).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    let here = dir.display().to_string();
    c.execute(
        "UPDATE experiments SET artifact_location = replace(artifact_location, '/tmp/fixture', ?1)",
        [&here],
    )
    .unwrap();
    c.execute(
        "UPDATE runs SET artifact_uri = replace(artifact_uri, '/tmp/fixture', ?1)",
        [&here],
    )
    .unwrap();
    db
}

/// Replays runs t1..=t`runs` of the release store `name`, copied into `dir`, with `--check`:
/// each must be identical.
fn replays_bit_for_bit(dir: &Path, name: &str, runs: usize) {
    release_store(dir, name);
    for t in (1..=runs).map(|i| format!("t{i}")) {
        let out = run_ok(runner(dir).args(["replay", &t, "--check", "--json"]));
        assert_eq!(stdout_json(&out)["identical"], true, "{name} {t}");
    }
}

/// Replays runs t1..=t`runs` of the release store `name` ([`replays_bit_for_bit`]), then trains
/// its config and sweep file again with this build: the sweep's report and each run's `metric`
/// (mean) by version, as the real MLflow client reads it.
fn replay_then_train_again(
    name: &str,
    runs: usize,
    experiment: &str,
    metric: &'static str,
) -> (serde_json::Value, impl Fn(&str) -> f64) {
    let d = tempfile::tempdir().unwrap();
    replays_bit_for_bit(d.path(), name, runs);
    for f in ["config.toml", "sweep.toml"] {
        std::fs::copy(
            repo().join("tests/data").join(name).join(f),
            d.path().join(f),
        )
        .unwrap();
    }
    let report = sweep_json(d.path(), &d.path().join("config.toml"), &["--jobs", "1"]);
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let stored = experiment_runs(&store, experiment);
    let accuracy = move |version: &str| {
        stored
            .iter()
            .find(|r| r["tags"]["runner.training_version"] == version)
            .unwrap()["metrics"][metric]
            .as_f64()
            .unwrap()
    };
    (report, accuracy)
}

/// Trees and boosters recorded before they trained on unscaled inputs (algorithm version 1,
/// `etl.scale = "standard"`) replay with the scaling they were trained with, bit for bit; the
/// same configs trained now (version 2, unscaled) score differently, so the replay really took
/// the old path.
#[test]
#[cfg(all(feature = "xgboost", feature = "lightgbm"))]
fn scaled_tree_runs_of_the_release_before_algorithm_2_replay_bit_for_bit() {
    let (report, accuracy) =
        replay_then_train_again("store-9fbde2c", 4, "scaled-trees", "accuracy");
    let new_tree = report["runs"][0]["version"].as_str().unwrap();
    assert_eq!(report["runs"][0]["kind"], "decision_tree");
    assert_ne!(
        accuracy("t1"),
        accuracy(new_tree),
        "version 2 trains unscaled"
    );
}

/// The release store's t1 and t2 against the first two runs the sweep trained again: each pair
/// scores differently (by `metric`), so the replays really took the old arithmetic.
fn assert_t1_and_t2_scored_differently_now(
    report: &serde_json::Value,
    metric: &impl Fn(&str) -> f64,
) {
    for (i, old) in ["t1", "t2"].iter().enumerate() {
        let new_version = report["runs"][i]["version"].as_str().unwrap();
        assert_ne!(metric(old), metric(new_version), "{old} and {new_version}");
    }
}

/// Trees and forests recorded with the exact CART (algorithm version 2, before histogram splits)
/// replay with it, bit for bit, and a logistic regression recorded with the summed loss's
/// tolerance (version 1) with that; the same trees trained now (on histograms) score
/// differently, so the replay really took the exact path. (The logistic regression stops at
/// the same iterate on the wine with either tolerance: the unit test
/// `version_1_keeps_the_summed_tolerance` tells its versions apart.)
#[test]
fn runs_of_the_release_before_histogram_trees_replay_bit_for_bit() {
    let (report, accuracy) = replay_then_train_again("store-92b26b8", 3, "cart-trees", "accuracy");
    assert_t1_and_t2_scored_differently_now(&report, &accuracy);
}

/// SVMs recorded with linfa-svm (algorithm version 1: one machine per class, the sigmoid fitted
/// on the training decisions) and logistic regressions recorded with linfa-logistic (version 2;
/// a balanced one resampled its rows) replay with them, bit for bit; the same configs trained
/// now (runner's own SVM solver with cross-validated Platt scaling, runner's L-BFGS with row
/// weights) score differently where the arithmetic changed the answer: the SVMs' log loss (the
/// linear SVM's accuracy happens to be the same with the solver's shrinking, algorithm 3).
#[test]
fn svm_and_logistic_runs_of_the_release_before_runners_own_solvers_replay_bit_for_bit() {
    let (report, log_loss) = replay_then_train_again("store-6201fc4", 5, "linfa-svm", "log_loss");
    assert_t1_and_t2_scored_differently_now(&report, &log_loss);
    let d = tempfile::tempdir().unwrap();
    release_store(d.path(), "store-6201fc4");
    for f in ["logistic.toml", "logistic-sweep.toml"] {
        let from = repo().join("tests/data/store-6201fc4").join(f);
        std::fs::copy(from, d.path().join(f)).unwrap();
    }
    let report = sweep_json(d.path(), &d.path().join("logistic.toml"), &["--jobs", "1"]);
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let runs = experiment_runs(&store, "linfa-logistic");
    let accuracy = |version: &str| {
        let run = runs
            .iter()
            .find(|r| r["tags"]["runner.training_version"] == version);
        run.unwrap()["metrics"]["accuracy"].as_f64().unwrap()
    };
    let balanced = report["runs"][1]["version"].as_str().unwrap();
    assert_ne!(
        accuracy("t5"),
        accuracy(balanced),
        "row weights, not resampled rows"
    );
}

/// Networks recorded with libtorch's optimisers (algorithm version 1) replay with them, bit for
/// bit. Trained now, each lands near the old log loss but not on it, so the replays took the old
/// path: the MLP, the CNN and the LSTM are at version 3 (their folds stacked, each epoch's rows
/// split into batches of near-equal size). The flat rules' agreement with libtorch's optimisers
/// is checked by the helper's unit tests (`flat.rs`).
#[test]
#[cfg(feature = "torch")]
fn network_runs_of_the_release_before_flat_optimisers_replay_bit_for_bit() {
    let (report, log_loss) =
        replay_then_train_again("store-3844d05", 3, "libtorch-optimisers", "log_loss");
    for (i, old) in ["t1", "t2", "t3"].iter().enumerate() {
        let new_version = report["runs"][i]["version"].as_str().unwrap();
        let (before, now) = (log_loss(old), log_loss(new_version));
        assert_ne!(before, now, "{old} and {new_version}");
        assert!(
            (before - now).abs() < 0.05 * before,
            "{old} {before} and {new_version} {now}: not the same network trained again"
        );
    }
}

/// Runs written before the CNN ran channels last, one-vs-rest SVMs shared their kernel values
/// and LightGBM's trees were predicted by runner: the same versions of these kinds, so the new
/// code must give the same numbers, bit for bit (a CNN with batch norm, dropout and both
/// poolings; an RBF SVM over six classes; LightGBM over six classes).
#[test]
#[cfg(all(feature = "torch", feature = "lightgbm"))]
fn runs_before_faster_cnn_svm_and_lightgbm_predictions_replay_bit_for_bit() {
    let d = tempfile::tempdir().unwrap();
    replays_bit_for_bit(d.path(), "store-934fca9", 4);
}

/// Runs written before the SVM solver's faster scans and half kernel table, runner's own
/// dropout masks and XGBoost's model written on demand: the same versions of these kinds, so the
/// new code must give the same numbers, bit for bit (a linear SVM with balanced class weights,
/// an MLP and an LSTM with dropout, XGBoost with its gain importance, an RBF epsilon-SVR).
#[test]
#[cfg(all(feature = "torch", feature = "xgboost"))]
fn runs_before_faster_svm_dropout_and_xgboost_replay_bit_for_bit() {
    let d = tempfile::tempdir().unwrap();
    replays_bit_for_bit(d.path(), "store-55ed8f4", 5);
}

/// Networks whose CV folds trained stacked (the MLP and CNN of algorithm 3: an MLP with batch
/// norm and dropout, a CNN with batch norm, pooling and dropout, a regression MLP) replay bit for
/// bit: the stack of a run's folds, each fold's dropout stream and the refit alone.
#[test]
#[cfg(feature = "torch")]
fn runs_of_stacked_network_folds_replay_bit_for_bit() {
    let d = tempfile::tempdir().unwrap();
    replays_bit_for_bit(d.path(), "store-381d630", 3);
}

/// LSTMs whose CV folds trained stacked (algorithm 3: each fold's LSTM one fused call on its
/// slice of the stacked weights, the dense head and the optimiser step stacked) replay bit for
/// bit: one with dropout and batch norm in its head, a two-layer bidirectional one with AdamW
/// and batches of 100, a regression one over four folds.
#[test]
#[cfg(feature = "torch")]
fn runs_of_stacked_lstm_folds_replay_bit_for_bit() {
    let d = tempfile::tempdir().unwrap();
    replays_bit_for_bit(d.path(), "store-570662b", 3);
}

#[test]
fn runs_written_by_the_previous_release_replay_bit_for_bit() {
    let d = tempfile::tempdir().unwrap();
    let db = old_release_store(d.path());
    let runs = stdout_json(&run_ok(runner(d.path()).args(["runs", "--json"])));
    let listed: Vec<(&str, &str)> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("t1", "FINISHED"),
            ("t2", "FINISHED"),
            ("t3", "FINISHED"),
            ("t4", "FINISHED")
        ]
    );
    // Its summaries hold metrics as [mean, std] pairs: read as {mean, std}.
    assert!(
        runs["runs"][2]["metrics"]["accuracy"]["mean"]
            .as_f64()
            .unwrap()
            > 0.6
    );
    for t in ["t1", "t2", "t3", "t4"] {
        let out = run_ok(runner(d.path()).args(["replay", t, "--check", "--json"]));
        assert_eq!(stdout_json(&out)["identical"], true, "{t}");
    }
    // A run that release left RUNNING (its process killed) records no owner: it counts as
    // killed once it has been silent longer than the stale limit.
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "UPDATE runs SET status = 'RUNNING', start_time = 1000 WHERE name = 't2-tree';
         UPDATE runner_training_runs SET status = 'RUNNING' WHERE version = 2;",
    )
    .unwrap();
    drop(c);
    let runs = stdout_json(&run_ok(runner(d.path()).args(["runs", "--json"])));
    assert_eq!(runs["runs"][1]["status"], "KILLED");
    assert!(runs["runs"][1]["status_reason"]
        .as_str()
        .unwrap()
        .contains("older runner"));
}
