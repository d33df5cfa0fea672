//! `runner eda`: what the data looks like before any model sees it. Target distribution and
//! imbalance, per-feature statistics with skew flags and suggested transforms, correlations,
//! and cluster-to-target diagnostics (k-means on the standardised features against the classes:
//! contingency table, purity, adjusted Rand index, normalised mutual information; k-means from
//! linfa-clustering). Logged as one MLflow run tagged as EDA and linked to the ETL version.

use crate::data::{present, FeatureValues};
use crate::models::Task;
use crate::prepare::Prepared;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FeatureStats {
    pub name: String,
    pub dtype: String,
    pub missing_share: f64,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// 5th, 25th, 50th, 75th and 95th percentiles.
    pub quantiles: [f64; 5],
    pub skewness: f64,
    /// Excess kurtosis (0 for a normal distribution).
    pub kurtosis: f64,
    pub corr_with_target: f64,
    /// Set when |skewness| > 1: the transform that would help.
    pub suggested_transform: Option<String>,
}

/// The population moments of `v` from ndarray-stats: (m2, skewness m3 / m2^1.5, kurtosis
/// m4 / m2^2); all 0 for a constant or empty column.
fn moments(v: &[f64]) -> (f64, f64, f64) {
    use ndarray_stats::SummaryStatisticsExt;
    let a = ndarray::ArrayView1::from(v);
    let m2 = a.central_moment(2).unwrap_or(0.0);
    if m2 <= 0.0 || !m2.is_finite() {
        return (0.0, 0.0, 0.0);
    }
    let skew = a.skewness().unwrap_or(0.0);
    let kurt = a.kurtosis().unwrap_or(0.0);
    (m2, skew, kurt)
}

/// Sample skewness g1 = m3 / m2^1.5 (population moments).
pub fn skewness(v: &[f64]) -> f64 {
    moments(v).1
}

/// Excess kurtosis g2 = m4 / m2^2 - 3.
pub fn kurtosis(v: &[f64]) -> f64 {
    let (m2, _, k) = moments(v);
    if m2 == 0.0 {
        0.0
    } else {
        k - 3.0
    }
}

