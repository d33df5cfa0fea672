//! Tracking: where runs go. Every run goes through the [`Tracker`] lifecycle (create with a
//! client-chosen id, start, params, metrics as they are measured, tags, artifacts, finish with a
//! status) on a list of trackers, [`Trackers`]. The MLflow SQLite store is the primary one (it
//! also holds runner's own registry of ETL versions v1.. and training runs t1..); W&B and the
//! JSON-lines log sit beside it, and a new tracker is one module plus one line in
//! [`open_secondary`].

pub mod jsonl;
pub mod mlflow;
pub mod mlflow_rest;
pub mod mlmodel;
pub mod owner;
pub mod server_registry;
pub mod wandb;

use crate::config::{ConfigError, LoadedConfig};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Scheduled,
    Running,
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    /// The status MLflow names so.
    pub fn parse(mlflow: &str) -> Option<RunStatus> {
        [
            RunStatus::Scheduled,
            RunStatus::Running,
            RunStatus::Finished,
            RunStatus::Failed,
            RunStatus::Killed,
        ]
        .into_iter()
        .find(|s| s.as_mlflow() == mlflow)
    }

    pub fn as_mlflow(&self) -> &'static str {
        match self {
            RunStatus::Scheduled => "SCHEDULED",
            RunStatus::Running => "RUNNING",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub step: i64,
    pub timestamp_ms: i64,
}

/// The ETL version as MLflow's dataset input of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetInput {
    pub name: String,
    pub digest: String,
    pub source_uri: String,
    /// (column, MLflow colspec type)
    pub schema: Vec<(String, String)>,
    pub num_rows: usize,
    pub num_cols: usize,
}

/// Everything known about a run when it is created.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub run_uuid: String,
    pub name: String,
    pub experiment: String,
    pub user: String,
    pub start_ms: i64,
    pub git_commit: String,
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    pub dataset: Option<DatasetInput>,
}

/// A run as trackers first see it.
#[derive(Debug, Clone)]
pub struct TrackedRun {
    /// Id (chosen here, so a retried creation is recognised), name, experiment, params, tags
    /// and dataset.
    pub spec: RunSpec,
    /// runner's number for it ("t3"); none for an EDA run or a sweep's parent.
    pub version: Option<String>,
    /// What the run is: a model kind, "eda" or "sweep".
    pub kind: String,
    /// The run's full record (plan, data, versions), for trackers that keep a config.
    pub record: serde_json::Value,
    /// What the steps of its learning curves count: "round", "epoch" or "step".
    pub curve_axis: &'static str,
    /// The runs it belongs with (a sweep's, "wine-t1-t14"), where a tracker groups runs.
    pub group: Option<String>,
}

/// A run's model as MLflow logs one (`mlflow.<flavor>.log_model`): the files of its folder
/// (besides `MLmodel`), the `flavors` of its `MLmodel`, and its signature.
#[derive(Debug, Clone)]
pub struct ModelPackage {
    /// (file name, bytes): the model files, requirements, environment and input example.
    pub files: Vec<(String, Vec<u8>)>,
    /// `MLmodel`'s `flavors` (python_function, onnx, ...).
    pub flavors: serde_json::Value,
    /// The signature: (column, MLflow type) of the inputs and of the outputs.
    pub inputs: Vec<(String, String)>,
    pub outputs: Vec<(String, String)>,
    /// What logged it (`mlflow.source.name`).
    pub source: String,
}

/// A destination for runs. Each call is complete on its own: a tracker never holds a run
/// half-written between calls, and a call repeated after a lost answer changes nothing more.
pub trait Tracker: Send + Sync {
    fn name(&self) -> &str;
    /// Creates the run with its params, tags and dataset, unless a run with its id exists.
    fn create_run(&self, run: &TrackedRun) -> Result<()>;
    /// The run starts (RUNNING).
    fn start_run(&self, run_uuid: &str) -> Result<()>;
    fn log_params(&self, run_uuid: &str, params: &[(String, String)]) -> Result<()>;
    /// A batch of metrics, each with its own step and the time it was measured.
    fn log_metrics(&self, run_uuid: &str, metrics: &[Metric]) -> Result<()>;
    fn set_tags(&self, run_uuid: &str, tags: &[(String, String)]) -> Result<()>;
    fn log_artifact(&self, run_uuid: &str, file_name: &str, bytes: &[u8]) -> Result<()>;
    /// Logs the run's model where the tracker has models (MLflow); others keep the files it
    /// was saved from as artifacts already.
    fn log_model(&self, _run_uuid: &str, _model: &ModelPackage) -> Result<()> {
        Ok(())
    }
    /// The run ends with `status` (FINISHED, FAILED or KILLED) at `end_ms`.
    fn finish_run(&self, run_uuid: &str, status: RunStatus, end_ms: i64) -> Result<()>;
    /// Records a training run's summary (its metrics and results as the leaderboard shows
    /// them) once it has ended: the store keeps it with the run's number; a server that is the
    /// store gets it too. Others need not.
    fn record_summary(&self, _run_uuid: &str, _summary: &serde_json::Value) -> Result<()> {
        Ok(())
    }
    /// Delivers what is still buffered, within the tracker's own time limit; says in words
    /// what is left undelivered and how to send it later.
    fn close(&self) -> Vec<String> {
        Vec::new()
    }
    /// What the tracker adds to a sweep's JSON report once closed, under its key (W&B: its
    /// mode and how many runs are still spooled).
    fn report(&self) -> Option<(&'static str, serde_json::Value)> {
        None
    }
}

