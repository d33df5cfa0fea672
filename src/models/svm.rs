//! Kernel support vector machines: C-SVC (one machine for two classes, one per class against the
//! rest for more, each with Platt-scaled probabilities) and epsilon-SVR.
//!
//! Algorithm 2 (the default) trains with this crate's libsvm-style solver (`smo`): second-order
//! working-set selection and a bounded cache of kernel rows, with the Platt sigmoid fitted on
//! cross-validated decision values as libsvm does. Algorithm 1 trained with linfa-svm (one
//! machine per class even for two, the sigmoid fitted on the training decision values); runs
//! recorded with it still train and load with it.

mod smo;

use super::params::{Default_, ParamSpec, ParamType, BOTH};
use super::{labels_from_proba, FitContext, FittedModel, KindSpec, ModelConfig, Prediction};
use super::{Task, TrainSet};
use crate::calibrate::{platt, platt_probability};
use crate::rng::SplitMix64;
use anyhow::{anyhow, bail, Result};
use linfa::dataset::Pr;
use linfa::prelude::*;
use linfa_svm::Svm;
use ndarray::{Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use smo::{lane_sums, ExactGram, Gram, Kernel, Problem, Rows, LANES};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

pub(crate) static SVM: KindSpec = KindSpec {
    kind: "svm",
    tasks: BOTH,
    backend: "runner's libsvm-style SMO with shrinking (one machine for two classes, one per class against the rest for more, Platt-scaled on cross-validated decisions; epsilon-SVR); without shrinking for runs of algorithm 2, linfa-svm for algorithm 1",
    help: "support vector machine",
    feature: None,
    onnx: true,
    algorithm: 3,
    unscaled_from: None,
    curve_axis: "step",
    params: class_params![
        ParamSpec {
            name: "kernel",
            ty: ParamType::Choice(&["rbf", "linear", "poly"]),
            default: Default_::Str("rbf"),
            help: "kernel function",
        },
        ParamSpec {
            name: "c",
            ty: ParamType::Float {
                min: 1e-6,
                max: 1e6,
            },
            default: Default_::Float(1.0),
            help: "regularisation: larger fits the training data harder",
        },
        ParamSpec {
            name: "gamma",
            ty: ParamType::Float {
                min: 1e-9,
                max: 1e6,
            },
            default: Default_::Float(0.1),
            help: "RBF width: k(x, y) = exp(-gamma |x - y|^2)",
        },
        ParamSpec {
            name: "degree",
            ty: ParamType::Int { min: 1, max: 10 },
            default: Default_::Int(3),
            help: "polynomial kernel degree: k(x, y) = (x . y + coef0)^degree",
        },
        ParamSpec {
            name: "coef0",
            ty: ParamType::Float { min: 0.0, max: 1e6 },
            default: Default_::Float(1.0),
            help: "polynomial kernel constant",
        },
        ParamSpec {
            name: "epsilon",
            ty: ParamType::Float { min: 0.0, max: 1e6 },
            default: Default_::Float(0.1),
            help: "epsilon-insensitive tube (regression)",
        },
        ParamSpec {
            name: "tolerance",
            ty: ParamType::Float {
                min: 1e-12,
                max: 1.0,
            },
            default: Default_::Float(1e-3),
            help: "SMO stopping tolerance",
        },
        ParamSpec {
            name: "platt_folds",
            ty: ParamType::Int { min: 0, max: 20 },
            default: Default_::Int(5),
            help: "folds of the internal cross-validation whose decision values fit the Platt sigmoid, as libsvm's probability option (0 or 1: fit it on the training decision values, quicker but overconfident; algorithm 2)",
        },
        ParamSpec {
            name: "cache_mb",
            ty: ParamType::Int {
                min: 1,
                max: 1_000_000,
            },
            default: Default_::Int(200),
            help: "megabytes of kernel values a fit keeps: each machine's cache of kernel rows, or one table of them all shared by the fit's machines where it fits (in doubles too where both fit, read by the Platt folds); algorithm 2 on",
        },
    ],
};

backend!(
    SvmBackend,
    SVM,
    |cfg, data, ctx| match cfg.algorithm() {
        1 => fit_linfa(cfg, data),
        _ => fit(cfg, data, ctx),
    },
    |saved| load(saved.config.algorithm(), saved.task, saved.fitted)
);

/// Rebuilds a saved SVM of either algorithm from its JSON form.
fn load(algorithm: u32, task: Task, value: &serde_json::Value) -> Result<Box<dyn FittedModel>> {
    let v = value.clone();
    Ok(match (algorithm, task) {
        (1, Task::Classification) => Box::new(serde_json::from_value::<OneVsRestSvm>(v)?),
        (1, Task::Regression) => Box::new(serde_json::from_value::<SvmRegressor>(v)?),
        (_, Task::Classification) => Box::new(serde_json::from_value::<SvmClassifier>(v)?),
        (_, Task::Regression) => Box::new(serde_json::from_value::<Machine>(v)?),
    })
}

// ---------------------------------------------------------------- algorithm 2

/// One trained machine: `f(x) = sum_s coef_s K(sv_s, x) - rho`.
#[derive(Serialize, Deserialize)]
struct Machine {
    kernel: Kernel,
    width: usize,
    /// The support vectors, row after row.
    support: Vec<f64>,
    coef: Vec<f64>,
    rho: f64,
    /// The solver's pair updates, for the curious.
    iterations: usize,
}

impl Machine {
    /// `f(x)` of each row of `x` (as [`shared_decisions`] computes them).
    fn decisions(&self, x: ArrayView2<f64>) -> Result<Vec<f64>> {
        let mut all = shared_decisions(&[self], x)?;
        Ok(all.pop().unwrap_or_default())
    }

    fn check_width(&self, x: ArrayView2<f64>) -> Result<()> {
        if x.ncols() != self.width {
            bail!(
                "svm: {} input columns, trained on {}",
                x.ncols(),
                self.width
            );
        }
        if self.support.len() != self.coef.len() * self.width {
            bail!("svm: damaged support vectors");
        }
        Ok(())
    }
}

impl FittedModel for Machine {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        Ok(Prediction {
            values: self.decisions(x)?,
            proba: None,
        })
    }
    fn to_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(self)?)
    }
}

