//! What sits between the ETL output and a model: task inference, the reversible label encoding,
//! and the preprocessing steps that learn statistics (imputation, category vocabularies,
//! scaling), fitted on training rows only and applied to the rest.

pub mod transform;

use crate::config::{Encode, EtlSpec, Impute, Scale, TaskChoice, TransformChoice};
use crate::data::{present, FeatureValues, Table, TargetValues};
use crate::models::Task;
use anyhow::{bail, Result};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
pub use transform::Transform;

/// Integer targets with at most this many distinct values are treated as classes.
pub const MAX_INFERRED_CLASSES: usize = 20;

/// Decides classification or regression, and says why.
pub fn infer_task(choice: TaskChoice, target: &TargetValues) -> (Task, String) {
    match choice {
        TaskChoice::Classification => (Task::Classification, "set by `task` in the config".into()),
        TaskChoice::Regression => (Task::Regression, "set by `task` in the config".into()),
        TaskChoice::Auto => match target {
            TargetValues::Text(_) => (Task::Classification, "the target is a text column".into()),
            TargetValues::Numeric { values, integral } => {
                let distinct = distinct_sorted(values).len();
                if *integral && distinct <= MAX_INFERRED_CLASSES {
                    (
                        Task::Classification,
                        format!("the target holds whole numbers with {distinct} distinct values (<= {MAX_INFERRED_CLASSES})"),
                    )
                } else if *integral {
                    (Task::Regression, format!("the target holds whole numbers with {distinct} distinct values (> {MAX_INFERRED_CLASSES})"))
                } else {
                    (
                        Task::Regression,
                        "the target holds fractional numbers".into(),
                    )
                }
            }
        },
    }
}

fn distinct_sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// The class labels in their original spelling, in index order: class i is `classes[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelMapping {
    pub classes: Vec<String>,
}

impl LabelMapping {
    pub fn decode(&self, index: usize) -> &str {
        &self.classes[index]
    }
}

fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// Target as model input: class indexes 0..K-1 with their mapping, or plain values.
pub fn encode_target(
    task: Task,
    target: &TargetValues,
) -> Result<(Vec<f64>, Option<LabelMapping>)> {
    match (task, target) {
        (Task::Regression, TargetValues::Numeric { values, .. }) => Ok((values.clone(), None)),
        (Task::Regression, TargetValues::Text(_)) => {
            bail!("regression needs a numeric target, but the target column holds text")
        }
        (Task::Classification, TargetValues::Numeric { values, .. }) => {
            let classes = distinct_sorted(values);
            let y = values
                .iter()
                .map(|v| {
                    // Every value is among its own distinct values: the search finds it.
                    classes
                        .binary_search_by(|c| c.total_cmp(v))
                        .unwrap_or_else(|at| at) as f64
                })
                .collect();
            Ok((
                y,
                Some(LabelMapping {
                    classes: classes.into_iter().map(format_number).collect(),
                }),
            ))
        }
        (Task::Classification, TargetValues::Text(values)) => {
            // The distinct labels only: a copy of every row's label cost a million-row table
            // 50 MB.
            let distinct: std::collections::BTreeSet<&String> = values.iter().collect();
            let classes: Vec<String> = distinct.into_iter().cloned().collect();
            let y = values
                .iter()
                .map(|v| classes.binary_search(v).unwrap_or_else(|at| at) as f64)
                .collect();
            Ok((y, Some(LabelMapping { classes })))
        }
    }
}

/// The transform `choice` fitted on a training fold's (filled) values.
fn fit_transform(choice: Option<&TransformChoice>, values: &[f64]) -> Transform {
    match choice {
        None => Transform::None,
        Some(TransformChoice::Log1p) => Transform::Log1p,
        Some(TransformChoice::Sqrt) => Transform::Sqrt,
        Some(TransformChoice::YeoJohnson) => Transform::YeoJohnson {
            lambda: transform::fit_yeo_johnson(values),
        },
    }
}

