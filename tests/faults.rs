//! Fault injection: runs whose process was killed, a full disk, stores runner must not change
//! (read-only media, MLflow's own, foreign files, unknown schema revisions), data that cannot be
//! learned from, and the exit code of every mistake found before anything is written.
mod common;
use common::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sha(path: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A mount made for one test, unmounted when dropped. `None` where this user cannot mount
/// (not root, or no mount namespace permission).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Mount(at.to_path_buf()))
    }

    fn read_only_view(of: &Path, at: &Path) -> Option<Mount> {
        std::fs::create_dir_all(at).unwrap();
        let bind = Command::new("mount").arg("--bind").arg(of).arg(at).output();
        if !bind.is_ok_and(|o| o.status.success()) {
            return None;
        }
        let mount = Mount(at.to_path_buf());
        let ro = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(at)
            .output();
        ro.is_ok_and(|o| o.status.success()).then_some(mount)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn forest_config(dir: &Path, experiment: &str, trees: usize, configs: usize) -> PathBuf {
    let cfg = format!(
        "experiment = \"{experiment}\"\nseed = 42\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[cv]\nfolds = 5\n"
    );
    let mut sweep = String::new();
    for i in 0..configs {
        sweep.push_str(&format!(
            "[[models]]\nkind = \"random_forest\"\nname = \"forest{i}\"\nn_trees = {trees}\nmin_samples_leaf = {}\n",
            i + 1
        ));
    }
    write_config(dir, &cfg, &sweep)
}

fn runs_json(dir: &Path, extra: &[&str]) -> serde_json::Value {
    stdout_json(&run_ok(runner(dir).args(["runs", "--json"]).args(extra)))
}

fn statuses(runs: &serde_json::Value) -> Vec<String> {
    runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect()
}

fn set_owner(db: &Path, version: &str, host: &str, heartbeat_ms: i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute(
        "UPDATE runner_run_owners SET host = ?1, heartbeat_ms = ?2 WHERE run_uuid = (SELECT run_uuid FROM runner_training_runs WHERE version = ?3)",
        rusqlite::params![host, heartbeat_ms, version.trim_start_matches('t').parse::<i64>().unwrap()],
    )
    .unwrap();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `runner sweep CONFIG --jobs 1` started in `dir`, returned once its first run trains (its
/// output to `output()`'s pipes or nowhere).
fn sweep_until_a_run_trains(
    dir: &Path,
    cfg: &Path,
    output: fn() -> std::process::Stdio,
) -> std::process::Child {
    let db = dir.join("mlflow.db");
    let mut child = runner(dir)
        .arg("sweep")
        .arg(cfg)
        .args(["--jobs", "1"])
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        assert!(started.elapsed().as_secs() < 120, "no run started training");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended before any run was seen training"
        );
        if db.exists() {
            let out = runner(dir).args(["runs", "--json"]).output().unwrap();
            if out.status.success() && statuses(&stdout_json(&out)).contains(&"RUNNING".into()) {
                return child;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn ctrl_c_ends_the_sweep_with_its_runs_and_parent_killed_and_exit_130() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("mlflow.db");
    let cfg = forest_config(d.path(), "ctrl-c", 400, 4);
    let started = std::time::Instant::now();
    // Ctrl-C (SIGINT) once the first run trains.
    let child = sweep_until_a_run_trains(d.path(), &cfg, std::process::Stdio::piped);
    // SAFETY: sends a signal to the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr_of(&out));
    // It stopped within a fold or two, not after four forests.
    assert!(started.elapsed().as_secs() < 60);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("interrupted"), "{stdout}");
    // Every run ended KILLED, with the reason; the next command reconciles nothing.
    let runs = runs_json(d.path(), &[]);
    assert_eq!(statuses(&runs), vec!["KILLED"; 4], "{runs}");
    let c = rusqlite::Connection::open(&db).unwrap();
    let reasons: Vec<String> = c
        .prepare("SELECT value FROM tags WHERE key = 'runner.killed_reason'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // Four runs and the sweep's parent.
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.starts_with("interrupted")),
        "{reasons:?}"
    );
    let parent: String = c
        .query_row(
            "SELECT status FROM runs WHERE run_uuid IN (SELECT run_uuid FROM tags WHERE key = 'runner.sweep' AND value = 'parent')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(parent, "KILLED");
}

#[test]
fn runs_of_a_killed_process_are_shown_killed_and_reconciled_by_the_next_writer() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("mlflow.db");
    let cfg = forest_config(d.path(), "killed", 300, 3);
    // Kill -9 once the first run trains.
    let mut child = sweep_until_a_run_trains(d.path(), &cfg, std::process::Stdio::null);
    child.kill().unwrap();
    child.wait().unwrap();

    // Read-only commands show the truth and write nothing.
    let before = sha(&db);
    let runs = runs_json(d.path(), &[]);
    assert_eq!(statuses(&runs), vec!["KILLED"; 3], "{runs}");
    assert!(runs["runs"][0]["status_reason"]
        .as_str()
        .unwrap()
        .contains("process gone"));
    let table = String::from_utf8_lossy(&run_ok(runner(d.path()).arg("runs")).stdout).to_string();
    assert!(table.contains("KILLED (process gone)"), "{table}");
    assert_eq!(
        statuses(&runs_json(d.path(), &["--status", "running"])).len(),
        0
    );
    run_ok(runner(d.path()).args(["show", "t1"]));
    assert_eq!(sha(&db), before, "read-only commands changed the store");

    // A run on another host is judged by its heartbeat alone.
    set_owner(&db, "t1", "another-host", now_ms());
    let runs = runs_json(d.path(), &[]);
    assert_ne!(
        statuses(&runs)[0],
        "KILLED",
        "a fresh heartbeat is alive: {runs}"
    );
    set_owner(&db, "t1", "another-host", now_ms() - 3_600_000);
    let out = run_ok(
        runner(d.path())
            .args(["runs", "--json"])
            .env("RUNNER_STALE_AFTER", "60"),
    );
    let runs = stdout_json(&out);
    assert_eq!(statuses(&runs)[0], "KILLED");
    assert!(runs["runs"][0]["status_reason"]
        .as_str()
        .unwrap()
        .contains("heartbeat stale"));

    // The next command that writes marks them KILLED for every reader, MLflow's too.
    let other = d.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let quick = write_config(
        &other,
        "experiment = \"next\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n",
        "[[models]]\nkind = \"naive_bayes\"\n",
    );
    run_ok(
        runner(d.path())
            .arg("sweep")
            .arg(&quick)
            .env("RUNNER_STALE_AFTER", "60"),
    );
    let store = read_with_mlflow(&db);
    let killed = experiment_runs(&store, "killed");
    assert_eq!(killed.len(), 4, "three runs and their parent");
    for r in &killed {
        assert_eq!(r["status"], "KILLED", "{}", r["run_name"]);
        assert!(r["tags"]["runner.killed_reason"].as_str().unwrap().len() > 10);
        assert!(r["end_time"].as_i64().is_some());
    }
}

#[test]
fn a_full_disk_fails_runs_cleanly_and_names_the_store() {
    let d = tempfile::tempdir().unwrap();
    let small = d.path().join("small");
    let cfg = forest_config(d.path(), "full", 150, 4);
    let db = small.join("mlflow.db");
    let uri = format!("sqlite:///{}", db.display());
    let mount = Mount::tmpfs(&small, "3m");
    let mut cmd = if mount.is_some() {
        let mut c = runner(d.path());
        c.arg("sweep");
        c
    } else {
        // No tmpfs here (not root): a file-size limit fails the same writes.
        eprintln!(
            "cannot mount a tmpfs here: simulating the full disk with a 3 MB file-size limit"
        );
        std::fs::create_dir_all(&small).unwrap();
        let mut c = Command::new("prlimit");
        c.arg("--fsize=3000000")
            .arg(env!("CARGO_BIN_EXE_runner"))
            .arg("sweep")
            .current_dir(d.path())
            .env_remove("MLFLOW_TRACKING_URI");
        c
    };
    let out = cmd
        .arg(&cfg)
        .args(["--jobs", "1", "--tracking-uri", &uri])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&db.display().to_string()),
        "the message names the store: {all}"
    );
    let partial: Vec<_> = files_under(&small)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(partial.is_empty(), "half-written files left: {partial:?}");
    // Nothing is left looking live: each run is FAILED, or shown KILLED since its writer is gone.
    let runs = runs_json(d.path(), &["--tracking-uri", &uri]);
    let st = statuses(&runs);
    assert!(!st.is_empty(), "the store holds the runs: {all}");
    assert!(
        st.iter()
            .all(|s| s == "FAILED" || s == "KILLED" || s == "FINISHED"),
        "{st:?}"
    );
    assert!(
        st.iter().any(|s| s != "FINISHED"),
        "the disk filled up: {st:?}"
    );
    drop(mount);
}

