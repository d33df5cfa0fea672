//! Neural networks on libtorch through `tch`: an MLP of any depth, a 1-D CNN over the feature
//! vector and an LSTM reading the features as a sequence, each with dropout, batch norm and a
//! choice of activation, trained with Adam, AdamW or SGD. Input standardisation (fitted on the
//! training rows) is part of the network, so the exported TorchScript takes the model's input
//! features as they are.
//!
//! libtorch's random generator and thread count are process-wide: each model lives in its own
//! helper process (this program), which seeds the generator at the fit's start, so with a
//! fixed seed and thread count two runs give identical losses, whatever trains beside them.

use crate::dropout::Masks;
use crate::flat::{FlatOptimizer, Rule};
use anyhow::{anyhow, bail, Result};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use runner::models::{
    labels_from_proba, FitContext, FittedModel, ModelConfig, Prediction, Task, TrainSet,
};
use runner::rng::SplitMix64;
use serde_json::json;
use std::sync::Mutex;
use tch::nn::{self, ModuleT, OptimizerConfig, RNN};
use tch::{Device, Kind, Tensor};

pub(crate) fn activation(name: &str, x: &Tensor) -> Tensor {
    match name {
        "gelu" => x.gelu("none"),
        "tanh" => x.tanh(),
        "leaky_relu" => x.leaky_relu(),
        "silu" => x.silu(),
        "elu" => x.elu(),
        "sigmoid" => x.sigmoid(),
        _ => x.relu(),
    }
}

/// PyTorch's default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases,
/// used for every layer (tch's default Kaiming-ReLU weights are sqrt(6) times wider; with them
/// the wine MLP reached 0.627 instead of 0.638 at seed 42).
fn torch_init(fan_in: i64) -> (nn::Init, Option<nn::Init>) {
    let b = 1.0 / (fan_in.max(1) as f64).sqrt();
    (
        nn::Init::Uniform { lo: -b, up: b },
        Some(nn::Init::Uniform { lo: -b, up: b }),
    )
}

fn linear(vs: nn::Path, inp: i64, out: i64) -> nn::Linear {
    let (ws_init, bs_init) = torch_init(inp);
    nn::linear(
        vs,
        inp,
        out,
        nn::LinearConfig {
            ws_init,
            bs_init,
            bias: true,
        },
    )
}

/// Pooling over pairs of neighbours (kernel 2, stride 2; an odd last position is dropped).
/// From algorithm 2 on channels-last inputs, [batch, position, channel] ([`pool_pairs`]):
/// libtorch's `max_pool1d` with gradients took a tenth of the wine CNN's time. The values are
/// the same.
fn pool(x: &Tensor, max: bool, algorithm: u32) -> Tensor {
    if algorithm < 2 {
        return if max {
            x.max_pool1d([2], [2], [0], [1], false)
        } else {
            x.avg_pool1d([2], [2], [0], false, true)
        };
    }
    pool_pairs(x, max)
}

/// The max or mean of each pair of neighbour positions of channels-last inputs
/// [batch, position, channel] (an odd last position dropped): libtorch's 2-D pooling with a
/// window of 2 x 1 over the inputs seen as a channels-last image [batch, channel, position, 1].
/// Its channels-last kernel runs over contiguous channels; the max (or mean) over a view of
/// pairs, as before, ran element by element and took a tenth of the wine CNN's time. Both give
/// the same values and the same gradients, bit for bit: a max is one of its inputs (the first
/// on ties, where both route the gradient) and a mean of two is their sum halved.
pub(crate) fn pool_pairs(x: &Tensor, max: bool) -> Tensor {
    // -1 for the batch, not its size: a traced module keeps a dynamic batch.
    let (len, channels) = (x.size()[1], x.size()[2]);
    let image = x.reshape([-1, len, 1, channels]).permute([0, 3, 1, 2]);
    let pooled = if max {
        image.max_pool2d([2, 1], [2, 1], [0, 0], [1, 1], false)
    } else {
        image.avg_pool2d([2, 1], [2, 1], [0, 0], false, true, None)
    };
    pooled
        .permute([0, 2, 3, 1])
        .reshape([-1, len / 2, channels])
}

