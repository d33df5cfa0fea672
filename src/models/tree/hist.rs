//! Histogram split finding: algorithm version 3 of `decision_tree` and `random_forest`.
//!
//! Each fit bins every feature once (at most `max_bins` bins, cut at quantiles of a seeded
//! sample of the rows, as LightGBM and scikit-learn's histogram boosting do), and a node's
//! split is searched among the bins' edges: a histogram per feature for a large node, the
//! node's rows ordered by bin for a small one (both find the same split). A feature with at
//! most `max_bins` distinct values keeps every split the exact CART could make. The tree it
//! builds is an ordinary [`Tree`] with real-valued thresholds (the bins' upper edges), so
//! prediction, importance and the ONNX export are shared with the exact CART.
//!
//! Rows are weighted, not repeated: a forest's bootstrap count multiplies a row's weight, and
//! `min_samples_*` count distinct rows, as scikit-learn's forests do.

use super::{sample_features, weighted_impurity, Criterion, Node, Tree, TreeParams};
use crate::rng::SplitMix64;
use ndarray::ArrayView2;

/// The code of a missing value: it always goes right, as `NaN <= threshold` is false.
const MISSING: u8 = u8::MAX;
/// The most bins a feature may have (codes 0..=254; 255 is [`MISSING`]).
pub(super) const MAX_BINS: usize = 255;
/// Bin edges come from at most this many rows (a seeded sample beyond), as in scikit-learn's
/// histogram gradient boosting.
const EDGE_SAMPLE: usize = 200_000;

/// A table's features as bin codes, column by column.
pub(super) struct Binned {
    n_rows: usize,
    /// Feature f's codes are `codes[f * n_rows..(f + 1) * n_rows]`.
    codes: Vec<u8>,
    /// Per feature, the upper edge of each bin but the last: a value `v` has code `b` when
    /// `edges[b - 1] < v <= edges[b]`.
    edges: Vec<Vec<f64>>,
}

impl Binned {
    pub(super) fn new(x: ArrayView2<f64>, max_bins: usize, seed: u64) -> Binned {
        let (n, p) = x.dim();
        let max_bins = max_bins.clamp(2, MAX_BINS);
        let sample = (n > EDGE_SAMPLE)
            .then(|| SplitMix64::derive(seed, u64::MAX).sorted_sample(n, EDGE_SAMPLE));
        let mut codes = vec![0u8; n * p];
        let mut edges = Vec::with_capacity(p);
        for (f, column_codes) in codes.chunks_mut(n.max(1)).take(p).enumerate() {
            let column = x.column(f);
            let mut values: Vec<f64> = match &sample {
                Some(rows) => rows.iter().map(|&r| column[r]).collect(),
                None => column.to_vec(),
            };
            values.retain(|v| !v.is_nan());
            values.sort_unstable_by(f64::total_cmp);
            let cuts = bin_edges(&values, max_bins);
            for (code, v) in column_codes.iter_mut().zip(column.iter()) {
                *code = if v.is_nan() {
                    MISSING
                } else {
                    cuts.partition_point(|edge| edge < v) as u8
                };
            }
            edges.push(cuts);
        }
        Binned {
            n_rows: n,
            codes,
            edges,
        }
    }

    fn column(&self, f: usize) -> &[u8] {
        &self.codes[f * self.n_rows..(f + 1) * self.n_rows]
    }

    fn n_features(&self) -> usize {
        self.edges.len()
    }
}

/// A value halfway between two neighbours, kept strictly below the upper one.
fn midpoint(low: f64, high: f64) -> f64 {
    let mid = low + (high - low) / 2.0;
    if mid >= high {
        low
    } else {
        mid
    }
}

/// Edges for sorted values: between every two distinct values when there are at most
/// `max_bins` of them, else just above each `1 / max_bins` quantile.
fn bin_edges(sorted: &[f64], max_bins: usize) -> Vec<f64> {
    let mut distinct = sorted.to_vec();
    distinct.dedup();
    if distinct.len() <= max_bins {
        return distinct.windows(2).map(|w| midpoint(w[0], w[1])).collect();
    }
    let mut edges: Vec<f64> = Vec::with_capacity(max_bins - 1);
    for i in 1..max_bins {
        let value = sorted[(i * sorted.len() / max_bins).saturating_sub(1)];
        let above = distinct.partition_point(|d| *d <= value);
        if let Some(&next) = distinct.get(above) {
            let edge = midpoint(value, next);
            if edges.last().is_none_or(|last| edge > *last) {
                edges.push(edge);
            }
        }
    }
    edges
}

