//! The data side of a sweep, before anything trains or is written: the config's input read and
//! its ETL run through polars, the task inferred, labels encoded, the data checked learnable,
//! and the ETL's identity (the key and record of its version).

use crate::config::{self, ConfigError, LoadedConfig};
use crate::data::{self, InputRef, Table};
use crate::etl::{self, LabelMapping};
use crate::models::{self, Task};
use crate::track::DatasetInput;
use crate::types::RUNNER_VERSION;
use anyhow::{Context, Result};
use serde_json::json;

/// The data side of a sweep, ready to train on: everything checked, nothing written yet.
pub struct Prepared {
    pub loaded: LoadedConfig,
    pub input: InputRef,
    /// The ETL output's columns and types, without rows: `table` holds the values (a
    /// million-row frame kept beside it cost 40 MB for three columns).
    pub etl_schema: polars::prelude::DataFrame,
    pub table: Table,
    pub task: Task,
    pub task_reason: String,
    pub y: Vec<f64>,
    pub labels: Option<LabelMapping>,
    pub etl_key: String,
    pub etl_record: serde_json::Value,
    pub primary_metric: String,
    /// Regression: the target's bins for the per-bin MAE.
    pub target_bins: crate::eval::TargetBins,
    /// `cv.assignments`: each row's fixed fold, and the file's sha256.
    pub folds_file: Option<crate::folds_file::Assignment>,
}

impl Prepared {
    /// Each row's fold from `cv.assignments`, if the config names a folds file.
    pub fn fixed_folds(&self) -> Option<&[usize]> {
        self.folds_file.as_ref().map(|f| f.fold_of.as_slice())
    }
}

pub fn primary_metric(loaded: &LoadedConfig, task: Task) -> Result<String> {
    let default = match task {
        Task::Classification => "accuracy",
        Task::Regression => "mae",
    };
    let m = loaded
        .config
        .primary_metric
        .clone()
        .unwrap_or_else(|| default.to_string());
    let valid = match task {
        Task::Classification => config::CLASSIFICATION_METRICS,
        Task::Regression => config::REGRESSION_METRICS,
    };
    if !valid.contains(&m.as_str()) {
        return Err(metric_error(
            loaded,
            format!(
                "\"{m}\" is not a {task} metric; valid: {}{}",
                models::quoted_list(valid),
                crate::suggest::hint(&m, valid)
            ),
        ));
    }
    Ok(m)
}

/// An error about the config's `primary_metric`, at its line.
fn metric_error(loaded: &LoadedConfig, message: String) -> anyhow::Error {
    let src = &loaded.text;
    let pos = config::locate(src, None, None, "primary_metric");
    ConfigError {
        file: loaded.path.display().to_string(),
        line: pos.map(|p| p.0),
        col: pos.map(|p| p.1),
        key: Some("primary_metric".into()),
        message,
    }
    .into()
}

/// Loads the data and runs the stateless ETL for a checked config, from a given input.
pub fn build_etl(
    loaded: &LoadedConfig,
    input: &InputRef,
) -> Result<(polars::prelude::DataFrame, Table)> {
    let c = &loaded.config;
    run_etl(
        &c.etl,
        &c.data.target,
        input,
        &loaded.path.display().to_string(),
    )
}

/// Runs an ETL spec on an input; `origin` names the config (or store record) in errors.
pub fn run_etl(
    spec: &crate::config::EtlSpec,
    target: &str,
    input: &InputRef,
    origin: &str,
) -> Result<(polars::prelude::DataFrame, Table)> {
    let df = data::read_source(&input.uri)?;
    let out = data::apply_stateless(df, spec, target, origin)?;
    if out.height() == 0 {
        anyhow::bail!("{origin}: the ETL leaves no rows (check etl.filter)");
    }
    let table = data::to_table(&out, target)?;
    if table.features.is_empty() {
        anyhow::bail!("{origin}: the ETL leaves no feature columns besides the target");
    }
    etl::check_missing(&table, spec, origin)?;
    etl::check_transforms(&table, spec, origin)?;
    Ok((out, table))
}

/// The ETL version's identity: the same spec on the same input content reuses its number.
pub fn etl_identity(loaded: &LoadedConfig, input: &InputRef) -> (String, serde_json::Value) {
    let c = &loaded.config;
    let spec = json!({"source": c.data.source, "target": c.data.target, "etl": c.etl});
    let key = data::sha256_hex(format!("{}\n{}", spec, input.sha256).as_bytes());
    (key, spec)
}

pub fn prepare(loaded: LoadedConfig) -> Result<Prepared> {
    let input = data::input_ref(&loaded)?;
    prepare_from(loaded, input)
}

/// A mistake in the data found while preparing (a file polars cannot parse, a cast that fails,
/// a filter that leaves no rows...) is the user's to fix, found before anything is written:
/// it becomes a [`ConfigError`] (exit 2) that names the config, keeping the cause's text.
fn as_data_error(loaded: &LoadedConfig, e: anyhow::Error) -> anyhow::Error {
    if e.downcast_ref::<ConfigError>().is_some() {
        return e;
    }
    ConfigError::new(loaded.path.display().to_string(), format!("{e:#}")).into()
}

