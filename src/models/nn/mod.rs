//! The networks (MLP, CNN, LSTM): their hyperparameters, here in every build. With the `torch`
//! feature they train on libtorch in a helper program, `runner-torch` ([`remote`]; its code is
//! in src/bin/runner-torch/), the only program that links libtorch.

#[cfg(feature = "torch")]
mod remote;
#[cfg(feature = "torch")]
pub mod wire;

/// Whether `cfg`'s folds train stacked ([`fit_stack`]): the MLP, the CNN and the LSTM from their
/// algorithm 3, without early stopping (each fold would stop at its own epoch).
pub(crate) fn stacks(cfg: &super::ModelConfig) -> bool {
    cfg!(feature = "torch")
        && matches!(cfg.kind.as_str(), "mlp" | "cnn" | "lstm")
        && cfg.algorithm() >= 3
        && cfg.int("patience").is_ok_and(|p| p == 0)
}

/// Trains the networks of several folds as one stacked network, in one helper.
pub(crate) fn fit_stack(
    cfg: &super::ModelConfig,
    sets: &[super::TrainSet],
    ctxs: &[super::FitContext],
) -> anyhow::Result<Vec<Box<dyn super::FittedModel>>> {
    #[cfg(feature = "torch")]
    return remote::fit_stack(cfg, sets, ctxs);
    #[cfg(not(feature = "torch"))]
    {
        let _ = (cfg, sets, ctxs);
        Err(super::feature_missing(&MLP))
    }
}

/// Ends the network helpers that wait idle for another fit (none without the `torch` feature).
pub fn end_idle_helpers() {
    #[cfg(feature = "torch")]
    remote::end_idle();
}

use super::params::{
    Default_, ParamSpec, ParamType, BOTH, CALIBRATION, CLASS_WEIGHT, CLASS_WEIGHTS, RESAMPLE,
    SMOTE_K, THRESHOLD, TUNING_FOLDS,
};
use super::KindSpec;

pub(crate) const NN_TRAINING: [ParamSpec; 20] = [
    CLASS_WEIGHT,
    CLASS_WEIGHTS,
    RESAMPLE,
    SMOTE_K,
    CALIBRATION,
    THRESHOLD,
    TUNING_FOLDS,
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

const fn concat<const A: usize, const B: usize, const C: usize>(
    a: [ParamSpec; A],
    b: [ParamSpec; B],
) -> [ParamSpec; C] {
    // A length that drops parameters fails the build, not a run.
    assert!(A + B == C, "concat: the result's length must be A + B");
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

pub(crate) const MLP_PARAMS: [ParamSpec; 21] = concat(
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
pub(crate) const CNN_PARAMS: [ParamSpec; 25] = concat(
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
pub(crate) const LSTM_PARAMS: [ParamSpec; 24] = concat(
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

pub(crate) static MLP: KindSpec = KindSpec {
    kind: "mlp",
    tasks: BOTH,
    backend: "libtorch 2.13 (crate tch), a run's CV folds trained as one stacked network, one optimiser step over all weights at once; each fold alone for runs of algorithm 2, libtorch's optimisers for algorithm 1; feature `torch`",
    help: "multilayer perceptron",
    feature: Some("torch"),
    onnx: true,
    algorithm: 3,
    unscaled_from: None,
    curve_axis: "epoch",
    params: &MLP_PARAMS,
};

backend!(
    MlpBackend,
    MLP,
    feature = "torch",
    |cfg, data, ctx| remote::fit(cfg, data, ctx),
    |saved| remote::load_torchscript(saved.file("pt")?, saved.task, saved.n_classes)
);

pub(crate) static CNN: KindSpec = KindSpec {
    kind: "cnn",
    tasks: BOTH,
    backend: "libtorch 2.13 (crate tch), a run's CV folds trained as one stacked network, one optimiser step over all weights at once; each fold alone for runs of algorithm 2, libtorch's optimisers for algorithm 1; feature `torch`",
    help: "1-D convolutions over the feature vector, then dense layers",
    feature: Some("torch"),
    onnx: true,
    algorithm: 3,
    unscaled_from: None,
    curve_axis: "epoch",
    params: &CNN_PARAMS,
};

backend!(
    CnnBackend,
    CNN,
    feature = "torch",
    |cfg, data, ctx| remote::fit(cfg, data, ctx),
    |saved| remote::load_torchscript(saved.file("pt")?, saved.task, saved.n_classes)
);

pub(crate) static LSTM: KindSpec = KindSpec {
    kind: "lstm",
    tasks: BOTH,
    backend: "libtorch 2.13 (crate tch), a run's CV folds trained as one stacked network (each fold's LSTM on its own weights, the dense head and the optimiser step stacked), one optimiser step over all weights at once; each fold alone for runs of algorithm 2, libtorch's optimisers for algorithm 1; feature `torch`",
    help: "LSTM reading the features as a sequence, then a dense head",
    feature: Some("torch"),
    onnx: true,
    algorithm: 3,
    unscaled_from: None,
    curve_axis: "epoch",
    params: &LSTM_PARAMS,
};

backend!(
    LstmBackend,
    LSTM,
    feature = "torch",
    |cfg, data, ctx| remote::fit(cfg, data, ctx),
    |saved| remote::load_torchscript(saved.file("pt")?, saved.task, saved.n_classes)
);