/// Checks, before anything is written, that the trackers a config asks for beside the store
/// can open (W&B's settings are checked by [`wandb::resolve`]). A new tracker that needs a
/// check adds it here.
pub fn check_others(tracking: &crate::config::TrackingConfig, file: &str) -> Result<()> {
    if let Some(path) = &tracking.jsonl {
        jsonl::JsonlTracker::open(std::path::Path::new(path))?;
    }
    if let Some(url) = mirror_server(tracking) {
        mlflow_rest::MlflowServer::open(mlflow_rest::settings(&url, file)?)?;
    }
    Ok(())
}

/// Opens the trackers a config asks for beside the store: W&B (its settings checked by
/// [`wandb::resolve`]) and the JSON-lines log. Called before the store is written, so a
/// tracker that cannot open stops the command with nothing half-done. A new tracker is one
/// line here.
pub fn open_others(
    tracking: &crate::config::TrackingConfig,
    wandb_settings: Option<wandb::Settings>,
    store_path: &std::path::Path,
) -> Result<Vec<Box<dyn Tracker>>> {
    let mut others: Vec<Box<dyn Tracker>> = Vec::new();
    if let Some(settings) = wandb_settings {
        let root = wandb::spool_root(store_path);
        others.push(Box::new(wandb::WandbSink::new(settings, root)?));
    }
    if let Some(path) = &tracking.jsonl {
        let path = std::path::Path::new(path);
        others.push(Box::new(jsonl::JsonlTracker::open(path)?));
    }
    if let Some(settings) = server_settings(tracking, store_path)? {
        others.push(Box::new(mlflow_rest::MlflowServer::open(settings)?));
    }
    Ok(others)
}

