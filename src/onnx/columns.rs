//! The column layout of a graph, the one runner's MLflow models use: one input per input
//! column, named as the column (N values: double, int64 or bool for numbers, as the training
//! data held them; string for categories), and 1-D outputs (`prediction`, and `proba_<class>`
//! for each class), which a pyfunc model returns as the columns of one DataFrame.

use super::proto::{value_info, Attr, Data, Graph, Pb, BOOL, DOUBLE, INT64, STRING};
use super::ColumnType;
use crate::etl::transform::LAMBDA_EPS;
use crate::etl::{ColumnStep, LabelMapping, Preprocessor, Transform};

/// Reads every input column and applies the fitted preprocessing (fill, shift and scale for
/// numbers; one-hot or ordinal codes for categories, an empty string counting as missing):
/// the model matrix's name and the graph's inputs.
pub(super) fn column_inputs(
    g: &mut Graph,
    p: &Preprocessor,
    types: &[ColumnType],
) -> (String, Vec<Pb>) {
    let steps = p.steps();
    let axes = g.init("axes", &[1], Data::I64(&[1]));
    let mut parts = Vec::new();
    let mut inputs = Vec::new();
    for (name, step) in steps {
        let elem = match (types.get(inputs.len()), step) {
            (Some(ColumnType::Long), _) => INT64,
            (Some(ColumnType::Boolean), _) => BOOL,
            (_, ColumnStep::Numeric { .. }) => DOUBLE,
            _ => STRING,
        };
        inputs.push(value_info(name, elem, &[None]));
        let mut column = g.op("Unsqueeze", &[name, &axes], vec![]);
        if elem == INT64 || elem == BOOL {
            column = g.op("Cast", &[&column], vec![Attr::Int("to", DOUBLE)]);
        }
        parts.push(match step {
            ColumnStep::Numeric { .. } => numeric_column(g, &column, step),
            ColumnStep::OneHot { fill, categories } => {
                let code = category_code(g, &column, fill, categories);
                let all: Vec<i64> = (0..categories.len() as i64).collect();
                let all = g.init("codes", &[all.len() as i64], Data::I64(&all));
                let hot = g.op("Equal", &[&code, &all], vec![]);
                g.op("Cast", &[&hot], vec![Attr::Int("to", DOUBLE)])
            }
            ColumnStep::Ordinal { fill, categories } => {
                let code = category_code(g, &column, fill, categories);
                g.op("Cast", &[&code], vec![Attr::Int("to", DOUBLE)])
            }
        });
    }
    let x = if parts.len() == 1 {
        parts.remove(0)
    } else {
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        g.op("Concat", &refs, vec![Attr::Int("axis", 1)])
    };
    (x, inputs)
}

/// A numeric column (N x 1) as the model sees it: a missing value takes the fill, then the
/// transform, then (x - shift) / scale, in double as the runner computes it.
pub(super) fn numeric_column(g: &mut Graph, column: &str, step: &ColumnStep) -> String {
    let ColumnStep::Numeric {
        fill,
        shift,
        scale,
        transform,
    } = step
    else {
        return column.to_string();
    };
    let fill = g.init("fill", &[1], Data::F64(&[*fill]));
    let shift = g.init("shift", &[1], Data::F64(&[*shift]));
    let scale = g.init("scale", &[1], Data::F64(&[*scale]));
    let nan = g.op("IsNaN", &[column], vec![]);
    let x = g.op("Where", &[&nan, &fill, column], vec![]);
    let x = transformed(g, &x, transform);
    let x = g.op("Sub", &[&x, &shift], vec![]);
    g.op("Div", &[&x, &scale], vec![])
}

/// `x` through a fitted transform: log1p, sqrt, or Yeo-Johnson's two branches by sign.
fn transformed(g: &mut Graph, x: &str, t: &Transform) -> String {
    let one = g.init("one", &[1], Data::F64(&[1.0]));
    match *t {
        Transform::None => x.to_string(),
        Transform::Log1p => {
            let x1 = g.op("Add", &[x, &one], vec![]);
            g.op("Log", &[&x1], vec![])
        }
        Transform::Sqrt => g.op("Sqrt", &[x], vec![]),
        Transform::YeoJohnson { lambda } => {
            // x >= 0: ((x + 1)^l - 1) / l, or ln(x + 1) at l = 0.
            let up = g.op("Add", &[x, &one], vec![]);
            let pos = power_branch(g, &up, &one, lambda);
            // x < 0: -((1 - x)^(2 - l) - 1) / (2 - l), or -ln(1 - x) at l = 2.
            let down = g.op("Sub", &[&one, x], vec![]);
            let neg = power_branch(g, &down, &one, 2.0 - lambda);
            let neg = g.op("Neg", &[&neg], vec![]);
            let zero = g.init("zero", &[1], Data::F64(&[0.0]));
            let sign = g.op("GreaterOrEqual", &[x, &zero], vec![]);
            g.op("Where", &[&sign, &pos, &neg], vec![])
        }
    }
}

/// `(base^p - 1) / p`, or `ln(base)` when p is 0.
fn power_branch(g: &mut Graph, base: &str, one: &str, p: f64) -> String {
    if p.abs() < LAMBDA_EPS {
        return g.op("Log", &[base], vec![]);
    }
    let pw = g.init("power", &[1], Data::F64(&[p]));
    let raised = g.op("Pow", &[base, &pw], vec![]);
    let less = g.op("Sub", &[&raised, one], vec![]);
    g.op("Div", &[&less, &pw], vec![])
}

/// Each value's index among the sorted `categories` (int64, -1 when unseen); a missing value
/// (an empty string) takes the fill category's.
fn category_code(g: &mut Graph, column: &str, fill: &str, categories: &[String]) -> String {
    let mut keys = categories.to_vec();
    let mut codes: Vec<i64> = (0..categories.len() as i64).collect();
    if !categories.iter().any(|c| c.is_empty()) {
        keys.push(String::new());
        codes.push(
            categories
                .iter()
                .position(|c| c == fill)
                .map_or(-1, |i| i as i64),
        );
    }
    let out = g.fresh("code");
    g.node_in(
        "ai.onnx.ml",
        "LabelEncoder",
        &[column],
        &[&out],
        vec![
            Attr::Strs("keys_strings", keys),
            Attr::Ints("values_int64s", codes),
            Attr::Int("default_int64", -1),
        ],
    );
    out
}

/// The 1-D outputs from the model's `y`: `prediction` (the original label, or the value) and,
/// for a classifier, `proba_<class>` per class.
pub(super) fn column_outputs(
    g: &mut Graph,
    labels: Option<&LabelMapping>,
    threshold: Option<f64>,
    y: &str,
) -> Vec<Pb> {
    let Some(labels) = labels else {
        let shape = g.init("shape", &[1], Data::I64(&[-1]));
        g.node_in("", "Reshape", &[y, &shape], &["prediction"], vec![]);
        return vec![value_info("prediction", DOUBLE, &[None])];
    };
    let elem = super::label_lookup(g, labels, y, threshold, "prediction");
    let mut outputs = vec![value_info("prediction", elem, &[None])];
    for (i, class) in labels.classes.iter().enumerate() {
        let index = g.init("class", &[], Data::I64(&[i as i64]));
        let name = format!("proba_{class}");
        g.node_in(
            "",
            "Gather",
            &[y, &index],
            &[&name],
            vec![Attr::Int("axis", 1)],
        );
        outputs.push(value_info(&name, DOUBLE, &[None]));
    }
    outputs
}
