//! Sharded and named sweeps: shards started at once train every config exactly once into one
//! sweep (one parent run, one ETL version, dense numbers); a killed shard run again trains only
//! what is missing; the index and count come from Kubernetes' and Slurm's variables; a sweep
//! run again continues, `--restart` starts anew. These use the SQLite store.
mod common;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = SHARD_CONFIG;
const FORTY: &str = FORTY_TREES;

/// `runner runs --json` of the store in `dir`: the training runs.
fn runs(dir: &Path) -> Vec<Value> {
    let out = run_ok(runner(dir).args(["runs", "--json"]));
    stdout_json(&out)["runs"].as_array().unwrap().clone()
}

/// A listed run's config: its name without the `tN-` in front.
fn config_name(run: &Value) -> &str {
    let name = run["name"].as_str().unwrap();
    name.split_once('-').unwrap().1
}

fn sweep_status(dir: &Path, name: &str) -> Value {
    stdout_json(&run_ok(runner(dir).args(["sweep-status", name, "--json"])))
}

/// The names of the configs `runner sweep ... --json` trained.
fn trained_names(report: &Value) -> BTreeSet<String> {
    let runs = report["runs"].as_array().unwrap();
    runs.iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// Shards `0/n .. n-1/n` of the sweep of `cfg`, started at once: their `--json` reports, each
/// asserted to succeed.
fn shards_at_once(dir: &Path, cfg: &Path, n: usize) -> Vec<Value> {
    let children: Vec<_> = (0..n)
        .map(|i| {
            runner(dir)
                .args(["sweep", "--jobs", "1", "--json", "--shard"])
                .arg(format!("{i}/{n}"))
                .arg(cfg)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    (children.into_iter())
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{err}");
            stdout_json(&out)
        })
        .collect()
}

#[test]
fn eight_shards_at_once_train_every_config_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG, FORTY);
    let reports = shards_at_once(dir.path(), &cfg, 8);
    let name = the_one_sweep(&reports);

    let runs = runs(dir.path());
    let versions: Vec<&str> = runs
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    let dense: Vec<String> = (1..=40).map(|v| format!("t{v}")).collect();
    assert_eq!(versions, dense, "t1..t40, unique and dense");
    let configs: BTreeSet<&str> = runs.iter().map(config_name).collect();
    assert_eq!(configs.len(), 40, "every config exactly once");
    assert!(runs.iter().all(|r| r["status"] == "FINISHED"));
    let etl: BTreeSet<&str> = runs
        .iter()
        .map(|r| r["etl_version"].as_str().unwrap())
        .collect();
    assert_eq!(etl.len(), 1, "one ETL version: {etl:?}");

    let status = sweep_status(dir.path(), &name);
    assert_eq!(status["complete"], true);
    let states: Vec<&str> = (status["configs"].as_array().unwrap().iter())
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["finished"; 40]);
    assert_eq!(
        status["leaderboard"]["runs"].as_array().unwrap().len(),
        40,
        "the whole sweep's leaderboard"
    );

    // The real MLflow client sees one parent, finished, over all 40 runs.
    let store = read_with_mlflow(&dir.path().join("mlflow.db"));
    let mlflow_runs = experiment_runs(&store, "shards");
    let parents: Vec<&Value> = (mlflow_runs.iter())
        .filter(|r| r["tags"]["runner.sweep"] == "parent")
        .collect();
    assert_eq!(parents.len(), 1, "one parent run for all shards");
    assert_eq!(parents[0]["status"], "FINISHED");
    assert_eq!(parents[0]["run_name"], "sweep-t1-t40");
    assert_eq!(parents[0]["tags"]["runner.sweep_name"], name.as_str());
    let parent_id = parents[0]["run_id"].as_str().unwrap();
    let children = (mlflow_runs.iter())
        .filter(|r| r["tags"]["mlflow.parentRunId"] == parent_id)
        .count();
    assert_eq!(children, 40);
}

/// A TPE search of 9 trials over random forests.
const SEARCH: &str = r#"
[search]
strategy = "tpe"
trials = 9
startup_trials = 3

[[models]]
kind = "random_forest"
name = "forest"
n_trees = { low = 5, high = 30, log = true }
max_depth = { low = 2, high = 10 }
"#;

/// A trial's number from its run name (`t3-forest#5[...]`), or `None` for the best run.
fn trial_number(run: &Value) -> Option<u64> {
    let name = config_name(run);
    let number = name.split_once('#')?.1.split('[').next()?;
    number.parse().ok()
}