#[test]
fn read_only_commands_change_no_store_and_work_on_read_only_media() {
    let d = tempfile::tempdir().unwrap();
    // A store MLflow made: read by runner, unchanged to the byte, no journal switched.
    let theirs = d.path().join("theirs.db");
    create_with_mlflow(&theirs);
    let before = sha(&theirs);
    let uri = sqlite_uri(&theirs);
    let runs = runs_json(d.path(), &["--tracking-uri", &uri]);
    assert_eq!(runs["runs"].as_array().unwrap().len(), 0);
    assert_eq!(sha(&theirs), before, "`runner runs` changed MLflow's store");
    assert!(!d.path().join("theirs.db-wal").exists());

    // Runner's own store, then the same through a read-only mount.
    let mine = d.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    let cfg = forest_config(&mine, "ro", 10, 2);
    sweep_json(&mine, &cfg, &[]);
    let db = mine.join("mlflow.db");
    let before = sha(&db);
    for args in [
        vec!["runs"],
        vec!["show", "t1"],
        vec!["show", "v1"],
        vec!["diff", "t1", "t2"],
    ] {
        run_ok(runner(&mine).args(&args));
    }
    assert_eq!(sha(&db), before, "a read-only command changed the store");
    let view = d.path().join("view");
    let Some(_mount) = Mount::read_only_view(&mine, &view) else {
        eprintln!("cannot bind-mount here (not root): read-only media not tested");
        return;
    };
    let ro_uri = format!("sqlite:///{}", view.join("mlflow.db").display());
    for args in [vec!["runs"], vec!["show", "t1"], vec!["diff", "t1", "t2"]] {
        let out = run_ok(
            runner(d.path())
                .args(&args)
                .args(["--tracking-uri", &ro_uri]),
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("t1"),
            "{args:?}"
        );
    }
    let out = runner(d.path())
        .args(["predict", "t1", "--input"])
        .arg(repo().join("tests/data/winequality-white.csv"))
        .args(["--tracking-uri", &ro_uri])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "predict from read-only media: {}",
        stderr_of(&out)
    );
    assert_eq!(sha(&db), before);
}

