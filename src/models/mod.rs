//! Every model kind behind one trait: hyperparameters are checked against a registry before any
//! training starts, `fit` turns a checked config into a fitted model, and the fitted model
//! predicts (labels or values, and class probabilities where it can) and saves itself.

mod classical;
mod ensemble;
#[cfg(any(feature = "xgboost", feature = "lightgbm"))]
mod gbm;
#[cfg(feature = "torch")]
mod nn;
mod tree;

use anyhow::{bail, Result};
use ndarray::{Array2, ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub use crate::types::Task;

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
    fn value(self) -> ParamValue {
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
}

impl KindSpec {
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

const BOTH: &[Task] = &[Task::Classification, Task::Regression];
const CLF: &[Task] = &[Task::Classification];
const REG: &[Task] = &[Task::Regression];
const CLASS_WEIGHT: ParamSpec = ParamSpec {
    name: "class_weight",
    ty: ParamType::Choice(&["none", "balanced"]),
    default: Default_::Str("none"),
    help: "weight classes inversely to their frequency (classification only)",
};

const NN_TRAINING: [ParamSpec; 14] = [
    CLASS_WEIGHT,
    ParamSpec {
        name: "optimizer",
        ty: ParamType::Choice(&["adam", "adamw", "sgd"]),
        default: Default_::Str("adam"),
        help: "optimiser",
    },
    ParamSpec {
        name: "learning_rate",
        ty: ParamType::Float {
            min: 1e-7,
            max: 10.0,
        },
        default: Default_::Float(1e-3),
        help: "step size",
    },
    ParamSpec {
        name: "weight_decay",
        ty: ParamType::Float { min: 0.0, max: 1.0 },
        default: Default_::Float(0.0),
        help: "L2 weight decay",
    },
    ParamSpec {
        name: "momentum",
        ty: ParamType::Float {
            min: 0.0,
            max: 0.999,
        },
        default: Default_::Float(0.9),
        help: "SGD momentum",
    },
    ParamSpec {
        name: "batch_size",
        ty: ParamType::Int {
            min: 1,
            max: 1_000_000,
        },
        default: Default_::Int(64),
        help: "rows per step",
    },
    ParamSpec {
        name: "epochs",
        ty: ParamType::Int {
            min: 1,
            max: 100_000,
        },
        default: Default_::Int(100),
        help: "passes over the training rows",
    },
    ParamSpec {
        name: "patience",
        ty: ParamType::Int {
            min: 0,
            max: 100_000,
        },
        default: Default_::Int(0),
        help: "early stopping: epochs without a better inner validation loss (0 = off)",
    },
    ParamSpec {
        name: "validation_fraction",
        ty: ParamType::Float {
            min: 0.01,
            max: 0.5,
        },
        default: Default_::Float(0.1),
        help: "share of training rows held out for early stopping",
    },
    ParamSpec {
        name: "activation",
        ty: ParamType::Choice(&[
            "relu",
            "gelu",
            "tanh",
            "leaky_relu",
            "silu",
            "elu",
            "sigmoid",
        ]),
        default: Default_::Str("relu"),
        help: "activation after each hidden layer",
    },
    ParamSpec {
        name: "dropout",
        ty: ParamType::Float {
            min: 0.0,
            max: 0.95,
        },
        default: Default_::Float(0.0),
        help: "dropout after each hidden layer",
    },
    ParamSpec {
        name: "batch_norm",
        ty: ParamType::Bool,
        default: Default_::Bool(false),
        help: "batch normalisation in hidden layers",
    },
    ParamSpec {
        name: "device",
        ty: ParamType::Choice(&["cpu", "cuda", "auto"]),
        default: Default_::Str("cpu"),
        help: "where to train",
    },
    ParamSpec {
        name: "threads",
        ty: ParamType::Int { min: 0, max: 256 },
        default: Default_::Int(0),
        help: "intra-op threads (0 = one)",
    },
];

const fn nn_params<const N: usize>(own: [ParamSpec; N]) -> [ParamSpec; N] {
    own
}

/// Every model kind this build knows, with its hyperparameters.
pub const KINDS: &[KindSpec] = &[
    KindSpec {
        kind: "decision_tree",
        tasks: BOTH,
        backend: "runner (CART; linfa-trees has no regression trees and breaks ties by HashMap order)",
        help: "CART decision tree",
        feature: None,
        params: &[
            ParamSpec { name: "max_depth", ty: ParamType::Int { min: 0, max: 1000 }, default: Default_::Int(10), help: "maximum depth (0 = unlimited)" },
            ParamSpec { name: "min_samples_split", ty: ParamType::Int { min: 2, max: 1_000_000 }, default: Default_::Int(2), help: "rows a node needs before it may split" },
            ParamSpec { name: "min_samples_leaf", ty: ParamType::Int { min: 1, max: 1_000_000 }, default: Default_::Int(1), help: "rows each child must keep" },
            ParamSpec { name: "criterion", ty: ParamType::Choice(&["gini", "entropy"]), default: Default_::Str("gini"), help: "split quality for classification (regression uses squared error)" },
            ParamSpec { name: "max_features", ty: ParamType::Choice(&["all", "sqrt", "log2", "third"]), default: Default_::Str("all"), help: "features tried at each split" },
            CLASS_WEIGHT,
        ],
    },
    KindSpec {
        kind: "random_forest",
        tasks: BOTH,
        backend: "runner (bagged CART; linfa-ensemble is classification only and not reproducible)",
        help: "random forest of CART trees with bootstrap samples and per-split feature sampling",
        feature: None,
        params: &[
            ParamSpec { name: "n_trees", ty: ParamType::Int { min: 1, max: 5000 }, default: Default_::Int(100), help: "number of trees" },
            ParamSpec { name: "max_depth", ty: ParamType::Int { min: 0, max: 1000 }, default: Default_::Int(0), help: "maximum depth (0 = unlimited)" },
            ParamSpec { name: "min_samples_split", ty: ParamType::Int { min: 2, max: 1_000_000 }, default: Default_::Int(2), help: "rows a node needs before it may split" },
            ParamSpec { name: "min_samples_leaf", ty: ParamType::Int { min: 1, max: 1_000_000 }, default: Default_::Int(1), help: "rows each child must keep" },
            ParamSpec { name: "criterion", ty: ParamType::Choice(&["gini", "entropy"]), default: Default_::Str("gini"), help: "split quality for classification" },
            ParamSpec { name: "max_features", ty: ParamType::Choice(&["all", "sqrt", "log2", "third"]), default: Default_::Str("sqrt"), help: "features tried at each split" },
            ParamSpec { name: "bootstrap", ty: ParamType::Bool, default: Default_::Bool(true), help: "draw each tree's rows with replacement" },
            ParamSpec { name: "threads", ty: ParamType::Int { min: 0, max: 256 }, default: Default_::Int(0), help: "threads for tree building (0 = the sweep's per-config share)" },
            CLASS_WEIGHT,
        ],
    },
    KindSpec {
        kind: "logistic_regression",
        tasks: CLF,
        backend: "linfa-logistic",
        help: "multinomial logistic regression with L2 penalty",
        feature: None,
        params: &[
            ParamSpec { name: "alpha", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(1.0), help: "L2 penalty" },
            ParamSpec { name: "max_iterations", ty: ParamType::Int { min: 1, max: 100_000 }, default: Default_::Int(200), help: "optimiser iterations" },
            ParamSpec { name: "gradient_tolerance", ty: ParamType::Float { min: 1e-12, max: 1.0 }, default: Default_::Float(1e-4), help: "stop when the gradient norm falls below this" },
        ],
    },
    KindSpec {
        kind: "svm",
        tasks: BOTH,
        backend: "linfa-svm (one-vs-rest with Platt scaling for several classes; epsilon-SVR for regression)",
        help: "support vector machine",
        feature: None,
        params: &[
            ParamSpec { name: "kernel", ty: ParamType::Choice(&["rbf", "linear", "poly"]), default: Default_::Str("rbf"), help: "kernel function" },
            ParamSpec { name: "c", ty: ParamType::Float { min: 1e-6, max: 1e6 }, default: Default_::Float(1.0), help: "regularisation: larger fits the training data harder" },
            ParamSpec { name: "gamma", ty: ParamType::Float { min: 1e-9, max: 1e6 }, default: Default_::Float(0.1), help: "RBF width: k(x, y) = exp(-gamma |x - y|^2)" },
            ParamSpec { name: "degree", ty: ParamType::Int { min: 1, max: 10 }, default: Default_::Int(3), help: "polynomial kernel degree" },
            ParamSpec { name: "coef0", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(1.0), help: "polynomial kernel constant" },
            ParamSpec { name: "epsilon", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(0.1), help: "epsilon-insensitive tube (regression)" },
            ParamSpec { name: "tolerance", ty: ParamType::Float { min: 1e-12, max: 1.0 }, default: Default_::Float(1e-3), help: "SMO stopping tolerance" },
            CLASS_WEIGHT,
        ],
    },
    KindSpec {
        kind: "knn",
        tasks: BOTH,
        backend: "linfa-nn (neighbour index) + runner (vote / average)",
        help: "k nearest neighbours",
        feature: None,
        params: &[
            ParamSpec { name: "k", ty: ParamType::Int { min: 1, max: 10_000 }, default: Default_::Int(5), help: "neighbours" },
            ParamSpec { name: "weights", ty: ParamType::Choice(&["uniform", "distance"]), default: Default_::Str("uniform"), help: "vote weighting" },
            ParamSpec { name: "algorithm", ty: ParamType::Choice(&["kdtree", "balltree", "linear"]), default: Default_::Str("kdtree"), help: "neighbour search structure" },
        ],
    },
    KindSpec {
        kind: "naive_bayes",
        tasks: CLF,
        backend: "linfa-bayes",
        help: "Gaussian naive Bayes",
        feature: None,
        params: &[ParamSpec { name: "var_smoothing", ty: ParamType::Float { min: 0.0, max: 1.0 }, default: Default_::Float(1e-9), help: "share of the largest variance added to all variances" }],
    },
    KindSpec {
        kind: "linear",
        tasks: REG,
        backend: "runner (closed-form ridge, Cholesky)",
        help: "linear least squares with optional ridge penalty",
        feature: None,
        params: &[
            ParamSpec { name: "alpha", ty: ParamType::Float { min: 0.0, max: 1e9 }, default: Default_::Float(0.0), help: "ridge (L2) penalty; 0 = ordinary least squares" },
            ParamSpec { name: "fit_intercept", ty: ParamType::Bool, default: Default_::Bool(true), help: "learn an intercept" },
        ],
    },
    KindSpec {
        kind: "xgboost",
        tasks: BOTH,
        backend: "XGBoost 3.4 (crate xgb, libxgboost from the PyPI wheel); feature `xgboost`",
        help: "gradient-boosted trees (XGBoost)",
        feature: Some("xgboost"),
        params: &[
            ParamSpec { name: "n_rounds", ty: ParamType::Int { min: 1, max: 100_000 }, default: Default_::Int(100), help: "boosting rounds" },
            ParamSpec { name: "learning_rate", ty: ParamType::Float { min: 1e-6, max: 1.0 }, default: Default_::Float(0.3), help: "shrinkage (eta)" },
            ParamSpec { name: "max_depth", ty: ParamType::Int { min: 0, max: 64 }, default: Default_::Int(6), help: "tree depth (0 = unlimited)" },
            ParamSpec { name: "min_child_weight", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(1.0), help: "minimum hessian sum in a child" },
            ParamSpec { name: "subsample", ty: ParamType::Float { min: 0.01, max: 1.0 }, default: Default_::Float(1.0), help: "row share drawn per round" },
            ParamSpec { name: "colsample_bytree", ty: ParamType::Float { min: 0.01, max: 1.0 }, default: Default_::Float(1.0), help: "feature share per tree" },
            ParamSpec { name: "reg_alpha", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(0.0), help: "L1 penalty on leaf weights" },
            ParamSpec { name: "reg_lambda", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(1.0), help: "L2 penalty on leaf weights" },
            ParamSpec { name: "scale_pos_weight", ty: ParamType::Float { min: 1e-6, max: 1e6 }, default: Default_::Float(1.0), help: "weight of the positive class (binary)" },
            ParamSpec { name: "early_stopping_rounds", ty: ParamType::Int { min: 0, max: 100_000 }, default: Default_::Int(0), help: "stop when the inner validation loss has not improved for this many rounds (0 = off)" },
            ParamSpec { name: "validation_fraction", ty: ParamType::Float { min: 0.01, max: 0.5 }, default: Default_::Float(0.1), help: "share of training rows held out for early stopping" },
            ParamSpec { name: "tree_method", ty: ParamType::Choice(&["hist", "exact", "approx"]), default: Default_::Str("hist"), help: "split finding" },
            ParamSpec { name: "threads", ty: ParamType::Int { min: 0, max: 256 }, default: Default_::Int(0), help: "threads (0 = the sweep's per-config share)" },
            CLASS_WEIGHT,
        ],
    },
    KindSpec {
        kind: "lightgbm",
        tasks: BOTH,
        backend: "LightGBM 4.7 (crate lightgbm3, built from source); feature `lightgbm`",
        help: "gradient-boosted trees (LightGBM, leaf-wise)",
        feature: Some("lightgbm"),
        params: &[
            ParamSpec { name: "n_rounds", ty: ParamType::Int { min: 1, max: 100_000 }, default: Default_::Int(100), help: "boosting rounds" },
            ParamSpec { name: "learning_rate", ty: ParamType::Float { min: 1e-6, max: 1.0 }, default: Default_::Float(0.1), help: "shrinkage" },
            ParamSpec { name: "num_leaves", ty: ParamType::Int { min: 2, max: 131_072 }, default: Default_::Int(31), help: "leaves per tree" },
            ParamSpec { name: "max_depth", ty: ParamType::Int { min: 0, max: 64 }, default: Default_::Int(0), help: "tree depth (0 = unlimited)" },
            ParamSpec { name: "min_child_weight", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(1e-3), help: "minimum hessian sum in a leaf" },
            ParamSpec { name: "min_data_in_leaf", ty: ParamType::Int { min: 1, max: 1_000_000 }, default: Default_::Int(20), help: "minimum rows in a leaf" },
            ParamSpec { name: "subsample", ty: ParamType::Float { min: 0.01, max: 1.0 }, default: Default_::Float(1.0), help: "row share per round (bagging)" },
            ParamSpec { name: "colsample_bytree", ty: ParamType::Float { min: 0.01, max: 1.0 }, default: Default_::Float(1.0), help: "feature share per tree" },
            ParamSpec { name: "reg_alpha", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(0.0), help: "L1 penalty" },
            ParamSpec { name: "reg_lambda", ty: ParamType::Float { min: 0.0, max: 1e6 }, default: Default_::Float(0.0), help: "L2 penalty" },
            ParamSpec { name: "scale_pos_weight", ty: ParamType::Float { min: 1e-6, max: 1e6 }, default: Default_::Float(1.0), help: "weight of the positive class (binary)" },
            ParamSpec { name: "early_stopping_rounds", ty: ParamType::Int { min: 0, max: 100_000 }, default: Default_::Int(0), help: "stop when the inner validation loss has not improved for this many rounds (0 = off)" },
            ParamSpec { name: "validation_fraction", ty: ParamType::Float { min: 0.01, max: 0.5 }, default: Default_::Float(0.1), help: "share of training rows held out for early stopping" },
            ParamSpec { name: "threads", ty: ParamType::Int { min: 0, max: 256 }, default: Default_::Int(0), help: "threads (0 = the sweep's per-config share)" },
            CLASS_WEIGHT,
        ],
    },
    KindSpec {
        kind: "mlp",
        tasks: BOTH,
        backend: "libtorch 2.13 (crate tch); feature `torch`",
        help: "multilayer perceptron",
        feature: Some("torch"),
        params: &MLP_PARAMS,
    },
    KindSpec {
        kind: "cnn",
        tasks: BOTH,
        backend: "libtorch 2.13 (crate tch); feature `torch`",
        help: "1-D convolutions over the feature vector, then dense layers",
        feature: Some("torch"),
        params: &CNN_PARAMS,
    },
    KindSpec {
        kind: "lstm",
        tasks: BOTH,
        backend: "libtorch 2.13 (crate tch); feature `torch`",
        help: "LSTM reading the features as a sequence, then a dense head",
        feature: Some("torch"),
        params: &LSTM_PARAMS,
    },
    KindSpec {
        kind: "voting",
        tasks: BOTH,
        backend: "runner",
        help: "averages its `members` (names of configs in the sweeps, or earlier runs tN): soft voting averages class probabilities, hard voting counts predicted classes; regression averages values",
        feature: None,
        params: &[
            ParamSpec { name: "voting", ty: ParamType::Choice(&["soft", "hard"]), default: Default_::Str("soft"), help: "classification: average probabilities (soft) or count votes (hard)" },
        ],
    },
    KindSpec {
        kind: "stacking",
        tasks: BOTH,
        backend: "runner",
        help: "a meta-learner trained on out-of-fold predictions of its `members` (inner CV within each training set), members refitted on all training rows",
        feature: None,
        params: &[
            ParamSpec { name: "meta", ty: ParamType::Choice(&["auto", "logistic_regression", "linear", "random_forest"]), default: Default_::Str("auto"), help: "meta-learner; auto = logistic_regression for classes, linear for regression" },
            ParamSpec { name: "inner_folds", ty: ParamType::Int { min: 2, max: 20 }, default: Default_::Int(5), help: "inner CV folds that produce the out-of-fold member predictions" },
            ParamSpec { name: "passthrough", ty: ParamType::Bool, default: Default_::Bool(false), help: "also give the meta-learner the input features" },
        ],
    },
];

/// Kinds that combine other configs (`members`).
pub fn is_ensemble(kind: &str) -> bool {
    kind == "voting" || kind == "stacking"
}

const fn concat<const A: usize, const B: usize, const C: usize>(
    a: [ParamSpec; A],
    b: [ParamSpec; B],
) -> [ParamSpec; C] {
    let mut out = [a[0]; C];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < C {
        out[i] = b[i - A];
        i += 1;
    }
    out
}

const MLP_PARAMS: [ParamSpec; 15] = concat(
    nn_params([ParamSpec {
        name: "hidden",
        ty: ParamType::Widths {
            max_layers: 16,
            max_width: 65_536,
        },
        default: Default_::Str("64,64"),
        help: "hidden layer widths",
    }]),
    NN_TRAINING,
);
const CNN_PARAMS: [ParamSpec; 19] = concat(
    [
        ParamSpec {
            name: "channels",
            ty: ParamType::Int { min: 1, max: 4096 },
            default: Default_::Int(16),
            help: "channels per convolution",
        },
        ParamSpec {
            name: "kernel_size",
            ty: ParamType::Int { min: 1, max: 64 },
            default: Default_::Int(3),
            help: "convolution width",
        },
        ParamSpec {
            name: "conv_layers",
            ty: ParamType::Int { min: 1, max: 8 },
            default: Default_::Int(2),
            help: "convolution layers",
        },
        ParamSpec {
            name: "pool",
            ty: ParamType::Choice(&["max", "avg", "none"]),
            default: Default_::Str("max"),
            help: "pooling (width 2) after each convolution",
        },
        ParamSpec {
            name: "hidden",
            ty: ParamType::Widths {
                max_layers: 16,
                max_width: 65_536,
            },
            default: Default_::Str("64"),
            help: "dense layer widths after the convolutions",
        },
    ],
    NN_TRAINING,
);
const LSTM_PARAMS: [ParamSpec; 18] = concat(
    [
        ParamSpec {
            name: "hidden_size",
            ty: ParamType::Int { min: 1, max: 4096 },
            default: Default_::Int(32),
            help: "LSTM state size",
        },
        ParamSpec {
            name: "num_layers",
            ty: ParamType::Int { min: 1, max: 8 },
            default: Default_::Int(1),
            help: "stacked LSTM layers",
        },
        ParamSpec {
            name: "bidirectional",
            ty: ParamType::Bool,
            default: Default_::Bool(false),
            help: "read the features both ways",
        },
        ParamSpec {
            name: "hidden",
            ty: ParamType::Widths {
                max_layers: 16,
                max_width: 65_536,
            },
            default: Default_::Str("32"),
            help: "dense head widths",
        },
    ],
    NN_TRAINING,
);

pub fn kind_spec(kind: &str) -> Option<&'static KindSpec> {
    KINDS.iter().find(|k| k.kind == kind)
}

pub fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.kind).collect()
}

