//! Probability calibration and the decision threshold of a two-class model, fitted on
//! out-of-fold predictions of the training rows (the models layer runs that inner CV):
//! - Platt scaling: `p' = 1 / (1 + exp(a p + b))`, fitted by Newton's method on Platt's smoothed
//!   targets (Lin, Lin and Weng's algorithm, as scikit-learn's sigmoid calibration);
//! - isotonic regression: pool-adjacent-violators on the scores, read back by linear
//!   interpolation between the fitted points and clipped outside them (scikit-learn's
//!   `IsotonicRegression(out_of_bounds="clip")`);
//! - the threshold on the second class's probability that a named rule likes best: F1,
//!   balanced accuracy, the best recall at a precision target or the best precision at a recall
//!   target, or a number the user gives.
//!
//! Two classes get one calibrator, for the second class (the first is its complement); more
//! classes get one per class, one-vs-rest, and the calibrated rows are divided by their sums.

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

/// A fitted map from a class's raw probability to a calibrated one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Calibrator {
    /// `1 / (1 + exp(a p + b))`.
    Platt { a: f64, b: f64 },
    /// Linear interpolation between the points (`x` increasing), clipped at both ends.
    Isotonic { x: Vec<f64>, y: Vec<f64> },
}

/// The calibration methods a config may name (`calibration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Platt,
    Isotonic,
}

impl Method {
    /// From the parameter's text; `None` for "none".
    pub fn parse(text: &str) -> Option<Method> {
        match text {
            "platt" | "sigmoid" => Some(Method::Platt),
            "isotonic" => Some(Method::Isotonic),
            _ => None,
        }
    }
}

impl Calibrator {
    /// Fits `method` to scores and whether each row is of the class.
    pub fn fit(method: Method, scores: &[f64], truth: &[bool]) -> Calibrator {
        match method {
            Method::Platt => {
                let (a, b) = platt(scores, truth);
                Calibrator::Platt { a, b }
            }
            Method::Isotonic => {
                let (x, y) = isotonic(scores, truth);
                Calibrator::Isotonic { x, y }
            }
        }
    }

