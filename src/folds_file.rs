//! Folds from a file (`cv.assignments = "folds.csv"`), so that runner and another tool score
//! exactly the same splits. The file has two columns: `row` (the input's row number, from 0,
//! before any ETL filter) or a key column of the data, and `fold` (0 to k - 1). Every row the
//! ETL keeps has exactly one fold, every fold has rows, and k is `cv.folds`. The file's sha256
//! is recorded with each run and checked again by replay.

use crate::config::{ConfigError, LoadedConfig};
use crate::data::{self, InputRef};
use anyhow::Result;
use polars::prelude::*;
use std::collections::HashMap;

/// The folds a file gives the ETL's rows.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The fold of each row the ETL kept, in its order.
    pub fold_of: Vec<usize>,
    pub sha256: String,
}

fn bad(loaded: &LoadedConfig, message: String) -> anyhow::Error {
    ConfigError::new(loaded.path.display().to_string(), message)
        .key("cv.assignments")
        .into()
}

/// Reads and checks the config's folds file, if it names one.
pub fn load(
    loaded: &LoadedConfig,
    input: &InputRef,
    etl_df: &DataFrame,
) -> Result<Option<Assignment>> {
    let cv = &loaded.config.cv;
    let Some(name) = &cv.assignments else {
        return Ok(None);
    };
    let path = loaded.resolve(name);
    let shown = path.display().to_string();
    let bytes =
        std::fs::read(&path).map_err(|e| bad(loaded, format!("cannot read {shown}: {e}")))?;
    if cv.repeats != 1 || cv.holdout > 0.0 {
        let msg = "fixed folds take cv.repeats = 1 and cv.holdout = 0".to_string();
        return Err(bad(loaded, msg));
    }
    let file = data::read_source(&shown).map_err(|e| bad(loaded, format!("{shown}: {e:#}")))?;
    let names: Vec<String> = file
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let [key, fold] = names.as_slice() else {
        let msg = format!("{shown} has columns {names:?}; it needs two: `row` (or a key column of the data) and `fold`");
        return Err(bad(loaded, msg));
    };
    if fold != "fold" {
        return Err(bad(
            loaded,
            format!("{shown}: the second column is \"{fold}\", not \"fold\""),
        ));
    }
    let folds = whole_numbers(&file, fold).map_err(|m| bad(loaded, format!("{shown}: {m}")))?;
    let rows = if key == "row" {
        input_rows(loaded, input)?
    } else {
        key_values(etl_df, key).map_err(|m| bad(loaded, format!("{shown}: {m}")))?
    };
    let keys = strings(&file, key).map_err(|m| bad(loaded, format!("{shown}: {m}")))?;
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for (line, (k, f)) in keys.iter().zip(&folds).enumerate() {
        if by_key.insert(k.as_str(), *f).is_some() {
            let msg = format!("{shown} line {}: {key} {k} has a fold already", line + 2);
            return Err(bad(loaded, msg));
        }
    }
    let fold_of: Vec<usize> = (rows.iter())
        .map(|r| {
            by_key.get(r.as_str()).copied().ok_or_else(|| {
                bad(loaded, format!("{shown} gives no fold to {key} {r}, which the ETL keeps; every kept row needs one"))
            })
        })
        .collect::<Result<_>>()?;
    check_folds(loaded, &shown, &fold_of)?;
    Ok(Some(Assignment {
        fold_of,
        sha256: data::sha256_hex(&bytes),
    }))
}

/// Folds 0..k-1 each with rows, and k = cv.folds.
fn check_folds(loaded: &LoadedConfig, shown: &str, fold_of: &[usize]) -> Result<()> {
    let k = fold_of.iter().max().map_or(0, |m| m + 1);
    if k != loaded.config.cv.folds {
        let msg = format!(
            "{shown} assigns {k} folds; cv.folds is {}: set cv.folds = {k}",
            loaded.config.cv.folds
        );
        return Err(bad(loaded, msg));
    }
    if let Some(empty) = (0..k).find(|f| !fold_of.contains(f)) {
        let msg = format!(
            "{shown}: fold {empty} has none of the rows the ETL keeps; folds are 0..{}",
            k - 1
        );
        return Err(bad(loaded, msg));
    }
    Ok(())
}

fn whole_numbers(df: &DataFrame, column: &str) -> std::result::Result<Vec<usize>, String> {
    let s = df
        .column(column)
        .and_then(|c| c.cast(&DataType::Int64))
        .map_err(|_| format!("`{column}` must hold whole numbers"))?;
    let ints = s.i64().map_err(|e| e.to_string())?;
    ints.iter()
        .enumerate()
        .map(|(i, v)| match v {
            Some(v) if v >= 0 => Ok(v as usize),
            _ => Err(format!(
                "line {}: `{column}` must be a whole number from 0",
                i + 2
            )),
        })
        .collect()
}

fn strings(df: &DataFrame, column: &str) -> std::result::Result<Vec<String>, String> {
    let s = df
        .column(column)
        .and_then(|c| c.cast(&DataType::String))
        .map_err(|e| e.to_string())?;
    let text = s.str().map_err(|e| e.to_string())?;
    Ok(text.iter().map(|v| v.unwrap_or("").to_string()).collect())
}

/// A key column of the ETL's output, as text, each value once.
fn key_values(etl_df: &DataFrame, key: &str) -> std::result::Result<Vec<String>, String> {
    let values = strings(etl_df, key).map_err(|_| {
        format!("\"{key}\" is neither `row` nor a column of the data after the ETL")
    })?;
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = values.iter().find(|v| !seen.insert(v.as_str())) {
        return Err(format!(
            "the key column \"{key}\" holds {dup} twice; a key must be unique"
        ));
    }
    Ok(values)
}

/// The input row number (before any ETL filter) of each row the ETL keeps, as text.
fn input_rows(loaded: &LoadedConfig, input: &InputRef) -> Result<Vec<String>> {
    let df = data::read_source(&input.uri)?;
    let (kept, _) = data::apply_for_prediction(df, &loaded.config.etl)?;
    let target = &loaded.config.data.target;
    let kept = kept
        .lazy()
        .filter(col(target.as_str()).is_not_null())
        .collect()?;
    let rows = kept.column("row")?.cast(&DataType::Int64)?;
    Ok(rows
        .i64()?
        .iter()
        .map(|r| r.unwrap_or(-1).to_string())
        .collect())
}
