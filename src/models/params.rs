//! Hyperparameters as declared by each model kind: their types, ranges and defaults, and the
//! check every raw value passes before any training starts.

use crate::types::Task;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A hyperparameter value as written in a sweep file and recorded with a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Str(s) => write!(f, "{s}"),
        }
    }
}

/// The type and allowed range of one hyperparameter.
#[derive(Debug, Clone, Copy)]
pub enum ParamType {
    Int {
        min: i64,
        max: i64,
    },
    Float {
        min: f64,
        max: f64,
    },
    Choice(&'static [&'static str]),
    Bool,
    /// Per-class weights by label, written in a sweep file as a table
    /// (`{ "3" = 2.0, "8" = 5.0 }`) and kept as "3=2,8=5" ("" for none).
    ClassWeights,
    /// How a two-class model's decision threshold is chosen: a rule of
    /// [`crate::calibrate::Rule`] ("f1", "precision>=0.9", ...) or a number in (0, 1).
    Threshold,
    /// Layer widths written as a string, e.g. "64,64" (or "" for none).
    Widths {
        max_layers: usize,
        max_width: usize,
    },
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Int { min, max } => write!(f, "integer in {min}..={max}"),
            ParamType::Float { min, max } => write!(f, "number in [{min}, {max}]"),
            ParamType::Choice(c) => write!(f, "one of {}", quoted_list(c)),
            ParamType::Bool => write!(f, "true or false"),
            ParamType::ClassWeights => write!(
                f,
                "a table of class = weight, such as {{ \"3\" = 2.0, \"8\" = 5.0 }} (weights above 0)"
            ),
            ParamType::Threshold => write!(f, "one of {}", crate::calibrate::RULES),
            ParamType::Widths { max_layers, max_width } => write!(
                f,
                "layer widths as a string such as \"64,32\" (at most {max_layers} layers of 1..={max_width})"
            ),
        }
    }
}

