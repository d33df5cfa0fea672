//! Sweeps on data other than the builtin: the white wine file and small generated sets with a
//! string target, missing values, a categorical column and a regression target.
mod common;
use common::*;

fn sweep_json(dir: &std::path::Path, cfg: &str, sweep: &str) -> serde_json::Value {
    let path = write_config(dir, cfg, sweep);
    stdout_json(&run_ok(
        runner(dir)
            .args(["sweep"])
            .arg(&path)
            .args(["--json", "--jobs", "2"]),
    ))
}

#[test]
fn white_wine_csv() {
    let d = tempfile::tempdir().unwrap();
    let white = repo().join("tests/data/winequality-white.csv");
    let white =
        std::fs::canonicalize(&white).expect("tests/data/winequality-white.csv is in the repo");
    let cfg = format!(
        "experiment = \"white\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"{}\"\ntarget = \"quality\"\n[etl]\nscale = \"standard\"\n[cv]\nfolds = 3\n",
        white.display()
    );
    let r = sweep_json(d.path(), &cfg, "[[models]]\nkind = \"random_forest\"\nn_trees = 30\n[[models]]\nkind = \"logistic_regression\"\n");
    assert_eq!(r["task"], "classification");
    let labels: Vec<&str> = r["runs"][0]["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        vec!["3", "4", "5", "6", "7", "8", "9"],
        "grades decoded back"
    );
    // The majority class (grade 6) is 44.9 % of the white wines: both models must beat it.
    for run in r["runs"].as_array().unwrap() {
        let acc = run["metrics"]["accuracy"]["mean"].as_f64().unwrap();
        assert!(acc > 0.50, "{} accuracy {acc}", run["name"]);
    }
}

/// 300 rows: a text target driven by x1 and a categorical column, with missing values.
fn generated_csv(dir: &std::path::Path) -> std::path::PathBuf {
    let mut s = String::from("x1,x2,colour,label,score\n");
    for i in 0..300 {
        let x1 = (i % 17) as f64 / 4.0;
        let x2 = ((i * 7) % 13) as f64;
        let colour = ["red", "green", "blue"][i % 3];
        let positive = x1 > 2.0 || colour == "red";
        let label = if positive { "good" } else { "bad" };
        let score = 2.0 * x1 + if colour == "blue" { 3.0 } else { 0.0 } + (i % 5) as f64 * 0.1;
        let x2s = if i % 10 == 0 {
            String::new()
        } else {
            x2.to_string()
        };
        let colours = if i % 25 == 0 { "" } else { colour };
        s.push_str(&format!("{x1},{x2s},{colours},{label},{score}\n"));
    }
    let p = dir.join("gen.csv");
    std::fs::write(&p, s).unwrap();
    p
}

#[test]
fn string_target_missing_values_and_a_category() {
    let d = tempfile::tempdir().unwrap();
    generated_csv(d.path());
    let cfg = "experiment = \"gen\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"gen.csv\"\ntarget = \"label\"\n[etl]\ndrop = [\"score\"]\nimpute = \"median\"\nencode = \"onehot\"\nscale = \"standard\"\n[cv]\nfolds = 3\n";
    let r = sweep_json(d.path(), cfg, "[[models]]\nkind = \"decision_tree\"\nmax_depth = 4\n[[models]]\nkind = \"logistic_regression\"\n");
    assert_eq!(r["task"], "classification");
    assert!(r["task_reason"].as_str().unwrap().contains("text"));
    let tree = r["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kind"] == "decision_tree")
        .unwrap();
    let labels: Vec<&str> = tree["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, vec!["bad", "good"]);
    assert!(
        tree["metrics"]["accuracy"]["mean"].as_f64().unwrap() > 0.9,
        "the rule is learnable: {}",
        tree["metrics"]["accuracy"]
    );
}

#[test]
fn missing_values_without_imputation_are_refused() {
    let d = tempfile::tempdir().unwrap();
    generated_csv(d.path());
    let cfg = "experiment = \"gen\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"gen.csv\"\ntarget = \"label\"\n";
    let path = write_config(d.path(), cfg, "[[models]]\nkind = \"naive_bayes\"\n");
    let out = runner(d.path())
        .args(["sweep"])
        .arg(&path)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("\"x2\" has 30 missing values") && e.contains("etl.impute"),
        "{e}"
    );
}

#[test]
fn regression_target() {
    let d = tempfile::tempdir().unwrap();
    generated_csv(d.path());
    let cfg = "experiment = \"gen-reg\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"gen.csv\"\ntarget = \"score\"\n[etl]\ndrop = [\"label\"]\nimpute = \"mean\"\nscale = \"standard\"\n[cv]\nfolds = 3\nstratified = false\n";
    let r = sweep_json(
        d.path(),
        cfg,
        "[[models]]\nkind = \"linear\"\n[[models]]\nkind = \"random_forest\"\nn_trees = 20\n",
    );
    assert_eq!(r["task"], "regression");
    assert_eq!(r["primary_metric"], "mae");
    let lin = r["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kind"] == "linear")
        .unwrap();
    // score = 2 x1 + 3 [blue] + noise in [0, 0.4]: a linear model on one-hot colour is near exact.
    assert!(
        lin["metrics"]["mae"]["mean"].as_f64().unwrap() < 0.3,
        "{}",
        lin["metrics"]["mae"]
    );
    assert!(lin["metrics"]["r2"]["mean"].as_f64().unwrap() > 0.95);
}