/// What a node's rows add up to, per bin or per node: `[rows, weight, w*y, w*y^2]` for
/// regression, `[rows, weight of class 0, weight of class 1, ...]` for classes.
#[derive(Clone, Copy)]
struct Stats {
    width: usize,
    regression: bool,
}

impl Stats {
    #[inline(always)]
    fn add(&self, acc: &mut [f64], w: f64, y: f64) {
        acc[0] += 1.0;
        if self.regression {
            acc[1] += w;
            acc[2] += w * y;
            acc[3] += w * y * y;
        } else {
            acc[1 + y as usize] += w;
        }
    }

    #[inline(always)]
    fn weight(&self, acc: &[f64]) -> f64 {
        if self.regression {
            acc[1]
        } else {
            acc[1..].iter().sum()
        }
    }

    /// Impurity times weight, so that children's values add up.
    #[inline(always)]
    fn impurity(&self, criterion: Criterion, acc: &[f64]) -> f64 {
        if self.regression {
            return if acc[1] > 0.0 {
                acc[3] - acc[2] * acc[2] / acc[1]
            } else {
                0.0
            };
        }
        let counts = &acc[1..];
        let total: f64 = counts.iter().sum();
        let sum_sq: f64 = counts.iter().map(|c| c * c).sum();
        weighted_impurity(criterion, counts, total, sum_sq)
    }

    fn leaf_value(&self, acc: &[f64]) -> Vec<f64> {
        let total = self.weight(acc);
        if self.regression {
            return vec![if total > 0.0 { acc[2] / total } else { 0.0 }];
        }
        acc[1..]
            .iter()
            .map(|c| if total > 0.0 { c / total } else { *c })
            .collect()
    }
}

/// A node's rows (ascending), every row's weight, and the node's summed [`Stats`].
#[derive(Clone, Copy)]
struct NodeRows<'a> {
    rows: &'a [u32],
    w: &'a [f64],
    total: &'a [f64],
}

/// The best split found so far: its feature, the last bin on the left, and its score.
struct Best {
    feature: usize,
    bin: usize,
    score: f64,
}

/// A node searches its features on several threads once it has this many row-features of work
/// (below, spawning costs more than it saves).
const PARALLEL_WORK: usize = 200_000;

/// Grows trees on one binned table.
pub(super) struct Grower<'a> {
    pub(super) binned: &'a Binned,
    pub(super) y: &'a [f64],
    pub(super) params: TreeParams,
    /// Threads a large node's split search may use (a forest grows its trees in parallel
    /// instead, and gives 1). The split found is the same at any count.
    pub(super) threads: usize,
}

/// Per-tree working memory, reused from node to node.
struct Scratch {
    hist: Vec<f64>,
    left: Vec<f64>,
    right: Vec<f64>,
    by_bin: Vec<(u8, u32)>,
    moved: Vec<u32>,
}

impl Scratch {
    fn new(width: usize) -> Scratch {
        Scratch {
            hist: vec![0.0; 256 * width],
            left: vec![0.0; width],
            right: vec![0.0; width],
            by_bin: Vec::new(),
            moved: Vec::new(),
        }
    }
}

/// The lower-scoring of two splits; on a tie the one found first (the earlier feature).
fn better(best: Option<Best>, candidate: Best) -> Option<Best> {
    match best {
        Some(old) if old.score <= candidate.score => Some(old),
        _ => Some(candidate),
    }
}

