//! The pictures of a run (confusion matrix, per-class F1, predicted against actual, residuals,
//! learning curves) and of a sweep (the comparison chart), as SVG.

use std::collections::BTreeMap;

use super::train::per_class_from_confusion;
use super::*;

/// The most points a scatter plot draws: a 50,000-row table drew a 3.6 MB picture.
const SCATTER_MAX_POINTS: usize = 5_000;

/// The points a scatter plot draws: all, or a seeded sample of [`SCATTER_MAX_POINTS`] with
/// the title's note of how many of how many.
fn scatter_sample(points: &[(f64, f64)]) -> (Vec<(f64, f64)>, String) {
    if points.len() <= SCATTER_MAX_POINTS {
        return (points.to_vec(), String::new());
    }
    let picked =
        crate::rng::SplitMix64::new(0x5CA7).sorted_sample(points.len(), SCATTER_MAX_POINTS);
    let note = format!(
        ", a sample of {SCATTER_MAX_POINTS} of {} points",
        points.len()
    );
    (picked.iter().map(|i| points[*i]).collect(), note)
}

/// The pictures of a run: confusion matrix and per-class F1 (classification), predicted against
/// actual and residuals from out-of-fold predictions (regression), learning curves (iterative
/// models).
pub(crate) fn run_plots(
    prep: &Prepared,
    confusion: &[Vec<usize>],
    folds: &[Vec<(i64, String, f64)>],
    refit: &[(i64, String, f64)],
    oof: &[(f64, f64)],
) -> Artifacts {
    use crate::plot;
    let mut out: Artifacts = Vec::new();
    if let Some(l) = &prep.labels {
        let m: Vec<Vec<f64>> = confusion
            .iter()
            .map(|r| r.iter().map(|c| *c as f64).collect())
            .collect();
        out.push((
            "confusion_matrix.svg".into(),
            plot::heatmap(
                "Confusion matrix (out-of-fold, all folds)",
                &l.classes,
                &l.classes,
                &m,
                "true",
                "predicted",
            )
            .into_bytes(),
        ));
        let stats = per_class_from_confusion(confusion, &l.classes);
        let series = vec![
            (
                "precision".to_string(),
                stats.iter().map(|c| c.precision).collect(),
            ),
            (
                "recall".to_string(),
                stats.iter().map(|c| c.recall).collect(),
            ),
            ("F1".to_string(), stats.iter().map(|c| c.f1).collect()),
        ];
        out.push((
            "per_class.svg".into(),
            plot::grouped_bars(
                "Precision, recall and F1 per class (out-of-fold)",
                "score",
                &l.classes,
                &series,
            )
            .into_bytes(),
        ));
    } else if !oof.is_empty() {
        let (oof, shown) = scatter_sample(oof);
        let oof = oof.as_slice();
        out.push((
            "predicted_vs_actual.svg".into(),
            plot::scatter(
                &format!("Predicted against actual (out-of-fold{shown})"),
                "actual",
                "predicted",
                oof,
                true,
            )
            .into_bytes(),
        ));
        let res: Vec<(f64, f64)> = oof.iter().map(|(t, p)| (*p, p - t)).collect();
        out.push((
            "residuals.svg".into(),
            plot::scatter(
                &format!("Residuals (out-of-fold{shown})"),
                "predicted",
                "predicted - actual",
                &res,
                false,
            )
            .into_bytes(),
        ));
    }
    if folds.iter().any(|f| !f.is_empty()) || !refit.is_empty() {
        out.push((
            "learning_curve.svg".into(),
            learning_curve_svg(folds, refit).into_bytes(),
        ));
    }
    out
}

