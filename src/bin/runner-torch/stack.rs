//! The MLP, the CNN and the LSTM from their algorithm 3: the networks of a run's CV folds trained
//! as one stacked network.
//! On the wine MLP (batches of 64, layers of 64) a step's cost is libtorch's dispatch per op, not
//! arithmetic; with the folds' weights stacked ([fold, in, out], batched matrix products) the
//! five folds take one step's ops instead of five. The LSTM itself runs once per fold (libtorch's
//! fused LSTM takes one set of weights), each fold's on its own slice of the stacked weights; its
//! dense head, loss and optimiser step are stacked.
//!
//! Each fold stays its own network: its weights start as its own seed initialises them, its rows
//! are shuffled by its own seed, its batch norm sees only its rows, its dropout masks come from
//! its own generator, its loss (a mean over its rows) is one term of the sum that is
//! differentiated, and the optimiser's rules work weight by weight. What the folds share is the
//! step count: an epoch is `ceil(largest fold / batch_size)` steps and each fold's rows are split
//! into that many batches of near-equal size (batches of a smaller fold padded with rows that
//! weigh nothing). A single fit (the refit) is a stack of one. After training each fold's weights
//! go back into an ordinary network, which predicts and is exported as before.

use crate::dropout::{keep_bound, Mt19937};
use crate::torch::{self, NnModel};
use anyhow::{anyhow, bail, Result};
use ndarray::Array1;
use runner::models::{FitContext, ModelConfig, Task, TrainSet};
use runner::rng::SplitMix64;
use std::collections::HashMap;
use tch::nn::{self, BatchNormConfig};
use tch::{Device, Kind, Tensor};

/// One fold of the stack: its own network (to start from and to end in) and its rows.
struct Fold<'a, 'd, 'c> {
    data: &'a TrainSet<'d>,
    ctx: &'a FitContext<'c>,
    vs: nn::VarStore,
    net: torch::Net,
    /// Training rows, standardised, as floats; targets as libtorch takes them and as values.
    x: Tensor,
    y: Tensor,
    y_values: Array1<f64>,
    /// Rows scored after each epoch (standardised), their targets and raw values.
    valid: Option<(Tensor, Tensor, Array1<f64>)>,
    class_weights: Option<Vec<f32>>,
    order: Vec<usize>,
    masks: Mt19937,
}

/// A dense layer of every fold: weights [fold, in, out], bias [fold, 1, out].
struct Layer {
    w: Tensor,
    b: Tensor,
    norm: Option<Norm>,
}

/// Batch norm of every fold: scale, shift, running mean and variance, each [fold, 1, width].
struct Norm {
    gamma: Tensor,
    beta: Tensor,
    mean: Tensor,
    var: Tensor,
}

/// A convolution of the CNN (from its algorithm 3) over every fold: the layer's weights as
/// [fold, in * width, out] (applied to each position's window), then batch norm over rows and
/// positions, the activation, and pooling of neighbour pairs.
struct Conv {
    layer: Layer,
    width: i64,
    /// Max (true) or mean (false) pooling, if any.
    pool: Option<bool>,
}

/// The LSTM (from its algorithm 3) of every fold: libtorch's flat weights (per layer and
/// direction: input, hidden, input bias, hidden bias), each stacked [fold, ...].
struct Recurrent {
    weights: Vec<Tensor>,
    /// Each weight's name in a fold's own network.
    names: Vec<String>,
    layers: i64,
    bidirectional: bool,
    hidden: i64,
}

/// Rows of every fold, padded to the longest fold's: inputs [fold, rows, features], targets and
/// each row's share of its fold's loss [fold, rows] (its weight over the fold's sum of weights;
/// 0 for padding).
struct Padded {
    x: Tensor,
    y: Tensor,
    share: Tensor,
}

/// The folds' networks as one: what trains, and how.
struct Stack {
    vs: nn::VarStore,
    /// The CNN's convolutions (none for the MLP), or the LSTM, then the dense layers.
    convs: Vec<Conv>,
    recurrent: Option<Recurrent>,
    /// Where a fold's own network names its dense layers: "head." after convolutions or an
    /// LSTM.
    head: &'static str,
    layers: Vec<Layer>,
    out: Layer,
    task: Task,
    activation: String,
    dropout: f64,
    bn: BatchNormConfig,
    /// Every fold's training rows end to end, each fold's followed by one row of zeros that pads.
    x: Tensor,
    y: Tensor,
    /// Where each fold's rows start in `x`.
    starts: Vec<i64>,
    valid: Option<Padded>,
}

/// What batch norm takes its statistics over in a step: each row's share of its fold's mean
/// (1 / its fold's rows, 0 for padding), [fold, 1, rows]; the fold's rows and rows / (rows - 1),
/// for the running variance, [fold, 1, 1].
struct Stats {
    share: Tensor,
    count: Tensor,
    unbiased: Tensor,
}

/// A training step's rows of every fold, padded to the longest batch.
struct Batch {
    rows: Padded,
    stats: Stats,
    /// Each dense layer's dropout mask (already scaled), [fold, rows, width].
    drops: Vec<Tensor>,
}

