//! The sweep loop: asks a [`Strategy`] for configs, creates their runs, trains them on `--jobs`
//! worker threads and tells the strategy how each ended.
//!
//! Every config the strategy can give without waiting on a result is taken at once, and its
//! runs are created together (SCHEDULED, numbered in the order asked, in one transaction), so a
//! grid sweep shows all its runs from the start and numbers them as before. A strategy that
//! waits (an ensemble on its members, an adaptive search on results) is asked again after each
//! tell. Workers pull the next created run.

use crate::config;
use crate::config::Study;
use crate::models::ModelConfig;
use crate::search::{
    Ask, Chain, EarlierTrial, Listed, SearchShard, Strategy, Told, TopEnsembles, Tpe,
};
use crate::search_store::{self, Curves};
use crate::shard::config_key;
use crate::sweep::{
    self, dataset_input, make_splits, members_tag, run_one, run_params, run_record, run_tags,
    tracking_path, user, Prepared, Progress, RunResult, Splits, SweepOptions, SweepReport,
    TrainPlan, GIT_COMMIT,
};
use crate::track::mlflow::sweeps::SWEEP_NAME_TAG;
use crate::track::mlflow::MlflowStore;
use crate::track::{now_ms, open_others, wandb, RunSpec, TrackedRun, Tracker, Trackers};
use anyhow::{anyhow, Result};
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

/// A created run waiting for a worker.
struct Job {
    plan: TrainPlan,
    splits: Splits,
    spec: RunSpec,
    record: serde_json::Value,
    version: i64,
}

/// How long a kind usually trains, coarsely: workers take the heaviest queued runs first, so
/// that a long run does not start last and leave the other workers idle at the end (the wine
/// sweep's networks, two thirds of its training time, came last in its sweep file).
fn training_weight(kind: &str) -> u8 {
    match kind {
        "mlp" | "cnn" | "lstm" => 3,
        "svm" | "xgboost" | "lightgbm" | "voting" | "stacking" => 2,
        "random_forest" => 1,
        _ => 0,
    }
}

/// What the workers share, under one lock.
struct State {
    strategy: Box<dyn Strategy>,
    queue: VecDeque<Job>,
    /// Runs being trained.
    in_flight: usize,
    /// The strategy said Done, or a run could not be created: no more asking.
    finished: bool,
    /// Why runs stopped being created, if they did.
    error: Option<anyhow::Error>,
    /// Runs created so far: (run id, config, version), for ensembles' member tags.
    created: Vec<(String, ModelConfig, i64)>,
    /// (version, result) of every run trained.
    results: Vec<(i64, RunResult)>,
    /// The sweep's group on trackers that group runs: `<experiment>-t<first>-t<last>` of the
    /// first batch created.
    group: Option<String>,
}

/// Where a sweep's runs go and how plans are made.
struct Sweep<'a> {
    prep: &'a Prepared,
    opts: &'a SweepOptions,
    store: &'a MlflowStore,
    trackers: &'a Trackers<'a>,
    etl_version: i64,
    experiment_id: i64,
    artifact_location: String,
    extra_tags: &'a [(String, String)],
    make_plan: &'a (dyn Fn(&ModelConfig) -> TrainPlan + Sync),
}