/// A 1-D convolution (stride 1, zero padding `k / 2`) as one matrix product over the unfolded
/// windows, from algorithm 2: oneDNN's convolution sets itself up on every call, which on the
/// wine CNN's small layers cost more than the arithmetic. The weights are the same tensors,
/// viewed on each call: the optimiser moves them into its flat tensor after the network is built.
///
/// Channels last in and out ([batch, position, channel]): the windows' matrix is the same, and
/// the activation and pooling that follow run over contiguous memory (over libtorch's
/// [batch, channel, position] they ran over a transposed view: relu's backward alone was 6% of
/// the wine CNN's time).
fn conv_unfolded(x: &Tensor, conv: &nn::Conv1D, k: i64) -> Tensor {
    let (inputs, outputs) = (x.size()[2], conv.ws.size()[0]);
    let windows = windows(&x.constant_pad_nd([0, 0, k / 2, k / 2]), 1, k);
    let len = windows.size()[1];
    windows
        .reshape([-1, inputs * k])
        .linear(&conv.ws.view([outputs, inputs * k]), conv.bs.as_ref())
        .view([-1, len, outputs])
}

/// `padded.unfold(dim, k, 1)`: each window of `k` neighbours along `dim`, as a new last
/// dimension, but built from `k` shifted views stacked. The values are the same, and so are the
/// gradients, bit for bit: a position's gradient sums its windows' in the same order (checked
/// against libtorch 2.13 on random magnitudes; the replayed CNN runs hold it). The stack is
/// contiguous, so the convolution's product reads it without a copy, and its backward is
/// slices added, not `unfold_backward`'s element-by-element loop (together a sixth of the wine
/// CNN's time).
pub(crate) fn windows(padded: &Tensor, dim: i64, k: i64) -> Tensor {
    let len = padded.size()[dim as usize] - k + 1;
    let shifted: Vec<Tensor> = (0..k).map(|j| padded.narrow(dim, j, len)).collect();
    Tensor::stack(&shifted, -1)
}

/// Dense layers: linear -> [batch norm] -> activation -> [dropout] per width.
fn dense(
    vs: &nn::Path,
    mut inp: i64,
    widths: &[usize],
    cfg: &ModelConfig,
    masks: &Masks,
) -> Result<(nn::SequentialT, i64)> {
    let mut seq = nn::seq_t();
    let act = cfg.str("activation")?.to_string();
    let p = cfg.float("dropout")?;
    for (i, w) in widths.iter().enumerate() {
        let w = *w as i64;
        seq = seq.add(linear(vs / format!("dense{i}"), inp, w));
        if cfg.bool("batch_norm")? {
            seq = seq.add(nn::batch_norm1d(
                vs / format!("bn{i}"),
                w,
                Default::default(),
            ));
        }
        let a = act.clone();
        seq = seq.add_fn(move |x| activation(&a, x));
        if p > 0.0 {
            let masks = masks.clone();
            seq = seq.add_fn_t(move |x, train| masks.apply(x, p, train));
        }
        inp = w;
    }
    Ok((seq, inp))
}

#[derive(Debug)]
enum Body {
    Mlp(nn::SequentialT),
    Cnn {
        convs: nn::SequentialT,
        head: nn::SequentialT,
        /// From algorithm 2 the convolutions run on [batch, position, channel].
        channels_last: bool,
    },
    Lstm {
        lstm: nn::LSTM,
        head: nn::SequentialT,
        layers: i64,
        hidden: i64,
    },
}

#[derive(Debug)]
pub(crate) struct Net {
    mean: Tensor,
    std: Tensor,
    body: Body,
    out: nn::Linear,
    /// Where the dense layers' dropout masks come from.
    masks: Masks,
}

impl Net {
    pub(crate) fn standardise(&self, x: &Tensor) -> Tensor {
        (x - &self.mean) / &self.std
    }

    /// The network on inputs already standardised.
    pub(crate) fn forward_standardised(&self, x: &Tensor, train: bool) -> Tensor {
        let h = match &self.body {
            Body::Mlp(s) => s.forward_t(x, train),
            Body::Cnn {
                convs,
                head,
                channels_last,
            } => {
                // The head reads channel after channel, as libtorch's layout flattens.
                let z = match channels_last {
                    true => convs.forward_t(&x.unsqueeze(-1), train).permute([0, 2, 1]),
                    false => convs.forward_t(&x.unsqueeze(1), train),
                };
                head.forward_t(&z.flatten(1, -1), train)
            }
            Body::Lstm {
                lstm,
                head,
                layers,
                hidden,
            } => {
                // Initial states built from the input, so a traced module keeps a dynamic batch.
                let batch0 = x.select(1, 0).zeros_like();
                let z = batch0
                    .view([1, -1, 1])
                    .expand([*layers, -1, *hidden], false)
                    .contiguous();
                let (out, _) =
                    lstm.seq_init(&x.unsqueeze(-1), &nn::LSTMState((z.shallow_clone(), z)));
                head.forward_t(&out.select(1, -1), train)
            }
        };
        h.apply(&self.out)
    }
}