/// An epoch's batches, each step's rows of every fold padded to the longest batch of the epoch:
/// [step, fold, row, ...] (see [`Batch`]).
struct EpochRows {
    x: Tensor,
    y: Tensor,
    share: Tensor,
    stat_share: Tensor,
    unbiased: Tensor,
    count: Tensor,
    /// Each step's rows per fold.
    lens: Vec<Vec<usize>>,
    longest: usize,
}

impl Stats {
    /// The statistics taken over each row's `positions` (a convolution's batch norm): each
    /// position of a row has its share over the positions.
    fn over_positions(&self, positions: i64) -> Stats {
        let (folds, rows) = (self.share.size()[0], self.share.size()[2]);
        let count = &self.count * positions as f64;
        Stats {
            share: (&self.share / positions as f64)
                .unsqueeze(-1)
                .expand([folds, 1, rows, positions], false)
                .reshape([folds, 1, rows * positions]),
            unbiased: &count / (&count - 1.0).clamp_min(1.0),
            count,
        }
    }
}

/// The CNN's convolutions (algorithm 3 and on) of every fold, as its `build` makes them.
fn convolutions(
    cfg: &ModelConfig,
    root: &nn::Path,
    vars: &[HashMap<String, Tensor>],
    features: i64,
) -> Result<Vec<Conv>> {
    if cfg.kind != "cnn" {
        return Ok(Vec::new());
    }
    let k = cfg.int("kernel_size")?;
    let pool = cfg.str("pool")?;
    let bn = cfg.bool("batch_norm")?;
    let mut len = features;
    (0..cfg.int("conv_layers")?)
        .map(|i| {
            let layer = Layer::shaped(
                root,
                vars,
                &format!("conv{i}"),
                bn.then(|| format!("cbn{i}")),
                |t| t.flatten(1, -1).tr(),
            )?;
            len = len + 2 * (k / 2) - k + 1;
            let pooled = pool != "none" && len >= 2;
            if pooled {
                len /= 2;
            }
            Ok(Conv {
                layer,
                width: k,
                pool: pooled.then_some(pool == "max"),
            })
        })
        .collect()
}

/// Batch `s` of `n` rows split into `steps` near-equal batches: its first row and its length.
fn chunk(n: usize, steps: usize, s: usize) -> (usize, usize) {
    let (q, r) = (n / steps, n % steps);
    (s * q + s.min(r), q + usize::from(s < r))
}

/// Whether `cfg` trains stacked: the MLP, the CNN and the LSTM from their algorithm 3.
pub(crate) fn stacks(cfg: &ModelConfig) -> bool {
    matches!(cfg.kind.as_str(), "mlp" | "cnn" | "lstm") && cfg.algorithm() >= 3
}

/// The LSTM of every fold, as its `build` makes it; `None` for the other kinds.
fn recurrent(
    cfg: &ModelConfig,
    root: &nn::Path,
    vars: &[HashMap<String, Tensor>],
) -> Result<Option<Recurrent>> {
    if cfg.kind != "lstm" {
        return Ok(None);
    }
    let (layers, bidirectional) = (cfg.int("num_layers")?, cfg.bool("bidirectional")?);
    let directions: &[&str] = if bidirectional {
        &["", "_reverse"]
    } else {
        &[""]
    };
    let mut names = Vec::new();
    for layer in 0..layers {
        for suffix in directions {
            for what in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] {
                names.push(format!("lstm.{what}_l{layer}{suffix}"));
            }
        }
    }
    let weights = (names.iter())
        .map(|name| {
            let value = stacked(vars, name, |t| t.shallow_clone())?;
            Ok(root.var_copy(&name.replace('.', "_"), &value))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Recurrent {
        weights,
        names,
        layers,
        bidirectional,
        hidden: cfg.int("hidden_size")?,
    }))
}

impl Recurrent {
    /// Each fold's LSTM on its inputs [fold, rows, features] (the features as a sequence), from
    /// zero states, as its own network runs it; the last position's output, [fold, rows,
    /// directions x hidden].
    fn forward(&self, x: &Tensor) -> Tensor {
        let (folds, rows) = (x.size()[0], x.size()[1]);
        let per_fold: Vec<Vec<Tensor>> = self.weights.iter().map(|w| w.unbind(0)).collect();
        let states = self.layers * if self.bidirectional { 2 } else { 1 };
        let zero = Tensor::zeros([states, rows, self.hidden], (Kind::Float, x.device()));
        let outs: Vec<Tensor> = (0..folds)
            .map(|k| {
                let weights: Vec<&Tensor> = per_fold.iter().map(|w| &w[k as usize]).collect();
                let (out, _, _) = x.get(k).unsqueeze(-1).lstm(
                    &[&zero, &zero],
                    &weights,
                    true,
                    self.layers,
                    0.0,
                    true,
                    self.bidirectional,
                    true,
                );
                out.select(1, -1)
            })
            .collect();
        Tensor::stack(&outs, 0)
    }
}