    pub fn apply(&self, p: f64) -> f64 {
        match self {
            Calibrator::Platt { a, b } => sigmoid(-(a * p + b)),
            Calibrator::Isotonic { x, y } => interpolate(x, y, p),
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `1 / (1 + exp(a f + b))`, Platt's sigmoid, without overflow.
pub fn platt_probability(f: f64, a: f64, b: f64) -> f64 {
    sigmoid(-(a * f + b))
}

/// Platt's (a, b): minimises the log loss of `1 / (1 + exp(a f + b))` against the targets
/// `(n+ + 1) / (n+ + 2)` for the class and `1 / (n- + 2)` for the rest, by Newton's method with
/// a backtracking line search (Lin, Lin and Weng 2007, as libsvm's `sigmoid_train`).
pub fn platt(f: &[f64], truth: &[bool]) -> (f64, f64) {
    let n_pos = truth.iter().filter(|t| **t).count() as f64;
    let n_neg = truth.len() as f64 - n_pos;
    let (hi, lo) = ((n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0));
    let t: Vec<f64> = truth.iter().map(|p| if *p { hi } else { lo }).collect();
    let loss = |a: f64, b: f64| -> f64 {
        (f.iter().zip(&t))
            .map(|(fi, ti)| {
                let z = fi * a + b;
                if z >= 0.0 {
                    ti * z + (-z).exp().ln_1p()
                } else {
                    (ti - 1.0) * z + z.exp().ln_1p()
                }
            })
            .sum()
    };
    let (mut a, mut b) = (0.0, ((n_neg + 1.0) / (n_pos + 1.0)).ln());
    let mut value = loss(a, b);
    for _ in 0..100 {
        let (mut h11, mut h22, mut h21, mut g1, mut g2) = (1e-12, 1e-12, 0.0, 0.0, 0.0);
        for (fi, ti) in f.iter().zip(&t) {
            let z = fi * a + b;
            let (p, q) = if z >= 0.0 {
                let e = (-z).exp();
                (e / (1.0 + e), 1.0 / (1.0 + e))
            } else {
                let e = z.exp();
                (1.0 / (1.0 + e), e / (1.0 + e))
            };
            let d2 = p * q;
            h11 += fi * fi * d2;
            h22 += d2;
            h21 += fi * d2;
            let d1 = ti - p;
            g1 += fi * d1;
            g2 += d1;
        }
        if g1.abs() < 1e-10 && g2.abs() < 1e-10 {
            break;
        }
        let det = h11 * h22 - h21 * h21;
        let da = -(h22 * g1 - h21 * g2) / det;
        let db = -(-h21 * g1 + h11 * g2) / det;
        let gd = g1 * da + g2 * db;
        let mut step = 1.0;
        while step >= 1e-10 {
            let (na, nb) = (a + step * da, b + step * db);
            let next = loss(na, nb);
            if next < value + 1e-4 * step * gd {
                (a, b, value) = (na, nb, next);
                break;
            }
            step /= 2.0;
        }
        if step < 1e-10 {
            break;
        }
    }
    (a, b)
}

/// The isotonic fit's points: the distinct scores (their rows' shares pooled) made
/// non-decreasing by pool-adjacent-violators, then the inside points of each flat run dropped
/// (the interpolation between them is the same).
fn isotonic(scores: &[f64], truth: &[bool]) -> (Vec<f64>, Vec<f64>) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|i, j| scores[*i].total_cmp(&scores[*j]));
    // (x, mean, weight) per distinct score.
    let mut unique: Vec<(f64, f64, f64)> = Vec::new();
    for i in order {
        let y = f64::from(u8::from(truth[i]));
        match unique.last_mut() {
            Some(last) if last.0 == scores[i] => {
                last.1 = (last.1 * last.2 + y) / (last.2 + 1.0);
                last.2 += 1.0;
            }
            _ => unique.push((scores[i], y, 1.0)),
        }
    }
    // Blocks of pooled points: (first point, mean, weight).
    let mut blocks: Vec<(usize, f64, f64)> = Vec::new();
    for (i, (_, y, w)) in unique.iter().enumerate() {
        blocks.push((i, *y, *w));
        while blocks.len() > 1 && blocks[blocks.len() - 2].1 >= blocks[blocks.len() - 1].1 {
            let (_, y2, w2) = blocks.pop().unwrap_or_default();
            let last = blocks.len() - 1;
            let (start, y1, w1) = blocks[last];
            blocks[last] = (start, (y1 * w1 + y2 * w2) / (w1 + w2), w1 + w2);
        }
    }
    let mut fitted = vec![0.0; unique.len()];
    for (b, (start, y, _)) in blocks.iter().enumerate() {
        let end = blocks.get(b + 1).map_or(unique.len(), |n| n.0);
        fitted[*start..end].fill(*y);
    }
    let keep = |i: usize| {
        i == 0 || i + 1 == fitted.len() || fitted[i - 1] != fitted[i] || fitted[i + 1] != fitted[i]
    };
    (0..unique.len())
        .filter(|i| keep(*i))
        .map(|i| (unique[i].0, fitted[i]))
        .unzip()
}

fn interpolate(x: &[f64], y: &[f64], p: f64) -> f64 {
    let (Some(first), Some(last)) = (x.first(), x.last()) else {
        return p;
    };
    if p <= *first {
        return y[0];
    }
    if p >= *last {
        return y[y.len() - 1];
    }
    let j = x.partition_point(|v| *v <= p).max(1);
    let (x0, x1, y0, y1) = (x[j - 1], x[j], y[j - 1], y[j]);
    y0 + (y1 - y0) * (p - x0) / (x1 - x0)
}

/// One calibrator per class that needs one: the second class's for two classes, else every
/// class's (one-vs-rest), from out-of-fold probabilities and class indexes.
pub fn fit_classes(method: Method, proba: ArrayView2<f64>, y: &[f64]) -> Vec<Calibrator> {
    let k = proba.ncols();
    let classes: Vec<usize> = if k == 2 { vec![1] } else { (0..k).collect() };
    classes
        .iter()
        .map(|c| {
            let truth: Vec<bool> = y.iter().map(|v| *v as usize == *c).collect();
            Calibrator::fit(method, &proba.column(*c).to_vec(), &truth)
        })
        .collect()
}

/// Class probabilities through the calibrators of [`fit_classes`]: for two classes the second
/// column calibrated and the first its complement; for more, each column calibrated and every
/// row divided by its sum (equal shares where the sum is 0).
pub fn apply_classes(calibrators: &[Calibrator], proba: ArrayView2<f64>) -> Array2<f64> {
    let mut out = proba.to_owned();
    let k = proba.ncols();
    if k == 2 && calibrators.len() == 1 {
        for mut row in out.rows_mut() {
            let p = calibrators[0].apply(row[1]);
            row[0] = 1.0 - p;
            row[1] = p;
        }
        return out;
    }
    for mut row in out.rows_mut() {
        for (c, cal) in calibrators.iter().enumerate().take(k) {
            row[c] = cal.apply(row[c]);
        }
        let sum: f64 = row.sum();
        if sum > 0.0 {
            row.mapv_inplace(|v| v / sum);
        } else {
            row.fill(1.0 / k as f64);
        }
    }
    out
}

/// How a two-class model's threshold on the second class's probability is chosen
/// (`threshold`): a row is of the second class when its probability is at least the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// The most probable class (0.5), as without a threshold.
    None,
    F1,
    BalancedAccuracy,
    /// The best recall among thresholds whose precision reaches the target.
    PrecisionAtLeast(f64),
    /// The best precision among thresholds whose recall reaches the target.
    RecallAtLeast(f64),
    Fixed(f64),
}

