//! The solver with libsvm's shrinking (Chang and Lin, libsvm's `Solver`), the SVM's algorithm 3.
//! Every `SHRINK_EVERY` pair updates, a variable at a bound whose gradient says it will stay
//! there (it violates less than the pair that would be chosen now) leaves the active set: the
//! selection and the gradient's update then run over the active variables only. The gradient
//! of the others is rebuilt from `G_bar` (each variable's sum over the variables at their upper
//! bound) and the free variables: once when the violation first falls below ten times the
//! tolerance (all variables come back), and at the end, where the optimum is checked again
//! over every variable. The solution meets the same stopping test; its alphas differ from the
//! solver without shrinking by about the tolerance, not bit for bit.

use super::{Dual, KernelCache, Partner, Problem, Solution};

/// Pair updates between two shrinkings (at most `l`). libsvm waits 1000: on a 1,500-row RBF
/// problem of 11 features (843 and 1,618 updates at C = 1 and 3) that came too late to help.
const SHRINK_EVERY: usize = 100;

/// The active variables (ascending) and what shrinking keeps.
struct Active {
    vars: Vec<usize>,
    /// `G_bar`: per variable, `sum_s C_s Q_ts` over the variables `s` at their upper bound
    /// (kept as the gradient is, by `update_gradient` with one variable's change).
    g_bar: Vec<f64>,
    /// Whether every variable came back once (the violation fell below ten times the tolerance).
    unshrunk: bool,
    most_shrunk: usize,
}

/// The active variables' row, `y`, gradient, `K(x_t, x_t)` and directions side by side, in
/// the order of `Active::vars`, so that the scans of a pair update read memory in order. The
/// gradient of an active variable lives here between two shrinkings (`unpack` writes it back);
/// the arithmetic is the same as on the variables' own arrays.
struct Packed {
    vars: Vec<usize>,
    rows: Vec<usize>,
    y: Vec<f64>,
    grad: Vec<f64>,
    diag: Vec<f64>,
    up: Vec<bool>,
    low: Vec<bool>,
}

impl Packed {
    fn of(problem: &Problem, vars: &[usize], dual: &Dual, diag: &[f64]) -> Packed {
        let pick = |from: &[f64]| vars.iter().map(|t| from[*t]).collect();
        let flag = |from: &[bool]| vars.iter().map(|t| from[*t]).collect();
        Packed {
            vars: vars.to_vec(),
            rows: vars.iter().map(|t| problem.base(*t)).collect(),
            y: pick(&problem.y),
            grad: pick(&dual.grad),
            diag: pick(diag),
            up: flag(&dual.up),
            low: flag(&dual.low),
        }
    }

    /// The active variables' gradient back into the dual.
    fn unpack(&self, dual: &mut Dual) {
        for (t, g) in self.vars.iter().zip(&self.grad) {
            dual.grad[*t] = *g;
        }
    }

    /// The largest violation `-y_t G_t` over the active variables in `I_up`, and the last
    /// position with it (as `Problem::most_violating` over all the variables in order).
    fn most_violating(&self) -> (f64, Option<usize>) {
        let (mut gmax, mut pick) = (f64::NEG_INFINITY, None);
        for (p, ((up, y), g)) in self.up.iter().zip(&self.y).zip(&self.grad).enumerate() {
            let violation = -(y * g);
            if *up & (violation >= gmax) {
                gmax = violation;
                pick = Some(p);
            }
        }
        (gmax, pick)
    }

    /// `G_t += y_t (di K_it + dj K_jt)` over the active variables (`update_gradient`'s terms).
    fn update_gradient(&mut self, ki: &[f32], kj: &[f32], di: f64, dj: f64) {
        for ((g, y), b) in self.grad.iter_mut().zip(&self.y).zip(&self.rows) {
            *g += y * (di * f64::from(ki[*b]) + dj * f64::from(kj[*b]));
        }
    }
}