/// Pearson's correlation, written out: ndarray-stats has it only for the rows of a matrix.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        0.0
    } else {
        cov / (va * vb).sqrt()
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn choose2(n: f64) -> f64 {
    n * (n - 1.0) / 2.0
}

/// Adjusted Rand index of two labelings (Hubert and Arabie 1985).
pub fn adjusted_rand_index(a: &[usize], b: &[usize]) -> f64 {
    let table = contingency(a, b);
    let n = a.len() as f64;
    let sum_ij: f64 = table.values().map(|c| choose2(*c as f64)).sum();
    let mut rows: BTreeMap<usize, f64> = BTreeMap::new();
    let mut cols: BTreeMap<usize, f64> = BTreeMap::new();
    for ((i, j), c) in &table {
        *rows.entry(*i).or_default() += *c as f64;
        *cols.entry(*j).or_default() += *c as f64;
    }
    let sa: f64 = rows.values().map(|c| choose2(*c)).sum();
    let sb: f64 = cols.values().map(|c| choose2(*c)).sum();
    let expected = sa * sb / choose2(n);
    let max = (sa + sb) / 2.0;
    if max == expected {
        1.0
    } else {
        (sum_ij - expected) / (max - expected)
    }
}

/// Normalised mutual information, arithmetic normalisation: I / ((H(a) + H(b)) / 2).
pub fn normalized_mutual_information(a: &[usize], b: &[usize]) -> f64 {
    let table = contingency(a, b);
    let n = a.len() as f64;
    let mut rows: BTreeMap<usize, f64> = BTreeMap::new();
    let mut cols: BTreeMap<usize, f64> = BTreeMap::new();
    for ((i, j), c) in &table {
        *rows.entry(*i).or_default() += *c as f64;
        *cols.entry(*j).or_default() += *c as f64;
    }
    let h = |m: &BTreeMap<usize, f64>| -> f64 {
        m.values()
            .map(|c| {
                let p = c / n;
                -p * p.ln()
            })
            .sum()
    };
    let mi: f64 = table
        .iter()
        .map(|((i, j), c)| {
            let p = *c as f64 / n;
            p * (p / ((rows[i] / n) * (cols[j] / n))).ln()
        })
        .sum();
    let (ha, hb) = (h(&rows), h(&cols));
    if ha + hb == 0.0 {
        1.0
    } else {
        mi / ((ha + hb) / 2.0)
    }
}

fn contingency(a: &[usize], b: &[usize]) -> BTreeMap<(usize, usize), usize> {
    let mut t = BTreeMap::new();
    for (x, y) in a.iter().zip(b) {
        *t.entry((*x, *y)).or_default() += 1;
    }
    t
}

/// The most rows k-means is fitted on; every row is then assigned to its nearest centroid
/// (fitting on a million rows took minutes for a diagnostic).
const KMEANS_MAX_ROWS: usize = 20_000;

/// k-means (linfa-clustering: k-means++ initialisation, 10 runs, the best by inertia), its
/// generator seeded from the config's seed so the clusters are the same on every run; fitted
/// on a seeded sample of [`KMEANS_MAX_ROWS`] rows of a larger table.
pub fn kmeans(x: &ndarray::Array2<f64>, k: usize, seed: u64) -> anyhow::Result<Vec<usize>> {
    use linfa::prelude::*;
    use rand_xoshiro::rand_core::SeedableRng;
    let rng = rand_xoshiro::Xoshiro256Plus::seed_from_u64(seed);
    let fitted_on = if x.nrows() > KMEANS_MAX_ROWS {
        let picked =
            crate::rng::SplitMix64::derive(seed, 0xC1).sorted_sample(x.nrows(), KMEANS_MAX_ROWS);
        x.select(ndarray::Axis(0), &picked)
    } else {
        x.clone()
    };
    let ds = linfa::DatasetBase::from(fitted_on);
    let model = linfa_clustering::KMeans::params_with_rng(k, rng)
        .max_n_iterations(300)
        .tolerance(1e-6)
        .fit(&ds)
        .map_err(|e| anyhow::anyhow!("k-means (k = {k}): {e}"))?;
    Ok(model.predict(x).to_vec())
}

#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub k: usize,
    /// contingency[cluster][class]
    pub contingency: Vec<Vec<usize>>,
    pub purity: f64,
    pub adjusted_rand_index: f64,
    pub normalized_mutual_information: f64,
    /// Per class: the share of its rows in clusters whose majority is another class.
    pub misplaced_share: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct EdaReport {
    pub etl_version: String,
    pub rows: usize,
    pub task: Task,
    pub target: String,
    pub target_counts: BTreeMap<String, usize>,
    pub imbalance_ratio: Option<f64>,
    pub warnings: Vec<String>,
    pub features: Vec<FeatureStats>,
    /// The most correlated feature pairs, strongest first.
    pub top_pairs: Vec<(String, String, f64)>,
    pub clusters: Vec<ClusterReport>,
}

/// Rows per class and the largest-to-smallest ratio, with a warning per rare class.
fn class_balance(
    prep: &Prepared,
    warnings: &mut Vec<String>,
) -> (BTreeMap<String, usize>, Option<f64>) {
    let Some(l) = &prep.labels else {
        return (BTreeMap::new(), None);
    };
    let n = prep.table.n_rows;
    let mut counts = vec![0usize; l.classes.len()];
    for y in &prep.y {
        counts[*y as usize] += 1;
    }
    let max = counts.iter().max().copied().unwrap_or(0);
    let min = counts.iter().min().copied().unwrap_or(0);
    for (c, k) in l.classes.iter().zip(&counts) {
        if (*k as f64) < 0.02 * n as f64 || *k < 20 {
            warnings.push(format!(
                "class {c} has only {k} rows ({:.1} %): stratified folds keep it in every fold, but expect unstable per-class scores; try class_weight = \"balanced\", or merge it with a neighbouring class",
                100.0 * *k as f64 / n as f64
            ));
        }
    }
    let counts = l.classes.iter().cloned().zip(counts).collect();
    (counts, (min > 0).then(|| max as f64 / min as f64))
}

/// The statistics of one numeric feature (its present values), with a warning when it is
/// heavily skewed.
fn feature_stats(
    prep: &Prepared,
    f: &crate::data::Feature,
    values: &[f64],
    warnings: &mut Vec<String>,
) -> Option<FeatureStats> {
    let n = prep.table.n_rows;
    let known: Vec<f64> = values.iter().filter_map(|x| present(*x)).collect();
    if known.is_empty() {
        return None;
    }
    let mut sorted = known.clone();
    sorted.sort_by(f64::total_cmp);
    let mean = known.iter().sum::<f64>() / known.len() as f64;
    let var = known.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / known.len() as f64;
    let skew = skewness(&known);
    let target: Vec<f64> = (0..n)
        .filter(|i| !values[*i].is_nan())
        .map(|i| prep.y[i])
        .collect();
    let suggested_transform = (skew.abs() > 1.0).then(|| {
        let (t, why) = if sorted[0] >= 0.0 && skew > 0.0 {
            ("log1p", "right-skewed, non-negative")
        } else {
            ("yeo-johnson", "skewed, with negative values or to the left")
        };
        format!(
            "{t} ({why}): add `transform = {{ \"{}\" = \"{t}\" }}` under [etl]",
            f.name
        )
    });
    if let Some(t) = &suggested_transform {
        warnings.push(format!(
            "feature \"{}\" is heavily skewed (skewness {skew:.2}): consider {t}",
            f.name
        ));
    }
    Some(FeatureStats {
        name: f.name.clone(),
        dtype: f.dtype.clone(),
        missing_share: f.missing() as f64 / n as f64,
        mean,
        std: var.sqrt(),
        min: sorted[0],
        max: sorted[sorted.len() - 1],
        quantiles: [0.05, 0.25, 0.5, 0.75, 0.95].map(|q| quantile(&sorted, q)),
        skewness: skew,
        kurtosis: kurtosis(&known),
        corr_with_target: pearson(&known, &target),
        suggested_transform,
    })
}

/// The five most correlated pairs of (mean-imputed) columns, strongest first.
fn top_correlated_pairs(columns: &[(String, Vec<f64>)]) -> Vec<(String, String, f64)> {
    let mut pairs = Vec::new();
    for (i, (a, va)) in columns.iter().enumerate() {
        for (b, vb) in &columns[i + 1..] {
            pairs.push((a.clone(), b.clone(), pearson(va, vb)));
        }
    }
    pairs.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
    pairs.truncate(5);
    pairs
}

/// How one k-means clustering lines up with the classes.
fn cluster_report(
    assign: &[usize],
    classes: &[usize],
    labels: &[String],
    k: usize,
) -> ClusterReport {
    let kc = labels.len();
    let mut table = vec![vec![0usize; kc]; k];
    for (a, c) in assign.iter().zip(classes) {
        table[*a][*c] += 1;
    }
    let majority: Vec<usize> = table
        .iter()
        .map(|row| crate::models::argmax(row.iter().map(|v| *v as f64)))
        .collect();
    let biggest: usize = table
        .iter()
        .map(|row| row.iter().max().copied().unwrap_or(0))
        .sum();
    let mut misplaced_share = BTreeMap::new();
    for (c, label) in labels.iter().enumerate() {
        let total: usize = table.iter().map(|row| row[c]).sum();
        let wrong: usize = table
            .iter()
            .zip(&majority)
            .filter(|(_, m)| **m != c)
            .map(|(row, _)| row[c])
            .sum();
        let share = if total > 0 {
            wrong as f64 / total as f64
        } else {
            0.0
        };
        misplaced_share.insert(label.clone(), share);
    }
    ClusterReport {
        k,
        contingency: table,
        purity: biggest as f64 / classes.len().max(1) as f64,
        adjusted_rand_index: adjusted_rand_index(assign, classes),
        normalized_mutual_information: normalized_mutual_information(assign, classes),
        misplaced_share,
    }
}

/// k-means on the standardised columns with k = 2, K and 2K (K classes), each compared with
/// the classes; a k that fails is a warning.
fn cluster_reports(
    prep: &Prepared,
    columns: &[(String, Vec<f64>)],
    warnings: &mut Vec<String>,
) -> Vec<ClusterReport> {
    let Some(l) = &prep.labels else {
        return Vec::new();
    };
    let n = prep.table.n_rows;
    let stats: Vec<(f64, f64)> = columns
        .iter()
        .map(|(_, v)| {
            let m = v.iter().sum::<f64>() / n as f64;
            let s = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64).sqrt();
            (m, if s > 0.0 { s } else { 1.0 })
        })
        .collect();
    let rows = ndarray::Array2::from_shape_fn((n, columns.len()), |(i, j)| {
        (columns[j].1[i] - stats[j].0) / stats[j].1
    });
    let classes: Vec<usize> = prep.y.iter().map(|v| *v as usize).collect();
    let kc = l.classes.len();
    let mut ks = vec![2, kc, 2 * kc];
    ks.sort();
    ks.dedup();
    let mut clusters = Vec::new();
    for k in ks {
        match kmeans(&rows, k, prep.loaded.config.seed) {
            Ok(assign) => clusters.push(cluster_report(&assign, &classes, &l.classes, k)),
            Err(_) => warnings.push(format!(
                "k-means with k = {k} failed on these rows; no cluster diagnostics for it"
            )),
        }
    }
    clusters
}