/// The distinct support vectors of several machines over one table, and where each machine's
/// are among them: the machines of a one-vs-rest fit share most of their rows, so a prediction
/// computes each kernel value once instead of once per machine.
struct SharedSupport {
    rows: Rows,
    /// Per machine, the shared row of each of its support vectors, in its order.
    picks: Vec<Vec<usize>>,
}

impl SharedSupport {
    fn new(machines: &[&Machine], width: usize) -> SharedSupport {
        let mut first_seen: HashMap<Vec<u64>, usize> = HashMap::new();
        let mut values = Vec::new();
        let picks = machines
            .iter()
            .map(|m| {
                (m.support.chunks(width.max(1)))
                    .map(|row| {
                        let key = row.iter().map(|v| v.to_bits()).collect();
                        *first_seen.entry(key).or_insert_with(|| {
                            values.extend_from_slice(row);
                            values.len() / width.max(1) - 1
                        })
                    })
                    .collect()
            })
            .collect();
        SharedSupport {
            rows: Rows::from_values(values, width),
            picks,
        }
    }
}

/// Each machine's decision values on `x`: `sum_s coef_s K(sv_s, x) - rho`, its support vectors'
/// kernel values added in their order (`Iterator::sum`'s value, to the bit). A kernel value
/// shared by the machines (a one-vs-rest fit's machines share most of their rows) is computed
/// once, and [`LANES`] rows are summed side by side.
fn shared_decisions(machines: &[&Machine], x: ArrayView2<f64>) -> Result<Vec<Vec<f64>>> {
    let Some(first) = machines.first() else {
        return Ok(Vec::new());
    };
    for m in machines {
        m.check_width(x)?;
    }
    if machines.iter().any(|m| m.kernel != first.kernel) {
        return machines.iter().map(|m| m.decisions(x)).collect();
    }
    let shared = SharedSupport::new(machines, first.width);
    let queries = Rows::new(x);
    let units = shared.rows.count();
    let mut kernel = vec![0.0; LANES * units];
    let mut out = vec![Vec::with_capacity(queries.count()); machines.len()];
    for start in (0..queries.count()).step_by(LANES) {
        let block = (queries.count() - start).min(LANES);
        for (lane, values) in kernel.chunks_mut(units.max(1)).take(block).enumerate() {
            let (xq, nq) = (queries.row(start + lane), queries.norm(start + lane));
            for (u, k) in values.iter_mut().enumerate() {
                *k = (first.kernel).value(shared.rows.row(u), xq, shared.rows.norm(u), nq);
            }
        }
        let lanes: [&[f64]; LANES] =
            std::array::from_fn(|lane| &kernel[lane.min(block - 1) * units..][..units]);
        for ((m, picks), decisions) in machines.iter().zip(&shared.picks).zip(&mut out) {
            let sums = lane_sums(lanes, &m.coef, picks);
            decisions.extend(sums[..block].iter().map(|sum| sum - m.rho));
        }
    }
    Ok(out)
}

