//! Searching hyperparameters: ranges and choices in sweep files and on the command line, TPE
//! trial by trial (reproducible with a seed, resumable, replayable), and the checks on ranges.
mod common;

use common::*;
use serde_json::Value;

const CONFIG: &str = "experiment = \"search\"\nseed = 5\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[cv]\nfolds = 3\n";

const TPE: &str = "[search]\nstrategy = \"tpe\"\ntrials = 10\nstartup_trials = 4\n\n[[models]]\nname = \"forest\"\nkind = \"random_forest\"\nn_trees = { low = 5, high = 40, log = true }\nmax_depth = { low = 2, high = 12 }\nmin_samples_leaf = [1, 2, 4]\n";

/// (name, mean accuracy) of each run of a sweep report, in run order.
fn trials(report: &Value) -> Vec<(String, f64)> {
    let mut runs: Vec<&Value> = report["runs"].as_array().unwrap().iter().collect();
    runs.sort_by_key(|r| r["version"].as_str().unwrap()[1..].parse::<i64>().unwrap());
    runs.iter()
        .map(|r| {
            let name = r["name"].as_str().unwrap().to_string();
            (name, r["metrics"]["accuracy"]["mean"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn tpe_trials_repeat_with_the_seed_continue_with_more_trials_and_replay() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg_a = write_config(a.path(), CONFIG, TPE);
    let cfg_b = write_config(b.path(), CONFIG, TPE);
    let mut first = trials(&sweep_json(a.path(), &cfg_a, &["--jobs", "1"]));
    // Ten trials, then the best of them trained in full: the same config, seed and folds, so
    // the same CV score to the last digit.
    assert_eq!(first.len(), 11, "{first:?}");
    assert!(first[0].0.starts_with("forest#1[max_depth="), "{first:?}");
    let (best_name, best_score) = first.pop().unwrap();
    let top = first.iter().map(|(_, s)| *s).fold(f64::MIN, f64::max);
    assert!(best_name.starts_with("forest#best["), "{best_name}");
    assert_eq!(best_score, top, "{first:?}");
    let params = |name: &str| name.split_once('[').unwrap().1.to_string();
    assert!(first
        .iter()
        .any(|(n, s)| *s == top && params(n) == params(&best_name)));
    // Every trial within its ranges and choices.
    for (name, _) in &first {
        let inside = name.split('[').nth(1).unwrap().trim_end_matches(']');
        for kv in inside.split(',') {
            let (k, v) = kv.split_once('=').unwrap();
            let v: f64 = v.parse().unwrap();
            let ok = match k {
                "n_trees" => (5.0..=40.0).contains(&v),
                "max_depth" => (2.0..=12.0).contains(&v),
                "min_samples_leaf" => [1.0, 2.0, 4.0].contains(&v),
                _ => false,
            };
            assert!(ok, "{name}");
        }
    }
    // The same seed and one job: the same trials in the same order, to the last digit.
    let again = trials(&sweep_json(
        b.path(),
        &cfg_b,
        &["--jobs", "1", "--trials", "14"],
    ));
    assert_eq!(again[..10], first[..], "same seed, same trials");
    // More trials continue the search in `a`: no finished trial repeats, and the new ones are
    // those a 14-trial search made (the best is trained again only if it changed).
    let more = trials(&sweep_json(
        a.path(),
        &cfg_a,
        &["--jobs", "1", "--trials", "14"],
    ));
    let is_trial = |(n, _): &&(String, f64)| !n.contains("#best[");
    let more_trials: Vec<_> = more.iter().filter(is_trial).collect();
    let again_trials: Vec<_> = again.iter().filter(is_trial).collect();
    assert_eq!(more_trials.len(), 4, "{more:?}");
    assert_eq!(
        more_trials[..],
        again_trials[10..],
        "resumed trials equal an unbroken search's"
    );
    let best_again = again.last().unwrap();
    let retrained = more.iter().any(|(n, _)| n.contains("#best["));
    assert_eq!(retrained, params(&best_again.0) != params(&best_name));
    // The trial is recorded with its run, and replays bit for bit.
    let store = read_with_mlflow(&a.path().join("mlflow.db"));
    let runs = experiment_runs(&store, "search");
    let last = runs
        .iter()
        .find(|r| {
            r["tags"]["mlflow.runName"]
                .as_str()
                .unwrap()
                .contains("forest#14")
        })
        .unwrap();
    assert_eq!(last["tags"]["runner.search"], "forest");
    assert_eq!(last["tags"]["runner.trial"], "14");
    let tv = last["tags"]["runner.training_version"].as_str().unwrap();
    let out = run_ok(runner(a.path()).args(["replay", tv, "--check", "--json"]));
    assert_eq!(stdout_json(&out)["identical"], true);
    // Trials are scored by CV only: no refit, model or importance (each fold still has its
    // confusion matrix); the best run has them. Training two folds at once or one at a time
    // gives the same scores, bit for bit.
    let trial = (runs.iter())
        .find(|r| r["tags"]["runner.trial"] == "1" && r["tags"]["runner.search_best"].is_null())
        .unwrap();
    let tv = trial["tags"]["runner.training_version"].as_str().unwrap();
    let names = artifact_names(trial);
    assert!(
        names.iter().any(|n| n.starts_with("confusion_matrix")),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("model") || n.contains("importance")),
        "{names:?}"
    );
    let why = trial["tags"]["runner.mlflow_model"].as_str().unwrap();
    assert!(why.starts_with("none: a search trial"), "{why}");
    let err = refused(runner(a.path()).args(["predict", tv, "--input", "x.csv"]));
    assert!(
        err.contains("scored by CV only") && err.contains("#best"),
        "{err}"
    );
    let best = (runs.iter())
        .find(|r| r["tags"]["runner.search_best"] == "true")
        .unwrap();
    assert!(artifact_names(best).iter().any(|n| n.starts_with("model")));
    let out =
        run_ok(runner(a.path()).args(["replay", tv, "--set", "fold_jobs=1", "--check", "--json"]));
    assert_eq!(stdout_json(&out)["identical"], true);
}

/// `--set` makes grid axes and ranges, `--search`/`--trials` set the strategy, and `validate`
/// prints the space.
#[test]
fn the_command_line_sets_axes_ranges_and_the_search() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        CONFIG,
        "[[models]]\nname = \"lr\"\nkind = \"logistic_regression\"\n",
    );
    let out = run_ok(
        runner(d.path())
            .args([
                "validate",
                "--json",
                "--set",
                "models.max_iterations=[50,100,200]",
            ])
            .arg(&cfg),
    );
    let names: Vec<String> = stdout_json(&out)["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "lr[max_iterations=50]",
            "lr[max_iterations=100]",
            "lr[max_iterations=200]"
        ]
    );
    let range = "models.gradient_tolerance={low=1e-6,high=1e-2,log=true}";
    let out = run_ok(
        runner(d.path())
            .args([
                "validate", "--search", "tpe", "--trials", "6", "--set", range,
            ])
            .arg(&cfg),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tpe search"), "{text}");
    assert!(text.contains("6 trials"), "{text}");
    assert!(
        text.contains("gradient_tolerance: 0.000001..=0.01 log"),
        "{text}"
    );
    let report = sweep_json(
        d.path(),
        &cfg,
        &[
            "--search", "random", "--trials", "3", "--set", range, "--jobs", "1",
        ],
    );
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for r in runs {
        let tol = r["name"].as_str().unwrap();
        assert!(
            tol.starts_with("lr#") && tol.contains("gradient_tolerance="),
            "{tol}"
        );
    }
}

/// A range that cannot be searched is refused before anything is written, by its key.
#[test]
fn bad_ranges_are_refused_by_key() {
    let d = tempfile::tempdir().unwrap();
    let cases = [
        ("n_trees = { low = 50, high = 10 }", "not below its high"),
        ("max_features = { low = 1, high = 3 }", "list its choices"),
        (
            "n_trees = { low = 0, high = 10, log = true }",
            "log range needs low above 0",
        ),
        (
            "n_trees = { low = 5, high = 10, steps = 2 }",
            "not a range key",
        ),
        ("class_weights = { low = 1, high = 3 }", "not a range"),
    ];
    for (line, expected) in cases {
        let sweep = format!("[search]\nstrategy = \"tpe\"\ntrials = 3\n[[models]]\nkind = \"random_forest\"\n{line}\n");
        let cfg = write_config(d.path(), CONFIG, &sweep);
        let err = refused(runner(d.path()).args(["sweep"]).arg(&cfg));
        assert!(
            err.contains(expected) && err.contains("models[0]."),
            "{line}: {err}"
        );
        assert!(!d.path().join("mlflow.db").exists());
    }
    let grid = "[[models]]\nkind = \"random_forest\"\nn_trees = { low = 5, high = 10 }\n";
    let cfg = write_config(d.path(), CONFIG, grid);
    assert!(refused(runner(d.path()).args(["validate"]).arg(&cfg))
        .contains("strategy = \"random\" or \"tpe\""));
    for (search, expected) in [
        (
            "strategy = \"tpe\"\ntrials = 3\nrefit = \"all\"",
            "valid: \"best\", \"every\"",
        ),
        (
            "strategy = \"random\"\ntrials = 3\nrefit = \"best\"",
            "applies to strategy = \"tpe\"",
        ),
    ] {
        let sweep = format!(
            "[search]\n{search}\n[[models]]\nkind = \"random_forest\"\nn_trees = [5, 10]\n"
        );
        let cfg = write_config(d.path(), CONFIG, &sweep);
        let err = refused(runner(d.path()).args(["sweep"]).arg(&cfg));
        assert!(
            err.contains(expected) && err.contains("search.refit"),
            "{err}"
        );
    }
}

/// A trial whose first folds fall below the median of the finished trials stops there: KILLED
/// with its partial metrics and the reason, never ranked, shown as pruned, and replayed to the
/// same fold (or in full with `--set pruned=false`).
#[test]
fn median_pruning_stops_weak_trials_and_replay_reproduces_it() {
    let d = tempfile::tempdir().unwrap();
    let sweep = "[search]\nstrategy = \"tpe\"\ntrials = 14\nstartup_trials = 6\n\n[[models]]\nname = \"tree\"\nkind = \"decision_tree\"\nmax_depth = { low = 1, high = 14 }\nmin_samples_leaf = { low = 1, high = 60, log = true }\n";
    let cfg = write_config(d.path(), CONFIG, sweep);
    let report = sweep_json(d.path(), &cfg, &["--jobs", "1"]);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 15, "14 trials and the best trained in full");
    let pruned: Vec<&Value> = runs.iter().filter(|r| !r["pruned"].is_null()).collect();
    assert!(!pruned.is_empty(), "no trial was pruned: {report}");
    for p in &pruned {
        assert_eq!(p["status"], "KILLED");
        let folds = p["pruned"]["folds"].as_u64().unwrap();
        assert!(folds < 3, "{p}");
        assert_eq!(
            p["fold_metrics"]["accuracy"].as_array().unwrap().len() as u64,
            folds
        );
        assert!(
            p["pruned"]["reason"].as_str().unwrap().contains("median"),
            "{p}"
        );
    }
    // The store and `runner runs` say so; the sweep's best run is a finished one.
    let tv = pruned[0]["version"].as_str().unwrap();
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let logged = experiment_runs(&store, "search");
    let parent = logged
        .iter()
        .find(|r| r["tags"]["runner.sweep"] == "parent")
        .unwrap();
    // The search's charts are the parent's artifacts: history and one slice per parameter.
    let charts = artifact_names(parent);
    for name in [
        "search_tree_history.svg",
        "search_tree_history.csv",
        "search_tree_max_depth.svg",
        "search_tree_min_samples_leaf.svg",
    ] {
        assert!(charts.contains(&name), "{name} in {charts:?}");
    }
    let best = parent["tags"]["runner.best_run"].as_str().unwrap();
    let best_run = runs.iter().find(|r| r["version"] == best).unwrap();
    assert_eq!(best_run["status"], "FINISHED", "{best_run}");
    let run = logged
        .iter()
        .find(|r| r["run_id"] == pruned[0]["run_uuid"])
        .unwrap();
    assert_eq!(run["status"], "KILLED");
    assert_eq!(run["tags"]["runner.pruned"], "true");
    let out = run_ok(runner(d.path()).args(["runs"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("KILLED (pruned)"));
    // Replay stops at the same fold, bit for bit; pruned=false trains every fold.
    let out = run_ok(runner(d.path()).args(["replay", tv, "--check", "--json"]));
    let replay = stdout_json(&out);
    assert_eq!(replay["identical"], true, "{replay}");
    assert_eq!(replay["status"], "KILLED");
    let out = run_ok(runner(d.path()).args(["replay", tv, "--set", "pruned=false", "--json"]));
    let full = stdout_json(&out);
    assert_eq!(full["status"], "FINISHED", "{full}");
}

/// The fold lists of `runner`'s records as JSON, in the order their struct serialises.
fn folds_json(fold_of: &[usize], k: usize) -> String {
    let folds: Vec<String> = (0..k)
        .map(|f| {
            let rows = |want: bool| -> String {
                let r: Vec<String> = (0..fold_of.len())
                    .filter(|r| (fold_of[*r] == f) == want)
                    .map(|r| r.to_string())
                    .collect();
                r.join(",")
            };
            format!(
                "{{\"repeat\":0,\"index\":{f},\"train\":[{}],\"test\":[{}]}}",
                rows(false),
                rows(true)
            )
        })
        .collect();
    format!("[{}]", folds.join(","))
}

/// `cv.assignments` fixes the folds by input row (before the ETL's filter): the run scores
/// exactly those folds, records the file's sha256, and replay refuses a changed file.
#[test]
fn folds_from_a_file_fix_the_splits_and_replay_checks_the_file() {
    use sha2::Digest;
    let d = tempfile::tempdir().unwrap();
    let white = std::fs::read_to_string(repo().join("tests/data/winequality-white.csv")).unwrap();
    std::fs::write(d.path().join("white.csv"), &white).unwrap();
    let n = white.lines().count() - 1;
    // Every input row, fold = row mod 4.
    let mut csv = String::from("row,fold\n");
    for r in 0..n {
        csv.push_str(&format!("{r},{}\n", r % 4));
    }
    std::fs::write(d.path().join("folds.csv"), &csv).unwrap();
    let config = "experiment = \"fixed\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"white.csv\"\ntarget = \"quality\"\n[etl]\nfilter = [\"quality >= 5\"]\n[cv]\nfolds = 4\nassignments = \"folds.csv\"\n";
    let cfg = write_config(d.path(), config, "[[models]]\nkind = \"naive_bayes\"\n");
    sweep_json(d.path(), &cfg, &[]);
    let out = run_ok(runner(d.path()).args(["show", "t1", "--json"]));
    let record = stdout_json(&out)["record"].clone();
    // The rows the filter keeps, in input order, each in its file's fold.
    let kept: Vec<usize> = (white.lines().skip(1).enumerate())
        .filter(|(_, l)| l.rsplit(',').next().unwrap().parse::<i64>().unwrap() >= 5)
        .map(|(r, _)| r)
        .collect();
    assert!(kept.len() < n, "the filter drops grades 3 and 4");
    let fold_of: Vec<usize> = kept.iter().map(|r| r % 4).collect();
    let digest = hex(&sha2::Sha256::digest(folds_json(&fold_of, 4).as_bytes()));
    assert_eq!(
        record["folds_sha256"],
        digest.as_str(),
        "the file's folds, exactly"
    );
    let file_digest = hex(&sha2::Sha256::digest(csv.as_bytes()));
    assert_eq!(record["folds_file_sha256"], file_digest.as_str());
    let out = run_ok(runner(d.path()).args(["replay", "t1", "--check", "--json"]));
    assert_eq!(stdout_json(&out)["identical"], true);
    // A changed file: replay refuses, naming it.
    std::fs::write(
        d.path().join("folds.csv"),
        csv.replace("\n5,1\n", "\n5,2\n"),
    )
    .unwrap();
    let out = runner(d.path()).args(["replay", "t1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has changed since t1"));
    // A file that does not fit the config is refused before anything is written.
    let e = tempfile::tempdir().unwrap();
    std::fs::write(e.path().join("white.csv"), &white).unwrap();
    std::fs::write(e.path().join("folds.csv"), &csv).unwrap();
    let three = config.replace("folds = 4", "folds = 3");
    let cfg = write_config(e.path(), &three, "[[models]]\nkind = \"naive_bayes\"\n");
    assert!(refused(runner(e.path()).args(["sweep"]).arg(&cfg)).contains("set cv.folds = 4"));
    let short: String = csv.lines().take(1000).map(|l| format!("{l}\n")).collect();
    std::fs::write(e.path().join("folds.csv"), short).unwrap();
    let cfg = write_config(e.path(), config, "[[models]]\nkind = \"naive_bayes\"\n");
    let err = refused(runner(e.path()).args(["sweep"]).arg(&cfg));
    assert!(
        err.contains("gives no fold to row") && err.contains("cv.assignments"),
        "{err}"
    );
    assert!(!e.path().join("mlflow.db").exists());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `prune = "rounds"` also judges a booster's first fold round by round (after a warm-up):
/// a stopped trial records the round, and replay stops it at that round again, bit for bit.
#[test]
fn round_pruning_stops_boosters_inside_the_first_fold_and_replays() {
    if !cfg!(feature = "lightgbm") {
        eprintln!("skipped: needs the lightgbm feature");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let sweep = "[search]\nstrategy = \"tpe\"\ntrials = 12\nstartup_trials = 6\nprune = \"rounds\"\n\n[[models]]\nname = \"gbm\"\nkind = \"lightgbm\"\nn_rounds = 40\nlearning_rate = { low = 0.005, high = 0.3, log = true }\nnum_leaves = { low = 4, high = 64, log = true }\n";
    let cfg = write_config(d.path(), CONFIG, sweep);
    let report = sweep_json(d.path(), &cfg, &["--jobs", "1"]);
    let runs = report["runs"].as_array().unwrap();
    let by_round: Vec<&Value> = runs
        .iter()
        .filter(|r| r["pruned"]["round"].is_i64())
        .collect();
    assert!(
        !by_round.is_empty(),
        "no trial stopped inside a fold: {report}"
    );
    let p = by_round[0];
    let round = p["pruned"]["round"].as_i64().unwrap();
    assert!(round >= 10, "after the warm-up: {p}");
    assert!(
        p["pruned"]["reason"].as_str().unwrap().contains("valid_"),
        "{p}"
    );
    let tv = p["version"].as_str().unwrap();
    let out = run_ok(runner(d.path()).args(["replay", tv, "--json"]));
    let replay = stdout_json(&out);
    assert_eq!(replay["status"], "KILLED", "{replay}");
    let again = replay["replay"].as_str().unwrap();
    let out = run_ok(runner(d.path()).args(["show", again, "--json"]));
    let pruned = &stdout_json(&out)["summary"]["pruned"];
    assert_eq!(
        pruned["round"], round,
        "the replay stopped at the same round: {pruned}"
    );
}

/// Runs of a sweep report in run order: (trial name, pruned round, pruned reason).
fn pruned_rounds(report: &Value) -> Vec<(String, Option<i64>, String)> {
    let mut runs: Vec<&Value> = report["runs"].as_array().unwrap().iter().collect();
    runs.sort_by_key(|r| r["version"].as_str().unwrap()[1..].parse::<i64>().unwrap());
    (runs.iter())
        .map(|r| {
            let reason = r["pruned"]["reason"].as_str().unwrap_or_default();
            let name = r["name"].as_str().unwrap().to_string();
            (name, r["pruned"]["round"].as_i64(), reason.to_string())
        })
        .collect()
}

/// `prune = "asha"`: successive halving at rungs after 5, 15, 45 rounds of the first fold.
/// Trials stop only at rungs, and every rung keeps the best third of what reached it; a search
/// continued with more trials (the rungs rebuilt from the store, pruned trials included) asks
/// the same trials as an unbroken one and never a trial number twice; replay stops a pruned
/// trial at the same round, bit for bit.
#[test]
fn asha_prunes_at_rungs_resumes_and_replays() {
    if !cfg!(feature = "lightgbm") {
        eprintln!("skipped: needs the lightgbm feature");
        return;
    }
    let sweep = |trials: usize| {
        format!("[search]\nstrategy = \"tpe\"\ntrials = {trials}\nstartup_trials = 6\nprune = \"asha\"\nmin_rounds = 5\nreduction_factor = 3\n\n[[models]]\nname = \"gbm\"\nkind = \"lightgbm\"\nn_rounds = 45\nlearning_rate = {{ low = 0.005, high = 0.3, log = true }}\nnum_leaves = {{ low = 4, high = 64, log = true }}\n")
    };
    let (d, e) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = write_config(d.path(), CONFIG, &sweep(10));
    let first = pruned_rounds(&sweep_json(d.path(), &cfg, &["--jobs", "1"]));
    let stopped: Vec<_> = first.iter().filter(|(_, r, _)| r.is_some()).collect();
    assert!(stopped.len() >= 3, "{first:?}");
    for (name, round, reason) in &stopped {
        assert!(
            [4, 14].contains(&round.unwrap()),
            "{name} stopped between rungs: {reason}"
        );
        assert!(reason.contains("is not among the best"), "{reason}");
    }
    assert!(
        first.iter().any(|(_, r, _)| r.is_none()),
        "some trial finished: {first:?}"
    );
    // Continued to 13 trials, against 13 trials unbroken.
    let cfg = write_config(d.path(), CONFIG, &sweep(13));
    let more = pruned_rounds(&sweep_json(d.path(), &cfg, &["--jobs", "1"]));
    let cfg_e = write_config(e.path(), CONFIG, &sweep(13));
    let unbroken = pruned_rounds(&sweep_json(e.path(), &cfg_e, &["--jobs", "1"]));
    let trial_of = |name: &str| name.split('[').next().unwrap().to_string();
    let continued: Vec<_> = (more.iter())
        .filter(|(n, ..)| !n.contains("#best"))
        .collect();
    assert_eq!(
        continued
            .iter()
            .map(|(n, ..)| trial_of(n))
            .collect::<Vec<_>>(),
        ["gbm#11", "gbm#12", "gbm#13"],
        "only the new trial numbers: {more:?}"
    );
    for c in continued {
        let same = unbroken.iter().find(|u| u.0 == c.0);
        assert_eq!(same, Some(c), "as the unbroken search: {unbroken:?}");
    }
    // Replay of a pruned trial stops at its round again, bit for bit.
    let out = run_ok(runner(d.path()).args(["runs", "--json"]));
    let listed = stdout_json(&out);
    let killed = (listed["runs"].as_array().unwrap().iter())
        .find(|r| r["status"] == "KILLED")
        .unwrap_or_else(|| panic!("{listed}"));
    let tv = killed["version"].as_str().unwrap();
    let replay = stdout_json(&run_ok(
        runner(d.path()).args(["replay", tv, "--check", "--json"]),
    ));
    assert_eq!(replay["identical"], true, "{replay}");
    assert_eq!(replay["status"], "KILLED", "{replay}");
    let out = run_ok(runner(d.path()).arg("validate").arg(&cfg));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("rungs after 5 rounds, x3"), "{said}");
    // Its settings only go with prune = "asha", in range.
    let median = sweep(4).replace("\"asha\"", "\"median\"");
    let cfg = write_config(e.path(), CONFIG, &median);
    let err = refused(runner(e.path()).args(["sweep"]).arg(&cfg));
    assert!(
        err.contains("search.min_rounds") && err.contains("asha"),
        "{err}"
    );
    let cfg = write_config(
        e.path(),
        CONFIG,
        &sweep(4).replace("reduction_factor = 3", "reduction_factor = 1"),
    );
    let err = refused(runner(e.path()).args(["sweep"]).arg(&cfg));
    assert!(err.contains("search.reduction_factor"), "{err}");
}

/// `timeout_s` decides how many trials run: no trial starts after it, the ones that started
/// finish, and with two workers each trial still replays bit for bit.
#[test]
fn a_timeout_ends_the_search_and_parallel_trials_replay() {
    let d = tempfile::tempdir().unwrap();
    let sweep = "[search]\nstrategy = \"tpe\"\ntimeout_s = 2\nstartup_trials = 3\n\n[[models]]\nname = \"forest\"\nkind = \"random_forest\"\nn_trees = { low = 5, high = 30 }\nmax_depth = { low = 2, high = 10 }\n";
    let cfg = write_config(d.path(), CONFIG, sweep);
    let started = std::time::Instant::now();
    let report = sweep_json(d.path(), &cfg, &["--jobs", "2"]);
    let runs = report["runs"].as_array().unwrap();
    assert!(runs.len() >= 2, "{} trials in 2 s", runs.len());
    assert!(
        started.elapsed().as_secs() < 60,
        "the search stopped asking"
    );
    let last = runs.last().unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    let out = run_ok(runner(d.path()).args(["replay", &last, "--check", "--json"]));
    assert_eq!(stdout_json(&out)["identical"], true);
}
