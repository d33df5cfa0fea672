//! Tracking: where runs go. Trainers report params, per-fold and per-epoch metrics, tags and
//! artifacts to `Sink`s; the MLflow SQLite store is the primary one (it also holds runner's own
//! registry of ETL versions v1.. and training runs t1..), and later sinks (W&B, a remote MLflow
//! server) plug in beside it without touching any trainer.

pub mod mlflow;
pub mod owner;
pub mod wandb;

use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Scheduled,
    Running,
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
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

/// A destination for run data. Each call is complete on its own (a sink never holds a run
/// half-written between calls).
pub trait Sink: Send + Sync {
    fn name(&self) -> &str;
    fn log_metrics(&self, run_uuid: &str, metrics: &[Metric]) -> Result<()>;
    fn log_artifact(&self, run_uuid: &str, file_name: &str, bytes: &[u8]) -> Result<()>;
    fn set_status(&self, run_uuid: &str, status: RunStatus, end_ms: Option<i64>) -> Result<()>;
    fn set_tags(&self, run_uuid: &str, tags: &[(String, String)]) -> Result<()>;
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Sends everything to the MLflow store (whose errors count) and to W&B (whose never do: it
/// only spools, and its sender works in the background).
pub struct Fanout<'a> {
    pub mlflow: &'a mlflow::MlflowStore,
    pub wandb: Option<&'a wandb::WandbSink>,
}

impl Sink for Fanout<'_> {
    fn name(&self) -> &str {
        "fanout"
    }
    fn log_metrics(&self, run_uuid: &str, metrics: &[Metric]) -> Result<()> {
        self.mlflow.log_metrics(run_uuid, metrics)?;
        if let Some(w) = self.wandb {
            let _ = w.log_metrics(run_uuid, metrics);
        }
        Ok(())
    }
    fn log_artifact(&self, run_uuid: &str, file_name: &str, bytes: &[u8]) -> Result<()> {
        self.mlflow.log_artifact(run_uuid, file_name, bytes)?;
        if let Some(w) = self.wandb {
            let _ = w.log_artifact(run_uuid, file_name, bytes);
        }
        Ok(())
    }
    fn set_status(&self, run_uuid: &str, status: RunStatus, end_ms: Option<i64>) -> Result<()> {
        self.mlflow.set_status(run_uuid, status, end_ms)?;
        if let Some(w) = self.wandb {
            let _ = w.set_status(run_uuid, status, end_ms);
        }
        Ok(())
    }
    fn set_tags(&self, run_uuid: &str, tags: &[(String, String)]) -> Result<()> {
        self.mlflow.set_tags(run_uuid, tags)?;
        if let Some(w) = self.wandb {
            let _ = w.set_tags(run_uuid, tags);
        }
        Ok(())
    }
}
