//! Every model kind behind one trait, [`Backend`], listed once in [`BACKENDS`]: a kind declares
//! its hyperparameters (checked before any training starts), fits a checked config into a
//! [`FittedModel`], and rebuilds a fitted model from a run's saved files. A fitted model predicts
//! (labels or values, and class probabilities where it can) and saves itself.

/// A [`Backend`] from its spec and two bodies, the shape most kinds have:
/// `backend!(Name, SPEC, |cfg, data, ctx| fit..., |saved| load...)`. With `feature = "..."`
/// the bodies are built only with that cargo feature; without it the kind says which feature it
/// needs.
macro_rules! backend {
    ($name:ident, $spec:ident, |$c:ident, $d:ident, $x:ident| $fit:expr, |$s:ident| $load:expr) => {
        pub struct $name;

        impl $crate::models::Backend for $name {
            fn spec(&self) -> &'static $crate::models::KindSpec {
                &$spec
            }
            fn fit(
                &self,
                $c: &$crate::models::ModelConfig,
                $d: &$crate::models::TrainSet,
                $x: &$crate::models::FitContext,
            ) -> anyhow::Result<Box<dyn $crate::models::FittedModel>> {
                $fit
            }
            fn load(
                &self,
                $s: &$crate::models::SavedModel,
            ) -> anyhow::Result<Box<dyn $crate::models::FittedModel>> {
                $load
            }
        }
    };
    ($name:ident, $spec:ident, feature = $feature:literal,
     |$c:ident, $d:ident, $x:ident| $fit:expr, |$s:ident| $load:expr) => {
        backend!(
            $name,
            $spec,
            |$c, $d, $x| {
                #[cfg(feature = $feature)]
                return $fit;
                #[cfg(not(feature = $feature))]
                {
                    let _ = ($c, $d, $x);
                    Err($crate::models::feature_missing(&$spec))
                }
            },
            |$s| {
                #[cfg(feature = $feature)]
                return $load;
                #[cfg(not(feature = $feature))]
                {
                    let _ = $s;
                    Err($crate::models::feature_missing(&$spec))
                }
            }
        );
    };
}

/// A classifier kind's parameter list: its own, then the class parameters every classifier
/// takes (weights, resampling, calibration, threshold), in that order:
/// `params: class_params![ParamSpec { .. }, ..]`.
macro_rules! class_params {
    ($($own:expr),* $(,)?) => {
        &[
            $($own,)*
            $crate::models::params::CLASS_WEIGHT,
            $crate::models::params::CLASS_WEIGHTS,
            $crate::models::params::RESAMPLE,
            $crate::models::params::SMOTE_K,
            $crate::models::params::CALIBRATION,
            $crate::models::params::THRESHOLD,
            $crate::models::params::TUNING_FOLDS,
        ]
    };
}

mod classical;
pub mod ensemble;
mod gbm;
#[cfg_attr(not(feature = "lightgbm"), allow(dead_code))]
mod lgbm_trees;
mod logistic;
mod neighbours;
mod nn;
pub use nn::end_idle_helpers as end_network_helpers;
/// The messages between runner and its network helper, `runner-torch`.
#[cfg(feature = "torch")]
pub use nn::wire as helper_wire;
mod params;
pub mod post;
mod svm;
mod tree;
pub use tree::{saved_trees, Node as TreeNode};

