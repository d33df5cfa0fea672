//! A forest's predictions of a fixed table with one column changed at a time (the permutation
//! importance), bit for bit the ones [`TreeEnsemble`]'s `predict` gives, for less.
//!
//! Each tree's walk of each fixed row is kept: the leaf it reached and the splits on its path.
//! With column `j` changed, a row keeps its leaf in a tree whose path never tests `j` (or when
//! its value did not change), and otherwise walks again from the first split on its path that
//! tests `j`: the splits above it tested other columns, so they send the row the same way. The
//! leaves are then added exactly as `predict` adds them.

use super::TreeEnsemble;
use crate::models::{ColumnShuffles, Prediction};
use anyhow::{bail, Result};
use ndarray::{Array2, ArrayView2};

/// The most path entries kept (8 bytes each, 64 MiB): a larger forest or table predicts plainly.
const MAX_ENTRIES: usize = 1 << 23;

/// The fixed rows and every tree's walk of each of them.
pub(super) struct Walked<'a> {
    forest: &'a TreeEnsemble,
    fixed: Array2<f64>,
    /// Per tree, then per row: the leaf's node.
    leaves: Vec<u32>,
    /// The splits on each walk's path, root first, as (node, feature); walk `w = tree * rows +
    /// row` holds `path[starts[w]..starts[w + 1]]`.
    path: Vec<(u32, u32)>,
    starts: Vec<usize>,
}

impl<'a> Walked<'a> {
    /// Every tree's walk of every row of `x`; `None` where the walks would take too much memory.
    pub(super) fn new(forest: &'a TreeEnsemble, x: ArrayView2<f64>) -> Option<Walked<'a>> {
        let rows = x.nrows();
        let walks = forest.trees.len() * rows;
        let mut leaves = Vec::with_capacity(walks);
        let mut path = Vec::new();
        let mut starts = Vec::with_capacity(walks + 1);
        starts.push(0);
        for tree in &forest.trees {
            for row in x.outer_iter() {
                let i = tree.walk_from(0, row, |node, feature| {
                    path.push((node as u32, feature as u32));
                });
                if path.len() > MAX_ENTRIES || i > u32::MAX as usize {
                    return None;
                }
                leaves.push(i as u32);
                starts.push(path.len());
            }
        }
        Some(Walked {
            forest,
            fixed: x.to_owned(),
            leaves,
            path,
            starts,
        })
    }

    /// The node tree `t`'s walk of row `i`, its value in `column` changed, starts again from:
    /// the first split on its path that tests `column`, or `None` to keep its leaf.
    fn restart(&self, t: usize, i: usize, column: usize) -> Option<usize> {
        let w = t * self.fixed.nrows() + i;
        let steps = &self.path[self.starts[w]..self.starts[w + 1]];
        let (node, _) = steps.iter().find(|(_, f)| *f as usize == column)?;
        Some(*node as usize)
    }
}

impl ColumnShuffles for Walked<'_> {
    fn predict(&self, x: ArrayView2<f64>, column: usize) -> Result<Prediction> {
        if x.dim() != self.fixed.dim() || column >= x.ncols() {
            bail!("a shuffled table of another shape than the fixed one");
        }
        let rows = x.nrows();
        let changed: Vec<bool> = (0..rows)
            .map(|i| x[[i, column]].to_bits() != self.fixed[[i, column]].to_bits())
            .collect();
        let trees = &self.forest.trees;
        Ok(self.forest.predict_by(rows, |t, i| {
            let tree = &trees[t];
            match changed[i].then(|| self.restart(t, i, column)).flatten() {
                Some(node) => tree.leaf_from(node, x.row(i)),
                None => tree.values(self.leaves[t * rows + i] as usize),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fit_forest;
    use crate::models::{FitContext, ParamValue, Prediction, Task, TrainSet};
    use ndarray::{s, Array1, Array2};

    fn bits(p: &Prediction) -> Vec<u64> {
        let proba = p.proba.iter().flat_map(|a| a.iter().copied());
        (p.values.iter().copied().chain(proba))
            .map(f64::to_bits)
            .collect()
    }

    /// For a classifier and a regressor: with each column shuffled in turn (some rows keeping
    /// their value, as in a column of few distinct values), the walked predictions are
    /// `predict`'s, bit for bit.
    #[test]
    fn walks_started_again_predict_as_the_forest_bit_for_bit() {
        let (n, width) = (300, 5);
        let value = |i: usize, j: usize| match j {
            0 => (i % 4) as f64,
            _ => ((i * (7 + 3 * j) + j * j) % 97) as f64 / 9.0,
        };
        let x = Array2::from_shape_fn((n, width), |(i, j)| value(i, j));
        let classes =
            Array1::from_shape_fn(n, |i| ((value(i, 1) + value(i, 0)) as usize % 3) as f64);
        let amounts = Array1::from_shape_fn(n, |i| value(i, 2) * 2.0 - value(i, 3));
        let cfg = crate::models::test_config("random_forest", &[("n_trees", ParamValue::Int(20))]);
        for (task, y, n_classes) in [
            (Task::Classification, &classes, 3),
            (Task::Regression, &amounts, 0),
        ] {
            let data = TrainSet {
                x: x.view(),
                y: y.view(),
                task,
                n_classes,
                labels: None,
            };
            let model = fit_forest(&cfg, &data, &FitContext::new(3, 1)).unwrap();
            let fixed = x.slice(s![..80, ..]).to_owned();
            let shuffles = model
                .column_shuffles(fixed.view())
                .expect("a forest walks its rows");
            for j in 0..width {
                let mut shuffled = fixed.clone();
                for i in 0..fixed.nrows() {
                    shuffled[[i, j]] = fixed[[(i * 37 + 11) % fixed.nrows(), j]];
                }
                let plain = model.predict(shuffled.view()).unwrap();
                let walked = shuffles.predict(shuffled.view(), j).unwrap();
                assert_eq!(bits(&plain), bits(&walked), "{task:?}, column {j}");
            }
        }
    }
}
