//! `tracking.server`: runs mirrored to a real `mlflow server` (PyPI mlflow 3.17.2, started here
//! on loopback) and read back with the real MLflow client: params, tags, metrics with their
//! history, the dataset input, artifacts, the sweep's parent; the server's batch limits; a
//! server stopped mid-sweep; credentials through a checking proxy.
mod common;
#[path = "common/mlflow_server.rs"]
mod server;
use common::*;
use serde_json::Value;
use server::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
experiment = "mirror"
seed = 5
sweeps = ["sweep.toml"]
[data]
source = "builtin:winequality-red"
target = "quality"
[cv]
folds = 3
"#;

/// Training runs by their number (`t1`, ...).
fn by_version(runs: &[Value]) -> BTreeMap<String, Value> {
    (runs.iter())
        .filter_map(|r| {
            let v = r["tags"]["runner.training_version"].as_str()?;
            Some((v.to_string(), r.clone()))
        })
        .collect()
}

fn parent_of(runs: &[Value]) -> &Value {
    (runs.iter())
        .find(|r| r["tags"]["runner.sweep"] == "parent")
        .expect("a parent run")
}

/// The server's copy of each run equals the store's: params, tags, metrics and their history,
/// the dataset input, artifacts (but the logged model's folder), status; one parent over them.
fn assert_mirrored(local: &[Value], server: &[Value]) {
    let (local_runs, server_runs) = (by_version(local), by_version(server));
    assert_eq!(
        local_runs.keys().collect::<Vec<_>>(),
        server_runs.keys().collect::<Vec<_>>()
    );
    let server_parent = parent_of(server);
    assert_eq!(server_parent["status"], "FINISHED");
    assert_eq!(server_parent["run_name"], parent_of(local)["run_name"]);
    for (v, l) in &local_runs {
        let s = &server_runs[v];
        assert_eq!(s["status"], "FINISHED", "{v}");
        assert_eq!(s["params"], l["params"], "{v}");
        // The parent's id is the server's; who owns the run is the store's own record.
        let own = ["mlflow.parentRunId", "runner.owner"];
        let differ: Vec<&String> = (l["tags"].as_object().unwrap().iter())
            .filter(|(k, value)| !own.contains(&k.as_str()) && &s["tags"][k.as_str()] != *value)
            .map(|(k, _)| k)
            .collect();
        assert!(
            differ.is_empty(),
            "{v}: tags differ on the server: {differ:?}"
        );
        assert_eq!(s["tags"]["mlflow.parentRunId"], server_parent["run_id"]);
        assert_eq!(s["metrics"], l["metrics"], "{v}");
        for (k, points) in l["history"].as_object().unwrap() {
            let steps = |p: &Value| -> Vec<(i64, f64)> {
                (p.as_array().unwrap().iter())
                    .map(|x| (x[0].as_i64().unwrap(), x[1].as_f64().unwrap_or(f64::NAN)))
                    .collect()
            };
            assert_eq!(
                format!("{:?}", steps(&s["history"][k])),
                format!("{:?}", steps(points)),
                "{v} history of {k}"
            );
        }
        assert_eq!(s["inputs"][0]["digest"], l["inputs"][0]["digest"], "{v}");
        let local_files: Vec<&Value> = (l["artifacts"].as_array().unwrap().iter())
            .filter(|a| *a != "model")
            .collect();
        let server_files: Vec<&Value> = s["artifacts"].as_array().unwrap().iter().collect();
        assert_eq!(server_files, local_files, "{v} artifacts");
    }
}

fn sweep_to(dir: &Path, cfg: &Path, url: &str) -> Command {
    let mut c = runner(dir);
    c.arg("sweep")
        .arg(cfg)
        .args(["--set"])
        .arg(format!("tracking.server={url}"));
    for v in [
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
    ] {
        c.env_remove(v);
    }
    c
}

#[test]
fn a_sweep_mirrored_to_a_real_server_reads_back_equal_and_credentials_are_checked() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = mlflow_server(root.path(), port);
    let url = format!("http://127.0.0.1:{port}");
    let sweep = r#"
[[models]]
kind = "decision_tree"
name = "tree"
max_depth = [3, 6]