use crate::resample::{self, Resample};
use anyhow::{anyhow, bail, Result};
use ndarray::{Array2, ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::types::Task;
pub use params::{
    check_value, default_value, parse_class_weights, parse_widths, quoted_list, Default_, KindSpec,
    ParamSpec, ParamType, ParamValue,
};

/// One model kind: what it accepts, how it trains, how a saved one comes back.
pub trait Backend: Sync {
    /// The kind's name, tasks, hyperparameters, cargo feature and ONNX support.
    fn spec(&self) -> &'static KindSpec;

    /// Checks a config before any training (linfa's ParamGuard idea): every declared
    /// hyperparameter present, of its type and in its range. Kinds with rules across parameters
    /// add them here. The error names the key and what would be valid.
    fn check(&self, cfg: &ModelConfig) -> std::result::Result<(), String> {
        check_declared(self.spec(), cfg)
    }

    /// Fits a checked config on a training set.
    fn fit(
        &self,
        cfg: &ModelConfig,
        data: &TrainSet,
        ctx: &FitContext,
    ) -> Result<Box<dyn FittedModel>>;

    /// Rebuilds a fitted model from what a run saved.
    fn load(&self, saved: &SavedModel) -> Result<Box<dyn FittedModel>>;
}

/// Every model kind, in the order `runner models` lists them. A new kind is one module with a
/// [`Backend`] and one line here.
pub static BACKENDS: &[&dyn Backend] = &[
    &tree::DecisionTreeBackend,
    &tree::RandomForestBackend,
    &classical::LogisticRegressionBackend,
    &svm::SvmBackend,
    &classical::KnnBackend,
    &classical::NaiveBayesBackend,
    &classical::LinearBackend,
    &gbm::XgboostBackend,
    &gbm::LightgbmBackend,
    &nn::MlpBackend,
    &nn::CnnBackend,
    &nn::LstmBackend,
    &ensemble::VotingBackend,
    &ensemble::StackingBackend,
];

/// The backend of a kind, if there is one by that name.
pub fn backend(kind: &str) -> Option<&'static dyn Backend> {
    BACKENDS.iter().copied().find(|b| b.spec().kind == kind)
}

pub fn kind_spec(kind: &str) -> Option<&'static KindSpec> {
    backend(kind).map(|b| b.spec())
}

/// Every kind's spec, in registry order.
pub fn kind_specs() -> impl Iterator<Item = &'static KindSpec> {
    BACKENDS.iter().map(|b| b.spec())
}

pub fn kind_names() -> Vec<&'static str> {
    kind_specs().map(|k| k.kind).collect()
}

/// Kinds that combine other configs (`members`).
pub fn is_ensemble(kind: &str) -> bool {
    kind == "voting" || kind == "stacking"
}

/// Every hyperparameter `cfg` gives is valid for `spec`. (Unknown keys
/// are refused where configs are read; a recorded run keeps the keys it had.)
fn check_declared(spec: &KindSpec, cfg: &ModelConfig) -> std::result::Result<(), String> {
    // A parameter the config lacks (a run recorded before it existed) takes its default.
    for p in spec.params {
        if let Some(value) = cfg.params.get(p.name) {
            check_value(p, value)?;
        }
    }
    Ok(())
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
    /// The version of the kind's arithmetic ([`KindSpec::algorithm`]) the run was trained with;
    /// runs recorded before versions were kept have none and mean version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<u32>,
}

impl ModelConfig {
    /// A config of `kind` with every hyperparameter at its default.
    pub fn with_defaults(kind: &str, name: &str) -> Result<ModelConfig> {
        let spec = kind_spec(kind).ok_or_else(|| anyhow!("unknown model kind `{kind}`"))?;
        Ok(ModelConfig {
            name: name.to_string(),
            kind: kind.to_string(),
            params: spec
                .params
                .iter()
                .map(|p| (p.name.to_string(), p.default.value()))
                .collect(),
            algorithm: Some(spec.algorithm),
            ..Default::default()
        })
    }

    /// The algorithm version this config trains with.
    pub fn algorithm(&self) -> u32 {
        self.algorithm.unwrap_or(1)
    }

    fn missing(&self, key: &str, want: &str) -> anyhow::Error {
        anyhow!(
            "{} `{}`: parameter `{key}` is {:?}, not {want}",
            self.kind,
            self.name,
            self.params.get(key)
        )
    }

    /// The declared default of `key`, for a config recorded before the parameter existed: a
    /// parameter is only ever added with a default that keeps what runs did before it.
    fn declared_default(&self, key: &str) -> Option<Default_> {
        let spec = kind_spec(&self.kind)?;
        spec.params
            .iter()
            .find(|p| p.name == key)
            .map(|p| p.default)
    }