impl ModuleT for Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_standardised(&self.standardise(x), train)
    }
}

pub(crate) fn build(vs: &nn::Path, cfg: &ModelConfig, features: i64, outputs: i64) -> Result<Net> {
    let mean = vs.zeros_no_train("norm_mean", &[features]);
    let std = vs.ones_no_train("norm_std", &[features]);
    let widths =
        runner::models::parse_widths(cfg.str("hidden")?).map_err(|e| anyhow!("hidden: {e}"))?;
    let masks = Masks::default();
    let (body, width) = match cfg.kind.as_str() {
        "mlp" => {
            let (s, w) = dense(vs, features, &widths, cfg, &masks)?;
            (Body::Mlp(s), w)
        }
        "cnn" => {
            let ch = cfg.int("channels")?;
            let k = cfg.int("kernel_size")?;
            let act = cfg.str("activation")?.to_string();
            let pool = cfg.str("pool")?.to_string();
            let mut convs = nn::seq_t();
            let channels_last = cfg.algorithm() >= 2;
            let (mut len, mut inp) = (features, 1);
            for i in 0..cfg.int("conv_layers")? {
                let (ws_init, bs_init) = torch_init(inp * k);
                let conf = nn::ConvConfig {
                    padding: k / 2,
                    ws_init,
                    bs_init: bs_init.unwrap_or(nn::Init::Const(0.0)),
                    ..Default::default()
                };
                let conv = nn::conv1d(vs / format!("conv{i}"), inp, ch, k, conf);
                convs = match cfg.algorithm() {
                    1 => convs.add(conv),
                    _ => convs.add_fn(move |x| conv_unfolded(x, &conv, k)),
                };
                len = len + 2 * (k / 2) - k + 1;
                if cfg.bool("batch_norm")? {
                    let bn = nn::batch_norm1d(vs / format!("cbn{i}"), ch, Default::default());
                    convs = match channels_last {
                        false => convs.add(bn),
                        // Normalised over libtorch's layout, as a view: the same statistics.
                        true => convs.add_fn_t(move |x, train| {
                            x.permute([0, 2, 1]).apply_t(&bn, train).permute([0, 2, 1])
                        }),
                    };
                }
                let a = act.clone();
                convs = convs.add_fn(move |x| activation(&a, x));
                if pool != "none" && len >= 2 {
                    let (max, algorithm) = (pool == "max", cfg.algorithm());
                    convs = convs.add_fn(move |x| self::pool(x, max, algorithm));
                    len /= 2;
                }
                inp = ch;
            }
            if len < 1 {
                bail!("cnn: kernel_size {k} is wider than the {features} features");
            }
            let (head, w) = dense(&(vs / "head"), ch * len, &widths, cfg, &masks)?;
            (
                Body::Cnn {
                    convs,
                    head,
                    channels_last,
                },
                w,
            )
        }
        _ => {
            let hidden = cfg.int("hidden_size")?;
            let layers = cfg.int("num_layers")?;
            let dirs = if cfg.bool("bidirectional")? { 2 } else { 1 };
            // tch's LSTM initialisation (Kaiming-uniform weights, zero biases): PyTorch's
            // U(-1/sqrt(hidden), ..) gave 0.601 instead of 0.615 on the wine sweep.
            let rc = nn::RNNConfig {
                num_layers: layers,
                bidirectional: dirs == 2,
                batch_first: true,
                ..Default::default()
            };
            let lstm = nn::lstm(vs / "lstm", 1, hidden, rc);
            let (head, w) = dense(&(vs / "head"), hidden * dirs, &widths, cfg, &masks)?;
            (
                Body::Lstm {
                    lstm,
                    head,
                    layers: layers * dirs,
                    hidden,
                },
                w,
            )
        }
    };
    let out = linear(vs / "out", width, outputs);
    Ok(Net {
        mean,
        std,
        body,
        out,
        masks,
    })
}

