//! The linfa-backed models (logistic regression, naive Bayes, KNN's neighbour index) and a
//! closed-form ridge regression. Classifiers always train on class indexes 0..K-1 and return an
//! n x K probability matrix, with columns for classes a training fold happened to lack kept at 0.

use super::neighbours::{distance, order, BruteIndex, Neighbours};
use super::params::{Default_, ParamSpec, ParamType, BOTH, CLF, REG};
use super::{labels_from_proba, FittedModel, KindSpec, ModelConfig, Prediction, Task, TrainSet};
use anyhow::{anyhow, bail, Context, Result};
use linfa::prelude::*;
use linfa_bayes::{GaussianNb, NaiveBayes};
use linfa_logistic::{MultiFittedLogisticRegression, MultiLogisticRegression};
use linfa_nn::{distance::L2Dist, CommonNearestNeighbour, NearestNeighbour};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

pub(crate) static LOGISTIC_REGRESSION: KindSpec = KindSpec {
    kind: "logistic_regression",
    tasks: CLF,
    backend: "runner (L-BFGS on the averaged softmax loss, threaded); linfa-logistic for runs of algorithms 1 and 2",
    help: "multinomial logistic regression with L2 penalty",
    feature: None,
    onnx: true,
    algorithm: 3,
    unscaled_from: None,
    curve_axis: "step",
    params: class_params![
        ParamSpec {
            name: "alpha",
            ty: ParamType::Float { min: 0.0, max: 1e6 },
            default: Default_::Float(1.0),
            help: "L2 penalty",
        },
        ParamSpec {
            name: "max_iterations",
            ty: ParamType::Int {
                min: 1,
                max: 100_000,
            },
            default: Default_::Int(200),
            help: "optimiser iterations",
        },
        ParamSpec {
            name: "gradient_tolerance",
            ty: ParamType::Float {
                min: 1e-12,
                max: 1.0,
            },
            default: Default_::Float(1e-4),
            help: "stop when the norm of the loss's gradient per training row falls below this (from algorithm 2; version 1 compared the summed loss's gradient, which large tables never reach before max_iterations)",
        },
    ],
};

backend!(
    LogisticRegressionBackend,
    LOGISTIC_REGRESSION,
    |cfg, data, ctx| match cfg.algorithm() {
        1 | 2 => fit_logistic(cfg, data, ctx.seed),
        _ => Ok(Box::new(super::logistic::fit(cfg, data, ctx)?)),
    },
    |saved| match saved.config.algorithm() {
        1 | 2 => load(&saved.config.kind, saved.task, saved.fitted),
        _ => super::logistic::load(saved.fitted),
    }
);

pub(crate) static KNN: KindSpec = KindSpec {
    kind: "knn",
    tasks: BOTH,
    backend: "linfa-nn (neighbour index) + runner (vote / average)",
    help: "k nearest neighbours",
    feature: None,
    onnx: true,
    algorithm: 1,
    unscaled_from: None,
    curve_axis: "step",
    params: class_params![
        ParamSpec {
            name: "k",
            ty: ParamType::Int {
                min: 1,
                max: 10_000,
            },
            default: Default_::Int(5),
            help: "neighbours",
        },
        ParamSpec {
            name: "weights",
            ty: ParamType::Choice(&["uniform", "distance"]),
            default: Default_::Str("uniform"),
            help: "vote weighting",
        },
        ParamSpec {
            name: "algorithm",
            ty: ParamType::Choice(&["brute", "kdtree", "balltree", "linear"]),
            default: Default_::Str("brute"),
            help: "neighbour search: brute (blocked matrix products, threaded), or a linfa-nn index; all exact",
        },
    ],
};

backend!(
    KnnBackend,
    KNN,
    |cfg, data, ctx| fit_knn(cfg, data, ctx.threads),
    |saved| load(&saved.config.kind, saved.task, saved.fitted)
);

pub(crate) static NAIVE_BAYES: KindSpec = KindSpec {
    kind: "naive_bayes",
    tasks: CLF,
    backend: "linfa-bayes",
    help: "Gaussian naive Bayes",
    feature: None,
    onnx: true,
    algorithm: 1,
    unscaled_from: None,
    curve_axis: "step",
    params: class_params![ParamSpec {
        name: "var_smoothing",
        ty: ParamType::Float { min: 0.0, max: 1.0 },
        default: Default_::Float(1e-9),
        help: "share of the largest variance added to all variances",
    },],
};

