//! Kernel SVMs: the kernel against the support vectors, the decision value, and for classes
//! Platt's sigmoid, as runner's solver (algorithm 2) and linfa-svm (algorithm 1) compute them.

use super::ndarray_data;
use super::neighbours::{dot_rows, squared_distances};
use super::proto::*;
use crate::models::Task;
use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The model's output: a regressor's decision value, a classifier's probabilities (N x k).
pub(super) fn svm(g: &mut Graph, fitted: &Value, x: &str, task: Task, k: usize) -> Result<String> {
    if fitted.get("coef").is_none() && fitted.get("scheme").is_none() {
        return linfa_svm(g, fitted, x, task, k);
    }
    if task == Task::Regression {
        return decision(g, fitted, x);
    }
    let axis1 = g.init("axis", &[1], Data::I64(&[1]));
    let mut columns: Vec<Option<String>> = vec![None; k];
    let mut put = |at: usize, column: String| -> Result<()> {
        *columns
            .get_mut(at)
            .context("svm: a class outside the labels")? = Some(column);
        Ok(())
    };
    match fitted["scheme"].as_str() {
        Some("binary") => {
            let m = &fitted["machine"];
            let class = m["class"].as_u64().context("svm: class")? as usize;
            let p = platt(g, m, x)?;
            let one = g.init("one", &[1], Data::F64(&[1.0]));
            let q = g.op("Sub", &[&one, &p], vec![]);
            put(class, g.op("Unsqueeze", &[&p, &axis1], vec![]))?;
            put(1 - class.min(1), g.op("Unsqueeze", &[&q, &axis1], vec![]))?;
        }
        Some("one_vs_rest") => {
            for m in fitted["machines"].as_array().context("svm: machines")? {
                let class = m["class"].as_u64().context("svm: class")? as usize;
                let p = platt(g, m, x)?;
                put(class, g.op("Unsqueeze", &[&p, &axis1], vec![]))?;
            }
        }
        other => {
            bail!("svm: a classifier of scheme {other:?} (trained on one class) has no ONNX form")
        }
    }
    normalised(g, columns, &axis1)
}

/// `1 / (1 + exp(a f + b))` of one class's machine (N), in double as runner computes it.
fn platt(g: &mut Graph, m: &Value, x: &str) -> Result<String> {
    let ab = m["platt"].as_array().context("svm: Platt coefficients")?;
    let (a, b) = (ab[0].as_f64(), ab[1].as_f64());
    let (a, b) = (a.context("svm: Platt a")?, b.context("svm: Platt b")?);
    let f = decision(g, &m["machine"], x)?;
    let a = g.init("platt_a", &[1], Data::F64(&[-a]));
    let b = g.init("platt_b", &[1], Data::F64(&[-b]));
    let z = g.op("Mul", &[&f, &a], vec![]);
    let z = g.op("Add", &[&z, &b], vec![]);
    Ok(g.op("Sigmoid", &[&z], vec![]))
}

/// `sum_s coef_s K(sv_s, x) - rho` (N) of one machine of runner's solver.
fn decision(g: &mut Graph, m: &Value, x: &str) -> Result<String> {
    let numbers = |key: &str| -> Result<Vec<f64>> {
        (m[key]
            .as_array()
            .with_context(|| format!("svm: {key}"))?
            .iter())
        .map(|v| v.as_f64().with_context(|| format!("svm: {key}")))
        .collect()
    };
    let (sv, coef) = (numbers("support")?, numbers("coef")?);
    let rho = m["rho"].as_f64().context("svm: rho")?;
    let f = m["width"].as_u64().context("svm: width")? as usize;
    let s = coef.len();
    if s == 0 || sv.len() != s * f {
        bail!(
            "svm: {} support values for {s} vectors of {f} columns",
            sv.len()
        );
    }
    let svs = g.init("support_vectors", &[s as i64, f as i64], Data::F64(&sv));
    let kernel = &m["kernel"];
    let k = match kernel["type"].as_str() {
        Some("rbf") => {
            let gamma = kernel["gamma"].as_f64().context("svm: gamma")?;
            let d2 = squared_distances(g, x, &svs, &sv, f);
            let zero = g.init("zero", &[1], Data::F64(&[0.0]));
            let d2 = g.op("Max", &[&d2, &zero], vec![]);
            let scale = g.init("minus_gamma", &[1], Data::F64(&[-gamma]));
            let e = g.op("Mul", &[&d2, &scale], vec![]);
            g.op("Exp", &[&e], vec![])
        }
        Some("poly") => {
            let c = kernel["coef0"].as_f64().context("svm: coef0")?;
            let d = kernel["degree"].as_f64().context("svm: degree")?;
            let dot = dot_rows(g, x, &svs);
            let c = g.init("coef0", &[1], Data::F64(&[c]));
            let d = g.init("degree", &[1], Data::F64(&[d]));
            let base = g.op("Add", &[&dot, &c], vec![]);
            g.op("Pow", &[&base, &d], vec![])
        }
        Some("linear") => dot_rows(g, x, &svs),
        other => bail!("svm: kernel {other:?}"),
    };
    let coef = g.init("coef", &[s as i64], Data::F64(&coef));
    let sum = g.op("MatMul", &[&k, &coef], vec![]);
    let rho = g.init("rho", &[1], Data::F64(&[rho]));
    Ok(g.op("Sub", &[&sum, &rho], vec![]))
}

