//! Data in: sources (CSV, Parquet, the embedded red wine), the stateless ETL steps run through
//! polars, and the conversion to a column table that the fold-fitted preprocessing reads.

use crate::config::{CastType, ConfigError, EtlSpec, LoadedConfig};
use anyhow::{anyhow, Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub use crate::source::{Format, ACCEPTED_EXTENSIONS, BUILTIN_RED_WINE};

/// Where the data came from and the hash of its content, as recorded with an ETL version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRef {
    /// `builtin:...` or the absolute path of the file.
    pub uri: String,
    /// sha256 of the file's bytes (or of the builtin table's values).
    pub sha256: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    format!("{:x}", h.finalize())
}

fn builtin_red_wine() -> DataFrame {
    let ds = linfa_datasets::winequality();
    let names = ds.feature_names();
    let records = ds.records();
    let mut columns: Vec<Column> = names
        .iter()
        .enumerate()
        .map(|(j, n)| Column::new(n.as_str().into(), records.column(j).to_vec()))
        .collect();
    let quality: Vec<i64> = ds.targets().iter().map(|t| *t as i64).collect();
    columns.push(Column::new("quality".into(), quality));
    #[allow(
        clippy::expect_used,
        reason = "the builtin columns all have the embedded set's row count"
    )]
    DataFrame::new(records.nrows(), columns).expect("the builtin table is rectangular")
}

/// Resolves the config's source to an input reference (hashing the file).
pub fn input_ref(loaded: &LoadedConfig) -> Result<InputRef> {
    let source = &loaded.config.data.source;
    if source == BUILTIN_RED_WINE {
        return Ok(builtin_input_ref());
    }
    if let Some(sha) = crate::frames::sha_of(source) {
        // Held by this process (handed over from Python), else a clear error.
        crate::frames::get(source)?;
        return Ok(InputRef {
            uri: source.clone(),
            sha256: sha.to_string(),
        });
    }
    let path = loaded.resolve(source);
    file_input_ref(&path)
}

pub fn builtin_input_ref() -> InputRef {
    let df = builtin_red_wine();
    let mut h = Sha256::new();
    for c in df.columns() {
        let as_f64 = c.as_materialized_series().cast(&DataType::Float64);
        // Every builtin column is numeric: the cast and the view always succeed.
        if let Some(values) = as_f64.as_ref().ok().and_then(|s| s.f64().ok()) {
            for v in values.into_no_null_iter() {
                h.update(v.to_le_bytes());
            }
        }
    }
    InputRef {
        uri: BUILTIN_RED_WINE.to_string(),
        sha256: format!("{:x}", h.finalize()),
    }
}

pub fn file_input_ref(path: &Path) -> Result<InputRef> {
    // Streamed: the file is never held in memory whole.
    let cannot = || format!("cannot read data file {}", path.display());
    let mut file = std::fs::File::open(path).with_context(cannot)?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h).with_context(cannot)?;
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(InputRef {
        uri: abs.display().to_string(),
        sha256: format!("{:x}", h.finalize()),
    })
}

fn read_delimited(path: &Path, separator: u8, what: &str) -> Result<DataFrame> {
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(10_000))
        .with_parse_options(CsvParseOptions::default().with_separator(separator))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))?
        .finish()
        .map_err(|e| anyhow!("cannot parse {what} file {}: {e}", path.display()))
}

