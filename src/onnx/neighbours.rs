//! Gaussian naive Bayes (each class's joint log-likelihood, then Softmax), k-nearest
//! neighbours (TopK over squared distances, the chosen neighbours' exact distances, weighted
//! votes or a weighted mean), as runner and linfa compute them.

use super::ndarray_data;
use super::proto::*;
use crate::models::Task;
use anyhow::{bail, Context, Result};
use serde_json::Value;

/// `-0.5 * sum((x - theta)^2 / sigma) + ln(prior) - 0.5 * sum(ln(2 pi sigma))` per class
/// (linfa-bayes' joint log-likelihood), Softmax over the classes, and the balanced weights'
/// reweighting. A class absent from training gets probability 0.
pub(super) fn naive_bayes(g: &mut Graph, fitted: &Value, x: &str, k: usize) -> Result<String> {
    let info = fitted["model"]["class_info"]
        .as_object()
        .context("naive Bayes: no class_info")?;
    let f = match info.values().next() {
        Some(c) => ndarray_data(&c["theta"], "theta")?.1.len(),
        None => bail!("naive Bayes: no class was fitted"),
    };
    let mut theta = vec![0.0; k * f];
    let mut sigma = vec![1.0; k * f];
    let mut constant = vec![f64::NEG_INFINITY; k];
    for (class, c) in info {
        let i: usize = class.parse().context("naive Bayes: class index")?;
        if i >= k {
            bail!("naive Bayes: class {i} outside the {k} labels");
        }
        let (_, t) = ndarray_data(&c["theta"], "theta")?;
        let (_, s) = ndarray_data(&c["sigma"], "sigma")?;
        let prior = c["prior"].as_f64().context("naive Bayes: prior")?;
        let norm: f64 = s
            .iter()
            .map(|v| (2.0 * std::f64::consts::PI * v).ln())
            .sum();
        constant[i] = -0.5 * norm + prior.ln();
        theta[i * f..(i + 1) * f].copy_from_slice(&t);
        sigma[i * f..(i + 1) * f].copy_from_slice(&s);
    }
    let dims = [k as i64, f as i64];
    let theta = g.init("theta", &dims, Data::F64(&theta));
    let sigma = g.init("sigma", &dims, Data::F64(&sigma));
    let constant = g.init("log_prior", &[k as i64], Data::F64(&constant));
    let half = g.init("minus_half", &[1], Data::F64(&[-0.5]));
    let axis1 = g.init("axis", &[1], Data::I64(&[1]));
    let axis2 = g.init("axis", &[1], Data::I64(&[2]));
    let xu = g.op("Unsqueeze", &[x, &axis1], vec![]);
    let d = g.op("Sub", &[&xu, &theta], vec![]);
    let d2 = g.op("Mul", &[&d, &d], vec![]);
    let q = g.op("Div", &[&d2, &sigma], vec![]);
    let s = g.op("ReduceSum", &[&q, &axis2], vec![Attr::Int("keepdims", 0)]);
    let s = g.op("Mul", &[&s, &half], vec![]);
    let jll = g.op("Add", &[&s, &constant], vec![]);
    let p = g.op("Softmax", &[&jll], vec![Attr::Int("axis", -1)]);
    reweight(g, &p, &fitted["class_weights"], &axis1)
}

/// `class_weight = "balanced"`: probabilities times each class's weight, renormalised.
fn reweight(g: &mut Graph, p: &str, weights: &Value, axis1: &str) -> Result<String> {
    let Some(w) = weights.as_array() else {
        return Ok(p.to_string());
    };
    let w: Vec<f64> = w.iter().map(|v| v.as_f64().unwrap_or(1.0)).collect();
    let w = g.init("class_weights", &[w.len() as i64], Data::F64(&w));
    let pw = g.op("Mul", &[p, &w], vec![]);
    let total = g.op("ReduceSum", &[&pw, axis1], vec![Attr::Int("keepdims", 1)]);
    Ok(g.op("Div", &[&pw, &total], vec![]))
}

