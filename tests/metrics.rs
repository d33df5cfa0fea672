//! Task metrics as a user sees them: a binary problem is scored and can be ranked by ROC-AUC
//! and PR-AUC, and the real MLflow client reads them.
mod common;

use common::*;

#[test]
fn a_binary_sweep_ranks_by_roc_auc_and_logs_pr_auc() {
    let d = tempfile::tempdir().unwrap();
    // Grades 5 and 6 only: two classes.
    let cfg = write_config(
        d.path(),
        "experiment = \"wine-binary\"\nsweeps = [\"sweep.toml\"]\nprimary_metric = \"roc_auc\"\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n[etl]\nfilter = [\"quality >= 5\", \"quality <= 6\"]\nscale = \"standard\"\n[cv]\nfolds = 3\n",
        "[[models]]\nkind = \"logistic_regression\"\n[[models]]\nkind = \"decision_tree\"\nmax_depth = 1\n",
    );
    let report = sweep_json(d.path(), &cfg, &[]);
    assert_eq!(report["primary_metric"], "roc_auc");
    assert_eq!(report["higher_is_better"], true);
    let auc = |r: &serde_json::Value, key: &str| r["metrics"][key]["mean"].as_f64().unwrap();
    let runs = report["runs"].as_array().unwrap();
    for r in runs {
        for key in ["roc_auc", "pr_auc"] {
            let v = auc(r, key);
            assert!(v > 0.5 && v <= 1.0, "{} {key} = {v}", r["name"]);
        }
        assert!(r["fold_metrics"]["roc_auc"].as_array().unwrap().len() == 3);
    }
    // A one-split stump ranks a wine's quality worse than logistic regression on every feature.
    let (lr, stump) = (auc(&runs[0], "roc_auc"), auc(&runs[1], "roc_auc"));
    assert!(lr > stump, "logistic {lr} vs stump {stump}");
    let store = read_with_mlflow(&d.path().join("mlflow.db"));
    let logged = experiment_runs(&store, "wine-binary");
    let lr_run = logged
        .iter()
        .find(|r| r["run_id"] == runs[0]["run_uuid"])
        .expect("the logistic run is in MLflow");
    assert!(lr_run["metrics"]["roc_auc"].as_f64().is_some(), "{lr_run}");
    assert!(
        lr_run["metrics"]["fold0/pr_auc"].as_f64().is_some(),
        "{lr_run}"
    );
    assert!(lr_run["metrics"]["brier"].as_f64().is_some(), "{lr_run}");
    // The ROC and precision-recall curves, as charts and their points.
    let tv = runs[0]["version"].as_str().unwrap();
    let artifacts = artifact_names(lr_run);
    for name in ["roc_curve", "pr_curve", "reliability_curve"] {
        for ext in ["svg", "csv"] {
            let file = format!("{name}_{tv}.{ext}");
            assert!(
                artifacts.contains(&file.as_str()),
                "{file} in {artifacts:?}"
            );
        }
    }
    let run_uuid = runs[0]["run_uuid"].as_str().unwrap();
    // The reliability curve's bins hold every out-of-fold row once, and logistic regression's
    // probabilities are close to calibrated: each well-filled bin's observed share of positives
    // is within 0.15 of its mean prediction.
    let reliability = std::fs::read_to_string(artifact(
        d.path(),
        run_uuid,
        &format!("reliability_curve_{tv}.csv"),
    ))
    .unwrap();
    let bins: Vec<Vec<f64>> = reliability
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    let rows: f64 = bins.iter().map(|b| b[4]).sum();
    assert_eq!(
        rows,
        681.0 + 638.0,
        "the wines of grades 5 and 6, each scored once"
    );
    for b in bins.iter().filter(|b| b[4] >= 50.0) {
        assert!((b[2] - b[3]).abs() < 0.15, "bin {b:?}");
    }
    let roc = std::fs::read_to_string(artifact(d.path(), run_uuid, &format!("roc_curve_{tv}.csv")))
        .unwrap();
    let last = roc.lines().last().unwrap();
    assert!(last.starts_with("1,1,"), "the curve ends at (1, 1): {last}");
}

