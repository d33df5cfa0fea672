//! The command line as a user meets it: pipes, help, completions, "did you mean", tables that
//! fit the terminal, `runs` filters, input formats and the JSON documents.
mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// A small, fast sweep (naive Bayes and a shallow tree) of the builtin red wine into `dir`.
fn quick_config(dir: &Path, experiment: &str) -> std::path::PathBuf {
    let cfg = format!(
        "experiment = \"{experiment}\"\nseed = 42\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[cv]\nfolds = 3\n"
    );
    write_config(
        dir,
        &cfg,
        "[[models]]\nkind = \"naive_bayes\"\nname = \"nb\"\n[[models]]\nkind = \"decision_tree\"\nname = \"tree\"\nmax_depth = 4\n",
    )
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Runs `runner ARGS` on a pseudo-terminal `cols` wide (util-linux `script`); its screen text.
fn on_terminal(dir: &Path, cols: usize, args: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_runner");
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("stty cols {cols} rows 50; {bin} {args}"),
            "/dev/null",
        ])
        .current_dir(dir)
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .expect("script (util-linux) runs");
    assert!(out.status.success(), "{}", stderr_of(&out));
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

/// The widest line of the tables in `text` (prose lines wrap in the terminal as they are).
fn widest_line(text: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with(['┌', '│', '╞', '├', '└']))
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
}

#[test]
fn piping_into_head_ends_quietly() {
    let d = tempfile::tempdir().unwrap();
    sweep_json(d.path(), &quick_config(d.path(), "pipe"), &[]);
    for args in [
        vec!["models"],
        vec!["models", "--json"],
        vec!["runs"],
        vec!["show", "t1"],
    ] {
        // The reading end is closed before runner writes: every write hits a broken pipe.
        let mut child = runner(d.path())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = stderr_of(&out);
        assert!(
            out.status.success() && !err.contains("panicked") && !err.contains("Broken pipe"),
            "runner {args:?} into a closed pipe: {:?}\n{err}",
            out.status
        );
    }
}

#[test]
fn every_subcommand_describes_every_argument_and_shows_examples() {
    let d = tempfile::tempdir().unwrap();
    let top = String::from_utf8_lossy(&run_ok(runner(d.path()).arg("--help")).stdout).to_string();
    let commands: Vec<String> = top
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 13, "{commands:?}");
    for c in &commands {
        let help =
            String::from_utf8_lossy(&run_ok(runner(d.path()).args([c, "-h"])).stdout).to_string();
        let examples = help.split("Examples:").nth(1).unwrap_or("");
        assert!(
            examples.matches("runner ").count() >= 2,
            "`runner {c} -h` shows fewer than two examples:\n{help}"
        );
        let mut section = "";
        for line in help.lines() {
            if line.ends_with(':') && !line.starts_with(' ') {
                section = line;
                continue;
            }
            if section != "Arguments:" && section != "Options:" {
                continue;
            }
            let item = line.trim_start();
            if !(item.starts_with('-') || item.starts_with('<') || item.starts_with('[')) {
                continue;
            }
            // "  --flag <VALUE>  What it does": a description follows the name.
            let described = item.split("  ").filter(|p| !p.trim().is_empty()).count() >= 2;
            assert!(described, "`runner {c}`: `{item}` has no description");
        }
    }
}

#[test]
fn version_flag_and_first_run_do_not_clash() {
    let d = tempfile::tempdir().unwrap();
    for args in [vec!["--version"], vec!["sweep", "--version"]] {
        let out = run_ok(runner(d.path()).args(&args));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
            "{args:?}"
        );
    }
    let cfg = quick_config(d.path(), "first");
    let r = sweep_json(d.path(), &cfg, &["--first-run", "t40"]);
    assert_eq!(r["runs"][0]["version"], "t40");
    assert_eq!(r["runs"][1]["version"], "t41");
}

