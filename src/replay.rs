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
