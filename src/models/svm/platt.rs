//! Platt scaling: `P(y = 1 | f) = 1 / (1 + exp(A f + B))`, fitted by Newton's method with a
//! backtracking line search on regularised targets (Lin, Lin and Weng 2007, as libsvm's
//! `sigmoid_train`).

const MAX_ITERATIONS: usize = 100;
const MIN_STEP: f64 = 1e-10;
const SIGMA: f64 = 1e-12;
const EPS: f64 = 1e-5;

/// `(A, B)` for decision values and whether each row is positive.
pub fn fit(decisions: &[f64], positive: &[bool]) -> (f64, f64) {
    let prior1 = positive.iter().filter(|p| **p).count() as f64;
    let prior0 = positive.len() as f64 - prior1;
    let (hi, lo) = ((prior1 + 1.0) / (prior1 + 2.0), 1.0 / (prior0 + 2.0));
    let targets: Vec<f64> = positive.iter().map(|p| if *p { hi } else { lo }).collect();
    let loss = |a: f64, b: f64| -> f64 {
        (decisions.iter().zip(&targets))
            .map(|(f, t)| {
                let z = f * a + b;
                if z >= 0.0 {
                    t * z + (-z).exp().ln_1p()
                } else {
                    (t - 1.0) * z + z.exp().ln_1p()
                }
            })
            .sum()
    };
    let (mut a, mut b) = (0.0, ((prior0 + 1.0) / (prior1 + 1.0)).ln());
    let mut value = loss(a, b);
    for _ in 0..MAX_ITERATIONS {
        let (mut h11, mut h22, mut h21, mut g1, mut g2) = (SIGMA, SIGMA, 0.0, 0.0, 0.0);
        for (f, t) in decisions.iter().zip(&targets) {
            let p = probability(*f, a, b);
            let d2 = p * (1.0 - p);
            h11 += f * f * d2;
            h22 += d2;
            h21 += f * d2;
            let d1 = t - p;
            g1 += f * d1;
            g2 += d1;
        }
        if g1.abs() < EPS && g2.abs() < EPS {
            break;
        }
        let det = h11 * h22 - h21 * h21;
        let (da, db) = (-(h22 * g1 - h21 * g2) / det, -(-h21 * g1 + h11 * g2) / det);
        let slope = g1 * da + g2 * db;
        let mut step = 1.0;
        while step >= MIN_STEP {
            let (na, nb) = (a + step * da, b + step * db);
            let next = loss(na, nb);
            if next < value + 1e-4 * step * slope {
                (a, b, value) = (na, nb, next);
                break;
            }
            step /= 2.0;
        }
        if step < MIN_STEP {
            break;
        }
    }
    (a, b)
}

/// `1 / (1 + exp(A f + B))`, without overflow.
pub fn probability(f: f64, a: f64, b: f64) -> f64 {
    let z = f * a + b;
    if z >= 0.0 {
        let e = (-z).exp();
        e / (1.0 + e)
    } else {
        1.0 / (1.0 + z.exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_decisions_give_a_steep_increasing_sigmoid() {
        let f = [-2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0];
        let y = [false, false, false, false, true, true, true, true];
        let (a, b) = fit(&f, &y);
        assert!(a < -1.0, "A = {a}");
        assert!(b.abs() < 1e-6, "a balanced set centres at 0: B = {b}");
        assert!(probability(2.0, a, b) > 0.9 && probability(-2.0, a, b) < 0.1);
    }

    #[test]
    fn noisy_decisions_are_calibrated_to_their_frequencies() {
        // At f = 1, 3 of 4 rows are positive; at f = -1, 1 of 4.
        let f = [1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0];
        let y = [true, true, true, false, true, false, false, false];
        let (a, b) = fit(&f, &y);
        let p = probability(1.0, a, b);
        assert!((0.6..0.75).contains(&p), "P(y | f = 1) = {p}");
    }
}
