//! Ensembles over member configs. Voting averages the members' class probabilities (soft),
//! counts their predicted classes (hard) or averages their values (regression). Stacking trains
//! a meta-learner on out-of-fold predictions of the members, made by an inner CV over the
//! training rows it is given, then refits every member on all of them: the rows an outer CV fold
//! scores are never seen by a member or by the meta-learner.

use super::params::{Default_, ParamSpec, ParamType, BOTH, CALIBRATION, THRESHOLD, TUNING_FOLDS};
use super::{
    argmax, fit as fit_model, labels_from_proba, FitContext, FittedModel, KindSpec, ModelConfig,
    ParamValue, Prediction, SavedModel, Task, TrainSet,
};
use crate::rng::SplitMix64;
use anyhow::{bail, Context, Result};
use base64::Engine;
use ndarray::{concatenate, Array1, Array2, ArrayView2, Axis};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub(crate) static VOTING: KindSpec = KindSpec {
    kind: "voting",
    tasks: BOTH,
    backend: "runner",
    help: "averages its `members` (names of configs in the sweeps, or earlier runs tN): soft voting averages class probabilities, hard voting counts predicted classes; regression averages values",
    feature: None,
    onnx: true,
    algorithm: 2,
    unscaled_from: None,
    curve_axis: "step",
    params: &[
        ParamSpec { name: "voting", ty: ParamType::Choice(&["soft", "hard"]), default: Default_::Str("soft"), help: "classification: average probabilities (soft) or count votes (hard)" },
        CALIBRATION,
        THRESHOLD,
        TUNING_FOLDS,
    ],
};

backend!(
    VotingBackend,
    VOTING,
    |cfg, data, ctx| fit(cfg, data, ctx),
    |saved| load(saved.fitted, saved.task, saved.n_classes, saved.n_features)
);

pub(crate) static STACKING: KindSpec = KindSpec {
    kind: "stacking",
    tasks: BOTH,
    backend: "runner",
    help: "a meta-learner trained on out-of-fold predictions of its `members` (inner CV within each training set), members refitted on all training rows",
    feature: None,
    onnx: true,
    algorithm: 2,
    unscaled_from: None,
    curve_axis: "step",
    params: &[
        ParamSpec { name: "meta", ty: ParamType::Choice(&["auto", "logistic_regression", "linear", "random_forest"]), default: Default_::Str("auto"), help: "meta-learner; auto = logistic_regression for classes, linear for regression" },
        ParamSpec { name: "inner_folds", ty: ParamType::Int { min: 2, max: 20 }, default: Default_::Int(5), help: "inner CV folds that produce the out-of-fold member predictions" },
        ParamSpec { name: "passthrough", ty: ParamType::Bool, default: Default_::Bool(false), help: "also give the meta-learner the input features" },
        CALIBRATION,
        THRESHOLD,
        TUNING_FOLDS,
    ],
};

backend!(
    StackingBackend,
    STACKING,
    |cfg, data, ctx| fit(cfg, data, ctx),
    |saved| load(saved.fitted, saved.task, saved.n_classes, saved.n_features)
);

/// One fitted member and the config it came from.
pub struct Member {
    pub config: ModelConfig,
    pub model: Box<dyn FittedModel>,
}

pub struct Ensemble {
    kind: String,
    task: Task,
    n_classes: usize,
    /// "soft" or "hard" (voting).
    voting: String,
    passthrough: bool,
    members: Vec<Member>,
    meta: Option<Member>,
}

fn member_seed(seed: u64, member: usize, fold: u64) -> u64 {
    SplitMix64::derive(seed, 0xE5E0 + ((member as u64) << 8) + fold).next_u64()
}

fn member_ctx(ctx: &FitContext, seed: u64) -> FitContext<'static> {
    FitContext::new(seed, ctx.threads)
}

/// The columns a member contributes to the meta-learner: class probabilities (one-hot of the
/// predicted class where a model has none) or the predicted value.
fn member_features(task: Task, n_classes: usize, pred: &Prediction) -> Array2<f64> {
    match task {
        Task::Regression => Array1::from(pred.values.clone()).insert_axis(Axis(1)),
        Task::Classification => pred
            .proba
            .clone()
            .unwrap_or_else(|| one_hot(&pred.values, n_classes)),
    }
}

fn one_hot(labels: &[f64], k: usize) -> Array2<f64> {
    let mut out = Array2::zeros((labels.len(), k));
    for (i, c) in labels.iter().enumerate() {
        if (*c as usize) < k {
            out[[i, *c as usize]] = 1.0;
        }
    }
    out
}

