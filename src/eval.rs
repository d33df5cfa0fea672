//! Cross-validation splits and the task metrics, written here rather than taken from linfa:
//! its `Dataset::fold` copies the rows of every fold and neither stratifies nor shuffles with a
//! seed, while a sweep needs stratified, seeded, repeatable folds as row indexes (recorded with
//! each run by their sha256); and the metrics here take the class indexes and probability
//! matrices every backend returns, classes missing from a fold kept in place.

use crate::rng::SplitMix64;
use crate::types::Task;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One CV fold: training and validation row indexes (into the CV rows), both sorted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fold {
    pub repeat: usize,
    pub index: usize,
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// Groups rows for stratification: classes, or (for regression) quantile bins of the target.
fn strata(task: Task, y: &[f64], stratified: bool) -> Vec<usize> {
    if !stratified {
        return vec![0; y.len()];
    }
    match task {
        Task::Classification => y.iter().map(|v| *v as usize).collect(),
        Task::Regression => vec![0; y.len()],
    }
}

/// Splits `rows` into `k` folds, `repeats` times. Each stratum is shuffled with the seed and
/// dealt round-robin, continuing where the previous stratum stopped, so fold sizes differ by at
/// most one and every class is spread evenly.
pub fn k_fold(
    task: Task,
    y: &[f64],
    rows: &[usize],
    k: usize,
    repeats: usize,
    stratified: bool,
    seed: u64,
) -> Vec<Fold> {
    let groups = strata(
        task,
        &rows.iter().map(|r| y[*r]).collect::<Vec<_>>(),
        stratified,
    );
    let mut by_stratum: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        by_stratum.entry(*g).or_default().push(rows[i]);
    }
    let mut folds = Vec::new();
    for rep in 0..repeats {
        let mut rng = SplitMix64::derive(seed, 0xF01D + rep as u64);
        let mut assignment: Vec<Vec<usize>> = vec![Vec::new(); k];
        let mut next = 0;
        for members in by_stratum.values() {
            let mut m = members.clone();
            rng.shuffle(&mut m);
            for r in m {
                assignment[next].push(r);
                next = (next + 1) % k;
            }
        }
        for (i, test) in assignment.iter().enumerate() {
            let mut test = test.clone();
            test.sort_unstable();
            let mut train: Vec<usize> = rows
                .iter()
                .copied()
                .filter(|r| test.binary_search(r).is_err())
                .collect();
            train.sort_unstable();
            folds.push(Fold {
                repeat: rep,
                index: i,
                train,
                test,
            });
        }
    }
    folds
}

/// A stratified hold-out split: (rows kept for CV, held-out rows), both sorted.
pub fn holdout_split(task: Task, y: &[f64], share: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let n = y.len();
    if share <= 0.0 {
        return ((0..n).collect(), Vec::new());
    }
    let groups = strata(task, y, true);
    let mut by_stratum: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        by_stratum.entry(*g).or_default().push(i);
    }
    let mut rng = SplitMix64::derive(seed, 0x4011);
    let mut held = Vec::new();
    for members in by_stratum.values() {
        let mut m = members.clone();
        rng.shuffle(&mut m);
        let take = (m.len() as f64 * share).round() as usize;
        held.extend_from_slice(&m[..take.min(m.len())]);
    }
    held.sort_unstable();
    let keep = (0..n).filter(|i| held.binary_search(i).is_err()).collect();
    (keep, held)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassStats {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// Every metric of one evaluation, by name, plus per-class details for classification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Scores {
    pub metrics: BTreeMap<String, f64>,
    pub per_class: Vec<ClassStats>,
    /// confusion[true][predicted]
    pub confusion: Vec<Vec<usize>>,
}