backend!(
    NaiveBayesBackend,
    NAIVE_BAYES,
    |cfg, data, _ctx| fit_naive_bayes(cfg, data),
    |saved| load(&saved.config.kind, saved.task, saved.fitted)
);

pub(crate) static LINEAR: KindSpec = KindSpec {
    kind: "linear",
    tasks: REG,
    backend: "runner (closed-form ridge, Cholesky)",
    help: "linear least squares with optional ridge penalty",
    feature: None,
    onnx: true,
    algorithm: 1,
    unscaled_from: None,
    curve_axis: "step",
    params: &[
        ParamSpec {
            name: "alpha",
            ty: ParamType::Float { min: 0.0, max: 1e9 },
            default: Default_::Float(0.0),
            help: "ridge (L2) penalty; 0 = ordinary least squares",
        },
        ParamSpec {
            name: "fit_intercept",
            ty: ParamType::Bool,
            default: Default_::Bool(true),
            help: "learn an intercept",
        },
    ],
};

backend!(
    LinearBackend,
    LINEAR,
    |cfg, data, _ctx| fit_linear(cfg, data),
    |saved| load(&saved.config.kind, saved.task, saved.fitted)
);

/// Spreads probabilities over `classes` (the ones a model saw) into all K columns.
fn widen(proba: ArrayView2<f64>, classes: &[usize], k: usize) -> Array2<f64> {
    let mut out = Array2::zeros((proba.nrows(), k));
    for (j, c) in classes.iter().enumerate() {
        out.column_mut(*c).assign(&proba.column(j));
    }
    out
}

fn classified(proba: Array2<f64>) -> Prediction {
    Prediction {
        values: labels_from_proba(&proba),
        proba: Some(proba),
    }
}

/// Rebuilds a saved model of one of this file's kinds from its JSON form.
pub fn load(kind: &str, task: Task, value: &serde_json::Value) -> Result<Box<dyn FittedModel>> {
    let v = value.clone();
    Ok(match (kind, task) {
        ("logistic_regression", _) => Box::new(serde_json::from_value::<Logistic>(v)?),
        ("naive_bayes", _) => Box::new(serde_json::from_value::<NaiveBayesModel>(v)?),
        ("knn", _) => Box::new(serde_json::from_value::<Knn>(v)?),
        ("linear", _) => Box::new(serde_json::from_value::<Linear>(v)?),
        (other, _) => bail!("no loader for model kind `{other}`"),
    })
}

// ---------------------------------------------------------------- logistic regression

#[derive(Serialize, Deserialize)]
struct Logistic {
    n_classes: usize,
    model: MultiFittedLogisticRegression<f64, usize>,
}

impl FittedModel for Logistic {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        let p = self.model.predict_probabilities(&x);
        Ok(classified(widen(
            p.view(),
            self.model.classes(),
            self.n_classes,
        )))
    }
    fn to_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(self)?)
    }
}

/// The rows linfa-logistic trains on: all of them, or with `class_weight = "balanced"` (it
/// takes no sample weights) as many rows drawn with replacement, each with probability
/// proportional to its class weight, from a stream of `seed`.
fn logistic_rows(cfg: &ModelConfig, data: &TrainSet, seed: u64) -> Result<Vec<usize>> {
    let n = data.y.len();
    let Some(per_class) = data.class_weights(cfg)?.filter(|_| n > 0) else {
        return Ok((0..n).collect());
    };
    let weights: Vec<f64> = data.class_labels().iter().map(|c| per_class[*c]).collect();
    let mut cumulative = Vec::with_capacity(n);
    let mut total = 0.0;
    for w in &weights {
        total += w;
        cumulative.push(total);
    }
    let mut rng = crate::rng::SplitMix64::derive(seed, 0xC1A55);
    let rows = (0..n)
        .map(|_| {
            let u = rng.next_f64() * total;
            cumulative.partition_point(|c| *c <= u).min(n - 1)
        })
        .collect();
    Ok(rows)
}