/// A model config with every hyperparameter resolved (defaults made explicit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub name: String,
    pub kind: String,
    pub params: BTreeMap<String, ParamValue>,
    /// Ensembles: the member configs, resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<ModelConfig>,
    /// Ensemble members taken from an earlier run: its version, e.g. "t3".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_run: Option<String>,
}

impl ModelConfig {
    /// A config of `kind` with every hyperparameter at its default.
    pub fn with_defaults(kind: &str, name: &str) -> ModelConfig {
        let spec = kind_spec(kind).expect("a known kind");
        ModelConfig {
            name: name.to_string(),
            kind: kind.to_string(),
            params: spec
                .params
                .iter()
                .map(|p| (p.name.to_string(), p.default.value()))
                .collect(),
            ..Default::default()
        }
    }

    pub fn int(&self, key: &str) -> i64 {
        match self.params.get(key) {
            Some(ParamValue::Int(i)) => *i,
            Some(ParamValue::Float(x)) => *x as i64,
            other => panic!("model param {key} is {other:?}, validation should have caught it"),
        }
    }
    pub fn float(&self, key: &str) -> f64 {
        match self.params.get(key) {
            Some(ParamValue::Float(x)) => *x,
            Some(ParamValue::Int(i)) => *i as f64,
            other => panic!("model param {key} is {other:?}, validation should have caught it"),
        }
    }
    pub fn str(&self, key: &str) -> &str {
        match self.params.get(key) {
            Some(ParamValue::Str(s)) => s,
            other => panic!("model param {key} is {other:?}, validation should have caught it"),
        }
    }
    pub fn bool(&self, key: &str) -> bool {
        match self.params.get(key) {
            Some(ParamValue::Bool(b)) => *b,
            other => panic!("model param {key} is {other:?}, validation should have caught it"),
        }
    }
}

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
        _ => Err(bad()),
    }
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