    pub fn int(&self, key: &str) -> Result<i64> {
        match (self.params.get(key), self.declared_default(key)) {
            (Some(ParamValue::Int(i)), _) => Ok(*i),
            (None, Some(Default_::Int(i))) => Ok(i),
            _ => Err(self.missing(key, "an integer")),
        }
    }
    /// A count or size: a non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize> {
        usize::try_from(self.int(key)?).map_err(|_| self.missing(key, "a non-negative integer"))
    }
    pub fn float(&self, key: &str) -> Result<f64> {
        match (self.params.get(key), self.declared_default(key)) {
            (Some(ParamValue::Float(x)), _) => Ok(*x),
            (Some(ParamValue::Int(i)), _) => Ok(*i as f64),
            (None, Some(Default_::Float(x))) => Ok(x),
            (None, Some(Default_::Int(i))) => Ok(i as f64),
            _ => Err(self.missing(key, "a number")),
        }
    }
    pub fn str(&self, key: &str) -> Result<&str> {
        match (self.params.get(key), self.declared_default(key)) {
            (Some(ParamValue::Str(s)), _) => Ok(s),
            (None, Some(Default_::Str(s))) => Ok(s),
            _ => Err(self.missing(key, "a string")),
        }
    }
    pub fn bool(&self, key: &str) -> Result<bool> {
        match (self.params.get(key), self.declared_default(key)) {
            (Some(ParamValue::Bool(b)), _) => Ok(*b),
            (None, Some(Default_::Bool(b))) => Ok(b),
            _ => Err(self.missing(key, "true or false")),
        }
    }
}

/// The training rows a model sees: features (already preprocessed), and targets as class
/// indexes 0..K-1 (classification) or values (regression).
pub struct TrainSet<'a> {
    pub x: ArrayView2<'a, f64>,
    pub y: ArrayView1<'a, f64>,
    pub task: Task,
    pub n_classes: usize,
    /// The original class labels by index, which `class_weights` names (classification).
    pub labels: Option<&'a [String]>,
}

impl TrainSet<'_> {
    pub fn class_labels(&self) -> Vec<usize> {
        self.y.iter().map(|v| *v as usize).collect()
    }

    /// Per-class weights for `class_weight = "balanced"`: n / (K_present * count(class)), 0 for
    /// a class the rows lack.
    pub fn balanced_class_weights(&self) -> Vec<f64> {
        let mut counts = vec![0usize; self.n_classes];
        for c in self.class_labels() {
            counts[c] += 1;
        }
        let present = counts.iter().filter(|c| **c > 0).count().max(1);
        let n = self.y.len() as f64;
        counts
            .iter()
            .map(|c| {
                if *c > 0 {
                    n / (present as f64 * *c as f64)
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// The per-class weights a classifier config asks for: `class_weight = "balanced"`'s, or
    /// the user's `class_weights` by label (a class it leaves out weighs 1); none otherwise.
    pub fn class_weights(&self, cfg: &ModelConfig) -> Result<Option<Vec<f64>>> {
        if self.task != Task::Classification {
            return Ok(None);
        }
        if cfg.str("class_weight")? == "balanced" {
            return Ok(Some(self.balanced_class_weights()));
        }
        let given = match cfg.params.get("class_weights") {
            Some(v) => parse_class_weights(&v.to_string()).map_err(|e| anyhow!(e))?,
            None => Vec::new(),
        };
        if given.is_empty() {
            return Ok(None);
        }
        let labels = self.labels.unwrap_or_default();
        let mut w = vec![1.0; self.n_classes];
        for (label, weight) in given {
            let i = labels.iter().position(|l| *l == label).ok_or_else(|| {
                anyhow!("class_weights names \"{label}\", which is not a class of the data")
            })?;
            w[i] = weight;
        }
        Ok(Some(w))
    }

    /// Per-row weights for `class_weight = "balanced"`: each row's class weight.
    pub fn balanced_weights(&self) -> Vec<f64> {
        let per_class = self.balanced_class_weights();
        self.class_labels().iter().map(|c| per_class[*c]).collect()
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
    /// Judges each point: a reason stops the training at that round (a search's pruner).
    judge: Option<CurveJudge<'a>>,
    /// (round, reason) once the judge has stopped the training.
    stopped: std::sync::Mutex<Option<(i64, String)>>,
}

/// Says, of a learning curve's (round, metric, value), why training should stop there, if it
/// should.
pub type CurveJudge<'a> = Box<dyn Fn(i64, &str, f64) -> Option<String> + Send + Sync + 'a>;

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
        if let Some(judge) = &self.judge {
            let mut stopped = unpoisoned(&self.stopped);
            if stopped.is_none() {
                *stopped = judge(round, metric, value).map(|why| (round, why));
            }
        }
        let mut pending = unpoisoned(&self.pending);
        if pending.first().is_some_and(|p| p.0 != round) {
            self.send(&std::mem::take(&mut *pending));
        }
        pending.push(point);
    }

    /// The same curve, with a judge that may stop the training at a round.
    pub fn judged(self, judge: CurveJudge<'a>) -> Curve<'a> {
        Curve {
            judge: Some(judge),
            ..self
        }
    }

    /// (round, reason) if the judge stopped the training.
    pub fn stopped(&self) -> Option<(i64, String)> {
        unpoisoned(&self.stopped).clone()
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
    /// The model matrix's column names, which native files (XGBoost, LightGBM) keep.
    pub feature_names: Option<&'a [String]>,
}

impl FitContext<'_> {
    pub fn new(seed: u64, threads: usize) -> FitContext<'static> {
        FitContext {
            seed,
            threads,
            eval: None,
            curve: None,
            feature_names: None,
        }
    }

    pub fn record(&self, round: i64, metric: &str, value: f64) {
        if let Some(c) = self.curve {
            c.record(round, metric, value);
        }
    }

    /// Whether the curve's judge (a search's pruner) has stopped the training: an iterative
    /// model ends its loop after the round it recorded. An interrupt (Ctrl-C) stops it the same way; the run then ends KILLED.
    pub fn stop_requested(&self) -> bool {
        self.curve.is_some_and(|c| c.stopped().is_some()) || crate::interrupt::requested()
    }
}

pub trait FittedModel: Send + Sync {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction>;
    /// A cheaper [`ColumnShuffles`] for rows that differ from `x` in one column at a time (the
    /// permutation importance), where the model has one.
    fn column_shuffles<'a>(&'a self, _x: ArrayView2<f64>) -> Option<Box<dyn ColumnShuffles + 'a>> {
        None
    }
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
    /// Two classes: the decision threshold on the second class's probability, where the
    /// config chose one (see [`post`]).
    fn threshold(&self) -> Option<f64> {
        None
    }
}

