//! The tracker lifecycle as a user sees it in the JSON-lines log (`[tracking] jsonl`): every run
//! of a sweep and of `runner eda` is created, started, given its metrics and artifacts, and
//! finished, in that order, with the same artifacts the MLflow store holds.
mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn read_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The log's events of one run, in order.
fn events_of<'a>(log: &'a [Value], run: &str) -> Vec<&'a Value> {
    log.iter().filter(|e| e["run"] == run).collect()
}

fn names(events: &[&Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let name = e["event"].as_str().unwrap().to_string();
        if out.last() != Some(&name) {
            out.push(name);
        }
    }
    out
}

#[test]
fn a_sweep_and_an_eda_run_go_through_the_whole_lifecycle_in_the_jsonl_log() {
    let d = tempfile::tempdir().unwrap();
    // A table with one infinite value: the tree splits around it, the logistic regression's loss
    // is not finite.
    let mut csv = String::from("a,b,y\n");
    for i in 0..120 {
        let a = match i {
            5 => "inf".to_string(),
            _ => format!("{}", (i * 37 % 100) as f64 / 100.0),
        };
        let y = if (i * 37 % 100) > 40 { "p" } else { "n" };
        csv.push_str(&format!("{a},{},{y}\n", (i * 11 % 7) as f64));
    }
    std::fs::write(d.path().join("d.csv"), csv).unwrap();
    let cfg = write_config(
        d.path(),
        "experiment = \"wine-log\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"d.csv\"\ntarget = \"y\"\n[cv]\nfolds = 3\n[tracking]\njsonl = \"ci/runs.jsonl\"\n",
        "[[models]]\nkind = \"decision_tree\"\nname = \"tree\"\nmax_depth = 3\n[[models]]\nkind = \"logistic_regression\"\nname = \"bad\"\n",
    );
    // One config fails: the sweep exits 1 and the failed run still ends in the log.
    let out = runner(d.path())
        .args(["sweep"])
        .arg(&cfg)
        .args(["--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<&str> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["FINISHED", "FAILED"]);
    let primary = report["primary_metric"].as_str().unwrap();
    let log = read_log(&d.path().join("ci/runs.jsonl"));
    for run in report["runs"].as_array().unwrap() {
        let id = run["run_uuid"].as_str().unwrap();
        let events = events_of(&log, id);
        let seq = names(&events);
        assert_eq!(
            seq.first().map(String::as_str),
            Some("create_run"),
            "{seq:?}"
        );
        assert_eq!(seq.get(1).map(String::as_str), Some("start_run"), "{seq:?}");
        assert_eq!(
            seq.last().map(String::as_str),
            Some("finish_run"),
            "{seq:?}"
        );
        let created = events[0];
        assert_eq!(created["version"], run["version"]);
        assert_eq!(created["kind"], run["kind"]);
        assert_eq!(created["experiment"], "wine-log");
        assert!(created["params"]["seed"].is_string(), "{created}");
        let finish = events.last().unwrap();
        assert_eq!(finish["status"], run["status"], "{finish}");
        if run["status"] != "FINISHED" {
            continue;
        }
        // Metrics arrive before the run finishes, and say what the store says.
        let logged: BTreeMap<String, f64> = events
            .iter()
            .filter(|e| e["event"] == "metrics")
            .flat_map(|e| e["metrics"].as_array().unwrap().iter())
            .filter_map(|m| Some((m["key"].as_str()?.to_string(), m["value"].as_f64()?)))
            .collect();
        let mean = run["metrics"][primary]["mean"].as_f64();
        assert_eq!(logged.get(primary).copied(), mean, "{logged:?}");
        assert!(
            logged.contains_key(&format!("fold0/{primary}")),
            "{logged:?}"
        );
        // Each artifact in the log is the file the MLflow store holds.
        let store_dir = d.path();
        let artifacts: Vec<&&Value> = events.iter().filter(|e| e["event"] == "artifact").collect();
        assert!(artifacts.len() >= 4, "{artifacts:?}");
        for a in artifacts {
            let file = artifact(store_dir, id, a["name"].as_str().unwrap());
            let bytes = std::fs::read(&file).unwrap();
            assert_eq!(a["bytes"].as_u64(), Some(bytes.len() as u64), "{a}");
        }
    }

    let out = run_ok(runner(d.path()).args(["eda"]).arg(&cfg).args(["--json"]));
    let eda = stdout_json(&out);
    let log = read_log(&d.path().join("ci/runs.jsonl"));
    let id = eda["run_uuid"].as_str().unwrap();
    let events = events_of(&log, id);
    let seq = names(&events);
    assert_eq!(
        seq,
        [
            "create_run",
            "start_run",
            "metrics",
            "artifact",
            "finish_run"
        ],
        "the EDA run goes through the trackers too"
    );
    assert_eq!(events[0]["kind"], "eda");
    assert_eq!(events.last().unwrap()["status"], "FINISHED");
}

#[test]
fn an_unusable_jsonl_log_exits_2_before_the_store_is_written() {
    let d = tempfile::tempdir().unwrap();
    // The log's folder is a file: the log cannot be opened.
    std::fs::write(d.path().join("blocked"), "").unwrap();
    let cfg = write_config(
        d.path(),
        "experiment = \"wine-log\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[cv]\nfolds = 3\n[tracking]\njsonl = \"blocked/runs.jsonl\"\n",
        "[[models]]\nkind = \"decision_tree\"\nname = \"tree\"\nmax_depth = 3\n",
    );
    let out = runner(d.path())
        .args(["sweep"])
        .arg(&cfg)
        .args(["--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("blocked/runs.jsonl"),
        "the error names the log: {stderr}"
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!d.path().join("mlflow.db").exists(), "nothing is written");
}