[[models]]
kind = "xgboost"
name = "xgb"
n_rounds = 30
"#;
    let dir = root.path().join("a");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = write_config(&dir, CONFIG, sweep);
    run_ok(&mut sweep_to(&dir, &cfg, &url));
    let local = read_with_mlflow(&dir.join("mlflow.db"));
    let server = read_server(&url);
    assert_mirrored(
        &experiment_runs(&local, "mirror"),
        &experiment_runs(&server, "mirror"),
    );

    // Credentials: through a proxy that checks them, right ones pass, a wrong one is named.
    let proxy_port = free_port();
    let _proxy = auth_proxy(proxy_port, &url);
    let proxied = format!("http://127.0.0.1:{proxy_port}");
    let dir = root.path().join("b");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = write_config(&dir, CONFIG, sweep);
    let wrong = sweep_to(&dir, &cfg, &proxied)
        .env("MLFLOW_TRACKING_USERNAME", "alice")
        .env("MLFLOW_TRACKING_PASSWORD", "wrong")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(
        err.contains("refused the credentials (HTTP 401)")
            && err.contains("MLFLOW_TRACKING_PASSWORD"),
        "{err}"
    );
    assert!(!dir.join("mlflow.db").exists(), "nothing written");
    run_ok(
        sweep_to(&dir, &cfg, &proxied)
            .env("MLFLOW_TRACKING_USERNAME", "alice")
            .env("MLFLOW_TRACKING_PASSWORD", "s3cret")
            .args(["--only", "tree"]),
    );
    run_ok(
        sweep_to(&dir, &cfg, &proxied)
            .env("MLFLOW_TRACKING_TOKEN", "tok-123")
            .args(["--only", "xgb"]),
    );
    let server = read_server(&url);
    let runs = experiment_runs(&server, "mirror");
    let finished = runs.iter().filter(|r| r["status"] == "FINISHED").count();
    // The first sweep's 3 runs and parent, the trees' 2 and parent, xgb's 1 and parent.
    assert_eq!(finished, 4 + 3 + 2, "every run and parent, FINISHED");

    // MLFLOW_TRACKING_URI=http://... (a team's shell): the server is the store, as with
    // --tracking-uri: nothing is written beside the config, and another host (a replica folder
    // of its own) lists the run.
    let dir = root.path().join("c");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = write_config(&dir, CONFIG, sweep);
    let on_host = |host: &str| {
        let mut c = runner(&dir);
        c.env("MLFLOW_TRACKING_URI", &url)
            .env("RUNNER_SERVER_CACHE", root.path().join(host));
        c
    };
    run_ok(
        on_host("host-a")
            .arg("sweep")
            .arg(&cfg)
            .args(["--only", "xgb"]),
    );
    assert!(!dir.join("mlflow.db").exists(), "the server is the store");
    let listed = stdout_json(&run_ok(on_host("host-b").args(["runs", "--json"])));
    let runs = listed["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{listed}");
    assert_eq!(runs[0]["version"], "t1", "numbered on the server: {listed}");
    let server = read_server(&url);
    assert_eq!(experiment_runs(&server, "mirror").len(), 9 + 2);

    // TLS, as the MLflow client reads it: a certificate runner cannot check is named at once
    // (not retried as a server that does not answer), before anything is written; the
    // authority's PEM in MLFLOW_TRACKING_SERVER_CERT_PATH, or MLFLOW_TRACKING_INSECURE_TLS,
    // lets the runs through.
    let tls_port = free_port();
    let _tls = tls_auth_proxy(tls_port, &url);
    let secured = format!("https://127.0.0.1:{tls_port}");
    let over_tls = |folder: &str| {
        let dir = root.path().join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = write_config(&dir, CONFIG, sweep);
        let mut c = sweep_to(&dir, &cfg, &secured);
        c.env("MLFLOW_TRACKING_TOKEN", "tok-123")
            .env("RUNNER_MLFLOW_RETRY_S", "300")
            .env_remove("MLFLOW_TRACKING_SERVER_CERT_PATH")
            .env_remove("MLFLOW_TRACKING_INSECURE_TLS")
            .args(["--only", "tree"]);
        c
    };
    let untrusted = over_tls("d").output().unwrap();
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success());
    assert!(
        err.contains("TLS certificate runner does not trust")
            && err.contains("MLFLOW_TRACKING_SERVER_CERT_PATH"),
        "{err}"
    );
    assert!(!root.path().join("d/mlflow.db").exists(), "nothing written");
    let ca = repo().join("tests/data/tls/tls-ca.pem");
    run_ok(over_tls("d").env("MLFLOW_TRACKING_SERVER_CERT_PATH", &ca));
    run_ok(over_tls("e").env("MLFLOW_TRACKING_INSECURE_TLS", "true"));
    let server = read_server(&url);
    let trees = (experiment_runs(&server, "mirror").iter())
        .filter(|r| r["status"] == "FINISHED")
        .count();
    assert_eq!(
        trees,
        9 + 2 + 2 * 3,
        "both TLS sweeps' runs and parents reached the server"
    );
}

