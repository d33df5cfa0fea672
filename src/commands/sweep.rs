//! `runner sweep <config>`: checks everything, starts the sweep's parent run, trains the
//! configs (an ask/tell loop, `schedule`) and prints the leaderboard.

use crate::config::{self, ConfigError};
use crate::models;
use crate::report;
use crate::shard::{self, Shard};
use crate::sweep::{self, SweepOptions};
use crate::sweep_parent::{self, ConfigState};
use crate::track::mlflow::{MlflowStore, TrainingRunRow};
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

/// What a sweep did, for the CLI to print and the Python package to return.
pub struct SweepOutcome {
    /// The whole sweep's leaderboard (every config's run, this process's and stored ones).
    pub report: sweep::SweepReport,
    /// Where the sweep stands, in one line.
    pub status_line: String,
    /// A run of this process, the parent run or `--register-best` failed.
    pub failed: bool,
    /// An interrupt stopped the sweep: its unfinished runs and its parent ended KILLED.
    pub interrupted: bool,
}

impl SweepOutcome {
    /// 130 after an interrupt (as a shell reports Ctrl-C), 1 after a failure, else 0.
    pub fn exit_code(&self) -> ExitCode {
        if self.interrupted {
            ExitCode::from(130)
        } else if self.failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

pub fn sweep_command(path: &Path, opts: &SweepOptions) -> Result<ExitCode> {
    let loaded = config::load_config(path, &opts.sets)?;
    let outcome = run_sweep(loaded, opts)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&outcome.report)?);
    } else {
        report::print_sweep(&outcome.report, opts.wide);
        println!("{}", outcome.status_line);
    }
    Ok(outcome.exit_code())
}

/// Checks a loaded config and everything it names, joins (or starts) its named sweep, trains
/// what is still to train and completes the sweep's parent run when every config has ended.
pub fn run_sweep(mut loaded: config::LoadedConfig, opts: &SweepOptions) -> Result<SweepOutcome> {
    crate::interrupt::clear();
    let path = loaded.path.clone();
    let path = path.as_path();
    loaded.search_override = opts.search.clone();
    let prep = sweep::prepare(loaded)?;
    let mut expanded = config::expand_sweeps(&prep.loaded, prep.task)?;
    let bases: Vec<models::ModelConfig> = expanded.studies.iter().map(|s| s.base.clone()).collect();
    crate::sweep::check_class_params(&expanded.configs, &prep)?;
    crate::sweep::check_class_params(&bases, &prep)?;
    let store_path = sweep::tracking_path(opts.tracking_uri.as_deref(), Some(&prep.loaded))?;
    sweep::resolve_run_members(&mut expanded.configs, &store_path, prep.task, path)?;
    let expanded = select_only(expanded, &opts.only, path)?;
    let shard = shard::resolve(opts.shard, opts.shard_count)?;
    check_shardable(&shard, &expanded, opts)?;
    let name = shard::sweep_name(&prep, &expanded, opts.smoke)?;
    let entries = shard::entries(&expanded.configs);
    if !opts.restart {
        sweep_parent::check_same_plan(&store_path, &name, &entries)?;
    }
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
    let file = prep.loaded.path.display().to_string();
    crate::track::check_others(&prep.loaded.config.tracking, &file)?;
    check_first_run_free(&store_path, opts.version, planned)?;
    let parent = sweep_parent::join(&prep, opts, &name, &entries, planned)?;
    let opts = SweepOptions {
        parent_run: Some(parent.run_uuid.clone()),
        sweep_name: Some(name.clone()),
        // Resolved (from the flag or the environment): a search's shard takes its share.
        shard: (shard.count > 1).then_some((shard.index, shard.count)),
        ..opts.clone()
    };
    let searches: Vec<sweep_parent::SearchPlan> = (expanded.studies.iter())
        .map(|s| sweep_parent::SearchPlan {
            name: s.name.clone(),
            trials: s.search.trials.unwrap_or(0),
            best_run: s.search.refit.as_deref() != Some("every"),
        })
        .collect();
    let trained =
        my_configs(&parent, &shard, &entries, expanded.configs, opts.json).and_then(|configs| {
            let studies = expanded.studies;
            if configs.is_empty() && studies.is_empty() {
                return Ok(None);
            }
            let expanded = config::Expanded { configs, studies };
            train_batches(&prep, expanded, &opts).map(Some)
        });
    let trained = match trained {
        Ok(r) => r,
        Err(e) => {
            sweep_parent::fail(&parent);
            return Err(e);
        }
    };
    conclude(
        &prep,
        &parent,
        (&entries, &searches),
        &shard,
        trained,
        &opts,
        &store_path,
    )
}