pub(crate) fn tensor(x: ArrayView2<f64>, device: Device) -> Tensor {
    let flat: Vec<f32> = x.iter().map(|v| *v as f32).collect();
    Tensor::from_slice(&flat)
        .view([x.nrows() as i64, x.ncols() as i64])
        .to_device(device)
}

pub(crate) fn targets(y: ArrayView1<f64>, task: Task, device: Device) -> Tensor {
    match task {
        Task::Classification => {
            Tensor::from_slice(&y.iter().map(|v| *v as i64).collect::<Vec<_>>()).to_device(device)
        }
        Task::Regression => {
            Tensor::from_slice(&y.iter().map(|v| *v as f32).collect::<Vec<_>>()).to_device(device)
        }
    }
}

pub(crate) fn device(cfg: &ModelConfig) -> Result<Device> {
    let wanted = cfg.str("device")?;
    if wanted != "cpu" {
        load_cuda_library();
    }
    match wanted {
        "cuda" if !tch::Cuda::is_available() => bail!("device = \"cuda\" but libtorch sees no CUDA device (no GPU or driver here, or a CPU-only libtorch); use \"cpu\" or \"auto\""),
        "cuda" => Ok(Device::Cuda(0)),
        "auto" => Ok(Device::cuda_if_available()),
        _ => Ok(Device::Cpu),
    }
}

/// libtorch's CUDA library (in a CUDA build of libtorch) registers the CUDA device when loaded,
/// but nothing here calls it by name, so the linker leaves it out: it is opened when a config
/// asks for `cuda` or `auto`, by name (the helper's run path) or in the libtorch it was built
/// with. A CPU-only libtorch has none; then CUDA stays unavailable.
fn load_cuda_library() {
    static TRIED: std::sync::Once = std::sync::Once::new();
    TRIED.call_once(|| {
        let built_with = option_env!("RUNNER_LIBTORCH_LIB").unwrap_or("");
        let candidates = [
            "libtorch_cuda.so".to_string(),
            format!("{built_with}/libtorch_cuda.so"),
        ];
        for name in candidates {
            let Ok(name) = std::ffi::CString::new(name) else {
                continue;
            };
            // SAFETY: a NUL-terminated path; the library stays loaded for the process.
            let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if !handle.is_null() {
                return;
            }
        }
    });
}

pub struct NnModel {
    task: Task,
    n_classes: usize,
    state: Mutex<(nn::VarStore, Net)>,
    threads: i32,
    safetensors: Vec<u8>,
    torchscript: Vec<u8>,
    epochs: i64,
    best_epoch: i64,
}

fn output(task: Task, logits: &Tensor) -> Tensor {
    match task {
        Task::Classification => logits.softmax(-1, Kind::Float),
        Task::Regression => logits.squeeze_dim(-1),
    }
}

/// Network outputs (probabilities or values) as a prediction.
fn to_prediction(task: Task, n_classes: usize, out: &Tensor, rows: usize) -> Result<Prediction> {
    let v: Vec<f32> = Vec::<f32>::try_from(out.flatten(0, -1))
        .map_err(|e| anyhow!("libtorch: the network's output is not float: {e}"))?;
    Ok(match task {
        Task::Regression => Prediction {
            values: v.into_iter().map(f64::from).collect(),
            proba: None,
        },
        Task::Classification => {
            let proba =
                Array2::from_shape_vec((rows, n_classes), v.into_iter().map(f64::from).collect())
                    .map_err(|e| {
                    anyhow!("libtorch: the network gave the wrong number of outputs: {e}")
                })?;
            Prediction {
                values: labels_from_proba(&proba),
                proba: Some(proba),
            }
        }
    })
}

impl FittedModel for NnModel {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        tch::set_num_threads(self.threads);
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let out = tch::no_grad(|| {
            output(
                self.task,
                &state.1.forward_t(&tensor(x, state.0.device()), false),
            )
        })
        .to_device(Device::Cpu);
        to_prediction(self.task, self.n_classes, &out, x.nrows())
    }
    fn to_json(&self) -> Result<serde_json::Value> {
        Ok(
            json!({"library": "libtorch", "epochs": self.epochs, "best_epoch": self.best_epoch, "weights": "see model_tN.safetensors and model_tN.pt"}),
        )
    }
    fn native(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("safetensors", self.safetensors.clone()),
            ("pt", self.torchscript.clone()),
        ]
    }
}

