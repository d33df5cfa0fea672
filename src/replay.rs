//! Reproducibility: rebuilding an ETL version from what the store recorded, which `runner
//! reload-etl vN` and `runner replay tN` (in `commands`) start from.

use crate::data::{self, InputRef, Table, BUILTIN_RED_WINE};
use crate::sweep::{self};
use crate::track::mlflow::MlflowStore;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// An ETL version rebuilt and verified against its record.
pub struct Reloaded {
    pub version: i64,
    pub record: Value,
    pub input: InputRef,
    pub df: polars::prelude::DataFrame,
    pub table: Table,
}

pub fn parse_version(v: &str, prefix: char) -> Result<i64> {
    sweep::parse_version(v, prefix).map_err(|m| anyhow!(m))
}

/// The frame source to rebuild from: the one given instead (`frame:<sha>`), else the recorded
/// one when the version was built from a DataFrame.
fn frame_source(recorded: &InputRef, input_override: Option<&Path>) -> Option<String> {
    let given = input_override.and_then(Path::to_str);
    match given {
        Some(g) if crate::frames::sha_of(g).is_some() => Some(g.to_string()),
        Some(_) => None,
        None => crate::frames::sha_of(&recorded.uri).map(|_| recorded.uri.clone()),
    }
}

/// A DataFrame handed over again, checked against the recorded content hash.
fn frame_input(recorded: &InputRef, given: &str, version: i64) -> Result<InputRef> {
    let sha = crate::frames::sha_of(given).unwrap_or_default();
    if sha != recorded.sha256 {
        bail!(
            "the DataFrame given does not hold the data of ETL v{version}: recorded sha256 {}, the DataFrame's {sha}",
            recorded.sha256
        );
    }
    crate::frames::get(given)
        .with_context(|| format!("ETL v{version} was built from a DataFrame (sha256 {sha})"))?;
    Ok(InputRef {
        uri: given.to_string(),
        sha256: sha.to_string(),
    })
}

/// Rebuilds ETL version `version` from the store's record (spec and input reference) alone,
/// checking the input's content hash and the fingerprint of the result.
pub fn reload_etl(
    store: &MlflowStore,
    version: i64,
    input_override: Option<&Path>,
) -> Result<Reloaded> {
    let record = store.require_etl_record(version)?;
    let recorded: InputRef =
        serde_json::from_value(record["input"].clone()).context("ETL record has no input")?;
    let input = if recorded.uri == BUILTIN_RED_WINE && input_override.is_none() {
        let now = data::builtin_input_ref();
        if now.sha256 != recorded.sha256 {
            bail!("the builtin data of this runner differs from what v{version} was built from (recorded sha256 {}, now {})", recorded.sha256, now.sha256);
        }
        now
    } else if let Some(given) = frame_source(&recorded, input_override) {
        frame_input(&recorded, &given, version)?
    } else {
        let path = input_override
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(&recorded.uri));
        if !path.is_file() {
            bail!(
                "input file {} of ETL v{version} is missing (recorded sha256 {}); pass --input PATH to a copy of the same data",
                path.display(),
                recorded.sha256
            );
        }
        let now = data::file_input_ref(&path)?;
        if now.sha256 != recorded.sha256 {
            bail!(
                "input file {} does not hold the data of ETL v{version}: recorded sha256 {}, current sha256 {}",
                path.display(),
                recorded.sha256,
                now.sha256
            );
        }
        now
    };
    let spec = &record["spec"];
    let etl: crate::config::EtlSpec =
        serde_json::from_value(spec["etl"].clone()).context("ETL record has no spec")?;
    let target = spec["target"]
        .as_str()
        .context("ETL record has no target")?;
    let (df, table) = sweep::run_etl(&etl, target, &input, &format!("ETL v{version}"))?;
    let fingerprint = data::fingerprint(&table);
    let want = record["fingerprint"].as_str().unwrap_or("");
    if fingerprint != want {
        bail!("the rebuilt data of ETL v{version} differs from the recorded one: fingerprint {want} recorded, {fingerprint} now");
    }
    Ok(Reloaded {
        version,
        record,
        input,
        df,
        table,
    })
}
