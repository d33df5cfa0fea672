//! Exact k-nearest-neighbour search by brute force, as scikit-learn's `algorithm = "brute"`:
//! the squared distances of a block of query rows to a tile of training rows come from one
//! matrix product (|q|^2 + |t|^2 - 2 q.t), in f32 on rows centred on the training means, which
//! finds the candidates: every row within a margin that covers f32's rounding of the k-th
//! smallest. The candidates' distances are then computed exactly in f64, row by row, so the
//! neighbours and their distances are the same as a tree search's (ties ordered by training
//! row) and as the f64 product's. Blocks of queries run on `threads` threads.

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

/// Queries searched together: one matrix product per block and tile of training rows.
const QUERY_BLOCK: usize = 64;

/// Training rows per tile: a block's products with a tile (1 MiB of f32) stay in the cache
/// until they are scanned.
const TRAIN_TILE: usize = 4096;

/// How many rows the scan for candidates checks at once.
const SCAN_RUN: usize = 16;

/// Beyond this magnitude a centred value's square could overflow f32: such tables are searched
/// with an f64 product instead.
const F32_SAFE: f64 = 1e15;

/// Training rows with their squared norms, ready to be searched. The candidates come from a
/// product in f32 of rows centred on the training means (distances do not change with a shift;
/// centring keeps the norms, and with them the rounding, as small as the spread of the data),
/// with a margin that covers f32's rounding; the candidates' distances are then exact f64.
pub(crate) struct BruteIndex<'a> {
    train: &'a Array2<f64>,
    centre: Vec<f64>,
    /// The centred training rows in f32; none where a value is too large for f32 (the product
    /// is then in f64, of the rows as they are).
    centred: Option<Array2<f32>>,
    /// The squared norms of the rows as the product sees them.
    squared_norms: Vec<f64>,
    /// The largest squared norm, which bounds the rounding error of the matrix product.
    max_norm: f64,
}

