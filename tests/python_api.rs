//! The Python package (`runner_ml`, issue 16) against the real interpreter it was installed
//! into by `python/install.sh` (tests/run.sh sets RUNNER_PYTHON): sweeps and EDA from dicts on
//! pandas DataFrames, errors as exceptions, a KeyboardInterrupt that ends runs KILLED, the GIL
//! released while training, the same store as the CLI's, and the example notebook run by
//! nbclient.

mod common;
#[path = "common/mlflow_server.rs"]
mod server;

use common::{read_with_mlflow, repo, runner, stdout_json};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The interpreter with `runner_ml`, pandas, nbclient and ipykernel installed.
fn python() -> PathBuf {
    let p = std::env::var("RUNNER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/runner/python-venv/bin/python")
        });
    assert!(
        p.exists(),
        "the Python package is not installed: run tests/run.sh (or tests/python-env.sh) first"
    );
    p
}

fn white_wine() -> PathBuf {
    repo().join("tests/data/winequality-white.csv")
}

/// Runs `tests/python/<script>` with `args`; its JSON output and its stderr.
fn script(name: &str, args: &[&str]) -> (Value, String) {
    script_with(name, args, &[])
}

/// [`script`] with `MLFLOW_TRACKING_URI` and other variables as `env` sets them.
fn script_with(name: &str, args: &[&str], env: &[(&str, &Path)]) -> (Value, String) {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/python").join(name))
        .args(args)
        .env_remove("MLFLOW_TRACKING_URI");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python starts");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{name} failed ({:?}):\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let doc = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{name} printed no JSON ({e}):\n{stdout}\n{stderr}"));
    (doc, stderr)
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[test]
fn a_dict_sweep_on_a_dataframe_then_runs_replay_predict_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let wine = white_wine();
    let (doc, stderr) = script(
        "api_roundtrip.py",
        &[dir.path().to_str().unwrap(), wine.to_str().unwrap()],
    );
    // Three configs (a logistic regression, a tree grid of two), numbered in order.
    assert_eq!(strs(&doc["versions"]), ["t1", "t2", "t3"]);
    assert!(strs(&doc["statuses"]).iter().all(|s| *s == "FINISHED"));
    assert_eq!(
        strs(&doc["names"]),
        [
            "logistic_regression",
            "decision_tree[max_depth=3]",
            "decision_tree[max_depth=5]"
        ]
    );
    // Progress lines reach the caller's output as training happens.
    assert!(
        stderr.contains("t1 ") && stderr.contains("accuracy"),
        "{stderr}"
    );
    // The leaderboard is ranked best first and starts with the best run.
    let primary: Vec<f64> = (doc["board_primary"].as_array().unwrap().iter())
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(doc["higher_is_better"].as_bool().unwrap());
    assert!(primary.windows(2).all(|w| w[0] >= w[1]), "{primary:?}");
    assert_eq!(doc["board_runs"][0], doc["best"]);
    assert_eq!(doc["best_folds"], 3);
    assert!(doc["per_class_rows"].as_u64().unwrap() >= 3);
    let artifacts = strs(&doc["artifacts"]);
    assert!(
        artifacts.iter().any(|a| a.starts_with("model_t")),
        "{artifacts:?}"
    );
    // The same frame again is the same ETL version; --restart numbers new runs.
    assert_eq!(doc["etl"], "v1");
    assert_eq!(doc["etl_again"], "v1");
    assert_eq!(strs(&doc["again_versions"]), ["t4", "t5", "t6"]);
    assert_eq!(doc["listed"].as_array().unwrap().len(), 6);
    // Replay is bit for bit, as a new run.
    assert_eq!(doc["replay"]["original"], doc["best"]);
    assert_eq!(doc["replay"]["replay"], "t7");
    assert_eq!(doc["replay"]["identical"], true);
    // Predictions decode to the frame's own labels, one row per input row, with probabilities.
    assert_eq!(doc["predicted_rows"], 25);
    let columns = strs(&doc["predicted_columns"]);
    assert!(columns.contains(&"prediction"), "{columns:?}");
    assert!(
        columns.iter().any(|c| c.starts_with("proba")),
        "{columns:?}"
    );
    let known = doc["known_labels"].as_array().unwrap();
    for label in doc["predicted_labels"].as_array().unwrap() {
        assert!(known.contains(label), "{label} is not a label of the frame");
    }
    // reload_etl rebuilds the frame's table: every row, every column.
    assert_eq!(doc["rebuilt_shape"], doc["frame_shape"]);
    assert_eq!(doc["html_has_table"], true);
    assert!(strs(&doc["models"]).contains(&"random_forest"));
    // A frame is verified by its content: another one is refused; another process must be
    // given the frame again.
    let wrong = doc["wrong_frame"].as_str().unwrap();
    assert!(
        wrong.contains("does not hold the data of ETL v1"),
        "{wrong}"
    );
    let gone = doc["frame_file_gone"].as_str().unwrap();
    assert!(
        gone.contains("not in this process") && gone.contains("data="),
        "{gone}"
    );
    assert_eq!(doc["restored_shape"], doc["frame_shape"]);
    // The same table from polars has the same content hash: the same ETL version.
    assert_eq!(doc["polars"]["etl"], "v1");
    assert_eq!(doc["polars"]["status"], "FINISHED");
    assert_eq!(doc["polars"]["predicted_rows"], 5);
    // The data report of the same frame is logged against the same ETL version, its plots
    // inline in the notebook's Markdown.
    assert_eq!(doc["eda"]["etl"], "v1");
    assert!(doc["eda"]["plots"].as_u64().unwrap() >= 2, "{}", doc["eda"]);
    assert_eq!(doc["eda"]["inline"], true);
    assert_eq!(doc["eda"]["target_in_report"], true);
    let missing = doc["missing_run"].as_str().unwrap();
    assert!(
        missing.contains("t999") && missing.contains("py.db"),
        "{missing}"
    );
}