fn meta_config(cfg: &ModelConfig, task: Task) -> Result<ModelConfig> {
    let kind = match (cfg.str("meta")?, task) {
        ("auto", Task::Classification) => "logistic_regression",
        ("auto", Task::Regression) => "linear",
        (other, _) => other,
    };
    ModelConfig::with_defaults(kind, "meta")
}

fn rows_of(x: ArrayView2<f64>, y: &Array1<f64>, rows: &[usize]) -> (Array2<f64>, Array1<f64>) {
    (
        x.select(Axis(0), rows),
        rows.iter().map(|r| y[*r]).collect(),
    )
}

fn fit_members<'a, 'l: 'a>(
    cfg: &ModelConfig,
    x: ArrayView2<'a, f64>,
    y: &'a Array1<f64>,
    data: &TrainSet<'l>,
    ctx: &FitContext,
    fold: u64,
) -> Result<Vec<Member>> {
    let set = TrainSet {
        x,
        y: y.view(),
        task: data.task,
        n_classes: data.n_classes,
        labels: data.labels,
    };
    cfg.members
        .iter()
        .enumerate()
        .map(|(j, m)| {
            let m = &as_trained(cfg, m);
            let model = fit_model(m, &set, &member_ctx(ctx, member_seed(ctx.seed, j, fold)))
                .with_context(|| format!("member {} ({})", m.name, m.kind))?;
            Ok(Member {
                config: m.clone(),
                model,
            })
        })
        .collect()
}

/// A member's config as the ensemble's algorithm version trains it: version 1 fitted members
/// without their `resample` (it was applied only to a run's own model then); from version 2
/// each member resamples its training rows as it asks.
fn as_trained(cfg: &ModelConfig, member: &ModelConfig) -> ModelConfig {
    let mut m = member.clone();
    if cfg.algorithm() < 2 && m.params.contains_key("resample") {
        m.params
            .insert("resample".into(), ParamValue::Str("none".into()));
    }
    m
}

pub fn fit(cfg: &ModelConfig, data: &TrainSet, ctx: &FitContext) -> Result<Box<dyn FittedModel>> {
    if cfg.members.len() < 2 {
        bail!(
            "{} \"{}\" has {} members; it needs at least two",
            cfg.kind,
            cfg.name,
            cfg.members.len()
        );
    }
    let y = data.y.to_owned();
    let mut meta = None;
    let passthrough = cfg.kind == "stacking" && cfg.bool("passthrough")?;
    if cfg.kind == "stacking" {
        // Out-of-fold member predictions over the training rows, from an inner CV.
        let n = data.x.nrows();
        let rows: Vec<usize> = (0..n).collect();
        let inner = cfg.int("inner_folds")? as usize;
        let folds = crate::eval::k_fold(
            data.task,
            &y.to_vec(),
            &rows,
            inner.min(n.max(2)),
            1,
            true,
            SplitMix64::derive(ctx.seed, 0x57AC).next_u64(),
        );
        let width = if data.task == Task::Classification {
            data.n_classes
        } else {
            1
        };
        let mut z = Array2::zeros((n, width * cfg.members.len()));
        for (f, fold) in folds.iter().enumerate() {
            let (xt, yt) = rows_of(data.x, &y, &fold.train);
            let xv = data.x.select(Axis(0), &fold.test);
            let fitted = fit_members(cfg, xt.view(), &yt, data, ctx, f as u64)?;
            for (j, m) in fitted.iter().enumerate() {
                let part = member_features(data.task, data.n_classes, &m.model.predict(xv.view())?);
                for (i, r) in fold.test.iter().enumerate() {
                    for c in 0..width {
                        z[[*r, j * width + c]] = part[[i, c]];
                    }
                }
            }
        }
        let z = if passthrough {
            concatenate(Axis(1), &[z.view(), data.x.reborrow()])
                .context("stacking: member predictions and inputs differ in rows")?
        } else {
            z
        };
        let mcfg = meta_config(cfg, data.task)?;
        let set = TrainSet {
            x: z.view(),
            y: y.view(),
            task: data.task,
            n_classes: data.n_classes,
            labels: data.labels,
        };
        let model = fit_model(
            &mcfg,
            &set,
            &member_ctx(ctx, member_seed(ctx.seed, 0xFF, 0xFF)),
        )
        .context("meta-learner")?;
        meta = Some(Member {
            config: mcfg,
            model,
        });
    }
    let members = fit_members(cfg, data.x.reborrow(), &y, data, ctx, 0xFF)?;
    Ok(Box::new(Ensemble {
        kind: cfg.kind.clone(),
        task: data.task,
        n_classes: data.n_classes,
        voting: if cfg.kind == "voting" {
            cfg.str("voting")?.to_string()
        } else {
            String::new()
        },
        passthrough,
        members,
        meta,
    }))
}

