//! `runner`: machine-learning experiments on tabular data, end to end.

// No unwrap, expect or panic where user input can reach (tests may); each remaining one is
// allowed where it stands, with its reason. Every function fits on a screen (clippy.toml).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(clippy::too_many_lines)]

use runner::commands::{
    diff, eda, export, models, predict, register, reload_etl, replay, runs, show, validate,
    wandb_sync,
};
use runner::sweep;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "runner",
    version,
    propagate_version = true,
    about = "Runs machine-learning experiments on tabular data: ETL, sweeps, cross-validation, MLflow tracking",
    after_help = "Examples:\n  runner sweep configs/wine.toml\n  runner runs --sort accuracy --limit 5\n  runner replay t3 --check\n\nExit codes: 0 success; 1 a run failed or the store could not be written; 2 a mistake in the\ncommand line, config, sweep or data, found before anything was written; 130 a sweep stopped by\nCtrl-C (its unfinished runs and its parent run end KILLED)."
)]
struct Cli {
    /// Tracking store (sqlite:///relative.db, sqlite:////absolute.db, or an MLflow tracking
    /// server http(s)://host:port, which is then the store); default: MLFLOW_TRACKING_URI,
    /// else the config's tracking.uri, else sqlite:///mlflow.db.
    #[arg(long, global = true, value_name = "URI")]
    tracking_uri: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Configs trained at once: 1 or more.
fn jobs_arg(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (configs trained at once)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("\"{v}\" is not a whole number of jobs (1, 2, ...)")),
    }
}

/// `--search` and `--trials`, over every sweep file's `[search]`.
#[derive(clap::Args)]
struct SearchArgs {
    /// Search every sweep file this way: grid, random or tpe (ranges and lists of values are
    /// searched; see the README).
    #[arg(long, value_name = "STRATEGY", value_parser = ["grid", "random", "tpe"])]
    search: Option<String>,
    /// Trials per searched entry (random, tpe).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    trials: Option<u64>,
}