/// A continuous target gets a handful of quantile bins for its per-bin MAE, not one per value.
#[test]
fn a_continuous_target_gets_quantile_bins_and_the_users_edges() {
    let d = tempfile::tempdir().unwrap();
    let config = |extra: &str| {
        format!("experiment = \"alcohol\"\nsweeps = [\"sweep.toml\"]\ntask = \"regression\"\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"alcohol\"\n[cv]\nfolds = 3\n{extra}")
    };
    let sweep = "[[models]]\nkind = \"linear\"\n";
    let bins = |report: &serde_json::Value| -> Vec<String> {
        let metrics = report["runs"][0]["metrics"].as_object().unwrap();
        metrics
            .keys()
            .filter(|k| k.starts_with("mae_bin"))
            .cloned()
            .collect()
    };
    let cfg = write_config(d.path(), &config(""), sweep);
    let report = sweep_json(d.path(), &cfg, &[]);
    assert_eq!(
        bins(&report),
        [
            "mae_bin_q1",
            "mae_bin_q2",
            "mae_bin_q3",
            "mae_bin_q4",
            "mae_bin_q5"
        ]
    );
    let cfg = write_config(
        d.path(),
        &config("regression_bin_edges = [10.0, 12.0]\n"),
        sweep,
    );
    let report = sweep_json(d.path(), &cfg, &[]);
    assert_eq!(bins(&report), ["mae_bin_q1", "mae_bin_q2", "mae_bin_q3"]);
    let cfg = write_config(
        d.path(),
        &config("regression_bin_edges = [12.0, 10.0]\n"),
        sweep,
    );
    assert!(refused(runner(d.path()).arg("sweep").arg(&cfg)).contains("cv.regression_bin_edges"));
}

/// `rows` of y = [x1 + x2 > 1], where x3 and x4 are independent noise; a fixed LCG keeps the
/// file fixed.
fn two_signals_csv(rows: usize) -> String {
    let mut state: u64 = 42;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut csv = String::from("x1,x2,x3,x4,label\n");
    for _ in 0..rows {
        let (x1, x2, x3, x4) = (uniform(), uniform(), uniform(), uniform());
        let label = if x1 + x2 > 1.0 { "high" } else { "low" };
        csv.push_str(&format!("{x1:.4},{x2:.4},{x3:.4},{x4:.4},{label}\n"));
    }
    csv
}

/// The permutation drop of each input column, from a run's `permutation_importance_tN.csv`.
fn permutation_drops(
    dir: &std::path::Path,
    run: &serde_json::Value,
) -> std::collections::BTreeMap<String, f64> {
    let name = format!(
        "permutation_importance_{}.csv",
        run["version"].as_str().unwrap()
    );
    let text =
        std::fs::read_to_string(artifact(dir, run["run_uuid"].as_str().unwrap(), &name)).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let (f, v) = l.split_once(',').unwrap();
            (f.trim_matches('"').to_string(), v.parse().unwrap())
        })
        .collect()
}

/// Permutation importance, for every kind, puts the two features the class depends on above
/// the two that are noise.
#[test]
fn permutation_importance_ranks_informative_features_above_noise_for_every_kind() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("two_signals.csv"), two_signals_csv(300)).unwrap();
    let mut sweep = String::from(
        "[[models]]\nkind = \"decision_tree\"\nmax_depth = 6\n\
         [[models]]\nkind = \"random_forest\"\nn_trees = 40\n\
         [[models]]\nkind = \"logistic_regression\"\n\
         [[models]]\nkind = \"svm\"\n\
         [[models]]\nkind = \"knn\"\nk = 9\n\
         [[models]]\nkind = \"naive_bayes\"\n\
         [[models]]\nkind = \"voting\"\nmembers = [\"logistic_regression\", \"knn\"]\n",
    );
    if cfg!(feature = "xgboost") {
        sweep.push_str("[[models]]\nkind = \"xgboost\"\nn_rounds = 40\n");
    }
    if cfg!(feature = "lightgbm") {
        sweep.push_str("[[models]]\nkind = \"lightgbm\"\nn_rounds = 40\nmin_data_in_leaf = 5\n");
    }
    if cfg!(feature = "torch") {
        sweep.push_str(
            "[[models]]\nkind = \"mlp\"\nepochs = 60\nlearning_rate = 0.01\nhidden = \"16\"\n",
        );
    }
    let cfg = write_config(
        d.path(),
        "experiment = \"signals\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"two_signals.csv\"\ntarget = \"label\"\n[etl]\nscale = \"standard\"\n[cv]\nfolds = 3\n",
        &sweep,
    );
    let report = sweep_json(d.path(), &cfg, &["--jobs", "1"]);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), sweep.matches("[[models]]").count());
    for run in runs {
        assert_eq!(run["status"], "FINISHED", "{run}");
        let drop = permutation_drops(d.path(), run);
        let informative = drop["x1"].min(drop["x2"]);
        let noise = drop["x3"].max(drop["x4"]);
        assert!(
            informative > noise && informative > 0.05,
            "{} ({}): {drop:?}",
            run["name"],
            run["kind"]
        );
    }
}