/// Reads a source into a DataFrame: `builtin:winequality-red`, or a file in one of the
/// [`Format`]s.
pub fn read_source(uri: &str) -> Result<DataFrame> {
    if uri == BUILTIN_RED_WINE {
        return Ok(builtin_red_wine());
    }
    if crate::frames::sha_of(uri).is_some() {
        return crate::frames::get(uri);
    }
    let path = PathBuf::from(uri);
    let Some(format) = Format::of(&path) else {
        return Err(anyhow!(
            "{}: unsupported file type; accepted: {ACCEPTED_EXTENSIONS}",
            path.display()
        ));
    };
    let open =
        || std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()));
    let df = match format {
        Format::Csv => read_delimited(&path, b',', "CSV")?,
        Format::Tsv => read_delimited(&path, b'\t', "TSV")?,
        Format::Parquet => ParquetReader::new(open()?)
            .finish()
            .map_err(|e| anyhow!("cannot parse Parquet file {}: {e}", path.display()))?,
        Format::Ndjson => JsonReader::new(open()?)
            .with_json_format(JsonFormat::JsonLines)
            .infer_schema_len(std::num::NonZeroUsize::new(10_000))
            .finish()
            .map_err(|e| anyhow!("cannot parse NDJSON file {}: {e}", path.display()))?,
        Format::Ipc => IpcReader::new(open()?)
            .finish()
            .map_err(|e| anyhow!("cannot parse Arrow IPC file {}: {e}", path.display()))?,
    };
    refuse_duplicate_columns(&df, &path)?;
    Ok(df)
}

/// polars renames a repeated header `a` to `a_duplicated_0`: refuse the file instead, naming
/// both columns, since which one a config means is a guess.
fn refuse_duplicate_columns(df: &DataFrame, path: &Path) -> Result<()> {
    let names = column_names(df);
    for (i, name) in names.iter().enumerate() {
        let Some((base, _)) = name.split_once("_duplicated_") else {
            continue;
        };
        if let Some(first) = names.iter().position(|n| n == base) {
            return Err(anyhow!(
                "{}: columns {} and {} are both named \"{base}\"; rename one of them",
                path.display(),
                first + 1,
                i + 1
            ));
        }
    }
    Ok(())
}

fn column_names(df: &DataFrame) -> Vec<String> {
    df.get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn missing_column(file: &str, key: &str, name: &str, df: &DataFrame) -> ConfigError {
    let names = column_names(df);
    let mut e = ConfigError::new(
        file,
        format!(
            "column \"{name}\" does not exist; columns: {}{}",
            names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", "),
            crate::suggest::hint(name, &names)
        ),
    );
    e.key = Some(key.to_string());
    e
}

const OPERATORS: &[&str] = &[">=", "<=", "!=", "==", ">", "<"];

/// Parses a filter such as `alcohol > 9.5` or `colour == 'red'` (column names may hold spaces).
pub fn parse_filter(
    text: &str,
) -> std::result::Result<(String, &'static str, LiteralValueRepr), String> {
    let (pos, op) = OPERATORS
        .iter()
        .filter_map(|op| text.find(op).map(|p| (p, *op)))
        .min_by_key(|(p, op)| (*p, std::cmp::Reverse(op.len())))
        .ok_or_else(|| {
            format!(
                "filter \"{text}\" has no comparison; use one of {}",
                OPERATORS.join(" ")
            )
        })?;
    let column = text[..pos].trim().trim_matches('`').to_string();
    let value = text[pos + op.len()..].trim();
    if column.is_empty() || value.is_empty() {
        return Err(format!("filter \"{text}\" must read `column OP value`"));
    }
    let lit = if let Some(s) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        LiteralValueRepr::Str(s.to_string())
    } else if let Some(s) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        LiteralValueRepr::Str(s.to_string())
    } else if let Ok(x) = value.parse::<f64>() {
        LiteralValueRepr::Num(x)
    } else if value == "true" || value == "false" {
        LiteralValueRepr::Bool(value == "true")
    } else {
        return Err(format!("filter \"{text}\": value `{value}` is neither a number, true/false nor a quoted string"));
    };
    Ok((column, op, lit))
}

#[derive(Debug, Clone, PartialEq)]
pub enum LiteralValueRepr {
    Num(f64),
    Str(String),
    Bool(bool),
}

fn cast_expr(column: &str, to: CastType) -> Expr {
    let dt = match to {
        CastType::F64 => DataType::Float64,
        CastType::I64 => DataType::Int64,
        CastType::Str => DataType::String,
        CastType::Bool => DataType::Boolean,
    };
    col(column).strict_cast(dt)
}