impl SearchArgs {
    fn into_override(self) -> Option<runner::config::SearchOverride> {
        (self.search.is_some() || self.trials.is_some()).then(|| runner::config::SearchOverride {
            strategy: self.search,
            trials: self.trials.map(|t| t as usize),
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train every model config of the config's sweeps with cross-validation and log the runs.
    #[command(
        after_help = "Examples:\n  runner sweep configs/wine.toml\n  runner sweep configs/wine.toml --only random_forest --set cv.folds=10\n  runner sweep configs/wine.toml --ensemble top=3 --json > results.json"
    )]
    Sweep {
        /// The experiment config (TOML): data, ETL, CV, tracking, and the sweep files to train.
        config: PathBuf,
        /// Override a config key, e.g. cv.folds=10, or a model parameter for every config that
        /// has it, e.g. models.n_trees=50.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Train only configs whose name starts with NAME (repeatable).
        #[arg(long, value_name = "NAME")]
        only: Vec<String>,
        /// Configs trained in parallel, at least 1 (default: the number of cores).
        #[arg(long, value_name = "N", value_parser = jobs_arg)]
        jobs: Option<usize>,
        /// Train every config once on a small split with few rounds: a quick check for CI.
        #[arg(long)]
        smoke: bool,
        /// Print the results as JSON on stdout (see the README for the schema).
        #[arg(long)]
        json: bool,
        /// Number the sweep's training runs from tN on, e.g. t100 (every number needed must be
        /// free); default: the next free number.
        #[arg(long, value_name = "tN", value_parser = sweep::check_version_arg)]
        first_run: Option<i64>,
        /// After the sweep, train a soft-voting and a stacking ensemble of the N best configs
        /// (by the primary metric), e.g. top=3.
        #[arg(long, value_name = "top=N", value_parser = sweep::check_ensemble_arg)]
        ensemble: Option<usize>,
        /// Print every leaderboard column, however wide the terminal.
        #[arg(long)]
        wide: bool,
        /// Register the best run that has an MLflow model in the Model Registry as NAME
        /// (with the alias after '@', such as wine@champion).
        #[arg(long, value_name = "NAME[@ALIAS]", value_parser = register::check_register_arg)]
        register_best: Option<(String, Option<String>)>,
        #[command(flatten)]
        search: SearchArgs,
        /// Train only shard i of n: the configs whose index (in the sweep files' order) is i
        /// mod n. Without it, a Kubernetes Indexed Job's JOB_COMPLETION_INDEX or a Slurm
        /// array's SLURM_ARRAY_TASK_ID gives i.
        #[arg(long, value_name = "i/n", value_parser = runner::shard::parse_shard_arg)]
        shard: Option<(usize, usize)>,
        /// The number of shards when the environment gives only the index (default:
        /// RUNNER_SHARD_COUNT, else SLURM_ARRAY_TASK_COUNT).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        shard_count: Option<u64>,
        /// Start the sweep anew under its name: train every config again, with new runs,
        /// instead of continuing the stored sweep (which trains only configs without a
        /// FINISHED run).
        #[arg(long)]
        restart: bool,
    },
    /// Parse and check the config and its sweeps, print the expanded configs, train nothing.
    #[command(
        after_help = "Examples:\n  runner validate configs/wine.toml\n  runner validate configs/wine.toml --set cv.folds=10 --json"
    )]
    Validate {
        /// The experiment config (TOML) to check, with the sweep files it names.
        config: PathBuf,
        /// Override a config key before checking, as with `runner sweep --set`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Print the resolved config and expanded model configs as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        search: SearchArgs,
    },
    /// Explore the config's ETL output: target distribution, feature statistics, correlations,
    /// cluster-to-target diagnostics; logged as an MLflow run tagged EDA.
    #[command(
        after_help = "Examples:\n  runner eda configs/wine.toml\n  runner eda configs/wine.toml --out eda.md\n  runner eda configs/wine.toml --json | jq .target"
    )]
    Eda {
        /// The experiment config (TOML) whose data and ETL to explore.
        config: PathBuf,
        /// Override a config key first, as with `runner sweep --set`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Also write the Markdown report to this file.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Print the analysis as JSON instead of Markdown.
        #[arg(long)]
        json: bool,
    },
    /// List every model kind with its hyperparameters, types, defaults and ranges.
    #[command(
        after_help = "Examples:\n  runner models\n  runner models --json | jq '.kinds[].kind'"
    )]
    Models {
        /// Print the kinds and their parameters as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Where each config of a named (sharded) sweep stands across shards and retries, and the
    /// whole sweep's leaderboard once every config has ended.
    #[command(
        after_help = "Examples:\n  runner sweep-status wine-3fa2c1d0\n  runner sweep-status wine-3fa2c1d0 --json | jq .complete"
    )]
    SweepStatus {
        /// The sweep's name (`sweep.name`, or the one `runner sweep` printed).
        name: String,
        /// Print the configs' states (and the leaderboard) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the training runs in the store, with their state and primary metric.
    #[command(
        after_help = "Examples:\n  runner runs\n  runner runs --experiment wine --sort accuracy --limit 10\n  runner runs --status failed --json"
    )]
    Runs {
        /// Only runs of this experiment.
        #[arg(long, value_name = "NAME")]
        experiment: Option<String>,
        /// Order by this metric's mean, best first (e.g. accuracy, mae); default: by run number.
        #[arg(long, value_name = "METRIC")]
        sort: Option<String>,
        /// Only runs in this state: finished, failed, running, scheduled or killed.
        #[arg(long, value_name = "STATE")]
        status: Option<String>,
        /// Show at most N runs (after filtering and sorting).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Print every column, however wide the terminal.
        #[arg(long)]
        wide: bool,
        /// Print the runs as JSON (see the README for the schema).
        #[arg(long)]
        json: bool,
    },
    /// Rebuild ETL version vN from the store's record alone, verifying input hash and fingerprint.
    #[command(
        after_help = "Examples:\n  runner reload-etl v1\n  runner reload-etl v2 --input /data/moved.csv --out v2.parquet"
    )]
    ReloadEtl {
        /// The ETL version to rebuild: v1, v2, ...
        version: String,
        /// A moved copy of the recorded input file (its hash must still match).
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Write the rebuilt table to a .parquet or .csv file.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Print the verification result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Retrain training run tN exactly from the store, log it as a new run, compare fold metrics.
    #[command(
        after_help = "Examples:\n  runner replay t3\n  runner replay t3 --check\n  runner replay t3 --set seed=7 --set cv.folds=10"
    )]
    Replay {
        /// The training run to retrain: t1, t2, ...
        version: String,
        /// Exit non-zero unless every fold metric matches bit for bit.
        #[arg(long)]
        check: bool,
        /// Replay with a change: seed, threads, fold_jobs (CV folds trained at once),
        /// cv.folds, cv.repeats, cv.stratified, cv.holdout, pruned=false (a pruned trial in
        /// full), refit=true (a search trial scored by CV only, refitted and saved), or a
        /// model hyperparameter.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// A moved copy of the recorded input file (its hash must still match).
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Print the new run and the comparison as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send W&B data that could not be sent (or was spooled offline), resuming where it stopped.
    #[command(
        after_help = "Examples:\n  runner wandb-sync\n  runner wandb-sync t3 t4 --timeout 60"
    )]
    WandbSync {
        /// Training runs to send (default: every run with unsent W&B data).
        versions: Vec<String>,
        /// Give up after this many seconds per run.
        #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
        timeout: f64,
        /// Print what was sent per run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what differs between two training runs: settings, ETL and metrics.
    #[command(after_help = "Examples:\n  runner diff t1 t2\n  runner diff t3 t9 --json")]
    Diff {
        /// The first training run (tN).
        a: String,
        /// The second training run (tN).
        b: String,
        /// Print the differences as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Predict new data with training run tN's saved model: the run's ETL, preprocessing and
    /// label mapping applied; the input's columns and types must match what tN was trained on.
    #[command(
        after_help = "Examples:\n  runner predict t3 --input new.csv\n  runner predict t3 --input new.parquet --proba --out predictions.csv"
    )]
    Predict {
        /// The training run whose model predicts: t1, t2, ..., or a registered model's
        /// version: models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/latest.
        version: String,
        /// New data (.csv, .csv.gz, .tsv, .parquet, .ndjson/.jsonl, .arrow/.feather/.ipc) with
        /// the run's feature columns (the target may be absent).
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Write the CSV here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Add one probability column per class (classification).
        #[arg(long)]
        proba: bool,
    },
    /// Register training run tN's MLflow model as the next version of a registered model, which
    /// `mlflow.pyfunc.load_model("models:/NAME@ALIAS")` and `runner predict models:/NAME@ALIAS`
    /// load.
    #[command(
        after_help = "Examples:\n  runner register t3 --name wine-quality --alias champion\n  runner predict models:/wine-quality@champion --input new.csv"
    )]
    Register {
        /// The training run whose model is registered: t1, t2, ...
        version: String,
        /// The registered model (created if new).
        #[arg(long, value_parser = register::check_model_name)]
        name: String,
        /// Point this alias (champion, staging, ...) at the new version.
        #[arg(long, value_parser = register::check_alias)]
        alias: Option<String>,
    },
    /// Export training run tN's model for deployment: native (the library's own files and
    /// runner's preprocessing and labels), onnx (every kind, preprocessing included; numeric
    /// inputs) or torchscript (the networks).
    #[command(
        after_help = "Examples:\n  runner export t3 --format onnx --out model/\n  runner export t5 --format native --out t5-native/"
    )]
    Export {
        /// The training run to export: t1, t2, ...
        version: String,
        /// The format: native, onnx or torchscript.
        #[arg(long, value_parser = ["native", "onnx", "torchscript"])]
        format: String,
        /// Folder to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Show one training run (tN) or ETL version (vN) in full.
    #[command(
        after_help = "Examples:\n  runner show t3\n  runner show v1\n  runner show t3 --json | jq .metrics"
    )]
    Show {
        /// A training run (t1, t2, ...) or an ETL version (v1, v2, ...).
        version: String,
        /// Print everything recorded as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script for runner.
    #[command(
        after_help = "Examples:\n  runner completions bash > /etc/bash_completion.d/runner\n  runner completions zsh > ~/.zfunc/_runner\n  runner completions fish > ~/.config/fish/completions/runner.fish"
    )]
    Completions {
        /// The shell: bash, zsh, fish, powershell or elvish.
        shell: clap_complete::Shell,
    },
}