/// A TPE search split over shards: each shard takes its share of the trial numbers and asks
/// with every shard's ended trials in the store; the best trial is trained in full once, by
/// the shard that ends last, which completes the parent; a shard run again has nothing left.
#[test]
fn a_sharded_search_learns_from_every_shard_and_trains_its_best_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG, SEARCH);
    let shard = |i: &str| sweep_json(dir.path(), &cfg, &["--jobs", "1", "--shard", i]);
    let first = shard("0/2");
    assert_eq!(
        first["sweep"]["complete"], false,
        "shard 1's trials are missing"
    );
    let half = sweep_status(dir.path(), first["sweep"]["name"].as_str().unwrap());
    assert_eq!(half["complete"], false, "{half}");
    assert_eq!(half["searches"][0]["ended"], 5, "{half}");
    assert!(half["searches"][0]["best_run"].is_null(), "{half}");
    let numbers = |runs: &[Value]| runs.iter().map(trial_number).collect::<Vec<_>>();
    let after_first = runs(dir.path());
    assert_eq!(
        numbers(&after_first),
        [1, 3, 5, 7, 9].map(Some),
        "no best run yet"
    );
    let second = shard("1/2");
    assert_eq!(second["sweep"]["complete"], true, "{}", second["sweep"]);
    let all = runs(dir.path());
    assert_eq!(
        numbers(&all[5..]),
        [Some(2), Some(4), Some(6), Some(8), None],
        "shard 1's trials, then the best"
    );
    // Shard 1's first trial was asked knowing shard 0's five.
    let show = |v: &str| stdout_json(&run_ok(runner(dir.path()).args(["show", v, "--json"])));
    let search = show("t6")["record"]["search"].clone();
    assert_eq!(search["shard"], "1/2", "{search}");
    assert_eq!(search["ended_before"], 5, "{search}");
    // The best run is the best trial of both shards, trained in full.
    let score = |r: &Value| r["metrics"]["accuracy"]["mean"].as_f64();
    let finished = (all.iter()).filter(|r| r["status"] == "FINISHED" && trial_number(r).is_some());
    let top = finished.filter_map(score).fold(f64::MIN, f64::max);
    assert_eq!(score(&all[9]), Some(top), "{:?}", all[9]);
    assert_eq!(
        second["runs"].as_array().unwrap().len(),
        10,
        "the whole search"
    );
    let name = second["sweep"]["name"].as_str().unwrap();
    let status = sweep_status(dir.path(), name);
    assert_eq!(status["complete"], true, "{status}");
    let search = &status["searches"][0];
    assert_eq!(search["ended"], 9, "{status}");
    assert_eq!(search["best_run"], "t10", "{status}");
    let board = status["leaderboard"]["runs"].as_array().unwrap();
    assert_eq!(board.len(), 10, "the search's runs on the leaderboard");
    // Run again: nothing left to train.
    let again = shard("0/2");
    assert_eq!(again["sweep"]["complete"], true);
    assert_eq!(runs(dir.path()).len(), 10);
    let replay = stdout_json(&run_ok(
        runner(dir.path()).args(["replay", "t6", "--check", "--json"]),
    ));
    assert_eq!(replay["identical"], true, "{replay}");

    // Three shards at once: every trial number once, one best run.
    let at_once = tempfile::tempdir().unwrap();
    let cfg = write_config(at_once.path(), CONFIG, SEARCH);
    let reports = shards_at_once(at_once.path(), &cfg, 3);
    assert!(reports.iter().any(|r| r["sweep"]["complete"] == true));
    let mut got = numbers(&runs(at_once.path()));
    got.sort();
    let mut want: Vec<Option<u64>> = (1..=9).map(Some).collect();
    want.insert(0, None);
    assert_eq!(got, want, "each trial once, one best run");
    // A search bounded by time alone cannot tell its shards when it has ended.
    let timed = tempfile::tempdir().unwrap();
    let untold = SEARCH.replace("trials = 9", "timeout_s = 30");
    let cfg = write_config(timed.path(), CONFIG, &untold);
    let err = refused(
        runner(timed.path())
            .args(["sweep", "--shard", "0/2"])
            .arg(&cfg),
    );
    assert!(err.contains("needs `trials`"), "{err}");
    assert!(!timed.path().join("mlflow.db").exists());
}

/// `runner runs --json` polled until `ready` holds of the runs, or 120 s.
fn wait_for(dir: &Path, ready: impl Fn(&[Value]) -> bool) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        if dir.join("mlflow.db").exists() && ready(&runs(dir)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the store never reached the state waited for");
}

