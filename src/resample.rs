//! Resampling of a training fold for class imbalance: random over-sampling (minority rows drawn
//! again until every class has as many as the largest), random under-sampling (every class cut
//! to the smallest), and SMOTE (new minority rows on the segment between a row and one of its
//! `k` nearest same-class neighbours). Only a fold's training rows are ever resampled; the
//! plan is a list of [`Sample`]s that name training positions, seeded, so replay rebuilds it.

use crate::rng::SplitMix64;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

/// How a training fold is resampled (the model parameter `resample`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resample {
    None,
    Over,
    Under,
    Smote { k: usize },
}

impl Resample {
    /// From the parameters `resample` and `smote_k`.
    pub fn from_params(resample: &str, smote_k: usize) -> Resample {
        match resample {
            "over" => Resample::Over,
            "under" => Resample::Under,
            "smote" => Resample::Smote { k: smote_k },
            _ => Resample::None,
        }
    }
}

/// One row of the resampled fold, by its position among the fold's training rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    Row(usize),
    /// SMOTE: `a + t * (b - a)`, of `a`'s class.
    Between {
        a: usize,
        b: usize,
        t: f64,
    },
}

/// The positions of each class among `y` (class indices).
fn by_class(y: ArrayView1<f64>) -> Vec<Vec<usize>> {
    let k = y.iter().map(|v| *v as usize + 1).max().unwrap_or(0);
    let mut out = vec![Vec::new(); k];
    for (i, v) in y.iter().enumerate() {
        out[*v as usize].push(i);
    }
    out
}

/// The resampled fold as samples of the training positions of `x` and `y`.
pub fn plan(x: ArrayView2<f64>, y: ArrayView1<f64>, how: Resample, seed: u64) -> Vec<Sample> {
    let classes = by_class(y);
    let present: Vec<&Vec<usize>> = classes.iter().filter(|c| !c.is_empty()).collect();
    let most = present.iter().map(|c| c.len()).max().unwrap_or(0);
    let least = present.iter().map(|c| c.len()).min().unwrap_or(0);
    let mut rng = SplitMix64::derive(seed, 0x005A_3D1E);
    let mut out: Vec<Sample> = Vec::new();
    match how {
        Resample::None => out.extend((0..y.len()).map(Sample::Row)),
        Resample::Under => {
            for rows in &present {
                let mut kept = (*rows).clone();
                rng.shuffle(&mut kept);
                kept.truncate(least);
                kept.sort_unstable();
                out.extend(kept.into_iter().map(Sample::Row));
            }
        }
        Resample::Over => {
            out.extend((0..y.len()).map(Sample::Row));
            for rows in &present {
                for _ in rows.len()..most {
                    out.push(Sample::Row(rows[rng.below(rows.len())]));
                }
            }
        }
        Resample::Smote { k } => {
            out.extend((0..y.len()).map(Sample::Row));
            for rows in &present {
                if rows.len() < 2 {
                    continue; // no neighbour to interpolate with
                }
                let neighbours = nearest_within(x, rows, k);
                for _ in rows.len()..most {
                    let i = rng.below(rows.len());
                    let b = neighbours[i][rng.below(neighbours[i].len())];
                    out.push(Sample::Between {
                        a: rows[i],
                        b,
                        t: rng.next_f64(),
                    });
                }
            }
        }
    }
    out
}

/// For each row of `rows`, its `k` nearest other rows of `rows` (Euclidean; ties to the lower
/// position).
fn nearest_within(x: ArrayView2<f64>, rows: &[usize], k: usize) -> Vec<Vec<usize>> {
    rows.iter()
        .map(|&a| {
            let mut d: Vec<(f64, usize)> = rows
                .iter()
                .filter(|&&b| b != a)
                .map(|&b| {
                    let dist: f64 = (x.row(a).iter().zip(x.row(b).iter()))
                        .map(|(p, q)| (p - q) * (p - q))
                        .sum();
                    (dist, b)
                })
                .collect();
            d.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)));
            d.truncate(k.max(1));
            d.into_iter().map(|(_, b)| b).collect()
        })
        .collect()
}

/// The rows of the plan: copies of training rows, and SMOTE's interpolated ones.
pub fn apply(
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    plan: &[Sample],
) -> (Array2<f64>, Array1<f64>) {
    let mut out = Array2::zeros((plan.len(), x.ncols()));
    let mut labels = Array1::zeros(plan.len());
    for (i, s) in plan.iter().enumerate() {
        match *s {
            Sample::Row(r) => {
                out.row_mut(i).assign(&x.row(r));
                labels[i] = y[r];
            }
            Sample::Between { a, b, t } => {
                let row = &x.row(a) + &((&x.row(b) - &x.row(a)) * t);
                out.row_mut(i).assign(&row);
                labels[i] = y[a];
            }
        }
    }
    (out, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// Nine rows of class 0 and three of class 1.
    fn fold() -> (Array2<f64>, Array1<f64>) {
        let x = Array2::from_shape_fn((12, 2), |(i, j)| (i * 3 + j) as f64);
        let y = Array1::from_iter((0..12).map(|i| f64::from(i % 4 == 3)));
        (x, y)
    }

    fn counts(y: &Array1<f64>) -> (usize, usize) {
        let ones = y.iter().filter(|v| **v == 1.0).count();
        (y.len() - ones, ones)
    }

    #[test]
    fn each_way_balances_the_classes_from_the_folds_own_rows() {
        let (x, y) = fold();
        for how in [Resample::Over, Resample::Under, Resample::Smote { k: 2 }] {
            let p = plan(x.view(), y.view(), how, 7);
            assert_eq!(p, plan(x.view(), y.view(), how, 7), "seeded");
            let (xs, ys) = apply(x.view(), y.view(), &p);
            let (zeros, ones) = counts(&ys);
            assert_eq!(zeros, ones, "{how:?}");
            assert_eq!(xs.nrows(), ys.len());
            for s in &p {
                match *s {
                    Sample::Row(r) => assert!(r < 12),
                    Sample::Between { a, b, t } => {
                        assert!(y[a] == 1.0 && y[b] == 1.0 && a != b && (0.0..1.0).contains(&t))
                    }
                }
            }
        }
        let under = plan(x.view(), y.view(), Resample::Under, 7);
        assert_eq!(under.len(), 6);
        assert_eq!(plan(x.view(), y.view(), Resample::None, 7).len(), 12);
    }

    #[test]
    fn smote_rows_lie_between_two_rows_of_the_class() {
        let x = array![[0.0, 0.0], [10.0, 10.0], [1.0, 1.0], [2.0, 2.0], [5.0, 5.0]];
        let y = array![0.0, 0.0, 1.0, 1.0, 0.0];
        let p = plan(x.view(), y.view(), Resample::Smote { k: 1 }, 3);
        let (xs, ys) = apply(x.view(), y.view(), &p);
        assert_eq!(ys.len(), 6);
        let new = xs.row(5);
        assert_eq!(ys[5], 1.0);
        assert!(new[0] >= 1.0 && new[0] <= 2.0 && new[0] == new[1], "{new}");
    }
}
