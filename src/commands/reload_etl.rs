//! `runner reload-etl vN`: rebuilds an ETL version from its recorded source and checks it.

use crate::data;
use crate::replay::{parse_version, reload_etl, Reloaded};
use crate::report::new_table;
use crate::track::mlflow::MlflowStore;
use anyhow::Result;
use comfy_table::Cell;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

/// `runner reload-etl --json`: what was rebuilt and verified.
fn rebuilt_json(version: &str, r: &Reloaded, out: Option<&Path>) -> serde_json::Value {
    json!({
        "schema": crate::JSON_SCHEMA, "version": version, "verified": true, "input": r.input, "data_schema": data::schema_of(&r.df),
        "n_rows": r.df.height(), "n_cols": r.df.width(), "fingerprint": r.record["fingerprint"],
        "target_distribution": r.record["target_distribution"], "out": out,
    })
}

/// Rebuilds and verifies an ETL version, writes it to `out` (by its extension) and says what it
/// rebuilt, as `--json` does.
pub fn reload_etl_json(
    store_path: &Path,
    version: &str,
    input: Option<&Path>,
    out: &Path,
) -> Result<serde_json::Value> {
    let store = MlflowStore::open_read_only(store_path)?;
    let n = parse_version(version, 'v')?;
    let mut r = reload_etl(&store, n, input)?;
    data::write_frame(&mut r.df, out)?;
    Ok(rebuilt_json(version, &r, Some(out)))
}

pub fn reload_etl_command(
    store_path: &Path,
    version: &str,
    input: Option<&Path>,
    out: Option<&Path>,
    json_out: bool,
) -> Result<ExitCode> {
    let store = MlflowStore::open_read_only(store_path)?;
    let n = parse_version(version, 'v')?;
    let mut r = reload_etl(&store, n, input)?;
    if let Some(out) = out {
        data::write_frame(&mut r.df, out)?;
    }
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&rebuilt_json(version, &r, out))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "ETL {version} rebuilt from {} (sha256 {} verified); fingerprint {} verified.",
        r.input.uri,
        r.input.sha256,
        r.record["fingerprint"].as_str().unwrap_or("")
    );
    println!("{} rows x {} columns", r.df.height(), r.df.width());
    let mut t = new_table(&["column", "type"]);
    for (c, ty) in data::schema_of(&r.df) {
        t.add_row(vec![Cell::new(c), Cell::new(ty)]);
    }
    println!("{t}");
    println!("Target distribution: {}", r.record["target_distribution"]);
    if let Some(out) = out {
        println!("Wrote {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