/// Checks `etl.transform` before anything trains: every column it names is a numeric input,
/// and its values lie where the transform is defined (log1p above -1, sqrt at 0 or above).
pub fn check_transforms(table: &Table, spec: &EtlSpec, file: &str) -> Result<()> {
    let refuse = |message: String| crate::config::ConfigError {
        file: file.to_string(),
        line: None,
        col: None,
        key: Some("etl.transform".into()),
        message,
    };
    for (name, choice) in &spec.transform {
        let Some(f) = table.features.iter().find(|f| &f.name == name) else {
            let names: Vec<&str> = table.features.iter().map(|f| f.name.as_str()).collect();
            bail!(refuse(format!(
                "no input column \"{name}\"{}",
                crate::suggest::hint(name, &names)
            )));
        };
        let FeatureValues::Numeric(values) = &f.values else {
            bail!(refuse(format!(
                "column \"{name}\" holds text; transforms apply to numbers"
            )));
        };
        let min = values
            .iter()
            .filter_map(|x| present(*x))
            .fold(f64::INFINITY, f64::min);
        let (ok, needs) = match choice {
            TransformChoice::Log1p => (min > -1.0, "values above -1"),
            TransformChoice::Sqrt => (min >= 0.0, "values of 0 or more"),
            TransformChoice::YeoJohnson => (true, ""),
        };
        if !ok {
            bail!(refuse(format!(
                "column \"{name}\" has values down to {min}; {} needs {needs} (\"yeo-johnson\" takes any value)",
                serde_json::to_value(choice).map(|v| v.to_string()).unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// Checks the spec can handle the table's missing values before anything trains.
pub fn check_missing(table: &Table, spec: &EtlSpec, file: &str) -> Result<()> {
    if spec.impute != Impute::None {
        return Ok(());
    }
    for f in &table.features {
        if let FeatureValues::Numeric(_) = f.values {
            let m = f.missing();
            if m > 0 {
                bail!(crate::config::ConfigError {
                    file: file.to_string(),
                    line: None,
                    col: None,
                    key: Some("etl.impute".into()),
                    message: format!("column \"{}\" has {m} missing values; set etl.impute to \"mean\", \"median\" or \"most_frequent\", or drop the column", f.name),
                });
            }
        }
    }
    Ok(())
}

/// What preprocessing does to one input column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ColumnStep {
    /// (value, or `fill` if missing, through `transform`, - `shift`) / `scale`.
    Numeric {
        fill: f64,
        shift: f64,
        scale: f64,
        #[serde(default, skip_serializing_if = "Transform::is_none")]
        transform: Transform,
    },
    OneHot {
        fill: String,
        categories: Vec<String>,
    },
    Ordinal {
        fill: String,
        categories: Vec<String>,
    },
}

/// Preprocessing fitted on one set of training rows; saved with the model so that prediction
/// applies exactly what training saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessor {
    columns: Vec<(String, ColumnStep)>,
    pub output_names: Vec<String>,
}

const MISSING_CATEGORY: &str = "(missing)";

fn mode_f64(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let (mut best, mut best_n, mut i) = (v.first().copied().unwrap_or(0.0), 0, 0);
    while i < v.len() {
        let j = v[i..].iter().take_while(|x| **x == v[i]).count();
        if j > best_n {
            best_n = j;
            best = v[i];
        }
        i += j;
    }
    best
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Preprocessor {
    pub fn fit(table: &Table, rows: &[usize], spec: &EtlSpec) -> Preprocessor {
        let mut columns = Vec::new();
        let mut output_names = Vec::new();
        for f in &table.features {
            match &f.values {
                FeatureValues::Numeric(values) => {
                    let known: Vec<f64> = rows.iter().filter_map(|r| present(values[*r])).collect();
                    let fill = match spec.impute {
                        Impute::Median => median(&known),
                        Impute::MostFrequent => mode_f64(&known),
                        _ => known.iter().sum::<f64>() / known.len().max(1) as f64,
                    };
                    let filled: Vec<f64> = rows
                        .iter()
                        .map(|r| present(values[*r]).unwrap_or(fill))
                        .collect();
                    let transform = fit_transform(spec.transform.get(&f.name), &filled);
                    let filled: Vec<f64> = filled.iter().map(|v| transform.apply(*v)).collect();
                    let n = filled.len().max(1) as f64;
                    let (shift, scale) = match spec.scale {
                        Scale::None => (0.0, 1.0),
                        Scale::Standard => {
                            let mean = filled.iter().sum::<f64>() / n;
                            let var = filled.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
                            (mean, if var > 0.0 { var.sqrt() } else { 1.0 })
                        }
                        Scale::Minmax => {
                            let lo = filled.iter().copied().fold(f64::INFINITY, f64::min);
                            let hi = filled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                            if hi > lo {
                                (lo, hi - lo)
                            } else {
                                (lo.min(0.0).max(lo), 1.0)
                            }
                        }
                    };
                    output_names.push(f.name.clone());
                    let step = ColumnStep::Numeric {
                        fill,
                        shift,
                        scale,
                        transform,
                    };
                    columns.push((f.name.clone(), step));
                }
                FeatureValues::Categorical(values) => {
                    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                    for r in rows {
                        if let Some(v) = &values[*r] {
                            *counts.entry(v.as_str()).or_default() += 1;
                        }
                    }
                    let fill = if spec.impute == Impute::None || counts.is_empty() {
                        MISSING_CATEGORY.to_string()
                    } else {
                        // Most frequent; ties go to the alphabetically first category.
                        let max = counts.values().copied().max().unwrap_or(0);
                        counts
                            .iter()
                            .find(|(_, c)| **c == max)
                            .map_or_else(|| MISSING_CATEGORY.to_string(), |(k, _)| k.to_string())
                    };
                    let mut categories: Vec<String> =
                        counts.keys().map(|k| k.to_string()).collect();
                    if rows.iter().any(|r| values[*r].is_none()) && !categories.contains(&fill) {
                        categories.push(fill.clone());
                        categories.sort();
                    }
                    match spec.encode {
                        Encode::Onehot => {
                            for c in &categories {
                                output_names.push(format!("{}={}", f.name, c));
                            }
                            columns.push((f.name.clone(), ColumnStep::OneHot { fill, categories }));
                        }
                        Encode::Ordinal => {
                            output_names.push(f.name.clone());
                            columns
                                .push((f.name.clone(), ColumnStep::Ordinal { fill, categories }));
                        }
                    }
                }
            }
        }
        Preprocessor {
            columns,
            output_names,
        }
    }

    /// The input columns this preprocessor reads, each with whether it must be numeric.
    pub fn inputs(&self) -> Vec<(String, bool)> {
        self.columns
            .iter()
            .map(|(n, step)| (n.clone(), matches!(step, ColumnStep::Numeric { .. })))
            .collect()
    }

    /// Each input column with what is done to it, in the order of the model's columns.
    pub fn steps(&self) -> &[(String, ColumnStep)] {
        &self.columns
    }

    /// Whether every input is numeric (no category to encode).
    pub fn all_numeric(&self) -> bool {
        (self.columns.iter()).all(|(_, step)| matches!(step, ColumnStep::Numeric { .. }))
    }

    /// The model matrix for `rows`. Categories never seen in training become all-zero one-hot
    /// columns (or -1 as ordinal).
    pub fn transform(&self, table: &Table, rows: &[usize]) -> anyhow::Result<Array2<f64>> {
        let mut out = Array2::zeros((rows.len(), self.output_names.len()));
        let mut j = 0;
        for ((_, step), f) in self.columns.iter().zip(&table.features) {
            match (step, &f.values) {
                (
                    ColumnStep::Numeric {
                        fill,
                        shift,
                        scale,
                        transform,
                    },
                    FeatureValues::Numeric(v),
                ) => {
                    for (i, r) in rows.iter().enumerate() {
                        out[[i, j]] =
                            (transform.apply(present(v[*r]).unwrap_or(*fill)) - shift) / scale;
                    }
                    j += 1;
                }
                (ColumnStep::OneHot { fill, categories }, FeatureValues::Categorical(v)) => {
                    for (i, r) in rows.iter().enumerate() {
                        let val = v[*r].as_deref().unwrap_or(fill);
                        if let Ok(k) = categories.binary_search_by(|c| c.as_str().cmp(val)) {
                            out[[i, j + k]] = 1.0;
                        }
                    }
                    j += categories.len();
                }
                (ColumnStep::Ordinal { fill, categories }, FeatureValues::Categorical(v)) => {
                    for (i, r) in rows.iter().enumerate() {
                        let val = v[*r].as_deref().unwrap_or(fill);
                        out[[i, j]] = categories
                            .binary_search_by(|c| c.as_str().cmp(val))
                            .map(|k| k as f64)
                            .unwrap_or(-1.0);
                    }
                    j += 1;
                }
                (_, values) => anyhow::bail!(
                    "column `{}` holds {} values, but the preprocessing was fitted on {} ones",
                    f.name,
                    if matches!(values, FeatureValues::Numeric(_)) {
                        "numeric"
                    } else {
                        "text"
                    },
                    if matches!(step, ColumnStep::Numeric { .. }) {
                        "numeric"
                    } else {
                        "text"
                    },
                ),
            }
        }
        Ok(out)
    }
}

/// Per-class counts (classification) or summary statistics (regression) of the target.
pub fn target_distribution(
    task: Task,
    y: &[f64],
    labels: Option<&LabelMapping>,
) -> serde_json::Value {
    match (task, labels) {
        (Task::Classification, Some(m)) => {
            let mut counts = vec![0usize; m.classes.len()];
            for v in y {
                counts[*v as usize] += 1;
            }
            let map: serde_json::Map<String, serde_json::Value> = m
                .classes
                .iter()
                .zip(counts)
                .map(|(c, n)| (c.clone(), serde_json::Value::from(n)))
                .collect();
            serde_json::Value::Object(map)
        }
        _ => {
            let n = y.len().max(1) as f64;
            let mean = y.iter().sum::<f64>() / n;
            let std = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            serde_json::json!({
                "count": y.len(),
                "mean": mean,
                "std": std,
                "min": y.iter().copied().fold(f64::INFINITY, f64::min),
                "median": median(y),
                "max": y.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Feature;

    fn table() -> Table {
        Table {
            features: vec![
                Feature {
                    name: "x".into(),
                    dtype: "f64".into(),
                    values: FeatureValues::Numeric(vec![1.0, f64::NAN, 3.0, 100.0]),
                },
                Feature {
                    name: "c".into(),
                    dtype: "str".into(),
                    values: FeatureValues::Categorical(vec![
                        Some("b".into()),
                        Some("a".into()),
                        None,
                        Some("z".into()),
                    ]),
                },
            ],
            target_name: "y".into(),
            target: TargetValues::Text(vec!["no".into(), "yes".into(), "no".into(), "yes".into()]),
            n_rows: 4,
        }
    }

    #[test]
    fn statistics_come_from_training_rows_only() {
        let spec = EtlSpec {
            impute: Impute::Mean,
            scale: Scale::Standard,
            ..Default::default()
        };
        // Row 3 (x = 100, c = "z") is the validation row: it must not move the mean or add a category.
        let p = Preprocessor::fit(&table(), &[0, 1, 2], &spec);
        assert_eq!(p.output_names, vec!["x", "c=a", "c=b"]);
        let m = p.transform(&table(), &[1, 3]).unwrap();
        assert_eq!(
            m[[0, 0]],
            0.0,
            "missing x imputed with the training mean 2.0, standardised to 0"
        );
        assert_eq!(
            (m[[1, 1]], m[[1, 2]]),
            (0.0, 0.0),
            "unseen category z is all zeros"
        );
    }

    #[test]
    fn text_labels_encode_and_decode() {
        let (y, m) = encode_target(Task::Classification, &table().target).unwrap();
        let m = m.unwrap();
        assert_eq!(y, vec![0.0, 1.0, 0.0, 1.0]);
        assert_eq!(m.decode(1), "yes");
    }

    #[test]
    fn wine_grades_encode_to_zero_based_and_back() {
        let t = TargetValues::Numeric {
            values: vec![3.0, 8.0, 5.0, 5.0],
            integral: true,
        };
        let (y, m) = encode_target(Task::Classification, &t).unwrap();
        assert_eq!(y, vec![0.0, 2.0, 1.0, 1.0]);
        assert_eq!(m.unwrap().classes, vec!["3", "5", "8"]);
    }

    #[test]
    fn task_inference_explains_itself() {
        let t = TargetValues::Numeric {
            values: vec![3.0, 4.0, 5.0],
            integral: true,
        };
        let (task, why) = infer_task(TaskChoice::Auto, &t);
        assert_eq!(task, Task::Classification);
        assert!(why.contains("3 distinct"), "{why}");
        let t = TargetValues::Numeric {
            values: vec![0.5, 1.5],
            integral: false,
        };
        assert_eq!(infer_task(TaskChoice::Auto, &t).0, Task::Regression);
    }
}