/// Predictions of rows that are a fixed table with one column changed, which reuse what the
/// model computed for the fixed rows: the same predictions as [`FittedModel::predict`], bit for
/// bit.
pub trait ColumnShuffles {
    /// `predict` of `x`: the fixed rows with column `column` changed.
    fn predict(&self, x: ArrayView2<f64>, column: usize) -> Result<Prediction>;
}

/// What a run saved of its model: its config, its `to_json` form, and its native files by
/// extension ("json" for XGBoost, "txt" for LightGBM, "pt" for the networks).
pub struct SavedModel<'a> {
    pub config: &'a ModelConfig,
    pub fitted: &'a serde_json::Value,
    pub native: &'a BTreeMap<String, Vec<u8>>,
    pub task: Task,
    pub n_classes: usize,
    pub n_features: usize,
}

impl SavedModel<'_> {
    /// The native file with extension `ext`.
    pub fn file(&self, ext: &str) -> Result<&[u8]> {
        self.native
            .get(ext)
            .map(Vec::as_slice)
            .ok_or_else(|| anyhow!("the saved {} model has no .{ext} file", self.config.kind))
    }

    /// The boosting round early stopping kept (0 when it was off).
    pub fn best_round(&self) -> i64 {
        self.fitted["best_round"].as_i64().unwrap_or(0)
    }
}

/// The backend of `kind`, if this build has what it needs.
fn available_backend(kind: &str) -> Result<&'static dyn Backend> {
    let backend = backend(kind).ok_or_else(|| {
        anyhow!(
            "unknown model kind `{kind}`; valid: {}",
            quoted_list(&kind_names())
        )
    })?;
    let spec = backend.spec();
    if !spec.available() {
        bail!(
            "model kind `{kind}` needs the cargo feature `{}`, which this build lacks",
            spec.feature.unwrap_or("?")
        );
    }
    Ok(backend)
}