impl Sweep<'_> {
    /// A new run for `plan`: its id, params, tags, dataset input and full record.
    /// A search's trial records `search` and is tagged `runner.search` and `runner.trial`.
    fn new_run(
        &self,
        plan: &TrainPlan,
        splits: &Splits,
        search: Option<serde_json::Value>,
        config_key: &str,
    ) -> (RunSpec, serde_json::Value) {
        let prep = self.prep;
        let mut record = run_record(prep, plan, self.etl_version, splits);
        let mut search_tags = Vec::new();
        if let Some(name) = &self.opts.sweep_name {
            record["sweep"] = serde_json::json!({ "name": name, "config": config_key });
            search_tags.push((SWEEP_NAME_TAG.to_string(), name.clone()));
            search_tags.push(("runner.sweep_config".to_string(), config_key.to_string()));
        }
        if let Some(note) = search {
            search_tags.push((
                "runner.search".to_string(),
                note["search"].to_string().trim_matches('"').to_string(),
            ));
            search_tags.push(("runner.trial".to_string(), note["trial"].to_string()));
            if note["best"] == true {
                search_tags.push(("runner.search_best".to_string(), "true".to_string()));
            }
            record["search"] = note;
        }
        let parent = self.opts.parent_run.iter();
        let tags = run_tags(prep, plan, self.etl_version, self.opts.smoke)
            .into_iter()
            .chain(search_tags)
            .chain(self.extra_tags.iter().cloned())
            .chain(parent.map(|p| ("mlflow.parentRunId".to_string(), p.clone())))
            .collect();
        let spec = RunSpec {
            run_uuid: uuid::Uuid::new_v4().simple().to_string(),
            name: plan.model.name.clone(),
            experiment: prep.loaded.config.experiment.clone(),
            user: user(),
            start_ms: now_ms(),
            git_commit: GIT_COMMIT.to_string(),
            params: run_params(prep, plan, self.etl_version),
            tags,
            dataset: Some(dataset_input(prep, self.etl_version)),
        };
        (spec, record)
    }

    /// Takes every config the strategy gives without waiting and creates their runs in one
    /// transaction, numbered in the order asked; then tags ensembles and announces the runs to
    /// every tracker.
    fn refill(&self, state: &mut State) -> Result<()> {
        // A config's search note and pruner are taken as it is asked: a strategy that is done
        // after it no longer knows it.
        let (mut configs, mut notes, mut pruners) = (Vec::new(), Vec::new(), Vec::new());
        let mut refits = Vec::new();
        while !state.finished {
            match state.strategy.ask() {
                Ask::Next(c) => {
                    notes.push(state.strategy.annotate(&c));
                    pruners.push(state.strategy.pruner(&c));
                    refits.push(state.strategy.refits(&c));
                    configs.push(c);
                }
                Ask::Wait => break,
                Ask::Done => state.finished = true,
            }
        }
        if configs.is_empty() {
            return Ok(());
        }
        let plans: Vec<TrainPlan> = (configs.iter().zip(pruners).zip(refits))
            .map(|((c, pruner), refit)| {
                let plan = (self.make_plan)(c);
                TrainPlan {
                    pruner,
                    cv_only: plan.cv_only || !refit,
                    ..plan
                }
            })
            .collect();
        let splits: Vec<Splits> = plans
            .iter()
            .map(|p| make_splits(self.prep.task, &self.prep.y, p, self.prep.fixed_folds()))
            .collect();
        let mut specs: Vec<(RunSpec, String, serde_json::Value)> = (plans.iter().zip(&splits))
            .zip(notes.into_iter().zip(&configs))
            .map(|((plan, sp), (note, config))| {
                let (spec, record) = self.new_run(plan, sp, note, &config_key(config));
                (spec, plan.model.kind.clone(), record)
            })
            .collect();
        let start = self
            .opts
            .version
            .map(|first| first + state.created.len() as i64);
        let versions = self.store.create_runs(
            self.experiment_id,
            &self.artifact_location,
            self.etl_version,
            &mut specs,
            start,
        )?;
        for ((spec, _, _), (plan, v)) in specs.iter().zip(plans.iter().zip(&versions)) {
            state
                .created
                .push((spec.run_uuid.clone(), plan.model.clone(), *v));
        }
        let group = state.group.get_or_insert_with(|| {
            let (first, last) = (versions.first(), versions.last());
            let exp = &self.prep.loaded.config.experiment;
            format!("{exp}-t{}-t{}", first.unwrap_or(&0), last.unwrap_or(&0))
        });
        let group = group.clone();
        for (((spec, kind, record), plan), (sp, version)) in specs
            .into_iter()
            .zip(plans)
            .zip(splits.into_iter().zip(versions))
        {
            self.announce(state, &spec, &kind, &record, &plan, version, &group)?;
            state.queue.push_back(Job {
                plan,
                splits: sp,
                spec,
                record,
                version,
            });
        }
        // A stable sort: configs of one weight keep their order (and their numbers).
        (state.queue.make_contiguous())
            .sort_by_key(|job| std::cmp::Reverse(training_weight(&job.plan.model.kind)));
        Ok(())
    }

    /// Tags an ensemble with its members' runs and creates the run on every tracker.
    #[allow(clippy::too_many_arguments)]
    fn announce(
        &self,
        state: &State,
        spec: &RunSpec,
        kind: &str,
        record: &serde_json::Value,
        plan: &TrainPlan,
        version: i64,
        group: &str,
    ) -> Result<()> {
        let batch: Vec<(String, &ModelConfig, i64)> = state
            .created
            .iter()
            .map(|(id, c, v)| (id.clone(), c, *v))
            .collect();
        if let Some(tag) = members_tag(plan, &batch) {
            let tags = [("runner.members".to_string(), tag)];
            self.store.set_tags(&spec.run_uuid, &tags)?;
        }
        self.trackers.create_run(&TrackedRun {
            spec: spec.clone(),
            version: Some(format!("t{version}")),
            kind: kind.to_string(),
            record: record.clone(),
            curve_axis: crate::models::kind_spec(kind).map_or("step", |k| k.curve_axis),
            group: Some(group.to_string()),
        })
    }

    /// Trains created runs until the strategy is done: each worker takes the next run, trains
    /// it, tells the strategy and asks for more.
    fn work(&self, shared: &(Mutex<State>, Condvar), progress: &Progress) {
        let (lock, ready) = shared;
        loop {
            let job = {
                let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(job) = next_job(&mut state) {
                        break Some(job);
                    }
                    // Nothing queued and nothing training: nothing more will come.
                    if state.in_flight == 0 {
                        break None;
                    }
                    state = ready.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            };
            let Some(job) = job else {
                ready.notify_all();
                return;
            };
            let result = run_one(
                self.prep,
                &job.plan,
                &job.splits,
                &job.spec,
                &job.record,
                job.version,
                self.trackers,
                progress,
            );
            let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
            state.in_flight -= 1;
            self.tell(&mut state, &job, &result);
            state.results.push((job.version, result));
            // After an interrupt nothing new is asked for; what is queued ends KILLED untrained.
            state.finished |= crate::interrupt::requested();
            if let Err(e) = self.refill(&mut state) {
                state.finished = true;
                state.error.get_or_insert(e);
            }
            ready.notify_all();
        }
    }

    fn tell(&self, state: &mut State, job: &Job, result: &RunResult) {
        let metric = &self.prep.primary_metric;
        let score = result.metrics.get(metric).map(|(mean, _)| *mean);
        let folds = result
            .fold_metrics
            .get(metric)
            .map_or(&[][..], Vec::as_slice);
        state.strategy.tell(&Told {
            config: &job.plan.model,
            version: &result.version,
            score,
            folds,
            pruned: result.pruned.is_some(),
            has_model: result.status == "FINISHED" && !job.plan.cv_only,
        });
    }
}