#[test]
fn a_shard_killed_mid_run_and_run_again_trains_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let slow = r#"
[[models]]
kind = "random_forest"
name = "forest"
n_trees = [400, 401, 402, 403]
"#;
    let cfg = write_config(dir.path(), CONFIG, slow);
    let shard = |d: &Path| {
        let mut c = runner(d);
        c.args(["sweep", "--jobs", "1", "--shard", "0/2"]).arg(&cfg);
        c
    };
    let mut child = shard(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once its first config has finished and its second is training.
    wait_for(dir.path(), |runs| {
        runs.iter().any(|r| r["status"] == "FINISHED")
            && runs.iter().any(|r| r["status"] == "RUNNING")
    });
    // Meanwhile (its process frozen, alive), shard 1 trains its two: its report shows shard
    // 0's run as still training, not as failed.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let other = run_ok(
        runner(dir.path())
            .args(["sweep", "--shard", "1/2"])
            .arg(&cfg),
    );
    let said = String::from_utf8_lossy(&other.stdout);
    assert!(said.contains("(0 failed, 1 still training)"), "{said}");
    assert!(said.contains("still training (another shard's"), "{said}");
    assert!(!said.contains("FAILED"), "{said}");
    child.kill().unwrap();
    child.wait().unwrap();
    let before = runs(dir.path());
    let killed: Vec<&Value> = before
        .iter()
        .filter(|r| r["status"] != "FINISHED")
        .collect();
    assert_eq!(killed.len(), 1, "{before:?}");
    let killed_name = config_name(killed[0]).to_string();
    let killed_run = killed[0]["version"].as_str().unwrap().to_string();

    run_ok(&mut shard(dir.path()));
    let after = runs(dir.path());
    let finished: Vec<&str> = (after.iter())
        .filter(|r| r["status"] == "FINISHED")
        .map(config_name)
        .collect();
    assert_eq!(
        finished.iter().collect::<BTreeSet<_>>().len(),
        finished.len(),
        "no config has two FINISHED runs: {finished:?}"
    );
    assert_eq!(finished.len(), 4, "both shards' configs, each once");
    assert!(finished.contains(&killed_name.as_str()));
    let old = (after.iter())
        .find(|r| r["version"] == killed_run.as_str())
        .unwrap();
    assert_eq!(
        old["status"], "KILLED",
        "the killed run stays, marked: {old}"
    );
    assert_eq!(
        after.len(),
        before.len() + 1,
        "only the killed config trains again"
    );

    let out = run_ok(
        runner(dir.path())
            .args(["sweep", "--shard", "1/2", "--json"])
            .arg(&cfg),
    );
    let report = stdout_json(&out);
    assert_eq!(report["sweep"]["complete"], true, "{}", report["sweep"]);
    let board: BTreeSet<String> = trained_names(&report);
    assert_eq!(board.len(), 4, "the whole sweep's leaderboard: {board:?}");
}

#[test]
fn kubernetes_and_slurm_variables_pick_the_same_shard_as_the_flag() {
    let pick = |env: &[(&str, &str)], args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(dir.path(), CONFIG, FORTY);
        let mut c = runner(dir.path());
        c.args(["sweep", "--json"]).args(args).arg(&cfg);
        for (k, v) in env {
            c.env(k, v);
        }
        trained_names(&stdout_json(&run_ok(&mut c)))
            .into_iter()
            .collect::<Vec<_>>()
    };
    let flag = pick(&[], &["--shard", "1/5"]);
    assert_eq!(flag.len(), 8);
    let k8s = pick(
        &[("JOB_COMPLETION_INDEX", "1"), ("RUNNER_SHARD_COUNT", "5")],
        &[],
    );
    assert_eq!(k8s, flag);
    let k8s_flag = pick(&[("JOB_COMPLETION_INDEX", "1")], &["--shard-count", "5"]);
    assert_eq!(k8s_flag, flag);
    // A Slurm array numbered from 1: task 2 of 5 is shard 1.
    let slurm = pick(
        &[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "5"),
        ],
        &[],
    );
    assert_eq!(slurm, flag);
    let other = pick(&[], &["--shard", "2/5"]);
    assert!(
        other.iter().all(|n| !flag.contains(n)),
        "shards do not overlap"
    );
}