/// The training rows a model sees: features (already preprocessed), and targets as class
/// indexes 0..K-1 (classification) or values (regression).
pub struct TrainSet<'a> {
    pub x: ArrayView2<'a, f64>,
    pub y: ArrayView1<'a, f64>,
    pub task: Task,
    pub n_classes: usize,
}

impl TrainSet<'_> {
    pub fn class_labels(&self) -> Vec<usize> {
        self.y.iter().map(|v| *v as usize).collect()
    }

    /// Per-row weights for `class_weight = "balanced"`: n / (K_present * count(class)).
    pub fn balanced_weights(&self) -> Vec<f64> {
        let mut counts = vec![0usize; self.n_classes];
        for c in self.class_labels() {
            counts[c] += 1;
        }
        let present = counts.iter().filter(|c| **c > 0).count().max(1);
        let n = self.y.len() as f64;
        self.class_labels()
            .iter()
            .map(|c| n / (present as f64 * counts[*c] as f64))
            .collect()
    }
}

/// What a fitted model returns: one value per row (a class index for classification) and, for
/// classifiers that can, an n x K matrix of class probabilities.
pub struct Prediction {
    pub values: Vec<f64>,
    pub proba: Option<Array2<f64>>,
}

/// One point of a learning curve: (round, metric, value, when it was measured in ms since the
/// epoch).
pub type CurvePoint = (i64, String, f64, i64);