/// Takes the next queued run for a worker: the first (the queue is heaviest first). Networks
/// train side by side, each in its own helper process (`models::nn`).
fn next_job(state: &mut State) -> Option<Job> {
    let job = state.queue.pop_front()?;
    state.in_flight += 1;
    Some(job)
}

/// The plan of each config of a sweep: the config's seed and CV settings, a share of the cores.
fn plan_maker(
    prep: &Prepared,
    jobs: usize,
    smoke: bool,
) -> impl Fn(&ModelConfig) -> TrainPlan + Sync + '_ {
    move |c: &ModelConfig| {
        let mut plans = sweep::plans(prep, std::slice::from_ref(c), jobs, smoke);
        plans.remove(0)
    }
}

/// Runs a sweep whose configs are already expanded and checked, then its studies trial by
/// trial (TPE), then (with `--ensemble top=N`) voting and stacking over its best runs.
pub fn run_sweep(
    prep: &Prepared,
    configs: Vec<ModelConfig>,
    studies: Vec<Study>,
    opts: &SweepOptions,
    progress_quiet: bool,
) -> Result<SweepReport> {
    let trials: usize = studies
        .iter()
        .map(|s| s.search.trials.unwrap_or(usize::MAX / 2))
        .sum();
    let jobs = opts
        .jobs
        .unwrap_or_else(sweep::cores)
        .clamp(1, configs.len().saturating_add(trials).max(1));
    let higher = config::higher_is_better(&prep.primary_metric);
    let mut parts: Vec<Box<dyn Strategy>> = vec![Box::new(Listed::new(configs))];
    // Only a search reads the store's earlier trials (every run's record): grid sweeps skip it.
    let signatures: Vec<String> = studies.iter().map(|s| search_signature(prep, s)).collect();
    let prunes = |how: &str| (studies.iter()).any(|s| s.search.prune.as_deref() == Some(how));
    let curves = match (prunes("asha"), prunes("rounds")) {
        (true, _) => Curves::Every,
        (false, true) => Curves::Finished,
        (false, false) => Curves::None,
    };
    let done = if studies.is_empty() {
        Vec::new()
    } else {
        finished_trials(prep, opts, &signatures, curves)?
    };
    for (study, signature) in studies.into_iter().zip(signatures) {
        let mut tpe = Tpe::new(study, higher, &prep.primary_metric, jobs, signature);
        let earlier: Vec<_> = (done.iter())
            .filter(|(sig, _)| sig == tpe.signature())
            .map(|(_, trial)| trial.clone())
            .collect();
        if !earlier.is_empty() && !progress_quiet {
            eprintln!(
                "continuing the search of {} from the {} trials it finished before",
                earlier[0].config.name.split('#').next().unwrap_or_default(),
                earlier.len()
            );
        }
        let tpe = match search_shard(prep, opts, &tpe, curves)? {
            // A shard reads every shard's trials before each ask, its earlier ones included.
            Some(shard) => tpe.sharded(shard),
            None => {
                tpe.resume(&earlier);
                tpe
            }
        };
        parts.push(Box::new(tpe));
    }
    let chain = Box::new(Chain::new(parts));
    let strategy: Box<dyn Strategy> = match opts.ensemble_top {
        Some(n) => Box::new(TopEnsembles::new(chain, n, higher)),
        None => chain,
    };
    let make_plan = plan_maker(prep, jobs, opts.smoke);
    run_search(prep, strategy, &make_plan, jobs, opts, progress_quiet, &[])
}

