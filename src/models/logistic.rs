//! Multinomial logistic regression, algorithm 3: runner's own L-BFGS on the averaged softmax
//! loss with an L2 penalty, `sum_i w_i (logsumexp(z_i) - z_i,y_i) / sum_i w_i + alpha/2 |W|^2 /
//! sum_i w_i` (the intercept unpenalised), the same optimum as linfa's summed form. The loss and
//! its gradient are one pass over the rows, in fixed blocks spread over the config's threads and
//! summed in block order, so a fit is the same at any thread count. Class weights weigh rows
//! (versions 1 and 2 resampled rows instead, linfa having no sample weights).

use super::{labels_from_proba, FitContext, FittedModel, ModelConfig, Prediction, TrainSet};
use anyhow::{bail, Result};
use ndarray::{Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};

/// Rows per block of the loss's pass.
const BLOCK: usize = 4096;
/// Pairs L-BFGS keeps.
const HISTORY: usize = 10;

/// The fitted weights, in linfa's saved layout (`params` features x classes present,
/// `intercept`, `classes`), which the ONNX export reads.
#[derive(Serialize, Deserialize)]
struct Weights {
    params: Array2<f64>,
    intercept: Array1<f64>,
    classes: Vec<usize>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct Softmax {
    n_classes: usize,
    model: Weights,
}

impl FittedModel for Softmax {
    fn predict(&self, x: ArrayView2<f64>) -> Result<Prediction> {
        let m = &self.model;
        let z = x.dot(&m.params) + &m.intercept;
        let mut proba = Array2::zeros((x.nrows(), self.n_classes));
        for (i, row) in z.rows().into_iter().enumerate() {
            let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = row.iter().map(|v| (v - top).exp()).sum();
            for (j, c) in m.classes.iter().enumerate() {
                proba[[i, *c]] = (row[j] - top).exp() / total;
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

pub(super) fn load(value: &serde_json::Value) -> Result<Box<dyn FittedModel>> {
    Ok(Box::new(Softmax::deserialize(value)?))
}

/// The training problem: rows (row-major), each row's class among those present, and each
/// class's weight (a row's weight is its class's: a vector of classes is all a fit keeps per
/// row beside the matrix).
struct Objective<'a> {
    x: &'a [f64],
    width: usize,
    class: Vec<usize>,
    class_weight: Vec<f64>,
    classes: usize,
    alpha: f64,
    total_weight: f64,
    threads: usize,
}

impl Objective<'_> {
    fn params(&self) -> usize {
        (self.width + 1) * self.classes
    }

    /// The loss and its gradient at `theta` (weights row-major, then the intercepts).
    fn evaluate(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let rows = self.class.len();
        let blocks = rows.div_ceil(BLOCK);
        let mut parts: Vec<Option<(f64, Vec<f64>)>> = (0..blocks).map(|_| None).collect();
        let threads = self.threads.clamp(1, blocks.max(1));
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        (t..blocks)
                            .step_by(threads)
                            .map(|b| (b, self.block(theta, b * BLOCK, ((b + 1) * BLOCK).min(rows))))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                for (b, part) in h.join().unwrap_or_default() {
                    parts[b] = Some(part);
                }
            }
        });
        let (mut loss, mut grad) = (0.0, vec![0.0; self.params()]);
        for (l, g) in parts.into_iter().flatten() {
            loss += l;
            grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
        }
        let k = self.classes;
        let weights = &theta[..self.width * k];
        let penalty: f64 = weights.iter().map(|w| w * w).sum::<f64>() * self.alpha / 2.0;
        for (g, w) in grad.iter_mut().zip(weights) {
            *g += self.alpha * w;
        }
        let n = self.total_weight;
        grad.iter_mut().for_each(|g| *g /= n);
        ((loss + penalty) / n, grad)
    }