/// Receives each round's points while training runs (a tracker, for live charts).
pub type CurveListener<'a> = Box<dyn Fn(&[CurvePoint]) -> anyhow::Result<()> + Send + Sync + 'a>;

/// A learning curve being recorded: every point, and (with a listener) each round's points sent
/// on as soon as the next round starts, so a tracker shows training as it happens. A listener's
/// first error is kept for [`Curve::finish`] to report; training never waits on it twice.
#[derive(Default)]
pub struct Curve<'a> {
    points: std::sync::Mutex<Vec<CurvePoint>>,
    /// Points of the round in progress, not yet sent.
    pending: std::sync::Mutex<Vec<CurvePoint>>,
    listener: Option<CurveListener<'a>>,
    failed: std::sync::Mutex<Option<anyhow::Error>>,
}

fn unpoisoned<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<'a> Curve<'a> {
    pub fn streaming(listener: CurveListener<'a>) -> Curve<'a> {
        Curve {
            listener: Some(listener),
            ..Curve::default()
        }
    }

    fn record(&self, round: i64, metric: &str, value: f64) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let point = (round, metric.to_string(), value, now_ms);
        unpoisoned(&self.points).push(point.clone());
        let mut pending = unpoisoned(&self.pending);
        if pending.first().is_some_and(|p| p.0 != round) {
            self.send(&std::mem::take(&mut *pending));
        }
        pending.push(point);
    }

    fn send(&self, batch: &[CurvePoint]) {
        let Some(listener) = &self.listener else {
            return;
        };
        let mut failed = unpoisoned(&self.failed);
        if failed.is_none() && !batch.is_empty() {
            if let Err(e) = listener(batch) {
                *failed = Some(e);
            }
        }
    }

    /// Sends what is still pending and returns every point, or the listener's first error.
    pub fn finish(self) -> anyhow::Result<Vec<CurvePoint>> {
        let last = std::mem::take(&mut *unpoisoned(&self.pending));
        self.send(&last);
        if let Some(e) = unpoisoned(&self.failed).take() {
            return Err(e);
        }
        Ok(std::mem::take(&mut *unpoisoned(&self.points)))
    }
}