/// `runner sweep` into `db`: must exit 2 and leave the file exactly as it was.
fn refused(dir: &Path, db: &Path, wants: &[&str]) {
    let before = sha(db);
    let cfg = write_config(
        dir,
        "experiment = \"x\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n",
        "[[models]]\nkind = \"naive_bayes\"\n",
    );
    let out = runner(dir)
        .arg("sweep")
        .arg(&cfg)
        .args(["--tracking-uri", &sqlite_uri(db)])
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for w in wants {
        assert!(err.contains(w), "message lacks {w}: {err}");
    }
    assert_eq!(sha(db), before, "a refused store was changed");
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    assert!(!wal.exists(), "a refused store was switched to WAL");
}

fn sql(db: &Path, statements: &str) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute_batch(statements)
        .unwrap();
}

#[test]
fn foreign_newer_older_and_damaged_stores_are_refused_untouched() {
    let d = tempfile::tempdir().unwrap();
    let foreign = d.path().join("foreign.db");
    sql(
        &foreign,
        "CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('mine');",
    );
    refused(
        d.path(),
        &foreign,
        &["not an MLflow tracking store", "refusing"],
    );

    let text = d.path().join("text.db");
    std::fs::write(
        &text,
        "this is not a database at all, just some words to fill a page",
    )
    .unwrap();
    refused(d.path(), &text, &["not an SQLite database"]);

    let newer = d.path().join("newer.db");
    create_with_mlflow(&newer);
    sql(
        &newer,
        "UPDATE alembic_version SET version_num = 'ffffffffffff';",
    );
    refused(d.path(), &newer, &["ffffffffffff", "dc11669786a5"]);

    let ancient = d.path().join("ancient.db");
    create_with_mlflow(&ancient);
    sql(
        &ancient,
        "UPDATE alembic_version SET version_num = 'cfd24bdc0731';",
    );
    refused(d.path(), &ancient, &["cfd24bdc0731", "mlflow db upgrade"]);

    let damaged = d.path().join("damaged.db");
    create_with_mlflow(&damaged);
    sql(&damaged, "DROP TABLE input_tags;");
    refused(d.path(), &damaged, &["input_tags"]);

    // An older revision that runner knows (MLflow 2.4) is written into.
    let older = d.path().join("older.db");
    create_with_mlflow(&older);
    sql(
        &older,
        "UPDATE alembic_version SET version_num = '7f2a7d5fae7d';",
    );
    let cfg = write_config(
        d.path(),
        "experiment = \"x\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n",
        "[[models]]\nkind = \"naive_bayes\"\n",
    );
    run_ok(
        runner(d.path())
            .arg("sweep")
            .arg(&cfg)
            .args(["--tracking-uri", &sqlite_uri(&older)]),
    );
}

