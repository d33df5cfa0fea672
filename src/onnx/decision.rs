//! A classifier's decision step in the graph (see `models::post`): the calibrators on its
//! class probabilities, in double like the runner, and the two-class threshold that turns them
//! into labels.

use super::proto::{Attr, Data, Graph, INT64};
use crate::calibrate::Calibrator;

/// One class's probabilities `p` (N x 1) through a calibrator.
fn calibrated(g: &mut Graph, cal: &Calibrator, p: &str) -> String {
    match cal {
        Calibrator::Platt { a, b } => {
            let minus_a = g.init("platt_a", &[1], Data::F64(&[-a]));
            let minus_b = g.init("platt_b", &[1], Data::F64(&[-b]));
            let z = g.op("Mul", &[p, &minus_a], vec![]);
            let z = g.op("Add", &[&z, &minus_b], vec![]);
            g.op("Sigmoid", &[&z], vec![])
        }
        Calibrator::Isotonic { x, y } => isotonic(g, x, y, p),
    }
}

/// Linear interpolation between the points, clipped at both ends, as a sum over segments:
/// `y0 + sum_k slope_k * (min(max(p, x_k), x_k+1) - x_k)`.
fn isotonic(g: &mut Graph, x: &[f64], y: &[f64], p: &str) -> String {
    let first = g.init("iso_y0", &[1], Data::F64(&y[..1.min(y.len())]));
    if x.len() < 2 {
        let zero = g.init("zero", &[1], Data::F64(&[0.0]));
        let z = g.op("Mul", &[p, &zero], vec![]);
        return g.op("Add", &[&z, &first], vec![]);
    }
    let m = x.len() - 1;
    let slopes: Vec<f64> = (0..m)
        .map(|k| (y[k + 1] - y[k]) / (x[k + 1] - x[k]))
        .collect();
    let lo = g.init("iso_lo", &[m as i64], Data::F64(&x[..m]));
    let hi = g.init("iso_hi", &[m as i64], Data::F64(&x[1..]));
    let slope = g.init("iso_slope", &[m as i64], Data::F64(&slopes));
    let axis1 = g.init("axis", &[1], Data::I64(&[1]));
    let clipped = g.op("Max", &[p, &lo], vec![]);
    let clipped = g.op("Min", &[&clipped, &hi], vec![]);
    let rise = g.op("Sub", &[&clipped, &lo], vec![]);
    let rise = g.op("Mul", &[&rise, &slope], vec![]);
    let total = g.op(
        "ReduceSum",
        &[&rise, &axis1],
        vec![Attr::Int("keepdims", 1)],
    );
    g.op("Add", &[&total, &first], vec![])
}

/// Column `c` of `proba` (N x K) as N x 1.
fn column(g: &mut Graph, proba: &str, c: usize) -> String {
    let index = g.init("class", &[1], Data::I64(&[c as i64]));
    g.op("Gather", &[proba, &index], vec![Attr::Int("axis", 1)])
}

/// The calibrated probabilities (N x K) of `proba`: two classes calibrate the second and take
/// its complement for the first; more calibrate each and divide by the row's sum (equal shares
/// where it is 0).
pub(super) fn calibrate(
    g: &mut Graph,
    calibrators: &[Calibrator],
    proba: &str,
    k: usize,
) -> String {
    if calibrators.is_empty() {
        return proba.to_string();
    }
    if k == 2 && calibrators.len() == 1 {
        let p1 = column(g, proba, 1);
        let c1 = calibrated(g, &calibrators[0], &p1);
        let one = g.init("one", &[1], Data::F64(&[1.0]));
        let c0 = g.op("Sub", &[&one, &c1], vec![]);
        return g.op("Concat", &[&c0, &c1], vec![Attr::Int("axis", 1)]);
    }
    let parts: Vec<String> = (calibrators.iter().enumerate())
        .map(|(c, cal)| {
            let p = column(g, proba, c);
            calibrated(g, cal, &p)
        })
        .collect();
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let all = g.op("Concat", &refs, vec![Attr::Int("axis", 1)]);
    let axis1 = g.init("axis", &[1], Data::I64(&[1]));
    let sum = g.op("ReduceSum", &[&all, &axis1], vec![Attr::Int("keepdims", 1)]);
    let zero = g.init("zero", &[1], Data::F64(&[0.0]));
    let empty = g.op("Equal", &[&sum, &zero], vec![]);
    let share = g.init("share", &[1], Data::F64(&[1.0 / k as f64]));
    let divided = g.op("Div", &[&all, &sum], vec![]);
    g.op("Where", &[&empty, &share, &divided], vec![])
}

/// The class index (N, int64) of each row: the second class where its probability reaches the
/// threshold.
pub(super) fn thresholded(g: &mut Graph, proba: &str, threshold: f64) -> String {
    let p1 = column(g, proba, 1);
    let t = g.init("threshold", &[1], Data::F64(&[threshold]));
    let at_least = g.op("GreaterOrEqual", &[&p1, &t], vec![]);
    let index = g.op("Cast", &[&at_least], vec![Attr::Int("to", INT64)]);
    let shape = g.init("shape", &[1], Data::I64(&[-1]));
    g.op("Reshape", &[&index, &shape], vec![])
}