/// On a fold of more than 2,000 validation rows the importance predicts a seeded sample of
/// them (one prediction per column): the ranking still holds, and the sampled rows keep their
/// own targets.
#[test]
fn permutation_importance_samples_large_folds_and_still_ranks() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("two_signals.csv"), two_signals_csv(12_000)).unwrap();
    let cfg = write_config(
        d.path(),
        "experiment = \"signals\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"two_signals.csv\"\ntarget = \"label\"\n[cv]\nfolds = 2\n",
        "[[models]]\nkind = \"decision_tree\"\nmax_depth = 6\n[[models]]\nkind = \"naive_bayes\"\n",
    );
    let report = sweep_json(d.path(), &cfg, &["--jobs", "1"]);
    for run in report["runs"].as_array().unwrap() {
        let drop = permutation_drops(d.path(), run);
        let informative = drop["x1"].min(drop["x2"]);
        let noise = drop["x3"].max(drop["x4"]).abs();
        assert!(
            informative > 0.1 && noise < 0.02,
            "{}: {drop:?}",
            run["kind"]
        );
    }
}

/// `cv.importance = "none"` skips the permutation importance (its table and metrics) but keeps
/// the backend's own; an unknown value is refused by key before anything trains.
#[test]
fn importance_none_skips_the_permutation_and_keeps_the_models_own() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("two_signals.csv"), two_signals_csv(200)).unwrap();
    let config = |importance: &str| {
        format!("experiment = \"signals\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"two_signals.csv\"\ntarget = \"label\"\n[cv]\nfolds = 3\nimportance = \"{importance}\"\n")
    };
    let sweep = "[[models]]\nkind = \"decision_tree\"\nmax_depth = 4\n";
    let cfg = write_config(d.path(), &config("none"), sweep);
    let report = sweep_json(d.path(), &cfg, &["--jobs", "1"]);
    let run = &report["runs"][0];
    let (uuid, version) = (
        run["run_uuid"].as_str().unwrap(),
        run["version"].as_str().unwrap(),
    );
    let own = artifact(d.path(), uuid, &format!("feature_importance_{version}.csv"));
    let permutation = own.with_file_name(format!("permutation_importance_{version}.csv"));
    assert!(!permutation.exists());
    let metrics = run["metrics"].as_object().unwrap();
    assert!(
        !metrics
            .keys()
            .any(|k| k.starts_with("importance_permutation/")),
        "{metrics:?}"
    );
    let cfg = write_config(d.path(), &config("shap"), sweep);
    let message = refused(runner(d.path()).arg("sweep").arg(&cfg));
    assert!(message.contains("importance"), "{message}");
}

