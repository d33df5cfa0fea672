//! An MLflow tracking server as runner's store (`--tracking-uri http://...`), against a real
//! `mlflow server` started here on loopback. Each "host" is a process with a replica folder of
//! its own (`RUNNER_SERVER_CACHE`), so the shards share nothing but the server: 8 shards of a
//! 40-config sweep train every config exactly once with `t1..t40` dense and one `v1`; a fresh
//! host lists, shows, replays bit for bit and predicts from what the server holds; the real
//! MLflow client reads every run; a shard killed with SIGKILL and run again while the server is
//! stopped for 10 s duplicates nothing and loses nothing; credentials are checked.
mod common;
#[path = "common/mlflow_server.rs"]
mod server;
use common::*;
use serde_json::Value;
use server::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = SHARD_CONFIG;
const FORTY: &str = FORTY_TREES;

/// runner on a host of its own: its replica of the server under `root/host`.
fn on_host(root: &Path, host: &str, url: &str) -> Command {
    let mut c = runner(root);
    c.env("RUNNER_SERVER_CACHE", root.join(host))
        .env_remove("MLFLOW_TRACKING_URI")
        .args(["--tracking-uri", url]);
    for v in [
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
    ] {
        c.env_remove(v);
    }
    c
}

/// `runner runs --json` as a host sees the server.
fn server_runs(root: &Path, host: &str, url: &str) -> Vec<Value> {
    let out = run_ok(on_host(root, host, url).args(["runs", "--json"]));
    stdout_json(&out)["runs"].as_array().unwrap().clone()
}

fn config_name(run: &Value) -> &str {
    run["name"].as_str().unwrap().split_once('-').unwrap().1
}

fn numbers(runs: &[Value]) -> Vec<String> {
    (runs.iter())
        .map(|r| r["version"].as_str().unwrap().to_string())
        .collect()
}

fn dense(n: usize) -> Vec<String> {
    (1..=n).map(|v| format!("t{v}")).collect()
}