#[test]
fn completions_for_each_shell() {
    let d = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "_runner()"),
        ("zsh", "#compdef runner"),
        ("fish", "complete -c runner"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = run_ok(runner(d.path()).args(["completions", shell]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: no {marker}");
        for sub in ["sweep", "replay", "reload-etl", "completions"] {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let out = runner(d.path())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn mistakes_get_a_did_you_mean() {
    let d = tempfile::tempdir().unwrap();
    let base = "experiment = \"e\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\n";
    let cases = [
        (
            format!("{base}target = \"quality\"\n"),
            "[[models]]\nkind = \"random_forrest\"\n",
            "did you mean \"random_forest\"?",
        ),
        (
            format!("{base}target = \"quality\"\n"),
            "[[models]]\nkind = \"knn\"\nweigths = \"distance\"\n",
            "did you mean \"weights\"?",
        ),
        (
            format!("{base}target = \"qualty\"\n"),
            "[[models]]\nkind = \"knn\"\n",
            "did you mean \"quality\"?",
        ),
        (
            format!("{base}target = \"quality\"\n[cv]\nfodls = 3\n"),
            "[[models]]\nkind = \"knn\"\n",
            "did you mean \"folds\"?",
        ),
        (
            format!("primary_metric = \"acuracy\"\n{base}target = \"quality\"\n"),
            "[[models]]\nkind = \"knn\"\n",
            "did you mean \"accuracy\"?",
        ),
    ];
    for (cfg, sweep, want) in cases {
        let path = write_config(d.path(), &cfg, sweep);
        let out = runner(d.path())
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cfg}{sweep}");
        assert!(stderr_of(&out).contains(want), "{}", stderr_of(&out));
    }
    sweep_json(d.path(), &quick_config(d.path(), "e"), &[]);
    let out = runner(d.path()).args(["show", "2"]).output().unwrap();
    assert!(
        stderr_of(&out).contains("did you mean \"t2\"?"),
        "{}",
        stderr_of(&out)
    );
    let out = runner(d.path())
        .args(["runs", "--status", "finshed"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("did you mean \"finished\"?"));
}

#[test]
fn tables_fit_the_terminal_and_pipes_get_every_column() {
    let d = tempfile::tempdir().unwrap();
    let cfg = quick_config(d.path(), "a-rather-long-experiment-name");
    let cfg_arg = cfg.display().to_string();
    let board = on_terminal(d.path(), 80, &format!("sweep {cfg_arg} --jobs 1"));
    assert!(
        widest_line(&board) <= 80,
        "leaderboard wider than 80:\n{board}"
    );
    assert!(
        board.contains("--wide"),
        "says how to see every column:\n{board}"
    );
    let runs = on_terminal(d.path(), 80, "runs");
    assert!(widest_line(&runs) <= 80, "runs wider than 80:\n{runs}");
    let wide = on_terminal(d.path(), 80, "runs --wide");
    assert!(widest_line(&wide) > 80 && wide.contains("experiment"));
    // Not a terminal: every column, nothing wrapped.
    let piped = String::from_utf8_lossy(&run_ok(runner(d.path()).arg("runs")).stdout).to_string();
    let header = piped.lines().nth(1).unwrap();
    for col in [
        "run",
        "experiment",
        "config",
        "kind",
        "etl",
        "status",
        "primary metric",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(piped.contains("a-rather-long-experiment-name"));
}

#[test]
fn runs_filters_sorts_and_limits_across_experiments() {
    let d = tempfile::tempdir().unwrap();
    sweep_json(d.path(), &quick_config(d.path(), "first"), &[]);
    sweep_json(d.path(), &quick_config(d.path(), "second"), &[]);
    let all = stdout_json(&run_ok(runner(d.path()).args(["runs", "--json"])));
    assert_eq!(all["schema"], 2);
    assert_eq!(all["runs"].as_array().unwrap().len(), 4);
    let second = stdout_json(&run_ok(runner(d.path()).args([
        "runs",
        "--json",
        "--experiment",
        "second",
    ])));
    let versions: Vec<&str> = second["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, vec!["t3", "t4"]);
    let best = stdout_json(&run_ok(runner(d.path()).args([
        "runs", "--json", "--sort", "accuracy", "--limit", "3", "--status", "finished",
    ])));
    let acc: Vec<f64> = best["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metrics"]["accuracy"]["mean"].as_f64().unwrap())
        .collect();
    assert_eq!(acc.len(), 3);
    assert!(acc.windows(2).all(|w| w[0] >= w[1]), "best first: {acc:?}");
    let mae = stdout_json(&run_ok(
        runner(d.path()).args(["runs", "--json", "--sort", "log_loss"]),
    ));
    let ll: Vec<f64> = mae["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metrics"]["log_loss"]["mean"].as_f64().unwrap())
        .collect();
    assert!(
        ll.windows(2).all(|w| w[0] <= w[1]),
        "lower is better: {ll:?}"
    );
    for (flag, bad) in [("--sort", "acuracy"), ("--experiment", "frist")] {
        let out = runner(d.path()).args(["runs", flag, bad]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {bad}");
        assert!(
            stderr_of(&out).contains("did you mean"),
            "{}",
            stderr_of(&out)
        );
    }
}

#[test]
fn zero_jobs_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let cfg = quick_config(d.path(), "jobs");
    let out = runner(d.path())
        .arg("sweep")
        .arg(&cfg)
        .args(["--jobs", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("at least 1"));
    assert!(!d.path().join("mlflow.db").exists());
}

#[test]
fn every_input_format_gives_the_same_table() {
    use polars::prelude::*;
    let d = tempfile::tempdir().unwrap();
    let white = repo().join("tests/data/winequality-white.csv");
    let csv = std::fs::read_to_string(&white).unwrap();
    // The first 600 wines, in every format.
    let head: String = csv.lines().take(601).map(|l| format!("{l}\n")).collect();
    std::fs::write(d.path().join("w.csv"), &head).unwrap();
    std::fs::write(d.path().join("w.tsv"), head.replace(',', "\t")).unwrap();
    let gz = Command::new("gzip")
        .args(["-k", "-f"])
        .arg(d.path().join("w.csv"))
        .status()
        .unwrap();
    assert!(gz.success());
    let mut df = CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(d.path().join("w.csv")))
        .unwrap()
        .finish()
        .unwrap();
    for name in ["w.ndjson", "w.jsonl"] {
        let f = std::fs::File::create(d.path().join(name)).unwrap();
        JsonWriter::new(f)
            .with_json_format(JsonFormat::JsonLines)
            .finish(&mut df)
            .unwrap();
    }
    for name in ["w.arrow", "w.feather"] {
        let f = std::fs::File::create(d.path().join(name)).unwrap();
        IpcWriter::new(f).finish(&mut df).unwrap();
    }
    let mut accuracy = Vec::new();
    for file in [
        "w.csv",
        "w.csv.gz",
        "w.tsv",
        "w.ndjson",
        "w.jsonl",
        "w.arrow",
        "w.feather",
    ] {
        let cfg = format!(
            "experiment = \"formats\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"{file}\"\ntarget = \"quality\"\n[cv]\nfolds = 3\nstratified = false\n"
        );
        let path = write_config(
            d.path(),
            &cfg,
            "[[models]]\nkind = \"decision_tree\"\nmax_depth = 5\n",
        );
        let r = sweep_json(d.path(), &path, &[]);
        assert_eq!(r["runs"][0]["status"], "FINISHED", "{file}");
        accuracy.push((
            file,
            r["runs"][0]["metrics"]["accuracy"]["mean"]
                .as_f64()
                .unwrap(),
        ));
    }
    assert!(
        accuracy.iter().all(|(_, a)| *a == accuracy[0].1),
        "the same wines in every format give the same model: {accuracy:?}"
    );
    std::fs::write(d.path().join("w.xlsx"), "not read").unwrap();
    let cfg = "experiment = \"formats\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"w.xlsx\"\ntarget = \"quality\"\n";
    let path = write_config(d.path(), cfg, "[[models]]\nkind = \"knn\"\n");
    let out = runner(d.path()).arg("sweep").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    for ext in [
        ".csv.gz", ".tsv", ".ndjson", ".jsonl", ".feather", ".parquet",
    ] {
        assert!(err.contains(ext), "the error lists {ext}: {err}");
    }
}

#[test]
fn json_metrics_are_labelled_and_versioned() {
    let d = tempfile::tempdir().unwrap();
    let r = sweep_json(d.path(), &quick_config(d.path(), "json"), &[]);
    assert_eq!(r["schema"], 2);
    let acc = &r["runs"][0]["metrics"]["accuracy"];
    assert!(acc["mean"].as_f64().unwrap() > 0.3 && acc["std"].as_f64().unwrap() >= 0.0);
    let show = stdout_json(&run_ok(runner(d.path()).args(["show", "t1", "--json"])));
    assert_eq!(show["schema"], 2);
    let diff = stdout_json(&run_ok(
        runner(d.path()).args(["diff", "t1", "t2", "--json"]),
    ));
    assert_eq!(diff["schema"], 2);
    let v = stdout_json(&run_ok(runner(d.path()).args([
        "validate",
        "config.toml",
        "--json",
    ])));
    assert_eq!(v["schema"], 2);
}

/// What the MLflow UI shows: the experiment filed as model training, the user, the sweep as a
/// parent run holding the chart and leaderboard, per-fold metrics under names that say so.
#[test]
fn the_mlflow_ui_groups_a_sweep_under_its_parent() {
    let d = tempfile::tempdir().unwrap();
    let cfg = quick_config(d.path(), "ui");
    let r = stdout_json(&run_ok(
        runner(d.path())
            .arg("sweep")
            .arg(&cfg)
            .arg("--json")
            .env_remove("USER")
            .env_remove("LOGNAME"),
    ));
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let exp = store["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "ui")
        .unwrap();
    assert_eq!(
        exp["tags"]["mlflow.experimentKind"],
        "custom_model_development"
    );
    let runs = experiment_runs(&store, "ui");
    let parent = runs
        .iter()
        .find(|r| r["tags"]["runner.sweep"] == "parent")
        .expect("a parent run");
    assert_eq!(parent["run_name"], "sweep-t1-t2");
    assert_eq!(parent["status"], "FINISHED");
    assert_eq!(parent["params"]["configs"], "2");
    let arts = artifact_names(parent);
    assert!(
        arts.contains(&"leaderboard.csv") && arts.contains(&"sweep_t1-t2_accuracy.svg"),
        "{arts:?}"
    );
    assert!(
        !arts.iter().any(|a| a.starts_with("model")),
        "the parent holds no model"
    );
    assert_eq!(r["parent_run"], parent["run_id"]);
    let login = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    for child in runs
        .iter()
        .filter(|r| r["tags"]["runner.sweep"] != "parent")
    {
        assert_eq!(child["tags"]["mlflow.parentRunId"], parent["run_id"]);
        assert_eq!(
            child["tags"]["mlflow.user"],
            login.trim(),
            "the uid's login name"
        );
        let m = &child["metrics"];
        assert!(
            m.get("fold/accuracy").is_none(),
            "no metric shows only the last fold"
        );
        let folds: Vec<f64> = (0..3)
            .map(|i| m[format!("fold{i}/accuracy")].as_f64().unwrap())
            .collect();
        let mean = folds.iter().sum::<f64>() / 3.0;
        assert!((m["accuracy"].as_f64().unwrap() - mean).abs() < 1e-12);
    }
    let board = std::fs::read_to_string(
        Path::new(
            parent["artifact_uri"]
                .as_str()
                .unwrap()
                .trim_start_matches("file://"),
        )
        .join("leaderboard.csv"),
    )
    .unwrap();
    assert!(board.starts_with("rank,run,name,kind,status"));
    assert_eq!(board.lines().count(), 3, "{board}");
}