/// A machine for `class` against the others, with its Platt sigmoid `1 / (1 + exp(a f + b))`.
#[derive(Serialize, Deserialize)]
struct ClassMachine {
    class: usize,
    platt: [f64; 2],
    machine: Machine,
}

impl ClassMachine {
    fn probabilities(&self, x: ArrayView2<f64>) -> Result<Vec<f64>> {
        let f = self.machine.decisions(x)?;
        Ok(f.into_iter().map(|f| self.probability(f)).collect())
    }

    /// The Platt sigmoid of a decision value.
    fn probability(&self, decision: f64) -> f64 {
        let [a, b] = self.platt;
        platt_probability(decision, a, b)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
enum SvmClassifier {
    /// Two classes: one machine for the second against the first.
    Binary {
        n_classes: usize,
        machine: ClassMachine,
    },
    /// More: one machine per class present, its probabilities normalised over the classes.
    OneVsRest {
        n_classes: usize,
        machines: Vec<ClassMachine>,
    },
    /// The training rows held one class.
    Single { n_classes: usize, class: usize },
}

impl FittedModel for SvmClassifier {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        let proba = match self {
            SvmClassifier::Binary { n_classes, machine } => {
                let mut proba = Array2::zeros((x.nrows(), *n_classes));
                for (i, p) in machine.probabilities(x)?.into_iter().enumerate() {
                    proba[[i, machine.class]] = p;
                    proba[[i, 1 - machine.class]] = 1.0 - p;
                }
                proba
            }
            SvmClassifier::OneVsRest {
                n_classes,
                machines,
            } => one_vs_rest(x, *n_classes, machines)?,
            SvmClassifier::Single { n_classes, class } => {
                let mut proba = Array2::zeros((x.nrows(), *n_classes));
                proba.column_mut(*class).fill(1.0);
                proba
            }
        };
        Ok(Prediction {
            values: labels_from_proba(&proba),
            proba: Some(proba),
        })
    }
    fn to_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(self)?)
    }
}

fn one_vs_rest(x: ArrayView2<f64>, k: usize, machines: &[ClassMachine]) -> Result<Array2<f64>> {
    let mut proba = Array2::zeros((x.nrows(), k));
    let plain: Vec<&Machine> = machines.iter().map(|m| &m.machine).collect();
    for (m, decisions) in machines.iter().zip(shared_decisions(&plain, x)?) {
        for (i, f) in decisions.into_iter().enumerate() {
            proba[[i, m.class]] = m.probability(f);
        }
    }
    for mut row in proba.rows_mut() {
        let total: f64 = row.sum();
        if total > 0.0 {
            row.mapv_inplace(|v| v / total);
        }
    }
    Ok(proba)
}

/// What every machine of one fit shares.
struct Settings {
    kernel: Kernel,
    tolerance: f64,
    cache_bytes: usize,
    /// libsvm's shrinking, from algorithm 3.
    shrinking: bool,
    platt_folds: usize,
    seed: u64,
}

impl Settings {
    fn from_config(cfg: &ModelConfig, seed: u64) -> Result<Settings> {
        let kernel = match cfg.str("kernel")? {
            "linear" => Kernel::Linear,
            "poly" => Kernel::Poly {
                coef0: cfg.float("coef0")?,
                degree: cfg.int("degree")? as i32,
            },
            _ => Kernel::Rbf {
                gamma: cfg.float("gamma")?,
            },
        };
        Ok(Settings {
            kernel,
            tolerance: cfg.float("tolerance")?,
            cache_bytes: cfg.int("cache_mb")? as usize * (1 << 20),
            shrinking: cfg.algorithm() >= 3,
            platt_folds: cfg.int("platt_folds")? as usize,
            seed,
        })
    }