    /// The summed loss and gradient of rows `start..end`, without the penalty.
    fn block(&self, theta: &[f64], start: usize, end: usize) -> (f64, Vec<f64>) {
        let (d, k) = (self.width, self.classes);
        let (w, b) = theta.split_at(d * k);
        let mut grad = vec![0.0; self.params()];
        let (mut loss, mut z) = (0.0, vec![0.0; k]);
        for i in start..end {
            let x = &self.x[i * d..(i + 1) * d];
            z.copy_from_slice(b);
            for (j, xj) in x.iter().enumerate() {
                for (zc, wc) in z.iter_mut().zip(&w[j * k..(j + 1) * k]) {
                    *zc += xj * wc;
                }
            }
            let top = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut total = 0.0;
            for zc in z.iter_mut() {
                *zc = (*zc - top).exp();
                total += *zc;
            }
            let y = self.class[i];
            let weight = self.class_weight[y];
            // z now holds exp(z - top); -log p_y = log(total) - (z_y - top).
            loss += weight * (total.ln() - z[y].ln());
            for (c, zc) in z.iter_mut().enumerate() {
                *zc = weight * (*zc / total - if c == y { 1.0 } else { 0.0 });
            }
            for (j, xj) in x.iter().enumerate() {
                for (g, r) in grad[j * k..(j + 1) * k].iter_mut().zip(&z) {
                    *g += xj * r;
                }
            }
            for (g, r) in grad[d * k..].iter_mut().zip(&z) {
                *g += r;
            }
        }
        (loss, grad)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Limited-memory BFGS with a backtracking (Armijo) line search; stops when the gradient's
/// norm falls below `tolerance` or after `max_iterations`. The parameters and their loss.
fn minimise(f: &Objective, tolerance: f64, max_iterations: usize) -> (Vec<f64>, f64) {
    let mut theta = vec![0.0; f.params()];
    let (mut loss, mut grad) = f.evaluate(&theta);
    let mut history: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    for _ in 0..max_iterations {
        if dot(&grad, &grad).sqrt() < tolerance {
            break;
        }
        let direction = two_loop(&grad, &history);
        let slope = dot(&grad, &direction);
        if slope >= 0.0 {
            history.clear();
            continue;
        }
        let mut step = if history.is_empty() {
            (1.0 / dot(&grad, &grad).sqrt()).min(1.0)
        } else {
            1.0
        };
        let accepted = loop {
            let next: Vec<f64> = (theta.iter().zip(&direction))
                .map(|(t, d)| t + step * d)
                .collect();
            let (l, g) = f.evaluate(&next);
            if l <= loss + 1e-4 * step * slope {
                break Some((next, l, g));
            }
            step /= 2.0;
            if step < 1e-20 {
                break None;
            }
        };
        let Some((next, l, g)) = accepted else { break };
        let s: Vec<f64> = next.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 * dot(&y, &y).max(f64::MIN_POSITIVE) {
            if history.len() == HISTORY {
                history.remove(0);
            }
            history.push((s, y, 1.0 / sy));
        }
        (theta, loss, grad) = (next, l, g);
    }
    (theta, loss)
}

/// The L-BFGS direction `-H g` from the stored pairs (s, y, 1 / s'y).
fn two_loop(grad: &[f64], history: &[(Vec<f64>, Vec<f64>, f64)]) -> Vec<f64> {
    let mut q: Vec<f64> = grad.iter().map(|g| -g).collect();
    let mut alphas = Vec::with_capacity(history.len());
    for (s, y, rho) in history.iter().rev() {
        let a = rho * dot(s, &q);
        q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
        alphas.push(a);
    }
    if let Some((s, y, _)) = history.last() {
        let gamma = dot(s, y) / dot(y, y);
        q.iter_mut().for_each(|v| *v *= gamma);
    }
    for ((s, y, rho), a) in history.iter().zip(alphas.iter().rev()) {
        let b = rho * dot(y, &q);
        q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
    }
    q
}

pub(super) fn fit(cfg: &ModelConfig, data: &TrainSet, ctx: &FitContext) -> Result<Softmax> {
    let mut class = data.class_labels();
    let classes: Vec<usize> = (0..data.n_classes).filter(|c| class.contains(c)).collect();
    let mut index = vec![0; data.n_classes];
    for (j, c) in classes.iter().enumerate() {
        index[*c] = j;
    }
    let per_class = data.class_weights(cfg)?;
    let class_weight: Vec<f64> = (classes.iter())
        .map(|c| per_class.as_ref().map_or(1.0, |w| w[*c]))
        .collect();
    class.iter_mut().for_each(|c| *c = index[*c]);
    // Summed row by row, in row order, as when each row carried its weight.
    let total_weight: f64 = class.iter().map(|c| class_weight[*c]).sum();
    let x = data.x.as_standard_layout();
    let objective = Objective {
        x: x.as_slice().unwrap_or_default(),
        width: data.x.ncols(),
        class,
        total_weight: total_weight.max(f64::MIN_POSITIVE),
        class_weight,
        classes: classes.len(),
        alpha: cfg.float("alpha")?,
        threads: ctx.threads,
    };
    let (theta, loss) = minimise(
        &objective,
        cfg.float("gradient_tolerance")?,
        cfg.int("max_iterations")? as usize,
    );
    if !loss.is_finite() || theta.iter().any(|t| !t.is_finite()) {
        bail!(
            "logistic regression: the loss is not finite (an input holds an infinite value or the values are too large)"
        );
    }
    let (d, k) = (objective.width, objective.classes);
    Ok(Softmax {
        n_classes: data.n_classes,
        model: Weights {
            params: Array2::from_shape_vec((d, k), theta[..d * k].to_vec())?,
            intercept: Array1::from(theta[d * k..].to_vec()),
            classes,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{test_config, ParamValue, Task, BACKENDS};
    use crate::rng::SplitMix64;

    fn table(n: usize, classes: usize) -> (Array2<f64>, Array1<f64>) {
        let mut rng = SplitMix64::new(5);
        let x = Array2::from_shape_fn((n, 4), |_| rng.next_f64() * 4.0 - 2.0);
        let y = (x.rows().into_iter())
            .map(|r| {
                let score = r[0] - 0.5 * r[1] + r[2] * r[3] * 0.2 + (rng.next_f64() - 0.5) * 2.0;
                ((score + 3.0) / 6.0 * classes as f64)
                    .clamp(0.0, classes as f64 - 1.0)
                    .floor()
            })
            .collect();
        (x, y)
    }

    fn config(algorithm: u32, overrides: &[(&str, ParamValue)]) -> ModelConfig {
        let mut config = test_config("logistic_regression", overrides);
        config.algorithm = Some(algorithm);
        config
    }

    fn fit(
        cfg: &ModelConfig,
        x: &Array2<f64>,
        y: &Array1<f64>,
        threads: usize,
    ) -> Result<Box<dyn FittedModel>> {
        let backend = BACKENDS
            .iter()
            .find(|b| b.spec().kind == "logistic_regression")
            .unwrap();
        let data = TrainSet {
            x: x.view(),
            y: y.view(),
            task: Task::Classification,
            n_classes: 3,
            labels: None,
        };
        backend.fit(cfg, &data, &FitContext::new(1, threads))
    }

    fn predict(cfg: &ModelConfig, x: &Array2<f64>, y: &Array1<f64>, threads: usize) -> Prediction {
        let model = fit(cfg, x, y, threads).unwrap();
        model.predict(x.view()).unwrap()
    }

    #[test]
    fn the_gradient_is_the_losss_derivative() {
        let (x, y) = table(500, 3);
        let f = Objective {
            x: x.as_slice().unwrap(),
            width: 4,
            class: y.iter().map(|v| *v as usize).collect(),
            class_weight: vec![1.0, 2.0, 3.0],
            total_weight: y.iter().map(|c| 1.0 + c).sum(),
            classes: 3,
            alpha: 0.7,
            threads: 1,
        };
        let theta: Vec<f64> = (0..f.params()).map(|i| (i as f64 * 0.37).sin()).collect();
        let (_, grad) = f.evaluate(&theta);
        for (i, g) in grad.iter().enumerate() {
            let mut up = theta.clone();
            up[i] += 1e-6;
            let mut down = theta.clone();
            down[i] -= 1e-6;
            let numeric = (f.evaluate(&up).0 - f.evaluate(&down).0) / 2e-6;
            assert!(
                (numeric - g).abs() < 1e-6,
                "parameter {i}: {g} vs {numeric}"
            );
        }
    }

    #[test]
    fn the_fit_is_the_same_at_any_thread_count_and_finds_linfas_optimum() {
        let (x, y) = table(9000, 3);
        let tight = [("gradient_tolerance", ParamValue::Float(1e-8))];
        let one = predict(&config(3, &tight), &x, &y, 1).proba.unwrap();
        let three = predict(&config(3, &tight), &x, &y, 3).proba.unwrap();
        assert_eq!(one, three);
        let linfa = predict(&config(2, &tight), &x, &y, 1).proba.unwrap();
        let gap = (&one - &linfa)
            .mapv(f64::abs)
            .fold(0.0, |a: f64, b| a.max(*b));
        assert!(gap < 1e-4, "probabilities differ from linfa's by {gap}");
    }

    #[test]
    fn an_infinite_input_is_an_error_not_a_model_of_nans() {
        let (mut x, y) = table(100, 3);
        x[[5, 1]] = f64::INFINITY;
        let err = fit(&config(3, &[]), &x, &y, 1).err().unwrap();
        assert!(err.to_string().contains("not finite"), "{err}");
    }

    #[test]
    fn balanced_class_weights_raise_a_rare_classs_recall() {
        let (x, mut y) = table(3000, 3);
        // Make class 2 rare: most of its rows become class 1.
        for (i, v) in y.iter_mut().enumerate() {
            if *v == 2.0 && i % 5 != 0 {
                *v = 1.0;
            }
        }
        let recall = |p: &Prediction| {
            let (hit, all) = (p.values.iter().zip(&y))
                .filter(|(_, t)| **t == 2.0)
                .fold((0, 0), |(h, a), (p, _)| (h + (*p == 2.0) as usize, a + 1));
            hit as f64 / all as f64
        };
        let plain = recall(&predict(&config(3, &[]), &x, &y, 1));
        let balanced = predict(
            &config(3, &[("class_weight", ParamValue::Str("balanced".into()))]),
            &x,
            &y,
            1,
        );
        assert!(
            recall(&balanced) > plain + 0.2,
            "recall {plain} -> {}",
            recall(&balanced)
        );
    }
}