#[test]
fn shard_settings_that_cannot_work_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG, FORTY);
    let sweep = |env: &[(&str, &str)], args: &[&str]| {
        let mut c = runner(dir.path());
        c.arg("sweep").arg(&cfg).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        refused(&mut c)
    };
    let err = sweep(&[("JOB_COMPLETION_INDEX", "3")], &[]);
    assert!(err.contains("RUNNER_SHARD_COUNT"), "{err}");
    let err = sweep(
        &[("JOB_COMPLETION_INDEX", "5"), ("RUNNER_SHARD_COUNT", "5")],
        &[],
    );
    assert!(err.contains("not below the shard count 5"), "{err}");
    let err = sweep(&[("SLURM_ARRAY_TASK_ID", "x")], &[]);
    assert!(
        err.contains("SLURM_ARRAY_TASK_ID") && err.contains("whole number"),
        "{err}"
    );
    let err = sweep(&[], &["--shard", "4/4"]);
    assert!(err.contains("0 <= i < n"), "{err}");
    let err = sweep(&[], &["--shard-count", "4"]);
    assert!(err.contains("JOB_COMPLETION_INDEX"), "{err}");
    let err = sweep(&[], &["--shard", "0/2", "--restart"]);
    assert!(err.contains("sweep.name"), "{err}");
    let err = sweep(&[], &["--shard", "0/2", "--ensemble", "top=2"]);
    assert!(err.contains("one process"), "{err}");
    let err = sweep(&[], &["--set", "sweep.name=two words"]);
    assert!(err.contains("sweep.name"), "{err}");
    assert!(!dir.path().join("mlflow.db").exists(), "nothing written");
}