    /// Solves one problem over `rows` and keeps its support vectors.
    fn machine(&self, rows: &Rows, y: Vec<f64>, p: Vec<f64>, c: Vec<f64>) -> Machine {
        self.machine_over(rows, None, y, p, c).0
    }

    /// The machine, and which of `rows` its support vectors are.
    fn machine_over(
        &self,
        rows: &Rows,
        gram: Option<(&Gram, &[usize])>,
        y: Vec<f64>,
        p: Vec<f64>,
        c: Vec<f64>,
    ) -> (Machine, Vec<usize>) {
        let problem = Problem {
            rows,
            kernel: self.kernel,
            gram,
            y,
            p,
            c,
            tolerance: self.tolerance,
            cache_bytes: self.cache_bytes,
            shrinking: self.shrinking,
        };
        let solution = problem.solve();
        let n = rows.count();
        let mut coef = vec![0.0; n];
        for (t, a) in solution.alpha.iter().enumerate() {
            coef[t % n] += problem.y[t] * a;
        }
        let (mut support, mut kept, mut support_rows) = (Vec::new(), Vec::new(), Vec::new());
        for (i, c) in coef.into_iter().enumerate() {
            if c != 0.0 {
                support.extend_from_slice(rows.row(i));
                kept.push(c);
                support_rows.push(i);
            }
        }
        let machine = Machine {
            kernel: self.kernel,
            width: rows.width(),
            support,
            coef: kept,
            rho: solution.rho,
            iterations: solution.iterations,
        };
        (machine, support_rows)
    }

    /// C-SVC: `positive` rows against the others, with per-side bounds; which rows are its
    /// support vectors.
    fn classifier(
        &self,
        rows: &Rows,
        gram: Option<(&Gram, &[usize])>,
        positive: &[bool],
        bounds: (f64, f64),
    ) -> (Machine, Vec<usize>) {
        let y = positive
            .iter()
            .map(|p| if *p { 1.0 } else { -1.0 })
            .collect();
        let c = (positive.iter())
            .map(|p| if *p { bounds.0 } else { bounds.1 })
            .collect();
        self.machine_over(rows, gram, y, vec![-1.0; rows.count()], c)
    }

    /// epsilon-SVR: variable `i` pushes row `i` up, variable `n + i` down.
    fn regressor(&self, rows: &Rows, target: &[f64], c: f64, epsilon: f64) -> Machine {
        let n = target.len();
        let y = (0..2 * n).map(|t| if t < n { 1.0 } else { -1.0 }).collect();
        let p = (target.iter().map(|v| epsilon - v))
            .chain(target.iter().map(|v| epsilon + v))
            .collect();
        self.machine(rows, y, p, vec![c; 2 * n])
    }
}

fn fit(cfg: &ModelConfig, data: &TrainSet, ctx: &FitContext) -> Result<Box<dyn FittedModel>> {
    let settings = Settings::from_config(cfg, ctx.seed)?;
    let rows = Rows::new(data.x);
    if data.task == Task::Regression {
        let target = data.y.to_vec();
        let (c, epsilon) = (cfg.float("c")?, cfg.float("epsilon")?);
        return Ok(Box::new(settings.regressor(&rows, &target, c, epsilon)));
    }
    let labels = data.class_labels();
    let bounds = class_bounds(cfg, data, &labels)?;
    let present: Vec<usize> = (0..data.n_classes).filter(|c| labels.contains(c)).collect();
    let n_classes = data.n_classes;
    let model = match present.as_slice() {
        [] => bail!("svm: no training rows"),
        [class] => SvmClassifier::Single {
            n_classes,
            class: *class,
        },
        [_, second] if n_classes == 2 => {
            let jobs = vec![*second];
            let mut machines = calibrated(&settings, &rows, &labels, &jobs, &bounds, ctx)?;
            let machine = machines.pop().ok_or_else(|| anyhow!("svm: no machine"))?;
            SvmClassifier::Binary { n_classes, machine }
        }
        _ => SvmClassifier::OneVsRest {
            n_classes,
            machines: calibrated(&settings, &rows, &labels, &present, &bounds, ctx)?,
        },
    };
    Ok(Box::new(model))
}