/// Per-call settings that are not hyperparameters: the seed, the thread budget, and for
/// iterative models the rows to score each round and where the learning curve goes.
pub struct FitContext<'a> {
    pub seed: u64,
    pub threads: usize,
    /// Scored after every round for the learning curve (never used to choose anything).
    pub eval: Option<(ArrayView2<'a, f64>, ArrayView1<'a, f64>)>,
    /// (round, metric, value) per round, e.g. (12, "valid_mlogloss", 0.93).
    pub curve: Option<&'a Curve<'a>>,
}

impl FitContext<'_> {
    pub fn new(seed: u64, threads: usize) -> FitContext<'static> {
        FitContext {
            seed,
            threads,
            eval: None,
            curve: None,
        }
    }

    pub fn record(&self, round: i64, metric: &str, value: f64) {
        if let Some(c) = self.curve {
            c.record(round, metric, value);
        }
    }
}

pub trait FittedModel: Send + Sync {
    fn predict(&self, x: ArrayView2<f64>) -> Prediction;
    /// The fitted state, for the run's model artifact.
    fn to_json(&self) -> Result<serde_json::Value>;
    /// The model in its library's own formats (extension, bytes), where it has them.
    fn native(&self) -> Vec<(&'static str, Vec<u8>)> {
        Vec::new()
    }
    /// Importance of each input feature, by kind ("impurity", "gain", "split"), where the
    /// backend provides it.
    fn feature_importance(&self) -> Vec<(&'static str, Vec<f64>)> {
        Vec::new()
    }
}

