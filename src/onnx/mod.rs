//! ONNX export of a run's saved model, written as protobuf by hand (the handful of ONNX messages
//! needed here are smaller than a protobuf code generator and its build step).
//!
//! Every exported graph takes the run's input columns as `input` (double, N x F, in the order of
//! the `feature_names` metadata), applies the fitted preprocessing (missing values filled,
//! shift and scale) in double precision, then the model:
//! - decision trees and random forests: `ai.onnx.ml.TreeEnsembleRegressor` with double
//!   thresholds (one target per class for classification, averaged over trees);
//! - logistic regression: MatMul + Add + Softmax; linear (ridge) regression: MatMul + Add;
//! - Gaussian naive Bayes: each class's joint log-likelihood, Softmax; KNN: TopK over squared
//!   distances to the training rows, exact distances of the chosen ones, weighted votes or mean;
//!   SVM: kernel against the support vectors, then one-vs-rest Platt probabilities;
//! - voting and stacking ensembles: each member's graph, then their mean or the meta-learner's;
//! - the networks, in float like libtorch: their standardisation; MLP Gemm layers, batch norm
//!   (inference form) and activation; CNN Conv, pooling and a dense head; LSTM the ONNX LSTM
//!   (gates reordered from libtorch's), stacked and bidirectional as trained, and a dense head;
//!   then Softmax.
//!
//! Classifiers output `probabilities` (double, N x K) and `label` (N; the original class labels,
//! int64 when they are all whole numbers, else strings); regressors output `value` (double, N).

mod columns;
mod decision;
mod ensemble;
mod linear;
mod neighbours;
mod nn;
mod proto;
mod svm;
mod trees;

use crate::etl::{LabelMapping, Preprocessor};
use crate::models::Task;
use anyhow::{bail, Context, Result};
use linear::{linear, logistic};
use nn::network;
use proto::{value_info, Attr, Data, Graph, Pb, DOUBLE, INT64, STRING};
use serde_json::Value;
use trees::{lightgbm, trees, xgboost};

/// Kinds this module can export: those whose spec says `onnx`.
pub fn exportable_kinds() -> Vec<&'static str> {
    crate::models::kind_specs()
        .filter(|k| k.onnx)
        .map(|k| k.kind)
        .collect()
}

pub(super) fn ndarray_data(v: &Value, what: &str) -> Result<(Vec<usize>, Vec<f64>)> {
    let dim = v["dim"]
        .as_array()
        .with_context(|| format!("{what}: no dim"))?
        .iter()
        .map(|d| d.as_u64().unwrap_or(0) as usize)
        .collect();
    let data = v["data"]
        .as_array()
        .with_context(|| format!("{what}: no data"))?
        .iter()
        .map(|d| d.as_f64().unwrap_or(f64::NAN))
        .collect();
    Ok((dim, data))
}

/// What the exporter needs of a saved run.
pub struct Source<'a> {
    pub version: &'a str,
    pub config: &'a crate::models::ModelConfig,
    pub task: Task,
    pub labels: Option<&'a LabelMapping>,
    pub preprocessor: &'a Preprocessor,
    pub fitted: &'a Value,
    /// The type of each input column in the column layout, in the preprocessor's order; empty
    /// for double (numbers) and string (categories).
    pub column_types: &'a [ColumnType],
    /// The model's native files by extension: "safetensors" for the networks, "json" for
    /// XGBoost, "txt" for LightGBM.
    pub native: &'a std::collections::BTreeMap<String, Vec<u8>>,
}