pub fn fit_logistic(cfg: &ModelConfig, data: &TrainSet, seed: u64) -> Result<Box<dyn FittedModel>> {
    let rows = logistic_rows(cfg, data, seed)?;
    let labels = data.class_labels();
    let y: Array1<usize> = rows.iter().map(|r| labels[*r]).collect();
    let x = data.x.select(ndarray::Axis(0), &rows);
    let ds = Dataset::new(x, y);
    // linfa's loss sums over rows: from algorithm 2 the tolerance is per row, as scikit-learn's
    // averaged loss has it, so a large table stops at convergence instead of max_iterations.
    let tolerance = match cfg.algorithm() {
        1 => cfg.float("gradient_tolerance")?,
        _ => cfg.float("gradient_tolerance")? * rows.len().max(1) as f64,
    };
    let model = MultiLogisticRegression::default()
        .alpha(cfg.float("alpha")?)
        .max_iterations(cfg.int("max_iterations")? as u64)
        .gradient_tolerance(tolerance)
        .fit(&ds)
        .map_err(|e| anyhow!("linfa-logistic: {e}"))?;
    Ok(Box::new(Logistic {
        n_classes: data.n_classes,
        model,
    }))
}

// ---------------------------------------------------------------- Gaussian naive Bayes

#[derive(Serialize, Deserialize)]
struct NaiveBayesModel {
    n_classes: usize,
    model: GaussianNb<f64, usize>,
    /// `class_weight = "balanced"`: the posterior is reweighted by n / (K_present * count),
    /// which turns the fitted class priors into equal ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    class_weights: Option<Vec<f64>>,
}

impl FittedModel for NaiveBayesModel {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        // predict_proba returns columns in sorted class order, independent of HashMap order.
        let (p, classes) = self.model.predict_proba(x);
        let classes: Vec<usize> = classes.into_iter().copied().collect();
        let mut proba = widen(p.view(), &classes, self.n_classes);
        if let Some(w) = &self.class_weights {
            for mut row in proba.rows_mut() {
                row.iter_mut().zip(w).for_each(|(p, w)| *p *= w);
                let total: f64 = row.sum();
                if total > 0.0 {
                    row.mapv_inplace(|p| p / total);
                }
            }
        }
        Ok(classified(proba))
    }
    fn to_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(self)?)
    }
}

pub fn fit_naive_bayes(cfg: &ModelConfig, data: &TrainSet) -> Result<Box<dyn FittedModel>> {
    let ds = Dataset::new(data.x.to_owned(), Array1::from(data.class_labels()));
    let model = GaussianNb::params()
        .var_smoothing(cfg.float("var_smoothing")?)
        .fit(&ds)
        .map_err(|e| anyhow!("linfa-bayes: {e}"))?;
    Ok(Box::new(NaiveBayesModel {
        n_classes: data.n_classes,
        model,
        class_weights: balanced_class_weights(cfg, data)?,
    }))
}

// ---------------------------------------------------------------- KNN

#[derive(Serialize, Deserialize)]
struct Knn {
    task: Task,
    n_classes: usize,
    k: usize,
    distance_weighted: bool,
    algorithm: String,
    x: Array2<f64>,
    y: Array1<f64>,
    /// Threads of the brute-force search (runs recorded before it had none: one).
    #[serde(default = "one_thread")]
    threads: usize,
    /// `class_weight = "balanced"`: each class's vote weight, n / (K_present * count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    class_weights: Option<Vec<f64>>,
}

fn one_thread() -> usize {
    1
}

