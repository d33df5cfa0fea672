//! The tree-structured Parzen estimator, as Optuna 5's default sampler works: the first
//! `startup` trials are drawn at random; after them the completed trials are split into the
//! best `gamma(n) = min(ceil(n / 10), 25)` ("below") and the rest ("above"), each side becomes a
//! Parzen mixture (one kernel per trial plus a wide prior kernel; within each side, in trial
//! order, the oldest trials weigh less once the side has over 25), and of 24 candidates drawn
//! from the below mixture the one with the highest `log l(x) - log g(x)` is proposed.
//!
//! Numbers are searched in their own scale or, with `log`, in the logarithm's; their kernels are
//! Gaussians truncated to the range, with bandwidths from the gaps between neighbouring
//! observations (the outermost ones from their inner gap only) clipped to
//! `[range / min(100, n + 2), range]`. Multivariate (the default, as Optuna 5's for one
//! objective) fits one joint mixture whose kernels are products over the dimensions, so values
//! that did well together are proposed together; univariate fits each dimension on its own.
//! Choices get categorical kernels: the prior's weight spread over the choices, plus one on the
//! observed choice. Everything is minimised; callers negate a score that is better high.

use crate::rng::SplitMix64;

/// The version of this arithmetic, in each search's identity: 2 is Optuna 5's (multivariate by
/// default, the outermost bandwidths from their inner gap, weights within each side); 1 was
/// Optuna 3's (univariate by default, Scott's bandwidth when multivariate).
pub const VERSION: u32 = 2;

/// One searched dimension.
#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    /// A number in `[low, high]`; `step` rounds it to `low + k * step` (whole numbers: 1).
    Number {
        low: f64,
        high: f64,
        log: bool,
        step: Option<f64>,
    },
    /// One of `n` choices, by index.
    Choice(usize),
}

impl Dim {
    /// The searched interval: in the logarithm with `log`, widened by half a step with `step`.
    fn bounds(&self) -> (f64, f64) {
        match self {
            Dim::Number {
                low,
                high,
                log,
                step,
            } => {
                let half = step.map_or(0.0, |s| s / 2.0);
                if *log {
                    ((low - half).max(low / 2.0).ln(), (high + half).ln())
                } else {
                    (low - half, high + half)
                }
            }
            Dim::Choice(n) => (0.0, *n as f64),
        }
    }

    /// A point of the searched interval back as a value of the dimension.
    fn value(&self, internal: f64) -> f64 {
        match self {
            Dim::Number {
                low,
                high,
                log,
                step,
            } => {
                let v = if *log { internal.exp() } else { internal };
                let v = match step {
                    Some(s) => low + ((v - low) / s).round() * s,
                    None => v,
                };
                v.clamp(*low, *high)
            }
            Dim::Choice(n) => internal.clamp(0.0, *n as f64 - 1.0).round(),
        }
    }

    /// A value of the dimension in the searched interval.
    fn internal(&self, value: f64) -> f64 {
        match self {
            Dim::Number { log: true, .. } => value.ln(),
            _ => value,
        }
    }
}

/// How proposals are made.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub dims: Vec<Dim>,
    pub startup: usize,
    pub multivariate: bool,
    pub seed: u64,
    pub candidates: usize,
}

/// A completed trial: its values (choices by index) and its score, lower better.
#[derive(Debug, Clone)]
pub struct Observed {
    pub trial: usize,
    pub values: Vec<f64>,
    pub score: f64,
}

impl Sampler {
    pub fn new(dims: Vec<Dim>, startup: usize, multivariate: bool, seed: u64) -> Sampler {
        Sampler {
            dims,
            startup,
            multivariate,
            seed,
            candidates: 24,
        }
    }

