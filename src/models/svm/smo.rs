//! Sequential minimal optimisation as libsvm does it (Fan, Chen and Lin 2005): the dual
//! `min 1/2 a'Qa + p'a` subject to `y'a = const` and `0 <= a_t <= C_t`, two variables at a time,
//! chosen by second-order working-set selection, with the kernel's rows computed on demand and
//! kept in a least-recently-used cache of bounded size.
//!
//! A problem has `l` variables over `n` training rows: `base(t)` is the row of variable `t`
//! (`t` for classification, `t mod n` for epsilon-SVR's two variables per row), `y_t = +-1`, and
//! `Q_st = y_s y_t K(x_base(s), x_base(t))`.

mod shrink;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

/// libsvm's floor for a non-positive curvature.
const TAU: f64 = 1e-12;

/// A kernel function, with the parameters it was fitted with.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kernel {
    /// `exp(-gamma |x - y|^2)`
    Rbf { gamma: f64 },
    /// `x . y`
    Linear,
    /// `(x . y + coef0)^degree`
    Poly { coef0: f64, degree: i32 },
}

impl Kernel {
    /// `K(a, b)`, given `a . a` and `b . b` (used by the RBF kernel only).
    pub fn value(&self, a: &[f64], b: &[f64], aa: f64, bb: f64) -> f64 {
        let ab = dot(a, b);
        match *self {
            Kernel::Rbf { gamma } => (-gamma * (aa + bb - 2.0 * ab).max(0.0)).exp(),
            Kernel::Linear => ab,
            Kernel::Poly { coef0, degree } => (ab + coef0).powi(degree),
        }
    }
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// The training rows (row-major) and their squared norms.
pub struct Rows {
    x: Vec<f64>,
    width: usize,
    norms: Vec<f64>,
}

impl Rows {
    pub fn new(x: ArrayView2<f64>) -> Rows {
        Rows::from_values(x.iter().copied().collect(), x.ncols())
    }

    /// Rows of `width` values each, one after another.
    pub fn from_values(x: Vec<f64>, width: usize) -> Rows {
        let norms = (x.chunks(width.max(1)))
            .map(|r| dot(r, r))
            .collect::<Vec<_>>();
        Rows { x, width, norms }
    }

    /// The rows at `picks`, in that order.
    pub fn subset(&self, picks: &[usize]) -> Rows {
        let x = picks.iter().flat_map(|i| self.row(*i)).copied().collect();
        Rows::from_values(x, self.width)
    }

    pub fn count(&self) -> usize {
        self.norms.len()
    }

    pub fn values(&self) -> &[f64] {
        &self.x
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn norm(&self, i: usize) -> f64 {
        self.norms[i]
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.width..(i + 1) * self.width]
    }
}

/// Every kernel value of a table, computed once (on `threads` threads) and shared by the
/// machines of one fit, whose rows are subsets of the table's: for a small table the machines
/// of a one-vs-rest fit and their Platt folds would otherwise each compute the same values.
/// The solver reads them as floats, as libsvm's kernel cache holds them.
pub struct Gram {
    n: usize,
    values: Vec<f32>,
}

impl Gram {
    pub fn compute(rows: &Rows, kernel: Kernel, threads: usize) -> Gram {
        Gram {
            n: rows.count(),
            values: kernel_table(rows, kernel, threads, |v| v as f32),
        }
    }

    /// The float table of the exact values.
    pub fn of_exact(exact: &ExactGram) -> Gram {
        Gram {
            n: exact.n,
            values: exact.values.iter().map(|v| *v as f32).collect(),
        }
    }

    /// The bytes a table of `n` rows takes.
    pub fn bytes(n: usize) -> usize {
        n.saturating_mul(n).saturating_mul(4)
    }
}

/// A table's kernel values as computed, in doubles: what a machine's decision values sum over
/// ([`ExactGram::decisions`]).
pub struct ExactGram {
    n: usize,
    values: Vec<f64>,
}

impl ExactGram {
    pub fn compute(rows: &Rows, kernel: Kernel, threads: usize) -> ExactGram {
        ExactGram {
            n: rows.count(),
            values: kernel_table(rows, kernel, threads, |v| v),
        }
    }

    pub fn bytes(n: usize) -> usize {
        n.saturating_mul(n).saturating_mul(8)
    }