/// What identifies a search across sweeps: its study, and the data, ETL, CV, seed and metric
/// it is scored with.
fn search_signature(prep: &Prepared, study: &Study) -> String {
    let c = &prep.loaded.config;
    let identity = serde_json::json!({
        "study": study.identity(),
        "experiment": c.experiment,
        "data": c.data,
        "etl": c.etl,
        "cv": c.cv,
        "seed": c.seed,
        "metric": prep.primary_metric,
    });
    crate::data::sha256_hex(identity.to_string().as_bytes())
}

/// A search in a sharded sweep (`--shard i/n`, n > 1): its share of the trial numbers and
/// the store the shards share.
fn search_shard(
    prep: &Prepared,
    opts: &SweepOptions,
    tpe: &Tpe,
    curves: Curves,
) -> Result<Option<SearchShard>> {
    let (Some((index, count)), Some(parent)) = (opts.shard, &opts.parent_run) else {
        return Ok(None);
    };
    if count < 2 {
        return Ok(None);
    }
    let store = search_store::StoreTrials {
        path: tracking_path(opts.tracking_uri.as_deref(), Some(&prep.loaded))?,
        metric: prep.primary_metric.clone(),
        signature: tpe.signature().to_string(),
        curves,
        parent_run: parent.clone(),
        shard: index,
    };
    Ok(Some(SearchShard {
        index,
        count,
        store: Box::new(store),
    }))
}

/// The trials earlier sweeps of these searches (by signature) finished or pruned, in the order
/// they were numbered, with the first-fold learning curves `curves` asks for.
fn finished_trials(
    prep: &Prepared,
    opts: &SweepOptions,
    signatures: &[String],
    curves: Curves,
) -> Result<Vec<(String, EarlierTrial)>> {
    let path = tracking_path(opts.tracking_uri.as_deref(), Some(&prep.loaded))?;
    search_store::ended_trials(&path, &prep.primary_metric, signatures, curves)
}

/// Trains the given plans as one batch of runs (a replay).
pub fn run_plans(
    prep: &Prepared,
    plans: Vec<TrainPlan>,
    jobs: usize,
    opts: &SweepOptions,
    progress_quiet: bool,
    extra_tags: &[(String, String)],
) -> Result<SweepReport> {
    let configs = plans.iter().map(|p| p.model.clone()).collect();
    let make_plan = |c: &ModelConfig| {
        plans
            .iter()
            .find(|p| p.model == *c)
            .cloned()
            .unwrap_or_else(|| plans[0].clone())
    };
    let strategy = Box::new(Listed::new(configs));
    run_search(
        prep,
        strategy,
        &make_plan,
        jobs,
        opts,
        progress_quiet,
        extra_tags,
    )
}