#[test]
fn mistakes_raise_config_errors_that_name_the_key_or_column() {
    let dir = tempfile::tempdir().unwrap();
    let wine = white_wine();
    let (doc, _) = script(
        "errors.py",
        &[dir.path().to_str().unwrap(), wine.to_str().unwrap()],
    );
    let bad_key = &doc["bad_key"];
    assert_eq!(bad_key["type"], "ConfigError");
    assert_eq!(bad_key["is_value_error"], true);
    assert!(
        bad_key["text"].as_str().unwrap().contains("foldz"),
        "{bad_key}"
    );
    // A dict has no lines: the error names the key path instead.
    assert_eq!(bad_key["line"], Value::Null);
    assert!(
        bad_key["text"].as_str().unwrap().starts_with("config dict"),
        "{bad_key}"
    );
    let bad_value = &doc["bad_value"];
    assert_eq!(bad_value["type"], "ConfigError");
    assert!(
        bad_value["key"].as_str().unwrap_or("").contains("folds")
            || bad_value["text"].as_str().unwrap().contains("folds"),
        "{bad_value}"
    );
    let no_target = &doc["no_target"];
    assert_eq!(no_target["type"], "ConfigError");
    assert!(
        no_target["text"].as_str().unwrap().contains("quality"),
        "{no_target}"
    );
    // TOML text keeps its lines.
    let toml = &doc["toml_text"];
    assert_eq!(toml["type"], "ConfigError");
    assert_eq!(toml["line"], 6, "{toml}");
    assert_eq!(
        toml["file"], "config text (after --set data.source)",
        "{toml}"
    );
    // No sweep yet, no store: said so.
    assert_eq!(doc["missing_store"]["type"], "RunnerError");
    let missing = doc["missing_store"]["text"].as_str().unwrap();
    assert!(missing.contains("mlflow.db does not exist"), "{missing}");
    // Nothing was written by the refused sweeps.
    assert_eq!(doc["dirty_store"], false);
}

/// The statuses of the store's runs (training and parent), by name.
fn statuses(db: &Path) -> Vec<(String, String, BTreeMap<String, String>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut q = conn
        .prepare("SELECT run_uuid, name, status FROM runs ORDER BY start_time")
        .unwrap();
    let rows: Vec<(String, String, String)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.into_iter()
        .map(|(id, name, status)| {
            let mut t = conn
                .prepare("SELECT key, value FROM tags WHERE run_uuid = ?1")
                .unwrap();
            let tags = t
                .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            (name, status, tags)
        })
        .collect()
}