/// Data that cannot be learned from: more folds than rows, one class, or a class too small for
/// stratified folds. Names the key to change.
fn check_learnable(
    loaded: &LoadedConfig,
    task: Task,
    y: &[f64],
    labels: Option<&LabelMapping>,
) -> Result<()> {
    let cv = &loaded.config.cv;
    let file = loaded.path.display().to_string();
    let src = &loaded.text;
    let at = |table: &str, key: &str| config::locate(src, Some(table), None, key);
    let fail = |table: &str, key: &str, message: String| -> Result<()> {
        let pos = at(table, key);
        Err(ConfigError {
            file: file.clone(),
            line: pos.map(|p| p.0),
            col: pos.map(|p| p.1),
            key: Some(format!("{table}.{key}")),
            message,
        }
        .into())
    };
    let target = &loaded.config.data.target;
    if y.len() < cv.folds {
        return fail(
            "cv",
            "folds",
            format!(
                "{} folds need at least {} rows; the data has {} after the ETL",
                cv.folds,
                cv.folds,
                y.len()
            ),
        );
    }
    let Some(labels) = labels.filter(|_| task == Task::Classification) else {
        return Ok(());
    };
    let mut counts = vec![0usize; labels.classes.len()];
    for v in y {
        counts[*v as usize] += 1;
    }
    let present: Vec<usize> = (0..counts.len()).filter(|c| counts[*c] > 0).collect();
    if present.len() < 2 {
        let only = present.first().map(|c| labels.decode(*c)).unwrap_or("");
        return fail("data", "target", format!("column \"{target}\" has a single class (\"{only}\") after the ETL; classification needs at least two"));
    }
    if cv.stratified {
        if let Some(c) = present.iter().find(|c| counts[**c] < cv.folds) {
            return fail("cv", "folds", format!("class \"{}\" of column \"{target}\" has {} rows, fewer than the {} stratified folds need (one per fold); lower cv.folds, set cv.stratified = false, or filter the class out with etl.filter", labels.decode(*c), counts[*c], cv.folds));
        }
    }
    Ok(())
}

/// Prepares a sweep on a given input (replays pass the recorded, verified one).
pub fn prepare_from(loaded: LoadedConfig, input: InputRef) -> Result<Prepared> {
    let (etl_df, mut table) = build_etl(&loaded, &input).map_err(|e| as_data_error(&loaded, e))?;
    let (task, task_reason) = etl::infer_task(loaded.config.task, &table.target);
    let (y, labels) = etl::encode_target(task, &table.target)
        .with_context(|| format!("target \"{}\"", loaded.config.data.target))
        .map_err(|e| as_data_error(&loaded, e))?;
    check_learnable(&loaded, task, &y, labels.as_ref())?;
    let primary_metric = primary_metric(&loaded, task)?;
    let classes = labels.as_ref().map_or(0, |l| l.classes.len());
    if config::BINARY_METRICS.contains(&primary_metric.as_str()) && classes != 2 {
        return Err(metric_error(&loaded, format!("\"{primary_metric}\" scores the second of two classes; the data has {classes} classes: use f1_macro or f1_weighted")));
    }
    let folds_file = crate::folds_file::load(&loaded, &input, &etl_df)?;
    // The frame's values are in `table` now: only its columns and types are kept.
    let etl_schema = etl_df.clear();
    drop(etl_df);
    let (etl_key, spec) = etl_identity(&loaded, &input);
    let etl_record = json!({
        "spec": spec,
        "spec_toml": toml::to_string(&json_to_toml_etl(&loaded)).unwrap_or_default(),
        "input": input,
        "schema": data::schema_of(&etl_schema),
        "n_rows": table.n_rows,
        "n_cols": etl_schema.width(),
        "target_distribution": etl::target_distribution(task, &y, labels.as_ref()),
        "fingerprint": data::fingerprint(&table),
        "runner_version": RUNNER_VERSION,
    });
    table.release_target();
    let target_bins = bins_of(&loaded, task, &y);
    crate::memory::release_free();
    Ok(Prepared {
        loaded,
        input,
        etl_schema,
        table,
        task,
        task_reason,
        y,
        labels,
        etl_key,
        etl_record,
        primary_metric,
        target_bins,
        folds_file,
    })
}

/// The bins of the per-bin MAE for the config's target values (a regression's; classes need
/// none).
fn bins_of(loaded: &LoadedConfig, task: Task, y: &[f64]) -> crate::eval::TargetBins {
    if task == Task::Classification {
        return crate::eval::TargetBins::ByValue;
    }
    let cv = &loaded.config.cv;
    let edges = cv.regression_bin_edges.as_deref();
    crate::eval::target_bins(y, cv.regression_bins, edges)
}

/// The `[data]` and `[etl]` tables as TOML (the ETL's source, recorded with its version); a
/// table TOML cannot write is left out.
fn json_to_toml_etl(loaded: &LoadedConfig) -> toml::Table {
    let mut t = toml::Table::new();
    if let Ok(data) = toml::Value::try_from(&loaded.config.data) {
        t.insert("data".into(), data);
    }
    if let Ok(etl) = toml::Value::try_from(&loaded.config.etl) {
        t.insert("etl".into(), etl);
    }
    t
}

fn mlflow_type(polars_dtype: &str) -> &'static str {
    match polars_dtype {
        "f64" | "f32" => "double",
        "i64" | "u64" | "u32" => "long",
        "i32" | "i16" | "i8" | "u16" | "u8" => "integer",
        "bool" => "boolean",
        _ => "string",
    }
}

/// The ETL version as an MLflow dataset input.
pub fn dataset_input(prep: &Prepared, etl_version: i64) -> DatasetInput {
    DatasetInput {
        name: format!("{}-v{etl_version}", prep.loaded.config.experiment),
        digest: prep.etl_record["fingerprint"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(36)
            .collect(),
        source_uri: prep.input.uri.clone(),
        schema: data::schema_of(&prep.etl_schema)
            .iter()
            .map(|(n, t)| (n.clone(), mlflow_type(t).to_string()))
            .collect(),
        num_rows: prep.table.n_rows,
        num_cols: prep.etl_schema.width(),
    }
}