fn temp_path(ext: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "runner-{}-{}.{ext}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ))
}

/// Stores the standardisation of the training rows (mean, std; a constant column keeps 1) in
/// the network.
pub(crate) fn set_standardisation(net: &mut Net, xf: &Array2<f64>, dev: Device) {
    let f = xf.ncols();
    let mean = xf
        .mean_axis(ndarray::Axis(0))
        .unwrap_or_else(|| Array1::zeros(f));
    let std = xf
        .std_axis(ndarray::Axis(0), 0.0)
        .mapv(|s| if s > 0.0 { s } else { 1.0 });
    let floats = |a: &Array1<f64>| a.iter().map(|v| *v as f32).collect::<Vec<_>>();
    tch::no_grad(|| {
        net.mean
            .copy_(&Tensor::from_slice(&floats(&mean)).to_device(dev));
        net.std
            .copy_(&Tensor::from_slice(&floats(&std)).to_device(dev));
    });
}

/// The weight updates: libtorch's optimiser, one weight tensor at a time, for runs recorded with
/// algorithm 1; from algorithm 2 the same rules over all weights at once ([`FlatOptimizer`]).
pub(crate) enum Optimizer {
    Torch(nn::Optimizer),
    Flat(FlatOptimizer),
}

impl Optimizer {
    pub(crate) fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        match self {
            Optimizer::Torch(opt) => opt.backward_step(loss),
            Optimizer::Flat(opt) => opt.backward_step(loss)?,
        }
        Ok(())
    }
}

pub(crate) fn optimizer(cfg: &ModelConfig, vs: &nn::VarStore) -> Result<Optimizer> {
    let lr = cfg.float("learning_rate")?;
    let wd = cfg.float("weight_decay")?;
    let name = cfg.str("optimizer")?;
    if cfg.algorithm() >= 2 {
        let rule = match name {
            "sgd" => Rule::Sgd {
                lr,
                momentum: cfg.float("momentum")?,
                weight_decay: wd,
            },
            _ => Rule::Adam {
                lr,
                weight_decay: wd,
                decoupled: name == "adamw",
            },
        };
        return Ok(Optimizer::Flat(FlatOptimizer::new(vs, rule)?));
    }
    Ok(Optimizer::Torch(match name {
        "adamw" => nn::AdamW {
            wd,
            ..Default::default()
        }
        .build(vs, lr)?,
        "sgd" => nn::Sgd {
            momentum: cfg.float("momentum")?,
            wd,
            ..Default::default()
        }
        .build(vs, lr)?,
        _ => nn::Adam {
            wd,
            ..Default::default()
        }
        .build(vs, lr)?,
    }))
}

/// Per-class loss weights for `class_weight = "balanced"`: n / (K_present * count).
fn class_weights(
    cfg: &ModelConfig,
    data: &TrainSet,
    yf: &Array1<f64>,
    dev: Device,
) -> Result<Option<Tensor>> {
    let weights = class_weight_values(cfg, data, yf)?;
    Ok(weights.map(|w| Tensor::from_slice(&w).to_device(dev)))
}

/// The per-class loss weights the config asks for (classification): given, or balanced.
pub(crate) fn class_weight_values(
    cfg: &ModelConfig,
    data: &TrainSet,
    yf: &Array1<f64>,
) -> Result<Option<Vec<f32>>> {
    if data.task != Task::Classification {
        return Ok(None);
    }
    if cfg.str("class_weight")? != "balanced" {
        let given = data.class_weights(cfg)?;
        return Ok(given.map(|w| w.iter().map(|v| *v as f32).collect()));
    }
    let mut counts = vec![0.0f32; data.n_classes];
    for v in yf.iter() {
        counts[*v as usize] += 1.0;
    }
    let present = counts.iter().filter(|c| **c > 0.0).count() as f32;
    let total: f32 = counts.iter().sum();
    let weights: Vec<f32> = counts
        .iter()
        .map(|c| if *c > 0.0 { total / (present * c) } else { 0.0 })
        .collect();
    Ok(Some(weights))
}