/// A CSV `name` with `body` in `dir`, and a config on it with extra settings; runs `sweep` and
/// asserts exit 2 with every wanted text, and that nothing was written.
fn bad_data(name: &str, body: &[u8], extra: &str, wants: &[&str]) {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join(name), body).unwrap();
    let cfg = format!(
        "experiment = \"bad\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"{name}\"\ntarget = \"y\"\n{extra}"
    );
    let path = write_config(d.path(), &cfg, "[[models]]\nkind = \"decision_tree\"\n");
    let out = runner(d.path()).arg("sweep").arg(&path).output().unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{name} {extra}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for w in wants {
        assert!(err.contains(w), "{name} {extra}: message lacks {w}: {err}");
    }
    assert!(
        !d.path().join("mlflow.db").exists(),
        "{name} {extra}: a store was written"
    );
}

fn rows(n: usize, class: impl Fn(usize) -> &'static str) -> String {
    let mut s = String::from("a,b,y\n");
    for i in 0..n {
        s.push_str(&format!("{i},{},{}\n", i * 7 % 5, class(i)));
    }
    s
}

#[test]
fn data_that_cannot_be_learned_from_is_refused_before_training() {
    bad_data(
        "d.csv",
        rows(4, |i| if i % 2 == 0 { "p" } else { "q" }).as_bytes(),
        "[cv]\nfolds = 5\nstratified = false\n",
        &["config.toml", "cv.folds", "5 folds", "4"],
    );
    bad_data(
        "d.csv",
        rows(30, |_| "only").as_bytes(),
        "",
        &["config.toml", "data.target", "single class", "\"only\""],
    );
    bad_data(
        "d.csv",
        rows(40, |i| {
            if i < 2 {
                "rare"
            } else if i % 2 == 0 {
                "p"
            } else {
                "q"
            }
        })
        .as_bytes(),
        "[cv]\nfolds = 5\n",
        &["cv.folds", "\"rare\"", "2 rows"],
    );
    bad_data(
        "d.csv",
        b"a,b,a,y\n1,2,3,p\n4,5,6,q\n",
        "",
        &["d.csv", "columns 1 and 3", "\"a\""],
    );
}