/// Trains the folds' networks stacked (see the module's comment); each fold's model in order.
pub(crate) fn fit_stack<'a, 'd, 'c>(
    cfg: &ModelConfig,
    members: &[(&'a TrainSet<'d>, &'a FitContext<'c>)],
) -> Result<Vec<NnModel>> {
    let patience = cfg.int("patience")?;
    if patience > 0 && members.len() > 1 {
        bail!("early stopping (patience) trains each fold alone, not stacked");
    }
    let threads = torch::thread_count(cfg)?;
    tch::set_num_threads(threads);
    let dev = torch::device(cfg)?;
    let mut folds = (members.iter())
        .map(|(data, ctx)| Fold::new(cfg, data, ctx, patience, dev))
        .collect::<Result<Vec<_>>>()?;
    let stack = Stack::of(cfg, &folds, dev)?;
    let mut opt = torch::optimizer(cfg, &stack.vs)?;
    let n_max = folds.iter().map(|f| f.order.len()).max().unwrap_or(0);
    let steps = n_max.div_ceil(cfg.int("batch_size")? as usize).max(1);
    let mut stopper = runner::models::EarlyStopping::new(patience);
    let mut best = None;
    let mut ran = 0;
    for epoch in 0..cfg.int("epochs")? {
        let losses = stack.epoch(&mut folds, epoch, steps, &mut opt)?;
        for (fold, loss) in folds.iter().zip(&losses) {
            fold.ctx.record(epoch, "train_loss", *loss);
        }
        ran = epoch + 1;
        if let Some(valid_loss) = stack.score_valid(&folds, epoch)? {
            let (improved, stop) = stopper.update(epoch, valid_loss);
            if improved && patience > 0 {
                best = Some(torch::snapshot(&stack.vs));
            }
            if stop {
                break;
            }
        }
        if folds.iter().any(|f| f.ctx.stop_requested()) {
            break;
        }
    }
    if let Some(weights) = best {
        torch::restore(&stack.vs, weights);
    }
    let kept = stopper.kept(ran - 1);
    (folds.into_iter().enumerate())
        .map(|(k, fold)| {
            stack.write_back(k as i64, &fold.vs)?;
            torch::finish(fold.vs, fold.net, fold.data, threads, ran, kept)
        })
        .collect()
}

impl<'a, 'd, 'c> Fold<'a, 'd, 'c> {
    /// The fold's network as its seed initialises it, and its rows standardised by it.
    fn new(
        cfg: &ModelConfig,
        data: &'a TrainSet<'d>,
        ctx: &'a FitContext<'c>,
        patience: i64,
        dev: Device,
    ) -> Result<Fold<'a, 'd, 'c>> {
        tch::manual_seed((ctx.seed % (i64::MAX as u64)) as i64);
        let ((xf, yf), valid) = torch::training_and_valid_rows(cfg, data, ctx, patience)?;
        let vs = nn::VarStore::new(dev);
        let features = data.x.ncols() as i64;
        let mut net = torch::build(&vs.root(), cfg, features, torch::output_count(data))?;
        torch::set_standardisation(&mut net, &xf, dev);
        let inputs = |x: &ndarray::Array2<f64>| {
            tch::no_grad(|| net.standardise(&torch::tensor(x.view(), dev)))
        };
        let x = inputs(&xf);
        let valid =
            valid.map(|(xv, yv)| (inputs(&xv), torch::targets(yv.view(), data.task, dev), yv));
        let stream = SplitMix64::derive(ctx.seed, 0xD809).next_u64();
        Ok(Fold {
            class_weights: torch::class_weight_values(cfg, data, &yf)?,
            order: (0..yf.len()).collect(),
            masks: Mt19937::new(stream as u32),
            y: torch::targets(yf.view(), data.task, dev),
            y_values: yf,
            x,
            valid,
            data,
            ctx,
            vs,
            net,
        })
    }

    /// A row's weight in the fold's loss: its class's weight, if the config gives classes any
    /// (classification only).
    fn weight_of(&self, y: f64) -> f32 {
        self.class_weights.as_ref().map_or(1.0, |w| w[y as usize])
    }
}

/// The folds' tensors named `key`, stacked (each from `form`).
fn stacked(
    vars: &[HashMap<String, Tensor>],
    key: &str,
    form: impl Fn(&Tensor) -> Tensor,
) -> Result<Tensor> {
    let each = (vars.iter())
        .map(|v| v.get(key).map(|t| form(&t.detach())))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow!("the network has no weight `{key}`"))?;
    Ok(Tensor::stack(&each, 0))
}

impl Layer {
    /// Dense layer `name` (and its batch norm `norm`) of every fold, as weights of `root`.
    fn of(
        root: &nn::Path,
        vars: &[HashMap<String, Tensor>],
        name: &str,
        norm: Option<String>,
    ) -> Result<Layer> {
        Layer::shaped(root, vars, name, norm, |t| t.tr())
    }