/// Every loss curve: each fold faint, their mean (over the folds that reached each round, since
/// early stopping ends folds at different rounds) solid, the refit dashed.
pub(crate) fn learning_curve_svg(
    folds: &[Vec<(i64, String, f64)>],
    refit: &[(i64, String, f64)],
) -> String {
    use crate::plot::{Line, Stroke};
    let is_loss = |key: &str| key.contains("loss") || key.contains("rmse");
    let keys: std::collections::BTreeSet<&String> = folds
        .iter()
        .flatten()
        .chain(refit)
        .map(|(_, k, _)| k)
        .filter(|k| is_loss(k))
        .collect();
    let curve = |points: &[(i64, String, f64)], key: &str| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter(|(_, k, _)| k == key)
            .map(|(r, _, v)| (*r as f64, *v))
            .collect()
    };
    let mut lines = Vec::new();
    for (color, key) in keys.into_iter().enumerate() {
        let mut sums: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
        for (i, fold) in folds.iter().enumerate() {
            let points = curve(fold, key);
            for (r, v) in &points {
                let e = sums.entry(*r as i64).or_insert((0.0, 0));
                e.0 += v;
                e.1 += 1;
            }
            lines.push(Line {
                name: (i == 0).then(|| format!("{key}, each fold")),
                color,
                stroke: Stroke::Faint,
                points,
            });
        }
        if !sums.is_empty() {
            lines.push(Line {
                name: Some(format!("{key}, mean of {} folds", folds.len())),
                color,
                stroke: Stroke::Solid,
                points: sums
                    .into_iter()
                    .map(|(r, (sum, n))| (r as f64, sum / n as f64))
                    .collect(),
            });
        }
        let refit_points = curve(refit, key);
        if !refit_points.is_empty() {
            lines.push(Line {
                name: Some(format!("{key}, refit")),
                color,
                stroke: Stroke::Dashed,
                points: refit_points,
            });
        }
    }
    crate::plot::lines_chart("Learning curve", "round / epoch", "loss", &lines, true)
}

/// The sweep at a glance: the primary metric of every run with its fold spread, as SVG.
pub fn comparison_svg(prep: &Prepared, runs: &[RunResult]) -> String {
    let metric = &prep.primary_metric;
    let done: Vec<&RunResult> = runs
        .iter()
        .filter(|r| r.metrics.contains_key(metric))
        .collect();
    let labels: Vec<String> = done
        .iter()
        .map(|r| format!("{} {}", r.version, r.name))
        .collect();
    let means: Vec<f64> = done.iter().map(|r| r.metrics[metric].0).collect();
    let stds: Vec<f64> = done.iter().map(|r| r.metrics[metric].1).collect();
    crate::plot::bar_chart(
        &format!(
            "{}: {metric} per config (mean ± std over folds)",
            prep.loaded.config.experiment
        ),
        metric,
        &labels,
        &means,
        Some(&stds),
    )
}

/// The steps of a curve (a ROC or precision-recall curve has a point per distinct score) that
/// move at least 1/1000 of the axes from the last one kept, and its last point, taken as they
/// come: a million-row fold's curves had a million points each (58 MB tables, 11 MB pictures);
/// the AUC and AP figures are computed from every point.
#[derive(Default)]
struct Thinned {
    kept: Vec<(f64, f64, f64)>,
    last: Option<(f64, f64, f64)>,
}

impl Thinned {
    fn push(&mut self, p: (f64, f64, f64)) {
        const STEP: f64 = 1e-3;
        let far = (self.kept.last())
            .is_none_or(|k| (p.0 - k.0).abs() >= STEP || (p.1 - k.1).abs() >= STEP);
        if far {
            self.kept.push(p);
            self.last = None;
        } else {
            self.last = Some(p);
        }
    }

    fn finish(mut self) -> Vec<(f64, f64, f64)> {
        self.kept.extend(self.last);
        self.kept
    }
}

