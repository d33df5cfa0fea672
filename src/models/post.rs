//! A classifier's decision step after its probabilities: `calibration` (Platt or isotonic) and
//! a two-class `threshold`, fitted on out-of-fold predictions of an inner CV over the rows the
//! model is given (`tuning_folds`). [`super::fit`] sees only a fold's training rows, so the
//! rows an outer CV fold scores never choose its threshold or fit its calibration. The model is
//! then fitted on every row it was given, and wrapped: its saved form is
//! `{"postprocess": {...}, "inner": <the model's own>}`.

use super::{labels_from_proba, FitContext, FittedModel, ModelConfig, Prediction, Task, TrainSet};
use crate::calibrate::{self, Calibrator, Method, Rule};
use crate::rng::SplitMix64;
use anyhow::{anyhow, bail, Context, Result};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

/// What the decision step applies, as saved with the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Post {
    /// Empty without calibration; one (two classes) or one per class.
    pub calibrators: Vec<Calibrator>,
    /// Two classes: the second class's probability from which a row is of that class.
    pub threshold: Option<f64>,
    /// The `threshold` parameter it came from, e.g. "f1".
    pub rule: String,
}

impl Post {
    /// Calibrated probabilities, and the labels they give under the threshold.
    pub fn apply(&self, pred: Prediction) -> Prediction {
        let Some(raw) = pred.proba else {
            return pred;
        };
        let proba = if self.calibrators.is_empty() {
            raw
        } else {
            calibrate::apply_classes(&self.calibrators, raw.view())
        };
        let values = match self.threshold {
            Some(t) if proba.ncols() == 2 => proba
                .column(1)
                .iter()
                .map(|p| f64::from(u8::from(*p >= t)))
                .collect(),
            _ => labels_from_proba(&proba),
        };
        Prediction {
            values,
            proba: Some(proba),
        }
    }
}

/// Fits a model on a training set: the backend, after the config's resampling.
pub type FitOne<'f> = dyn Fn(&TrainSet, &FitContext) -> Result<Box<dyn FittedModel>> + 'f;

/// The config's calibration method and threshold rule (none for a regression).
fn asked(cfg: &ModelConfig, task: Task) -> Result<(Option<Method>, Rule)> {
    let spec = super::kind_spec(&cfg.kind);
    let has = spec.is_some_and(|k| k.params.iter().any(|p| p.name == "threshold"));
    if task != Task::Classification || !has {
        return Ok((None, Rule::None));
    }
    let method = Method::parse(cfg.str("calibration")?);
    let text = cfg
        .params
        .get("threshold")
        .map_or("none".to_string(), |v| v.to_string());
    let rule = Rule::parse(&text).ok_or_else(|| {
        anyhow!(
            "{} `{}`: threshold \"{text}\" is not one of {}",
            cfg.kind,
            cfg.name,
            calibrate::RULES
        )
    })?;
    Ok((method, rule))
}

/// Whether `cfg` has a decision step to fit.
pub fn wanted(cfg: &ModelConfig, task: Task) -> Result<bool> {
    let (method, rule) = asked(cfg, task)?;
    Ok(method.is_some() || rule != Rule::None)
}

/// Fits `cfg` through `fit_one` (resampling and the backend) and its decision step.
pub fn fit(
    cfg: &ModelConfig,
    data: &TrainSet,
    ctx: &FitContext,
    fit_one: &FitOne,
) -> Result<Box<dyn FittedModel>> {
    let (method, rule) = asked(cfg, data.task)?;
    if rule != Rule::None && data.n_classes != 2 {
        bail!(
            "{} `{}`: a decision threshold needs two classes; the data has {}",
            cfg.kind,
            cfg.name,
            data.n_classes
        );
    }
    let mut post = Post {
        calibrators: Vec::new(),
        threshold: match rule {
            Rule::Fixed(t) => Some(t),
            _ => None,
        },
        rule: cfg
            .params
            .get("threshold")
            .map_or("none".into(), |v| v.to_string()),
    };
    if method.is_some() || rule.learned() {
        let oof = out_of_fold(cfg, data, ctx, fit_one).context("the inner CV of `tuning_folds`")?;
        let y = data.y.to_vec();
        if let Some(m) = method {
            post.calibrators = calibrate::fit_classes(m, oof.view(), &y);
        }
        if rule.learned() {
            let p = calibrate::apply_classes(&post.calibrators, oof.view());
            let scores = if post.calibrators.is_empty() { oof } else { p };
            let truth: Vec<bool> = y.iter().map(|v| *v == 1.0).collect();
            post.threshold = rule.choose(&scores.column(1).to_vec(), &truth);
        }
    }
    let inner = fit_one(data, ctx)?;
    Ok(Box::new(PostFitted { inner, post }))
}

/// Out-of-fold class probabilities over `data`'s rows from a stratified inner CV.
fn out_of_fold(
    cfg: &ModelConfig,
    data: &TrainSet,
    ctx: &FitContext,
    fit_one: &FitOne,
) -> Result<Array2<f64>> {
    let n = data.x.nrows();
    let y = data.y.to_vec();
    let rows: Vec<usize> = (0..n).collect();
    let k = cfg.usize("tuning_folds")?.min(n.max(2));
    let seed = SplitMix64::derive(ctx.seed, 0xCA1B).next_u64();
    let folds = crate::eval::k_fold(data.task, &y, &rows, k, 1, true, seed);
    let mut oof = Array2::zeros((n, data.n_classes));
    for (f, fold) in folds.iter().enumerate() {
        let x = data.x.select(Axis(0), &fold.train);
        let yt: Array1<f64> = fold.train.iter().map(|r| y[*r]).collect();
        let set = TrainSet {
            x: x.view(),
            y: yt.view(),
            ..*data
        };
        let inner_ctx = FitContext::new(SplitMix64::derive(seed, f as u64).next_u64(), ctx.threads);
        let model = fit_one(&set, &inner_ctx)?;
        let pred = model.predict(data.x.select(Axis(0), &fold.test).view())?;
        let proba = pred.proba.ok_or_else(|| {
            anyhow!(
                "{} `{}` gives no class probabilities, which calibration and thresholds need",
                cfg.kind,
                cfg.name
            )
        })?;
        for (i, r) in fold.test.iter().enumerate() {
            oof.row_mut(*r).assign(&proba.row(i));
        }
    }
    Ok(oof)
}

/// A model and the decision step fitted with it.
pub struct PostFitted {
    pub inner: Box<dyn FittedModel>,
    pub post: Post,
}

impl FittedModel for PostFitted {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        Ok(self.post.apply(self.inner.predict(x)?))
    }
    fn to_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::json!({
            "postprocess": self.post,
            "inner": self.inner.to_json()?,
        }))
    }
    fn native(&self) -> Vec<(&'static str, Vec<u8>)> {
        self.inner.native()
    }
    fn feature_importance(&self) -> Vec<(&'static str, Vec<f64>)> {
        self.inner.feature_importance()
    }
    fn threshold(&self) -> Option<f64> {
        self.post.threshold
    }
}

/// The decision step of a saved model, and its own saved form; `None` for one without.
pub fn saved(fitted: &serde_json::Value) -> Result<Option<(Post, &serde_json::Value)>> {
    let Some(post) = fitted.get("postprocess") else {
        return Ok(None);
    };
    let post: Post =
        serde_json::from_value(post.clone()).context("the saved model's postprocess")?;
    Ok(Some((post, &fitted["inner"])))
}