#[test]
fn every_mistake_in_the_data_exits_2_before_anything_is_written() {
    let ok = rows(30, |i| if i % 2 == 0 { "p" } else { "q" });
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("null target", b"a,y\n1,\n2,\n3,\n".to_vec(), String::new()),
        ("header only", b"a,b,y\n".to_vec(), String::new()),
        (
            "filter removes all",
            ok.clone().into_bytes(),
            "[etl]\nfilter = [\"a > 1000\"]\n".into(),
        ),
        (
            "no features",
            ok.clone().into_bytes(),
            "[etl]\ndrop = [\"a\", \"b\"]\n".into(),
        ),
        (
            "ragged",
            b"a,b,y\n1,2,p\n3,4,q,9,9\n5,6,p\n".to_vec(),
            String::new(),
        ),
        ("empty", Vec::new(), String::new()),
        (
            "not utf-8",
            b"a,b,y\n1,2,\xff\xfe\n3,4,q\n".to_vec(),
            String::new(),
        ),
        (
            "cast failure",
            b"a,b,y\n1,x,p\n2,y,q\n".to_vec(),
            "[etl.cast]\nb = \"f64\"\n".into(),
        ),
        (
            "filter type",
            b"a,b,y\n1,x,p\n2,y,q\n".to_vec(),
            "[etl]\nfilter = [\"b > 3\"]\n".into(),
        ),
        (
            "text regression",
            ok.clone().into_bytes(),
            "task = \"regression\"\n".into(),
        ),
    ];
    for (what, body, extra) in cases {
        eprintln!("case: {what}");
        // Top-level keys (task) must come before the tables.
        let (top, tables) = if extra.starts_with('[') {
            (String::new(), extra)
        } else {
            (extra, String::new())
        };
        bad_data_with_top("d.csv", &body, &top, &tables, what);
    }
    bad_data_with_top("d.parquet", b"a,b,y\n1,2,p\n", "", "", "text as parquet");
}

fn bad_data_with_top(name: &str, body: &[u8], top: &str, tables: &str, what: &str) {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join(name), body).unwrap();
    let cfg = format!(
        "experiment = \"bad\"\nsweeps = [\"sweep.toml\"]\n{top}[data]\nsource = \"{name}\"\ntarget = \"y\"\n{tables}"
    );
    let path = write_config(d.path(), &cfg, "[[models]]\nkind = \"decision_tree\"\n");
    let out = runner(d.path()).arg("sweep").arg(&path).output().unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(
        err.contains("config.toml"),
        "{what}: names the config: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(
        !d.path().join("mlflow.db").exists(),
        "{what}: a store was written"
    );
}

#[test]
fn an_unusable_tracking_uri_exits_2_wherever_it_is_written() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        "experiment = \"x\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n",
        "[[models]]\nkind = \"naive_bayes\"\n",
    );
    let cli = runner(d.path())
        .arg("sweep")
        .arg(&cfg)
        .args(["--tracking-uri", "postgres://db/mlflow"])
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(2), "{}", stderr_of(&cli));
    assert!(stderr_of(&cli).contains("--tracking-uri"));
    let env = runner(d.path())
        .arg("runs")
        .env("MLFLOW_TRACKING_URI", "postgres://db/mlflow")
        .output()
        .unwrap();
    assert_eq!(env.status.code(), Some(2), "{}", stderr_of(&env));
    assert!(stderr_of(&env).contains("MLFLOW_TRACKING_URI"));
    let in_config = write_config(
        d.path(),
        "experiment = \"x\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[tracking]\nuri = \"postgres://db/mlflow\"\n",
        "[[models]]\nkind = \"naive_bayes\"\n",
    );
    let out = runner(d.path())
        .arg("sweep")
        .arg(&in_config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!d.path().join("mlflow.db").exists());
}

/// Workers take the heaviest kinds first (a long run started last leaves the other workers
/// idle): with one job, the SVM of the second config ends before the tree of the first, and
/// the numbers still follow the sweep file.
#[test]
fn heavier_kinds_train_first_and_keep_their_numbers() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        "experiment = \"order\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[cv]\nfolds = 2\n",
        "[[models]]\nkind = \"decision_tree\"\nname = \"tree\"\n[[models]]\nkind = \"svm\"\nname = \"svm\"\n",
    );
    let report = sweep_json(d.path(), &cfg, &["--jobs", "1"]);
    let names: Vec<&str> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["tree", "svm"],
        "t1 and t2 in the sweep file's order"
    );
    let c = rusqlite::Connection::open(d.path().join("mlflow.db")).unwrap();
    let end = |name: &str| -> i64 {
        c.query_row("SELECT end_time FROM runs WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert!(end("t2-svm") <= end("t1-tree"), "the SVM trained first");
}