    /// `sum_s coef_s K(x_support[s], x_q) - rho` for each table row `q` of `queries`: the
    /// decision values a machine with these support vectors (table rows) computes for those
    /// rows, bit for bit (the same kernel values, summed in the same order).
    pub fn decisions(
        &self,
        support: &[usize],
        coef: &[f64],
        rho: f64,
        queries: &[usize],
    ) -> Vec<f64> {
        let row = |q: usize| &self.values[q * self.n..(q + 1) * self.n];
        let mut out = Vec::with_capacity(queries.len());
        for block in queries.chunks(LANES) {
            let rows = std::array::from_fn(|lane| row(block[lane.min(block.len() - 1)]));
            let sums = lane_sums(rows, coef, support);
            out.extend(sums[..block.len()].iter().map(|sum| sum - rho));
        }
        out
    }
}

/// Queries whose decision sums [`lane_sums`] adds side by side.
pub const LANES: usize = 4;

/// For each of [`LANES`] queries, `sum_i coef[i] * values[lane][at[i]]`: the value
/// `Iterator::sum` gives, to the bit (the same products, added in `i` order from the same
/// start). One sum alone waits on each add before the next (a machine's hundreds of support
/// vectors make a chain that was most of a prediction's time); the lanes' chains overlap.
pub fn lane_sums(values: [&[f64]; LANES], coef: &[f64], at: &[usize]) -> [f64; LANES] {
    let mut sums = [std::iter::empty::<f64>().sum::<f64>(); LANES];
    for (c, i) in coef.iter().zip(at) {
        for (sum, lane) in sums.iter_mut().zip(&values) {
            *sum += c * lane[*i];
        }
    }
    sums
}

/// Every `K(x_i, x_j)` of `rows`, row-major, as `cast` stores it. `K(x_i, x_j)` equals
/// `K(x_j, x_i)` to the bit (the dot product's terms and the norms' sum commute), so each value
/// is computed once, for `j >= i`, and copied across.
fn kernel_table<T: Copy + Default + Send>(
    rows: &Rows,
    kernel: Kernel,
    threads: usize,
    cast: impl Fn(f64) -> T + Copy + Send,
) -> Vec<T> {
    let n = rows.count();
    let mut values = vec![T::default(); n * n];
    let bounds = triangle_shares(n, threads.max(1));
    std::thread::scope(|s| {
        let mut rest = values.as_mut_slice();
        for w in bounds.windows(2).filter(|w| w[1] > w[0]) {
            let (part, tail) = rest.split_at_mut((w[1] - w[0]) * n);
            rest = tail;
            let first = w[0];
            s.spawn(move || {
                for (r, out) in part.chunks_mut(n.max(1)).enumerate() {
                    let i = first + r;
                    let (xi, ni) = (rows.row(i), rows.norm(i));
                    for (j, v) in out.iter_mut().enumerate().skip(i) {
                        *v = cast(kernel.value(xi, rows.row(j), ni, rows.norm(j)));
                    }
                }
            });
        }
    });
    for i in 1..n {
        for j in 0..i {
            values[i * n + j] = values[j * n + i];
        }
    }
    values
}

/// Row bounds splitting the upper triangle of an `n x n` table into `parts` shares of about
/// equal area (row `i` holds `n - i` values): `parts + 1` increasing bounds from 0 to `n`.
fn triangle_shares(n: usize, parts: usize) -> Vec<usize> {
    let total = (n * (n + 1) / 2) as f64;
    let mut bounds = vec![0];
    let (mut row, mut done) = (0, 0.0);
    for p in 1..parts {
        let want = total * p as f64 / parts as f64;
        while row < n && done < want {
            done += (n - row) as f64;
            row += 1;
        }
        bounds.push(row);
    }
    bounds.push(n);
    bounds
}

/// Kernel rows `K(x_i, .)` over the `n` training rows, computed on demand and evicted least
/// recently used first once they exceed the byte budget. Stored as `f32`, as libsvm does.
struct KernelCache<'a> {
    rows: &'a Rows,
    kernel: Kernel,
    /// A precomputed table the rows are a subset of, and which of its rows they are.
    gram: Option<(&'a Gram, &'a [usize])>,
    cached: Vec<Option<Box<[f32]>>>,
    last_used: Vec<u64>,
    resident: Vec<usize>,
    capacity: usize,
    clock: u64,
}

