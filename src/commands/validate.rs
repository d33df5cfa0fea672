//! `runner validate <config>`: checks the config and sweeps and lists the configs they expand to.

use crate::config::{self};
use crate::report::new_table;
use crate::sweep::{self};
use anyhow::Result;
use comfy_table::Cell;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

pub fn validate_command(
    path: &Path,
    sets: &[String],
    uri: Option<&str>,
    json: bool,
    search: Option<&config::SearchOverride>,
) -> Result<ExitCode> {
    let mut loaded = config::load_config(path, sets)?;
    loaded.search_override = search.cloned();
    let prep = sweep::prepare(loaded)?;
    let expanded = config::expand_sweeps(&prep.loaded, prep.task)?;
    let (mut configs, studies) = (expanded.configs, expanded.studies);
    let bases: Vec<_> = studies.iter().map(|s| s.base.clone()).collect();
    crate::sweep::check_class_params(&configs, &prep)?;
    crate::sweep::check_class_params(&bases, &prep)?;
    let store_path = sweep::tracking_path(uri, Some(&prep.loaded))?;
    sweep::resolve_run_members(&mut configs, &store_path, prep.task, path)?;
    for w in sweep::size_warnings(&prep, &configs, &studies) {
        eprintln!("warning: {w}");
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "schema": crate::JSON_SCHEMA,
                "config": prep.loaded.config,
                "task": prep.task,
                "task_reason": prep.task_reason,
                "primary_metric": prep.primary_metric,
                "rows": prep.table.n_rows,
                "features": prep.table.features.iter().map(|f| &f.name).collect::<Vec<_>>(),
                "labels": prep.labels,
                "models": configs,
                "searches": studies.iter().map(study_json).collect::<Vec<_>>(),
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: valid. {} rows, {} feature columns, target \"{}\": {} ({}); primary metric {}.",
        path.display(),
        prep.table.n_rows,
        prep.table.features.len(),
        prep.loaded.config.data.target,
        prep.task,
        prep.task_reason,
        prep.primary_metric
    );
    let mut t = new_table(&[
        "#",
        "name",
        "kind",
        "hyperparameters (defaults made explicit)",
    ]);
    for (i, c) in configs.iter().enumerate() {
        let mut params = c
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        if !c.members.is_empty() {
            let members: Vec<String> = c
                .members
                .iter()
                .map(|m| match &m.from_run {
                    Some(t) => format!("{t} {}", m.name),
                    None => m.name.clone(),
                })
                .collect();
            params.push_str(&format!(" members={}", members.join(",")));
        }
        t.add_row(vec![
            Cell::new(i + 1),
            Cell::new(&c.name),
            Cell::new(&c.kind),
            Cell::new(params),
        ]);
    }
    if !configs.is_empty() {
        println!("{t}");
    }
    for study in &studies {
        print_study(study);
    }
    println!(
        "{} model configs{}; nothing was trained.",
        configs.len(),
        if studies.is_empty() {
            String::new()
        } else {
            format!(" and {} searched entries", studies.len())
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// A searched entry's space, as `validate --json` lists it.
fn study_json(study: &config::Study) -> serde_json::Value {
    json!({
        "name": study.name,
        "kind": study.base.kind,
        "strategy": study.search.strategy,
        "trials": study.search.trials,
        "timeout_s": study.search.timeout_s,
        "seed": study.seed,
        "space": study.describe(),
    })
}

/// A searched entry: how it is searched, its space and its fixed values.
fn print_study(study: &config::Study) {
    let s = &study.search;
    let budget = match (s.trials, s.timeout_s) {
        (Some(t), Some(secs)) => format!("{t} trials or {secs} s"),
        (Some(t), None) => format!("{t} trials"),
        (None, Some(secs)) => format!("{secs} s"),
        (None, None) => "no budget".into(),
    };
    let startup = match s.strategy.as_str() {
        "tpe" => format!(
            " ({} random first{})",
            s.startup_trials.unwrap_or(10),
            if s.multivariate.unwrap_or(true) {
                ", multivariate"
            } else {
                ", univariate"
            }
        ),
        _ => String::new(),
    };
    println!(
        "{} ({}): {} search{startup}, {budget}, {}, trials named {}#1, {}#2, ...",
        study.name,
        study.base.kind,
        s.strategy,
        pruning(s),
        study.name,
        study.name
    );
    for line in study.describe() {
        println!("  {line}");
    }
}

/// How a search prunes its trials, in words (only TPE prunes).
fn pruning(s: &config::SearchConfig) -> String {
    use crate::sweep::prune::{ASHA_MIN_ROUNDS, ASHA_REDUCTION_FACTOR};
    if s.strategy != "tpe" {
        return "no pruning".into();
    }
    match s.prune.as_deref() {
        Some("none") => "no pruning".into(),
        Some("rounds") => "median pruning after each fold and each round of the first".into(),
        Some("asha") => format!(
            "median pruning after each fold, successive halving of the first fold's rounds (rungs after {} rounds, x{}, keeping the best 1/{})",
            s.min_rounds.unwrap_or(ASHA_MIN_ROUNDS),
            s.reduction_factor.unwrap_or(ASHA_REDUCTION_FACTOR),
            s.reduction_factor.unwrap_or(ASHA_REDUCTION_FACTOR)
        ),
        _ => "median pruning after each fold".into(),
    }
}