/// Output piped into `head` and the like: a closed stdout ends the program quietly with exit 0,
/// as ripgrep and cargo do, instead of `println!`'s panic.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Ctrl-C during a sweep: the first asks training to stop (the runs in progress and those not
/// started end KILLED, the leaderboard of what finished is printed, exit code 130); a second
/// ends the process at once (the next command marks its runs KILLED).
extern "C" fn on_sigint(_: libc::c_int) {
    if runner::interrupt::requested() {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) }
    }
    runner::interrupt::request();
}

fn stop_sweep_on_ctrl_c() {
    // SAFETY: the handler only reads and stores an atomic flag or calls _exit, both
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

fn main() -> ExitCode {
    runner::PROCESS_START.get_or_init(std::time::Instant::now);
    quiet_on_broken_pipe();
    // A write past the file-size limit (ulimit -f) then fails with an error that runner reports
    // and records, like a full disk, instead of killing the process mid-run.
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    let result = run(cli);
    runner::models::end_network_helpers();
    match result {
        Ok(code) => code,
        Err(e) => {
            let e = runner::types::Error::from(e);
            if e.exit_code() != 0 {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// The commands that only read the store, or nothing.
fn run_query(command: Command, uri: Option<&str>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate {
            config,
            sets,
            json,
            search,
        } => {
            let search = search.into_override();
            validate::validate_command(&config, &sets, uri, json, search.as_ref())
        }
        Command::Models { json } => models::models_command(json),
        Command::Eda {
            config,
            sets,
            out,
            json,
        } => eda::eda_command(&config, &sets, uri, json, out.as_deref()),
        Command::Runs {
            experiment,
            sort,
            status,
            limit,
            wide,
            json,
        } => {
            let filter = runs::RunsFilter {
                experiment,
                sort,
                status,
                limit,
            };
            runs::runs_command(uri, &filter, wide, json)
        }
        Command::Show { version, json } => show::show_command(uri, &version, json),
        Command::SweepStatus { name, json } => {
            runner::commands::sweep_status::sweep_status_command(uri, &name, json)
        }
        Command::WandbSync {
            versions,
            timeout,
            json,
        } => wandb_sync::wandb_sync_command(uri, &versions, timeout, json),
        Command::Predict {
            version,
            input,
            out,
            proba,
        } => predict::predict_command(uri, &version, &input, out.as_deref(), proba),
        Command::Export {
            version,
            format,
            out,
        } => export::export_command(uri, &version, &format, &out),
        Command::Register {
            version,
            name,
            alias,
        } => register::register_command(uri, &version, &name, alias.as_deref()),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "runner", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff { a, b, json } => {
            let store = sweep::tracking_path(uri, None)?;
            diff::diff_command(&store, &a, &b, json)
        }
        // `run` handles the commands that train or rebuild; passed back if they arrive here.
        Command::Sweep { .. } | Command::ReloadEtl { .. } | Command::Replay { .. } => run(Cli {
            tracking_uri: uri.map(str::to_string),
            command,
        }),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let uri = cli.tracking_uri.as_deref();
    match cli.command {
        Command::Sweep {
            config,
            sets,
            only,
            jobs,
            smoke,
            json,
            first_run,
            ensemble,
            wide,
            register_best,
            search,
            shard,
            shard_count,
            restart,
        } => {
            let opts = sweep::SweepOptions {
                search: search.into_override(),
                sets,
                only,
                jobs,
                smoke,
                json,
                tracking_uri: cli.tracking_uri.clone(),
                version: first_run,
                ensemble_top: ensemble,
                wide,
                parent_run: None,
                register_best,
                shard,
                shard_count: shard_count.map(|n| n as usize),
                restart,
                sweep_name: None,
            };
            stop_sweep_on_ctrl_c();
            runner::commands::sweep::sweep_command(&config, &opts)
        }
        Command::ReloadEtl {
            version,
            input,
            out,
            json,
        } => {
            let store = sweep::tracking_path(uri, None)?;
            reload_etl::reload_etl_command(&store, &version, input.as_deref(), out.as_deref(), json)
        }
        Command::Replay {
            version,
            check,
            sets,
            input,
            json,
        } => {
            let store = sweep::tracking_path(uri, None)?;
            let request = replay::ReplayRequest {
                store_path: &store,
                tracking_uri: cli.tracking_uri.clone(),
                version: &version,
                check,
                sets: &sets,
                input: input.as_deref(),
            };
            replay::replay_command(&request, json)
        }
        other => run_query(other, uri),
    }
}