impl<'a> KernelCache<'a> {
    fn new(problem: &'a Problem) -> Self {
        let (rows, n) = (problem.rows, problem.rows.count());
        let row_bytes = (n * 4).max(1);
        KernelCache {
            rows,
            kernel: problem.kernel,
            gram: problem.gram,
            cached: (0..n).map(|_| None).collect(),
            last_used: vec![0; n],
            resident: Vec::new(),
            capacity: (problem.cache_bytes / row_bytes).max(2),
            clock: 0,
        }
    }

    /// Makes rows `a` and `b` resident (evicting others), then lends both.
    fn pair(&mut self, a: usize, b: usize) -> (&[f32], &[f32]) {
        self.ensure(a, a);
        self.ensure(b, a);
        match (&self.cached[a], &self.cached[b]) {
            (Some(ra), Some(rb)) => (ra, rb),
            // ensure() leaves both resident; an empty row only if that were broken.
            _ => (&[], &[]),
        }
    }

    fn ensure(&mut self, i: usize, keep: usize) {
        self.clock += 1;
        self.last_used[i] = self.clock;
        if self.cached[i].is_some() {
            return;
        }
        if self.resident.len() >= self.capacity {
            self.evict(i, keep);
        }
        let (rows, kernel) = (self.rows, self.kernel);
        let row: Box<[f32]> = match self.gram {
            Some((gram, picks)) => {
                let from = &gram.values[picks[i] * gram.n..(picks[i] + 1) * gram.n];
                picks.iter().map(|j| from[*j]).collect()
            }
            None => {
                let (xi, ni) = (rows.row(i), rows.norm(i));
                (0..rows.count())
                    .map(|j| kernel.value(xi, rows.row(j), ni, rows.norm(j)) as f32)
                    .collect()
            }
        };
        self.cached[i] = Some(row);
        self.resident.push(i);
    }

    fn evict(&mut self, wanted: usize, keep: usize) {
        let oldest = (self.resident.iter().enumerate())
            .filter(|(_, r)| **r != wanted && **r != keep)
            .min_by_key(|(_, r)| self.last_used[**r])
            .map(|(at, _)| at);
        if let Some(at) = oldest {
            let row = self.resident.swap_remove(at);
            self.cached[row] = None;
        }
    }
}

/// One dual problem.
pub struct Problem<'a> {
    pub rows: &'a Rows,
    pub kernel: Kernel,
    /// The kernel values precomputed for a table `rows` are a subset of, and which rows.
    pub gram: Option<(&'a Gram, &'a [usize])>,
    /// +1 or -1 per variable.
    pub y: Vec<f64>,
    /// The linear term per variable.
    pub p: Vec<f64>,
    /// The upper bound per variable.
    pub c: Vec<f64>,
    /// Stop when the maximal violating pair violates by less than this.
    pub tolerance: f64,
    pub cache_bytes: usize,
    /// libsvm's shrinking (algorithm 3): variables at a bound that no longer violate are left
    /// out of the selection and the gradient's update until the end.
    pub shrinking: bool,
}

pub struct Solution {
    pub alpha: Vec<f64>,
    pub rho: f64,
    /// Pairs updated; the solver stops at `max(10^7, 100 l)` if the tolerance is not met.
    pub iterations: usize,
    /// The most variables shrinking left out at once (0 without shrinking); the tests read it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub most_shrunk: usize,
}

/// The dual variables, their gradient, and which may move in each direction: `up` (libsvm's
/// I_up: `y_t a_t` can grow) and `low` (I_low: it can shrink), kept as the alphas change.
struct Dual {
    alpha: Vec<f64>,
    grad: Vec<f64>,
    up: Vec<bool>,
    low: Vec<bool>,
}

impl Dual {
    fn new(problem: &Problem) -> Dual {
        let l = problem.y.len();
        let mut dual = Dual {
            alpha: vec![0.0; l],
            grad: problem.p.clone(),
            up: vec![false; l],
            low: vec![false; l],
        };
        for t in 0..l {
            dual.mark(problem, t);
        }
        dual
    }

    /// Variable `t`'s directions after its alpha changed.
    fn mark(&mut self, problem: &Problem, t: usize) {
        let below_c = !problem.at_upper(&self.alpha, t);
        let above_0 = self.alpha[t] > 0.0;
        let positive = problem.y[t] > 0.0;
        self.up[t] = if positive { below_c } else { above_0 };
        self.low[t] = if positive { above_0 } else { below_c };
    }
}