/// A table of more than 20,000 training rows writes the predictions of a seeded sample of
/// 20,000 of them, in row order, each with its own target.
#[test]
fn a_large_table_writes_a_sample_of_its_predictions() {
    let d = tempfile::tempdir().unwrap();
    let csv = two_signals_csv(25_000);
    std::fs::write(d.path().join("two_signals.csv"), &csv).unwrap();
    let cfg = write_config(
        d.path(),
        "experiment = \"signals\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"two_signals.csv\"\ntarget = \"label\"\n[cv]\nfolds = 2\nimportance = \"none\"\n",
        "[[models]]\nkind = \"naive_bayes\"\n",
    );
    let report = sweep_json(d.path(), &cfg, &["--jobs", "1"]);
    let run = &report["runs"][0];
    let name = format!("predictions_{}.csv", run["version"].as_str().unwrap());
    let text =
        std::fs::read_to_string(artifact(d.path(), run["run_uuid"].as_str().unwrap(), &name))
            .unwrap();
    let labels: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap())
        .collect();
    let rows: Vec<usize> = text
        .lines()
        .skip(1)
        .map(|l| {
            let mut cells = l.split(',');
            let row: usize = cells.next().unwrap().parse().unwrap();
            assert_eq!(cells.next().unwrap(), labels[row], "row {row}'s target");
            row
        })
        .collect();
    assert_eq!(rows.len(), 20_000);
    assert!(
        rows.windows(2).all(|w| w[0] < w[1]),
        "distinct, in row order"
    );
    assert!(
        *rows.last().unwrap() > 24_000 && rows[0] < 1_000,
        "spread over the table"
    );
}

/// A regression of more than 5,000 rows draws a seeded sample of 5,000 points in its scatter
/// plots, and says so in their titles.
#[test]
fn scatter_plots_of_a_large_regression_draw_a_sample() {
    let d = tempfile::tempdir().unwrap();
    let mut csv = String::from("x,y\n");
    for i in 0..6_000 {
        csv.push_str(&format!(
            "{},{}\n",
            i % 97,
            (i % 97) as f64 * 2.0 + (i % 7) as f64
        ));
    }
    std::fs::write(d.path().join("line.csv"), &csv).unwrap();
    let cfg = write_config(
        d.path(),
        "experiment = \"line\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"line.csv\"\ntarget = \"y\"\n[cv]\nfolds = 2\n",
        "[[models]]\nkind = \"linear\"\n",
    );
    let report = sweep_json(d.path(), &cfg, &["--jobs", "1"]);
    let run = &report["runs"][0];
    let version = run["version"].as_str().unwrap();
    for stem in ["predicted_vs_actual", "residuals"] {
        let name = format!("{stem}_{version}.svg");
        let svg =
            std::fs::read_to_string(artifact(d.path(), run["run_uuid"].as_str().unwrap(), &name))
                .unwrap();
        assert_eq!(svg.matches("<circle").count(), 5_000, "{name}");
        assert!(svg.contains("a sample of 5000 of 6000 points"), "{name}");
    }
}

