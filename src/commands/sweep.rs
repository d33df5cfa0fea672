//! `runner sweep <config>`: checks everything, starts the sweep's parent run, trains the
//! configs (an ask/tell loop, `schedule`) and prints the leaderboard.

use crate::config::{self, ConfigError};
use crate::models;
use crate::report;
use crate::sweep::{self, SweepOptions};
use crate::sweep_parent;
use crate::track::mlflow::MlflowStore;
use crate::track::wandb;
use anyhow::{bail, Result};
use std::path::Path;
use std::process::ExitCode;

/// The configs and studies whose names start with one of `--only`'s (all without it).
fn select_only(
    expanded: config::Expanded,
    only: &[String],
    file: &Path,
) -> Result<config::Expanded> {
    if only.is_empty() {
        return Ok(expanded);
    }
    let wanted = |name: &str| only.iter().any(|o| name.starts_with(o.as_str()));
    let names: Vec<String> = (expanded.configs.iter().map(|c| c.name.clone()))
        .chain(expanded.studies.iter().map(|s| s.name.clone()))
        .collect();
    let kept = config::Expanded {
        configs: (expanded.configs.into_iter())
            .filter(|c| wanted(&c.name))
            .collect(),
        studies: (expanded.studies.into_iter())
            .filter(|s| wanted(&s.name))
            .collect(),
    };
    if kept.configs.is_empty() && kept.studies.is_empty() {
        bail!(ConfigError::new(
            file.display().to_string(),
            format!(
                "--only {} matches no model config; names: {}",
                only.join(", "),
                names.join(", ")
            )
        ));
    }
    Ok(kept)
}

pub fn sweep_command(path: &Path, opts: &SweepOptions) -> Result<ExitCode> {
    let mut loaded = config::load_config(path, &opts.sets)?;
    loaded.search_override = opts.search.clone();
    let prep = sweep::prepare(loaded)?;
    let mut expanded = config::expand_sweeps(&prep.loaded, prep.task)?;
    let bases: Vec<models::ModelConfig> = expanded.studies.iter().map(|s| s.base.clone()).collect();
    crate::sweep::check_class_params(&expanded.configs, &prep)?;
    crate::sweep::check_class_params(&bases, &prep)?;
    let store_path = sweep::tracking_path(opts.tracking_uri.as_deref(), Some(&prep.loaded))?;
    sweep::resolve_run_members(&mut expanded.configs, &store_path, prep.task, path)?;
    let expanded = select_only(expanded, &opts.only, path)?;
    if !opts.smoke {
        for w in sweep::size_warnings(&prep, &expanded.configs, &expanded.studies) {
            eprintln!("warning: {w}");
        }
    }
    let planned = expanded.configs.len()
        + (expanded.studies.iter())
            .map(|s| s.search.trials.unwrap_or(0))
            .sum::<usize>();
    // Everything is checked (W&B settings too) before the parent run is written.
    wandb::resolve(
        prep.loaded.config.tracking.wandb.as_ref(),
        &prep.loaded.config.experiment,
        &prep.loaded.path.display().to_string(),
    )?;
    crate::track::check_others(&prep.loaded.config.tracking)?;
    check_first_run_free(&store_path, opts.version, planned)?;
    let parent = sweep_parent::start(&prep, opts, planned)?;
    let opts = SweepOptions {
        parent_run: Some(parent.run_uuid.clone()),
        ..opts.clone()
    };
    let trained = train_batches(&prep, expanded, &opts);
    let mut report = match trained {
        Ok(r) => r,
        Err(e) => {
            sweep_parent::fail(&parent);
            return Err(e);
        }
    };
    let parent_done = sweep_parent::finish(&parent, &prep, &mut report);
    if let Err(e) = &parent_done {
        // The runs are logged; only the summary run is incomplete. Say so, and report them.
        eprintln!("error: the sweep's parent run could not be completed: {e:#}");
        sweep_parent::fail(&parent);
    }
    let registered = match &opts.register_best {
        Some((name, alias)) => MlflowStore::open_existing(&store_path).and_then(|store| {
            super::register::register_best(&store, &report, name, alias.as_deref())
        }),
        None => Ok(()),
    };
    if let Err(e) = &registered {
        eprintln!("error: {e:#}");
    }
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report::print_sweep(&report, opts.wide);
    }
    let failed = (report.runs.iter()).any(|r| r.status != "FINISHED" && r.pruned.is_none())
        || parent_done.is_err()
        || registered.is_err();
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--first-run tN`: every number the sweep needs must be free, checked before anything is
/// written (the store checks again when it numbers the runs).
fn check_first_run_free(store_path: &Path, first: Option<i64>, n: usize) -> Result<()> {
    let Some(first) = first else {
        return Ok(());
    };
    if !store_path.is_file() {
        return Ok(());
    }
    let store = MlflowStore::open_read_only(store_path)?;
    let taken: Vec<String> = store
        .training_runs()?
        .iter()
        .filter(|r| r.version >= first && r.version < first + n as i64)
        .map(|r| format!("t{}", r.version))
        .collect();
    if let Some(t) = taken.first() {
        bail!(ConfigError::new(
            "--first-run",
            format!(
                "training version {t} is already taken in {}; the sweep needs t{first}..t{} free: pick a free number or leave --first-run out",
                store_path.display(),
                first + n as i64 - 1
            )
        ));
    }
    Ok(())
}

/// The sweep's configs and studies, then (with `--ensemble top=N`) their ensembles, as one
/// report.
fn train_batches(
    prep: &sweep::Prepared,
    expanded: config::Expanded,
    opts: &SweepOptions,
) -> Result<sweep::SweepReport> {
    crate::schedule::run_sweep(prep, expanded.configs, expanded.studies, opts, opts.json)
}