/// Every variable's gradient after the pair's step: `G_t += y_t (di K_ti + dj K_tj)`, with
/// `di`, `dj` the pair's changes of `y a`. Variable t's row is t mod n: the variables in runs of
/// n, each against the rows.
fn update_gradient(grad: &mut [f64], y: &[f64], ki: &[f32], kj: &[f32], di: f64, dj: f64) {
    let n = ki.len().max(1);
    for (grad, y) in grad.chunks_mut(n).zip(y.chunks(n)) {
        for (((g, y), a), b) in grad.iter_mut().zip(y).zip(ki).zip(kj) {
            *g += y * (di * f64::from(*a) + dj * f64::from(*b));
        }
    }
}

/// The second variable of libsvm's WSS 2 for a chosen `i`: the one in `I_low` of the best
/// second-order gain with `i`, and the largest `y_t G_t` over `I_low` (the stopping test).
struct Partner {
    gmax: f64,
    diag_i: f64,
    gmax2: f64,
    best: f64,
    pick: Option<usize>,
}

impl Partner {
    fn new(gmax: f64, diag_i: f64) -> Partner {
        Partner {
            gmax,
            diag_i,
            gmax2: f64::NEG_INFINITY,
            best: f64::INFINITY,
            pick: None,
        }
    }

    /// Variable `t`, with `y_t G_t` = `g`, `K(x_t, x_t)` and `K(x_i, x_t)`.
    #[inline(always)]
    fn consider(&mut self, low: bool, g: f64, diag_t: f64, k: f32, t: usize) {
        // Only the sum `gmax + gmax2` is used, so a zero's sign does not matter here.
        if low & (g > self.gmax2) {
            self.gmax2 = g;
        }
        let diff = self.gmax + g;
        if low & (diff > 0.0) {
            let quad = (self.diag_i + diag_t - 2.0 * f64::from(k)).max(TAU);
            let gain = -(diff * diff) / quad;
            if gain <= self.best {
                self.best = gain;
                self.pick = Some(t);
            }
        }
    }

    /// The pair, or `None` once the largest violation is below the tolerance.
    fn pair_with(&self, i: usize, tolerance: f64) -> Option<(usize, usize)> {
        if self.gmax + self.gmax2 < tolerance {
            return None;
        }
        self.pick.map(|j| (i, j))
    }
}