#[test]
fn eight_shards_on_eight_hosts_number_and_train_every_config_once_through_a_server() {
    let (root, port, _server) = server_in_temp_folder();
    let url = format!("http://127.0.0.1:{port}");
    let cfg = write_config(root.path(), CONFIG, FORTY);
    let children: Vec<_> = (0..8)
        .map(|i| {
            on_host(root.path(), &format!("host{i}"), &url)
                .args(["sweep", "--jobs", "1", "--json", "--shard"])
                .arg(format!("{i}/8"))
                .arg(&cfg)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = (children.into_iter())
        .map(|child| child.wait_with_output().unwrap())
        .collect();
    let said: Vec<_> = (outputs.iter())
        .map(|out| String::from_utf8_lossy(&out.stderr))
        .collect();
    assert!(outputs.iter().all(|o| o.status.success()), "{said:#?}");
    let reports: Vec<Value> = outputs.iter().map(stdout_json).collect();
    if !reports.iter().any(|r| r["sweep"]["complete"] == true) {
        eprintln!("no shard completed the sweep; what the shards said: {said:#?}");
    }
    let name = the_one_sweep(&reports);

    // A host that took no part reads it all from the server.
    let runs = server_runs(root.path(), "fresh", &url);
    assert_eq!(numbers(&runs), dense(40), "t1..t40, unique and dense");
    // A copy made without its number (a replica of a release that read the numbers before the
    // runs: a run numbered and trained in between was copied as no training run, for good) is
    // copied again with it.
    let replica = std::fs::read_dir(root.path().join("fresh")).unwrap();
    let replica = replica
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    let db = rusqlite::Connection::open(replica.join("mlflow.db")).unwrap();
    let gone = db
        .execute("DELETE FROM runner_training_runs WHERE version = 5", [])
        .unwrap();
    assert_eq!(gone, 1);
    drop(db);
    let runs = server_runs(root.path(), "fresh", &url);
    assert_eq!(numbers(&runs), dense(40), "t5 copied again with its number");
    let configs: BTreeSet<&str> = runs.iter().map(config_name).collect();
    assert_eq!(configs.len(), 40, "every config exactly once");
    assert!(runs.iter().all(|r| r["status"] == "FINISHED"));
    let etl: BTreeSet<&str> = (runs.iter())
        .map(|r| r["etl_version"].as_str().unwrap())
        .collect();
    assert_eq!(etl, BTreeSet::from(["v1"]), "one ETL version");
    let status = stdout_json(&run_ok(on_host(root.path(), "status-host", &url).args([
        "sweep-status",
        &name,
        "--json",
    ])));
    assert_eq!(status["complete"], true, "{status}");
    let board = status["leaderboard"]["runs"].as_array().unwrap();
    assert_eq!(board.len(), 40);

    // Replayed from what the server holds, bit for bit; shown and predicted from there too.
    let replay = run_ok(on_host(root.path(), "fresh", &url).args(["replay", "t7", "--check"]));
    let said = String::from_utf8_lossy(&replay.stdout);
    assert!(said.contains("bit for bit"), "{said}");
    let show = run_ok(on_host(root.path(), "show-host", &url).args(["show", "t7"]));
    assert!(String::from_utf8_lossy(&show.stdout).contains("t7-tree["));
    // A number the server does not have is said as the server's, not as the host's copy.
    let missing = (on_host(root.path(), "show-host", &url).args(["show", "t99"]))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && said.contains(&format!("t99 is not in {url};")),
        "{said}"
    );
    let input = root.path().join("new.csv");
    std::fs::write(&input, wine_rows(5)).unwrap();
    let predicted = run_ok(
        on_host(root.path(), "predict-host", &url)
            .args(["predict", "t7", "--input"])
            .arg(&input),
    );
    let text = String::from_utf8_lossy(&predicted.stdout).into_owned();
    let labels: Vec<f64> = (text.lines().skip(1))
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(labels.len(), 5, "five predictions: {text}");

    // The other commands, each on a host that took no part: diff, reload-etl, export, eda.
    let diff = run_ok(on_host(root.path(), "diff-host", &url).args(["diff", "t1", "t7", "--json"]));
    let diff = stdout_json(&diff);
    assert!(!diff["settings"].as_array().unwrap().is_empty(), "{diff}");
    assert!(!diff["metrics"].as_array().unwrap().is_empty(), "{diff}");
    let table = root.path().join("v1.parquet");
    run_ok(
        on_host(root.path(), "etl-host", &url)
            .args(["reload-etl", "v1", "--out"])
            .arg(&table),
    );
    assert!(std::fs::metadata(&table).unwrap().len() > 0);
    let exported = root.path().join("exported");
    run_ok(
        on_host(root.path(), "export-host", &url)
            .args(["export", "t7", "--format", "onnx", "--out"])
            .arg(&exported),
    );
    assert!(exported.join("model_t7.onnx").is_file());
    let eda = run_ok(on_host(root.path(), "eda-host", &url).arg("eda").arg(&cfg));
    let said = String::from_utf8_lossy(&eda.stdout);
    assert!(
        said.contains("Logged as MLflow run eda-v1 (") && said.contains(&url),
        "{said}"
    );

    // Registered on the server's Model Registry from a host that did not train it: MLflow's
    // client loads models:/trees@champion from the server and predicts as runner does, and
    // runner on yet another host predicts with the registered model too.
    let said = run_ok(
        on_host(root.path(), "fresh", &url)
            .args(["register", "t7", "--name", "trees", "--alias", "champion"]),
    );
    let said = String::from_utf8_lossy(&said.stdout);
    assert!(said.contains("registered as trees version 1"), "{said}");
    let read = json_of(
        Command::new(mlflow_python())
            .arg(repo().join("tests/pyfunc_check.py"))
            .arg(&url)
            .arg(&input)
            .arg("models:/trees@champion"),
    );
    let pyfunc = read["predictions"]["models:/trees@champion"]["prediction"].clone();
    let pyfunc: Vec<f64> = serde_json::from_value(pyfunc).unwrap();
    assert_eq!(pyfunc, labels, "{read}");
    let champion = &read["registered"]["trees"]["aliases"]["champion"];
    assert_eq!(champion.to_string().trim_matches('"'), "1", "{read}");
    let by_alias = run_ok(
        on_host(root.path(), "alias-host", &url)
            .args(["predict", "models:/trees@champion", "--input"])
            .arg(&input),
    );
    assert_eq!(String::from_utf8_lossy(&by_alias.stdout), text);

    // The real MLflow client reads every run on the server: one parent over the 40.
    let seen = read_server(&url);
    let mlflow_runs = experiment_runs(&seen, "shards");
    let parents: Vec<&Value> = (mlflow_runs.iter())
        .filter(|r| r["tags"]["runner.sweep"] == "parent")
        .collect();
    assert_eq!(parents.len(), 1, "one parent run for all shards");
    assert_eq!(parents[0]["status"], "FINISHED");
    assert_eq!(parents[0]["run_name"], "sweep-t1-t40");
    let parent_id = parents[0]["run_id"].as_str().unwrap();
    let children: Vec<&Value> = (mlflow_runs.iter())
        .filter(|r| r["tags"]["mlflow.parentRunId"] == parent_id)
        .collect();
    assert_eq!(children.len(), 40);
    for run in children {
        assert_eq!(run["status"], "FINISHED");
        assert!(run["params"]["max_depth"].is_string(), "{run}");
        assert!(run["metrics"]["accuracy"].is_number(), "{run}");
        assert_eq!(run["inputs"][0]["tags"]["mlflow.data.context"], "training");
        let files = artifact_names(run);
        assert!(
            files.iter().any(|f| f.starts_with("predictions_")),
            "{files:?}"
        );
    }

    // Wrong credentials are named before anything happens; right ones pass.
    let proxy_port = free_port();
    let _proxy = auth_proxy(proxy_port, &url);
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let mut wrong = on_host(root.path(), "auth-host", &proxy);
    wrong
        .env("MLFLOW_TRACKING_USERNAME", "alice")
        .env("MLFLOW_TRACKING_PASSWORD", "wrong")
        .args(["runs"]);
    let out = wrong.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused the credentials") && err.contains("MLFLOW_TRACKING_PASSWORD"),
        "{err}"
    );
    let mut right = on_host(root.path(), "auth-host", &proxy);
    right
        .env("MLFLOW_TRACKING_USERNAME", "alice")
        .env("MLFLOW_TRACKING_PASSWORD", "s3cret")
        .args(["runs", "--json"]);
    let listed = stdout_json(&run_ok(&mut right));
    let listed = listed["runs"].as_array().unwrap();
    assert_eq!(listed.len(), 41, "the 40 and t7's replay, a run of its own");
    assert_eq!(listed[40]["version"], "t41");
}