impl<'a> BruteIndex<'a> {
    pub(crate) fn new(train: &'a Array2<f64>) -> BruteIndex<'a> {
        let centre: Vec<f64> = (train.axis_iter(Axis(1)))
            .map(|col| col.mean().unwrap_or(0.0))
            .collect();
        let centred64 = train - &ndarray::ArrayView1::from(&centre[..]);
        let fits_f32 = centred64.iter().all(|v| v.abs() < F32_SAFE);
        let (centred, squared_norms): (Option<Array2<f32>>, Vec<f64>) = if fits_f32 {
            let c32 = centred64.mapv(|v| v as f32);
            let norms = c32.rows().into_iter().map(sq32).collect();
            (Some(c32), norms)
        } else {
            let norms = train.rows().into_iter().map(|r| r.dot(&r)).collect();
            (None, norms)
        };
        let max_norm = squared_norms.iter().copied().fold(0.0, f64::max);
        BruteIndex {
            train,
            centre,
            centred,
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
        let centre = ndarray::ArrayView1::from(&self.centre[..]);
        let mut out = Vec::with_capacity(queries.nrows());
        for start in (0..queries.nrows()).step_by(QUERY_BLOCK) {
            let q = queries.slice(s![start..(start + QUERY_BLOCK).min(queries.nrows()), ..]);
            match &self.centred {
                Some(train) => {
                    let centred = &q - &centre;
                    if !centred.iter().all(|v| v.abs() < F32_SAFE) {
                        // A query too far out for f32 (or not a number): every distance exactly.
                        out.extend(q.outer_iter().map(|row| self.exact_scan(row, k)));
                        continue;
                    }
                    let q32 = centred.mapv(|v| v as f32);
                    let margins = self.margins(q32.rows().into_iter().map(sq32), f32_unit());
                    let tile = |rows| q32.dot(&train.slice(s![rows, ..]).t());
                    out.extend(self.nearest_of_block(q, tile, &margins, k));
                }
                None => {
                    let norms = q.rows().into_iter().map(|r| r.dot(&r));
                    let margins = self.margins(norms, 1e-9 / 2.0);
                    let tile = |rows| q.dot(&self.train.slice(s![rows, ..]).t());
                    out.extend(self.nearest_of_block(q, tile, &margins, k));
                }
            }
        }
        out
    }

    /// The neighbours of a block of queries: the training rows are scanned a tile of
    /// [`TRAIN_TILE`] rows at a time (`products` of a range of rows: the block's products with
    /// them), so each tile's products are still in the cache when they are scanned.
    fn nearest_of_block<T: Copy + Into<f64>>(
        &self,
        queries: ArrayView2<f64>,
        products: impl Fn(std::ops::Range<usize>) -> Array2<T>,
        margins: &[f64],
        k: usize,
    ) -> Vec<Neighbours> {
        let n_train = self.train.nrows();
        let mut scans: Vec<Scan> = (margins.iter()).map(|m| Scan::new(k, *m)).collect();
        for first in (0..n_train).step_by(TRAIN_TILE) {
            let dots = products(first..(first + TRAIN_TILE).min(n_train));
            for (scan, dots) in scans.iter_mut().zip(dots.outer_iter()) {
                let copied;
                let dots = match dots.to_slice() {
                    Some(contiguous) => contiguous,
                    None => {
                        copied = dots.to_vec();
                        &copied
                    }
                };
                scan.rows(dots, &self.squared_norms[first..], first);
            }
        }
        (queries.outer_iter().zip(scans))
            .map(|(row, scan)| self.exact_of(row, scan))
            .collect()
    }

    fn exact_scan(&self, row: ArrayView1<f64>, k: usize) -> Neighbours {
        let mut all: Neighbours = (self.train.outer_iter().enumerate())
            .map(|(i, t)| (distance(t, row), i))
            .collect();
        order(&mut all);
        all.truncate(k);
        all
    }

    /// How far each query's approximate squared distances (less its own norm) may be from the
    /// exact ones: the product's rounding, at `unit` per term, over the row's length (plus the
    /// rounding of the inputs themselves), relative to the norms involved, twice over.
    fn margins(&self, query_norms: impl Iterator<Item = f64>, unit: f64) -> Vec<f64> {
        let terms = (self.train.ncols() + 4) as f64;
        (query_norms)
            .map(|q| 4.0 * terms * unit * (q + self.max_norm) + f64::MIN_POSITIVE)
            .collect()
    }

    /// The `k` nearest of a finished [`Scan`]'s candidates, by exact distance.
    fn exact_of(&self, row: ArrayView1<f64>, scan: Scan) -> Neighbours {
        let limit = scan.kth + scan.margin;
        let mut hits: Neighbours = (scan.candidates.into_iter())
            .filter(|(a, _)| *a <= limit)
            .map(|(_, idx)| (distance(self.train.row(idx), row), idx))
            .collect();
        order(&mut hits);
        hits.truncate(scan.k);
        hits
    }
}

/// One query's pass over the training rows' approximate squared distances (less |q|^2, which
/// every row shares: |t|^2 - 2 q.t): it keeps the k smallest in a heap and collects every row
/// within `margin` of the heap's largest as it goes, a superset of the rows within the margin
/// of the final k-th smallest (which only falls), the only rows that can be among the `k`
/// nearest by exact distance.
struct Scan {
    k: usize,
    margin: f64,
    smallest: BinaryHeap<Total>,
    candidates: Vec<(f64, usize)>,
    /// The heap's largest once it holds k rows; infinite before.
    kth: f64,
}

impl Scan {
    fn new(k: usize, margin: f64) -> Scan {
        Scan {
            k,
            margin,
            smallest: BinaryHeap::with_capacity(k + 1),
            candidates: Vec::new(),
            kth: f64::INFINITY,
        }
    }

    /// Scans the rows `first..first + dots.len()` (`norms` starts at row `first`).
    fn rows<T: Copy + Into<f64>>(&mut self, dots: &[T], norms: &[f64], first: usize) {
        let approx = |i: usize| norms[i] - 2.0 * dots[i].into();
        // Rows in runs of SCAN_RUN: a run none of whose rows is within the margin (nearly
        // all, once the heap holds near rows) is passed over with one branch.
        let mut start = 0;
        while start < dots.len() {
            let end = (start + SCAN_RUN).min(dots.len());
            let limit = self.kth + self.margin;
            let any_near = (dots[start..end].iter().zip(&norms[start..end]))
                .fold(false, |near, (d, t)| {
                    near | (t - 2.0 * (*d).into() <= limit)
                });
            if any_near {
                for i in start..end {
                    self.offer(approx(i), first + i);
                }
            }
            start = end;
        }
    }

    fn offer(&mut self, a: f64, idx: usize) {
        if self.smallest.len() < self.k {
            self.candidates.push((a, idx));
            self.smallest.push(Total(a));
            if self.smallest.len() == self.k {
                self.kth = self.smallest.peek().map_or(f64::INFINITY, |t| t.0);
            }
        } else if a <= self.kth + self.margin {
            self.candidates.push((a, idx));
            if a < self.kth {
                self.smallest.pop();
                self.smallest.push(Total(a));
                self.kth = self.smallest.peek().map_or(f64::INFINITY, |t| t.0);
            }
        }
    }
}

/// The unit roundoff of f32 arithmetic, doubled for products summed with fused multiply-adds.
fn f32_unit() -> f64 {
    f64::from(f32::EPSILON)
}

fn sq32(row: ArrayView1<f32>) -> f64 {
    row.iter().map(|&v| f64::from(v).powi(2)).sum()
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

    fn exact(train: &Array2<f64>, queries: &Array2<f64>, k: usize) -> Vec<Neighbours> {
        (queries.outer_iter())
            .map(|q| {
                let mut all: Neighbours = (train.outer_iter().enumerate())
                    .map(|(i, t)| (distance(t, q), i))
                    .collect();
                order(&mut all);
                all.truncate(k);
                all
            })
            .collect()
    }

    #[test]
    fn rows_far_from_zero_with_a_small_spread_find_the_exact_neighbours() {
        // f32 has 7 digits: 1e6 plus a spread of 1e-2 leaves about one digit of the spread
        // uncentred; centred, the candidates are still exact.
        let mut rng = SplitMix64::new(5);
        let train = Array2::from_shape_fn((600, 4), |_| 1e6 + rng.next_f64() * 1e-2);
        let queries = Array2::from_shape_fn((50, 4), |_| 1e6 + rng.next_f64() * 1e-2);
        let found = BruteIndex::new(&train).k_nearest(queries.view(), 5, 2);
        assert_eq!(found, exact(&train, &queries, 5));
    }

    #[test]
    fn queries_beyond_f32_and_tables_beyond_f32_are_searched_exactly() {
        let train = table(300, 3, 6);
        let mut queries = table(20, 3, 7);
        queries[[3, 1]] = 1e300;
        queries[[9, 0]] = -1e20;
        let found = BruteIndex::new(&train).k_nearest(queries.view(), 4, 1);
        assert_eq!(found, exact(&train, &queries, 4));
        let mut wide = table(300, 3, 8);
        wide[[10, 2]] = 1e200;
        let found = BruteIndex::new(&wide).k_nearest(queries.view(), 4, 1);
        assert_eq!(found, exact(&wide, &queries, 4));
    }

    #[test]
    fn tiles_of_training_rows_find_what_one_pass_finds() {
        // More rows than a tile and more queries than a block, with ties across tiles.
        let train = table(2 * TRAIN_TILE + 300, 3, 9);
        let queries = table(QUERY_BLOCK + 10, 3, 10);
        let found = BruteIndex::new(&train).k_nearest(queries.view(), 9, 2);
        assert_eq!(found, exact(&train, &queries, 9));
    }

    #[test]
    fn k_beyond_the_training_rows_returns_them_all() {
        let train = table(4, 3, 3);
        let found = BruteIndex::new(&train).k_nearest(table(2, 3, 4).view(), 10, 2);
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|h| h.len() == 4));
    }
}