impl Problem<'_> {
    /// The row of variable `t` (`t < 2n`; a comparison, not a division, in the hot loops).
    fn base(&self, t: usize) -> usize {
        let n = self.rows.count();
        if t < n {
            t
        } else {
            t - n
        }
    }

    /// Pair updates after which the solver stops even if the tolerance is not met.
    fn iteration_cap(&self) -> usize {
        (100 * self.y.len()).max(10_000_000)
    }

    /// `K(x_t, x_t)` of every variable.
    fn diagonal(&self) -> Vec<f64> {
        (0..self.y.len())
            .map(|t| {
                let (r, b) = (self.rows, self.base(t));
                self.kernel.value(r.row(b), r.row(b), r.norm(b), r.norm(b))
            })
            .collect()
    }

    pub fn solve(&self) -> Solution {
        if self.shrinking {
            return self.solve_shrinking();
        }
        let mut cache = KernelCache::new(self);
        let diag = self.diagonal();
        let mut dual = Dual::new(self);
        let cap = self.iteration_cap();
        let mut iterations = 0;
        while iterations < cap {
            let Some((i, j)) = self.select(&mut cache, &dual, &diag) else {
                break;
            };
            iterations += 1;
            let (bi, bj) = (self.base(i), self.base(j));
            let (ki, kj) = cache.pair(bi, bj);
            let (di, dj) = self.move_pair(&mut dual, (i, j), diag[i] + diag[j], ki[bj]);
            update_gradient(&mut dual.grad, &self.y, ki, kj, di, dj);
        }
        let rho = self.rho(&dual.alpha, &dual.grad);
        Solution {
            alpha: dual.alpha,
            rho,
            iterations,
            most_shrunk: 0,
        }
    }

    /// The pair's step (`diags` = `K_ii + K_jj`, `kij` = `K_ij`), each variable's directions
    /// after it; the changes of `y_i a_i` and `y_j a_j`.
    fn move_pair(
        &self,
        dual: &mut Dual,
        (i, j): (usize, usize),
        diags: f64,
        kij: f32,
    ) -> (f64, f64) {
        let (old_i, old_j) = (dual.alpha[i], dual.alpha[j]);
        let quad = (diags - 2.0 * f64::from(kij)).max(TAU);
        self.step(&mut dual.alpha, &dual.grad, i, j, quad);
        dual.mark(self, i);
        dual.mark(self, j);
        (
            self.y[i] * (dual.alpha[i] - old_i),
            self.y[j] * (dual.alpha[j] - old_j),
        )
    }

    fn at_upper(&self, alpha: &[f64], t: usize) -> bool {
        alpha[t] >= self.c[t]
    }

    /// The largest violation `-y_t G_t` over the variables in `I_up`, and the last variable with
    /// it (the shrinking solver's `Packed::most_violating` scans its active variables the same
    /// way).
    #[inline(always)]
    fn most_violating(&self, dual: &Dual) -> (f64, Option<usize>) {
        let (mut gmax, mut pick) = (f64::NEG_INFINITY, None);
        for t in 0..self.y.len() {
            let violation = -(self.y[t] * dual.grad[t]);
            // One branch, rarely taken: the membership alone would be mispredicted.
            if dual.up[t] & (violation >= gmax) {
                gmax = violation;
                pick = Some(t);
            }
        }
        (gmax, pick)
    }

    /// libsvm's WSS 2: `i` maximises the violation, `j` the second-order gain with `i`; `None`
    /// once the largest violation is below the tolerance. `-y_t G_t` is `-G_t` or `G_t` exactly,
    /// as a product with +-1 only flips the sign.
    fn select(&self, cache: &mut KernelCache, dual: &Dual, diag: &[f64]) -> Option<(usize, usize)> {
        let (grad, y) = (&dual.grad, &self.y);
        let (gmax, pick_i) = self.most_violating(dual);
        let i = pick_i?;
        let bi = self.base(i);
        let (ki, _) = cache.pair(bi, bi);
        let n = ki.len().max(1);
        let mut partner = Partner::new(gmax, diag[i]);
        for start in (0..y.len()).step_by(n) {
            let end = (start + n).min(y.len());
            for ((t, k), low) in (start..end).zip(ki).zip(&dual.low[start..end]) {
                partner.consider(*low, y[t] * grad[t], diag[t], *k, t);
            }
        }
        partner.pair_with(i, self.tolerance)
    }

    /// The analytic two-variable step, clipped to the box (libsvm's update).
    fn step(&self, alpha: &mut [f64], grad: &[f64], i: usize, j: usize, quad: f64) {
        let (ci, cj) = (self.c[i], self.c[j]);
        if self.y[i] != self.y[j] {
            let delta = (-grad[i] - grad[j]) / quad;
            let diff = alpha[i] - alpha[j];
            alpha[i] += delta;
            alpha[j] += delta;
            if diff > 0.0 {
                if alpha[j] < 0.0 {
                    alpha[j] = 0.0;
                    alpha[i] = diff;
                }
            } else if alpha[i] < 0.0 {
                alpha[i] = 0.0;
                alpha[j] = -diff;
            }
            if diff > ci - cj {
                if alpha[i] > ci {
                    alpha[i] = ci;
                    alpha[j] = ci - diff;
                }
            } else if alpha[j] > cj {
                alpha[j] = cj;
                alpha[i] = cj + diff;
            }
        } else {
            let delta = (grad[i] - grad[j]) / quad;
            let sum = alpha[i] + alpha[j];
            alpha[i] -= delta;
            alpha[j] += delta;
            if sum > ci {
                if alpha[i] > ci {
                    alpha[i] = ci;
                    alpha[j] = sum - ci;
                }
            } else if alpha[j] < 0.0 {
                alpha[j] = 0.0;
                alpha[i] = sum;
            }
            if sum > cj {
                if alpha[j] > cj {
                    alpha[j] = cj;
                    alpha[i] = sum - cj;
                }
            } else if alpha[i] < 0.0 {
                alpha[i] = 0.0;
                alpha[j] = sum;
            }
        }
    }

    /// The offset: the mean of `y_t G_t` over free variables, else the middle of its bounds.
    fn rho(&self, alpha: &[f64], grad: &[f64]) -> f64 {
        let (mut upper, mut lower) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut free, mut sum) = (0usize, 0.0);
        for t in 0..self.y.len() {
            let yg = self.y[t] * grad[t];
            let positive = self.y[t] > 0.0;
            if self.at_upper(alpha, t) {
                if positive {
                    lower = lower.max(yg);
                } else {
                    upper = upper.min(yg);
                }
            } else if alpha[t] <= 0.0 {
                if positive {
                    upper = upper.min(yg);
                } else {
                    lower = lower.max(yg);
                }
            } else {
                free += 1;
                sum += yg;
            }
        }
        if free > 0 {
            sum / free as f64
        } else {
            (upper + lower) / 2.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use ndarray::Array2;

    fn problem<'a>(
        rows: &'a Rows,
        kernel: Kernel,
        y: &[bool],
        c: f64,
        cache: usize,
    ) -> Problem<'a> {
        Problem {
            rows,
            kernel,
            gram: None,
            y: y.iter().map(|p| if *p { 1.0 } else { -1.0 }).collect(),
            p: vec![-1.0; y.len()],
            c: vec![c; y.len()],
            tolerance: 1e-6,
            cache_bytes: cache,
            shrinking: false,
        }
    }

    /// The solution's decision value at `x`: a sum over the variables (two a row for
    /// epsilon-SVR).
    fn decision(rows: &Rows, pr: &Problem, s: &Solution, x: &[f64]) -> f64 {
        let nx = dot(x, x);
        (0..pr.y.len())
            .map(|t| {
                let b = pr.base(t);
                pr.y[t] * s.alpha[t] * pr.kernel.value(rows.row(b), x, rows.norm(b), nx)
            })
            .sum::<f64>()
            - s.rho
    }

    #[test]
    fn a_separable_set_gets_the_maximal_margin() {
        // Negatives at x0 = 0, positives at x0 = 2: the widest margin is x0 = 1.
        let x = Array2::from_shape_vec((4, 2), vec![0., 0., 0., 1., 2., 0., 2., 1.]).unwrap();
        let rows = Rows::new(x.view());
        let pr = problem(
            &rows,
            Kernel::Linear,
            &[false, false, true, true],
            1e3,
            1 << 20,
        );
        let s = pr.solve();
        assert!(s.iterations > 0);
        for (point, want) in [([0., 0.5], -1.0), ([2., 0.5], 1.0), ([1., 7.0], 0.0)] {
            let f = decision(&rows, &pr, &s, &point);
            assert!((f - want).abs() < 1e-4, "f({point:?}) = {f}, want {want}");
        }
    }

    fn noisy(n: usize) -> (Array2<f64>, Vec<bool>) {
        let mut rng = SplitMix64::new(7);
        let x = Array2::from_shape_fn((n, 3), |_| rng.next_f64() * 2.0 - 1.0);
        let y = (x.rows().into_iter())
            .map(|r| r[0] * r[0] + r[1] > 0.2 + 0.3 * (rng.next_f64() - 0.5))
            .collect();
        (x, y)
    }

    #[test]
    fn the_solution_meets_the_optimality_conditions() {
        let (x, y) = noisy(300);
        let rows = Rows::new(x.view());
        for shrinking in [false, true] {
            let mut pr = problem(&rows, Kernel::Rbf { gamma: 2.0 }, &y, 1.0, 1 << 20);
            pr.shrinking = shrinking;
            let s = pr.solve();
            assert!(s.iterations > 0);
            assert_eq!(shrinking, s.most_shrunk > 0, "{} left out", s.most_shrunk);
            let balance: f64 = (0..300).map(|t| pr.y[t] * s.alpha[t]).sum();
            assert!(balance.abs() < 1e-9, "y'a = {balance}");
            // y f(x) >= 1 where a = 0, = 1 where 0 < a < C, <= 1 where a = C (to the tolerance).
            for t in 0..300 {
                let margin = pr.y[t] * decision(&rows, &pr, &s, rows.row(t));
                let a = s.alpha[t];
                assert!((0.0..=1.0).contains(&a), "alpha {a}");
                let ok = match a {
                    a if a <= 0.0 => margin >= 1.0 - 1e-3,
                    a if a >= 1.0 => margin <= 1.0 + 1e-3,
                    _ => (margin - 1.0).abs() < 1e-3,
                };
                assert!(
                    ok,
                    "shrinking {shrinking}, row {t}: alpha {a}, y f(x) = {margin}"
                );
            }
        }
    }

    /// With shrinking (algorithm 3) the solver leaves variables out for a while and reaches
    /// the same optimum to about the tolerance, for classification and for epsilon-SVR's two
    /// variables a row.
    #[test]
    fn shrinking_reaches_the_same_optimum() {
        let (x, labels) = noisy(800);
        let rows = Rows::new(x.view());
        let kernel = Kernel::Rbf { gamma: 4.0 };
        let mut classify = problem(&rows, kernel, &labels, 50.0, 1 << 24);
        classify.tolerance = 1e-3;
        let n = rows.count();
        let target: Vec<f64> = (0..n)
            .map(|i| rows.row(i)[0] * 2.0 + rows.row(i)[1])
            .collect();
        let regress = Problem {
            y: (0..2 * n).map(|t| if t < n { 1.0 } else { -1.0 }).collect(),
            p: (0..2 * n)
                .map(|t| {
                    if t < n {
                        0.1 - target[t]
                    } else {
                        0.1 + target[t - n]
                    }
                })
                .collect(),
            c: vec![50.0; 2 * n],
            ..problem(&rows, kernel, &labels, 50.0, 1 << 24)
        };
        for mut pr in [classify, regress] {
            let plain = pr.solve();
            pr.shrinking = true;
            let shrunk = pr.solve();
            assert!(
                shrunk.most_shrunk > n / 4,
                "left out {} of {} in {} iterations",
                shrunk.most_shrunk,
                pr.y.len(),
                shrunk.iterations
            );
            for i in 0..n {
                let x = rows.row(i);
                let (a, b) = (
                    decision(&rows, &pr, &plain, x),
                    decision(&rows, &pr, &shrunk, x),
                );
                assert!(
                    (a - b).abs() < 1e-2,
                    "row {i}: {a} without shrinking, {b} with"
                );
            }
        }
    }

    #[test]
    fn a_cache_of_two_rows_finds_the_same_solution_as_a_full_one() {
        let (x, y) = noisy(200);
        let rows = Rows::new(x.view());
        let kernel = Kernel::Rbf { gamma: 1.0 };
        let full = problem(&rows, kernel, &y, 2.0, 1 << 24).solve();
        let tiny = problem(&rows, kernel, &y, 2.0, 1).solve();
        assert_eq!(full.alpha, tiny.alpha);
        assert_eq!(full.rho.to_bits(), tiny.rho.to_bits());
        assert_eq!(full.iterations, tiny.iterations);
        // The same from a precomputed table of which these rows are a subset (every other row).
        let (wide, _) = noisy(400);
        let table = Rows::new(wide.view());
        let picks: Vec<usize> = (0..200).map(|i| 2 * i).collect();
        let rows = table.subset(&picks);
        let gram = Gram::compute(&table, kernel, 3);
        let y: Vec<bool> = picks.iter().map(|i| i % 3 == 0).collect();
        let lazy = problem(&rows, kernel, &y, 2.0, 1).solve();
        let mut shared = problem(&rows, kernel, &y, 2.0, 1);
        shared.gram = Some((&gram, &picks));
        assert_eq!(lazy.alpha, shared.solve().alpha);
    }

    #[test]
    fn the_table_holds_each_kernel_value_to_the_bit_at_any_thread_count() {
        for n in [0, 1, 5, 37] {
            let (x, _) = noisy(n);
            let rows = Rows::new(x.view());
            let kernel = Kernel::Rbf { gamma: 0.7 };
            for threads in [1, 2, 3, 8] {
                let gram = Gram::compute(&rows, kernel, threads);
                for i in 0..n {
                    for j in 0..n {
                        let want =
                            kernel.value(rows.row(i), rows.row(j), rows.norm(i), rows.norm(j));
                        assert_eq!(gram.values[i * n + j].to_bits(), (want as f32).to_bits());
                    }
                }
            }
            let shares = triangle_shares(n, 3);
            assert_eq!((shares[0], shares[3]), (0, n));
            assert!(shares.windows(2).all(|w| w[0] <= w[1]), "{shares:?}");
        }
    }
}