    /// Layer `name` of every fold, its weights as [in, out] by `form` (a convolution's
    /// [out, in, width] flattened to [in * width, out], as its windows are).
    fn shaped(
        root: &nn::Path,
        vars: &[HashMap<String, Tensor>],
        name: &str,
        norm: Option<String>,
        form: impl Fn(&Tensor) -> Tensor,
    ) -> Result<Layer> {
        let row = |t: &Tensor| t.unsqueeze(0);
        let own = |key: &str| key.replace('.', "_");
        let w = stacked(vars, &format!("{name}.weight"), form)?;
        let b = stacked(vars, &format!("{name}.bias"), row)?;
        let norm = match norm {
            None => None,
            Some(bn) => {
                let running = |what: &str| -> Result<Tensor> {
                    let value = stacked(vars, &format!("{bn}.{what}"), row)?;
                    let mut kept =
                        root.zeros_no_train(&own(&format!("{bn}.{what}")), &value.size());
                    tch::no_grad(|| kept.copy_(&value));
                    Ok(kept)
                };
                let learnt = |what: &str| -> Result<Tensor> {
                    let value = stacked(vars, &format!("{bn}.{what}"), row)?;
                    Ok(root.var_copy(&own(&format!("{bn}.{what}")), &value))
                };
                Some(Norm {
                    gamma: learnt("weight")?,
                    beta: learnt("bias")?,
                    mean: running("running_mean")?,
                    var: running("running_var")?,
                })
            }
        };
        Ok(Layer {
            w: root.var_copy(&own(&format!("{name}.weight")), &w),
            b: root.var_copy(&own(&format!("{name}.bias")), &b),
            norm,
        })
    }

    /// Fold `k`'s weights of this layer into its own network's variables.
    fn write_back(
        &self,
        k: i64,
        vars: &HashMap<String, Tensor>,
        name: &str,
        bn: &str,
    ) -> Result<()> {
        let set = |key: String, value: Tensor| -> Result<()> {
            let mut v = vars
                .get(&key)
                .ok_or_else(|| anyhow!("the network has no weight `{key}`"))?
                .shallow_clone();
            tch::no_grad(|| v.copy_(&value.reshape(v.size().as_slice())));
            Ok(())
        };
        set(format!("{name}.weight"), self.w.get(k).tr())?;
        set(format!("{name}.bias"), self.b.get(k))?;
        if let Some(norm) = &self.norm {
            set(format!("{bn}.weight"), norm.gamma.get(k))?;
            set(format!("{bn}.bias"), norm.beta.get(k))?;
            set(format!("{bn}.running_mean"), norm.mean.get(k))?;
            set(format!("{bn}.running_var"), norm.var.get(k))?;
        }
        Ok(())
    }
}

impl Norm {
    /// Normalised by the batch's own statistics (each fold's rows only); the running ones move.
    fn train(&self, h: &Tensor, stats: &Stats, bn: &BatchNormConfig) -> Tensor {
        let mean = stats.share.bmm(h);
        let centred = h - &mean;
        let var = stats.share.bmm(&centred.square());
        tch::no_grad(|| {
            let _ = self.mean.shallow_clone().lerp_(&mean, bn.momentum);
            let _ = (self.var.shallow_clone()).lerp_(&(&var * &stats.unbiased), bn.momentum);
        });
        centred * (var + bn.eps).rsqrt() * &self.gamma + &self.beta
    }

    /// Normalised by the running statistics, as the exported network does.
    fn eval(&self, h: &Tensor, bn: &BatchNormConfig) -> Tensor {
        (h - &self.mean) * (&self.var + bn.eps).rsqrt() * &self.gamma + &self.beta
    }
}

/// `rows` of every fold (`None` where a fold has none) padded to the longest, with zeros.
fn padded(
    task: Task,
    folds: &[Fold],
    rows: impl Fn(&Fold) -> Option<(Tensor, Tensor, Vec<f32>)>,
) -> Padded {
    let each: Vec<_> = folds.iter().map(rows).collect();
    let longest = each
        .iter()
        .flatten()
        .map(|(x, _, _)| x.size()[0])
        .max()
        .unwrap_or(0);
    let features = folds[0].x.size()[1];
    let dev = folds[0].x.device();
    let (mut xs, mut ys, mut shares) = (Vec::new(), Vec::new(), Vec::new());
    for part in &each {
        let (x, y, w) = match part {
            Some((x, y, w)) => (x.shallow_clone(), y.shallow_clone(), w.clone()),
            None => (
                Tensor::zeros([0, features], (Kind::Float, dev)),
                Tensor::zeros([0], (y_kind(task), dev)),
                Vec::new(),
            ),
        };
        let missing = longest - x.size()[0];
        xs.push(x.constant_pad_nd([0, 0, 0, missing]));
        ys.push(y.constant_pad_nd([0, missing]));
        let sum = positive(w.iter().sum());
        shares.extend(w.iter().map(|v| v / sum).chain((0..missing).map(|_| 0.0)));
    }
    Padded {
        x: Tensor::stack(&xs, 0),
        y: Tensor::stack(&ys, 0),
        share: on(
            dev,
            Tensor::from_slice(&shares).view([folds.len() as i64, longest]),
        ),
    }
}

/// Every fold's training rows and targets end to end, each fold's followed by one row of zeros
/// that pads its batches; where each fold's rows start.
fn end_to_end(folds: &[Fold]) -> (Tensor, Tensor, Vec<i64>) {
    let (mut xs, mut ys, mut starts) = (Vec::new(), Vec::new(), Vec::new());
    let mut at = 0;
    for fold in folds {
        starts.push(at);
        at += fold.order.len() as i64 + 1;
        xs.push(fold.x.constant_pad_nd([0, 0, 0, 1]));
        ys.push(fold.y.constant_pad_nd([0, 1]));
    }
    (Tensor::cat(&xs, 0), Tensor::cat(&ys, 0), starts)
}

/// `t` on `dev` (no call where it is there already: a step's ops are its cost).
fn on(dev: Device, t: Tensor) -> Tensor {
    if dev == Device::Cpu {
        t
    } else {
        t.to_device(dev)
    }
}