fn filter_expr(c: &str, op: &str, v: LiteralValueRepr) -> Expr {
    let l = match v {
        LiteralValueRepr::Num(x) => lit(x),
        LiteralValueRepr::Str(s) => lit(s),
        LiteralValueRepr::Bool(b) => lit(b),
    };
    let e = col(c);
    match op {
        ">=" => e.gt_eq(l),
        "<=" => e.lt_eq(l),
        "!=" => e.neq(l),
        "==" => e.eq(l),
        ">" => e.gt(l),
        _ => e.lt(l),
    }
}

/// The recorded ETL's casts and filters applied to new data for prediction. The input row of
/// each kept row is in the column `row`; filters on columns the input lacks (the target) are
/// skipped. Returns the frame and the filters that were applied.
pub fn apply_for_prediction(df: DataFrame, spec: &EtlSpec) -> Result<(DataFrame, Vec<String>)> {
    let names = column_names(&df);
    let has = |n: &str| names.iter().any(|c| c == n);
    let mut lf = df.lazy().with_row_index("row", None);
    for (n, t) in spec.cast.iter().filter(|(n, _)| has(n)) {
        lf = lf.with_column(cast_expr(n, *t));
    }
    let mut applied = Vec::new();
    for f in &spec.filter {
        let (c, op, v) = parse_filter(f).map_err(|m| anyhow!(m))?;
        if has(&c) {
            lf = lf.filter(filter_expr(&c, op, v));
            applied.push(f.clone());
        }
    }
    let out = lf
        .collect()
        .map_err(|e| anyhow!("the recorded ETL (casts, filters) failed on the input: {e}"))?;
    Ok((out, applied))
}

/// Applies select, drop, cast and filter (in that order) through polars' lazy engine, after
/// checking every named column exists. Rows whose target is missing are dropped.
pub fn apply_stateless(
    df: DataFrame,
    spec: &EtlSpec,
    target: &str,
    file: &str,
) -> Result<DataFrame> {
    let names = column_names(&df);
    let has = |n: &str| names.iter().any(|c| c == n);
    if !has(target) {
        return Err(missing_column(file, "data.target", target, &df).into());
    }
    for n in &spec.select {
        if !has(n) {
            return Err(missing_column(file, "etl.select", n, &df).into());
        }
    }
    for n in &spec.drop {
        if !has(n) {
            return Err(missing_column(file, "etl.drop", n, &df).into());
        }
        if n == target {
            return Err(ConfigError::new(
                file,
                format!("cannot drop the target column \"{target}\""),
            )
            .into_key("etl.drop")
            .into());
        }
    }
    for n in spec.cast.keys() {
        if !has(n) {
            return Err(missing_column(file, "etl.cast", n, &df).into());
        }
    }
    let mut filters = Vec::new();
    for f in &spec.filter {
        let (c, op, v) =
            parse_filter(f).map_err(|m| ConfigError::new(file, m).into_key("etl.filter"))?;
        if !has(&c) {
            return Err(missing_column(file, "etl.filter", &c, &df).into());
        }
        filters.push(filter_expr(&c, op, v));
    }
    let mut lf = df.lazy();
    if !spec.select.is_empty() {
        let mut keep: Vec<Expr> = spec.select.iter().map(|n| col(n.as_str())).collect();
        if !spec.select.iter().any(|n| n == target) {
            keep.push(col(target));
        }
        lf = lf.select(keep);
    }
    if !spec.drop.is_empty() {
        lf = lf.drop(Selector::ByName {
            names: spec
                .drop
                .iter()
                .map(|s| PlSmallStr::from(s.as_str()))
                .collect(),
            strict: true,
        });
    }
    for (n, t) in &spec.cast {
        lf = lf.with_column(cast_expr(n, *t));
    }
    for f in filters {
        lf = lf.filter(f);
    }
    lf = lf.filter(col(target).is_not_null());
    let out = lf
        .collect()
        .map_err(|e| anyhow!("{file}: ETL failed in polars: {e}"))?;
    Ok(out)
}

trait IntoKey {
    fn into_key(self, key: &str) -> ConfigError;
}
impl IntoKey for ConfigError {
    fn into_key(mut self, key: &str) -> ConfigError {
        self.key = Some(key.to_string());
        self
    }
}

