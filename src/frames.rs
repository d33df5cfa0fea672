//! DataFrames handed over in this process (the Python package's `data=`), through Arrow's C
//! stream interface without copying their buffers, kept by the sha256 of their content.
//!
//! A frame's config source is `frame:<sha256>`: an ETL version built from it records that
//! hash, so the same frame reuses the version, and `replay` and `reload_etl` verify a frame
//! passed again. The hash covers each column's name, type and values (not the Arrow batches'
//! layout): the same table from pandas or polars, in one batch or many, hashes the same.

use anyhow::{anyhow, bail, Context, Result};
use polars::prelude::*;
use polars_arrow::array::{Array, StructArray};
use polars_arrow::datatypes::ArrowDataType;
use sha2::{Digest, Sha256};
use std::sync::Mutex;

pub use polars_arrow::ffi::ArrowArrayStream;

/// The source of a frame: `frame:` and its content's sha256.
pub const PREFIX: &str = "frame:";

/// Frames kept for this process, by sha256, oldest first; at most [`KEPT`].
static FRAMES: Mutex<Vec<(String, DataFrame)>> = Mutex::new(Vec::new());

/// Frames kept at once: each holds its producer's buffers (no copy), so old ones are let go.
const KEPT: usize = 16;

/// Reads an Arrow C stream (a table's record batches) into a DataFrame whose columns use the
/// stream's buffers as they are.
///
/// # Safety
/// `stream` must be a valid Arrow C stream (as a PyCapsule named `arrow_array_stream` holds).
pub unsafe fn from_c_stream(stream: Box<ArrowArrayStream>) -> Result<DataFrame> {
    let mut reader = unsafe { polars_arrow::ffi::ArrowArrayStreamReader::try_new(stream) }?;
    let ArrowDataType::Struct(fields) = reader.field().dtype().clone() else {
        bail!(
            "the Arrow stream does not hold a table (its type is {:?})",
            reader.field().dtype()
        );
    };
    let mut chunks: Vec<Vec<Box<dyn Array>>> = vec![Vec::new(); fields.len()];
    while let Some(batch) = unsafe { reader.next() } {
        let batch = batch?;
        let rows = batch.len();
        let table = (batch.as_any().downcast_ref::<StructArray>())
            .context("an Arrow batch is not a struct array")?;
        for (column, values) in chunks.iter_mut().zip(table.values()) {
            column.push(values.sliced(0, rows));
        }
    }
    let columns = (fields.iter().zip(chunks))
        .map(|(field, arrays)| {
            let series = if arrays.is_empty() {
                Series::new_empty(field.name.clone(), &DataType::from_arrow_field(field))
            } else {
                Series::try_from((field, arrays))?
            };
            Ok(series.into_column())
        })
        .collect::<Result<Vec<Column>>>()?;
    let height = columns.first().map_or(0, |c| c.len());
    Ok(DataFrame::new(height, columns)?)
}

/// The sha256 of a frame's columns: names, types and values.
pub fn content_sha256(df: &DataFrame) -> Result<String> {
    let mut h = Sha256::new();
    for column in df.columns() {
        let series = column.as_materialized_series();
        h.update(series.name().as_bytes());
        h.update([0]);
        h.update(series.dtype().to_string().as_bytes());
        h.update([0]);
        hash_values(series, &mut h)?;
    }
    Ok(format!("{:x}", h.finalize()))
}

fn hash_values(series: &Series, h: &mut Sha256) -> Result<()> {
    let dtype = series.dtype();
    if dtype.is_primitive_numeric() || dtype.is_bool() {
        let values = series.cast(&DataType::Float64)?;
        for v in values.f64()?.iter() {
            match v {
                Some(x) => h.update([&[1u8][..], &x.to_le_bytes()].concat()),
                None => h.update([0u8]),
            }
        }
    } else {
        let values = series.cast(&DataType::String)?;
        for v in values.str()?.iter() {
            match v {
                Some(s) => {
                    h.update([1u8]);
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
                None => h.update([0u8]),
            }
        }
    }
    Ok(())
}

/// Keeps a frame for this process; its source (`frame:<sha256>`) and sha256.
pub fn register(df: DataFrame) -> Result<(String, String)> {
    let sha = content_sha256(&df)?;
    let mut frames = FRAMES.lock().unwrap_or_else(|e| e.into_inner());
    frames.retain(|(s, _)| *s != sha);
    frames.push((sha.clone(), df));
    if frames.len() > KEPT {
        frames.remove(0);
    }
    Ok((format!("{PREFIX}{sha}"), sha))
}

/// The sha256 a `frame:` source names.
pub fn sha_of(source: &str) -> Option<&str> {
    source.strip_prefix(PREFIX)
}

/// The frame a `frame:` source names, if this process holds it (a cheap clone: the columns are
/// shared).
pub fn get(source: &str) -> Result<DataFrame> {
    let sha = sha_of(source).ok_or_else(|| anyhow!("{source} is not a frame source"))?;
    let frames = FRAMES.lock().unwrap_or_else(|e| e.into_inner());
    match frames.iter().find(|(s, _)| s == sha) {
        Some((_, df)) => Ok(df.clone()),
        None => bail!(
            "the DataFrame with sha256 {sha} is not in this process: pass the same DataFrame again as data="
        ),
    }
}