/// The k nearest training rows by squared distance (`|x|^2 - 2 x.X + |X|^2`, chosen by TopK,
/// which puts the lower training row first on ties as runner does), their exact distances
/// recomputed from the rows, and 1 / max(d, 1e-12) weights when distance-weighted; then the
/// weighted class votes (times the balanced class weights), or the weighted mean.
pub(super) fn knn(g: &mut Graph, fitted: &Value, x: &str, task: Task, k: usize) -> Result<String> {
    let (xdim, train) = ndarray_data(&fitted["x"], "x")?;
    let (_, y) = ndarray_data(&fitted["y"], "y")?;
    let (m, f) = (xdim[0], xdim.get(1).copied().unwrap_or(0));
    let neighbours = (fitted["k"].as_u64().context("knn: k")? as usize).min(m);
    let axis1 = g.init("axis", &[1], Data::I64(&[1]));
    let axis2 = g.init("axis", &[1], Data::I64(&[2]));
    let rows = g.init("train_x", &[m as i64, f as i64], Data::F64(&train));
    // Squared distances for choosing the neighbours.
    let d2 = squared_distances(g, x, &rows, &train, f);
    let kk = g.init("k", &[1], Data::I64(&[neighbours as i64]));
    let (nearest, idx) = (g.fresh("nearest"), g.fresh("neighbour"));
    let top_attrs = vec![
        Attr::Int("axis", 1),
        Attr::Int("largest", 0),
        Attr::Int("sorted", 1),
    ];
    g.node_in("", "TopK", &[&d2, &kk], &[&nearest, &idx], top_attrs);
    // Exact distances to the chosen rows, as runner computes them.
    let chosen = g.op("Gather", &[&rows, &idx], vec![Attr::Int("axis", 0)]);
    let xu = g.op("Unsqueeze", &[x, &axis1], vec![]);
    let diff = g.op("Sub", &[&chosen, &xu], vec![]);
    let sq = g.op("Mul", &[&diff, &diff], vec![]);
    let dist = g.op("ReduceSum", &[&sq, &axis2], vec![Attr::Int("keepdims", 0)]);
    let dist = g.op("Sqrt", &[&dist], vec![]);
    let weight = if fitted["distance_weighted"].as_bool().unwrap_or(false) {
        let floor = g.init("floor", &[1], Data::F64(&[1e-12]));
        let one = g.init("one", &[1], Data::F64(&[1.0]));
        let d = g.op("Max", &[&dist, &floor], vec![]);
        g.op("Div", &[&one, &d], vec![])
    } else {
        let zero = g.init("zero", &[1], Data::F64(&[0.0]));
        let one = g.init("one", &[1], Data::F64(&[1.0]));
        let w = g.op("Mul", &[&dist, &zero], vec![]);
        g.op("Add", &[&w, &one], vec![])
    };
    let labels = g.init("train_y", &[m as i64], Data::F64(&y));
    let yk = g.op("Gather", &[&labels, &idx], vec![Attr::Int("axis", 0)]);
    if task == Task::Regression {
        let wy = g.op("Mul", &[&weight, &yk], vec![]);
        let num = g.op("ReduceSum", &[&wy, &axis1], vec![Attr::Int("keepdims", 0)]);
        let den = g.op(
            "ReduceSum",
            &[&weight, &axis1],
            vec![Attr::Int("keepdims", 0)],
        );
        return Ok(g.op("Div", &[&num, &den], vec![]));
    }
    let class = g.op("Cast", &[&yk], vec![Attr::Int("to", INT64)]);
    let vote = match fitted["class_weights"].as_array() {
        Some(w) => {
            let w: Vec<f64> = w.iter().map(|v| v.as_f64().unwrap_or(1.0)).collect();
            let w = g.init("class_weights", &[w.len() as i64], Data::F64(&w));
            let cw = g.op("Gather", &[&w, &class], vec![Attr::Int("axis", 0)]);
            g.op("Mul", &[&weight, &cw], vec![])
        }
        None => weight,
    };
    let all: Vec<i64> = (0..k as i64).collect();
    let all = g.init("classes", &[k as i64], Data::I64(&all));
    let class = g.op("Unsqueeze", &[&class, &axis2], vec![]);
    let hot = g.op("Equal", &[&class, &all], vec![]);
    let hot = g.op("Cast", &[&hot], vec![Attr::Int("to", DOUBLE)]);
    let vote = g.op("Unsqueeze", &[&vote, &axis2], vec![]);
    let votes = g.op("Mul", &[&hot, &vote], vec![]);
    let votes = g.op(
        "ReduceSum",
        &[&votes, &axis1],
        vec![Attr::Int("keepdims", 0)],
    );
    let total = g.op(
        "ReduceSum",
        &[&votes, &axis1],
        vec![Attr::Int("keepdims", 1)],
    );
    Ok(g.op("Div", &[&votes, &total], vec![]))
}

/// `x . rows^T` (N x R).
pub(super) fn dot_rows(g: &mut Graph, x: &str, rows: &str) -> String {
    let rows_t = g.op("Transpose", &[rows], vec![Attr::Ints("perm", vec![1, 0])]);
    g.op("MatMul", &[x, &rows_t], vec![])
}

/// Squared Euclidean distances from each row of `x` to each of `rows` (N x R), as
/// `|x|^2 - 2 x.r + |r|^2`; `data` holds the rows (R x `f`, row-major) for their norms.
pub(super) fn squared_distances(
    g: &mut Graph,
    x: &str,
    rows: &str,
    data: &[f64],
    f: usize,
) -> String {
    let norms: Vec<f64> = (data.chunks(f.max(1)))
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect();
    let norms = g.init("row_norms", &[norms.len() as i64], Data::F64(&norms));
    let axis1 = g.init("axis", &[1], Data::I64(&[1]));
    let minus_two = g.init("minus_two", &[1], Data::F64(&[-2.0]));
    let cross = dot_rows(g, x, rows);
    let cross = g.op("Mul", &[&cross, &minus_two], vec![]);
    let xx = g.op("Mul", &[x, x], vec![]);
    let xx = g.op("ReduceSum", &[&xx, &axis1], vec![Attr::Int("keepdims", 1)]);
    let d2 = g.op("Add", &[&cross, &xx], vec![]);
    g.op("Add", &[&d2, &norms], vec![])
}