pub fn classification_scores(
    y: &[f64],
    pred: &[f64],
    proba: Option<&ndarray::Array2<f64>>,
    labels: &[String],
) -> Scores {
    let k = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (t, p) in y.iter().zip(pred) {
        confusion[*t as usize][*p as usize] += 1;
    }
    let n = y.len() as f64;
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let mut per_class = Vec::new();
    let (mut recall_sum, mut recall_n, mut f1_sum, mut f1_n, mut f1_weighted) =
        (0.0, 0, 0.0, 0, 0.0);
    for c in 0..k {
        let tp = confusion[c][c] as f64;
        let support: usize = confusion[c].iter().sum();
        let predicted: usize = (0..k).map(|r| confusion[r][c]).sum();
        let precision = if predicted > 0 {
            tp / predicted as f64
        } else {
            0.0
        };
        let recall = if support > 0 {
            tp / support as f64
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        if support > 0 {
            recall_sum += recall;
            recall_n += 1;
        }
        // Macro averages run over the classes that occur in truth or prediction (as scikit-learn).
        if support > 0 || predicted > 0 {
            f1_sum += f1;
            f1_n += 1;
        }
        f1_weighted += f1 * support as f64;
        per_class.push(ClassStats {
            label: labels[c].clone(),
            precision,
            recall,
            f1,
            support,
        });
    }
    let mut metrics = BTreeMap::new();
    metrics.insert("accuracy".into(), correct as f64 / n);
    metrics.insert(
        "balanced_accuracy".into(),
        recall_sum / recall_n.max(1) as f64,
    );
    metrics.insert("f1_macro".into(), f1_sum / f1_n.max(1) as f64);
    metrics.insert("f1_weighted".into(), f1_weighted / n);
    if let [_, second] = per_class.as_slice() {
        metrics.insert("f1".into(), second.f1);
        metrics.insert("precision".into(), second.precision);
        metrics.insert("recall".into(), second.recall);
    }
    if let Some(p) = proba {
        let eps = 1e-15;
        let ll: f64 = y
            .iter()
            .enumerate()
            .map(|(i, t)| -p[[i, *t as usize]].clamp(eps, 1.0 - eps).ln())
            .sum::<f64>()
            / n;
        metrics.insert("log_loss".into(), ll);
        metrics.insert("brier".into(), brier(y, p));
        auc_metrics(y, p, &mut metrics);
    }
    Scores {
        metrics,
        per_class,
        confusion,
    }
}

/// Area under the ROC curve of `scores` for the rows where `positive` holds: the probability
/// that a positive outranks a negative, ties counting one half (the trapezoidal area, as
/// scikit-learn's `roc_auc_score`). None without both positives and negatives.
pub fn roc_auc(positive: &[bool], scores: &[f64]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    // Average ranks (1-based) over runs of tied scores.
    let mut rank = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average = (i + j) as f64 / 2.0 + 1.0;
        for k in &order[i..=j] {
            rank[*k] = average;
        }
        i = j + 1;
    }
    let n_pos = positive.iter().filter(|p| **p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    let rank_sum: f64 = positive
        .iter()
        .zip(&rank)
        .filter(|(p, _)| **p)
        .map(|(_, r)| r)
        .sum();
    Some((rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

/// Average precision (the area under the precision-recall curve as scikit-learn's
/// `average_precision_score` computes it): the precision at each distinct score threshold,
/// weighted by the recall it adds. None without positives.
/// Ties at a threshold: equal scores, NaN with NaN (which `==` never groups, so a scan over NaN
/// scores would not advance).
fn same_score(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

pub fn average_precision(positive: &[bool], scores: &[f64]) -> Option<f64> {
    let n_pos = positive.iter().filter(|p| **p).count() as f64;
    if n_pos == 0.0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let (mut tp, mut seen, mut ap, mut last_recall) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        // Every row tied at this threshold counts at once.
        let threshold = scores[order[i]];
        while i < order.len() && same_score(scores[order[i]], threshold) {
            seen += 1.0;
            if positive[order[i]] {
                tp += 1.0;
            }
            i += 1;
        }
        let recall = tp / n_pos;
        ap += (recall - last_recall) * (tp / seen);
        last_recall = recall;
    }
    Some(ap)
}

/// Calls `visit(true positives, false positives, threshold)` for predicting positive at or
/// above each distinct score, from the highest. Streams: a million distinct scores never make a
/// million-point vector (a run's curves took 67 MB that way).
fn scan_thresholds(positive: &[bool], scores: &[f64], mut visit: impl FnMut(f64, f64, f64)) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let (mut tp, mut fp, mut i) = (0.0, 0.0, 0);
    while i < order.len() {
        let threshold = scores[order[i]];
        while i < order.len() && same_score(scores[order[i]], threshold) {
            if positive[order[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        visit(tp, fp, threshold);
    }
}

/// The ROC and precision-recall curves of `scores` for the rows where `positive` holds, a point
/// at each distinct score from the highest, handed to `roc` as (false positive rate, true
/// positive rate, threshold), after a first (0, 0, infinity), and to `pr` as (recall,
/// precision, threshold).
pub fn roc_and_pr(
    positive: &[bool],
    scores: &[f64],
    mut roc: impl FnMut((f64, f64, f64)),
    mut pr: impl FnMut((f64, f64, f64)),
) {
    let n_pos = positive.iter().filter(|p| **p).count().max(1) as f64;
    let n_neg = (positive.len() as f64 - n_pos).max(1.0);
    roc((0.0, 0.0, f64::INFINITY));
    scan_thresholds(positive, scores, |tp, fp, t| {
        roc((fp / n_neg, tp / n_pos, t));
        pr((tp / n_pos, tp / (tp + fp), t));
    });
}

/// One bin of a reliability curve: the bin's score range, the mean predicted probability and
/// the observed share of positives of the rows in it, and how many rows it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ReliabilityBin {
    pub low: f64,
    pub high: f64,
    pub mean_predicted: f64,
    pub fraction_positive: f64,
    pub count: usize,
}

/// The reliability (calibration) curve of `scores` as probabilities of the positive class, in
/// `bins` equal-width bins of [0, 1] (a score of 1 falls in the last); empty bins are left out.
pub fn reliability_bins(positive: &[bool], scores: &[f64], bins: usize) -> Vec<ReliabilityBin> {
    let bins = bins.max(1);
    let mut sums = vec![(0.0, 0usize, 0usize); bins];
    for (p, s) in positive.iter().zip(scores) {
        let b = ((s.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sums[b].0 += s;
        sums[b].1 += usize::from(*p);
        sums[b].2 += 1;
    }
    (sums.iter().enumerate())
        .filter(|(_, (_, _, n))| *n > 0)
        .map(|(b, (sum, pos, n))| ReliabilityBin {
            low: b as f64 / bins as f64,
            high: (b + 1) as f64 / bins as f64,
            mean_predicted: sum / *n as f64,
            fraction_positive: *pos as f64 / *n as f64,
            count: *n,
        })
        .collect()
}

/// The Brier score, as scikit-learn's `brier_score_loss`: the mean squared error of the second
/// class's probability for two classes; the mean over rows of the squared distance between the
/// probabilities and the one-hot truth for more.
pub fn brier(y: &[f64], proba: &ndarray::Array2<f64>) -> f64 {
    let n = y.len().max(1) as f64;
    if proba.ncols() == 2 {
        let sq: f64 = y
            .iter()
            .enumerate()
            .map(|(i, t)| (proba[[i, 1]] - t).powi(2))
            .sum();
        return sq / n;
    }
    let sq: f64 = y
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let truth = *t as usize;
            proba
                .row(i)
                .iter()
                .enumerate()
                .map(|(c, p)| (p - f64::from(u8::from(c == truth))).powi(2))
                .sum::<f64>()
        })
        .sum();
    sq / n
}

/// ROC-AUC and PR-AUC from class probabilities: of class 1 for two classes; one-vs-rest for
/// more (`roc_auc` and `pr_auc` the macro averages over the classes present, `roc_auc_weighted`
/// weighted by their support).
fn auc_metrics(y: &[f64], proba: &ndarray::Array2<f64>, metrics: &mut BTreeMap<String, f64>) {
    let k = proba.ncols();
    let one_vs_rest = |c: usize| -> (Vec<bool>, Vec<f64>) {
        let positive = y.iter().map(|t| *t as usize == c).collect();
        (positive, proba.column(c).to_vec())
    };
    if k == 2 {
        let (positive, scores) = one_vs_rest(1);
        let aucs = [
            ("roc_auc", roc_auc(&positive, &scores)),
            ("pr_auc", average_precision(&positive, &scores)),
        ];
        for (name, value) in aucs {
            if let Some(v) = value {
                metrics.insert(name.into(), v);
            }
        }
        return;
    }
    let (mut roc, mut pr, mut weighted, mut support) = (Vec::new(), Vec::new(), 0.0, 0.0);
    for c in 0..k {
        let (positive, scores) = one_vs_rest(c);
        let n_c = positive.iter().filter(|p| **p).count() as f64;
        if let Some(a) = roc_auc(&positive, &scores) {
            roc.push(a);
            weighted += a * n_c;
            support += n_c;
        }
        if let Some(a) = average_precision(&positive, &scores) {
            pr.push(a);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    if !roc.is_empty() {
        metrics.insert("roc_auc".into(), mean(&roc));
        metrics.insert("roc_auc_weighted".into(), weighted / support);
    }
    if !pr.is_empty() {
        metrics.insert("pr_auc".into(), mean(&pr));
    }
}

pub const TOLERANCES: &[(f64, &str)] = &[
    (0.25, "acc_within_0.25"),
    (0.5, "acc_within_0.5"),
    (1.0, "acc_within_1"),
];

/// How a regression target is cut into bins for the per-bin MAE (`mae_bin_*`), recorded with
/// each run so replay scores the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetBins {
    /// One bin per rounded target value (`mae_bin_7`): whole-number targets with at most 20
    /// distinct values, and every run recorded before bins were (which meant this).
    ByValue,
    /// Bins between these inner edges, the first and last open-ended (`mae_bin_q1`, ...).
    Edges(Vec<f64>),
}

/// The bins of a target: by value when it holds whole numbers with at most 20 distinct values
/// (the rule `task = "auto"` uses for classes); else between the user's `edges`, or at the
/// `count`-quantiles of the target.
pub fn target_bins(y: &[f64], count: usize, edges: Option<&[f64]>) -> TargetBins {
    let mut sorted = y.to_vec();
    sorted.sort_by(f64::total_cmp);
    let distinct = 1 + sorted.windows(2).filter(|w| w[0] != w[1]).count();
    if distinct <= 20 && sorted.iter().all(|v| v.fract() == 0.0) {
        return TargetBins::ByValue;
    }
    if let Some(edges) = edges {
        return TargetBins::Edges(edges.to_vec());
    }
    let mut inner: Vec<f64> = (1..count.max(1))
        .map(|i| {
            let pos = i as f64 / count as f64 * (sorted.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        })
        .collect();
    inner.dedup();
    TargetBins::Edges(inner)
}

/// MAE per target bin, named by `bins`.
fn binned_mae(y: &[f64], pred: &[f64], bins: &TargetBins, metrics: &mut BTreeMap<String, f64>) {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for (a, b) in y.iter().zip(pred) {
        let name = match bins {
            TargetBins::ByValue => format!("mae_bin_{}", a.round() as i64),
            TargetBins::Edges(edges) => {
                let bin = edges.iter().take_while(|e| *a >= **e).count();
                format!("mae_bin_q{}", bin + 1)
            }
        };
        let e = sums.entry(name).or_default();
        e.0 += (a - b).abs();
        e.1 += 1;
    }
    for (name, (sum, count)) in sums {
        metrics.insert(name, sum / count as f64);
    }
}

pub fn regression_scores(y: &[f64], pred: &[f64], bins: &TargetBins) -> Scores {
    let n = y.len() as f64;
    let mae = y.iter().zip(pred).map(|(a, b)| (a - b).abs()).sum::<f64>() / n;
    let mse = y
        .iter()
        .zip(pred)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        / n;
    let mean = y.iter().sum::<f64>() / n;
    let ss_tot: f64 = y.iter().map(|a| (a - mean).powi(2)).sum();
    let mut metrics = BTreeMap::new();
    metrics.insert("mae".into(), mae);
    metrics.insert("rmse".into(), mse.sqrt());
    metrics.insert(
        "r2".into(),
        if ss_tot > 0.0 {
            1.0 - mse * n / ss_tot
        } else {
            0.0
        },
    );
    for (t, name) in TOLERANCES {
        let hits = y
            .iter()
            .zip(pred)
            .filter(|(a, b)| (*a - *b).abs() <= *t)
            .count();
        metrics.insert((*name).into(), hits as f64 / n);
    }
    binned_mae(y, pred, bins, &mut metrics);
    Scores {
        metrics,
        per_class: Vec::new(),
        confusion: Vec::new(),
    }
}

/// Mean and sample standard deviation (n - 1).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if n == 0.0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    let std = if n > 1.0 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, std)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nan_scores_end_the_scan_instead_of_hanging_it() {
        let ap = average_precision(&[true, false, true], &[f64::NAN, 0.2, f64::NAN]);
        assert!(ap.is_some());
        let mut thresholds = 0;
        scan_thresholds(&[true, false], &[f64::NAN, f64::NAN], |_, _, _| {
            thresholds += 1
        });
        assert_eq!(thresholds, 1);
    }

    #[test]
    fn roc_and_pr_curves_step_at_each_distinct_score_with_ties_at_once() {
        let (mut roc, mut pr) = (Vec::new(), Vec::new());
        let positive = [true, false, true, false];
        let scores = [0.9, 0.8, 0.8, 0.1];
        roc_and_pr(&positive, &scores, |p| roc.push(p), |p| pr.push(p));
        let inf = f64::INFINITY;
        let expected_roc = [
            (0.0, 0.0, inf),
            (0.0, 0.5, 0.9),
            (0.5, 1.0, 0.8),
            (1.0, 1.0, 0.1),
        ];
        assert_eq!(roc, expected_roc);
        assert_eq!(
            pr,
            [(0.5, 1.0, 0.9), (1.0, 2.0 / 3.0, 0.8), (1.0, 0.5, 0.1)]
        );
    }

    #[test]
    fn reliability_bins_average_scores_and_outcomes_per_bin() {
        let positive = [false, true, true, false, true];
        let scores = [0.05, 0.15, 0.95, 0.91, 1.0];
        let bins = reliability_bins(&positive, &scores, 10);
        assert_eq!(bins.len(), 3, "{bins:?}");
        assert_eq!((bins[0].count, bins[1].count, bins[2].count), (1, 1, 3));
        assert_eq!(bins[1].fraction_positive, 1.0);
        assert!((bins[2].mean_predicted - (0.95 + 0.91 + 1.0) / 3.0).abs() < 1e-15);
        assert!((bins[2].fraction_positive - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!((bins[2].low, bins[2].high), (0.9, 1.0));
    }

    use super::*;

    /// scikit-learn 1.9.1's figures on fixed predictions (tests/data/auc_reference.py).
    #[test]
    fn roc_and_pr_auc_and_brier_match_scikit_learn() {
        let reference: serde_json::Value =
            serde_json::from_str(include_str!("../tests/data/auc_reference.json")).unwrap();
        let close = |a: f64, b: &serde_json::Value| (a - b.as_f64().unwrap()).abs() < 1e-12;
        let b = &reference["binary"];
        let y: Vec<f64> = serde_json::from_value(b["y"].clone()).unwrap();
        let p1: Vec<f64> = serde_json::from_value(b["p1"].clone()).unwrap();
        let proba =
            ndarray::Array2::from_shape_fn(
                (y.len(), 2),
                |(i, c)| {
                    if c == 1 {
                        p1[i]
                    } else {
                        1.0 - p1[i]
                    }
                },
            );
        let pred: Vec<f64> = p1.iter().map(|p| f64::from(*p >= 0.5)).collect();
        let labels = ["0".to_string(), "1".to_string()];
        let s = classification_scores(&y, &pred, Some(&proba), &labels);
        assert!(
            close(s.metrics["roc_auc"], &b["roc_auc"]),
            "{}",
            s.metrics["roc_auc"]
        );
        assert!(
            close(s.metrics["pr_auc"], &b["pr_auc"]),
            "{}",
            s.metrics["pr_auc"]
        );
        assert!(
            close(s.metrics["brier"], &b["brier"]),
            "{}",
            s.metrics["brier"]
        );
        let m = &reference["multiclass"];
        let y: Vec<f64> = serde_json::from_value(m["y"].clone()).unwrap();
        let rows: Vec<Vec<f64>> = serde_json::from_value(m["proba"].clone()).unwrap();
        let proba = ndarray::Array2::from_shape_fn((y.len(), 3), |(i, c)| rows[i][c]);
        let pred: Vec<f64> = rows
            .iter()
            .map(|r| crate::models::argmax(r.iter().copied()) as f64)
            .collect();
        let labels: Vec<String> = (0..3).map(|c| c.to_string()).collect();
        let s = classification_scores(&y, &pred, Some(&proba), &labels);
        for key in ["roc_auc", "roc_auc_weighted", "pr_auc", "brier"] {
            assert!(close(s.metrics[key], &m[key]), "{key}: {}", s.metrics[key]);
        }
    }

    #[test]
    fn stratified_folds_partition_rows_and_spread_classes() {
        let y: Vec<f64> = (0..100).map(|i| if i < 10 { 1.0 } else { 0.0 }).collect();
        let rows: Vec<usize> = (0..100).collect();
        let folds = k_fold(Task::Classification, &y, &rows, 5, 2, true, 42);
        assert_eq!(folds.len(), 10);
        for rep in 0..2 {
            let mut all: Vec<usize> = folds
                .iter()
                .filter(|f| f.repeat == rep)
                .flat_map(|f| f.test.clone())
                .collect();
            all.sort();
            assert_eq!(all, rows);
        }
        for f in &folds {
            assert_eq!(f.test.len(), 20);
            assert_eq!(f.test.iter().filter(|r| y[**r] == 1.0).count(), 2);
            assert_eq!(f.train.len() + f.test.len(), 100);
        }
        assert_ne!(folds[0].test, folds[5].test, "repeats reshuffle");
    }

    #[test]
    fn classification_metrics_match_hand_computation() {
        // truth: a a b b c ; predicted: a b b b a
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let s = classification_scores(
            &[0.0, 0.0, 1.0, 1.0, 2.0],
            &[0.0, 1.0, 1.0, 1.0, 0.0],
            None,
            &labels,
        );
        assert!((s.metrics["accuracy"] - 0.6).abs() < 1e-12);
        // recalls: a 0.5, b 1, c 0 -> balanced 0.5
        assert!((s.metrics["balanced_accuracy"] - 0.5).abs() < 1e-12);
        // precisions: a 0.5, b 2/3, c 0; f1: a 0.5, b 0.8, c 0
        assert!((s.metrics["f1_macro"] - 1.3 / 3.0).abs() < 1e-12);
        assert_eq!(s.confusion[2][0], 1);
    }

    #[test]
    fn regression_metrics_and_tolerance_accuracy() {
        let y = [5.0, 6.0, 7.0, 5.0];
        let s = regression_scores(&y, &[5.2, 6.6, 5.5, 5.0], &target_bins(&y, 5, None));
        assert!((s.metrics["mae"] - (0.2 + 0.6 + 1.5 + 0.0) / 4.0).abs() < 1e-12);
        assert_eq!(s.metrics["acc_within_0.25"], 0.5);
        assert_eq!(s.metrics["acc_within_1"], 0.75);
        assert!((s.metrics["mae_bin_7"] - 1.5).abs() < 1e-12);
    }

    #[test]
    fn a_continuous_target_gets_quantile_bins_not_one_per_value() {
        // 400 distinct values: five quantile bins of 80 rows each, named q1..q5.
        let y: Vec<f64> = (0..400).map(|i| i as f64 * 0.37 + 0.5).collect();
        let bins = target_bins(&y, 5, None);
        let TargetBins::Edges(edges) = &bins else {
            panic!("{bins:?}")
        };
        assert_eq!(edges.len(), 4);
        let pred: Vec<f64> = y.iter().map(|v| v + 1.0).collect();
        let s = regression_scores(&y, &pred, &bins);
        let binned: Vec<&String> = s
            .metrics
            .keys()
            .filter(|k| k.starts_with("mae_bin"))
            .collect();
        assert_eq!(
            binned,
            [
                "mae_bin_q1",
                "mae_bin_q2",
                "mae_bin_q3",
                "mae_bin_q4",
                "mae_bin_q5"
            ]
        );
        assert!((s.metrics["mae_bin_q3"] - 1.0).abs() < 1e-12);
        // The user's edges: below 10, 10..100, from 100.
        let s = regression_scores(&y, &pred, &target_bins(&y, 5, Some(&[10.0, 100.0])));
        let binned = s
            .metrics
            .keys()
            .filter(|k| k.starts_with("mae_bin"))
            .count();
        assert_eq!(binned, 3);
        // Whole numbers with few values keep one bin per value.
        assert_eq!(
            target_bins(&[3.0, 5.0, 5.0, 8.0], 5, None),
            TargetBins::ByValue
        );
    }

    #[test]
    fn holdout_is_stratified_and_disjoint() {
        let y: Vec<f64> = (0..50).map(|i| (i % 5) as f64).collect();
        let (keep, held) = holdout_split(Task::Classification, &y, 0.2, 1);
        assert_eq!(held.len(), 10);
        assert_eq!(keep.len(), 40);
        for c in 0..5 {
            assert_eq!(held.iter().filter(|r| y[**r] == c as f64).count(), 2);
        }
    }
}
