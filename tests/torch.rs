//! Neural networks through libtorch: TorchScript exports reproduce the runner's predictions
//! through libtorch's own loader, learning curves per epoch reach the store, bad settings fail
//! before training.
#![cfg(feature = "torch")]
mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

const CONFIG: &str = "experiment = \"nn\"\nseed = 42\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[cv]\nfolds = 3\n";

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(|s| s.trim_matches('"').to_string())
        .collect();
    (
        header,
        lines
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect(),
    )
}

#[test]
fn torchscript_exports_reproduce_the_runner_predictions() {
    let d = tempfile::tempdir().unwrap();
    let sweep = "[[models]]\nkind = \"mlp\"\nname = \"mlp\"\nhidden = \"32,16\"\nbatch_norm = true\ndropout = 0.2\nepochs = 15\n\
                 [[models]]\nkind = \"cnn\"\nname = \"cnn\"\nepochs = 5\n\
                 [[models]]\nkind = \"lstm\"\nname = \"lstm\"\nepochs = 5\nbidirectional = true\n";
    let cfg = write_config(d.path(), CONFIG, sweep);
    let report = stdout_json(&run_ok(
        runner(d.path()).args(["sweep"]).arg(&cfg).args(["--json"]),
    ));
    run_ok(runner(d.path()).args(["reload-etl", "v1", "--out", "data.csv"]));
    let (header, rows) = read_csv(&d.path().join("data.csv"));
    let features: Vec<usize> = (0..header.len())
        .filter(|i| header[*i] != "quality")
        .collect();
    let flat: Vec<f32> = rows
        .iter()
        .flat_map(|r| {
            features
                .iter()
                .map(|i| r[*i].parse::<f32>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let x = tch::Tensor::from_slice(&flat).view([rows.len() as i64, features.len() as i64]);
    for run in report["runs"].as_array().unwrap() {
        assert_eq!(run["status"], "FINISHED", "{}", run["error"]);
        let (tv, id) = (
            run["version"].as_str().unwrap(),
            run["run_uuid"].as_str().unwrap(),
        );
        assert!(artifact(d.path(), id, &format!("model_{tv}.safetensors")).exists());
        let module = tch::CModule::load(artifact(d.path(), id, &format!("model_{tv}.pt")))
            .expect("libtorch loads the TorchScript");
        let out = module.forward_ts(&[&x]).unwrap();
        let ours: Vec<f32> = Vec::<f32>::try_from(out.flatten(0, -1)).unwrap();
        let (ph, preds) = read_csv(&artifact(d.path(), id, &format!("predictions_{tv}.csv")));
        let proba: Vec<usize> = (0..ph.len())
            .filter(|i| ph[*i].starts_with("proba_"))
            .collect();
        let mut max_diff = 0.0f64;
        for p in &preds {
            let row: usize = p[0].parse().unwrap();
            for (k, c) in proba.iter().enumerate() {
                let theirs: f64 = p[*c].parse().unwrap();
                max_diff = max_diff.max((theirs - ours[row * proba.len() + k] as f64).abs());
            }
        }
        assert!(
            max_diff < 1e-5,
            "{}: TorchScript differs from runner by {max_diff}",
            run["name"]
        );
    }
}

#[test]
fn per_epoch_curves_reach_the_store_and_early_stopping_restores_the_best_epoch() {
    let d = tempfile::tempdir().unwrap();
    let sweep = "[[models]]\nkind = \"mlp\"\nname = \"mlp\"\nepochs = 12\n[[models]]\nkind = \"mlp\"\nname = \"es\"\nepochs = 400\npatience = 5\nlearning_rate = 0.01\n";
    let cfg = write_config(d.path(), CONFIG, sweep);
    let report = stdout_json(&run_ok(
        runner(d.path()).args(["sweep"]).arg(&cfg).args(["--json"]),
    ));
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let runs = experiment_runs(&store, "nn");
    let mlp = runs
        .iter()
        .find(|r| r["run_name"].as_str().unwrap().ends_with("-mlp"))
        .unwrap();
    for key in [
        "fold0/train_loss",
        "fold0/valid_loss",
        "fold0/valid_accuracy",
        "fold2/valid_loss",
        "refit/train_loss",
    ] {
        let steps: Vec<i64> = mlp["history"][key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing"))
            .iter()
            .map(|s| s[0].as_i64().unwrap())
            .collect();
        assert_eq!(steps, (0..12).collect::<Vec<_>>(), "{key}: step = epoch");
    }
    let loss: Vec<f64> = mlp["history"]["fold0/train_loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[1].as_f64().unwrap())
        .collect();
    assert!(loss[11] < loss[0], "training loss falls: {loss:?}");
    let es = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "es")
        .unwrap();
    let tv = es["version"].as_str().unwrap();
    let w: Value = read_json(&artifact(
        d.path(),
        es["run_uuid"].as_str().unwrap(),
        &format!("runner_model_{tv}.json"),
    ));
    let (epochs, best) = (
        w["fitted"]["epochs"].as_i64().unwrap(),
        w["fitted"]["best_epoch"].as_i64().unwrap(),
    );
    assert!(
        epochs < 400 && epochs == best + 6,
        "stopped 5 epochs after the best: ran {epochs}, best {best}"
    );
}

#[test]
fn network_settings_are_checked_before_training() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        CONFIG,
        "[[models]]\nkind = \"mlp\"\nhidden = \"64,x\"\n",
    );
    let out = runner(d.path()).args(["sweep"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("layer widths as a string such as \"64,32\"")
    );
    let cfg = write_config(d.path(), CONFIG, "[[models]]\nkind = \"mlp\"\nhidden = [\"64\", \"64,64\", \"64,64,64\"]\ndropout = [0.0, 0.3]\nactivation = [\"relu\", \"gelu\"]\n");
    let v = stdout_json(&run_ok(
        runner(d.path())
            .args(["validate"])
            .arg(&cfg)
            .args(["--json"]),
    ));
    assert_eq!(
        v["models"].as_array().unwrap().len(),
        12,
        "depth x dropout x activation grid"
    );
}

/// Each epoch's metrics reach the store as the epoch ends: the MLflow client, polling while an
/// MLP trains, reads a history that grows, with the times the epochs ended.
#[test]
fn mlflow_reads_the_learning_curve_growing_while_the_network_trains() {
    let d = tempfile::tempdir().unwrap();
    let sweep = "[[models]]\nkind = \"mlp\"\nname = \"slow-mlp\"\nhidden = \"64,64\"\nepochs = 400\nbatch_size = 16\n";
    let cfg = write_config(d.path(), &CONFIG.replace("folds = 3", "folds = 2"), sweep);
    // The watcher (MLflow's client, slow to import) is ready before training starts.
    let db = d.path().join("mlflow.db");
    let mut watch = std::process::Command::new(mlflow_python())
        .arg(repo().join("tests/mlflow_read.py"))
        .args([
            "watch",
            &sqlite_uri(&db),
            "slow-mlp",
            "fold0/train_loss",
            "240",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    let ready = lines.next().unwrap().unwrap();
    assert!(ready.contains("ready"), "{ready}");
    let mut sweep_process = runner(d.path())
        .args(["sweep"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let looks: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert!(sweep_process.wait().unwrap().success());
    watch.wait().unwrap();
    let while_running: Vec<u64> = looks
        .iter()
        .filter(|l| l["status"] == "RUNNING")
        .map(|l| l["points"].as_u64().unwrap())
        .filter(|n| *n > 0 && *n < 400)
        .collect();
    let mut distinct = while_running.clone();
    distinct.dedup();
    assert!(
        distinct.len() >= 2 && distinct.windows(2).all(|w| w[0] < w[1]),
        "the history grows while the run trains: {looks:?}"
    );
    let store = read_with_mlflow(&db);
    let run = &experiment_runs(&store, "nn")
        .into_iter()
        .find(|r| r["run_name"].as_str().unwrap().contains("slow-mlp"))
        .unwrap();
    let history = run["history"]["fold0/train_loss"].as_array().unwrap();
    assert_eq!(history.len(), 400);
    let first = history[0][2].as_i64().unwrap();
    let last = history[399][2].as_i64().unwrap();
    assert!(
        last > first,
        "each epoch carries the time it ended: {first} .. {last}"
    );
}

/// (first, last) timestamp in ms of each fit's `train_loss` curve of a stored run.
fn fit_spans(run: &Value) -> Vec<(i64, i64)> {
    let history = run["history"].as_object().unwrap();
    history
        .iter()
        .filter(|(key, _)| key.ends_with("/train_loss"))
        .map(|(_, points)| {
            let times: Vec<i64> = points
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[2].as_i64().unwrap())
                .collect();
            (times[0], *times.last().unwrap())
        })
        .collect()
}

#[test]
fn networks_train_side_by_side_with_the_numbers_of_one_at_a_time() {
    let sweep = "[[models]]\nkind = \"mlp\"\nname = \"wide\"\nepochs = 40\nhidden = \"64\"\ndropout = 0.2\n[[models]]\nkind = \"lstm\"\nname = \"seq\"\nepochs = 8\n";
    let mut stores = Vec::new();
    for jobs in ["2", "1"] {
        let d = tempfile::tempdir().unwrap();
        let cfg = write_config(d.path(), CONFIG, sweep);
        run_ok(
            runner(d.path())
                .args(["sweep"])
                .arg(&cfg)
                .args(["--jobs", jobs]),
        );
        let store = read_with_mlflow(&d.path().join("mlflow.db"));
        stores.push(experiment_runs(&store, "nn"));
    }
    let named = |runs: &[Value], name: &str| -> Value {
        let suffix = format!("-{name}");
        runs.iter()
            .find(|r| r["run_name"].as_str().unwrap().ends_with(&suffix))
            .unwrap_or_else(|| panic!("no run {name}"))
            .clone()
    };
    // With two workers, a fit of one network ran while a fit of the other did: each lives in
    // its own helper process, where libtorch's generator and threads are its own.
    let (wide, seq) = (named(&stores[0], "wide"), named(&stores[0], "seq"));
    let overlapping = fit_spans(&wide)
        .iter()
        .any(|a| fit_spans(&seq).iter().any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(
        overlapping,
        "no two fits overlapped: {:?} {:?}",
        fit_spans(&wide),
        fit_spans(&seq)
    );
    // ... and every number is the one of training them one at a time.
    for name in ["wide", "seq"] {
        let (side, alone) = (named(&stores[0], name), named(&stores[1], name));
        assert_eq!(side["status"], "FINISHED");
        let numbers = |run: &Value| -> Vec<(String, Value)> {
            (run["metrics"].as_object().unwrap().iter())
                .filter(|(key, _)| !key.ends_with("_seconds"))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        };
        assert_eq!(numbers(&side), numbers(&alone), "{name}");
        let curves = (side["history"].as_object().unwrap().iter())
            .filter(|(key, _)| !key.ends_with("_seconds"));
        for (key, points) in curves {
            let values = |p: &Value| -> Vec<f64> {
                p.as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s[1].as_f64().unwrap())
                    .collect()
            };
            assert_eq!(
                values(points),
                values(&alone["history"][key]),
                "{name} {key}"
            );
        }
    }
}

/// The `runner` program does not link libtorch: a sweep without networks never loads its 110 MiB,
/// and a network's fit loads it in the helper `runner-torch` only.
#[test]
fn only_the_network_helper_links_libtorch() {
    let needs = |program: &str| -> String {
        let out = std::process::Command::new("ldd")
            .arg(program)
            .output()
            .unwrap();
        assert!(out.status.success(), "ldd {program}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let cli = needs(env!("CARGO_BIN_EXE_runner"));
    assert!(!cli.contains("libtorch"), "runner links libtorch:\n{cli}");
    let helper = needs(env!("CARGO_BIN_EXE_runner-torch"));
    assert!(
        helper.contains("libtorch_cpu"),
        "the helper lacks libtorch:\n{helper}"
    );
}

/// A search's pruner stops a network inside its helper at the round it judged: the stored curve
/// ends there, and replay stops at the same round, bit for bit.
#[test]
fn a_pruner_stops_a_network_in_its_helper_at_a_rung() {
    let d = tempfile::tempdir().unwrap();
    let sweep = "[search]\nstrategy = \"tpe\"\ntrials = 8\nstartup_trials = 4\nprune = \"asha\"\nmin_rounds = 2\nreduction_factor = 2\n\n[[models]]\nname = \"net\"\nkind = \"mlp\"\nepochs = 8\nhidden = \"16\"\nlearning_rate = { low = 0.0001, high = 0.05, log = true }\n";
    let cfg = write_config(d.path(), CONFIG, sweep);
    let report = stdout_json(&run_ok(
        runner(d.path())
            .args(["sweep"])
            .arg(&cfg)
            .args(["--jobs", "1", "--json"]),
    ));
    let pruned: Vec<&Value> = (report["runs"].as_array().unwrap().iter())
        .filter(|r| r["pruned"]["round"].is_i64())
        .collect();
    assert!(!pruned.is_empty(), "no trial was pruned: {report}");
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let runs = experiment_runs(&store, "nn");
    for trial in &pruned {
        let round = trial["pruned"]["round"].as_i64().unwrap();
        assert!([1, 3, 7].contains(&round), "stopped between rungs: {trial}");
        let uuid = trial["run_uuid"].as_str().unwrap();
        let stored = runs.iter().find(|r| r["run_id"] == uuid).unwrap();
        let curve = stored["history"]["fold0/train_loss"].as_array().unwrap();
        assert_eq!(
            curve.len() as i64,
            round + 1,
            "trained past the rung: {trial}"
        );
    }
    let tv = pruned[0]["version"].as_str().unwrap();
    let replay = stdout_json(&run_ok(
        runner(d.path()).args(["replay", tv, "--check", "--json"]),
    ));
    assert_eq!(replay["identical"], true, "{replay}");
}

/// The run of a sweep's `--json` report with this config name.
fn named_run(report: &Value, name: &str) -> Value {
    (report["runs"].as_array().unwrap().iter())
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no run {name}: {report}"))
        .clone()
}

/// Without its helper program the networks fail with an error that says where it was looked
/// for and how to get it; the other runs of the sweep are not affected.
#[test]
fn a_missing_helper_fails_the_network_runs_and_says_why() {
    let d = tempfile::tempdir().unwrap();
    let sweep = "[[models]]\nkind = \"mlp\"\nname = \"net\"\nepochs = 2\n[[models]]\nkind = \"decision_tree\"\nname = \"tree\"\n";
    let cfg = write_config(d.path(), CONFIG, sweep);
    let mut sweep = runner(d.path());
    sweep.args(["sweep"]).arg(&cfg).arg("--json");
    sweep.env("RUNNER_TORCH_HELPER", d.path().join("no-such-helper"));
    let report = stdout_json(&sweep.output().unwrap());
    let run = |name: &str| named_run(&report, name);
    assert_eq!(run("tree")["status"], "FINISHED");
    assert_eq!(run("net")["status"], "FAILED");
    let error = run("net")["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("network helper") && error.contains("no-such-helper"),
        "{error}"
    );
}

/// `device = "auto"` trains wherever it can; `device = "cuda"` trains on a GPU where the machine
/// has one (the helper opens libtorch's CUDA library when asked) and otherwise fails with an
/// error that says so, while the sweep's other runs finish.
#[test]
fn cuda_is_used_where_there_is_a_gpu_and_refused_clearly_where_not() {
    let gpu = std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success());
    let d = tempfile::tempdir().unwrap();
    let sweep = "[[models]]\nkind = \"mlp\"\nname = \"auto\"\nepochs = 2\ndevice = \"auto\"\n[[models]]\nkind = \"mlp\"\nname = \"gpu\"\nepochs = 2\ndevice = \"cuda\"\n";
    let cfg = write_config(d.path(), CONFIG, sweep);
    let out = runner(d.path())
        .args(["sweep"])
        .arg(&cfg)
        .arg("--json")
        .output();
    let report = stdout_json(&out.unwrap());
    let run = |name: &str| named_run(&report, name);
    assert_eq!(run("auto")["status"], "FINISHED", "{}", run("auto"));
    if gpu {
        assert_eq!(run("gpu")["status"], "FINISHED", "{}", run("gpu"));
    } else {
        assert_eq!(run("gpu")["status"], "FAILED");
        let error = run("gpu")["error"].as_str().unwrap().to_string();
        assert!(error.contains("no CUDA device"), "{error}");
    }
}