/// The class columns side by side (zeros for a class without a machine), each row divided by
/// its sum.
fn normalised(g: &mut Graph, columns: Vec<Option<String>>, axis1: &str) -> Result<String> {
    let any = columns
        .iter()
        .flatten()
        .next()
        .cloned()
        .context("svm: no class model")?;
    let zero = g.init("zero", &[1], Data::F64(&[0.0]));
    let absent = g.op("Mul", &[&any, &zero], vec![]);
    let parts: Vec<String> = columns
        .into_iter()
        .map(|c| c.unwrap_or_else(|| absent.clone()))
        .collect();
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let p = g.op("Concat", &refs, vec![Attr::Int("axis", 1)]);
    let total = g.op("ReduceSum", &[&p, axis1], vec![Attr::Int("keepdims", 1)]);
    let tiny = g.init("tiny", &[1], Data::F64(&[f64::MIN_POSITIVE]));
    let total = g.op("Max", &[&total, &tiny], vec![]);
    Ok(g.op("Div", &[&p, &total], vec![]))
}

/// One linfa-svm model's decision value `sum_s K(x, sv_s) alpha_s - rho` (N), with the
/// support vectors of the weights linfa keeps (|alpha| > 100 eps).
fn linfa_decision(g: &mut Graph, m: &Value, x: &str) -> Result<String> {
    let rho = m["rho"].as_f64().context("svm: rho")?;
    let plane = &m["sep_hyperplane"];
    let sum = if let Some(w) = plane.get("Linear") {
        let (_, w) = ndarray_data(w, "svm weights")?;
        let w = g.init("svm_w", &[w.len() as i64], Data::F64(&w));
        g.op("MatMul", &[x, &w], vec![])
    } else {
        let (dim, sv) = ndarray_data(&plane["WeightedCombination"], "support vectors")?;
        let alpha: Vec<f64> = (m["alpha"].as_array().context("svm: alpha")?.iter())
            .filter_map(Value::as_f64)
            .filter(|a| a.abs() > 100.0 * f64::EPSILON)
            .collect();
        let (s, f) = (dim[0], dim.get(1).copied().unwrap_or(0));
        if alpha.len() != s {
            bail!("svm: {} weights for {s} support vectors", alpha.len());
        }
        let svs = g.init("support_vectors", &[s as i64, f as i64], Data::F64(&sv));
        let kernel = &m["kernel_method"];
        let k = if let Some(eps) = kernel.get("Gaussian").and_then(Value::as_f64) {
            let d2 = squared_distances(g, x, &svs, &sv, f);
            let zero = g.init("zero", &[1], Data::F64(&[0.0]));
            let d2 = g.op("Max", &[&d2, &zero], vec![]);
            let scale = g.init("minus_inv_eps", &[1], Data::F64(&[-1.0 / eps]));
            let e = g.op("Mul", &[&d2, &scale], vec![]);
            g.op("Exp", &[&e], vec![])
        } else if let Some(p) = kernel.get("Polynomial").and_then(Value::as_array) {
            let dot = dot_rows(g, x, &svs);
            let c = p.first().and_then(Value::as_f64).context("svm: coef0")?;
            let d = p.get(1).and_then(Value::as_f64).context("svm: degree")?;
            let c = g.init("coef0", &[1], Data::F64(&[c]));
            let d = g.init("degree", &[1], Data::F64(&[d]));
            let base = g.op("Add", &[&dot, &c], vec![]);
            g.op("Pow", &[&base, &d], vec![])
        } else {
            dot_rows(g, x, &svs)
        };
        let alpha = g.init("alpha", &[s as i64], Data::F64(&alpha));
        g.op("MatMul", &[&k, &alpha], vec![])
    };
    let rho = g.init("rho", &[1], Data::F64(&[rho]));
    Ok(g.op("Sub", &[&sum, &rho], vec![]))
}

/// Algorithm 1 (linfa-svm): a regressor's decision value; a classifier's one-vs-rest Platt
/// probabilities (`1 / (1 + exp(a v + b))` in float, as linfa computes them), normalised over
/// the classes.
fn linfa_svm(g: &mut Graph, fitted: &Value, x: &str, task: Task, k: usize) -> Result<String> {
    if task == Task::Regression {
        return linfa_decision(g, &fitted["model"], x);
    }
    let models = fitted["models"].as_array().context("svm: models")?;
    let axis1 = g.init("axis", &[1], Data::I64(&[1]));
    let mut columns: Vec<Option<String>> = vec![None; k];
    for pair in models {
        let class = pair[0].as_u64().context("svm: class")? as usize;
        let m = &pair[1];
        let ab = m["probability_coeffs"]
            .as_array()
            .context("svm: Platt coefficients")?;
        let (a, b) = (ab[0].as_f64().unwrap_or(0.0), ab[1].as_f64().unwrap_or(0.0));
        let v = linfa_decision(g, m, x)?;
        let a = g.init("platt_a", &[1], Data::F64(&[-a]));
        let b = g.init("platt_b", &[1], Data::F64(&[-b]));
        let z = g.op("Mul", &[&v, &a], vec![]);
        let z = g.op("Add", &[&z, &b], vec![]);
        let z = g.op("Cast", &[&z], vec![Attr::Int("to", FLOAT)]);
        let p = g.op("Sigmoid", &[&z], vec![]);
        let p = g.op("Cast", &[&p], vec![Attr::Int("to", DOUBLE)]);
        if class < k {
            columns[class] = Some(g.op("Unsqueeze", &[&p, &axis1], vec![]));
        }
    }
    normalised(g, columns, &axis1)
}