    /// The values of trial `trial` (0-based) given the completed ones: random during the
    /// startup, TPE after. The same trial number and observations give the same values.
    pub fn suggest(&self, trial: usize, observed: &[Observed]) -> Vec<f64> {
        let mut rng = SplitMix64::derive(self.seed, 0x79E0 + trial as u64);
        if observed.len() < self.startup.max(1) {
            return self.random(&mut rng);
        }
        let mut sorted: Vec<&Observed> = observed.iter().collect();
        sorted.sort_by(|a, b| a.score.total_cmp(&b.score).then(a.trial.cmp(&b.trial)));
        let n_below = gamma(sorted.len());
        // Each side in trial order, weighted by Optuna's default weights over that side.
        let side = |part: &[&Observed]| -> Vec<(Vec<f64>, f64)> {
            let mut part = part.to_vec();
            part.sort_by_key(|o| o.trial);
            let weights = default_weights(part.len());
            (part.iter().zip(weights))
                .map(|(o, weight)| {
                    let point = (self.dims.iter().zip(&o.values))
                        .map(|(d, v)| d.internal(*v))
                        .collect();
                    (point, weight)
                })
                .collect()
        };
        let (below, above) = (side(&sorted[..n_below]), side(&sorted[n_below..]));
        let internal = if self.multivariate {
            let l = Mixture::fit(&self.dims, &below);
            let g = Mixture::fit(&self.dims, &above);
            best_candidate(&l, &g, self.candidates, &mut rng)
        } else {
            (0..self.dims.len())
                .flat_map(|d| {
                    let dims = [self.dims[d].clone()];
                    let pick = |s: &[(Vec<f64>, f64)]| -> Vec<(Vec<f64>, f64)> {
                        s.iter().map(|(p, w)| (vec![p[d]], *w)).collect()
                    };
                    let l = Mixture::fit(&dims, &pick(&below));
                    let g = Mixture::fit(&dims, &pick(&above));
                    best_candidate(&l, &g, self.candidates, &mut rng)
                })
                .collect()
        };
        (self.dims.iter().zip(internal))
            .map(|(d, x)| d.value(x))
            .collect()
    }

    fn random(&self, rng: &mut SplitMix64) -> Vec<f64> {
        self.dims
            .iter()
            .map(|d| match d {
                Dim::Choice(n) => rng.below(*n) as f64,
                _ => {
                    let (lo, hi) = d.bounds();
                    d.value(lo + rng.next_f64() * (hi - lo))
                }
            })
            .collect()
    }
}

/// How many of `n` completed trials count as good: Optuna's default gamma.
fn gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// Optuna's default weights of `n` observations in trial order: all 1 up to 24; beyond, the
/// oldest `n - 25` ramp from 1/n up to 1 and the newest 25 weigh 1.
fn default_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let first = 1.0 / n as f64;
    (0..n)
        .map(|i| match i {
            i if i >= ramp => 1.0,
            0 => first,
            // numpy's linspace(1/n, 1, ramp): its last point is 1.
            i => first + (1.0 - first) * i as f64 / (ramp - 1) as f64,
        })
        .collect()
}

/// One kernel of a dimension.
#[derive(Debug, Clone)]
enum Kernel {
    Gauss {
        mu: f64,
        sigma: f64,
        lo: f64,
        hi: f64,
    },
    Categorical(Vec<f64>),
}

impl Kernel {
    fn sample(&self, rng: &mut SplitMix64) -> f64 {
        match self {
            Kernel::Gauss { mu, sigma, lo, hi } => {
                for _ in 0..64 {
                    let x = mu + sigma * normal(rng);
                    if (*lo..=*hi).contains(&x) {
                        return x;
                    }
                }
                lo + rng.next_f64() * (hi - lo)
            }
            Kernel::Categorical(p) => {
                let mut u = rng.next_f64();
                for (i, pi) in p.iter().enumerate() {
                    if u < *pi {
                        return i as f64;
                    }
                    u -= pi;
                }
                (p.len() - 1) as f64
            }
        }
    }

    fn log_pdf(&self, x: f64) -> f64 {
        match self {
            Kernel::Gauss { mu, sigma, lo, hi } => {
                let z = (x - mu) / sigma;
                let mass = normal_cdf((hi - mu) / sigma) - normal_cdf((lo - mu) / sigma);
                -0.5 * z * z
                    - sigma.ln()
                    - 0.5 * (2.0 * std::f64::consts::PI).ln()
                    - mass.max(1e-300).ln()
            }
            Kernel::Categorical(p) => p[x as usize].max(1e-300).ln(),
        }
    }
}

/// A weighted mixture whose components are products of one kernel per dimension.
struct Mixture {
    weights: Vec<f64>,
    components: Vec<Vec<Kernel>>,
}