/// Computes the report on the ETL output of a prepared config.
pub fn analyse(prep: &Prepared, etl_version: &str) -> EdaReport {
    let n = prep.table.n_rows;
    let mut warnings = Vec::new();
    let (target_counts, imbalance_ratio) = class_balance(prep, &mut warnings);
    let mut features = Vec::new();
    let mut columns: Vec<(String, Vec<f64>)> = Vec::new();
    for f in &prep.table.features {
        let FeatureValues::Numeric(values) = &f.values else {
            continue;
        };
        let Some(stats) = feature_stats(prep, f, values, &mut warnings) else {
            continue;
        };
        // Mean-imputed column for pairwise statistics and clustering.
        let mean = stats.mean;
        columns.push((
            f.name.clone(),
            values.iter().map(|v| present(*v).unwrap_or(mean)).collect(),
        ));
        features.push(stats);
    }
    let top_pairs = top_correlated_pairs(&columns);
    let clusters = cluster_reports(prep, &columns, &mut warnings);
    EdaReport {
        etl_version: etl_version.to_string(),
        rows: n,
        task: prep.task,
        target: prep.table.target_name.clone(),
        target_counts,
        imbalance_ratio,
        warnings,
        features,
        top_pairs,
        clusters,
    }
}

/// The report as Markdown (the EDA run's `eda_report.md`).
pub fn markdown(r: &EdaReport) -> String {
    let mut s = format!(
        "# EDA of ETL {}\n\n{} rows, target `{}` ({}).\n\n",
        r.etl_version, r.rows, r.target, r.task
    );
    if !r.target_counts.is_empty() {
        s.push_str("## Target distribution\n\n| class | rows | share |\n|---|---|---|\n");
        for (c, k) in &r.target_counts {
            s.push_str(&format!(
                "| {c} | {k} | {:.1} % |\n",
                100.0 * *k as f64 / r.rows as f64
            ));
        }
        if let Some(ir) = r.imbalance_ratio {
            s.push_str(&format!(
                "\nImbalance ratio (largest / smallest class): {ir:.1}\n"
            ));
        }
    }
    if !r.warnings.is_empty() {
        s.push_str("\n## Warnings\n\n");
        for w in &r.warnings {
            s.push_str(&format!("- {w}\n"));
        }
    }
    s.push_str("\n## Features\n\n| feature | missing | mean | std | min | p50 | max | skew | kurtosis | corr(target) |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for f in &r.features {
        s.push_str(&format!(
            "| {} | {:.1} % | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.2} | {:.2} | {:.3} |\n",
            f.name,
            100.0 * f.missing_share,
            f.mean,
            f.std,
            f.min,
            f.quantiles[2],
            f.max,
            f.skewness,
            f.kurtosis,
            f.corr_with_target
        ));
    }
    s.push_str("\n## Most correlated feature pairs\n\n");
    for (a, b, c) in &r.top_pairs {
        s.push_str(&format!("- {a} ~ {b}: {c:.3}\n"));
    }
    for c in &r.clusters {
        s.push_str(&format!(
            "\n## k-means, k = {} (standardised features)\n\npurity {:.3}, adjusted Rand index {:.3}, normalised mutual information {:.3}\n\nShare of each class in clusters led by another class: {}\n",
            c.k,
            c.purity,
            c.adjusted_rand_index,
            c.normalized_mutual_information,
            c.misplaced_share.iter().map(|(k, v)| format!("{k}: {:.0} %", 100.0 * v)).collect::<Vec<_>>().join(", ")
        ));
    }
    s
}