/// The MLflow server that gets every run: the store's own when the store is a server's
/// replica (then it also gets runner's records of its runs, which other hosts read back), else
/// the mirror of [`mirror_server`].
pub fn server_settings(
    tracking: &crate::config::TrackingConfig,
    store_path: &std::path::Path,
) -> Result<Option<mlflow_rest::ServerSettings>> {
    if let Some(url) = server_registry::bound_url(store_path)? {
        if let Some(other) = (tracking.server.as_deref()).filter(|s| s.trim_end_matches('/') != url)
        {
            anyhow::bail!(ConfigError::new(
                "tracking.server",
                format!("`{other}` differs from the MLflow server that is the store ({url}): runs go to the store's server; leave tracking.server out")
            ));
        }
        let mut settings = mlflow_rest::settings(&url, "--tracking-uri")?;
        settings.as_store = true;
        return Ok(Some(settings));
    }
    match mirror_server(tracking) {
        Some(url) => Ok(Some(mlflow_rest::settings(&url, "tracking.server")?)),
        None => Ok(None),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The trackers of a command: the primary one (the store, whose errors count) and the others
/// (W&B, JSON lines), whose errors never fail a run: each is reported once, and the tracker
/// keeps what it could not send in its own spool.
pub struct Trackers<'a> {
    primary: &'a dyn Tracker,
    others: Vec<&'a dyn Tracker>,
    warned: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl<'a> Trackers<'a> {
    pub fn new(primary: &'a dyn Tracker, others: Vec<&'a dyn Tracker>) -> Trackers<'a> {
        Trackers {
            primary,
            others,
            warned: Default::default(),
        }
    }

    /// Runs `call` on every tracker: the primary's error is returned, the others' reported.
    fn each(&self, call: impl Fn(&dyn Tracker) -> Result<()>) -> Result<()> {
        call(self.primary)?;
        for t in &self.others {
            if let Err(e) = call(*t) {
                let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
                if warned.insert(t.name().to_string()) {
                    eprintln!("{}: {e:#} (the run goes on; this is said once)", t.name());
                }
            }
        }
        Ok(())
    }
}

impl Tracker for Trackers<'_> {
    fn name(&self) -> &str {
        "trackers"
    }
    fn create_run(&self, run: &TrackedRun) -> Result<()> {
        self.each(|t| t.create_run(run))
    }
    fn start_run(&self, run_uuid: &str) -> Result<()> {
        self.each(|t| t.start_run(run_uuid))
    }
    fn log_params(&self, run_uuid: &str, params: &[(String, String)]) -> Result<()> {
        self.each(|t| t.log_params(run_uuid, params))
    }
    fn log_metrics(&self, run_uuid: &str, metrics: &[Metric]) -> Result<()> {
        self.each(|t| t.log_metrics(run_uuid, metrics))
    }
    fn set_tags(&self, run_uuid: &str, tags: &[(String, String)]) -> Result<()> {
        self.each(|t| t.set_tags(run_uuid, tags))
    }
    fn log_artifact(&self, run_uuid: &str, file_name: &str, bytes: &[u8]) -> Result<()> {
        self.each(|t| t.log_artifact(run_uuid, file_name, bytes))
    }
    fn log_model(&self, run_uuid: &str, model: &ModelPackage) -> Result<()> {
        self.each(|t| t.log_model(run_uuid, model))
    }
    fn finish_run(&self, run_uuid: &str, status: RunStatus, end_ms: i64) -> Result<()> {
        self.each(|t| t.finish_run(run_uuid, status, end_ms))
    }
    fn record_summary(&self, run_uuid: &str, summary: &serde_json::Value) -> Result<()> {
        self.each(|t| t.record_summary(run_uuid, summary))
    }
    fn close(&self) -> Vec<String> {
        std::iter::once(self.primary)
            .chain(self.others.iter().copied())
            .flat_map(|t| t.close())
            .collect()
    }
}

fn env_store_uri() -> Option<String> {
    std::env::var("MLFLOW_TRACKING_URI")
        .ok()
        .filter(|s| !s.is_empty())
}

/// The URI if it is an MLflow tracking server's (http or https).
fn server_url(uri: &str) -> Option<&str> {
    (uri.starts_with("http://") || uri.starts_with("https://")).then_some(uri)
}

/// The MLflow tracking server runs are mirrored to, beside a store of runner's own:
/// `tracking.server`. (A server named as the tracking URI, an http(s) `MLFLOW_TRACKING_URI`
/// included, is the store itself: [`tracking_path`].)
pub fn mirror_server(tracking: &crate::config::TrackingConfig) -> Option<String> {
    tracking.server.clone()
}

pub fn tracking_path(cli: Option<&str>, loaded: Option<&LoadedConfig>) -> Result<PathBuf> {
    let uri = cli
        .map(str::to_string)
        .or_else(env_store_uri)
        .or_else(|| loaded.and_then(|l| l.config.tracking.uri.clone()))
        .unwrap_or_else(|| "sqlite:///mlflow.db".to_string());
    // A URI runner cannot use is the user's mistake wherever it was written: exit 2.
    let path = match server_url(&uri) {
        // The server is the store: this host's replica of it is what runner reads.
        Some(url) => server_registry::replica_path(url),
        None => crate::track::mlflow::path_from_uri(&uri),
    };
    path.map_err(|e| {
        let origin = if cli.is_some() {
            "--tracking-uri".to_string()
        } else if std::env::var("MLFLOW_TRACKING_URI").is_ok_and(|s| !s.is_empty()) {
            "MLFLOW_TRACKING_URI".to_string()
        } else {
            loaded
                .map(|l| format!("{} (tracking.uri)", l.path.display()))
                .unwrap_or_default()
        };
        ConfigError::new(origin, format!("{e:#}")).into()
    })
}

pub use server_registry::store_label;

/// The store file a [`store_label`] stands for (a server's: this host's replica of it).
pub fn store_of_label(label: &str) -> Result<PathBuf> {
    match server_url(label) {
        Some(url) => server_registry::replica_path(url),
        None => Ok(PathBuf::from(label)),
    }
}

/// Who runs runner: `USER`, else `LOGNAME`, else the login name of the process's uid (cron,
/// containers and CI often set neither variable), else "unknown".
pub fn user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(login_name)
        .unwrap_or_else(|| "unknown".into())
}

fn login_name() -> Option<String> {
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r fills `pwd` with pointers into `buf`, which outlives their use here.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::getuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points at a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
}

pub fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-. ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