pub fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, Copy)]
pub enum Default_ {
    Int(i64),
    Float(f64),
    Str(&'static str),
    Bool(bool),
}

impl Default_ {
    pub fn value(self) -> ParamValue {
        match self {
            Default_::Int(i) => ParamValue::Int(i),
            Default_::Float(x) => ParamValue::Float(x),
            Default_::Str(s) => ParamValue::Str(s.to_string()),
            Default_::Bool(b) => ParamValue::Bool(b),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub default: Default_,
    pub help: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct KindSpec {
    pub kind: &'static str,
    pub tasks: &'static [Task],
    pub backend: &'static str,
    pub help: &'static str,
    pub params: &'static [ParamSpec],
    /// The cargo feature this kind needs, if any.
    pub feature: Option<&'static str>,
    /// Whether `runner export --format onnx` covers the kind.
    pub onnx: bool,
    /// The version of the kind's arithmetic that new runs get. A change that alters a fitted
    /// model bumps it and keeps the old path, so runs record the version they used and replay
    /// takes the same one.
    pub algorithm: u32,
    /// The algorithm version from which the kind trains on unscaled inputs (`etl.scale` is
    /// skipped): trees, whose splits scaling cannot change, and whose native files (XGBoost,
    /// LightGBM) then read raw columns. Earlier versions keep the scaling they were run with.
    pub unscaled_from: Option<u32>,
    /// What the steps of the kind's learning curve count: "round", "epoch", or "step" for kinds
    /// without one.
    pub curve_axis: &'static str,
}

impl KindSpec {
    /// Whether a config trained with `algorithm` reads unscaled inputs.
    pub fn unscaled(&self, algorithm: u32) -> bool {
        self.unscaled_from.is_some_and(|v| algorithm >= v)
    }

    /// Whether this build can train the kind.
    pub fn available(&self) -> bool {
        match self.feature {
            Some("xgboost") => cfg!(feature = "xgboost"),
            Some("lightgbm") => cfg!(feature = "lightgbm"),
            Some("torch") => cfg!(feature = "torch"),
            Some(_) => false,
            None => true,
        }
    }
}

pub(crate) const BOTH: &[Task] = &[Task::Classification, Task::Regression];
pub(crate) const CLF: &[Task] = &[Task::Classification];
pub(crate) const REG: &[Task] = &[Task::Regression];
pub(crate) const RESAMPLE: ParamSpec = ParamSpec {
    name: "resample",
    ty: ParamType::Choice(&["none", "over", "under", "smote"]),
    default: Default_::Str("none"),
    help: "resample each training fold (never the validation fold) to balance the classes: random over- or under-sampling, or SMOTE (classification only)",
};
pub(crate) const SMOTE_K: ParamSpec = ParamSpec {
    name: "smote_k",
    ty: ParamType::Int { min: 1, max: 100 },
    default: Default_::Int(5),
    help: "SMOTE: neighbours of the same class a new row may be drawn towards",
};
pub(crate) const CLASS_WEIGHTS: ParamSpec = ParamSpec {
    name: "class_weights",
    ty: ParamType::ClassWeights,
    default: Default_::Str(""),
    help: "per-class weights by label, e.g. { \"3\" = 2.0, \"8\" = 5.0 }; a class left out weighs 1 (classification only)",
};
pub(crate) const CLASS_WEIGHT: ParamSpec = ParamSpec {
    name: "class_weight",
    ty: ParamType::Choice(&["none", "balanced"]),
    default: Default_::Str("none"),
    help: "weight classes inversely to their frequency (classification only)",
};

pub(crate) const CALIBRATION: ParamSpec = ParamSpec {
    name: "calibration",
    ty: ParamType::Choice(&["none", "platt", "isotonic"]),
    default: Default_::Str("none"),
    help: "calibrate the class probabilities (Platt scaling or isotonic regression), fitted on out-of-fold predictions of the training rows (`tuning_folds`) and applied by predict and the exported models (classification only)",
};
pub(crate) const THRESHOLD: ParamSpec = ParamSpec {
    name: "threshold",
    ty: ParamType::Threshold,
    default: Default_::Str("none"),
    help: "two classes: the decision threshold on the second class's probability, chosen on out-of-fold predictions of the training rows for \"f1\", \"balanced_accuracy\", \"precision>=P\" or \"recall>=R\", or a number; used by predict and the exported models",
};
pub(crate) const TUNING_FOLDS: ParamSpec = ParamSpec {
    name: "tuning_folds",
    ty: ParamType::Int { min: 2, max: 20 },
    default: Default_::Int(3),
    help: "inner CV folds over the training rows whose out-of-fold predictions fit `calibration` and choose `threshold`",
};

/// Checks one value against its spec; returns the value normalised (ints accepted as floats).
pub fn check_value(
    spec: &ParamSpec,
    value: &ParamValue,
) -> std::result::Result<ParamValue, String> {
    let bad = || {
        format!(
            "`{}` must be {}, got {}",
            spec.name,
            spec.ty,
            value_repr(value)
        )
    };
    match (spec.ty, value) {
        (ParamType::Int { min, max }, ParamValue::Int(i)) => {
            if *i < min || *i > max {
                Err(bad())
            } else {
                Ok(value.clone())
            }
        }
        (ParamType::Float { .. }, ParamValue::Int(i)) => {
            check_value(spec, &ParamValue::Float(*i as f64)).map_err(|_| bad())
        }
        (ParamType::Float { min, max }, ParamValue::Float(x)) => {
            if !x.is_finite() || *x < min || *x > max {
                Err(bad())
            } else {
                Ok(value.clone())
            }
        }
        (ParamType::Choice(choices), ParamValue::Str(s)) => {
            if choices.contains(&s.as_str()) {
                Ok(value.clone())
            } else {
                Err(bad())
            }
        }
        (ParamType::Bool, ParamValue::Bool(_)) => Ok(value.clone()),
        (
            ParamType::Widths {
                max_layers,
                max_width,
            },
            ParamValue::Str(text),
        ) => {
            let widths = parse_widths(text).map_err(|_| bad())?;
            if widths.len() > max_layers || widths.iter().any(|w| *w == 0 || *w > max_width) {
                return Err(bad());
            }
            Ok(value.clone())
        }
        (ParamType::Threshold, ParamValue::Str(text)) => {
            crate::calibrate::Rule::parse(text).ok_or_else(bad)?;
            Ok(value.clone())
        }
        (ParamType::Threshold, ParamValue::Float(x)) => {
            check_value(spec, &ParamValue::Str(x.to_string())).map_err(|_| bad())
        }
        (ParamType::ClassWeights, ParamValue::Str(text)) => {
            parse_class_weights(text).map_err(|_| bad())?;
            Ok(value.clone())
        }
        _ => Err(bad()),
    }
}

/// "3=2,8=5" -> [("3", 2.0), ("8", 5.0)]; "" -> []. Every weight finite and above 0.
pub fn parse_class_weights(text: &str) -> std::result::Result<Vec<(String, f64)>, String> {
    (text.split(',').filter(|e| !e.trim().is_empty()))
        .map(|entry| {
            let (label, w) = entry
                .rsplit_once('=')
                .ok_or_else(|| format!("\"{entry}\" is not label=weight"))?;
            let w: f64 = w
                .trim()
                .parse()
                .map_err(|_| format!("\"{w}\" is not a number"))?;
            if !(w.is_finite() && w > 0.0) {
                return Err(format!("weight {w} of \"{label}\" must be above 0"));
            }
            Ok((label.trim().to_string(), w))
        })
        .collect()
}

/// "64, 32" -> [64, 32]; "" -> [].
pub fn parse_widths(text: &str) -> std::result::Result<Vec<usize>, std::num::ParseIntError> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::parse::<usize>)
        .collect()
}

fn value_repr(v: &ParamValue) -> String {
    match v {
        ParamValue::Str(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

pub fn default_value(p: &ParamSpec) -> ParamValue {
    p.default.value()
}
