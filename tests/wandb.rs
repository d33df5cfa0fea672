//! W&B logging over HTTP against a local server that speaks the protocol and fails on purpose.
mod common;
#[path = "common/wandb_server.rs"]
mod wandb_server;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use wandb_server::{FaultKind, WandbServer};

const KEY: &str = "wandbtestkey0123456789abcdefghijklmnopqr";

/// `runner` in `dir` with the test's W&B key in its environment.
fn keyed(dir: &Path) -> std::process::Command {
    let mut c = runner(dir);
    c.env("WANDB_API_KEY", KEY);
    c
}

fn config(dir: &Path, server: &WandbServer, extra: &str) -> std::path::PathBuf {
    let cfg = format!(
        "experiment = \"wine-wb\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[etl]\nscale = \"standard\"\n[cv]\nfolds = 3\n[tracking.wandb]\nproject = \"wine\"\nbase_url = \"{}\"\nbackoff_ms = 20\n{extra}",
        server.url
    );
    write_config(dir, &cfg, "[[models]]\nkind = \"naive_bayes\"\nname = \"nb\"\n[[models]]\nkind = \"decision_tree\"\nname = \"tree\"\nmax_depth = 4\n")
}

/// Every file under `dir` and the process output, searched for the key.
fn assert_key_nowhere(dir: &Path, outputs: &[&std::process::Output]) {
    for entry in files_under(dir) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(KEY),
            "the API key was written to {}",
            entry.display()
        );
    }
    for o in outputs {
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains(KEY)
                && !String::from_utf8_lossy(&o.stderr).contains(KEY),
            "the API key was printed"
        );
    }
}

/// Checks a run on the server is complete: created with its config, contiguous history with
/// `_step` = offset, summary = the final metrics, files uploaded, exit code 0.
fn assert_complete(server: &WandbServer, report: &Value, run: &Value, folds: usize) {
    let st = server.state.lock().unwrap();
    let id = run["run_uuid"].as_str().unwrap();
    let r = st
        .runs
        .get(id)
        .unwrap_or_else(|| panic!("run {id} never reached W&B"));
    let up = &r.upserts[0];
    assert_eq!(
        up["displayName"],
        format!(
            "{}-{}",
            run["version"].as_str().unwrap(),
            run["name"].as_str().unwrap()
        )
    );
    assert_eq!(up["project"], "wine");
    assert_eq!(up["jobType"], "train");
    assert!(up["groupName"].as_str().unwrap().starts_with("wine-wb-t"));
    let config: Value = serde_json::from_str(up["config"].as_str().unwrap()).unwrap();
    assert_eq!(
        config["plan"]["value"]["model"]["kind"], run["kind"],
        "config is wrapped as {{\"value\": ...}}"
    );
    assert_eq!(config["plan"]["value"]["seed"], 42);
    assert_eq!(
        r.history.len(),
        folds + 1,
        "one line per fold and one with the final metrics"
    );
    let offsets: Vec<usize> = r.history.keys().copied().collect();
    assert_eq!(
        offsets,
        (0..folds + 1).collect::<Vec<_>>(),
        "contiguous offsets"
    );
    assert!(
        r.received.values().all(|n| *n == 1),
        "no history line sent twice: {:?}",
        r.received
    );
    assert_eq!((r.gaps, r.conflicts), (0, 0));
    for (o, line) in &r.history {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["_step"], *o as u64);
        assert!(
            v["_timestamp"].as_f64().unwrap() > 1.7e9 && v["_runtime"].as_f64().unwrap() >= 0.0
        );
    }
    let summary = r.summary.as_ref().expect("summary");
    let key = report["primary_metric"].as_str().unwrap();
    assert_eq!(
        summary[key].as_f64().unwrap(),
        run["metrics"][key]["mean"].as_f64().unwrap(),
        "summary holds the final metrics"
    );
    let tv = run["version"].as_str().unwrap();
    for f in [
        format!("model_{tv}.json"),
        "config.json".into(),
        "confusion_matrix.csv".into(),
    ] {
        assert!(
            r.files.contains_key(&f),
            "{f} not uploaded: {:?}",
            r.files.keys()
        );
    }
    assert!(
        r.upload_headers_ok,
        "upload headers from CreateRunFiles are sent"
    );
    assert!(
        r.complete && r.exitcode == Some(0),
        "run completed with exit code 0"
    );
    assert_eq!(
        st.auth_on_upload, 0,
        "no Authorization header on upload URLs"
    );
}