#[test]
fn a_sweep_run_again_continues_and_restart_starts_it_anew() {
    let dir = tempfile::tempdir().unwrap();
    let two = r#"
[[models]]
kind = "decision_tree"
name = "tree"
max_depth = [2, 4]
"#;
    let cfg = write_config(dir.path(), CONFIG, two);
    let first = sweep_json(dir.path(), &cfg, &[]);
    let name = first["sweep"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("config-"), "{name}");
    // Again: nothing to train; the same runs and metrics are reported.
    let again = sweep_json(dir.path(), &cfg, &[]);
    assert_eq!(again["sweep"]["name"], name.as_str());
    let versions = |r: &Value| -> BTreeMap<String, Value> {
        (r["runs"].as_array().unwrap().iter())
            .map(|x| {
                (
                    x["version"].as_str().unwrap().to_string(),
                    x["metrics"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(versions(&again), versions(&first));
    assert_eq!(runs(dir.path()).len(), 2, "nothing trained again");
    // --restart: the same configs, new runs under a new parent.
    let restarted = sweep_json(dir.path(), &cfg, &["--restart"]);
    let numbers: Vec<String> = versions(&restarted).into_keys().collect();
    assert_eq!(numbers, ["t3", "t4"]);
    assert_ne!(restarted["parent_run"], first["parent_run"]);
    // A changed config is another sweep; under a fixed name it is refused.
    let changed = sweep_json(dir.path(), &cfg, &["--set", "cv.folds=3"]);
    assert_ne!(changed["sweep"]["name"], name.as_str());
    let named = ["--set", "sweep.name=fixed"];
    sweep_json(dir.path(), &cfg, &named);
    let err = refused(
        runner(dir.path())
            .arg("sweep")
            .arg(&cfg)
            .args(named)
            .args(["--set", "models.max_depth=3"]),
    );
    assert!(
        err.contains("trains other configs") && err.contains("--restart"),
        "{err}"
    );
    let err = refused(runner(dir.path()).args(["sweep-status", "nope"]));
    assert!(
        err.contains("no sweep named `nope`") && err.contains(&name),
        "{err}"
    );
}

/// The documents of a YAML file, read with PyYAML (from the MLflow venv).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let code =
        "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let docs = json_of(Command::new(mlflow_python()).args(["-c", code]).arg(path));
    docs.as_array().unwrap().clone()
}

#[test]
fn the_kubernetes_indexed_job_runs_one_sweep_over_its_pods() {
    let docs = yaml_documents(&repo().join("examples/k8s/sweep-job.yaml"));
    let job = docs.iter().find(|d| d["kind"] == "Job").expect("a Job");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let completions = spec["completions"].as_u64().unwrap();
    assert_eq!(spec["parallelism"].as_u64(), Some(completions));
    let pod = &spec["template"]["spec"];
    assert_eq!(
        pod["restartPolicy"], "Never",
        "a failed pod is retried as a new pod"
    );
    let container = &pod["containers"][0];
    let env: BTreeMap<&str, &str> = (container["env"].as_array().unwrap().iter())
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        env["RUNNER_SHARD_COUNT"],
        completions.to_string(),
        "the shard count is the Job's completions"
    );
    let args: Vec<&str> = (container["args"].as_array().unwrap().iter())
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "sweep");
    assert!(
        repo().join(args[1]).is_file(),
        "{} is in the image",
        args[1]
    );
    // The store is the in-cluster MLflow server the manifest deploys: its Service's name and
    // port, the server's own port; each pod's replica is on a volume of its own.
    let at = args.iter().position(|a| *a == "--tracking-uri").unwrap();
    let store = args[at + 1].strip_prefix("http://").unwrap();
    let (host, port) = store.split_once(':').unwrap();
    let service = docs.iter().find(|d| d["kind"] == "Service").unwrap();
    assert_eq!(service["metadata"]["name"], host);
    assert_eq!(service["spec"]["ports"][0]["port"].to_string(), port);
    let server = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let labels = &server["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        &service["spec"]["selector"], labels,
        "the Service selects the server"
    );
    let command = server["spec"]["template"]["spec"]["containers"][0]["args"][0]
        .as_str()
        .unwrap();
    assert!(command.contains(&format!("--port {port}")), "{command}");
    assert!(command.contains("--artifacts-destination"), "{command}");
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert_eq!(
        env["RUNNER_SERVER_CACHE"], mount,
        "the replica is on its volume"
    );
    let dockerfile = std::fs::read_to_string(repo().join("examples/k8s/Dockerfile")).unwrap();
    assert!(dockerfile.contains(r#"ENTRYPOINT ["runner"]"#));
    assert!(dockerfile.contains("configs") && dockerfile.contains("WORKDIR /work"));

    // Each pod's command as the Job runs it (its index, its env), with a store in a temp
    // folder for the server (tests/server_store.rs runs shards against a real server), on a
    // few quick configs of the sweep.
    let dir = tempfile::tempdir().unwrap();
    let uri = sqlite_uri(&dir.path().join("mlflow.db"));
    let mut pod_args = args.clone();
    pod_args[at + 1] = &uri;
    let mut reports = Vec::new();
    for index in 0..completions {
        let mut pod = runner(&repo());
        pod.args(&pod_args)
            .args([
                "--smoke",
                "--json",
                "--only",
                "tree",
                "--only",
                "gaussian-nb",
            ])
            .args(["--only", "knn", "--only", "logistic"])
            .env("JOB_COMPLETION_INDEX", index.to_string());
        for (k, v) in &env {
            pod.env(k, v);
        }
        pod.env_remove("MLFLOW_TRACKING_URI");
        reports.push(stdout_json(&run_ok(&mut pod)));
    }
    let last = &reports[completions as usize - 1]["sweep"];
    assert_eq!(last["complete"], true, "{last}");
    let shards: Vec<&str> = reports
        .iter()
        .map(|r| r["sweep"]["shard"].as_str().unwrap())
        .collect();
    assert_eq!(shards, ["0/4", "1/4", "2/4", "3/4"]);
    let runs = runs(dir.path());
    assert_eq!(runs.len(), last["configs"].as_u64().unwrap() as usize);
}

#[test]
fn the_slurm_array_script_runs_one_sweep_over_its_tasks() {
    let script = repo().join("examples/slurm/sweep-array.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    let array = (text.lines())
        .find_map(|l| l.strip_prefix("#SBATCH --array="))
        .expect("an #SBATCH --array line");
    let (lo, hi) = array.split_once('-').unwrap();
    let (lo, hi): (usize, usize) = (lo.parse().unwrap(), hi.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG, FORTY);
    let mut trained = Vec::new();
    for task in lo..=hi {
        // What Slurm sets for a task of `--array=lo-hi`.
        let out = run_ok(
            Command::new("bash")
                .arg(&script)
                .arg("--json")
                .env("RUNNER_BIN", env!("CARGO_BIN_EXE_runner"))
                .env("RUNNER_CONFIG", &cfg)
                .env("SLURM_SUBMIT_DIR", dir.path())
                .env("SLURM_ARRAY_TASK_ID", task.to_string())
                .env("SLURM_ARRAY_TASK_MIN", lo.to_string())
                .env("SLURM_ARRAY_TASK_COUNT", (hi - lo + 1).to_string())
                .env("SLURM_CPUS_PER_TASK", "1")
                .env_remove("MLFLOW_TRACKING_URI")
                .env_remove("RUNNER_TRACKING_URI")
                .env_remove("JOB_COMPLETION_INDEX")
                .env_remove("RUNNER_SHARD_COUNT"),
        );
        trained.push(stdout_json(&out));
    }
    let total: usize = (trained.iter())
        .map(|r| {
            let mine = r["runs"].as_array().unwrap();
            mine.len()
        })
        .max()
        .unwrap();
    assert_eq!(total, 40, "the last task reports the whole sweep");
    assert_eq!(trained.last().unwrap()["sweep"]["complete"], true);
    assert_eq!(runs(dir.path()).len(), 40, "every config once");
}