/// Fits a checked model config on a training set.
pub fn fit(cfg: &ModelConfig, data: &TrainSet, ctx: &FitContext) -> Result<Box<dyn FittedModel>> {
    let spec = match kind_spec(&cfg.kind) {
        Some(s) => s,
        None => bail!("unknown model kind `{}`", cfg.kind),
    };
    if !spec.tasks.contains(&data.task) {
        bail!("model kind `{}` cannot do {}", cfg.kind, data.task);
    }
    match cfg.kind.as_str() {
        "decision_tree" => tree::fit_tree(cfg, data, ctx),
        "random_forest" => tree::fit_forest(cfg, data, ctx),
        "logistic_regression" => classical::fit_logistic(cfg, data),
        "svm" => classical::fit_svm(cfg, data),
        "knn" => classical::fit_knn(cfg, data),
        "naive_bayes" => classical::fit_naive_bayes(cfg, data),
        "linear" => classical::fit_linear(cfg, data),
        #[cfg(feature = "xgboost")]
        "xgboost" => gbm::fit_xgboost(cfg, data, ctx),
        #[cfg(feature = "lightgbm")]
        "lightgbm" => gbm::fit_lightgbm(cfg, data, ctx),
        #[cfg(feature = "torch")]
        "mlp" | "cnn" | "lstm" => nn::fit(cfg, data, ctx),
        "voting" | "stacking" => ensemble::fit(cfg, data, ctx),
        other => bail!("model kind `{other}` has no trainer in this build"),
    }
}