/// Records the epoch's validation accuracy (classes) or mean absolute error (values).
pub(crate) fn record_valid_score(
    ctx: &FitContext,
    data: &TrainSet,
    epoch: i64,
    logits: &Tensor,
    y_raw: &Array1<f64>,
) -> Result<()> {
    let out: Vec<f32> = Vec::<f32>::try_from(
        output(data.task, logits)
            .to_device(Device::Cpu)
            .flatten(0, -1),
    )?;
    match data.task {
        Task::Classification => {
            let k = data.n_classes;
            let correct = (0..y_raw.len())
                .filter(|i| {
                    runner::models::argmax(out[i * k..(i + 1) * k].iter().map(|v| *v as f64))
                        == y_raw[*i] as usize
                })
                .count();
            ctx.record(epoch, "valid_accuracy", correct as f64 / y_raw.len() as f64);
        }
        Task::Regression => {
            let mae = out
                .iter()
                .zip(y_raw.iter())
                .map(|(p, t)| (*p as f64 - t).abs())
                .sum::<f64>()
                / y_raw.len() as f64;
            ctx.record(epoch, "valid_mae", mae);
        }
    }
    Ok(())
}

/// A copy of every weight, to come back to.
pub(crate) fn snapshot(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect()
}

pub(crate) fn restore(vs: &nn::VarStore, weights: Vec<(String, Tensor)>) {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (k, w) in weights {
            if let Some(v) = vars.get(&k) {
                let mut v = v.shallow_clone();
                v.copy_(&w);
            }
        }
    });
}

/// The trained network as safetensors (its weights) and TorchScript (traced, for serving).
fn saved_forms(
    vs: &mut nn::VarStore,
    net: &Net,
    f: usize,
    task: Task,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let st = temp_path("safetensors");
    vs.save(&st)?;
    let safetensors = std::fs::read(&st)?;
    let _ = std::fs::remove_file(&st);
    vs.freeze();
    let example = Tensor::zeros([2, f as i64], (Kind::Float, vs.device()));
    let module = tch::CModule::create_by_tracing("runner", "forward", &[example], &mut |inputs| {
        vec![output(task, &net.forward_t(&inputs[0], false))]
    })?;
    let pt = temp_path("pt");
    module.save(&pt)?;
    let torchscript = std::fs::read(&pt)?;
    let _ = std::fs::remove_file(&pt);
    Ok((safetensors, torchscript))
}

/// The rows the network trains on and the rows scored each epoch: with early stopping a seeded
/// inner split of the training rows; otherwise the caller's evaluation rows (for the learning
/// curve only), if any.
#[allow(clippy::type_complexity)]
pub(crate) fn training_and_valid_rows(
    cfg: &ModelConfig,
    data: &TrainSet,
    ctx: &FitContext,
    patience: i64,
) -> Result<(
    (Array2<f64>, Array1<f64>),
    Option<(Array2<f64>, Array1<f64>)>,
)> {
    let (n, f) = (data.x.nrows(), data.x.ncols());
    let y_all: Vec<f64> = data.y.to_vec();
    let (fit_rows, stop_rows) = if patience > 0 {
        let share = cfg.float("validation_fraction")?;
        runner::eval::holdout_split(data.task, &y_all, share, ctx.seed ^ 0xE5)
    } else {
        ((0..n).collect(), Vec::new())
    };
    let take = |rows: &[usize]| -> (Array2<f64>, Array1<f64>) {
        (
            Array2::from_shape_fn((rows.len(), f), |(i, j)| data.x[[rows[i], j]]),
            rows.iter().map(|r| data.y[*r]).collect(),
        )
    };
    let valid = if !stop_rows.is_empty() {
        Some(take(&stop_rows))
    } else {
        ctx.eval.map(|(x, y)| (x.to_owned(), y.to_owned()))
    };
    Ok((take(&fit_rows), valid))
}

/// The rows a network trains on, as tensors, and how a step takes its batch: from algorithm 2
/// the inputs are standardised once and each epoch's shuffle is gathered once, a batch being a
/// slice of it; algorithm 1 gathered each batch's rows and standardised them in the network.
struct TrainingRows {
    inputs: Tensor,
    targets: Tensor,
    once: bool,
    batch_norm: bool,
}

fn index_tensor(rows: &[usize], device: Device) -> Tensor {
    Tensor::from_slice(&rows.iter().map(|i| *i as i64).collect::<Vec<_>>()).to_device(device)
}

impl TrainingRows {
    fn new(net: &Net, cfg: &ModelConfig, x: Tensor, y: Tensor) -> Result<TrainingRows> {
        let once = cfg.algorithm() >= 2;
        Ok(TrainingRows {
            inputs: if once {
                tch::no_grad(|| net.standardise(&x))
            } else {
                x
            },
            targets: y,
            once,
            batch_norm: cfg.bool("batch_norm")?,
        })
    }