/// After training: the whole sweep's report; the parent run completed (every config ended),
/// left to the other shards, or KILLED after an interrupt; the best run registered.
#[allow(clippy::too_many_arguments)]
fn conclude(
    prep: &sweep::Prepared,
    parent: &sweep_parent::SweepParent,
    (entries, searches): (&[shard::Entry], &[sweep_parent::SearchPlan]),
    shard: &Shard,
    trained: Option<sweep::SweepReport>,
    opts: &SweepOptions,
    store_path: &Path,
) -> Result<SweepOutcome> {
    let name = &parent.name;
    let my_failed = (trained.iter().flat_map(|r| &r.runs))
        .any(|r| r.status != "FINISHED" && r.pruned.is_none());
    let sharded = shard.count > 1;
    let (mut report, progress, search_runs) = whole_sweep(prep, parent, entries, trained, sharded)?;
    let interrupted = crate::interrupt::requested();
    // A sharded search has ended once every shard's trials and its best run have.
    let searched = !sharded || sweep_parent::searches_ended(searches, &search_runs);
    let complete = !interrupted && searched && progress.iter().all(|p| p.state.ended());
    report.sweep = Some(sweep_summary(name, shard, &progress, complete));
    // An interrupted shard leaves the parent to the others.
    let parent_done = if interrupted && shard.count == 1 {
        sweep_parent::kill(parent)
    } else if interrupted {
        sweep_parent::leave(parent)
    } else if complete {
        sweep_parent::finish(parent, prep, &mut report)
    } else {
        sweep_parent::leave(parent)
    };
    if let Err(e) = &parent_done {
        // The runs are logged; only the summary run is incomplete. Say so, and report them.
        eprintln!("error: the sweep's parent run could not be completed: {e:#}");
        sweep_parent::fail(parent);
    }
    let registered = match (&opts.register_best, interrupted) {
        (Some((name, alias)), false) => MlflowStore::open_existing(store_path).and_then(|store| {
            super::register::register_best(&store, &report, name, alias.as_deref())
        }),
        _ => Ok(()),
    };
    if let Err(e) = &registered {
        eprintln!("error: {e:#}");
    }
    let mut status_line = progress_line(name, shard, &progress, complete);
    if interrupted {
        status_line = format!("sweep {name}: interrupted; its unfinished runs and its parent run are KILLED (running it again trains what has no FINISHED run)");
    }
    Ok(SweepOutcome {
        report,
        status_line,
        failed: my_failed || parent_done.is_err() || registered.is_err(),
        interrupted,
    })
}

/// What a shard cannot split: a search without a number of trials (its shards could not tell
/// when it has ended); `--ensemble top=N` needs every shard's results; numbers from
/// `--first-run` would collide; and `--restart` in every shard would start as many sweeps.
fn check_shardable(shard: &Shard, expanded: &config::Expanded, opts: &SweepOptions) -> Result<()> {
    if shard.count == 1 {
        return Ok(());
    }
    let untold = (expanded.studies.iter()).any(|s| s.search.trials.is_none());
    let refusal = if untold {
        Some("a sharded TPE search needs `trials` (with `timeout_s` alone its shards could not tell when the search has ended): set [search] trials, or --trials")
    } else if opts.ensemble_top.is_some() {
        Some("--ensemble top=N needs every shard's results: train the ensembles after the sweep, in one process")
    } else if opts.version.is_some() {
        Some("--first-run cannot number the runs of several shards: leave it out")
    } else if opts.restart {
        Some("--restart in every shard would start one sweep each: start the sweep anew by giving it another `sweep.name`")
    } else {
        None
    };
    match refusal {
        Some(why) => bail!(ConfigError::new(
            shard.origin.clone(),
            format!("shard {}/{}: {why}", shard.index, shard.count)
        )),
        None => Ok(()),
    }
}