/// Trains a calibrated machine per class in `classes` (against the rest), the machines and
/// their Platt folds spread over the context's threads; the same result at any thread count.
fn calibrated(
    settings: &Settings,
    rows: &Rows,
    labels: &[usize],
    classes: &[usize],
    bounds: &[(f64, f64)],
    ctx: &FitContext,
) -> Result<Vec<ClassMachine>> {
    // Fewer than 2 folds: the sigmoid is fitted on the training decision values.
    let folds = Some(settings.platt_folds).filter(|k| *k >= 2).unwrap_or(0);
    let per_class = 1 + folds;
    let jobs = classes.len() * per_class;
    // A table whose kernel fits the cache is computed once for every machine and fold; where
    // its doubles fit too, the folds' decision values are read from them.
    let n = rows.count();
    let both = Gram::bytes(n) + ExactGram::bytes(n);
    let exact = (jobs > 1 && folds > 0 && both <= settings.cache_bytes)
        .then(|| ExactGram::compute(rows, settings.kernel, ctx.threads));
    let gram = match &exact {
        Some(exact) => Some(Gram::of_exact(exact)),
        None => (jobs > 1 && Gram::bytes(n) <= settings.cache_bytes)
            .then(|| Gram::compute(rows, settings.kernel, ctx.threads)),
    };
    let identity: Vec<usize> = (0..n).collect();
    let whole = gram.as_ref().map(|g| (g, identity.as_slice()));
    let results: Vec<Mutex<Option<Job>>> = (0..jobs).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || loop {
        let at = next.fetch_add(1, Ordering::Relaxed);
        if at >= jobs || ctx.stop_requested() {
            break;
        }
        let class = classes[at / per_class];
        let positive: Vec<bool> = labels.iter().map(|l| *l == class).collect();
        let job = match at % per_class {
            0 => Job::Full(settings.classifier(rows, whole, &positive, bounds[class]).0),
            fold => Job::Fold(fold_decisions(
                settings,
                (rows, gram.as_ref(), exact.as_ref()),
                &positive,
                bounds[class],
                (fold - 1, class),
            )),
        };
        if let Ok(mut slot) = results[at].lock() {
            *slot = Some(job);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..ctx.threads.clamp(1, jobs.max(1)) {
            s.spawn(work);
        }
        work();
    });
    let mut done = results.into_iter().map(|m| m.into_inner().ok().flatten());
    let mut machines = Vec::new();
    for class in classes {
        let positive: Vec<bool> = labels.iter().map(|l| l == class).collect();
        let Some(Some(Job::Full(machine))) = done.next() else {
            bail!("svm: training stopped before the machine of class {class}");
        };
        let mut decisions = vec![0.0; rows.count()];
        for _ in 0..folds {
            let Some(Some(Job::Fold(part))) = done.next() else {
                bail!("svm: training stopped before the Platt folds of class {class}");
            };
            for (i, f) in part {
                decisions[i] = f;
            }
        }
        if folds == 0 {
            decisions = machine.decisions(ndarray_view(rows)?)?;
        }
        let (a, b) = platt(&decisions, &positive);
        machines.push(ClassMachine {
            class: *class,
            platt: [a, b],
            machine,
        });
    }
    Ok(machines)
}

enum Job {
    Full(Machine),
    /// (row, decision value) for the rows of one Platt fold.
    Fold(Vec<(usize, f64)>),
}

fn ndarray_view(rows: &Rows) -> Result<ArrayView2<'_, f64>> {
    ArrayView2::from_shape((rows.count(), rows.width()), rows.values())
        .map_err(|e| anyhow!("svm: {e}"))
}

/// The decision values of fold `fold` (of a seeded permutation per class) from a machine trained
/// on the other folds; +-1 when those hold one side only (as libsvm). With the table's exact
/// kernel values they are read from it, not computed again: the same values, bit for bit.
fn fold_decisions(
    settings: &Settings,
    (rows, gram, exact): (&Rows, Option<&Gram>, Option<&ExactGram>),
    positive: &[bool],
    bounds: (f64, f64),
    (fold, class): (usize, usize),
) -> Vec<(usize, f64)> {
    let n = rows.count();
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::derive(settings.seed, class as u64).shuffle(&mut order);
    let k = settings.platt_folds;
    let (start, end) = (fold * n / k, (fold + 1) * n / k);
    let held = &order[start..end];
    let train: Vec<usize> = order[..start]
        .iter()
        .chain(&order[end..])
        .copied()
        .collect();
    let train_positive: Vec<bool> = train.iter().map(|i| positive[*i]).collect();
    let constant = match train_positive.iter().filter(|p| **p).count() {
        0 => Some(-1.0),
        all if all == train.len() => Some(1.0),
        _ => None,
    };
    if let Some(f) = constant {
        return held.iter().map(|i| (*i, f)).collect();
    }
    let shared = gram.map(|g| (g, train.as_slice()));
    let (machine, support) =
        settings.classifier(&rows.subset(&train), shared, &train_positive, bounds);
    if let Some(exact) = exact {
        let support: Vec<usize> = support.iter().map(|s| train[*s]).collect();
        let decisions = exact.decisions(&support, &machine.coef, machine.rho, held);
        return held.iter().copied().zip(decisions).collect();
    }
    let held_rows = rows.subset(held);
    let decisions = ndarray_view(&held_rows)
        .and_then(|x| machine.decisions(x))
        .unwrap_or_default();
    held.iter().copied().zip(decisions).collect()
}

