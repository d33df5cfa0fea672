//! Logistic regression (MatMul + Add + Softmax) and linear regression (MatMul + Add).

use super::proto::*;
use anyhow::{Context, Result};
use serde_json::Value;

use super::ndarray_data;

pub(super) fn logistic(g: &mut Graph, fitted: &Value, x: &str, k: usize) -> Result<String> {
    let m = &fitted["model"];
    let (pdim, params) = ndarray_data(&m["params"], "params")?;
    let (_, intercept) = ndarray_data(&m["intercept"], "intercept")?;
    let classes: Vec<usize> = m["classes"]
        .as_array()
        .context("classes")?
        .iter()
        .map(|c| c.as_u64().unwrap_or(0) as usize)
        .collect();
    let (f, seen) = (pdim[0], pdim[1]);
    // Widened to all K classes; a class absent from training gets logit -inf (probability 0).
    let mut w = vec![0.0; f * k];
    let mut b = vec![f64::NEG_INFINITY; k];
    for (j, c) in classes.iter().enumerate() {
        for i in 0..f {
            w[i * k + c] = params[i * seen + j];
        }
        b[*c] = intercept[j];
    }
    let w = g.init("coef", &[f as i64, k as i64], Data::F64(&w));
    let b = g.init("intercept", &[k as i64], Data::F64(&b));
    let z = g.op("MatMul", &[x, &w], vec![]);
    let z = g.op("Add", &[&z, &b], vec![]);
    Ok(g.op("Softmax", &[&z], vec![Attr::Int("axis", -1)]))
}

pub(super) fn linear(g: &mut Graph, fitted: &Value, x: &str) -> Result<String> {
    let coef: Vec<f64> = fitted["coef"]
        .as_array()
        .context("coef")?
        .iter()
        .map(|v| v.as_f64().unwrap_or(0.0))
        .collect();
    let intercept = fitted["intercept"].as_f64().context("intercept")?;
    let w = g.init("coef", &[coef.len() as i64, 1], Data::F64(&coef));
    let b = g.init("intercept", &[1], Data::F64(&[intercept]));
    let z = g.op("MatMul", &[x, &w], vec![]);
    Ok(g.op("Add", &[&z, &b], vec![]))
}