#[test]
fn a_sweep_logs_every_run_to_wandb() {
    let server = WandbServer::start(KEY);
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), &server, "");
    let out = run_ok(keyed(d.path()).args(["sweep"]).arg(&cfg).args(["--json"]));
    let report = stdout_json(&out);
    assert_eq!(report["wandb"]["mode"], "online");
    assert_eq!(report["wandb"]["pending_runs"], 0);
    for run in report["runs"].as_array().unwrap() {
        assert_complete(&server, &report, run, 3);
    }
    for req in &server.state.lock().unwrap().requests {
        assert!(
            !req.path.contains(KEY) && !String::from_utf8_lossy(&req.body).contains(KEY),
            "key in a URL or body"
        );
    }
    assert_key_nowhere(d.path(), &[&out]);
    // Nothing left to sync.
    let sync = run_ok(keyed(d.path()).args(["wandb-sync"]));
    assert!(String::from_utf8_lossy(&sync.stdout).contains("Nothing to send"));
}

#[test]
fn injected_failures_are_retried_and_the_sweep_still_finishes() {
    let server = WandbServer::start(KEY);
    server.fail("UpsertBucket", FaultKind::Status(500), 2);
    server.fail("file_stream", FaultKind::TooMany { retry_after_s: 1 }, 1);
    server.fail("file_stream", FaultKind::Status(503), 2);
    server.fail("/upload/", FaultKind::Drop, 1);
    server.fail(
        "CreateRunFiles",
        FaultKind::Slow(Duration::from_millis(300)),
        1,
    );
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), &server, "");
    let out = run_ok(keyed(d.path()).args(["sweep"]).arg(&cfg).args(["--json"]));
    let report = stdout_json(&out);
    assert_eq!(
        report["wandb"]["pending_runs"], 0,
        "everything was sent after retries"
    );
    for run in report["runs"].as_array().unwrap() {
        assert_eq!(run["status"], "FINISHED");
        assert_complete(&server, &report, run, 3);
    }
    let st = server.state.lock().unwrap();
    assert!(
        st.faults.iter().all(|f| f.times == 0),
        "every injected fault was hit"
    );
}

#[test]
fn a_dead_server_costs_a_bounded_wait_and_the_spool_syncs_later() {
    let server = WandbServer::start(KEY);
    server.fail("/", FaultKind::Status(500), usize::MAX);
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), &server, "timeout_s = 1\nrequest_timeout_s = 1\n");
    let t = Instant::now();
    let out = run_ok(keyed(d.path()).args(["sweep"]).arg(&cfg).args(["--json"]));
    let report = stdout_json(&out);
    assert!(
        report["wandb"]["wait_seconds"].as_f64().unwrap() < 3.0,
        "bounded wait: {}",
        report["wandb"]
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(report["wandb"]["pending_runs"], 2);
    assert!(
        report["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "FINISHED"),
        "training and MLflow carry on"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("wandb-sync"));
    // The server comes back: one sync sends everything, exactly once.
    server.clear_faults();
    let sync = run_ok(keyed(d.path()).args(["wandb-sync", "--json"]));
    let s = stdout_json(&sync);
    assert_eq!(s["synced"].as_array().unwrap().len(), 2, "{s}");
    for run in report["runs"].as_array().unwrap() {
        assert_complete(&server, &report, run, 3);
    }
    assert_key_nowhere(d.path(), &[&out, &sync]);
}

#[test]
fn offline_mode_spools_and_sync_resumes_without_duplicates() {
    let server = WandbServer::start(KEY);
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), &server, "");
    let out = run_ok(
        runner(d.path())
            .env("WANDB_MODE", "offline")
            .args(["sweep"])
            .arg(&cfg)
            .args(["--json"]),
    );
    let report = stdout_json(&out);
    assert_eq!(report["wandb"]["mode"], "offline");
    assert_eq!(report["wandb"]["pending_runs"], 2);
    assert!(
        server.state.lock().unwrap().requests.is_empty(),
        "offline sends nothing"
    );
    // First sync: the history goes, the file uploads are refused (400), so the runs stay pending.
    server.fail("CreateRunFiles", FaultKind::Status(400), 2);
    let first = keyed(d.path())
        .env("WANDB_BASE_URL", &server.url)
        .args(["wandb-sync"])
        .output()
        .unwrap();
    assert_eq!(
        first.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    // Simulate a crash that lost the record of what was acknowledged.
    for state in files_under(d.path())
        .into_iter()
        .filter(|p| p.ends_with("wandb/state.json"))
    {
        let mut s: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(s["history_sent"], 4);
        s["history_sent"] = 0.into();
        std::fs::write(&state, s.to_string()).unwrap();
    }
    let second = run_ok(
        keyed(d.path())
            .env("WANDB_BASE_URL", &server.url)
            .args(["wandb-sync"]),
    );
    assert!(String::from_utf8_lossy(&second.stdout).contains("sent to W&B"));
    for run in report["runs"].as_array().unwrap() {
        assert_complete(&server, &report, run, 3);
    }
}