#[test]
fn batches_stay_within_the_servers_limits() {
    use runner::track::mlflow_rest::{settings, MlflowServer};
    use runner::track::{Metric, RunSpec, RunStatus, TrackedRun, Tracker};
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = mlflow_server(root.path(), port);
    let url = format!("http://127.0.0.1:{port}");
    let server = MlflowServer::open(settings(&url, "test").unwrap()).unwrap();
    let many = |prefix: &str, n: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("{prefix}{i}"), i.to_string()))
            .collect()
    };
    let spec = RunSpec {
        run_uuid: "0123456789abcdef0123456789abcdef".into(),
        name: "limits".into(),
        experiment: "limits".into(),
        user: "test".into(),
        start_ms: 1,
        git_commit: String::new(),
        params: many("p", 250),
        tags: many("t", 250),
        dataset: None,
    };
    let run = TrackedRun {
        spec,
        version: None,
        kind: "test".into(),
        record: Value::Null,
        curve_axis: "step",
        group: None,
    };
    server.create_run(&run).unwrap();
    let uuid = &run.spec.run_uuid;
    let points: Vec<Metric> = (0..2500)
        .map(|i| Metric {
            key: "loss".into(),
            value: 1.0 / (i + 1) as f64,
            step: i,
            timestamp_ms: 1000 + i,
        })
        .collect();
    server.log_metrics(uuid, &points).unwrap();
    server.finish_run(uuid, RunStatus::Finished, 5000).unwrap();
    assert!(server.close().is_empty(), "everything sent");
    let read = read_server(&url);
    let run = &experiment_runs(&read, "limits")[0];
    assert_eq!(run["params"].as_object().unwrap().len(), 250);
    assert_eq!(run["tags"]["t249"], "249");
    assert_eq!(run["history"]["loss"].as_array().unwrap().len(), 2500);
    assert_eq!(run["status"], "FINISHED");
}

fn local_runs(dir: &Path) -> Vec<Value> {
    let out = run_ok(runner(dir).args(["runs", "--json"]));
    stdout_json(&out)["runs"].as_array().unwrap().clone()
}

#[test]
fn a_server_stopped_for_10_s_mid_sweep_misses_nothing_and_one_that_stays_down_is_named() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = mlflow_server(root.path(), port);
    let url = format!("http://127.0.0.1:{port}");
    let slow = r#"
[[models]]
kind = "random_forest"
name = "forest"
n_trees = [300, 301, 302]
"#;
    let dir: PathBuf = root.path().join("a");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = write_config(&dir, CONFIG, slow);
    let child = sweep_to(&dir, &cfg, &url)
        .args(["--jobs", "1"])
        .env("RUNNER_MLFLOW_RETRY_S", "300")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut child = child;
    while !(dir.join("mlflow.db").exists()
        && local_runs(&dir).iter().any(|r| r["status"] == "FINISHED"))
    {
        if started.elapsed() > Duration::from_secs(300) || child.try_wait().unwrap().is_some() {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("no run finished: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);
    std::thread::sleep(Duration::from_secs(10));
    let _server = mlflow_server(root.path(), port);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("MLflow server:"), "nothing was lost: {err}");
    let local = read_with_mlflow(&dir.join("mlflow.db"));
    assert_mirrored(
        &experiment_runs(&local, "mirror"),
        &experiment_runs(&read_server(&url), "mirror"),
    );

    // A server that never answers: the sweep stops before writing anything, and says why.
    let dir = root.path().join("b");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = write_config(&dir, CONFIG, slow);
    let down = format!("http://127.0.0.1:{}", free_port());
    let out = sweep_to(&dir, &cfg, &down)
        .env("RUNNER_MLFLOW_RETRY_S", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&down) && err.contains("did not answer"),
        "{err}"
    );
    assert!(!dir.join("mlflow.db").exists(), "nothing written");
}