/// Rebuilds a fitted model from what a run saved: its config, its `to_json` form and its native
/// files by extension ("json" for XGBoost, "txt" for LightGBM, "pt" for the networks).
pub fn load(
    cfg: &ModelConfig,
    fitted: &serde_json::Value,
    native: &BTreeMap<String, Vec<u8>>,
    task: Task,
    n_classes: usize,
    n_features: usize,
) -> Result<Box<dyn FittedModel>> {
    let spec =
        kind_spec(&cfg.kind).ok_or_else(|| anyhow::anyhow!("unknown model kind `{}`", cfg.kind))?;
    if !spec.available() {
        bail!(
            "model kind `{}` needs the cargo feature `{}`, which this build lacks",
            cfg.kind,
            spec.feature.unwrap_or("?")
        );
    }
    #[allow(unused_variables)]
    let file = |ext: &str| {
        native
            .get(ext)
            .ok_or_else(|| anyhow::anyhow!("the saved {} model has no .{ext} file", cfg.kind))
    };
    #[allow(unused_variables)]
    let best_round = fitted["best_round"].as_i64().unwrap_or(0);
    match cfg.kind.as_str() {
        "decision_tree" | "random_forest" => tree::load(fitted),
        "voting" | "stacking" => ensemble::load(fitted, task, n_classes, n_features),
        #[cfg(feature = "xgboost")]
        "xgboost" => gbm::load_xgboost(file("json")?, task, n_classes, best_round),
        #[cfg(feature = "lightgbm")]
        "lightgbm" => gbm::load_lightgbm(file("txt")?, task, n_classes, best_round),
        #[cfg(feature = "torch")]
        "mlp" | "cnn" | "lstm" => nn::load_torchscript(file("pt")?, task, n_classes),
        kind => classical::load(kind, task, fitted),
    }
}