#[test]
fn a_keyboard_interrupt_ends_the_sweeps_runs_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (doc, _) = script("interrupt.py", &[dir.path().to_str().unwrap(), "2.0"]);
    assert_eq!(doc["outcome"], "KeyboardInterrupt", "{doc}");
    // Six forests of 400 trees take far longer than this: the interrupt stopped them.
    assert!(doc["seconds"].as_f64().unwrap() < 20.0, "{doc}");
    let runs = statuses(&dir.path().join("mlflow.db"));
    assert_eq!(runs.len(), 7, "six runs and the parent: {runs:?}");
    for (name, status, tags) in &runs {
        assert!(
            status == "KILLED" || status == "FINISHED",
            "{name} is {status}: an interrupted sweep leaves nothing RUNNING or SCHEDULED"
        );
        if status == "KILLED" {
            let reason = tags.get("runner.killed_reason").map(String::as_str);
            assert!(
                reason.unwrap_or("").contains("interrupted"),
                "{name}: {tags:?}"
            );
        }
    }
    let killed = runs.iter().filter(|r| r.1 == "KILLED").count();
    assert!(killed >= 6, "the parent and most runs end KILLED: {runs:?}");
}

#[test]
fn python_threads_run_while_a_sweep_trains() {
    let dir = tempfile::tempdir().unwrap();
    let (doc, _) = script("gil.py", &[dir.path().to_str().unwrap()]);
    let (ticks, seconds) = (
        doc["ticks"].as_f64().unwrap(),
        doc["seconds"].as_f64().unwrap(),
    );
    assert_eq!(doc["runs"], 2);
    assert!(seconds > 1.0, "the sweep is long enough to tell: {doc}");
    // A thread ticking every 10 ms while the GIL is free: most of its ticks happen.
    let possible = seconds / 0.0101;
    assert!(
        ticks > 0.4 * possible,
        "{ticks} of {possible:.0} ticks: {doc}"
    );
}

/// What the MLflow client reads of a store's training runs, by run name, apart from ids and
/// times: params, metric values by step (timings left out), status and tag keys.
fn store_contents(db: &Path) -> BTreeMap<String, Value> {
    let store = read_with_mlflow(db);
    let mut out = BTreeMap::new();
    for exp in store["experiments"].as_array().unwrap() {
        for run in exp["runs"].as_array().unwrap() {
            let tags = run["tags"].as_object().unwrap();
            if tags.get("runner.sweep").is_some_and(|v| v == "parent") {
                continue;
            }
            let history: BTreeMap<&String, Vec<(i64, f64)>> = (run["history"].as_object())
                .unwrap()
                .iter()
                .filter(|(k, _)| !k.contains("seconds"))
                .map(|(k, points)| {
                    let steps = (points.as_array().unwrap().iter())
                        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
                        .collect();
                    (k, steps)
                })
                .collect();
            let tag_keys: Vec<&String> = tags.keys().collect();
            out.insert(
                run["run_name"].as_str().unwrap().to_string(),
                serde_json::json!({
                    "status": run["status"], "params": run["params"], "history": history,
                    "tag_keys": tag_keys, "digest": run["inputs"][0]["digest"],
                }),
            );
        }
    }
    out
}

#[test]
fn the_same_sweep_from_python_and_the_cli_stores_the_same_runs() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("white.csv");
    std::fs::copy(white_wine(), &csv).unwrap();
    let config = common::write_config(
        dir.path(),
        "experiment = \"parity\"\nseed = 3\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"white.csv\"\ntarget = \"quality\"\n[cv]\nfolds = 3\n",
        "[[models]]\nkind = \"decision_tree\"\nmax_depth = [4, 6]\n\n[[models]]\nkind = \"naive_bayes\"\n",
    );
    let cli = stdout_json(&common::run_ok(
        runner(dir.path())
            .args(["--tracking-uri", "sqlite:///cli.db", "sweep"])
            .arg(&config)
            .arg("--json"),
    ));
    let code = format!(
        "import json, runner_ml as r\nres = r.sweep({:?}, tracking_uri='sqlite:///py.db', verbose=False)\nprint(json.dumps(res.report))",
        config.to_str().unwrap()
    );
    let py = common::json_of(
        Command::new(python())
            .current_dir(dir.path())
            .args(["-c", &code])
            .env_remove("MLFLOW_TRACKING_URI"),
    );
    // Identical fold metrics, run by run.
    let folds = |report: &Value| -> Vec<(Value, Value)> {
        (report["runs"].as_array().unwrap().iter())
            .map(|r| (r["name"].clone(), r["fold_metrics"].clone()))
            .collect()
    };
    assert_eq!(folds(&cli).len(), 3);
    assert_eq!(folds(&cli), folds(&py));
    // The same store contents, apart from ids and times.
    let (a, b) = (
        store_contents(&dir.path().join("cli.db")),
        store_contents(&dir.path().join("py.db")),
    );
    assert_eq!(a.len(), 3);
    assert_eq!(a, b);
}