#[test]
fn a_refused_key_stops_wandb_once_and_the_sweep_carries_on() {
    let server = WandbServer::start(KEY);
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), &server, "");
    let out = run_ok(
        runner(d.path())
            .env("WANDB_API_KEY", "0".repeat(40))
            .args(["sweep"])
            .arg(&cfg)
            .args(["--json"]),
    );
    let report = stdout_json(&out);
    assert!(report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "FINISHED"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("refused the API key").count(), 1, "{err}");
    assert!(!err.contains(&"0".repeat(40)));
}

#[test]
fn wandb_without_a_key_is_refused_before_training() {
    let server = WandbServer::start(KEY);
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), &server, "");
    let out = runner(d.path())
        .env("HOME", d.path())
        .args(["sweep"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WANDB_API_KEY") && err.contains(".netrc"),
        "{err}"
    );
    assert!(!d.path().join("mlflow.db").exists());
    // A key in ~/.netrc for the server's host is enough.
    std::fs::write(
        d.path().join(".netrc"),
        format!("machine 127.0.0.1\n  login user\n  password {KEY}\n"),
    )
    .unwrap();
    let out = run_ok(
        runner(d.path())
            .env("HOME", d.path())
            .args(["sweep"])
            .arg(&cfg)
            .args(["--json"]),
    );
    assert_eq!(stdout_json(&out)["wandb"]["pending_runs"], 0);
}

#[test]
fn without_wandb_configured_nothing_is_sent() {
    let d = tempfile::tempdir().unwrap();
    let out = run_ok(
        keyed(d.path())
            .args(["sweep"])
            .arg(repo().join("configs/wine.toml"))
            .args(["--only", "gaussian-nb", "--json"]),
    );
    assert!(stdout_json(&out)["wandb"].is_null());
    assert!(!files_under(d.path())
        .iter()
        .any(|p| p.to_string_lossy().contains("wandb")));
}

/// Benchmark, not a check: the time W&B adds to the red wine sweep with a local server.
/// Run: cargo test --release --test wandb -- --ignored --nocapture
#[test]
#[ignore]
fn bench_wandb_overhead() {
    let server = WandbServer::start(KEY);
    let d = tempfile::tempdir().unwrap();
    let mut cfg = std::fs::read_to_string(repo().join("configs/wine.toml")).unwrap();
    cfg = cfg.replace("../sweeps/", &format!("{}/sweeps/", repo().display()));
    cfg.push_str(&format!(
        "\n[tracking.wandb]\nproject = \"wine\"\nbase_url = \"{}\"\n",
        server.url
    ));
    let with = d.path().join("with.toml");
    std::fs::write(&with, &cfg).unwrap();
    let time = |envs: &[(&str, &str)]| {
        let t = Instant::now();
        let mut c = runner(d.path());
        c.args(["sweep"]).arg(&with).args(["--json"]);
        for (k, v) in envs {
            c.env(k, v);
        }
        let r = stdout_json(&run_ok(&mut c));
        (
            t.elapsed().as_secs_f64(),
            r["wandb"]["wait_seconds"].as_f64().unwrap_or(0.0),
        )
    };
    let (off, _) = time(&[("WANDB_MODE", "disabled")]);
    let (on, wait) = time(&[("WANDB_API_KEY", KEY)]);
    eprintln!("wine sweep: {off:.2} s without W&B, {on:.2} s with W&B to a local server (waited {wait:.3} s after training)");
}