impl Mixture {
    /// One component per observation (internal values, weight) and a prior component.
    fn fit(dims: &[Dim], obs: &[(Vec<f64>, f64)]) -> Mixture {
        let n = obs.len() + 1;
        let mut components: Vec<Vec<Kernel>> = vec![Vec::new(); n];
        for (d, dim) in dims.iter().enumerate() {
            let (lo, hi) = dim.bounds();
            let xs: Vec<f64> = obs.iter().map(|(p, _)| p[d]).collect();
            let kernels = match dim {
                Dim::Choice(k) => categorical_kernels(&xs, *k),
                _ => {
                    let sigmas = neighbour_sigmas(&xs, lo, hi);
                    let mut k: Vec<Kernel> = (xs.iter().zip(sigmas))
                        .map(|(mu, sigma)| Kernel::Gauss {
                            mu: *mu,
                            sigma,
                            lo,
                            hi,
                        })
                        .collect();
                    k.push(Kernel::Gauss {
                        mu: (lo + hi) / 2.0,
                        sigma: hi - lo,
                        lo,
                        hi,
                    });
                    k
                }
            };
            for (c, kernel) in kernels.into_iter().enumerate() {
                components[c].push(kernel);
            }
        }
        let mut weights: Vec<f64> = obs.iter().map(|(_, w)| *w).collect();
        weights.push(1.0);
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        Mixture {
            weights,
            components,
        }
    }

    fn sample(&self, rng: &mut SplitMix64) -> Vec<f64> {
        let mut u = rng.next_f64();
        let mut chosen = self.components.len() - 1;
        for (i, w) in self.weights.iter().enumerate() {
            if u < *w {
                chosen = i;
                break;
            }
            u -= w;
        }
        self.components[chosen]
            .iter()
            .map(|k| k.sample(rng))
            .collect()
    }

    fn log_pdf(&self, x: &[f64]) -> f64 {
        let terms: Vec<f64> = (self.weights.iter().zip(&self.components))
            .map(|(w, c)| w.ln() + c.iter().zip(x).map(|(k, v)| k.log_pdf(*v)).sum::<f64>())
            .collect();
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
    }
}

/// Bandwidths from the gaps to the neighbouring observations: the larger of the two, the range's
/// ends counting as neighbours only for a lone observation (Optuna's `consider_endpoints =
/// False`: the outermost of two or more take their inner gap); clipped to
/// `[range / min(100, n + 2), range]`.
fn neighbour_sigmas(xs: &[f64], lo: f64, hi: f64) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|a, b| xs[*a].total_cmp(&xs[*b]));
    let range = hi - lo;
    let min_sigma = range / (100f64).min(xs.len() as f64 + 2.0);
    let sorted: Vec<f64> = order.iter().map(|i| xs[*i]).collect();
    let mut with_ends = vec![lo];
    with_ends.extend(&sorted);
    with_ends.push(hi);
    let mut gaps: Vec<f64> = (1..with_ends.len() - 1)
        .map(|k| (with_ends[k] - with_ends[k - 1]).max(with_ends[k + 1] - with_ends[k]))
        .collect();
    if sorted.len() >= 2 {
        let last = sorted.len() - 1;
        gaps[0] = sorted[1] - sorted[0];
        gaps[last] = sorted[last] - sorted[last - 1];
    }
    let mut sigmas = vec![range; xs.len()];
    for (rank, i) in order.iter().enumerate() {
        sigmas[*i] = gaps[rank].clamp(min_sigma, range);
    }
    sigmas
}

/// Each observation's categorical kernel: the prior weight spread evenly, one on its choice;
/// then the prior's, even.
fn categorical_kernels(xs: &[f64], k: usize) -> Vec<Kernel> {
    let spread = 1.0 / (xs.len() as f64 + 1.0);
    let mut out: Vec<Kernel> = xs
        .iter()
        .map(|x| {
            let mut p = vec![spread; k];
            p[*x as usize] += 1.0;
            let total: f64 = p.iter().sum();
            Kernel::Categorical(p.iter().map(|v| v / total).collect())
        })
        .collect();
    out.push(Kernel::Categorical(vec![1.0 / k as f64; k]));
    out
}

/// Of `n` candidates drawn from `l`, the one with the highest `log l - log g`.
fn best_candidate(l: &Mixture, g: &Mixture, n: usize, rng: &mut SplitMix64) -> Vec<f64> {
    let mut best: Option<(f64, Vec<f64>)> = None;
    for _ in 0..n.max(1) {
        let x = l.sample(rng);
        let score = l.log_pdf(&x) - g.log_pdf(&x);
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, x));
        }
    }
    best.map(|(_, x)| x).unwrap_or_default()
}