    /// The epoch's rows in `order` (algorithm 2 only).
    fn shuffled(&self, order: &[usize]) -> Option<(Tensor, Tensor)> {
        self.once.then(|| {
            let idx = index_tensor(order, self.inputs.device());
            (
                self.inputs.index_select(0, &idx),
                self.targets.index_select(0, &idx),
            )
        })
    }

    /// The step's batch: rows `chunk`, at position `at` of the epoch's order.
    fn batch(
        &self,
        shuffled: Option<&(Tensor, Tensor)>,
        chunk: &[usize],
        at: usize,
    ) -> (Tensor, Tensor) {
        match shuffled {
            Some((x, y)) => {
                let (at, n) = (at as i64, chunk.len() as i64);
                (x.narrow(0, at, n), y.narrow(0, at, n))
            }
            None => {
                let idx = index_tensor(chunk, self.inputs.device());
                (
                    self.inputs.index_select(0, &idx),
                    self.targets.index_select(0, &idx),
                )
            }
        }
    }

    fn forward(&self, net: &Net, x: &Tensor) -> Tensor {
        if self.once {
            net.forward_standardised(x, true)
        } else {
            net.forward_t(x, true)
        }
    }
}

pub(crate) fn fit(
    cfg: &ModelConfig,
    data: &TrainSet,
    ctx: &FitContext,
) -> Result<Box<dyn FittedModel>> {
    if crate::stack::stacks(cfg) {
        let mut models = crate::stack::fit_stack(cfg, &[(data, ctx)])?;
        return Ok(Box::new(models.remove(0)));
    }
    let threads = thread_count(cfg)?;
    tch::set_num_threads(threads);
    let seed = (ctx.seed % (i64::MAX as u64)) as i64;
    tch::manual_seed(seed);
    let dev = device(cfg)?;
    let f = data.x.ncols();
    let outputs = output_count(data);
    let patience = cfg.int("patience")?;
    let ((xf, yf), valid) = training_and_valid_rows(cfg, data, ctx, patience)?;
    let vs = nn::VarStore::new(dev);
    let mut net = build(&vs.root(), cfg, f as i64, outputs)?;
    // Nothing else in training draws from libtorch's generator (the LSTM has no dropout of
    // its own), so runner can draw the masks from where it stands now.
    let p = cfg.float("dropout")?;
    if dev == Device::Cpu && p > 0.0 {
        net.masks.follow(seed, p);
    }
    set_standardisation(&mut net, &xf, dev);
    let mut opt = optimizer(cfg, &vs)?;
    let class_weights = class_weights(cfg, data, &yf, dev)?;
    let loss_of = |logits: &Tensor, y: &Tensor| -> Tensor {
        match data.task {
            Task::Classification => logits.cross_entropy_loss::<Tensor>(
                y,
                class_weights.as_ref().map(|w| w.shallow_clone()),
                tch::Reduction::Mean,
                -100,
                0.0,
            ),
            Task::Regression => logits.squeeze_dim(-1).mse_loss(y, tch::Reduction::Mean),
        }
    };
    let rows = TrainingRows::new(
        &net,
        cfg,
        tensor(xf.view(), dev),
        targets(yf.view(), data.task, dev),
    )?;
    let valid_t = valid.as_ref().map(|(x, y)| {
        (
            tensor(x.view(), dev),
            targets(y.view(), data.task, dev),
            y.clone(),
        )
    });
    let batch = cfg.int("batch_size")? as usize;
    let epochs = cfg.int("epochs")?;
    let mut order: Vec<usize> = (0..yf.len()).collect();
    let mut stopper = runner::models::EarlyStopping::new(patience);
    let mut best_weights: Option<Vec<(String, Tensor)>> = None;
    let mut ran = 0;
    for epoch in 0..epochs {
        SplitMix64::derive(ctx.seed, 0xE90C + epoch as u64).shuffle(&mut order);
        let shuffled = rows.shuffled(&order);
        let (mut total, mut seen) = (0.0, 0usize);
        let mut start = 0;
        for chunk in order.chunks(batch) {
            let at = start;
            start += chunk.len();
            // A batch of one cannot be batch-normalised: fold it into the previous step.
            if chunk.len() < 2 && rows.batch_norm {
                continue;
            }
            let (x, y) = rows.batch(shuffled.as_ref(), chunk, at);
            let loss = loss_of(&rows.forward(&net, &x), &y);
            opt.backward_step(&loss)?;
            total += loss.double_value(&[]) * chunk.len() as f64;
            seen += chunk.len();
        }
        ctx.record(epoch, "train_loss", total / seen.max(1) as f64);
        ran = epoch + 1;
        if let Some((xv, yv, y_raw)) = &valid_t {
            let logits = tch::no_grad(|| net.forward_t(xv, false));
            let vloss = loss_of(&logits, yv).double_value(&[]);
            ctx.record(epoch, "valid_loss", vloss);
            record_valid_score(ctx, data, epoch, &logits, y_raw)?;
            let (improved, stop) = stopper.update(epoch, vloss);
            if improved && patience > 0 {
                best_weights = Some(snapshot(&vs));
            }
            if stop {
                break;
            }
        }
        if ctx.stop_requested() {
            break;
        }
    }
    if let Some(weights) = best_weights {
        restore(&vs, weights);
    }
    let best_epoch = stopper.kept(ran - 1);
    Ok(Box::new(finish(vs, net, data, threads, ran, best_epoch)?))
}

