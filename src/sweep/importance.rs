//! Permutation importance for every kind: on each validation fold of the first repeat, each
//! input column of the model (after preprocessing) is shuffled in turn with a seeded permutation
//! and the drop in the primary metric is measured; the run reports the mean drop over folds. A
//! feature the model does not use scores about 0; a higher score means the model relies on it.
//! Each column costs one prediction of the fold's validation rows, so a fold of more than
//! [`IMPORTANCE_MAX_ROWS`] rows is measured on a seeded sample of that many.

use super::train::{score, Fitted};
use super::{Prepared, TrainPlan};
use crate::models::Prediction;
use crate::rng::SplitMix64;
use anyhow::Result;
use ndarray::{Array2, ArrayView2, Axis};

/// The most validation rows of a fold the permutation importance predicts (a seeded sample of
/// them beyond it): the drop in accuracy is then known to about 1%.
pub(crate) const IMPORTANCE_MAX_ROWS: usize = 2000;

/// A fold's validation rows as the model reads them, their targets, and the primary metric
/// the model scored on them.
pub(crate) struct Scored<'a> {
    pub x: &'a Array2<f64>,
    pub y: &'a [f64],
    pub baseline: f64,
}

/// The drop in the primary metric when each column of the fold's validation rows is shuffled:
/// (column, drop) in the order of the fold's preprocessor output columns.
pub(crate) fn permutation_drops(
    prep: &Prepared,
    plan: &TrainPlan,
    fitted: &Fitted,
    rows: Scored,
    fold: u64,
) -> Result<Vec<(String, f64)>> {
    let Scored { x, y, baseline } = rows;
    let primary_of = |pred: &Prediction, y: &[f64]| -> f64 {
        let s = score(prep, plan, y, pred);
        s.metrics
            .get(&prep.primary_metric)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let primary = |x: ArrayView2<f64>, y: &[f64]| -> Result<f64> {
        Ok(primary_of(&fitted.model.predict(x)?, y))
    };
    let sign = if crate::config::higher_is_better(&prep.primary_metric) {
        1.0
    } else {
        -1.0
    };
    let sampled;
    let (x, y, baseline) = if x.nrows() > IMPORTANCE_MAX_ROWS {
        let picked = SplitMix64::derive(plan.seed, 0x1A9 ^ (fold << 20))
            .sorted_sample(x.nrows(), IMPORTANCE_MAX_ROWS);
        let ys: Vec<f64> = picked.iter().map(|r| y[*r]).collect();
        sampled = (x.select(Axis(0), &picked), ys);
        let base = primary(sampled.0.view(), &sampled.1)?;
        (&sampled.0, sampled.1.as_slice(), base)
    } else {
        (x, y, baseline)
    };
    // Where the model has a cheaper way to predict rows with one column changed: the same
    // predictions, bit for bit.
    let shuffles = fitted.model.column_shuffles(x.view());
    let mut drops = Vec::with_capacity(x.ncols());
    for j in 0..x.ncols() {
        let mut order: Vec<usize> = (0..x.nrows()).collect();
        SplitMix64::derive(plan.seed, 0x9E47 ^ (fold << 20) ^ j as u64).shuffle(&mut order);
        let mut shuffled = x.clone();
        for (i, from) in order.iter().enumerate() {
            shuffled[[i, j]] = x[[*from, j]];
        }
        let name = fitted
            .preprocessor
            .output_names
            .get(j)
            .cloned()
            .unwrap_or_default();
        let pred = match &shuffles {
            Some(shuffles) => shuffles.predict(shuffled.view(), j)?,
            None => fitted.model.predict(shuffled.view())?,
        };
        drops.push((name, sign * (baseline - primary_of(&pred, y))));
    }
    Ok(drops)
}

/// Each of `names`' mean drop over the folds that had the column (a one-hot column a fold
/// never saw is left out of that fold's mean); 0 for a column no fold had.
pub(crate) fn mean_drops(per_fold: &[Vec<(String, f64)>], names: &[String]) -> Vec<f64> {
    names
        .iter()
        .map(|name| {
            let seen: Vec<f64> = per_fold
                .iter()
                .filter_map(|fold| fold.iter().find(|(n, _)| n == name).map(|(_, d)| *d))
                .collect();
            if seen.is_empty() {
                0.0
            } else {
                seen.iter().sum::<f64>() / seen.len() as f64
            }
        })
        .collect()
}