impl FittedModel for Ensemble {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        let preds = self
            .members
            .iter()
            .map(|m| m.model.predict(x))
            .collect::<Result<Vec<Prediction>>>()?;
        if let Some(meta) = &self.meta {
            let parts: Vec<Array2<f64>> = preds
                .iter()
                .map(|p| member_features(self.task, self.n_classes, p))
                .collect();
            let mut views: Vec<ArrayView2<f64>> = parts.iter().map(|p| p.view()).collect();
            if self.passthrough {
                views.push(x.reborrow());
            }
            let z = concatenate(Axis(1), &views)
                .context("stacking: member predictions and inputs differ in rows")?;
            return meta.model.predict(z.view());
        }
        let n = x.nrows();
        let m = preds.len() as f64;
        Ok(match self.task {
            Task::Regression => Prediction {
                values: (0..n)
                    .map(|i| preds.iter().map(|p| p.values[i]).sum::<f64>() / m)
                    .collect(),
                proba: None,
            },
            Task::Classification => {
                let mut proba = Array2::zeros((n, self.n_classes));
                for p in &preds {
                    let part = if self.voting == "hard" {
                        one_hot(&p.values, self.n_classes)
                    } else {
                        member_features(self.task, self.n_classes, p)
                    };
                    proba += &part;
                }
                proba.mapv_inplace(|v| v / m);
                let values = if self.voting == "hard" {
                    // Most votes; ties go to the lowest class.
                    proba
                        .rows()
                        .into_iter()
                        .map(|r| argmax(r.iter().copied()) as f64)
                        .collect()
                } else {
                    labels_from_proba(&proba)
                };
                Prediction {
                    values,
                    proba: Some(proba),
                }
            }
        })
    }

    fn to_json(&self) -> Result<Value> {
        let member_json = |m: &Member| -> Result<Value> {
            let native: BTreeMap<&str, String> = m
                .model
                .native()
                .into_iter()
                .map(|(ext, bytes)| (ext, base64::engine::general_purpose::STANDARD.encode(bytes)))
                .collect();
            Ok(json!({
                "model": m.config,
                "fitted": m.model.to_json()?,
                "native_base64": native,
            }))
        };
        Ok(json!({
            "ensemble": self.kind,
            "voting": self.voting,
            "passthrough": self.passthrough,
            "members": self.members.iter().map(member_json).collect::<Result<Vec<_>>>()?,
            "meta": self.meta.as_ref().map(member_json).transpose()?,
        }))
    }
}

/// A saved member's (or meta-learner's) config and native files, from its `to_json` form.
pub fn saved_member(v: &Value) -> Result<(ModelConfig, BTreeMap<String, Vec<u8>>)> {
    let config: ModelConfig =
        serde_json::from_value(v["model"].clone()).context("member config")?;
    let mut native = BTreeMap::new();
    if let Some(map) = v["native_base64"].as_object() {
        for (ext, b64) in map {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.as_str().unwrap_or_default())
                .with_context(|| format!("member {} native .{ext}", config.name))?;
            native.insert(ext.clone(), bytes);
        }
    }
    Ok((config, native))
}

/// Rebuilds a saved ensemble from its `to_json` form.
pub fn load(
    value: &Value,
    task: Task,
    n_classes: usize,
    n_features: usize,
) -> Result<Box<dyn FittedModel>> {
    let member = |v: &Value, n_features: usize| -> Result<Member> {
        let (config, native) = saved_member(v)?;
        let saved = SavedModel {
            config: &config,
            fitted: &v["fitted"],
            native: &native,
            task,
            n_classes,
            n_features,
        };
        let model = super::load(&saved)
            .with_context(|| format!("member {} ({})", config.name, config.kind))?;
        Ok(Member { config, model })
    };
    let members = value["members"]
        .as_array()
        .context("ensemble without members")?
        .iter()
        .map(|v| member(v, n_features))
        .collect::<Result<Vec<_>>>()?;
    let passthrough = value["passthrough"].as_bool().unwrap_or(false);
    let width = if task == Task::Classification {
        n_classes
    } else {
        1
    };
    let meta_features = width * members.len() + if passthrough { n_features } else { 0 };
    let meta = match &value["meta"] {
        Value::Null => None,
        v => Some(member(v, meta_features)?),
    };
    Ok(Box::new(Ensemble {
        kind: value["ensemble"].as_str().unwrap_or("voting").to_string(),
        task,
        n_classes,
        voting: value["voting"].as_str().unwrap_or("soft").to_string(),
        passthrough,
        members,
        meta,
    }))
}