/// An iterative model's curves reach W&B as they grow: one history line per (fold, round), with
/// that fold's own keys and `_step` rising by one per line.
#[cfg(feature = "xgboost")]
#[test]
fn boosting_rounds_reach_wandb_one_history_line_each() {
    let server = WandbServer::start(KEY);
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), &server, "");
    std::fs::write(
        d.path().join("sweep.toml"),
        "[[models]]\nkind = \"xgboost\"\nname = \"xgb\"\nn_rounds = 12\n",
    )
    .unwrap();
    let report = stdout_json(&run_ok(
        keyed(d.path()).args(["sweep"]).arg(&cfg).args(["--json"]),
    ));
    let run = &report["runs"][0];
    let st = server.state.lock().unwrap();
    let r = &st.runs[run["run_uuid"].as_str().unwrap()];
    let lines: Vec<Value> = r
        .history
        .values()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for fold in 0..3 {
        let key = format!("fold{fold}/valid_mlogloss");
        let with_key: Vec<&Value> = lines.iter().filter(|l| l.get(&key).is_some()).collect();
        assert_eq!(with_key.len(), 12, "{key}: one line per round");
        assert!(
            with_key
                .iter()
                .all(|l| l.get(format!("fold{fold}/train_mlogloss")).is_some()),
            "a round's train and validation loss share its line"
        );
    }
    let refit = lines
        .iter()
        .filter(|l| l.get("refit/train_mlogloss").is_some())
        .count();
    assert_eq!(refit, 12);
    let steps: Vec<u64> = lines.iter().map(|l| l["_step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (0..lines.len() as u64).collect::<Vec<_>>());
    let rounds: Vec<u64> = lines
        .iter()
        .filter(|l| l.get("fold0/valid_mlogloss").is_some())
        .map(|l| l["round"].as_u64().unwrap())
        .collect();
    assert_eq!(
        rounds,
        (0..12).collect::<Vec<_>>(),
        "each line says its round"
    );
}

/// A 100-epoch MLP reaches W&B as it trains: one history line per (fold, epoch) with the fold's
/// own keys and an `epoch` key to plot against.
#[cfg(feature = "torch")]
#[test]
fn a_100_epoch_mlp_reaches_wandb_one_history_line_per_epoch() {
    let server = WandbServer::start(KEY);
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), &server, "");
    std::fs::write(
        d.path().join("sweep.toml"),
        "[[models]]\nkind = \"mlp\"\nname = \"mlp\"\nhidden = \"8\"\nepochs = 100\nbatch_size = 256\n",
    )
    .unwrap();
    let report = stdout_json(&run_ok(
        keyed(d.path()).args(["sweep"]).arg(&cfg).args(["--json"]),
    ));
    let run = &report["runs"][0];
    assert_eq!(run["status"], "FINISHED", "{run}");
    let st = server.state.lock().unwrap();
    let r = &st.runs[run["run_uuid"].as_str().unwrap()];
    let lines: Vec<Value> = r
        .history
        .values()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for fold in 0..3 {
        let key = format!("fold{fold}/valid_loss");
        let epochs: Vec<u64> = lines
            .iter()
            .filter(|l| l.get(&key).is_some())
            .map(|l| l["epoch"].as_u64().unwrap())
            .collect();
        assert_eq!(epochs.len(), 100, "{key}: one line per epoch");
        let mut sorted = epochs.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), 100, "{key}: every epoch once");
        assert!(lines
            .iter()
            .filter(|l| l.get(&key).is_some())
            .all(|l| l.get(format!("fold{fold}/train_loss")).is_some()));
    }
    let steps: Vec<u64> = lines.iter().map(|l| l["_step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (0..lines.len() as u64).collect::<Vec<_>>());
}