#[test]
fn the_example_notebook_runs_in_jupyter_with_its_output_in_the_notebook() {
    let dir = tempfile::tempdir().unwrap();
    let (doc, _) = script(
        "run_notebook.py",
        &[
            repo().join("examples/wine.ipynb").to_str().unwrap(),
            dir.path().to_str().unwrap(),
            white_wine().to_str().unwrap(),
        ],
    );
    assert_eq!(doc["errors"], 0, "{doc}");
    // The sweep's progress lines are in the notebook's cell output, without terminal codes.
    let streams = doc["streams"].as_str().unwrap();
    assert!(streams.contains("t1 "), "{streams}");
    assert!(!streams.contains('\u{1b}'), "escape codes in {streams}");
    // The rich leaderboard, the plot and the replay's verdict are displayed.
    assert!(doc["html"].as_u64().unwrap() >= 1, "{doc}");
    assert!(doc["svg"].as_u64().unwrap() >= 1, "{doc}");
    assert!(
        streams.contains("identical=True") || doc["text"].as_str().unwrap().contains("identical"),
        "{doc}"
    );
}

#[test]
fn networks_train_beside_a_torch_of_another_release_in_either_import_order() {
    if !cfg!(feature = "torch") {
        return;
    }
    let (doc, _) = script("torch_beside.py", &[]);
    for order in ["torch_before", "torch_after"] {
        let case = &doc[order];
        assert_eq!(case["rc"], 0, "{order}: {}", case["stderr"]);
        let seen = &case["seen"];
        assert_eq!(seen["status"], "FINISHED", "{order}: {seen}");
        assert!(
            seen["accuracy"][0].as_f64().unwrap() > 0.3,
            "{order}: {seen}"
        );
        assert_eq!(seen["torch"], "2.4.1+cu121", "{order}: {seen}");
        // The MLP trained in runner's helper: this interpreter never held a libtorch.
        assert_eq!(seen["libtorch_mapped"], false, "{order}: {seen}");
    }
}

/// A notebook whose environment names a team's MLflow server (`MLFLOW_TRACKING_URI`): the
/// server is the store, for the package as for the CLI.
#[test]
fn a_notebook_with_mlflow_tracking_uri_on_a_server_sweeps_and_replays_there() {
    let root = tempfile::tempdir().unwrap();
    let port = server::free_port();
    let _server = server::mlflow_server(root.path(), port);
    let url = format!("http://127.0.0.1:{port}");
    let work = root.path().join("notebook");
    std::fs::create_dir_all(&work).unwrap();
    let replica = root.path().join("replica");
    let wine = white_wine();
    let (doc, stderr) = script_with(
        "server_store.py",
        &[work.to_str().unwrap(), wine.to_str().unwrap()],
        &[
            ("MLFLOW_TRACKING_URI", Path::new(&url)),
            ("RUNNER_SERVER_CACHE", &replica),
        ],
    );
    assert_eq!(doc["store"], url.as_str(), "{stderr}");
    assert_eq!(strs(&doc["versions"]), ["t1", "t2"]);
    assert!(strs(&doc["statuses"]).iter().all(|s| *s == "FINISHED"));
    assert_eq!(doc["identical"], true);
    assert_eq!(
        strs(&doc["listed"]).len(),
        3,
        "two runs and the replay: {doc}"
    );
    assert_eq!(doc["predicted_rows"], 10);
    assert!(
        strs(&doc["files_here"]).is_empty(),
        "nothing written beside the notebook: {doc}"
    );
    // Another host (the CLI with a replica of its own) finds the runs on the server.
    let out = common::run_ok(
        runner(root.path())
            .env("MLFLOW_TRACKING_URI", &url)
            .env("RUNNER_SERVER_CACHE", root.path().join("other-host"))
            .args(["runs", "--json"]),
    );
    let listed = stdout_json(&out);
    assert_eq!(listed["runs"].as_array().unwrap().len(), 3, "{listed}");
}