/// `imbalanced.csv`: 630 rows of two features, one row in 21 of the class "rare", which sits
/// 1.2 standard deviations up in both (Box-Muller normals of a fixed generator).
fn write_imbalanced(dir: &std::path::Path) {
    let mut state: u64 = 7;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    // Two features; the rare class sits 1.2 standard deviations up in both (Box-Muller normals).
    let mut csv = String::from("a,b,label\n");
    for i in 0..630 {
        let rare = i % 21 == 0;
        let shift = if rare { 1.2 } else { 0.0 };
        let mut normal = || {
            let (u, v) = (uniform().max(1e-12), uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        };
        let (a, b) = (normal() + shift, normal() + shift);
        csv.push_str(&format!(
            "{a:.4},{b:.4},{}\n",
            if rare { "rare" } else { "common" }
        ));
    }
    std::fs::write(dir.join("imbalanced.csv"), csv).unwrap();
}

/// On a 1:20 imbalanced binary set, `class_weight = "balanced"`, SMOTE inside the training folds
/// and `class_weights = { "rare" = 20.0 }` each raise balanced accuracy over none of them, for
/// every classifier kind.
#[test]
fn balanced_class_weights_and_smote_raise_balanced_accuracy_for_every_classifier_kind() {
    let d = tempfile::tempdir().unwrap();
    write_imbalanced(d.path());
    let variants = [
        ("none", ""),
        ("balanced", "class_weight = \"balanced\"\n"),
        ("smote", "resample = \"smote\"\n"),
        ("weights", "class_weights = { \"rare\" = 20.0 }\n"),
    ];
    let mut kinds = vec![
        "kind = \"decision_tree\"\nmax_depth = 3".to_string(),
        "kind = \"random_forest\"\nn_trees = 30\nmax_depth = 4".into(),
        "kind = \"logistic_regression\"".into(),
        "kind = \"svm\"\nkernel = \"linear\"".into(),
        "kind = \"knn\"\nk = 15".into(),
        "kind = \"naive_bayes\"".into(),
    ];
    if cfg!(feature = "xgboost") {
        kinds.push("kind = \"xgboost\"\nn_rounds = 30\nmax_depth = 2".into());
    }
    if cfg!(feature = "lightgbm") {
        kinds.push("kind = \"lightgbm\"\nn_rounds = 30\nnum_leaves = 4".into());
    }
    if cfg!(feature = "torch") {
        kinds.push("kind = \"mlp\"\nepochs = 30\nhidden = \"8\"\nlearning_rate = 0.01".into());
    }
    let sweep: String = kinds
        .iter()
        .enumerate()
        .flat_map(|(i, k)| {
            variants.map(|(n, v)| format!("[[models]]\nname = \"m{i}-{n}\"\n{k}\n{v}"))
        })
        .collect();
    let cfg = write_config(
        d.path(),
        "experiment = \"imbalanced\"\nsweeps = [\"sweep.toml\"]\nprimary_metric = \"balanced_accuracy\"\n[data]\nsource = \"imbalanced.csv\"\ntarget = \"label\"\n[etl]\nscale = \"standard\"\n[cv]\nfolds = 3\n",
        &sweep,
    );
    let report = sweep_json(d.path(), &cfg, &[]);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4 * kinds.len());
    let ba = |r: &serde_json::Value| r["metrics"]["balanced_accuracy"]["mean"].as_f64().unwrap();
    let mut figures = Vec::new();
    for four in runs.chunks(4) {
        assert!(four.iter().all(|r| r["kind"] == four[0]["kind"]));
        let [none, balanced, smote, weights] = [0, 1, 2, 3].map(|i| ba(&four[i]));
        figures.push((four[0]["kind"].clone(), none, balanced, smote, weights));
    }
    eprintln!("balanced accuracy (kind, none, balanced, smote, rare=20): {figures:?}");
    let worse: Vec<_> = figures
        .iter()
        .filter(|(_, n, b, s, w)| [b, s, w].iter().any(|v| **v <= n + 0.02))
        .collect();
    assert!(
        worse.is_empty(),
        "balanced does not help: {worse:?} (all: {figures:?})"
    );
}

/// Resampling balances classes: asked of a regression it is refused before anything trains,
/// by its key (exit 2).
#[test]
fn resampling_a_regression_is_refused_by_key() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        "experiment = \"r\"\ntask = \"regression\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n",
        "[[models]]\nkind = \"random_forest\"\nresample = \"over\"\n",
    );
    let err = refused(runner(d.path()).args(["sweep"]).arg(&cfg));
    assert!(
        err.contains("models[0].resample") && err.contains("classification only"),
        "{err}"
    );
    assert!(!d.path().join("mlflow.db").exists(), "nothing written");
}

/// `class_weights` must name classes of the data, and applies to classification only; both
/// mistakes are refused before anything is written (exit 2).
#[test]
fn class_weights_name_real_classes_of_a_classification() {
    let d = tempfile::tempdir().unwrap();
    let config = "experiment = \"w\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"builtin:winequality-red\"\ntarget = \"quality\"\n";
    let cfg = write_config(
        d.path(),
        config,
        "[[models]]\nkind = \"decision_tree\"\nclass_weights = { \"3\" = 5.0, \"9\" = 2.0 }\n",
    );
    let err = refused(runner(d.path()).args(["validate"]).arg(&cfg));
    assert!(
        err.contains("\"9\"") && err.contains("3, 4, 5, 6, 7, 8"),
        "{err}"
    );
    let cfg = write_config(
        d.path(),
        &config.replace("[data]", "task = \"regression\"\n[data]"),
        "[[models]]\nkind = \"random_forest\"\nclass_weights = { \"3\" = 5.0 }\n",
    );
    assert!(refused(runner(d.path()).args(["sweep"]).arg(&cfg)).contains("classification only"));
    assert!(!d.path().join("mlflow.db").exists());
}