impl Knn {
    /// Each query row's `k` nearest training rows: (distance, training row), nearest first,
    /// ties by training row.
    fn neighbours(&self, x: ArrayView2<f64>) -> Result<Vec<Neighbours>> {
        let k = self.k.min(self.x.nrows());
        let structure = match self.algorithm.as_str() {
            "brute" => return Ok(BruteIndex::new(&self.x).k_nearest(x, k, self.threads)),
            "balltree" => CommonNearestNeighbour::BallTree,
            "linear" => CommonNearestNeighbour::LinearSearch,
            _ => CommonNearestNeighbour::KdTree,
        };
        let index = structure
            .from_batch(&self.x, L2Dist)
            .map_err(|e| anyhow!("linfa-nn: cannot index the training rows: {e}"))?;
        let mut out = Vec::with_capacity(x.nrows());
        for row in x.outer_iter() {
            let mut hits: Neighbours = index
                .k_nearest(row, k)
                .map_err(|e| anyhow!("linfa-nn: neighbour search failed: {e}"))?
                .into_iter()
                .map(|(p, idx)| (distance(p, row), idx))
                .collect();
            order(&mut hits);
            out.push(hits);
        }
        Ok(out)
    }
}

impl FittedModel for Knn {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        let n = x.nrows();
        let mut proba = Array2::zeros((n, self.n_classes.max(1)));
        let mut values = vec![0.0; n];
        for (i, hits) in self.neighbours(x)?.into_iter().enumerate() {
            let weight = |d: f64| {
                if self.distance_weighted {
                    1.0 / d.max(1e-12)
                } else {
                    1.0
                }
            };
            match self.task {
                Task::Classification => {
                    let class_weight = |idx: usize| {
                        let c = self.y[idx] as usize;
                        self.class_weights.as_ref().map_or(1.0, |w| w[c])
                    };
                    let vote = |(d, idx): &(f64, usize)| weight(*d) * class_weight(*idx);
                    let total: f64 = hits.iter().map(vote).sum();
                    for hit in &hits {
                        proba[[i, self.y[hit.1] as usize]] += vote(hit) / total;
                    }
                }
                Task::Regression => {
                    let total: f64 = hits.iter().map(|(d, _)| weight(*d)).sum();
                    values[i] = hits
                        .iter()
                        .map(|(d, idx)| weight(*d) * self.y[*idx])
                        .sum::<f64>()
                        / total;
                }
            }
        }
        Ok(match self.task {
            Task::Classification => classified(proba),
            Task::Regression => Prediction {
                values,
                proba: None,
            },
        })
    }
    fn to_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(self)?)
    }
}

pub fn fit_knn(cfg: &ModelConfig, data: &TrainSet, threads: usize) -> Result<Box<dyn FittedModel>> {
    if data.x.nrows() == 0 {
        bail!("knn needs at least one training row");
    }
    Ok(Box::new(Knn {
        task: data.task,
        n_classes: data.n_classes,
        k: cfg.int("k")? as usize,
        distance_weighted: cfg.str("weights")? == "distance",
        algorithm: cfg.str("algorithm")?.to_string(),
        x: data.x.to_owned(),
        y: data.y.to_owned(),
        threads: threads.max(1),
        class_weights: balanced_class_weights(cfg, data)?,
    }))
}

/// Per-class weights (`class_weight = "balanced"` or `class_weights`); none otherwise.
fn balanced_class_weights(cfg: &ModelConfig, data: &TrainSet) -> Result<Option<Vec<f64>>> {
    data.class_weights(cfg)
}

// ---------------------------------------------------------------- linear / ridge

#[derive(Serialize, Deserialize)]
struct Linear {
    coef: Vec<f64>,
    intercept: f64,
}

impl FittedModel for Linear {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        let values = x
            .outer_iter()
            .map(|r| self.intercept + r.iter().zip(&self.coef).map(|(a, b)| a * b).sum::<f64>())
            .collect();
        Ok(Prediction {
            values,
            proba: None,
        })
    }
    fn to_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(self)?)
    }
}

/// Solves the symmetric positive definite system `a x = b` by Cholesky decomposition.
fn cholesky_solve(mut a: Array2<f64>, b: Array1<f64>) -> Option<Array1<f64>> {
    let n = a.nrows();
    for j in 0..n {
        let mut d = a[[j, j]];
        for k in 0..j {
            d -= a[[j, k]] * a[[j, k]];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        a[[j, j]] = d;
        for i in j + 1..n {
            let mut s = a[[i, j]];
            for k in 0..j {
                s -= a[[i, k]] * a[[j, k]];
            }
            a[[i, j]] = s / d;
        }
    }
    let mut z = b;
    for i in 0..n {
        for k in 0..i {
            z[i] -= a[[i, k]] * z[k];
        }
        z[i] /= a[[i, i]];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            z[i] -= a[[k, i]] * z[k];
        }
        z[i] /= a[[i, i]];
    }
    Some(z)
}

