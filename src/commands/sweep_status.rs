//! `runner sweep-status NAME`: where each config of a (sharded) sweep stands across shards and
//! retries: finished, training, failed, killed or not started; the whole sweep's leaderboard
//! once every config has ended. Reads the store only.

use super::{derive_killed, open_store};
use crate::config::ConfigError;
use crate::report;
use crate::sweep::{self, SweepReport};
use crate::sweep_parent::{self, ConfigProgress, ConfigState};
use crate::track::mlflow::{MlflowStore, TrainingRunRow};
use anyhow::{bail, Result};
use std::process::ExitCode;

pub fn sweep_status_command(uri: Option<&str>, name: &str, json: bool) -> Result<ExitCode> {
    let store = open_store(uri)?;
    let Some(parent) = store.find_sweep(name)? else {
        let names = store.sweep_names()?;
        let known = if names.is_empty() {
            "the store holds no named sweep".to_string()
        } else {
            format!("sweeps: {}", names.join(", "))
        };
        bail!(ConfigError::new(
            "SWEEP",
            format!("no sweep named `{name}`; {known}")
        ));
    };
    let Some(entries) = sweep_parent::stored_entries(&store, &parent)? else {
        bail!("the sweep `{name}` lists no configs (its parent run {parent} has no {}): it was started by an older runner", sweep_parent::CONFIGS_FILE);
    };
    let mut progress = sweep_parent::progress(&store, &parent, &entries)?;
    // Runs whose process is gone are killed, though no writing command has said so yet.
    let gone = derive_killed(&store)?;
    for p in &mut progress {
        let is_gone = p
            .run
            .as_ref()
            .is_some_and(|r| gone.contains_key(&r.run_uuid));
        if p.state == ConfigState::Running && is_gone {
            p.state = ConfigState::Killed;
        }
    }
    let searches = search_runs(&store, &parent, &gone)?;
    // A search's planned trials are known to its shards only: the shard that saw them all end
    // (and its best run trained) finished the parent.
    let parent_finished = store.run_status(&parent)?.as_deref() == Some("FINISHED");
    let complete =
        progress.iter().all(|p| p.state.ended()) && (searches.is_empty() || parent_finished);
    let report = complete
        .then(|| leaderboard(&store, &parent, &progress, &searches))
        .transpose()?;
    let summaries = search_summaries(&searches);
    if json {
        let doc = serde_json::json!({
            "schema": crate::JSON_SCHEMA,
            "sweep": name,
            "parent_run": parent,
            "complete": complete,
            "configs": progress.iter().map(config_json).collect::<Vec<_>>(),
            "searches": summaries,
            "leaderboard": report,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_configs(name, &progress);
        for s in &summaries {
            println!(
                "search {}: {} trials ended ({} pruned), {} training, {} failed, {} killed; best run {}",
                s["search"].as_str().unwrap_or(""),
                s["ended"],
                s["pruned"],
                s["training"],
                s["failed"],
                s["killed"],
                s["best_run"].as_str().unwrap_or("not trained yet")
            );
        }
        if let Some(report) = &report {
            report::print_sweep(report, false);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn state_word(state: ConfigState) -> &'static str {
    match state {
        ConfigState::Finished => "finished",
        ConfigState::Running => "training",
        ConfigState::Failed => "failed",
        ConfigState::Killed => "killed",
        ConfigState::Missing => "not started",
    }
}

fn config_json(p: &ConfigProgress) -> serde_json::Value {
    serde_json::json!({
        "index": p.entry.index,
        "name": p.entry.name,
        "kind": p.entry.kind,
        "key": p.entry.key,
        "state": p.state,
        "run": p.run.as_ref().map(|r| format!("t{}", r.version)),
    })
}

fn print_configs(name: &str, progress: &[ConfigProgress]) {
    let count = |s: ConfigState| progress.iter().filter(|p| p.state == s).count();
    println!(
        "sweep {name}: {} configs; {} finished, {} training, {} failed, {} killed, {} not started",
        progress.len(),
        count(ConfigState::Finished),
        count(ConfigState::Running),
        count(ConfigState::Failed),
        count(ConfigState::Killed),
        count(ConfigState::Missing)
    );
    let width = progress
        .iter()
        .map(|p| p.entry.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:>5}  {:<width$}  {:<14}  {:<11}  run",
        "index", "config", "kind", "state"
    );
    for p in progress {
        let run = p.run.as_ref().map(|r| format!("t{}", r.version));
        println!(
            "{:>5}  {:<width$}  {:<14}  {:<11}  {}",
            p.entry.index,
            p.entry.name,
            p.entry.kind,
            state_word(p.state),
            run.unwrap_or_else(|| "-".into())
        );
    }
}

/// The runs of the sweep's searches (every shard's trials and best runs); a RUNNING one whose
/// process is gone counts as KILLED.
fn search_runs(
    store: &MlflowStore,
    parent: &str,
    gone: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<TrainingRunRow>> {
    let mut runs: Vec<TrainingRunRow> = (store.sweep_runs(parent)?.into_iter())
        .filter(|r| r.record["search"].is_object())
        .collect();
    for r in &mut runs {
        if r.status == "RUNNING" && gone.contains_key(&r.run_uuid) {
            r.status = "KILLED".into();
        }
    }
    Ok(runs)
}

/// Per search: how many trials ended (finished or pruned), are training, failed or were
/// killed, and its best run.
fn search_summaries(runs: &[TrainingRunRow]) -> Vec<serde_json::Value> {
    let names: std::collections::BTreeSet<&str> = (runs.iter())
        .filter_map(|r| r.record["search"]["search"].as_str())
        .collect();
    let pruned = sweep_parent::was_pruned;
    names
        .into_iter()
        .map(|name| {
            let mine: Vec<&TrainingRunRow> = (runs.iter())
                .filter(|r| r.record["search"]["search"] == name)
                .collect();
            let (best, trials): (Vec<&TrainingRunRow>, Vec<&TrainingRunRow>) = mine
                .into_iter()
                .partition(|r| r.record["search"]["best"] == true);
            let count =
                |f: &dyn Fn(&TrainingRunRow) -> bool| trials.iter().filter(|r| f(r)).count();
            let best_run =
                (best.iter().find(|r| r.status == "FINISHED")).map(|r| format!("t{}", r.version));
            serde_json::json!({
                "search": name,
                "ended": count(&|r| r.status == "FINISHED" || pruned(r)),
                "pruned": count(&|r| pruned(r)),
                "training": count(&|r| r.status == "RUNNING" || r.status == "SCHEDULED"),
                "failed": count(&|r| r.status == "FAILED"),
                "killed": count(&|r| r.status == "KILLED" && !pruned(r)),
                "best_run": best_run,
            })
        })
        .collect()
}

/// The whole sweep's leaderboard from the stored runs, with the parent's settings.
fn leaderboard(
    store: &MlflowStore,
    parent: &str,
    progress: &[ConfigProgress],
    searches: &[TrainingRunRow],
) -> Result<SweepReport> {
    let params: std::collections::BTreeMap<String, String> =
        store.params(parent)?.into_iter().collect();
    let param = |k: &str| params.get(k).cloned().unwrap_or_default();
    let metric = param("primary_metric");
    let listed = progress.iter().filter_map(|p| p.run.as_ref());
    let runs: Vec<_> = listed.chain(searches).collect();
    let etl = runs
        .first()
        .map(|r| format!("v{}", r.etl_version))
        .unwrap_or_default();
    let task = serde_json::from_value(serde_json::Value::from(param("task")))
        .unwrap_or(crate::types::Task::Classification);
    Ok(SweepReport {
        schema: crate::JSON_SCHEMA,
        experiment: param("experiment"),
        store: crate::track::store_label(&store.path),
        etl_version: etl,
        etl_reused: true,
        task,
        task_reason: format!("as the sweep recorded it ({})", param("config")),
        primary_metric: metric.clone(),
        higher_is_better: crate::config::higher_is_better(&metric),
        runs: runs.into_iter().map(sweep_parent::stored_result).collect(),
        wall_seconds: 0.0,
        start_to_first_training_ms: None,
        wandb: None,
        comparison_chart: None,
        parent_run: Some(parent.to_string()),
        sweep: None,
    })
    .map(|mut r| {
        r.runs
            .sort_by_key(|x| sweep::parse_version(&x.version, 't').unwrap_or(i64::MAX));
        r
    })
}