/// Opens the store and trackers, then runs the ask/tell loop of `strategy` on `jobs` workers.
#[allow(clippy::too_many_arguments)]
pub fn run_search(
    prep: &Prepared,
    strategy: Box<dyn Strategy>,
    make_plan: &(dyn Fn(&ModelConfig) -> TrainPlan + Sync),
    jobs: usize,
    opts: &SweepOptions,
    progress_quiet: bool,
    extra_tags: &[(String, String)],
) -> Result<SweepReport> {
    let started = std::time::Instant::now();
    // W&B settings are checked before anything is written (a missing key is a config error).
    let c = &prep.loaded.config;
    let wandb_settings = wandb::resolve(
        c.tracking.wandb.as_ref(),
        &c.experiment,
        &prep.loaded.path.display().to_string(),
    )?;
    let store_path = tracking_path(opts.tracking_uri.as_deref(), Some(&prep.loaded))?;
    let others = open_others(&c.tracking, wandb_settings, &store_path)?;
    let store = MlflowStore::open(&store_path)?;
    let (etl_version, etl_new) = store.etl_version(&prep.etl_key, &prep.etl_record)?;
    let (experiment_id, artifact_location) = store.experiment(&c.experiment)?;
    let trackers = Trackers::new(&store, others.iter().map(|t| t.as_ref()).collect());
    let sweep = Sweep {
        prep,
        opts,
        store: &store,
        trackers: &trackers,
        etl_version,
        experiment_id,
        artifact_location,
        extra_tags,
        make_plan,
    };
    let folds_per_run = (c.cv.folds * c.cv.repeats + 1) as u64;
    let total = strategy.remaining().unwrap_or(0) as u64 * folds_per_run;
    let mut state = State {
        strategy,
        queue: VecDeque::new(),
        in_flight: 0,
        finished: false,
        error: None,
        created: Vec::new(),
        results: Vec::new(),
        group: None,
    };
    // The first runs are created before anything trains: an error here leaves nothing started.
    sweep.refill(&mut state)?;
    // While it trains, this process says it is alive: a run it leaves behind when killed is
    // recognised as such by the next command.
    let _heartbeat = store.heartbeat()?;
    let progress = Progress::new(total, progress_quiet);
    progress.line(&format!(
        "{} configs, {} {} rows x {} features (ETL v{etl_version}{}), task {} ({}), {jobs} parallel job(s), store {}",
        state.queue.len(),
        prep.table.n_rows,
        c.data.source,
        prep.table.features.len(),
        if etl_new { ", new" } else { "" },
        prep.task,
        prep.task_reason,
        crate::track::store_label(&store_path)
    ));
    let start_to_first_training_ms = crate::PROCESS_START
        .get()
        .map(|t| t.elapsed().as_secs_f64() * 1000.0);
    let shared = (Mutex::new(state), Condvar::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| sweep.work(&shared, &progress));
        }
    });
    progress.finish();
    // Always said, also with --json: data a tracker has not delivered yet needs a sync.
    for note in trackers.close() {
        eprintln!("{note}");
    }
    let wandb_report = others
        .iter()
        .filter_map(|t| t.report())
        .find_map(|(key, value)| (key == "wandb").then_some(value));
    let state = shared.0.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = state.error {
        return Err(e.context("creating the sweep's next runs"));
    }
    let mut results = state.results;
    results.sort_by_key(|(v, _)| *v);
    // A shard whose share of a search has ended elsewhere, or was never there, has nothing to do.
    let sharded = opts.shard.is_some_and(|(_, count)| count > 1);
    if results.is_empty() && !sharded {
        return Err(anyhow!("the sweep trained no run (a search whose trials the store already holds asks for none: raise its `trials`, or `--trials`, to continue it)"));
    }
    Ok(SweepReport {
        schema: crate::JSON_SCHEMA,
        comparison_chart: None,
        parent_run: None,
        sweep: None,
        experiment: c.experiment.clone(),
        store: crate::track::store_label(&store_path),
        etl_version: format!("v{etl_version}"),
        etl_reused: !etl_new,
        task: prep.task,
        task_reason: prep.task_reason.clone(),
        primary_metric: prep.primary_metric.clone(),
        higher_is_better: config::higher_is_better(&prep.primary_metric),
        runs: results.into_iter().map(|(_, r)| r).collect(),
        wall_seconds: started.elapsed().as_secs_f64(),
        start_to_first_training_ms,
        wandb: wandb_report,
    })
}
