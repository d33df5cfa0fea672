//! The subcommands, one module each: each reads its arguments into options, calls the library
//! and prints (a table, or JSON with `--json`). `main` only parses the command line.

pub mod diff;
pub mod eda;
pub mod export;
pub mod models;
pub mod predict;
pub mod register;
pub mod reload_etl;
pub mod replay;
pub mod runs;
pub mod show;
pub mod sweep;
pub mod sweep_status;
pub mod validate;
pub mod wandb_sync;

use crate::sweep as pipeline;
use crate::track::mlflow::MlflowStore;
use anyhow::Result;

/// The store, for a command that only reads it: nothing in the file changes.
pub(crate) fn open_store(uri: Option<&str>) -> Result<MlflowStore> {
    let path = pipeline::tracking_path(uri, None)?;
    MlflowStore::open_read_only(&path)
}

/// Runs the store still calls RUNNING or SCHEDULED whose owner is gone, with the reason: what
/// the next writing command will mark KILLED. Read-only commands show them so and write nothing.
pub(crate) fn derive_killed(
    store: &MlflowStore,
) -> Result<std::collections::BTreeMap<String, String>> {
    Ok(store.gone_runs()?.into_iter().collect())
}

/// "KILLED (process gone)" for a run whose owner is gone, else the stored status.
pub(crate) fn shown_status(status: &str, gone: Option<&String>) -> String {
    match gone {
        Some(reason) => format!(
            "KILLED ({})",
            reason.split_once(':').map(|(why, _)| why).unwrap_or(reason)
        ),
        None => status.to_string(),
    }
}

/// A stored summary's metrics as `{"name": {"mean": .., "std": ..}}`, whatever shape they were
/// stored in.
pub(crate) fn mean_std_json(metrics: &serde_json::Value) -> serde_json::Value {
    let all = crate::sweep::mean_std::all(metrics);
    serde_json::json!(all
        .into_iter()
        .map(|(k, (mean, std))| (k, serde_json::json!({"mean": mean, "std": std})))
        .collect::<serde_json::Map<_, _>>())
}