/// How libtorch takes a task's targets: class indices or values.
fn y_kind(task: Task) -> Kind {
    match task {
        Task::Classification => Kind::Int64,
        Task::Regression => Kind::Float,
    }
}

/// A sum of weights to divide by: one where a fold has no rows (its loss is then 0).
fn positive(sum: f32) -> f32 {
    if sum > 0.0 {
        sum
    } else {
        1.0
    }
}

impl Stack {
    fn of(cfg: &ModelConfig, folds: &[Fold], dev: Device) -> Result<Stack> {
        let vs = nn::VarStore::new(dev);
        let root = vs.root();
        let vars: Vec<_> = folds.iter().map(|f| f.vs.variables()).collect();
        let widths =
            runner::models::parse_widths(cfg.str("hidden")?).map_err(|e| anyhow!("hidden: {e}"))?;
        let bn = cfg.bool("batch_norm")?;
        let convs = convolutions(cfg, &root, &vars, folds[0].x.size()[1])?;
        let recurrent = recurrent(cfg, &root, &vars)?;
        let head = if cfg.kind == "mlp" { "" } else { "head." };
        let layers = (0..widths.len())
            .map(|i| {
                Layer::of(
                    &root,
                    &vars,
                    &format!("{head}dense{i}"),
                    bn.then(|| format!("{head}bn{i}")),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let out = Layer::of(&root, &vars, "out", None)?;
        let task = folds[0].data.task;
        let (x, y, starts) = end_to_end(folds);
        let valid = folds.iter().any(|f| f.valid.is_some()).then(|| {
            padded(task, folds, |f| {
                let (x, y, values) = f.valid.as_ref()?;
                let w = values.iter().map(|v| f.weight_of(*v)).collect();
                Some((x.shallow_clone(), y.shallow_clone(), w))
            })
        });
        Ok(Stack {
            x,
            y,
            starts,
            valid,
            vs,
            convs,
            recurrent,
            head,
            layers,
            out,
            task,
            activation: cfg.str("activation")?.to_string(),
            dropout: cfg.float("dropout")?,
            bn: BatchNormConfig::default(),
        })
    }

    /// The stacked network: inputs [fold, rows, features], outputs [fold, rows, outputs];
    /// training (batch norm on the batch, dropout) when given the step's batch.
    fn forward(&self, x: &Tensor, batch: Option<&Batch>) -> Tensor {
        let mut h = match &self.recurrent {
            Some(lstm) => lstm.forward(x),
            None => self.convolved(x, batch),
        };
        for (l, layer) in self.layers.iter().enumerate() {
            h = layer.b.baddbmm(&h, &layer.w, 1, 1);
            if let Some(norm) = &layer.norm {
                h = match batch {
                    Some(batch) => norm.train(&h, &batch.stats, &self.bn),
                    None => norm.eval(&h, &self.bn),
                };
            }
            h = torch::activation(&self.activation, &h);
            if let Some(batch) = batch.filter(|_| self.dropout > 0.0) {
                // Not `*=`: in place, it would overwrite what the activation's gradient needs.
                #[allow(clippy::assign_op_pattern)]
                {
                    h = h * &batch.drops[l];
                }
            }
        }
        self.out.b.baddbmm(&h, &self.out.w, 1, 1)
    }

    /// The CNN's convolutions on inputs [fold, rows, features], flattened as the head reads
    /// them (channel after channel); the inputs themselves for the MLP.
    fn convolved(&self, x: &Tensor, batch: Option<&Batch>) -> Tensor {
        if self.convs.is_empty() {
            return x.shallow_clone();
        }
        let (folds, rows) = (x.size()[0], x.size()[1]);
        // [fold, row, position, channel]
        let mut h = x.unsqueeze(-1);
        for conv in &self.convs {
            let (k, channels) = (conv.width, h.size()[3]);
            let windows = torch::windows(&h.constant_pad_nd([0, 0, k / 2, k / 2]), 2, k);
            let positions = windows.size()[2];
            let flat = windows.reshape([folds, -1, channels * k]);
            let mut z = conv.layer.b.baddbmm(&flat, &conv.layer.w, 1, 1);
            if let Some(norm) = &conv.layer.norm {
                z = match batch {
                    Some(batch) => norm.train(&z, &batch.stats.over_positions(positions), &self.bn),
                    None => norm.eval(&z, &self.bn),
                };
            }
            z = torch::activation(&self.activation, &z).view([folds, rows, positions, -1]);
            h = match conv.pool {
                Some(max) if positions >= 2 => {
                    let pooled = torch::pool_pairs(&z.view([folds * rows, positions, -1]), max);
                    pooled.view([folds, rows, positions / 2, -1])
                }
                _ => z,
            };
        }
        h.permute([0, 1, 3, 2]).reshape([folds, rows, -1])
    }

    /// Each fold's loss, [fold]: the weighted mean over its rows of cross-entropy or squared
    /// error.
    fn losses(&self, logits: &Tensor, rows: &Padded) -> Tensor {
        let per_row = match self.task {
            Task::Classification => logits
                .log_softmax(-1, Kind::Float)
                .gather(2, &rows.y.unsqueeze(-1), false)
                .squeeze_dim(-1)
                .neg(),
            Task::Regression => (logits.squeeze_dim(-1) - &rows.y).square(),
        };
        (per_row * &rows.share).sum_dim_intlist(1, false, Kind::Float)
    }

    /// One epoch: each fold's rows shuffled by its seed, `steps` steps; each fold's mean loss.
    fn epoch(
        &self,
        folds: &mut [Fold],
        epoch: i64,
        steps: usize,
        opt: &mut torch::Optimizer,
    ) -> Result<Vec<f64>> {
        for fold in folds.iter_mut() {
            SplitMix64::derive(fold.ctx.seed, 0xE90C + epoch as u64).shuffle(&mut fold.order);
        }
        let rows = self.epoch_rows(folds, steps);
        let mut step_losses = Vec::with_capacity(steps);
        for s in 0..rows.lens.len() {
            let batch = self.batch(&rows, folds, s);
            let losses = self.losses(&self.forward(&batch.rows.x, Some(&batch)), &batch.rows);
            opt.backward_step(&losses.sum(Kind::Float))?;
            step_losses.push(losses.detach());
        }
        // Read once an epoch, not once a step (a step's ops are its cost): [step, fold].
        let values = Vec::<f64>::try_from(
            Tensor::stack(&step_losses, 0)
                .to_kind(Kind::Double)
                .view(-1),
        )?;
        let (mut total, mut seen) = (vec![0.0; folds.len()], vec![0usize; folds.len()]);
        for (s, lens) in rows.lens.iter().enumerate() {
            for (k, len) in lens.iter().enumerate() {
                total[k] += values[s * folds.len() + k] * *len as f64;
                seen[k] += len;
            }
        }
        Ok(total
            .iter()
            .zip(&seen)
            .map(|(t, n)| t / (*n).max(1) as f64)
            .collect())
    }

    /// The epoch's batches of every fold, gathered at once.
    fn epoch_rows(&self, folds: &[Fold], steps: usize) -> EpochRows {
        let f = folds.len();
        let lens: Vec<Vec<usize>> = (0..steps)
            .map(|s| {
                folds
                    .iter()
                    .map(|fold| chunk(fold.order.len(), steps, s).1)
                    .collect()
            })
            .collect();
        let longest = lens.iter().flatten().copied().max().unwrap_or(0);
        let slots = steps * f * longest;
        let mut index = Vec::with_capacity(slots);
        let (mut share, mut stat_share) = (vec![0f32; slots], vec![0f32; slots]);
        let (mut unbiased, mut count) = (Vec::with_capacity(steps * f), Vec::new());
        for s in 0..steps {
            for (k, fold) in folds.iter().enumerate() {
                let (start, len) = chunk(fold.order.len(), steps, s);
                let at = (s * f + k) * longest;
                let rows = &fold.order[start..start + len];
                let pad = self.starts[k] + fold.order.len() as i64;
                index.extend(rows.iter().map(|r| self.starts[k] + *r as i64));
                index.extend((len..longest).map(|_| pad));
                let weights: Vec<f32> = rows
                    .iter()
                    .map(|r| fold.weight_of(fold.y_values[*r]))
                    .collect();
                let sum = positive(weights.iter().sum());
                for (j, w) in weights.iter().enumerate() {
                    share[at + j] = w / sum;
                    stat_share[at + j] = 1.0 / len as f32;
                }
                let n = len as f32;
                unbiased.push(if n > 1.0 { n / (n - 1.0) } else { 1.0 });
                count.push(n.max(1.0));
            }
        }
        let dev = self.x.device();
        let index = on(dev, Tensor::from_slice(&index));
        let shape = [steps as i64, f as i64, longest as i64];
        EpochRows {
            x: self
                .x
                .index_select(0, &index)
                .view([shape[0], shape[1], shape[2], -1]),
            y: self.y.index_select(0, &index).view(shape),
            share: on(dev, Tensor::from_slice(&share).view(shape)),
            stat_share: on(
                dev,
                Tensor::from_slice(&stat_share).view([shape[0], shape[1], 1, shape[2]]),
            ),
            unbiased: on(
                dev,
                Tensor::from_slice(&unbiased).view([shape[0], shape[1], 1, 1]),
            ),
            count: on(
                dev,
                Tensor::from_slice(&count).view([shape[0], shape[1], 1, 1]),
            ),
            lens,
            longest,
        }
    }

    /// Step `s`'s batch of every fold, its dropout masks drawn.
    fn batch(&self, rows: &EpochRows, folds: &mut [Fold], s: usize) -> Batch {
        let at = s as i64;
        Batch {
            rows: Padded {
                x: rows.x.get(at),
                y: rows.y.get(at),
                share: rows.share.get(at),
            },
            stats: Stats {
                share: rows.stat_share.get(at),
                count: rows.count.get(at),
                unbiased: rows.unbiased.get(at),
            },
            drops: self.drops(folds, &rows.lens[s], rows.longest),
        }
    }

    /// Each dense layer's dropout mask for the step: each fold's rows from its own generator
    /// (libtorch's rule, kept rows scaled by 1 / (1 - p)); padding rows 0.
    fn drops(&self, folds: &mut [Fold], lens: &[usize], longest: usize) -> Vec<Tensor> {
        if self.dropout <= 0.0 {
            return Vec::new();
        }
        let keep = 1.0 - self.dropout;
        let (bound, scale) = (keep_bound(keep), (1.0 / keep) as f32);
        let widths: Vec<usize> = self.layers.iter().map(|l| l.w.size()[2] as usize).collect();
        let mut masks: Vec<Vec<f32>> = (widths.iter())
            .map(|w| vec![0.0; folds.len() * longest * w])
            .collect();
        for (k, (fold, len)) in folds.iter_mut().zip(lens).enumerate() {
            for (mask, w) in masks.iter_mut().zip(&widths) {
                let rows = &mut mask[k * longest * w..(k * longest + len) * w];
                fold.masks.fill_mask(bound, scale, rows);
            }
        }
        let dev = self.x.device();
        let shape = |w: usize| [folds.len() as i64, longest as i64, w as i64];
        (masks.iter().zip(&widths))
            .map(|(m, w)| on(dev, Tensor::from_slice(m).view(shape(*w))))
            .collect()
    }

    /// Scores each fold's rows to score after the epoch: records its loss and accuracy (or
    /// MAE); the first fold's loss, for early stopping (a stack of one).
    fn score_valid(&self, folds: &[Fold], epoch: i64) -> Result<Option<f64>> {
        let Some(valid) = &self.valid else {
            return Ok(None);
        };
        let logits = tch::no_grad(|| self.forward(&valid.x, None));
        let losses = Vec::<f64>::try_from(self.losses(&logits, valid).to_kind(Kind::Double))?;
        for (k, fold) in folds.iter().enumerate() {
            if let Some((_, _, values)) = &fold.valid {
                fold.ctx.record(epoch, "valid_loss", losses[k]);
                let own = logits.get(k as i64).narrow(0, 0, values.len() as i64);
                torch::record_valid_score(fold.ctx, fold.data, epoch, &own, values)?;
            }
        }
        Ok(losses.first().copied())
    }

    /// Fold `k`'s trained weights into its own network.
    fn write_back(&self, k: i64, vs: &nn::VarStore) -> Result<()> {
        let vars = vs.variables();
        for (i, conv) in self.convs.iter().enumerate() {
            (conv.layer).write_back(k, &vars, &format!("conv{i}"), &format!("cbn{i}"))?;
        }
        if let Some(lstm) = &self.recurrent {
            for (name, w) in lstm.names.iter().zip(&lstm.weights) {
                let mut own = (vars.get(name))
                    .ok_or_else(|| anyhow!("the network has no weight `{name}`"))?
                    .shallow_clone();
                tch::no_grad(|| own.copy_(&w.get(k)));
            }
        }
        let head = self.head;
        for (i, layer) in self.layers.iter().enumerate() {
            let (dense, bn) = (format!("{head}dense{i}"), format!("{head}bn{i}"));
            layer.write_back(k, &vars, &dense, &bn)?;
        }
        self.out.write_back(k, &vars, "out", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use runner::models::{FittedModel, ParamValue};
    use tch::nn::ModuleT;

    /// `rows` rows of 9 features and 3 classes that depend on them, drawn from `seed`.
    fn table(rows: usize, seed: u64) -> (Array2<f64>, Array1<f64>) {
        let mut rng = SplitMix64::new(seed);
        let x = Array2::from_shape_fn((rows, 9), |_| rng.next_f64() * 4.0 - 2.0);
        let y = x
            .rows()
            .into_iter()
            .map(|r| (r[0] + r[1] - r[2]).floor().clamp(-1.0, 1.0) + 1.0)
            .collect();
        (x, y)
    }

    fn config(kind: &str) -> ModelConfig {
        let mut cfg = ModelConfig::with_defaults(kind, kind).unwrap();
        let mut set = |k: &str, v: ParamValue| cfg.params.insert(k.to_string(), v);
        set("hidden", ParamValue::Str("16,8".into()));
        set("dropout", ParamValue::Float(0.2));
        set("batch_norm", ParamValue::Bool(true));
        set("batch_size", ParamValue::Int(16));
        set("epochs", ParamValue::Int(5));
        if kind == "cnn" {
            set("channels", ParamValue::Int(4));
            set("conv_layers", ParamValue::Int(2));
        }
        if kind == "lstm" {
            set("hidden_size", ParamValue::Int(6));
        }
        cfg
    }

    fn set(x: &Array2<f64>, y: &Array1<f64>) -> TrainSet<'static> {
        let (x, y) = (
            Box::leak(Box::new(x.clone())),
            Box::leak(Box::new(y.clone())),
        );
        TrainSet {
            x: x.view(),
            y: y.view(),
            task: Task::Classification,
            n_classes: 3,
            labels: None,
        }
    }

    /// Trains the folds of `tables` stacked, fold k seeded by `seeds[k]`; each fold's
    /// probabilities on `probe`.
    fn probabilities(
        kind: &str,
        tables: &[(Array2<f64>, Array1<f64>)],
        seeds: &[u64],
        probe: &Array2<f64>,
    ) -> Vec<Vec<f64>> {
        let sets: Vec<TrainSet> = tables.iter().map(|(x, y)| set(x, y)).collect();
        let ctxs: Vec<FitContext> = seeds.iter().map(|s| FitContext::new(*s, 1)).collect();
        let members: Vec<_> = sets.iter().zip(&ctxs).collect();
        let models = fit_stack(&config(kind), &members).unwrap();
        (models.iter())
            .map(|m| {
                let proba = m.predict(probe.view()).unwrap().proba.unwrap();
                proba.iter().copied().collect()
            })
            .collect()
    }

    /// A fold's network is its own: the same whatever folds train beside it (here one of other
    /// rows, then one of fewer rows, padded), to the bit.
    #[test]
    fn a_folds_network_does_not_depend_on_the_folds_beside_it() {
        let _turn = crate::generator_turn();
        let (a, probe) = (table(100, 7), table(30, 9).0);
        for kind in ["mlp", "cnn", "lstm"] {
            let beside_b = probabilities(kind, &[a.clone(), table(100, 8)], &[1, 2], &probe);
            let beside_c = probabilities(kind, &[a.clone(), table(93, 10)], &[1, 2], &probe);
            assert_eq!(beside_b[0], beside_c[0], "{kind}");
            assert_ne!(beside_b[1], beside_c[1], "{kind}");
        }
    }

    /// A fold whose batches are padded (it has fewer rows than the longest) trains as it would
    /// alone: padding rows weigh nothing in its loss and count in none of its batch norm's
    /// statistics. (Close, not to the bit: sums over padded batches round in another order.)
    #[test]
    fn a_padded_fold_trains_as_it_would_alone() {
        let _turn = crate::generator_turn();
        let probe = table(30, 9).0;
        // 100 and 97 rows in batches of 16: seven steps an epoch either way.
        let (long, short) = (table(100, 7), table(97, 8));
        for kind in ["mlp", "cnn", "lstm"] {
            let stacked = probabilities(kind, &[long.clone(), short.clone()], &[1, 2], &probe);
            let alone = probabilities(kind, std::slice::from_ref(&short), &[2], &probe);
            let gap = (stacked[1].iter().zip(&alone[0]))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(gap < 1e-4, "{kind}: {gap}");
            assert!(stacked[1].iter().all(|p| p.is_finite()), "{kind}");
        }
    }

    /// What each fold's own network (as exported) computes is what the stack computed for it,
    /// after a few epochs (weights and batch norm's running statistics written back).
    #[test]
    fn each_folds_network_computes_what_the_stack_did() {
        let _turn = crate::generator_turn();
        let tables = [table(60, 3), table(57, 4)];
        let sets: Vec<TrainSet> = tables.iter().map(|(x, y)| set(x, y)).collect();
        let ctxs: Vec<FitContext> = (1..=2).map(|s| FitContext::new(s, 1)).collect();
        let dev = Device::Cpu;
        for kind in ["mlp", "cnn", "lstm"] {
            let cfg = config(kind);
            let mut folds = (sets.iter().zip(&ctxs))
                .map(|(d, c)| Fold::new(&cfg, d, c, 0, dev))
                .collect::<Result<Vec<_>>>()
                .unwrap();
            let stack = Stack::of(&cfg, &folds, dev).unwrap();
            let mut opt = torch::optimizer(&cfg, &stack.vs).unwrap();
            for epoch in 0..3 {
                stack.epoch(&mut folds, epoch, 4, &mut opt).unwrap();
            }
            let probe = torch::tensor(table(20, 9).0.view(), dev);
            let inputs: Vec<Tensor> = (folds.iter())
                .map(|f| tch::no_grad(|| f.net.standardise(&probe)))
                .collect();
            let stacked = tch::no_grad(|| stack.forward(&Tensor::stack(&inputs, 0), None));
            for (k, fold) in folds.iter().enumerate() {
                stack.write_back(k as i64, &fold.vs).unwrap();
                let own = tch::no_grad(|| fold.net.forward_t(&probe, false));
                let gap = (own - stacked.get(k as i64)).abs().max().double_value(&[]);
                assert!(gap < 1e-5, "{kind} fold {k}: {gap}");
            }
        }
    }

    /// In training, the stack normalises a batch as libtorch's batch norm does (the batch's
    /// own statistics; over rows and positions after a convolution).
    #[test]
    fn a_training_step_normalises_as_libtorchs_batch_norm() {
        let _turn = crate::generator_turn();
        let (x, y) = table(40, 5);
        let data = set(&x, &y);
        let ctx = FitContext::new(3, 1);
        for kind in ["mlp", "cnn", "lstm"] {
            let mut cfg = config(kind);
            cfg.params.insert("dropout".into(), ParamValue::Float(0.0));
            let mut folds = vec![Fold::new(&cfg, &data, &ctx, 0, Device::Cpu).unwrap()];
            let stack = Stack::of(&cfg, &folds, Device::Cpu).unwrap();
            let rows = stack.epoch_rows(&folds, 1);
            let batch = stack.batch(&rows, &mut folds, 0);
            let stacked = tch::no_grad(|| stack.forward(&batch.rows.x, Some(&batch)));
            let own = tch::no_grad(|| {
                folds[0]
                    .net
                    .forward_standardised(&batch.rows.x.get(0), true)
            });
            let gap = (own - stacked.get(0)).abs().max().double_value(&[]);
            assert!(gap < 1e-4, "{kind}: {gap}");
        }
    }
}