/// One feature column after stateless ETL.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValues {
    /// Numbers, NaN where a value is missing (8 bytes a value: `Option<f64>` took 16, and a
    /// million-row table's features twice the memory). See [`present`].
    Numeric(Vec<f64>),
    Categorical(Vec<Option<String>>),
}

/// A numeric feature's value, `None` where it is missing (NaN).
pub fn present(x: f64) -> Option<f64> {
    (!x.is_nan()).then_some(x)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub name: String,
    pub dtype: String,
    pub values: FeatureValues,
}

impl Feature {
    pub fn missing(&self) -> usize {
        match &self.values {
            FeatureValues::Numeric(v) => v.iter().filter(|x| x.is_nan()).count(),
            FeatureValues::Categorical(v) => v.iter().filter(|x| x.is_none()).count(),
        }
    }
}

/// The target column as read: numbers (with whether all are whole) or text.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetValues {
    Numeric { values: Vec<f64>, integral: bool },
    Text(Vec<String>),
}

impl TargetValues {
    /// No target: new data to predict, or a target already encoded.
    fn none() -> TargetValues {
        TargetValues::Numeric {
            values: Vec::new(),
            integral: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Table {
    pub features: Vec<Feature>,
    pub target_name: String,
    pub target: TargetValues,
    pub n_rows: usize,
}

impl Table {
    /// Frees the target as read once it is encoded (`Prepared::y` holds it from then on): a
    /// text target kept a `String` per row, about 56 MB a million rows.
    pub fn release_target(&mut self) {
        self.target = TargetValues::none();
    }
}

/// One column as a feature: numbers (booleans as 0/1) or categories.
fn feature_of(name: String, s: &Series) -> Result<Feature> {
    let dtype = s.dtype().to_string();
    let values = if s.dtype().is_primitive_numeric() || s.dtype().is_bool() {
        FeatureValues::Numeric(
            s.cast(&DataType::Float64)?
                .f64()?
                .iter()
                .map(|x| x.unwrap_or(f64::NAN))
                .collect(),
        )
    } else if s.dtype().is_string() {
        FeatureValues::Categorical(s.str()?.iter().map(|x| x.map(str::to_string)).collect())
    } else {
        let s2 = s.cast(&DataType::String).map_err(|e| {
            anyhow!("column \"{name}\" of type {dtype} cannot be used as a feature: {e}")
        })?;
        FeatureValues::Categorical(s2.str()?.iter().map(|x| x.map(str::to_string)).collect())
    };
    Ok(Feature {
        name,
        dtype,
        values,
    })
}

/// The named feature columns of new data, in that order, without a target (for prediction).
pub fn feature_table(df: &DataFrame, names: &[String]) -> Result<Table> {
    let features = names
        .iter()
        .map(|n| {
            let c = df
                .column(n)
                .map_err(|_| anyhow!("column \"{n}\" is missing"))?;
            feature_of(n.clone(), c.as_materialized_series())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Table {
        features,
        target_name: String::new(),
        target: TargetValues::none(),
        n_rows: df.height(),
    })
}

/// Splits the ETL output into feature columns and the target.
pub fn to_table(df: &DataFrame, target: &str) -> Result<Table> {
    let mut features = Vec::new();
    let mut target_values = None;
    for c in df.columns() {
        let name = c.name().to_string();
        let s = c.as_materialized_series();
        if name == target {
            target_values = Some(if s.dtype().is_primitive_numeric() {
                let v: Vec<f64> = s
                    .cast(&DataType::Float64)?
                    .f64()?
                    .into_no_null_iter()
                    .collect();
                let integral = v.iter().all(|x| x.fract() == 0.0);
                TargetValues::Numeric {
                    values: v,
                    integral,
                }
            } else {
                let s = s.cast(&DataType::String)?;
                TargetValues::Text(
                    s.str()?
                        .iter()
                        .map(|x| x.unwrap_or_default().to_string())
                        .collect(),
                )
            });
            continue;
        }
        features.push(feature_of(name, s)?);
    }
    Ok(Table {
        features,
        target_name: target.to_string(),
        target: target_values.context("target column vanished during ETL")?,
        n_rows: df.height(),
    })
}

/// A fingerprint of the ETL output (names, types and every value, target included): the same
/// spec on the same input must reproduce it bit for bit.
pub fn fingerprint(table: &Table) -> String {
    let mut h = Sha256::new();
    for f in &table.features {
        h.update(f.name.as_bytes());
        h.update([0]);
        h.update(f.dtype.as_bytes());
        h.update([0]);
        match &f.values {
            FeatureValues::Numeric(v) => {
                for x in v {
                    match present(*x) {
                        Some(x) => h.update(x.to_bits().to_le_bytes()),
                        None => h.update([0xff; 9]),
                    }
                }
            }
            FeatureValues::Categorical(v) => {
                for x in v {
                    match x {
                        Some(s) => {
                            h.update(s.as_bytes());
                            h.update([0]);
                        }
                        None => h.update([0xff; 2]),
                    }
                }
            }
        }
    }
    h.update(table.target_name.as_bytes());
    match &table.target {
        TargetValues::Numeric { values, .. } => values
            .iter()
            .for_each(|x| h.update(x.to_bits().to_le_bytes())),
        TargetValues::Text(v) => v.iter().for_each(|s| {
            h.update(s.as_bytes());
            h.update([0]);
        }),
    }
    format!("{:x}", h.finalize())
}

pub fn schema_of(df: &DataFrame) -> Vec<(String, String)> {
    df.columns()
        .iter()
        .map(|c| (c.name().to_string(), c.dtype().to_string()))
        .collect()
}

/// Writes a table to .parquet or .csv (by extension).
pub fn write_frame(df: &mut DataFrame, path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    match ext.as_str() {
        "parquet" => {
            ParquetWriter::new(&mut f).finish(df)?;
        }
        "csv" => {
            CsvWriter::new(&mut f).include_header(true).finish(df)?;
        }
        other => {
            return Err(anyhow!(
                "{}: cannot write \".{other}\"; use .parquet or .csv",
                path.display()
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_red_wine_is_the_real_table() {
        let df = builtin_red_wine();
        assert_eq!(df.height(), 1599);
        assert_eq!(df.width(), 12);
        let t = to_table(&df, "quality").unwrap();
        match t.target {
            TargetValues::Numeric { values, integral } => {
                assert!(integral);
                assert_eq!(values.iter().cloned().fold(f64::INFINITY, f64::min), 3.0);
                assert_eq!(values.iter().cloned().fold(0.0, f64::max), 8.0);
            }
            _ => panic!("numeric target expected"),
        }
    }

    #[test]
    fn filters_parse_with_spaces_in_names() {
        let (c, op, v) = parse_filter("fixed acidity >= 7.5").unwrap();
        assert_eq!(
            (c.as_str(), op, v),
            ("fixed acidity", ">=", LiteralValueRepr::Num(7.5))
        );
        let (_, op, v) = parse_filter("colour == 'red'").unwrap();
        assert_eq!((op, v), ("==", LiteralValueRepr::Str("red".into())));
        assert!(parse_filter("alcohol").is_err());
    }

    #[test]
    fn stateless_etl_filters_and_drops() {
        let df = builtin_red_wine();
        let spec = EtlSpec {
            drop: vec!["density".into()],
            filter: vec!["alcohol > 12".into()],
            ..Default::default()
        };
        let out = apply_stateless(df, &spec, "quality", "t.toml").unwrap();
        assert_eq!(out.width(), 11);
        assert!(out.height() < 200 && out.height() > 50, "{}", out.height());
    }

    #[test]
    fn unknown_column_error_lists_the_columns() {
        let spec = EtlSpec {
            drop: vec!["colour".into()],
            ..Default::default()
        };
        let e = apply_stateless(builtin_red_wine(), &spec, "quality", "t.toml").unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("\"colour\"") && msg.contains("\"alcohol\"") && msg.contains("etl.drop"),
            "{msg}"
        );
    }
}
