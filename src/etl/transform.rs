//! Per-column transforms of the ETL, fitted on each training fold before scaling: `log1p`,
//! `sqrt` and Yeo-Johnson (its lambda by maximum likelihood, as scipy's `yeojohnson_normmax`).

use serde::{Deserialize, Serialize};

/// A fitted transform of one numeric column.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transform {
    #[default]
    None,
    Log1p,
    Sqrt,
    YeoJohnson {
        lambda: f64,
    },
}

impl Transform {
    pub fn is_none(&self) -> bool {
        *self == Transform::None
    }

    pub fn apply(&self, x: f64) -> f64 {
        match *self {
            Transform::None => x,
            Transform::Log1p => x.ln_1p(),
            Transform::Sqrt => x.sqrt(),
            Transform::YeoJohnson { lambda } => yeo_johnson(x, lambda),
        }
    }
}

/// Lambdas this close to 0 (or 2) take the logarithm branch.
pub const LAMBDA_EPS: f64 = 1e-12;

/// The Yeo-Johnson transform of `x` with `lambda`.
pub fn yeo_johnson(x: f64, lambda: f64) -> f64 {
    if x >= 0.0 {
        if lambda.abs() < LAMBDA_EPS {
            x.ln_1p()
        } else {
            ((x + 1.0).powf(lambda) - 1.0) / lambda
        }
    } else if (lambda - 2.0).abs() < LAMBDA_EPS {
        -(-x).ln_1p()
    } else {
        -((1.0 - x).powf(2.0 - lambda) - 1.0) / (2.0 - lambda)
    }
}

/// The Yeo-Johnson log-likelihood of `values` under `lambda` (scipy's `yeojohnson_llf`).
fn log_likelihood(values: &[f64], lambda: f64) -> f64 {
    let n = values.len() as f64;
    let t: Vec<f64> = values.iter().map(|x| yeo_johnson(*x, lambda)).collect();
    let mean = t.iter().sum::<f64>() / n;
    let var = t.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let jacobian: f64 = values.iter().map(|x| x.signum() * x.abs().ln_1p()).sum();
    -n / 2.0 * var.ln() + (lambda - 1.0) * jacobian
}

/// The lambda that maximises the log-likelihood, by golden-section search on [-5, 5] (the
/// likelihood is unimodal in lambda); 0 for fewer than two distinct values.
pub fn fit_yeo_johnson(values: &[f64]) -> f64 {
    let distinct = values.iter().any(|v| Some(v) != values.first());
    if values.len() < 2 || !distinct {
        return 0.0;
    }
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (-5.0f64, 5.0f64);
    let mut c = b - phi * (b - a);
    let mut d = a + phi * (b - a);
    let (mut fc, mut fd) = (log_likelihood(values, c), log_likelihood(values, d));
    for _ in 0..200 {
        if (b - a).abs() < 1e-10 {
            break;
        }
        if fc > fd {
            (b, d, fd) = (d, c, fc);
            c = b - phi * (b - a);
            fc = log_likelihood(values, c);
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + phi * (b - a);
            fd = log_likelihood(values, d);
        }
    }
    (a + b) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scipy 1.x (`scipy.stats.yeojohnson_normmax` and `yeojohnson`), run once on this sample.
    #[test]
    fn lambda_and_values_match_scipy() {
        let x = [
            0.5, 1.2, 3.3, 0.1, 7.9, 2.2, 15.0, 0.0, -0.4, 4.4, 1.1, 30.5,
        ];
        let lambda = fit_yeo_johnson(&x);
        assert!((lambda - -0.21973681979072).abs() < 1e-6, "{lambda}");
        let t = yeo_johnson(0.5, -0.21973681979072);
        assert!((t - 0.3879272204512471).abs() < 1e-12, "{t}");
        // Both branches and their logarithm cases.
        assert!((yeo_johnson(3.0, 0.0) - 4f64.ln()).abs() < 1e-15);
        assert!((yeo_johnson(-3.0, 2.0) + 4f64.ln()).abs() < 1e-15);
        assert!((yeo_johnson(-1.0, 1.0) - -1.0).abs() < 1e-15);
    }

    #[test]
    fn a_constant_column_keeps_lambda_zero() {
        assert_eq!(fit_yeo_johnson(&[2.0, 2.0, 2.0]), 0.0);
    }
}