/// The EDA pictures: target distribution, one histogram per feature, the correlation heatmap
/// and the cluster-against-class heatmap for k = number of classes.
pub fn plots(prep: &Prepared, r: &EdaReport) -> Vec<(String, String)> {
    use crate::plot;
    let mut out = Vec::new();
    if r.target_counts.is_empty() {
        out.push((
            "target_distribution.svg".into(),
            plot::histogram(&format!("Target {}", r.target), &prep.y, 20),
        ));
    } else {
        let labels: Vec<String> = r.target_counts.keys().cloned().collect();
        let counts: Vec<f64> = r.target_counts.values().map(|c| *c as f64).collect();
        out.push((
            "target_distribution.svg".into(),
            plot::bar_chart(
                &format!("Target {}", r.target),
                "rows",
                &labels,
                &counts,
                None,
            ),
        ));
    }
    let mut columns: Vec<(String, Vec<f64>)> = Vec::new();
    for f in &prep.table.features {
        if let FeatureValues::Numeric(v) = &f.values {
            let known: Vec<f64> = v.iter().filter_map(|x| present(*x)).collect();
            if known.is_empty() {
                continue;
            }
            out.push((
                format!(
                    "hist_{}.svg",
                    crate::track::sanitize(&f.name).replace(' ', "_")
                ),
                plot::histogram(&f.name, &known, 20),
            ));
            let mean = known.iter().sum::<f64>() / known.len() as f64;
            columns.push((
                f.name.clone(),
                v.iter().map(|x| present(*x).unwrap_or(mean)).collect(),
            ));
        }
    }
    let names: Vec<String> = columns.iter().map(|c| c.0.clone()).collect();
    let corr: Vec<Vec<f64>> = columns
        .iter()
        .map(|a| columns.iter().map(|b| pearson(&a.1, &b.1)).collect())
        .collect();
    out.push((
        "correlation_heatmap.svg".into(),
        plot::heatmap(
            "Feature correlations (Pearson)",
            &names,
            &names,
            &corr,
            "",
            "",
        ),
    ));
    if let (Some(l), Some(c)) = (
        &prep.labels,
        r.clusters
            .iter()
            .find(|c| Some(c.k) == prep.labels.as_ref().map(|l| l.classes.len())),
    ) {
        let rows: Vec<String> = (0..c.k).map(|i| format!("cluster {i}")).collect();
        let m: Vec<Vec<f64>> = c
            .contingency
            .iter()
            .map(|r| r.iter().map(|v| *v as f64).collect())
            .collect();
        out.push((
            "clusters_vs_target.svg".into(),
            plot::heatmap(
                &format!("k-means (k = {}) against the classes", c.k),
                &rows,
                &l.classes,
                &m,
                "cluster",
                "class",
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewness_and_kurtosis_match_hand_computed_values() {
        // 1, 2, 3, 10: mean 4, m2 = 12.5, m3 = (-27 - 8 - 1 + 216) / 4 = 45 -> g1 = 45 / 12.5^1.5
        assert!((skewness(&[1.0, 2.0, 3.0, 10.0]) - 1.018_233_765).abs() < 1e-6);
        // m4 = (81 + 16 + 1 + 1296) / 4 = 348.5 -> g2 = 348.5 / 156.25 - 3 = -0.7696
        assert!((kurtosis(&[1.0, 2.0, 3.0, 10.0]) + 0.769_6).abs() < 1e-6);
        assert_eq!(skewness(&[2.0, 2.0]), 0.0);
    }

    #[test]
    fn adjusted_rand_index_known_answers() {
        assert_eq!(
            adjusted_rand_index(&[0, 0, 1, 1], &[1, 1, 0, 0]),
            1.0,
            "a relabelling is a perfect match"
        );
        // scikit-learn: adjusted_rand_score([0, 0, 1, 1], [0, 0, 1, 2]) = 0.5714285714
        assert!((adjusted_rand_index(&[0, 0, 1, 1], &[0, 0, 1, 2]) - 0.571_428_571_4).abs() < 1e-9);
        // adjusted_rand_score([0, 0, 0, 0], [0, 1, 2, 3]) = 0.0
        assert_eq!(adjusted_rand_index(&[0, 0, 0, 0], &[0, 1, 2, 3]), 0.0);
    }

    #[test]
    fn normalized_mutual_information_known_answers() {
        assert!((normalized_mutual_information(&[0, 0, 1, 1], &[1, 1, 0, 0]) - 1.0).abs() < 1e-12);
        // scikit-learn (arithmetic): normalized_mutual_info_score([0, 0, 1, 1], [0, 0, 1, 2]) = 0.8
        assert!((normalized_mutual_information(&[0, 0, 1, 1], &[0, 0, 1, 2]) - 0.8).abs() < 1e-9);
    }

    #[test]
    fn kmeans_finds_separated_blobs_reproducibly() {
        let x = ndarray::Array2::from_shape_fn((30, 2), |(i, j)| {
            let o = (i % 3) as f64 * 10.0;
            if j == 0 {
                o + i as f64 * 0.01
            } else {
                o - i as f64 * 0.02
            }
        });
        let a = kmeans(&x, 3, 7).unwrap();
        assert_eq!(a, kmeans(&x, 3, 7).unwrap());
        let truth: Vec<usize> = (0..30).map(|i| i % 3).collect();
        assert_eq!(adjusted_rand_index(&a, &truth), 1.0);
    }

    /// A table beyond the fitting sample still gets every row assigned, and the right blobs.
    #[test]
    fn kmeans_on_a_large_table_fits_a_sample_and_assigns_every_row() {
        let n = KMEANS_MAX_ROWS + 7_000;
        let x = ndarray::Array2::from_shape_fn((n, 2), |(i, j)| {
            (i % 3) as f64 * 10.0 + ((i * (j + 3)) % 101) as f64 * 0.01
        });
        let a = kmeans(&x, 3, 7).unwrap();
        assert_eq!(a.len(), n);
        let truth: Vec<usize> = (0..n).map(|i| i % 3).collect();
        assert_eq!(adjusted_rand_index(&a, &truth), 1.0);
        assert_eq!(a, kmeans(&x, 3, 7).unwrap());
    }
}