fn normal(rng: &mut SplitMix64) -> f64 {
    let u = rng.next_f64().max(1e-300);
    let v = rng.next_f64();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// The standard normal's distribution function, from erfc (Numerical Recipes' Chebyshev
/// fit, relative error below 1.2e-7).
fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bowl with its floor at (0.3, 3e-2) in a linear and a log dimension, and one good
    /// choice of three.
    fn bowl(v: &[f64]) -> f64 {
        let a = (v[0] - 0.3).powi(2);
        let b = (v[1].ln() - (3e-2f64).ln()).powi(2) / 20.0;
        let c = if v[2] == 1.0 { 0.0 } else { 0.2 };
        a + b + c
    }

    fn dims() -> Vec<Dim> {
        vec![
            Dim::Number {
                low: -2.0,
                high: 2.0,
                log: false,
                step: None,
            },
            Dim::Number {
                low: 1e-4,
                high: 1.0,
                log: true,
                step: None,
            },
            Dim::Choice(3),
        ]
    }

    fn best_after(sampler: &Sampler, trials: usize) -> f64 {
        let mut observed = Vec::new();
        for t in 0..trials {
            let values = sampler.suggest(t, &observed);
            let score = bowl(&values);
            observed.push(Observed {
                trial: t,
                values,
                score,
            });
        }
        observed
            .iter()
            .map(|o| o.score)
            .fold(f64::INFINITY, f64::min)
    }

    /// Over ten seeds, TPE's best after 60 trials beats pure random search's (the median),
    /// univariate and multivariate.
    #[test]
    fn tpe_finds_a_lower_floor_than_random_search() {
        for multivariate in [false, true] {
            let mut wins = 0;
            for seed in 0..10 {
                let tpe = Sampler::new(dims(), 10, multivariate, seed);
                let random = Sampler::new(dims(), usize::MAX, multivariate, seed);
                if best_after(&tpe, 60) < best_after(&random, 60) {
                    wins += 1;
                }
            }
            assert!(
                wins >= 7,
                "multivariate {multivariate}: TPE won {wins} of 10"
            );
        }
    }

    #[test]
    fn values_stay_in_range_on_their_steps_and_repeat_with_the_seed() {
        let dims = vec![
            Dim::Number {
                low: 50.0,
                high: 500.0,
                log: true,
                step: Some(1.0),
            },
            Dim::Number {
                low: 0.0,
                high: 1.0,
                log: false,
                step: Some(0.25),
            },
        ];
        let s = Sampler::new(dims, 3, false, 7);
        let mut observed = Vec::new();
        for t in 0..20 {
            let v = s.suggest(t, &observed);
            assert_eq!(v, s.suggest(t, &observed), "same trial, same values");
            assert!(
                (50.0..=500.0).contains(&v[0]) && v[0].fract() == 0.0,
                "{v:?}"
            );
            assert!([0.0, 0.25, 0.5, 0.75, 1.0].contains(&v[1]), "{v:?}");
            let score = (v[0] - 120.0).abs();
            observed.push(Observed {
                trial: t,
                values: v,
                score,
            });
        }
    }

    /// Optuna 5's `consider_endpoints = False` and `default_weights`, figures worked by hand.
    #[test]
    fn bandwidths_and_weights_are_optunas() {
        // Sorted 0.2, 0.5, 0.6 in [0, 1]: the outermost take their inner gap (0.3, 0.1), the
        // middle the larger gap (0.3); the floor is 1 / min(100, 3 + 2) = 0.2.
        let sigmas = neighbour_sigmas(&[0.6, 0.2, 0.5], 0.0, 1.0);
        let expected = [0.2, 0.3, 0.3];
        for (got, want) in sigmas.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{sigmas:?}");
        }
        // A lone observation counts the range's far end.
        assert!((neighbour_sigmas(&[0.3], 0.0, 1.0)[0] - 0.7).abs() < 1e-12);
        assert_eq!(default_weights(24), vec![1.0; 24]);
        // numpy.linspace(1/30, 1, 5) for the oldest five, then 25 ones.
        let w = default_weights(30);
        let ramp = [
            1.0 / 30.0,
            0.275,
            0.516_666_666_666_666_7,
            0.758_333_333_333_333_3,
            1.0,
        ];
        for (got, want) in w.iter().zip(ramp) {
            assert!((got - want).abs() < 1e-12, "{w:?}");
        }
        assert!(w[5..].iter().all(|v| *v == 1.0) && w.len() == 30);
    }

    #[test]
    fn normal_cdf_is_accurate() {
        for (z, want) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_543),
            (-2.5, 0.006_209_665_325_776_132),
        ] {
            assert!((normal_cdf(z) - want).abs() < 1e-7, "{z}");
        }
    }
}