/// Two classes: the ROC and precision-recall curves of the pooled out-of-fold probabilities of
/// the second class, each as a chart and its points (`roc_curve.csv`: fpr, tpr, threshold;
/// `pr_curve.csv`: recall, precision, threshold). None for other tasks.
pub(crate) fn curve_files(oof_scores: &[(bool, f64)]) -> Artifacts {
    use crate::plot::{lines_chart, Line, Stroke};
    if oof_scores.is_empty() {
        return Vec::new();
    }
    let positive: Vec<bool> = oof_scores.iter().map(|(p, _)| *p).collect();
    let scores: Vec<f64> = oof_scores.iter().map(|(_, s)| *s).collect();
    let (mut roc, mut pr) = (Thinned::default(), Thinned::default());
    eval::roc_and_pr(&positive, &scores, |p| roc.push(p), |p| pr.push(p));
    let (roc, pr) = (roc.finish(), pr.finish());
    let auc = eval::roc_auc(&positive, &scores).unwrap_or(f64::NAN);
    let ap = eval::average_precision(&positive, &scores).unwrap_or(f64::NAN);
    let line = |name: String, points: Vec<(f64, f64)>, color: usize, stroke: Stroke| Line {
        name: Some(name),
        color,
        stroke,
        points,
    };
    let roc_lines = [
        line(
            format!("ROC (AUC {auc:.3})"),
            roc.iter().map(|p| (p.0, p.1)).collect(),
            0,
            Stroke::Solid,
        ),
        line(
            "chance".into(),
            vec![(0.0, 0.0), (1.0, 1.0)],
            1,
            Stroke::Dashed,
        ),
    ];
    let pr_lines = [line(
        format!("precision-recall (AP {ap:.3})"),
        pr.iter().map(|p| (p.0, p.1)).collect(),
        0,
        Stroke::Solid,
    )];
    let csv = |header: &str, points: &[(f64, f64, f64)]| {
        let rows: String = points
            .iter()
            .map(|(a, b, t)| format!("{a},{b},{t}\n"))
            .collect();
        format!("{header}\n{rows}").into_bytes()
    };
    vec![
        (
            "roc_curve.svg".into(),
            lines_chart(
                "ROC curve (out-of-fold, all folds)",
                "false positive rate",
                "true positive rate",
                &roc_lines,
                false,
            )
            .into_bytes(),
        ),
        ("roc_curve.csv".into(), csv("fpr,tpr,threshold", &roc)),
        (
            "pr_curve.svg".into(),
            lines_chart(
                "Precision-recall curve (out-of-fold, all folds)",
                "recall",
                "precision",
                &pr_lines,
                false,
            )
            .into_bytes(),
        ),
        (
            "pr_curve.csv".into(),
            csv("recall,precision,threshold", &pr),
        ),
    ]
    .into_iter()
    .chain(reliability_files(&positive, &scores))
    .collect()
}

/// Bins of the reliability curve.
const RELIABILITY_BINS: usize = 10;

/// The reliability curve of the out-of-fold probabilities of the second class: the mean
/// predicted probability against the observed share of positives in ten equal-width bins, as a
/// chart beside the diagonal of perfect calibration and as CSV.
fn reliability_files(positive: &[bool], scores: &[f64]) -> Artifacts {
    use crate::plot::{lines_chart, Line, Stroke};
    let bins = eval::reliability_bins(positive, scores, RELIABILITY_BINS);
    let n = scores.len().max(1) as f64;
    let brier: f64 = (positive.iter().zip(scores))
        .map(|(p, s)| (s - f64::from(u8::from(*p))).powi(2))
        .sum::<f64>()
        / n;
    let lines = [
        Line {
            name: Some(format!("out-of-fold (Brier {brier:.4})")),
            color: 0,
            stroke: Stroke::Solid,
            points: bins
                .iter()
                .map(|b| (b.mean_predicted, b.fraction_positive))
                .collect(),
        },
        Line {
            name: Some("perfectly calibrated".into()),
            color: 1,
            stroke: Stroke::Dashed,
            points: vec![(0.0, 0.0), (1.0, 1.0)],
        },
    ];
    let mut csv = String::from("bin_low,bin_high,mean_predicted,fraction_positive,count\n");
    for b in &bins {
        csv.push_str(&format!(
            "{},{},{},{},{}\n",
            b.low, b.high, b.mean_predicted, b.fraction_positive, b.count
        ));
    }
    let svg = lines_chart(
        "Reliability curve (out-of-fold, all folds)",
        "mean predicted probability",
        "observed share of positives",
        &lines,
        false,
    );
    vec![
        ("reliability_curve.svg".into(), svg.into_bytes()),
        ("reliability_curve.csv".into(), csv.into_bytes()),
    ]
}

#[cfg(test)]
mod tests {
    use super::Thinned;

    #[test]
    fn a_curve_of_a_million_steps_keeps_about_a_thousand_and_both_ends() {
        let n = 1_000_000;
        let points: Vec<(f64, f64, f64)> = (0..=n)
            .map(|i| {
                let x = i as f64 / n as f64;
                (x, x.sqrt(), 1.0 - x)
            })
            .collect();
        let mut thinned = Thinned::default();
        points.iter().for_each(|p| thinned.push(*p));
        let kept = thinned.finish();
        assert!(kept.len() > 500 && kept.len() < 2_100, "{}", kept.len());
        assert_eq!(kept[0], points[0]);
        assert_eq!(kept.last(), points.last());
        // No gap wider than a step plus one original step on either axis.
        for w in kept.windows(2) {
            assert!(
                w[1].0 - w[0].0 < 1.1e-3 && w[1].1 - w[0].1 < 1.1e-3,
                "{w:?}"
            );
        }
    }
}