impl Problem<'_> {
    pub(super) fn solve_shrinking(&self) -> Solution {
        let l = self.y.len();
        let mut cache = KernelCache::new(self);
        let diag = self.diagonal();
        let mut dual = Dual::new(self);
        let mut active = Active {
            vars: (0..l).collect(),
            g_bar: vec![0.0; l],
            unshrunk: false,
            most_shrunk: 0,
        };
        let mut packed = Packed::of(self, &active.vars, &dual, &diag);
        let cap = self.iteration_cap();
        let (mut iterations, mut countdown) = (0, l.min(SHRINK_EVERY));
        while iterations < cap {
            countdown -= 1;
            if countdown == 0 {
                countdown = l.min(SHRINK_EVERY);
                packed.unpack(&mut dual);
                self.shrink(&mut active, &mut dual, &mut cache);
                packed = Packed::of(self, &active.vars, &dual, &diag);
            }
            let pair = match self.select_packed(&mut cache, &packed) {
                Some(pair) => pair,
                None if active.vars.len() < l => {
                    // Optimal over the active set: every variable back, checked again.
                    packed.unpack(&mut dual);
                    self.reconstruct(&active, &mut dual, &mut cache);
                    active.vars = (0..l).collect();
                    packed = Packed::of(self, &active.vars, &dual, &diag);
                    countdown = 1;
                    match self.select_packed(&mut cache, &packed) {
                        Some(pair) => pair,
                        None => break,
                    }
                }
                None => break,
            };
            iterations += 1;
            self.update(pair, &mut active, &mut packed, &mut dual, &mut cache, &diag);
        }
        packed.unpack(&mut dual);
        if active.vars.len() < l {
            self.reconstruct(&active, &mut dual, &mut cache);
        }
        let rho = self.rho(&dual.alpha, &dual.grad);
        Solution {
            alpha: dual.alpha,
            rho,
            iterations,
            most_shrunk: active.most_shrunk,
        }
    }

    /// WSS 2 over the active variables: the pair's positions in `packed`.
    fn select_packed(&self, cache: &mut KernelCache, packed: &Packed) -> Option<(usize, usize)> {
        let (gmax, pick_i) = packed.most_violating();
        let i = pick_i?;
        let (ki, _) = cache.pair(packed.rows[i], packed.rows[i]);
        let mut partner = Partner::new(gmax, packed.diag[i]);
        let each = (packed.low.iter()).zip(&packed.y).zip(&packed.grad);
        for (p, (((low, y), g), (diag, b))) in
            each.zip(packed.diag.iter().zip(&packed.rows)).enumerate()
        {
            partner.consider(*low, y * g, *diag, ki[*b], p);
        }
        partner.pair_with(i, self.tolerance)
    }

    /// The step of the pair at positions `(pi, pj)`; the active variables' gradient and
    /// everyone's `G_bar` follow it.
    fn update(
        &self,
        (pi, pj): (usize, usize),
        active: &mut Active,
        packed: &mut Packed,
        dual: &mut Dual,
        cache: &mut KernelCache,
        diag: &[f64],
    ) {
        let (i, j) = (packed.vars[pi], packed.vars[pj]);
        (dual.grad[i], dual.grad[j]) = (packed.grad[pi], packed.grad[pj]);
        let (bi, bj) = (packed.rows[pi], packed.rows[pj]);
        let (ki, kj) = cache.pair(bi, bj);
        let was_upper = (self.at_upper(&dual.alpha, i), self.at_upper(&dual.alpha, j));
        let (di, dj) = self.move_pair(dual, (i, j), diag[i] + diag[j], ki[bj]);
        for (p, t) in [(pi, i), (pj, j)] {
            (packed.up[p], packed.low[p]) = (dual.up[t], dual.low[t]);
        }
        packed.update_gradient(ki, kj, di, dj);
        for (v, was, row) in [(i, was_upper.0, ki), (j, was_upper.1, kj)] {
            let now = self.at_upper(&dual.alpha, v);
            if now != was {
                let cy = if now { 1.0 } else { -1.0 } * self.c[v] * self.y[v];
                super::update_gradient(&mut active.g_bar, &self.y, row, row, cy, 0.0);
            }
        }
    }

    /// libsvm's `do_shrinking`: the largest violations over the active set; all variables back
    /// (their gradient rebuilt) the first time they fall below ten times the tolerance; then
    /// the variables at a bound that violate less than them leave.
    fn shrink(&self, active: &mut Active, dual: &mut Dual, cache: &mut KernelCache) {
        let (mut gmax1, mut gmax2) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for &t in &active.vars {
            let yg = self.y[t] * dual.grad[t];
            if dual.up[t] {
                gmax1 = gmax1.max(-yg);
            }
            if dual.low[t] {
                gmax2 = gmax2.max(yg);
            }
        }
        let l = self.y.len();
        if !active.unshrunk && gmax1 + gmax2 <= self.tolerance * 10.0 {
            active.unshrunk = true;
            self.reconstruct(active, dual, cache);
            active.vars = (0..l).collect();
        }
        active
            .vars
            .retain(|&t| !self.stays_at_bound(dual, t, gmax1, gmax2));
        active.most_shrunk = active.most_shrunk.max(l - active.vars.len());
    }

    /// libsvm's `be_shrunk`: variable `t` is at a bound and violates less than the largest
    /// violations `gmax1` (over `I_up`) and `gmax2` (over `I_low`).
    fn stays_at_bound(&self, dual: &Dual, t: usize, gmax1: f64, gmax2: f64) -> bool {
        let (g, positive) = (dual.grad[t], self.y[t] > 0.0);
        if self.at_upper(&dual.alpha, t) {
            -g > if positive { gmax1 } else { gmax2 }
        } else if dual.alpha[t] <= 0.0 {
            g > if positive { gmax2 } else { gmax1 }
        } else {
            false
        }
    }

    /// libsvm's `reconstruct_gradient`: the gradient of every inactive variable, from `G_bar`,
    /// the linear term and the free variables.
    fn reconstruct(&self, active: &Active, dual: &mut Dual, cache: &mut KernelCache) {
        let l = self.y.len();
        let mut is_active = vec![false; l];
        for &t in &active.vars {
            is_active[t] = true;
        }
        let inactive: Vec<usize> = (0..l).filter(|t| !is_active[*t]).collect();
        if inactive.is_empty() {
            return;
        }
        for &t in &inactive {
            dual.grad[t] = active.g_bar[t] + self.p[t];
        }
        for s in 0..l {
            let a = dual.alpha[s];
            if a <= 0.0 || self.at_upper(&dual.alpha, s) {
                continue;
            }
            let bs = self.base(s);
            let (ks, _) = cache.pair(bs, bs);
            let ya = self.y[s] * a;
            for &t in &inactive {
                dual.grad[t] += self.y[t] * ya * f64::from(ks[self.base(t)]);
            }
        }
    }
}