/// libtorch's threads for a fit: the config's, 1 where it says 0.
pub(crate) fn thread_count(cfg: &ModelConfig) -> Result<i32> {
    Ok(match cfg.int("threads")? {
        0 => 1,
        t => t as i32,
    })
}

/// The network's outputs: one per class, or one value.
pub(crate) fn output_count(data: &TrainSet) -> i64 {
    match data.task {
        Task::Classification => data.n_classes as i64,
        Task::Regression => 1,
    }
}

/// The trained network as a model, with its saved forms.
pub(crate) fn finish(
    mut vs: nn::VarStore,
    net: Net,
    data: &TrainSet,
    threads: i32,
    epochs: i64,
    best_epoch: i64,
) -> Result<NnModel> {
    let (safetensors, torchscript) = saved_forms(&mut vs, &net, data.x.ncols(), data.task)?;
    Ok(NnModel {
        task: data.task,
        n_classes: data.n_classes,
        state: Mutex::new((vs, net)),
        threads,
        safetensors,
        torchscript,
        epochs,
        best_epoch,
    })
}

/// A saved network run through its TorchScript module (the `model_tN.pt` it was exported as).
pub struct ScriptModel {
    task: Task,
    n_classes: usize,
    module: Mutex<tch::CModule>,
    torchscript: Vec<u8>,
}

pub(crate) fn load_torchscript(
    bytes: &[u8],
    task: Task,
    n_classes: usize,
) -> Result<Box<dyn FittedModel>> {
    let module = tch::CModule::load_data(&mut std::io::Cursor::new(bytes))?;
    Ok(Box::new(ScriptModel {
        task,
        n_classes,
        module: Mutex::new(module),
        torchscript: bytes.to_vec(),
    }))
}

impl FittedModel for ScriptModel {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        tch::set_num_threads(1);
        let module = self.module.lock().unwrap_or_else(|e| e.into_inner());
        let out = tch::no_grad(|| module.forward_ts(&[tensor(x, Device::Cpu)]))
            .map_err(|e| anyhow!("TorchScript forward: {e}"))?;
        to_prediction(self.task, self.n_classes, &out, x.nrows())
    }
    fn to_json(&self) -> Result<serde_json::Value> {
        Ok(json!({"library": "libtorch", "weights": "see model_tN.pt"}))
    }
    fn native(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![("pt", self.torchscript.clone())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner::models::ParamValue;

    /// The dense layers of every kind draw their dropout masks in runner, from where libtorch's
    /// generator stands after the kind's initialisation (the speed-up of the dropout module;
    /// if it were lost, libtorch would draw them, to the same values, more slowly).
    #[test]
    fn every_kind_with_dropout_draws_its_masks_here() {
        let _turn = crate::generator_turn();
        for kind in ["mlp", "cnn", "lstm"] {
            let mut cfg = ModelConfig::with_defaults(kind, kind).unwrap();
            cfg.params
                .insert("dropout".to_string(), ParamValue::Float(0.2));
            tch::manual_seed(42);
            let vs = nn::VarStore::new(Device::Cpu);
            let net = build(&vs.root(), &cfg, 11, 6).unwrap();
            assert!(net.masks.follow(42, 0.2), "{kind}");
        }
    }
}