pub fn fit_linear(cfg: &ModelConfig, data: &TrainSet) -> Result<Box<dyn FittedModel>> {
    let alpha = cfg.float("alpha")?;
    let intercept = cfg.bool("fit_intercept")?;
    let (x, y) = (data.x, data.y);
    let p = x.ncols();
    let (x_mean, y_mean) = if intercept {
        (
            x.mean_axis(Axis(0)).context("no training rows")?,
            y.mean().context("no training rows")?,
        )
    } else {
        (Array1::zeros(p), 0.0)
    };
    let xc = &x - &x_mean;
    let yc = &y - y_mean;
    let mut gram = xc.t().dot(&xc);
    let rhs = xc.t().dot(&yc);
    for i in 0..p {
        gram[[i, i]] += alpha;
    }
    // A collinear design with alpha = 0 is singular: add the smallest ridge that makes it solvable.
    let scale = (0..p).map(|i| gram[[i, i]]).fold(0.0f64, f64::max).max(1.0);
    let coef = cholesky_solve(gram.clone(), rhs.clone())
        .or_else(|| {
            let mut g = gram;
            for i in 0..p {
                g[[i, i]] += 1e-10 * scale;
            }
            cholesky_solve(g, rhs)
        })
        .context("linear regression: the feature matrix is singular")?;
    let b = y_mean - coef.dot(&x_mean);
    Ok(Box::new(Linear {
        coef: coef.to_vec(),
        intercept: b,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn version_1_keeps_the_summed_tolerance() {
        // 20,000 rows: the summed loss's gradient never falls to 1e-4, the per-row one does.
        let n = 20_000;
        let x = Array2::from_shape_fn((n, 3), |(i, j)| {
            (((i * (7 + j) * 7919) % 1009) as f64 - 504.0) / 300.0
        });
        let y: Array1<f64> = (0..n)
            .map(|i| {
                ((x[[i, 0]] - 0.5 * x[[i, 1]] + ((i * 31) % 7) as f64 / 3.0) > 1.0) as u8 as f64
            })
            .collect();
        let data = TrainSet {
            x: x.view(),
            y: y.view(),
            task: Task::Classification,
            n_classes: 2,
            labels: None,
        };
        let mut cfg = ModelConfig::with_defaults("logistic_regression", "lr").unwrap();
        let fitted = |cfg: &ModelConfig| fit_logistic(cfg, &data, 1).unwrap().to_json().unwrap();
        let per_row = fitted(&cfg);
        cfg.algorithm = None;
        let summed = fitted(&cfg);
        let linfa = MultiLogisticRegression::default()
            .alpha(1.0)
            .max_iterations(200)
            .gradient_tolerance(1e-4)
            .fit(&Dataset::new(x.clone(), y.mapv(|v| v as usize)))
            .unwrap();
        assert_eq!(summed["model"], serde_json::to_value(&linfa).unwrap());
        assert_ne!(per_row, summed);
    }

    #[test]
    fn ridge_zero_recovers_exact_line() {
        let x = array![[0.0, 1.0], [1.0, 0.0], [2.0, 3.0], [3.0, 1.0]];
        let y: Array1<f64> = x.outer_iter().map(|r| 2.0 + 3.0 * r[0] - r[1]).collect();
        let cfg = ModelConfig {
            name: "l".into(),
            kind: "linear".into(),
            params: [
                ("alpha".to_string(), super::super::ParamValue::Float(0.0)),
                (
                    "fit_intercept".to_string(),
                    super::super::ParamValue::Bool(true),
                ),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let data = TrainSet {
            x: x.view(),
            y: y.view(),
            task: Task::Regression,
            n_classes: 0,
            labels: None,
        };
        let m = fit_linear(&cfg, &data).unwrap();
        let p = m.predict(array![[10.0, 10.0]].view()).unwrap();
        assert!((p.values[0] - 22.0).abs() < 1e-9, "{}", p.values[0]);
    }
}
