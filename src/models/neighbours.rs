//! Exact k-nearest-neighbour search by brute force, as scikit-learn's `algorithm = "brute"`:
//! the squared distances of a block of query rows to every training row come from one matrix
//! product (|q|^2 + |t|^2 - 2 q.t), which finds the candidates; the candidates' distances are
//! then computed exactly, row by row, so the neighbours and their distances are the same as a
//! tree search's (ties ordered by training row). Blocks of queries run on `threads` threads.

use ndarray::{s, Array2, ArrayView1, ArrayView2, Axis};
use std::collections::BinaryHeap;

/// A query row's neighbours: (exact Euclidean distance, training row), nearest first.
pub(crate) type Neighbours = Vec<(f64, usize)>;

/// The Euclidean distance of a training row from a query row, summed in the same order by every
/// search, so that all give the same bits.
pub(crate) fn distance(train_row: ArrayView1<f64>, query: ArrayView1<f64>) -> f64 {
    let d: f64 = (train_row.iter().zip(query.iter()))
        .map(|(a, b)| (a - b).powi(2))
        .sum();
    d.sqrt()
}

/// Nearest first, ties by training row, so that the order never depends on an index's layout.
pub(crate) fn order(hits: &mut Neighbours) {
    hits.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
}

/// The most distances one block holds (32 MiB of f64 per thread).
const BLOCK_CELLS: usize = 1 << 22;

/// Training rows with their squared norms, ready to be searched.
pub(crate) struct BruteIndex<'a> {
    train: &'a Array2<f64>,
    squared_norms: Vec<f64>,
    /// The largest squared norm, which bounds the rounding error of the matrix product.
    max_norm: f64,
}

impl<'a> BruteIndex<'a> {
    pub(crate) fn new(train: &'a Array2<f64>) -> BruteIndex<'a> {
        let squared_norms: Vec<f64> = train.rows().into_iter().map(|r| r.dot(&r)).collect();
        let max_norm = squared_norms.iter().copied().fold(0.0, f64::max);
        BruteIndex {
            train,
            squared_norms,
            max_norm,
        }
    }

    /// The `k` nearest training rows of every query row, in query order.
    pub(crate) fn k_nearest(
        &self,
        queries: ArrayView2<f64>,
        k: usize,
        threads: usize,
    ) -> Vec<Neighbours> {
        let n = queries.nrows();
        let per_thread = n.div_ceil(threads.max(1)).max(1);
        let chunks: Vec<ArrayView2<f64>> = (0..n)
            .step_by(per_thread)
            .map(|start| queries.slice(s![start..(start + per_thread).min(n), ..]))
            .collect();
        if chunks.len() <= 1 {
            return self.search_chunk(queries, k);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| scope.spawn(move || self.search_chunk(chunk, k)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }

    fn search_chunk(&self, queries: ArrayView2<f64>, k: usize) -> Vec<Neighbours> {
        let n_train = self.train.nrows();
        let block = (BLOCK_CELLS / n_train.max(1)).clamp(1, 256);
        let mut out = Vec::with_capacity(queries.nrows());
        for start in (0..queries.nrows()).step_by(block) {
            let q = queries.slice(s![start..(start + block).min(queries.nrows()), ..]);
            let products = q.dot(&self.train.t());
            for (row, dots) in q.outer_iter().zip(products.axis_iter(Axis(0))) {
                let copied;
                let dots = match dots.to_slice() {
                    Some(contiguous) => contiguous,
                    None => {
                        copied = dots.to_vec();
                        &copied
                    }
                };
                out.push(self.exact_nearest(row, dots, k));
            }
        }
        out
    }

    /// The `k` nearest by exact distance among the rows whose approximate squared distance,
    /// from the query's products with them, is within rounding of the k-th smallest (less
    /// |q|^2, which every row shares: |t|^2 - 2 q.t). One pass keeps the k smallest in
    /// a heap and collects every row within rounding of the heap's largest as it goes (a
    /// superset of the final candidates, since that largest only falls).
    fn exact_nearest(&self, row: ArrayView1<f64>, dots: &[f64], k: usize) -> Neighbours {
        let k = k.min(dots.len());
        if k == 0 {
            return Vec::new();
        }
        // The product's rounding error is far below 1e-9 of the norms involved.
        let margin = 1e-9 * (row.dot(&row) + self.max_norm) + f64::MIN_POSITIVE;
        let norms = &self.squared_norms;
        let approx = |idx: usize| norms[idx] - 2.0 * dots[idx];
        let mut smallest: BinaryHeap<Total> = (0..k).map(|i| Total(approx(i))).collect();
        let mut candidates: Vec<(f64, usize)> = (0..k).map(|i| (approx(i), i)).collect();
        let mut kth = smallest.peek().map_or(f64::INFINITY, |t| t.0);
        for (idx, (d, t)) in dots.iter().zip(norms).enumerate().skip(k) {
            let a = t - 2.0 * d;
            if a <= kth + margin {
                candidates.push((a, idx));
                if a < kth {
                    smallest.pop();
                    smallest.push(Total(a));
                    kth = smallest.peek().map_or(f64::INFINITY, |t| t.0);
                }
            }
        }
        let mut hits: Neighbours = candidates
            .into_iter()
            .filter(|(a, _)| *a <= kth + margin)
            .map(|(_, idx)| (distance(self.train.row(idx), row), idx))
            .collect();
        order(&mut hits);
        hits.truncate(k);
        hits
    }
}

/// An f64 ordered by `total_cmp`, for the heap.
#[derive(PartialEq)]
struct Total(f64);

impl Eq for Total {}

impl PartialOrd for Total {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Total {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn table(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
        let mut rng = SplitMix64::new(seed);
        // Rounded values make many exact ties, the case an ordering bug shows in.
        Array2::from_shape_fn((rows, cols), |_| (rng.next_f64() * 8.0).round() - 4.0)
    }

    #[test]
    fn brute_force_finds_the_exact_neighbours_with_ties_by_training_row() {
        let train = table(700, 5, 1);
        let queries = table(90, 5, 2);
        let index = BruteIndex::new(&train);
        for threads in [1, 3] {
            let found = index.k_nearest(queries.view(), 7, threads);
            for (q, hits) in queries.outer_iter().zip(&found) {
                let mut all: Neighbours = train
                    .outer_iter()
                    .enumerate()
                    .map(|(i, t)| (distance(t, q), i))
                    .collect();
                order(&mut all);
                all.truncate(7);
                assert_eq!(hits, &all);
            }
        }
    }

    #[test]
    fn k_beyond_the_training_rows_returns_them_all() {
        let train = table(4, 3, 3);
        let found = BruteIndex::new(&train).k_nearest(table(2, 3, 4).view(), 10, 2);
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|h| h.len() == 4));
    }
}
