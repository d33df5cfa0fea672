//! `runner`: machine-learning experiments on tabular data, end to end.

use runner::{config, eda, inspect, predict, replay, sweep};

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "runner",
    version,
    about = "Runs machine-learning experiments on tabular data: ETL, sweeps, cross-validation, MLflow tracking"
)]
struct Cli {
    /// Tracking store (sqlite:///relative.db or sqlite:////absolute.db); default:
    /// MLFLOW_TRACKING_URI, else the config's tracking.uri, else sqlite:///mlflow.db.
    #[arg(long, global = true)]
    tracking_uri: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train every model config of the config's sweeps with cross-validation and log the runs.
    Sweep {
        config: PathBuf,
        /// Override a config key, e.g. cv.folds=10, or a model parameter for every config that
        /// has it, e.g. models.n_trees=50.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Train only configs whose name starts with NAME (repeatable).
        #[arg(long, value_name = "NAME")]
        only: Vec<String>,
        /// Configs trained in parallel (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Train every config once on a small split with few rounds: a quick check for CI.
        #[arg(long)]
        smoke: bool,
        /// Print the results as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// First training version to use, e.g. t100 (every number needed must be free).
        #[arg(long, value_parser = sweep::check_version_arg)]
        version: Option<i64>,
        /// After the sweep, train a soft-voting and a stacking ensemble of the N best configs
        /// (by the primary metric), e.g. top=3.
        #[arg(long, value_name = "top=N", value_parser = sweep::check_ensemble_arg)]
        ensemble: Option<usize>,
    },
    /// Parse and check the config and its sweeps, print the expanded configs, train nothing.
    Validate {
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Explore the config's ETL output: target distribution, feature statistics, correlations,
    /// cluster-to-target diagnostics; logged as an MLflow run tagged EDA.
    Eda {
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Also write the Markdown report to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// List every model kind with its hyperparameters, types, defaults and ranges.
    Models {
        #[arg(long)]
        json: bool,
    },
    /// List the training runs in the store.
    Runs {
        #[arg(long)]
        json: bool,
    },
    /// Rebuild ETL version vN from the store's record alone, verifying input hash and fingerprint.
    ReloadEtl {
        version: String,
        /// A moved copy of the recorded input file (its hash must still match).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Write the rebuilt table to a .parquet or .csv file.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Retrain training run tN exactly from the store, log it as a new run, compare fold metrics.
    Replay {
        version: String,
        /// Exit non-zero unless every fold metric matches bit for bit.
        #[arg(long)]
        check: bool,
        /// Replay with a change: seed, threads, cv.folds, cv.repeats, cv.stratified, cv.holdout,
        /// or a model hyperparameter.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// A moved copy of the recorded input file (its hash must still match).
        #[arg(long)]
        input: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Send W&B data that could not be sent (or was spooled offline), resuming where it stopped.
    WandbSync {
        /// Training runs to send (default: every run with unsent W&B data).
        versions: Vec<String>,
        /// Give up after this many seconds per run.
        #[arg(long, default_value_t = 300.0)]
        timeout: f64,
        #[arg(long)]
        json: bool,
    },
    /// Show what differs between two training runs: settings, ETL and metrics.
    Diff {
        a: String,
        b: String,
        #[arg(long)]
        json: bool,
    },
    /// Predict new data with training run tN's saved model: the run's ETL, preprocessing and
    /// label mapping applied; the input's columns and types must match what tN was trained on.
    Predict {
        version: String,
        /// New data (.csv or .parquet) with the run's feature columns (the target may be absent).
        #[arg(long)]
        input: PathBuf,
        /// Write the CSV here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Add one probability column per class (classification).
        #[arg(long)]
        proba: bool,
    },
    /// Export training run tN's model for deployment: native (the library's own files and
    /// runner's preprocessing and labels), onnx (trees, forests, XGBoost, LightGBM, linear and
    /// logistic models, MLP, CNN, LSTM; preprocessing included) or torchscript (the networks).
    Export {
        version: String,
        #[arg(long, value_parser = ["native", "onnx", "torchscript"])]
        format: String,
        /// Folder to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Show one training run (tN) or ETL version (vN) in full.
    Show {
        version: String,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    runner::PROCESS_START.get_or_init(std::time::Instant::now);
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("error: {e:#}");
            if e.downcast_ref::<config::ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
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
            version,
            ensemble,
        } => {
            let opts = sweep::SweepOptions {
                sets,
                only,
                jobs,
                smoke,
                json,
                tracking_uri: cli.tracking_uri.clone(),
                version,
                ensemble_top: ensemble,
                no_chart: false,
            };
            inspect::sweep_command(&config, &opts)
        }
        Command::Validate { config, sets, json } => {
            inspect::validate_command(&config, &sets, uri, json)
        }
        Command::Models { json } => inspect::models_command(json),
        Command::Eda {
            config,
            sets,
            out,
            json,
        } => eda::eda_command(&config, &sets, uri, json, out.as_deref()),
        Command::Runs { json } => inspect::runs_command(uri, json),
        Command::Show { version, json } => inspect::show_command(uri, &version, json),
        Command::ReloadEtl {
            version,
            input,
            out,
            json,
        } => {
            let store = sweep::tracking_path(uri, None)?;
            replay::reload_etl_command(&store, &version, input.as_deref(), out.as_deref(), json)
        }
        Command::Replay {
            version,
            check,
            sets,
            input,
            json,
        } => {
            let store = sweep::tracking_path(uri, None)?;
            replay::replay_command(
                &store,
                cli.tracking_uri.clone(),
                &version,
                check,
                &sets,
                input.as_deref(),
                json,
            )
        }
        Command::WandbSync {
            versions,
            timeout,
            json,
        } => inspect::wandb_sync_command(uri, &versions, timeout, json),
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
        } => predict::export_command(uri, &version, &format, &out),
        Command::Diff { a, b, json } => {
            let store = sweep::tracking_path(uri, None)?;
            replay::diff_command(&store, &a, &b, json)
        }
    }
}