/// An ensemble's members resample their own training rows as they ask (SMOTE here), inside
/// each training fold: on the 1:20 set the soft vote of SMOTE members beats the plain one.
#[test]
fn ensemble_members_resample_their_training_rows() {
    let d = tempfile::tempdir().unwrap();
    write_imbalanced(d.path());
    let sweep = concat!(
        "[[models]]\nname = \"lr\"\nkind = \"logistic_regression\"\n",
        "[[models]]\nname = \"tree\"\nkind = \"decision_tree\"\nmax_depth = 3\n",
        "[[models]]\nname = \"lr-smote\"\nkind = \"logistic_regression\"\nresample = \"smote\"\n",
        "[[models]]\nname = \"tree-smote\"\nkind = \"decision_tree\"\nmax_depth = 3\nresample = \"smote\"\n",
        "[[models]]\nname = \"plain\"\nkind = \"voting\"\nmembers = [\"lr\", \"tree\"]\n",
        "[[models]]\nname = \"smote\"\nkind = \"voting\"\nmembers = [\"lr-smote\", \"tree-smote\"]\n",
    );
    let cfg = write_config(
        d.path(),
        "experiment = \"imbalanced\"\nsweeps = [\"sweep.toml\"]\nprimary_metric = \"balanced_accuracy\"\n[data]\nsource = \"imbalanced.csv\"\ntarget = \"label\"\n[etl]\nscale = \"standard\"\n[cv]\nfolds = 3\n",
        sweep,
    );
    let report = sweep_json(d.path(), &cfg, &["--only", "plain", "--only", "smote"]);
    let runs = report["runs"].as_array().unwrap();
    let ba = |i: usize| {
        runs[i]["metrics"]["balanced_accuracy"]["mean"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(
        (runs[0]["name"].as_str(), runs[1]["name"].as_str()),
        (Some("plain"), Some("smote"))
    );
    eprintln!(
        "balanced accuracy: plain vote {}, vote of SMOTE members {}",
        ba(0),
        ba(1)
    );
    assert!(
        ba(1) > ba(0) + 0.05,
        "plain {} vs SMOTE members {}",
        ba(0),
        ba(1)
    );
}

/// Resampling draws only from a fold's training rows: with pure-noise features and random
/// labels, a one-neighbour KNN would recognise any validation row copied (or interpolated by
/// SMOTE) into its training rows and score it right; it scores at chance instead.
#[test]
fn resampling_never_reaches_a_validation_row() {
    let d = tempfile::tempdir().unwrap();
    let mut state: u64 = 99;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut csv = String::from("a,b,c,label\n");
    for _ in 0..600 {
        let (a, b, c) = (uniform(), uniform(), uniform());
        let label = if uniform() < 0.2 { "rare" } else { "common" };
        csv.push_str(&format!("{a:.6},{b:.6},{c:.6},{label}\n"));
    }
    std::fs::write(d.path().join("noise.csv"), csv).unwrap();
    let sweep: String = ["over", "smote"]
        .iter()
        .map(|r| format!("[[models]]\nname = \"{r}\"\nkind = \"knn\"\nk = 1\nresample = \"{r}\"\nsmote_k = 1\n"))
        .collect();
    let cfg = write_config(
        d.path(),
        "experiment = \"noise\"\nsweeps = [\"sweep.toml\"]\n[data]\nsource = \"noise.csv\"\ntarget = \"label\"\n[cv]\nfolds = 3\n",
        &sweep,
    );
    let report = sweep_json(d.path(), &cfg, &[]);
    for run in report["runs"].as_array().unwrap() {
        let folds = run["fold_metrics"]["balanced_accuracy"].as_array().unwrap();
        eprintln!("{}: fold balanced accuracy {folds:?}", run["name"]);
        for ba in folds.iter().map(|v| v.as_f64().unwrap()) {
            assert!(
                ba < 0.6,
                "{}: a fold scored {ba}, as if it had seen its rows",
                run["name"]
            );
        }
    }
}