/// Early stopping on a validation loss, shared by the boosting libraries and the networks.
#[cfg_attr(
    not(any(feature = "xgboost", feature = "lightgbm", feature = "torch")),
    allow(dead_code)
)]
pub(crate) struct EarlyStopping {
    patience: i64,
    best: f64,
    best_round: i64,
}

#[cfg_attr(
    not(any(feature = "xgboost", feature = "lightgbm", feature = "torch")),
    allow(dead_code)
)]
impl EarlyStopping {
    /// `patience` rounds without a better loss stop training; 0 never stops.
    pub(crate) fn new(patience: i64) -> Self {
        EarlyStopping {
            patience,
            best: f64::INFINITY,
            best_round: 0,
        }
    }

    /// Records the loss after `round`: (whether it is the best so far, whether to stop).
    pub(crate) fn update(&mut self, round: i64, loss: f64) -> (bool, bool) {
        let improved = loss < self.best;
        if improved {
            self.best = loss;
            self.best_round = round;
        }
        (
            improved,
            self.patience > 0 && round - self.best_round >= self.patience,
        )
    }

    /// The round to keep: the best one when early stopping is on, else `last`.
    pub(crate) fn kept(&self, last: i64) -> i64 {
        if self.patience > 0 {
            self.best_round
        } else {
            last
        }
    }
}

/// Index of the largest value; ties go to the lowest index so predictions never depend on
/// iteration order.
pub fn argmax(row: impl IntoIterator<Item = f64>) -> usize {
    let mut best = 0;
    let mut best_v = f64::NEG_INFINITY;
    for (i, v) in row.into_iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best
}

pub fn labels_from_proba(proba: &Array2<f64>) -> Vec<f64> {
    proba
        .rows()
        .into_iter()
        .map(|r| argmax(r.iter().copied()) as f64)
        .collect()
}

pub fn default_value(p: &ParamSpec) -> ParamValue {
    p.default.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_passes_its_own_check() {
        for k in KINDS {
            for p in k.params {
                assert!(
                    check_value(p, &p.default.value()).is_ok(),
                    "{}.{}",
                    k.kind,
                    p.name
                );
            }
        }
    }

    #[test]
    fn out_of_range_names_the_key_and_range() {
        let spec = kind_spec("random_forest").unwrap();
        let p = spec.params.iter().find(|p| p.name == "n_trees").unwrap();
        let err = check_value(p, &ParamValue::Int(0)).unwrap_err();
        assert!(err.contains("n_trees") && err.contains("1..=5000"), "{err}");
    }

    #[test]
    fn argmax_breaks_ties_to_lowest_index() {
        assert_eq!(argmax([0.2, 0.4, 0.4]), 1);
    }
}