/// The first `n` rows of the white wine set, features only, as CSV.
fn wine_rows(n: usize) -> String {
    let text = std::fs::read_to_string(repo().join("tests/data/winequality-white.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let cut = |l: &str| l.rsplit_once(',').unwrap().0.to_string();
    let mut out = cut(header) + "\n";
    for l in lines.take(n) {
        out.push_str(&cut(l));
        out.push('\n');
    }
    out
}

/// A sweep of `n` forests of 400 trees and more: each trains for seconds, long enough to be
/// killed mid-run.
fn slow_forests(n: usize) -> String {
    let sizes: Vec<String> = (0..n).map(|i| (400 + i).to_string()).collect();
    format!(
        "[[models]]\nkind = \"random_forest\"\nname = \"forest\"\nn_trees = [{}]\n",
        sizes.join(", ")
    )
}

/// Waits until host `host`'s view of the server shows what `done` wants.
fn wait_for_runs(root: &Path, host: &str, url: &str, done: impl Fn(&[Value]) -> bool) {
    let started = Instant::now();
    loop {
        let runs = server_runs(root, host, url);
        if done(&runs) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "never reached: {runs:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_shard_killed_and_run_again_while_the_server_is_down_for_10_s_loses_and_repeats_nothing() {
    let (root, port, server) = server_in_temp_folder();
    let url = format!("http://127.0.0.1:{port}");
    let cfg: PathBuf = write_config(root.path(), CONFIG, &slow_forests(4));
    let shard = |i: usize| {
        let mut c = on_host(root.path(), &format!("host{i}"), &url);
        c.args(["sweep", "--jobs", "1", "--shard"])
            .arg(format!("{i}/2"))
            .arg(&cfg)
            .env("RUNNER_MLFLOW_RETRY_S", "300");
        c
    };
    let mut child = shard(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once its first config has finished (here; maybe not yet on the server) and its
    // second is training.
    wait_for_runs(root.path(), "host0", &url, |runs| {
        runs.iter().any(|r| r["status"] == "FINISHED")
            && runs.iter().any(|r| r["status"] == "RUNNING")
    });
    child.kill().unwrap();
    child.wait().unwrap();

    // Run again on its host while the server is stopped for 10 s.
    drop(server);
    let retry = shard(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(10));
    let _server = mlflow_server(root.path(), port);
    let out = retry.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("MLflow server:"), "nothing was lost: {err}");
    run_ok(&mut shard(1));

    let runs = server_runs(root.path(), "fresh", &url);
    assert_eq!(
        numbers(&runs),
        dense(5),
        "four configs and one killed run: {runs:?}"
    );
    let finished: Vec<&str> = (runs.iter())
        .filter(|r| r["status"] == "FINISHED")
        .map(config_name)
        .collect();
    let distinct: BTreeSet<&&str> = finished.iter().collect();
    assert_eq!(finished.len(), 4, "{runs:?}");
    assert_eq!(distinct.len(), 4, "exactly one FINISHED run per config");
    let killed: Vec<&Value> = runs.iter().filter(|r| r["status"] == "KILLED").collect();
    assert_eq!(killed.len(), 1, "the killed run stays, marked: {runs:?}");

    // The server itself says so to MLflow's client, with the reason.
    let seen = read_server(&url);
    let on_server = experiment_runs(&seen, "shards");
    let killed_there: Vec<&Value> = (on_server.iter())
        .filter(|r| r["status"] == "KILLED")
        .collect();
    assert_eq!(killed_there.len(), 1);
    assert!(killed_there[0]["tags"]["runner.killed_reason"].is_string());
    let parent = (on_server.iter())
        .find(|r| r["tags"]["runner.sweep"] == "parent")
        .unwrap();
    assert_eq!(parent["status"], "FINISHED", "the sweep is complete");
}

/// A shard whose host went silent (killed, its node gone): another host, run later with a short
/// `RUNNER_STALE_AFTER`, finds its running run's heartbeat on the server stale, marks it KILLED
/// there and trains its config; nothing is trained twice.
#[test]
fn another_host_marks_a_silent_hosts_run_killed_and_trains_its_config() {
    let (root, port, _server) = server_in_temp_folder();
    let url = format!("http://127.0.0.1:{port}");
    let cfg: PathBuf = write_config(root.path(), CONFIG, &slow_forests(2));
    let sweep_on = |host: &str| {
        let mut c = on_host(root.path(), host, &url);
        c.args(["sweep", "--jobs", "1"]).arg(&cfg);
        c
    };
    let mut child = sweep_on("host-a")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed while its second config trains, on a host that never runs runner again.
    wait_for_runs(root.path(), "host-a", &url, |runs| {
        runs.iter().any(|r| r["status"] == "FINISHED")
            && runs.iter().any(|r| r["status"] == "RUNNING")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let out = run_ok(sweep_on("host-b").env("RUNNER_STALE_AFTER", "2"));
    let said = String::from_utf8_lossy(&out.stdout);

    let runs = server_runs(root.path(), "fresh", &url);
    let finished: Vec<&str> = (runs.iter())
        .filter(|r| r["status"] == "FINISHED")
        .map(config_name)
        .collect();
    assert_eq!(finished.len(), 2, "{said}\n{runs:?}");
    assert_ne!(finished[0], finished[1], "each config once");
    let killed: Vec<&Value> = runs.iter().filter(|r| r["status"] == "KILLED").collect();
    assert_eq!(killed.len(), 1, "{runs:?}");
    let seen = read_server(&url);
    let on_server = experiment_runs(&seen, "shards");
    let reason = (on_server.iter())
        .find(|r| r["status"] == "KILLED")
        .map(|r| {
            r["tags"]["runner.killed_reason"]
                .as_str()
                .unwrap_or_default()
        })
        .unwrap();
    assert!(reason.contains("heartbeat stale"), "{reason}");

    // A host that was only silent (frozen here, as a node cut off from the network is) and
    // comes back with its run finished: the server's verdict stands, there and on that host,
    // and the config keeps one FINISHED run.
    let dir = root.path().join("comeback");
    std::fs::create_dir_all(&dir).unwrap();
    let config = CONFIG.replace("\"shards\"", "\"comeback\"");
    let cfg = write_config(&dir, &config, &slow_forests(2));
    let sweep_on = |host: &str| {
        let mut c = on_host(root.path(), host, &url);
        c.args(["sweep", "--jobs", "1"]).arg(&cfg);
        c
    };
    let comeback = |runs: &[Value]| -> Vec<Value> {
        (runs.iter())
            .filter(|r| r["experiment"] == "comeback")
            .cloned()
            .collect()
    };
    let child = sweep_on("host-c")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_runs(root.path(), "host-d", &url, |runs| {
        let runs = comeback(runs);
        runs.iter().any(|r| r["status"] == "FINISHED")
            && runs.iter().any(|r| r["status"] == "RUNNING")
    });
    let signal = |name: &str| {
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap()
            .success());
    };
    signal("-STOP");
    std::thread::sleep(Duration::from_secs(3));
    run_ok(sweep_on("host-d").env("RUNNER_STALE_AFTER", "2"));
    signal("-CONT");
    let back = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&back.stderr);
    assert!(said.contains("the server's stands"), "{said}");

    let ends = |host: &str| -> Vec<(String, String)> {
        let mut ends: Vec<(String, String)> = comeback(&server_runs(root.path(), host, &url))
            .iter()
            .map(|r| {
                (
                    r["version"].as_str().unwrap().into(),
                    r["status"].as_str().unwrap().into(),
                )
            })
            .collect();
        ends.sort();
        ends
    };
    let seen = ends("fresh-2");
    let finished = (seen.iter()).filter(|(_, s)| s == "FINISHED").count();
    assert_eq!(finished, 2, "{seen:?}\n{said}");
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        ends("host-c"),
        seen,
        "the host that came back agrees with the server"
    );
    let on_server = experiment_runs(&read_server(&url), "comeback");
    let finished: BTreeSet<&str> = (on_server.iter())
        .filter(|r| r["status"] == "FINISHED" && r["tags"]["runner.sweep"] != "parent")
        .map(|r| r["params"]["n_trees"].as_str().unwrap())
        .collect();
    assert_eq!(
        finished.len(),
        2,
        "each config FINISHED once: {on_server:?}"
    );
}