/// What `threshold` may be, for errors.
pub const RULES: &str = "\"none\", \"f1\", \"balanced_accuracy\", \"precision>=P\", \"recall>=R\" (P, R in (0, 1]) or a number in (0, 1)";

impl Rule {
    pub fn parse(text: &str) -> Option<Rule> {
        let t = text.trim();
        let target = |v: &str| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| *x > 0.0 && *x <= 1.0)
        };
        match t {
            "none" | "" => Some(Rule::None),
            "f1" => Some(Rule::F1),
            "balanced_accuracy" => Some(Rule::BalancedAccuracy),
            _ => {
                if let Some(v) = t.strip_prefix("precision>=") {
                    target(v).map(Rule::PrecisionAtLeast)
                } else if let Some(v) = t.strip_prefix("recall>=") {
                    target(v).map(Rule::RecallAtLeast)
                } else {
                    let x = t.parse::<f64>().ok()?;
                    (x > 0.0 && x < 1.0).then_some(Rule::Fixed(x))
                }
            }
        }
    }

    /// Whether choosing the threshold needs out-of-fold predictions.
    pub fn learned(&self) -> bool {
        !matches!(self, Rule::None | Rule::Fixed(_))
    }

    /// The threshold for out-of-fold `scores` (the second class's probability) and whether
    /// each row is of the second class: the midpoint between the lowest score the best cut
    /// calls positive and the next lower score (ties between cuts go to the one nearer 0.5).
    pub fn choose(&self, scores: &[f64], truth: &[bool]) -> Option<f64> {
        match self {
            Rule::None => return None,
            Rule::Fixed(t) => return Some(*t),
            _ => {}
        }
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|i, j| scores[*j].total_cmp(&scores[*i]));
        let positives = truth.iter().filter(|t| **t).count() as f64;
        let negatives = truth.len() as f64 - positives;
        let (mut tp, mut fp) = (0.0, 0.0);
        // (threshold, goal, tie-break) of each cut; goal is compared first.
        let mut best: Option<(f64, (f64, f64))> = None;
        for (n, i) in order.iter().enumerate() {
            if truth[*i] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            let next = order.get(n + 1).map(|j| scores[*j]);
            if next == Some(scores[*i]) {
                continue;
            }
            let cut = (scores[*i] + next.unwrap_or(0.0).min(scores[*i])) / 2.0;
            let precision = tp / (tp + fp);
            let recall = if positives > 0.0 { tp / positives } else { 0.0 };
            let specificity = if negatives > 0.0 {
                1.0 - fp / negatives
            } else {
                0.0
            };
            let goal = match self {
                Rule::F1 => (2.0 * tp / (2.0 * tp + fp + (positives - tp)), 0.0),
                Rule::BalancedAccuracy => ((recall + specificity) / 2.0, 0.0),
                Rule::PrecisionAtLeast(p) if precision >= *p => (1.0 + recall, precision),
                Rule::PrecisionAtLeast(_) => (precision, recall),
                Rule::RecallAtLeast(r) if recall >= *r => (1.0 + precision, recall),
                Rule::RecallAtLeast(_) => (recall, precision),
                Rule::None | Rule::Fixed(_) => (0.0, 0.0),
            };
            let better = match best {
                None => true,
                Some((t, g)) => {
                    goal.0 > g.0
                        || (goal.0 == g.0 && goal.1 > g.1)
                        || (goal == g && (cut - 0.5).abs() < (t - 0.5).abs())
                }
            };
            if better {
                best = Some((cut, goal));
            }
        }
        best.map(|(t, _)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The threshold a brute force over every distinct score would pick for F1.
    #[test]
    fn f1_threshold_is_the_best_cut() {
        let scores = [0.9, 0.8, 0.8, 0.7, 0.4, 0.35, 0.3, 0.2, 0.1, 0.05];
        let truth = [
            true, true, false, true, true, false, false, true, false, false,
        ];
        let t = Rule::F1.choose(&scores, &truth).unwrap();
        let f1 = |t: f64| {
            let tp = (scores.iter().zip(&truth))
                .filter(|(s, y)| **s >= t && **y)
                .count() as f64;
            let fp = (scores.iter().zip(&truth))
                .filter(|(s, y)| **s >= t && !**y)
                .count() as f64;
            2.0 * tp / (2.0 * tp + fp + (5.0 - tp))
        };
        let best = scores.iter().map(|s| f1(*s)).fold(0.0, f64::max);
        assert_eq!(f1(t), best);
        // Between 0.4 (the lowest score taken) and 0.35.
        assert!((t - 0.375).abs() < 1e-12, "{t}");
    }

    #[test]
    fn precision_target_takes_the_most_recall_that_keeps_it() {
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let truth = [true, true, false, true, false, true];
        // Precision >= 0.75 holds down to 0.6 (3 of 4), not at 0.4 (4 of 6).
        let t = Rule::PrecisionAtLeast(0.75)
            .choose(&scores, &truth)
            .unwrap();
        assert!((t - 0.55).abs() < 1e-12, "{t}");
        let t = Rule::RecallAtLeast(1.0).choose(&scores, &truth).unwrap();
        assert!((t - 0.2).abs() < 1e-12, "{t}");
    }

    #[test]
    fn rules_parse_and_refuse() {
        assert_eq!(
            Rule::parse("precision>=0.9"),
            Some(Rule::PrecisionAtLeast(0.9))
        );
        assert_eq!(Rule::parse("0.3"), Some(Rule::Fixed(0.3)));
        assert_eq!(Rule::parse("recall>=1.5"), None);
        assert_eq!(Rule::parse("1"), None);
        assert_eq!(Rule::parse("accuracy"), None);
    }

    /// scikit-learn 1.9.1's sigmoid and isotonic calibration of fixed scores
    /// (tests/data/calibration_reference.py).
    #[test]
    fn platt_and_isotonic_match_scikit_learn() {
        let reference: serde_json::Value =
            serde_json::from_str(include_str!("../tests/data/calibration_reference.json")).unwrap();
        let scores: Vec<f64> = serde_json::from_value(reference["scores"].clone()).unwrap();
        let y: Vec<bool> = serde_json::from_value::<Vec<u8>>(reference["y"].clone())
            .unwrap()
            .iter()
            .map(|v| *v == 1)
            .collect();
        let grid: Vec<f64> = serde_json::from_value(reference["grid"].clone()).unwrap();
        for (method, key) in [(Method::Platt, "sigmoid"), (Method::Isotonic, "isotonic")] {
            let cal = Calibrator::fit(method, &scores, &y);
            let want: Vec<f64> = serde_json::from_value(reference[key].clone()).unwrap();
            for (p, w) in grid.iter().zip(&want) {
                let got = cal.apply(*p);
                assert!((got - w).abs() < 1e-6, "{key} at {p}: {got} vs {w}");
            }
        }
    }

    #[test]
    fn multiclass_rows_sum_to_one() {
        let proba = ndarray::array![
            [0.7, 0.2, 0.1],
            [0.1, 0.6, 0.3],
            [0.2, 0.2, 0.6],
            [0.5, 0.4, 0.1]
        ];
        let y = [0.0, 1.0, 2.0, 1.0];
        let cals = fit_classes(Method::Isotonic, proba.view(), &y);
        assert_eq!(cals.len(), 3);
        let out = apply_classes(&cals, proba.view());
        for row in out.rows() {
            assert!((row.sum() - 1.0).abs() < 1e-12);
        }
    }
}