/// The model's part of the graph, reading the preprocessed `x`: its output's name.
fn model_graph(g: &mut Graph, src: &Source, x: &str, f: i64) -> Result<String> {
    let kind = src.config.kind.as_str();
    let k = src.labels.map(|l| l.classes.len()).unwrap_or(0);
    if let Some((post, fitted)) = crate::models::post::saved(src.fitted)? {
        let y = model_graph(g, &Source { fitted, ..*src }, x, f)?;
        return Ok(decision::calibrate(g, &post.calibrators, &y, k));
    }
    Ok(match kind {
        "decision_tree" | "random_forest" => trees(g, src.fitted, x, src.task, k)?,
        "logistic_regression" => logistic(g, src.fitted, x, k)?,
        "linear" => linear(g, src.fitted, x)?,
        "naive_bayes" => neighbours::naive_bayes(g, src.fitted, x, k)?,
        "knn" => neighbours::knn(g, src.fitted, x, src.task, k)?,
        "svm" => svm::svm(g, src.fitted, x, src.task, k)?,
        "voting" | "stacking" => ensemble::ensemble(g, src, x, f, k)?,
        "lightgbm" => lightgbm(
            g,
            src.native
                .get("txt")
                .context("the run has no LightGBM model_tN.txt")?,
            x,
            src.task,
        )?,
        "xgboost" => xgboost(
            g,
            src.native
                .get("json")
                .context("the run has no XGBoost model_tN.json")?,
            x,
            src.task,
            k,
        )?,
        "mlp" | "cnn" | "lstm" => network(
            g,
            src.config,
            src.native
                .get("safetensors")
                .context("the run has no model_tN.safetensors")?,
            x,
            f,
            src.task,
        )?,
        other => bail!("{other} is marked exportable but has no ONNX writer"),
    })
}

/// `out` (N): the original label of each row's class in `probabilities` (N x K): the most
/// probable one, or with a two-class `threshold` the second where its probability reaches it.
/// Returns the label's element type (int64 when every label is a whole number, else string).
fn label_lookup(
    g: &mut Graph,
    labels: &LabelMapping,
    probabilities: &str,
    threshold: Option<f64>,
    out: &str,
) -> i64 {
    let k = labels.classes.len() as i64;
    let idx = match threshold {
        Some(t) if k == 2 => decision::thresholded(g, probabilities, t),
        _ => g.op(
            "ArgMax",
            &[probabilities],
            vec![Attr::Int("axis", 1), Attr::Int("keepdims", 0)],
        ),
    };
    let ints: Option<Vec<i64>> = labels.classes.iter().map(|c| c.parse().ok()).collect();
    let (table, elem) = match &ints {
        Some(v) => (g.init("classes", &[k], Data::I64(v)), INT64),
        None => (g.init("classes", &[k], Data::Str(&labels.classes)), STRING),
    };
    g.node_in(
        "",
        "Gather",
        &[&table, &idx],
        &[out],
        vec![Attr::Int("axis", 0)],
    );
    elem
}

/// The matrix layout's outputs from the model's `y`: `probabilities` and `label` for a
/// classifier, `value` for a regressor.
fn matrix_outputs(g: &mut Graph, src: &Source, y: &str) -> Vec<Pb> {
    match (src.task, src.labels) {
        (Task::Classification, Some(labels)) => {
            let k = labels.classes.len() as i64;
            g.node_in("", "Identity", &[y], &["probabilities"], vec![]);
            let elem = label_lookup(g, labels, "probabilities", threshold(src), "label");
            vec![
                value_info("label", elem, &[None]),
                value_info("probabilities", DOUBLE, &[None, Some(k)]),
            ]
        }
        _ => {
            let shape = g.init("shape", &[1], Data::I64(&[-1]));
            g.node_in("", "Reshape", &[y, &shape], &["value"], vec![]);
            vec![value_info("value", DOUBLE, &[None])]
        }
    }
}

/// The saved two-class threshold of the run's model, if it has one.
fn threshold(src: &Source) -> Option<f64> {
    crate::models::post::saved(src.fitted)
        .ok()
        .flatten()
        .and_then(|(post, _)| post.threshold)
}