/// The error for a kind whose cargo feature is off; [`fit`] and [`load`] check availability
/// first, so a backend returns it only when called directly.
#[allow(dead_code)]
pub(crate) fn feature_missing(spec: &KindSpec) -> anyhow::Error {
    anyhow!(
        "model kind `{}` needs the cargo feature `{}`, which this build lacks",
        spec.kind,
        spec.feature.unwrap_or("?")
    )
}

/// Checks a model config against its kind and fits it on a training set.
pub fn fit(cfg: &ModelConfig, data: &TrainSet, ctx: &FitContext) -> Result<Box<dyn FittedModel>> {
    let backend = available_backend(&cfg.kind)?;
    let spec = backend.spec();
    if !spec.tasks.contains(&data.task) {
        bail!("model kind `{}` cannot do {}", cfg.kind, data.task);
    }
    check_algorithm(spec, cfg.algorithm())?;
    backend.check(cfg).map_err(|e| anyhow!("{e}"))?;
    let fit_one = |set: &TrainSet, ctx: &FitContext| fit_resampled(backend, cfg, set, ctx);
    if post::wanted(cfg, data.task)? {
        post::fit(cfg, data, ctx, &fit_one)
    } else {
        fit_one(data, ctx)
    }
}

/// Whether the CV folds of `cfg` train together, in one [`fit_stack`]: a kind that stacks them
/// (the MLP and the CNN from their algorithm 3), fitted as it is (no resampling, calibration or threshold,
/// which fit each fold on its own rows).
pub fn trains_folds_stacked(cfg: &ModelConfig, task: Task) -> bool {
    let plain = !post::wanted(cfg, task).unwrap_or(true)
        && (task == Task::Regression || cfg.str("resample").is_ok_and(|r| r == "none"));
    plain && nn::stacks(cfg)
}

/// Fits `cfg` on each training set (the folds of a run), each with its context: stacked where
/// [`trains_folds_stacked`] says so, else one after the other. Each set's model, in order.
pub fn fit_stack(
    cfg: &ModelConfig,
    sets: &[TrainSet],
    ctxs: &[FitContext],
) -> Result<Vec<Box<dyn FittedModel>>> {
    let Some(first) = sets.first() else {
        return Ok(Vec::new());
    };
    if sets.len() != ctxs.len() || !trains_folds_stacked(cfg, first.task) {
        return (sets.iter().zip(ctxs))
            .map(|(s, c)| fit(cfg, s, c))
            .collect();
    }
    let backend = available_backend(&cfg.kind)?;
    check_algorithm(backend.spec(), cfg.algorithm())?;
    backend.check(cfg).map_err(|e| anyhow!("{e}"))?;
    nn::fit_stack(cfg, sets, ctxs)
}

/// Fits on the rows as the config's `resample` asks (classification), seeded by the context:
/// the rows given are a training fold's, never a validation fold's.
fn fit_resampled(
    backend: &dyn Backend,
    cfg: &ModelConfig,
    data: &TrainSet,
    ctx: &FitContext,
) -> Result<Box<dyn FittedModel>> {
    let has = backend.spec().params.iter().any(|p| p.name == "resample");
    let how = if data.task == Task::Classification && has {
        Resample::from_params(cfg.str("resample")?, cfg.usize("smote_k")?)
    } else {
        Resample::None
    };
    if how == Resample::None {
        return backend.fit(cfg, data, ctx);
    }
    let plan = resample::plan(data.x, data.y, how, ctx.seed);
    let (x, y) = resample::apply(data.x, data.y, &plan);
    let set = TrainSet {
        x: x.view(),
        y: y.view(),
        ..*data
    };
    backend.fit(cfg, &set, ctx)
}

/// Whether this build can train `spec`'s kind the way a run recorded (`algorithm`): every
/// version up to the current one, since a change of arithmetic keeps the old path.
pub fn check_algorithm(spec: &KindSpec, algorithm: u32) -> Result<()> {
    if algorithm == 0 || algorithm > spec.algorithm {
        bail!(
            "model kind `{}` was trained with its algorithm version {algorithm}; this build has versions 1 to {}",
            spec.kind,
            spec.algorithm
        );
    }
    Ok(())
}

