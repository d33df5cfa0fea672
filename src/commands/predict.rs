//! `runner predict tN --input FILE`: a run's saved model applied to new data, as CSV.

use crate::predict::{open_saved, predict_file, to_csv};
use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;

pub fn predict_command(
    uri: Option<&str>,
    version: &str,
    input: &Path,
    out: Option<&Path>,
    proba: bool,
) -> Result<ExitCode> {
    let saved = open_saved(uri, version)?;
    let p = predict_file(&saved, input)?;
    let csv = to_csv(&saved, &p, proba)?;
    if !p.filters.is_empty() {
        eprintln!(
            "{} of {} input rows kept by the recorded ETL filter(s) {}; the `row` column gives each prediction's input row",
            p.rows.len(),
            p.input_rows,
            p.filters.join(" and ")
        );
    }
    match out {
        Some(path) => {
            std::fs::write(path, csv)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "{} predictions of {} ({}) written to {}",
                p.rows.len(),
                saved.version,
                saved.config.name,
                path.display()
            );
        }
        None => print!("{csv}"),
    }
    Ok(ExitCode::SUCCESS)
}