impl Grower<'_> {
    fn stats(&self) -> Stats {
        let regression = self.params.criterion == Criterion::SquaredError;
        Stats {
            width: if regression {
                4
            } else {
                1 + self.params.n_classes
            },
            regression,
        }
    }

    /// One tree on `rows` (ascending, each once) with per-row weights `w` (indexed by row).
    pub(super) fn grow(&self, mut rows: Vec<u32>, w: &[f64], rng: &mut SplitMix64) -> Tree {
        let stats = self.stats();
        let p_total = self.binned.n_features();
        let mut all_features: Vec<usize> = (0..p_total).collect();
        let mut scratch = Scratch::new(stats.width);
        let mut tree = Tree {
            nodes: vec![Node::Leaf(Vec::new())],
            importance: vec![0.0; p_total],
        };
        let mut stack = vec![(0usize, 0usize, rows.len(), 0usize)];
        while let Some((id, lo, hi, depth)) = stack.pop() {
            let node_rows = &rows[lo..hi];
            let mut total = vec![0.0; stats.width];
            for &r in node_rows {
                stats.add(&mut total, w[r as usize], self.y[r as usize]);
            }
            let value = stats.leaf_value(&total);
            if self.stops(&value, node_rows.len(), depth) {
                tree.nodes[id] = Node::Leaf(value);
                continue;
            }
            let features = sample_features(&mut all_features, self.params.max_features, rng);
            let parent = stats.impurity(self.params.criterion, &total);
            let node = NodeRows {
                rows: node_rows,
                w,
                total: &total,
            };
            let best = self.best_split(&features, node, &mut scratch);
            // A split must reduce impurity by more than rounding noise.
            let best = best.filter(|b| b.score < parent - 1e-12 * parent.abs().max(1.0));
            let Some(best) = best else {
                tree.nodes[id] = Node::Leaf(value);
                continue;
            };
            tree.importance[best.feature] += parent - best.score;
            let split = self.partition(&mut rows[lo..hi], &best, &mut scratch.moved);
            let (left, right) = (tree.nodes.len(), tree.nodes.len() + 1);
            tree.nodes.push(Node::Leaf(Vec::new()));
            tree.nodes.push(Node::Leaf(Vec::new()));
            tree.nodes[id] = Node::Split {
                feature: best.feature,
                threshold: self.binned.edges[best.feature][best.bin],
                left,
                right,
            };
            stack.push((right, lo + split, hi, depth + 1));
            stack.push((left, lo, lo + split, depth + 1));
        }
        tree
    }

    /// The best split over `features`, searched on up to `threads` threads for a large node:
    /// each thread takes a contiguous run of features and the runs are compared in order, so
    /// the result is the one a single thread finds.
    fn best_split(
        &self,
        features: &[usize],
        node: NodeRows,
        scratch: &mut Scratch,
    ) -> Option<Best> {
        let threads = self.threads.min(features.len());
        if threads <= 1 || node.rows.len() * features.len() < PARALLEL_WORK {
            return features
                .iter()
                .filter_map(|&f| self.best_bin(f, node, scratch))
                .fold(None, better);
        }
        let per_thread = features.len().div_ceil(threads);
        let width = self.stats().width;
        let found: Vec<Option<Best>> = std::thread::scope(|s| {
            let handles: Vec<_> = features
                .chunks(per_thread)
                .map(|chunk| {
                    s.spawn(move || {
                        let mut own = Scratch::new(width);
                        chunk
                            .iter()
                            .filter_map(|&f| self.best_bin(f, node, &mut own))
                            .fold(None, better)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        found.into_iter().flatten().fold(None, better)
    }

    fn stops(&self, value: &[f64], n_rows: usize, depth: usize) -> bool {
        let p = &self.params;
        let pure = p.criterion != Criterion::SquaredError
            && value.iter().filter(|v| **v > 0.0).count() <= 1;
        depth >= p.max_depth
            || n_rows < p.min_samples_split
            || n_rows < 2 * p.min_samples_leaf
            || pure
    }

    /// Moves the node's rows that go left to the front, keeping both sides in row order;
    /// returns how many go left.
    fn partition(&self, rows: &mut [u32], best: &Best, moved: &mut Vec<u32>) -> usize {
        let codes = self.binned.column(best.feature);
        moved.clear();
        let mut kept = 0;
        for i in 0..rows.len() {
            let r = rows[i];
            if codes[r as usize] as usize <= best.bin {
                rows[kept] = r;
                kept += 1;
            } else {
                moved.push(r);
            }
        }
        rows[kept..].copy_from_slice(moved);
        kept
    }

    /// The best split of `rows` on feature `f`: a histogram unless the node has fewer rows
    /// than a quarter of the feature's bins, then the rows ordered by bin (clearing and
    /// walking mostly empty bins would cost more than the sort).
    fn best_bin(&self, f: usize, node: NodeRows, scratch: &mut Scratch) -> Option<Best> {
        let n_bins = self.binned.edges[f].len() + 1;
        if n_bins < 2 {
            return None;
        }
        let (bin, score) = if node.rows.len() * 4 >= n_bins {
            self.scan_histogram(f, node, n_bins, scratch)?
        } else {
            self.scan_ordered(f, node, n_bins, scratch)?
        };
        Some(Best {
            feature: f,
            bin,
            score,
        })
    }

    fn scan_histogram(
        &self,
        f: usize,
        node: NodeRows,
        n_bins: usize,
        scratch: &mut Scratch,
    ) -> Option<(usize, f64)> {
        let NodeRows { rows, w, total } = node;
        let stats = self.stats();
        let width = stats.width;
        let codes = self.binned.column(f);
        let hist = &mut scratch.hist;
        hist[..n_bins * width].fill(0.0);
        hist[MISSING as usize * width..].fill(0.0);
        // The same sums as `Stats::add`, with the task's branch taken once per node.
        if stats.regression {
            for &r in rows {
                let (r, y) = (r as usize, self.y[r as usize]);
                let at = codes[r] as usize * 4;
                let (bin, wr) = (&mut hist[at..at + 4], w[r]);
                bin[0] += 1.0;
                bin[1] += wr;
                bin[2] += wr * y;
                bin[3] += wr * y * y;
            }
        } else {
            for &r in rows {
                let r = r as usize;
                let at = codes[r] as usize * width;
                hist[at] += 1.0;
                hist[at + 1 + self.y[r] as usize] += w[r];
            }
        }
        scratch.left.fill(0.0);
        let mut best: Option<(usize, f64)> = None;
        // The last bin has no edge above it: every split leaves it on the right.
        for bin in 0..n_bins - 1 {
            let added = &hist[bin * width..(bin + 1) * width];
            if added[0] == 0.0 {
                continue;
            }
            scratch
                .left
                .iter_mut()
                .zip(added)
                .for_each(|(l, a)| *l += a);
            if let Some(score) = self.score(&scratch.left, total, &mut scratch.right) {
                if best.is_none_or(|(_, s)| score < s) {
                    best = Some((bin, score));
                }
            }
        }
        best
    }

    fn scan_ordered(
        &self,
        f: usize,
        node: NodeRows,
        n_bins: usize,
        scratch: &mut Scratch,
    ) -> Option<(usize, f64)> {
        let NodeRows { rows, w, total } = node;
        let stats = self.stats();
        let codes = self.binned.column(f);
        let by_bin = &mut scratch.by_bin;
        by_bin.clear();
        by_bin.extend(rows.iter().map(|&r| (codes[r as usize], r)));
        by_bin.sort_unstable();
        scratch.left.fill(0.0);
        let mut best: Option<(usize, f64)> = None;
        for i in 0..by_bin.len() - 1 {
            let (code, r) = by_bin[i];
            stats.add(&mut scratch.left, w[r as usize], self.y[r as usize]);
            // Split only between bins, and only where an edge exists above the left's last.
            if by_bin[i + 1].0 == code || code as usize >= n_bins - 1 {
                continue;
            }
            if let Some(score) = self.score(&scratch.left, total, &mut scratch.right) {
                if best.is_none_or(|(_, s)| score < s) {
                    best = Some((code as usize, score));
                }
            }
        }
        best
    }

    /// The children's summed impurity for a left side, or None when a child would keep fewer
    /// rows than `min_samples_leaf`.
    #[inline(always)]
    fn score(&self, left: &[f64], total: &[f64], right: &mut [f64]) -> Option<f64> {
        let min_leaf = self.params.min_samples_leaf as f64;
        right
            .iter_mut()
            .zip(left.iter().zip(total))
            .for_each(|(r, (l, t))| *r = t - l);
        if left[0] < min_leaf || right[0] < min_leaf {
            return None;
        }
        let stats = self.stats();
        let c = self.params.criterion;
        Some(stats.impurity(c, left) + stats.impurity(c, right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn few_distinct_values_keep_every_split_and_many_are_cut_at_quantiles() {
        assert_eq!(bin_edges(&[1.0, 1.0, 2.0, 4.0], 255), vec![1.5, 3.0]);
        let many: Vec<f64> = (0..1000).map(f64::from).collect();
        let edges = bin_edges(&many, 10);
        assert_eq!(edges.len(), 9);
        assert_eq!(edges[0], 99.5);
        assert_eq!(edges[8], 899.5);
    }

    #[test]
    fn a_code_and_its_edges_agree_with_the_threshold_test() {
        let x = Array2::from_shape_fn((500, 1), |(i, _)| ((i * 37) % 101) as f64 * 0.3 - 7.0);
        let binned = Binned::new(x.view(), 16, 3);
        let edges = &binned.edges[0];
        for (v, code) in x.column(0).iter().zip(binned.column(0)) {
            for (b, edge) in edges.iter().enumerate() {
                assert_eq!(
                    *code as usize <= b,
                    v <= edge,
                    "value {v}, code {code}, edge {b}"
                );
            }
        }
    }

    #[test]
    fn missing_values_get_their_own_code() {
        let x = ndarray::array![[1.0], [f64::NAN], [3.0]];
        let binned = Binned::new(x.view(), 255, 1);
        assert_eq!(binned.column(0), &[0, MISSING, 1]);
    }
}