/// Rebuilds a fitted model from what a run saved.
pub fn load(saved: &SavedModel) -> Result<Box<dyn FittedModel>> {
    let backend = available_backend(&saved.config.kind)?;
    let Some((post, fitted)) = post::saved(saved.fitted)? else {
        return backend.load(saved);
    };
    let inner = backend.load(&SavedModel { fitted, ..*saved })?;
    Ok(Box::new(post::PostFitted { inner, post }))
}

/// Early stopping on a validation loss, shared by the boosting libraries and the networks.
#[cfg_attr(
    not(any(feature = "xgboost", feature = "lightgbm", feature = "torch")),
    allow(dead_code)
)]
pub struct EarlyStopping {
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
    pub fn new(patience: i64) -> Self {
        EarlyStopping {
            patience,
            best: f64::INFINITY,
            best_round: 0,
        }
    }

    /// Records the loss after `round`: (whether it is the best so far, whether to stop).
    pub fn update(&mut self, round: i64, loss: f64) -> (bool, bool) {
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
    pub fn kept(&self, last: i64) -> i64 {
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

/// A config of `kind` with every default and `overrides`, at this build's algorithm version
/// (for the kinds' unit tests).
#[cfg(test)]
pub(crate) fn test_config(kind: &str, overrides: &[(&str, ParamValue)]) -> ModelConfig {
    let spec = kind_spec(kind).expect("a registered kind");
    let mut params: BTreeMap<String, ParamValue> = (spec.params.iter())
        .map(|p| (p.name.to_string(), default_value(p)))
        .collect();
    for (k, v) in overrides {
        params.insert(k.to_string(), v.clone());
    }
    ModelConfig {
        name: kind.into(),
        kind: kind.into(),
        params,
        algorithm: Some(spec.algorithm),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_passes_its_own_check() {
        for k in kind_specs() {
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
    fn every_kind_is_registered_once() {
        let names = kind_names();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "{names:?}");
        for name in names {
            assert_eq!(backend(name).map(|b| b.spec().kind), Some(name));
        }
    }

    fn tiny_regression() -> (Array2<f64>, ndarray::Array1<f64>) {
        let x = Array2::from_shape_fn((12, 2), |(i, j)| (i * (j + 1)) as f64);
        let y = (0..12).map(|i| i as f64 * 0.5).collect();
        (x, y)
    }

    #[test]
    fn a_run_recorded_with_another_algorithm_version_is_refused_by_name() {
        let (x, y) = tiny_regression();
        let data = TrainSet {
            x: x.view(),
            y: y.view(),
            task: Task::Regression,
            n_classes: 0,
            labels: None,
        };
        let mut cfg = ModelConfig::with_defaults("decision_tree", "tree").unwrap();
        assert_eq!(cfg.algorithm, Some(3));
        assert!(fit(&cfg, &data, &FitContext::new(1, 1)).is_ok());
        // Recorded before versions were kept (version 1), and before `split` existed.
        cfg.algorithm = None;
        cfg.params.remove("split");
        cfg.params.remove("max_bins");
        assert!(fit(&cfg, &data, &FitContext::new(1, 1)).is_ok());
        cfg.algorithm = Some(7);
        let err = fit(&cfg, &data, &FitContext::new(1, 1))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("decision_tree") && err.contains("version 7"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_parameter_is_an_error_not_a_panic() {
        let (x, y) = tiny_regression();
        let data = TrainSet {
            x: x.view(),
            y: y.view(),
            task: Task::Regression,
            n_classes: 0,
            labels: None,
        };
        let mut cfg = ModelConfig::with_defaults("random_forest", "forest").unwrap();
        cfg.params
            .insert("n_trees".into(), ParamValue::Str("many".into()));
        let err = fit(&cfg, &data, &FitContext::new(1, 1))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("n_trees"), "{err}");
        // Recorded before a parameter existed: it takes its declared default.
        cfg.params.remove("n_trees");
        assert!(fit(&cfg, &data, &FitContext::new(1, 1)).is_ok());
    }

    #[test]
    fn argmax_breaks_ties_to_lowest_index() {
        assert_eq!(argmax([0.2, 0.4, 0.4]), 1);
    }
}