/// The (positive, rest) bounds C of each class's machine: `c`, scaled by the class weights.
fn class_bounds(cfg: &ModelConfig, data: &TrainSet, labels: &[usize]) -> Result<Vec<(f64, f64)>> {
    let c = cfg.float("c")?;
    let balanced = cfg.str("class_weight")? == "balanced";
    let given = data.class_weights(cfg)?.filter(|_| !balanced);
    let n = labels.len() as f64;
    Ok((0..data.n_classes)
        .map(|class| {
            let pos = labels.iter().filter(|l| **l == class).count() as f64;
            match &given {
                _ if balanced => (
                    c * n / (2.0 * pos.max(1.0)),
                    c * n / (2.0 * (n - pos).max(1.0)),
                ),
                // The rest's C: the mean weight of its rows.
                Some(w) => {
                    let rest: f64 = (labels.iter().filter(|l| **l != class))
                        .map(|l| w[*l])
                        .sum();
                    (c * w[class], c * rest / (n - pos).max(1.0))
                }
                None => (c, c),
            }
        })
        .collect())
}

// ---------------------------------------------------------------- algorithm 1 (linfa-svm)

fn svm_params<T>(cfg: &ModelConfig) -> Result<linfa_svm::SvmParams<f64, T>> {
    let p = Svm::<f64, T>::params().eps(cfg.float("tolerance")?);
    Ok(match cfg.str("kernel")? {
        "linear" => p.linear_kernel(),
        "poly" => p.polynomial_kernel(cfg.float("coef0")?, cfg.int("degree")? as f64),
        // linfa's Gaussian kernel is exp(-|x - y|^2 / eps): eps = 1 / gamma.
        _ => p.gaussian_kernel(1.0 / cfg.float("gamma")?),
    })
}

#[derive(Serialize, Deserialize)]
struct OneVsRestSvm {
    n_classes: usize,
    /// One calibrated binary SVM per class present in training.
    models: Vec<(usize, Svm<f64, Pr>)>,
}

impl FittedModel for OneVsRestSvm {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        let mut proba = Array2::zeros((x.nrows(), self.n_classes));
        for (c, m) in &self.models {
            let p: Array1<Pr> = m.predict(&x);
            for (i, v) in p.iter().enumerate() {
                proba[[i, *c]] = **v as f64;
            }
        }
        for mut row in proba.rows_mut() {
            let s: f64 = row.sum();
            if s > 0.0 {
                row.mapv_inplace(|v| v / s);
            }
        }
        Ok(Prediction {
            values: labels_from_proba(&proba),
            proba: Some(proba),
        })
    }
    fn to_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(self)?)
    }
}

#[derive(Serialize, Deserialize)]
struct SvmRegressor {
    model: Svm<f64, f64>,
}

impl FittedModel for SvmRegressor {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        let v: Array1<f64> = self.model.predict(&x);
        Ok(Prediction {
            values: v.to_vec(),
            proba: None,
        })
    }
    fn to_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(self)?)
    }
}