/// The matrix layout's input: `input` (double, N x F, numeric columns only) with the fitted
/// preprocessing applied in double like the runner: (the value, or its fill if missing,
/// through its transform, - shift) / scale. Returns the model matrix's name and the input.
fn matrix_input(g: &mut Graph, src: &Source) -> Result<(String, Vec<Pb>)> {
    if !src.preprocessor.all_numeric() {
        bail!(
            "{} reads text columns (one-hot or ordinal encoded); ONNX export covers numeric inputs only: use --format native, or the run's MLflow model (runs:/<id>/model), which reads text columns",
            src.version
        );
    }
    let steps = src.preprocessor.steps();
    let f = steps.len();
    // One column at a time, as the column layout does: fill, transform, shift and scale.
    let columns: Vec<String> = if f == 1 {
        vec!["input".to_string()]
    } else {
        let names: Vec<String> = (0..f).map(|_| g.fresh("column")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let split = g.init("split", &[f as i64], Data::I64(&vec![1; f]));
        g.node_in(
            "",
            "Split",
            &["input", &split],
            &refs,
            vec![Attr::Int("axis", 1)],
        );
        names
    };
    let parts: Vec<String> = (steps.iter().zip(&columns))
        .map(|((_, step), column)| columns::numeric_column(g, column, step))
        .collect();
    let x = if parts.len() == 1 {
        parts[0].clone()
    } else {
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        g.op("Concat", &refs, vec![Attr::Int("axis", 1)])
    };
    Ok((
        x,
        vec![value_info("input", DOUBLE, &[None, Some(f as i64)])],
    ))
}

/// An input column's type in the column layout, as the training data held it (MLflow's
/// signature check refuses to turn a float column into an integer one, or back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Double,
    Long,
    Boolean,
    Text,
}

impl ColumnType {
    /// The MLflow signature's name of the type.
    pub fn mlflow(&self) -> &'static str {
        match self {
            ColumnType::Double => "double",
            ColumnType::Long => "long",
            ColumnType::Boolean => "boolean",
            ColumnType::Text => "string",
        }
    }
}

/// How a graph takes its inputs and gives its outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `runner export --format onnx`: one `input` (double, N x F, numeric columns only);
    /// `label` and `probabilities` (N x K), or `value`.
    Matrix,
    /// MLflow's pyfunc: one input per column and 1-D outputs (see [`columns`]).
    Columns,
}

/// The ONNX model of a saved run.
pub fn export(src: &Source, layout: Layout) -> Result<Vec<u8>> {
    let kind = src.config.kind.as_str();
    let exportable = exportable_kinds();
    if !exportable.contains(&kind) {
        bail!(
            "ONNX export covers {}; {} is a {kind} model: use --format native",
            crate::models::quoted_list(&exportable),
            src.version,
        );
    }
    let mut g = Graph::default();
    let (x, inputs) = match layout {
        Layout::Matrix => matrix_input(&mut g, src)?,
        Layout::Columns => columns::column_inputs(&mut g, src.preprocessor, src.column_types),
    };
    let f = src.preprocessor.output_names.len() as i64;
    let y = model_graph(&mut g, src, &x, f)?;
    let outputs = match layout {
        Layout::Matrix => matrix_outputs(&mut g, src, &y),
        Layout::Columns => columns::column_outputs(&mut g, src.labels, threshold(src), &y),
    };
    let mut graph = Pb::default();
    for n in &g.nodes {
        graph.msg(1, n);
    }
    graph.str(2, &format!("runner_{}", src.version));
    for i in &g.inits {
        graph.msg(5, i);
    }
    for i in &inputs {
        graph.msg(11, i);
    }
    for o in &outputs {
        graph.msg(12, o);
    }
    let mut model = Pb::default();
    model
        .int(1, 8)
        .str(2, "runner")
        .str(3, env!("CARGO_PKG_VERSION"))
        .msg(7, &graph);
    for (domain, version) in [("", 17), ("ai.onnx.ml", 3)] {
        let mut o = Pb::default();
        o.str(1, domain).int(2, version);
        model.msg(8, &o);
    }
    let names: Vec<String> = src.preprocessor.inputs().into_iter().map(|c| c.0).collect();
    for (key, value) in [
        ("runner.run", src.version.to_string()),
        ("runner.model_kind", kind.to_string()),
        ("feature_names", serde_json::to_string(&names)?),
        (
            "labels",
            serde_json::to_string(&src.labels.map(|l| &l.classes))?,
        ),
    ] {
        let mut e = Pb::default();
        e.str(1, key).str(2, &value);
        model.msg(14, &e);
    }
    Ok(model.0)
}
