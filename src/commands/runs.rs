//! `runner runs`: the training runs of a store, filtered, sorted and limited.

use super::{derive_killed, mean_std_json, open_store, shown_status};
use crate::config::{self, ConfigError};
use crate::models;
use crate::report;
use crate::sweep::mean_std;
use crate::track::mlflow::{MlflowStore, RunListing};
use anyhow::{bail, Result};
use comfy_table::Cell;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// `runner runs` filters: experiment, state, a metric to sort by and a count.
#[derive(Debug, Default)]
pub struct RunsFilter {
    pub experiment: Option<String>,
    pub sort: Option<String>,
    pub status: Option<String>,
    pub limit: Option<usize>,
}

const STATES: &[&str] = &["finished", "failed", "running", "scheduled", "killed"];

fn usage_error(flag: &str, message: String) -> anyhow::Error {
    ConfigError::new(flag, message).into()
}

/// The runs the filter keeps, in its order.
fn filter_runs(mut runs: Vec<RunListing>, filter: &RunsFilter) -> Result<Vec<RunListing>> {
    if let Some(e) = &filter.experiment {
        let names: std::collections::BTreeSet<&str> =
            runs.iter().map(|r| r.experiment.as_str()).collect();
        if !names.contains(e.as_str()) {
            let names: Vec<&str> = names.into_iter().collect();
            bail!(usage_error(
                "--experiment",
                format!(
                    "no experiment \"{e}\" in the store; experiments: {}{}",
                    models::quoted_list(&names),
                    crate::suggest::hint(e, &names)
                )
            ));
        }
        runs.retain(|r| &r.experiment == e);
    }
    if let Some(state) = &filter.status {
        let state = state.to_lowercase();
        if !STATES.contains(&state.as_str()) {
            bail!(usage_error(
                "--status",
                format!(
                    "unknown state \"{state}\"; valid: {}{}",
                    models::quoted_list(STATES),
                    crate::suggest::hint(&state, STATES)
                )
            ));
        }
        runs.retain(|r| r.status.to_lowercase() == state);
    }
    if let Some(metric) = &filter.sort {
        let known: std::collections::BTreeSet<String> = runs
            .iter()
            .flat_map(|r| mean_std::all(&r.metrics).into_keys())
            .collect();
        if !known.contains(metric) && !runs.is_empty() {
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            bail!(usage_error(
                "--sort",
                format!(
                    "no run has the metric \"{metric}\"; metrics: {}{}",
                    models::quoted_list(&known),
                    crate::suggest::hint(metric, &known)
                )
            ));
        }
        let higher = config::higher_is_better(metric);
        let value = |r: &RunListing| {
            mean_std::get(&r.metrics, metric)
                .map(|(m, _)| if higher { -m } else { m })
                .filter(|m| !m.is_nan())
        };
        // Runs without the metric go last; ties keep run order.
        runs.sort_by(|a, b| match (value(a), value(b)) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
    }
    if let Some(n) = filter.limit {
        runs.truncate(n);
    }
    Ok(runs)
}

/// The store's training runs that pass the filter, with runs whose owner is gone shown KILLED
/// (and why).
fn listed_runs(
    uri: Option<&str>,
    filter: &RunsFilter,
) -> Result<(MlflowStore, Vec<RunListing>, BTreeMap<String, String>)> {
    let store = open_store(uri)?;
    let gone = derive_killed(&store)?;
    let mut runs = store.run_list()?;
    for r in runs.iter_mut().filter(|r| gone.contains_key(&r.run_uuid)) {
        r.status = "KILLED".into();
    }
    let runs = filter_runs(runs, filter)?;
    Ok((store, runs, gone))
}

/// `runner runs --json`: the schema, the store and each run's version, names, status and
/// metrics.
pub fn runs_json(uri: Option<&str>, filter: &RunsFilter) -> Result<serde_json::Value> {
    let (store, runs, gone) = listed_runs(uri, filter)?;
    let doc: Vec<_> = runs
        .iter()
        .map(|r| json!({"version": format!("t{}", r.version), "experiment": r.experiment, "name": r.name, "kind": r.kind, "etl_version": format!("v{}", r.etl_version), "status": r.status, "status_reason": gone.get(&r.run_uuid), "pruned": r.pruned, "run_uuid": r.run_uuid, "metrics": (!r.metrics.is_null()).then(|| mean_std_json(&r.metrics))}))
        .collect();
    Ok(json!({"schema": crate::JSON_SCHEMA, "store": store.path, "runs": doc}))
}

pub fn runs_command(
    uri: Option<&str>,
    filter: &RunsFilter,
    wide: bool,
    json: bool,
) -> Result<ExitCode> {
    if json {
        let doc = runs_json(uri, filter)?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    let (store, runs, gone) = listed_runs(uri, filter)?;
    let header = [
        "run",
        "experiment",
        "config",
        "kind",
        "etl",
        "status",
        "primary metric",
        "value ± std",
    ];
    let mut texts: Vec<Vec<String>> = Vec::with_capacity(runs.len());
    for r in &runs {
        let metric = r.primary_metric.clone();
        let value = mean_std::get(&r.metrics, &metric)
            .map(|(m, s)| format!("{m:.4} ± {s:.4}"))
            .unwrap_or_else(|| "-".into());
        texts.push(vec![
            format!("t{}", r.version),
            r.experiment.clone(),
            // The MLflow run name is `tN-<config>`; the run column already says tN.
            r.name
                .strip_prefix(&format!("t{}-", r.version))
                .unwrap_or(&r.name)
                .to_string(),
            r.kind.clone(),
            format!("v{}", r.etl_version),
            if r.pruned {
                "KILLED (pruned)".to_string()
            } else {
                shown_status(&r.status, gone.get(&r.run_uuid))
            },
            metric,
            value,
        ]);
    }
    let rows: Vec<Vec<Cell>> = texts
        .iter()
        .map(|t| t.iter().map(Cell::new).collect())
        .collect();
    // Least important first: the ETL version, the kind, the experiment, the metric's name.
    report::print_fitted(&header, &rows, &texts, &[4, 3, 1, 6], wide);
    println!(
        "{} training runs in {}",
        runs.len(),
        crate::track::store_label(&store.path)
    );
    Ok(ExitCode::SUCCESS)
}