/// This shard's configs that still need a run: those without a FINISHED run and not being
/// trained by another process. Says what it skips.
fn my_configs(
    parent: &sweep_parent::SweepParent,
    shard: &Shard,
    entries: &[shard::Entry],
    configs: Vec<models::ModelConfig>,
    quiet: bool,
) -> Result<Vec<models::ModelConfig>> {
    let progress = sweep_parent::open_progress(parent, entries)?;
    let mine: Vec<&sweep_parent::ConfigProgress> = progress
        .iter()
        .filter(|p| shard.owns(p.entry.index))
        .collect();
    let todo = mine.iter().filter(|p| p.state.needs_run()).count();
    if !quiet && (shard.count > 1 || !parent.created) {
        let done = count(mine.iter().copied(), ConfigState::Finished);
        let busy = count(mine.iter().copied(), ConfigState::Running);
        let whose = if shard.count > 1 {
            format!(
                "shard {}/{} (from {}) has {} of its configs",
                shard.index,
                shard.count,
                shard.origin,
                mine.len()
            )
        } else {
            format!("{} configs", mine.len())
        };
        let how = if parent.created { "new" } else { "continued" };
        eprintln!(
            "sweep {} ({how}): {whose}; {done} finished before, {busy} training elsewhere, {todo} to train",
            parent.name,
        );
    }
    // `progress` lists the configs in their order.
    Ok((configs.into_iter().zip(&progress))
        .filter(|(_, p)| shard.owns(p.entry.index) && p.state.needs_run())
        .map(|(c, _)| c)
        .collect())
}

/// The whole sweep's report: this process's runs and the stored runs of every other config
/// (other shards', earlier attempts'), by number; with where each config stands.
fn whole_sweep(
    prep: &sweep::Prepared,
    parent: &sweep_parent::SweepParent,
    entries: &[shard::Entry],
    trained: Option<sweep::SweepReport>,
    sharded: bool,
) -> Result<(
    sweep::SweepReport,
    Vec<sweep_parent::ConfigProgress>,
    Vec<TrainingRunRow>,
)> {
    let progress = sweep_parent::open_progress(parent, entries)?;
    // A sharded search's trials, every shard's (unsharded, the report holds this sweep's).
    let search_runs = match sharded {
        true => sweep_parent::search_runs(parent)?,
        false => Vec::new(),
    };
    let mut report = match trained {
        Some(r) => r,
        None => sweep_parent::empty_report(prep, parent)?,
    };
    let mine: std::collections::BTreeSet<String> =
        report.runs.iter().map(|r| r.run_uuid.clone()).collect();
    let listed = progress.iter().filter_map(|p| p.run.as_ref());
    let stored = (listed.chain(&search_runs))
        .filter(|run| !mine.contains(&run.run_uuid))
        .map(sweep_parent::stored_result);
    report.runs.extend(stored.collect::<Vec<_>>());
    report
        .runs
        .sort_by_key(|r| sweep::parse_version(&r.version, 't').unwrap_or(i64::MAX));
    Ok((report, progress, search_runs))
}

fn count<'a>(
    progress: impl IntoIterator<Item = &'a sweep_parent::ConfigProgress>,
    state: ConfigState,
) -> usize {
    progress.into_iter().filter(|p| p.state == state).count()
}

/// The sweep's state for `--json`: name, shard, and how many configs stand where.
fn sweep_summary(
    name: &str,
    shard: &Shard,
    progress: &[sweep_parent::ConfigProgress],
    complete: bool,
) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "shard": format!("{}/{}", shard.index, shard.count),
        "configs": progress.len(),
        "finished": count(progress, ConfigState::Finished),
        "running": count(progress, ConfigState::Running),
        "failed": count(progress, ConfigState::Failed),
        "killed": count(progress, ConfigState::Killed),
        "missing": count(progress, ConfigState::Missing),
        "complete": complete,
    })
}

fn progress_line(
    name: &str,
    shard: &Shard,
    progress: &[sweep_parent::ConfigProgress],
    complete: bool,
) -> String {
    let finished = count(progress, ConfigState::Finished);
    if complete {
        return format!("sweep {name}: complete, {finished} of {} configs finished (running it again trains only what has no FINISHED run; --restart trains all anew)", progress.len());
    }
    format!(
        "sweep {name}: shard {}/{} done; {finished} of {} configs finished, {} training, {} failed, {} killed, {} not started: runner sweep-status {name}",
        shard.index,
        shard.count,
        progress.len(),
        count(progress, ConfigState::Running),
        count(progress, ConfigState::Failed),
        count(progress, ConfigState::Killed),
        count(progress, ConfigState::Missing),
    )
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
                crate::track::store_label(store_path),
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