fn fit_linfa(cfg: &ModelConfig, data: &TrainSet) -> Result<Box<dyn FittedModel>> {
    let x = data.x.to_owned();
    if data.task == Task::Regression {
        let ds = Dataset::new(x, data.y.to_owned());
        let model = svm_params::<f64>(cfg)?
            .c_svr(cfg.float("c")?, Some(cfg.float("epsilon")?))
            .fit(&ds)
            .map_err(|e| anyhow!("linfa-svm: {e}"))?;
        return Ok(Box::new(SvmRegressor { model }));
    }
    let labels = data.class_labels();
    let bounds = class_bounds(cfg, data, &labels)?;
    let mut models = Vec::new();
    for (class, (c_pos, c_neg)) in bounds.into_iter().enumerate() {
        let targets: Array1<bool> = labels.iter().map(|l| *l == class).collect();
        if !targets.iter().any(|t| *t) {
            continue;
        }
        let ds = Dataset::new(x.clone(), targets);
        let model = svm_params::<Pr>(cfg)?
            .pos_neg_weights(c_pos, c_neg)
            .fit(&ds)
            .map_err(|e| anyhow!("linfa-svm (class {class} vs rest): {e}"))?;
        models.push((class, model));
    }
    Ok(Box::new(OneVsRestSvm {
        n_classes: data.n_classes,
        models,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{test_config, Backend, ParamValue};
    use ndarray::Array1;

    fn cfg(algorithm: u32, overrides: &[(&str, ParamValue)]) -> ModelConfig {
        let mut config = test_config("svm", overrides);
        config.algorithm = Some(algorithm);
        config
    }

    /// Three numeric columns; the class is the quadrant-like region of the first two, with noise.
    fn table(n: usize, classes: usize) -> (Array2<f64>, Array1<f64>) {
        let mut rng = SplitMix64::new(11);
        let x = Array2::from_shape_fn((n, 3), |_| rng.next_f64() * 2.0 - 1.0);
        let y = (x.rows().into_iter())
            .map(|r| {
                let score = r[0] + r[1] * r[1] + 0.2 * (rng.next_f64() - 0.5);
                ((score + 1.0) / 3.0 * classes as f64)
                    .clamp(0.0, classes as f64 - 1.0)
                    .floor()
            })
            .collect();
        (x, y)
    }

    fn fit_json(
        config: &ModelConfig,
        x: &Array2<f64>,
        y: &Array1<f64>,
        k: usize,
        threads: usize,
    ) -> (serde_json::Value, Prediction) {
        let task = if k == 0 {
            Task::Regression
        } else {
            Task::Classification
        };
        let data = TrainSet {
            x: x.view(),
            y: y.view(),
            task,
            n_classes: k,
            labels: None,
        };
        let ctx = FitContext::new(42, threads);
        let model = SvmBackend.fit(config, &data, &ctx).unwrap();
        let json = model.to_json().unwrap();
        let reloaded = load(config.algorithm(), task, &json).unwrap();
        (json, reloaded.predict(x.view()).unwrap())
    }

    fn accuracy(p: &Prediction, y: &Array1<f64>) -> f64 {
        let hits = p.values.iter().zip(y).filter(|(a, b)| a == b).count();
        hits as f64 / y.len() as f64
    }

    #[test]
    fn two_classes_train_one_calibrated_machine_the_same_at_any_thread_count() {
        let (x, y) = table(400, 2);
        let config = cfg(2, &[]);
        let (one, p) = fit_json(&config, &x, &y, 2, 1);
        let (two, _) = fit_json(&config, &x, &y, 2, 2);
        assert_eq!(one, two);
        assert_eq!(one["scheme"], "binary");
        assert!(accuracy(&p, &y) > 0.85, "accuracy {}", accuracy(&p, &y));
        let proba = p.proba.unwrap();
        for row in proba.rows() {
            assert!((row.sum() - 1.0).abs() < 1e-12 && row.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        // Calibrated on held-out folds: less sure of itself than on its own training rows.
        let (train_fit, _) = fit_json(
            &cfg(2, &[("platt_folds", ParamValue::Int(0))]),
            &x,
            &y,
            2,
            1,
        );
        let slope = |j: &serde_json::Value| j["machine"]["platt"][0].as_f64().unwrap();
        assert!(
            slope(&one) > slope(&train_fit),
            "{} vs {}",
            slope(&one),
            slope(&train_fit)
        );
    }

    #[test]
    fn shared_kernel_values_give_each_machine_its_own_decisions_bit_for_bit() {
        let (x, y) = table(300, 3);
        let (json, _) = fit_json(&cfg(2, &[]), &x, &y, 3, 1);
        let machines: Vec<ClassMachine> = serde_json::from_value(json["machines"].clone()).unwrap();
        let plain: Vec<&Machine> = machines.iter().map(|m| &m.machine).collect();
        let shared = SharedSupport::new(&plain, 3);
        let total: usize = plain.iter().map(|m| m.coef.len()).sum();
        assert!(shared.rows.count() < total, "no support vector is shared");
        let (queries, _) = table(50, 3);
        let together = shared_decisions(&plain, queries.view()).unwrap();
        let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (m, values) in plain.iter().zip(together) {
            let alone = m.decisions(queries.view()).unwrap();
            assert_eq!(bits(&alone), bits(&values));
            // 50 rows: twelve blocks of four lanes, then a block of two.
            assert_eq!(bits(&one_by_one(m, queries.view())), bits(&values));
        }
    }

    /// A machine's decision values a row and a support vector at a time, each row's sum alone.
    fn one_by_one(m: &Machine, x: ArrayView2<f64>) -> Vec<f64> {
        let support = Rows::from_values(m.support.clone(), m.width);
        let queries = Rows::new(x);
        (0..queries.count())
            .map(|q| {
                let (xq, nq) = (queries.row(q), queries.norm(q));
                let sum: f64 = (m.coef.iter().enumerate())
                    .map(|(s, c)| c * m.kernel.value(support.row(s), xq, support.norm(s), nq))
                    .sum();
                sum - m.rho
            })
            .collect()
    }

    /// A Platt fold's decision values read from the table's doubles are the ones its machine
    /// computes, bit for bit, and a fit whose cache holds only the float table (so computes
    /// them) gives the same model.
    #[test]
    fn platt_folds_read_from_the_table_decide_as_their_machines_bit_for_bit() {
        let (x, y) = table(300, 3);
        let settings = Settings::from_config(&cfg(3, &[]), 42).unwrap();
        let rows = Rows::new(x.view());
        let exact = ExactGram::compute(&rows, settings.kernel, 2);
        let gram = Gram::of_exact(&exact);
        let positive: Vec<bool> = y.iter().map(|v| *v == 1.0).collect();
        for fold in 0..settings.platt_folds {
            let decide = |exact| {
                let parts = (&rows, Some(&gram), exact);
                let mut d = fold_decisions(&settings, parts, &positive, (1.0, 1.0), (fold, 1));
                d.sort_by_key(|(i, _)| *i);
                d.into_iter()
                    .map(|(i, f)| (i, f.to_bits()))
                    .collect::<Vec<_>>()
            };
            let (read, computed) = (decide(Some(&exact)), decide(None));
            assert_eq!(read.len(), 60);
            assert_eq!(read, computed, "fold {fold}");
        }
        // 300 rows: the float table takes 0.36 MB, with the doubles 1.08 MB.
        let small_cache = cfg(3, &[("cache_mb", ParamValue::Int(1))]);
        assert_eq!(
            fit_json(&small_cache, &x, &y, 3, 1).0,
            fit_json(&cfg(3, &[]), &x, &y, 3, 1).0
        );
    }

    #[test]
    fn several_classes_train_one_machine_per_class_against_the_rest() {
        let (x, y) = table(450, 3);
        let (json, p) = fit_json(&cfg(2, &[]), &x, &y, 3, 2);
        assert_eq!(json["scheme"], "one_vs_rest");
        assert_eq!(json["machines"].as_array().unwrap().len(), 3);
        assert!(accuracy(&p, &y) > 0.8, "accuracy {}", accuracy(&p, &y));
    }

    #[test]
    fn regression_fits_within_its_tube() {
        let (x, _) = table(300, 2);
        let y: Array1<f64> = x.rows().into_iter().map(|r| 2.0 * r[0] - r[1]).collect();
        let config = cfg(
            2,
            &[
                ("kernel", ParamValue::Str("linear".into())),
                ("c", ParamValue::Float(10.0)),
            ],
        );
        let (_, p) = fit_json(&config, &x, &y, 0, 1);
        let worst = (p.values.iter().zip(&y))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 0.1 + 1e-3,
            "largest error {worst} outside epsilon = 0.1"
        );
    }

    #[test]
    fn version_1_configs_still_train_with_linfa() {
        let (x, y) = table(200, 2);
        let (json, _) = fit_json(&cfg(1, &[]), &x, &y, 2, 1);
        assert_eq!(json["models"].as_array().unwrap().len(), 2, "{json}");
        assert!(json.get("scheme").is_none());
    }
}
