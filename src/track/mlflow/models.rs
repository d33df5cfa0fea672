//! MLflow 3's models in the SQLite store, written as the MLflow 3.17.2 client writes them: a
//! run's model is its own entity (`m-<id>`, files under `<experiment>/models/m-<id>/artifacts`)
//! linked to the run, so that both `runs:/<run id>/model` and `models:/m-<id>` resolve; and the
//! Model Registry (registered models, versions pointing at a logged model, aliases).

use super::MlflowStore;
use crate::track::{mlmodel, now_ms, user, ModelPackage};
use anyhow::{bail, Context, Result};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde_json::{json, Value};
use std::path::PathBuf;

/// The name MLflow gives a run's model, and the one `runs:/<id>/model` asks for.
pub use crate::track::mlmodel::MODEL_NAME;

/// A run's logged model.
#[derive(Debug, Clone)]
pub struct LoggedModel {
    pub model_id: String,
    pub dir: PathBuf,
}

/// A version of a registered model.
#[derive(Debug, Clone)]
pub struct ModelVersion {
    pub name: String,
    pub version: i64,
    pub run_uuid: String,
}

impl MlflowStore {
    /// Whether a run has an MLflow model to register: its logged model here, or (a server's
    /// replica) no tag saying it has none.
    pub fn has_model(&self, run_uuid: &str) -> Result<bool> {
        if self.server()?.is_some() {
            let tags = self.tags(run_uuid)?;
            let none =
                (tags.iter()).any(|(k, v)| k == "runner.mlflow_model" && v.starts_with("none"));
            return Ok(!none);
        }
        Ok(self.run_model(run_uuid)?.is_some())
    }

    /// The logged model of a run, if it has one.
    pub fn run_model(&self, run_uuid: &str) -> Result<Option<LoggedModel>> {
        let found: Option<(String, String)> = self
            .lock()
            .query_row(
                "SELECT model_id, artifact_location FROM logged_models WHERE source_run_id = ?1 AND name = ?2 AND lifecycle_stage = 'active' ORDER BY creation_timestamp_ms DESC LIMIT 1",
                params![run_uuid, MODEL_NAME],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(found.map(|(model_id, loc)| LoggedModel {
            model_id,
            dir: PathBuf::from(loc.strip_prefix("file://").unwrap_or(&loc)),
        }))
    }

    /// Logs `pkg` as the run's model: its folder (the package's files and `MLmodel`), then in
    /// one transaction its record, tags and link to the run. A run that has a model keeps it.
    pub(super) fn write_log_model(&self, run_uuid: &str, pkg: &ModelPackage) -> Result<()> {
        if self.run_model(run_uuid)?.is_some() {
            return Ok(());
        }
        let (experiment_id, experiment_dir): (i64, String) = self.lock().query_row(
            "SELECT e.experiment_id, e.artifact_location FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id WHERE r.run_uuid = ?1",
            [run_uuid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let model_id = format!("m-{}", uuid::Uuid::new_v4().simple());
        let root = experiment_dir
            .strip_prefix("file://")
            .unwrap_or(&experiment_dir);
        let dir = PathBuf::from(root)
            .join("models")
            .join(&model_id)
            .join("artifacts");
        let now = now_ms();
        write_model_dir(&dir, &model_id, run_uuid, now, pkg)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO logged_models (model_id, experiment_id, name, artifact_location, creation_timestamp_ms, last_updated_timestamp_ms, status, lifecycle_stage, model_type, source_run_id, status_message) VALUES (?1, ?2, ?3, ?4, ?5, ?5, 2, 'active', NULL, ?6, NULL)",
            params![model_id, experiment_id, MODEL_NAME, dir.display().to_string(), now, run_uuid],
        )?;
        for (key, value) in [
            ("mlflow.user", user()),
            ("mlflow.source.name", pkg.source.clone()),
            ("mlflow.source.type", "LOCAL".to_string()),
        ] {
            tx.execute(
                "INSERT INTO logged_model_tags (model_id, experiment_id, tag_key, tag_value) VALUES (?1, ?2, ?3, ?4)",
                params![model_id, experiment_id, key, value],
            )?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO inputs (input_uuid, source_type, source_id, destination_type, destination_id, step) VALUES (?1, 'RUN_OUTPUT', ?2, 'MODEL_OUTPUT', ?3, 0)",
            params![uuid::Uuid::new_v4().simple().to_string(), run_uuid, model_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Registers the model of `run_uuid` as the next version of `name` (creating the
    /// registered model), and points `alias` at it.
    pub fn register(&self, name: &str, run_uuid: &str, alias: Option<&str>) -> Result<i64> {
        if let Some(registry) = self.server()? {
            // The server's registry is the one every host (and MLflow's client) reads.
            let experiment: String = self.lock().query_row(
                "SELECT e.name FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id WHERE r.run_uuid = ?1",
                [run_uuid],
                |r| r.get(0),
            )?;
            return registry.register(&experiment, run_uuid, name, alias);
        }
        let model = self.run_model(run_uuid)?.with_context(|| {
            format!("run {run_uuid} has no logged model (runs trained before models were logged, and kinds without one, cannot be registered)")
        })?;
        let now = now_ms();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR IGNORE INTO registered_models (name, creation_time, last_updated_time, description, workspace) VALUES (?1, ?2, ?2, '', 'default')",
            params![name, now],
        )?;
        let version: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE workspace = 'default' AND name = ?1",
            [name],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO model_versions (name, version, creation_time, last_updated_time, description, user_id, current_stage, source, run_id, status, status_message, run_link, storage_location, workspace) VALUES (?1, ?2, ?3, ?3, '', NULL, 'None', ?4, ?5, 'READY', NULL, '', ?6, 'default')",
            params![name, version, now, format!("models:/{}", model.model_id), run_uuid, model.dir.display().to_string()],
        )?;
        tx.execute(
            "UPDATE registered_models SET last_updated_time = ?2 WHERE workspace = 'default' AND name = ?1",
            params![name, now],
        )?;
        if let Some(alias) = alias {
            tx.execute(
                "INSERT OR REPLACE INTO registered_model_aliases (alias, version, name, workspace) VALUES (?1, ?2, ?3, 'default')",
                params![alias, version, name],
            )?;
        }
        let versions: Vec<Value> = {
            let mut q = tx.prepare(
                "SELECT name, version FROM model_versions WHERE workspace = 'default' AND source = ?1 ORDER BY name, version",
            )?;
            let rows = q.query_map([format!("models:/{}", model.model_id)], |r| {
                Ok(json!({"name": r.get::<_, String>(0)?, "version": r.get::<_, i64>(1)?}))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        tx.execute(
            "INSERT OR REPLACE INTO logged_model_tags (model_id, experiment_id, tag_key, tag_value) SELECT model_id, experiment_id, 'mlflow.modelVersions', ?2 FROM logged_models WHERE model_id = ?1",
            params![model.model_id, Value::Array(versions).to_string()],
        )?;
        tx.commit()?;
        Ok(version)
    }

    /// The version `models:/NAME@ALIAS`, `models:/NAME/VERSION` or `models:/NAME/latest` names.
    pub fn model_version(&self, name: &str, which: &Which) -> Result<ModelVersion> {
        if let Some(registry) = self.server()? {
            let (alias, number) = match which {
                Which::Alias(a) => (Some(a.as_str()), None),
                Which::Version(v) => (None, Some(*v)),
                Which::Latest => (None, None),
            };
            let (version, run_uuid) = registry.model_version(name, alias, number)?;
            return Ok(ModelVersion {
                name: name.to_string(),
                version,
                run_uuid,
            });
        }
        let conn = self.lock();
        let version: Option<i64> = match which {
            Which::Alias(a) => conn
                .query_row(
                    "SELECT version FROM registered_model_aliases WHERE workspace = 'default' AND name = ?1 AND alias = ?2",
                    params![name, a],
                    |r| r.get(0),
                )
                .optional()?,
            Which::Version(v) => Some(*v),
            Which::Latest => conn
                .query_row(
                    "SELECT MAX(version) FROM model_versions WHERE workspace = 'default' AND name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()?
                .flatten(),
        };
        let run: Option<String> = match version {
            Some(v) => conn
                .query_row(
                    "SELECT run_id FROM model_versions WHERE workspace = 'default' AND name = ?1 AND version = ?2",
                    params![name, v],
                    |r| r.get(0),
                )
                .optional()?,
            None => None,
        };
        match (version, run) {
            (Some(version), Some(run_uuid)) => Ok(ModelVersion {
                name: name.to_string(),
                version,
                run_uuid,
            }),
            _ => bail!(crate::types::ConfigError::new(
                format!("models:/{name}"),
                format!(
                    "the store has no registered model {name} {} (`runner register tN --name {name}` makes one)",
                    which.describe()
                )
            )),
        }
    }
}

/// Which version of a registered model a URI names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    Alias(String),
    Version(i64),
    Latest,
}

impl Which {
    fn describe(&self) -> String {
        match self {
            Which::Alias(a) => format!("with alias @{a}"),
            Which::Version(v) => format!("version {v}"),
            Which::Latest => "version".to_string(),
        }
    }
}

/// `models:/NAME@ALIAS`, `models:/NAME/3` or `models:/NAME/latest` as (name, which).
pub fn parse_models_uri(uri: &str) -> Option<(String, Which)> {
    let rest = uri.strip_prefix("models:/")?;
    if let Some((name, alias)) = rest.split_once('@') {
        return (!name.is_empty() && !alias.is_empty())
            .then(|| (name.to_string(), Which::Alias(alias.to_string())));
    }
    let (name, v) = rest.rsplit_once('/')?;
    let which = match v {
        "latest" => Which::Latest,
        _ => Which::Version(v.parse().ok().filter(|v| *v > 0)?),
    };
    (!name.is_empty()).then(|| (name.to_string(), which))
}

/// Writes the model's folder: the package's files, then `MLmodel` last (a folder with an
/// `MLmodel` is complete).
fn write_model_dir(
    dir: &std::path::Path,
    model_id: &str,
    run_uuid: &str,
    now: i64,
    pkg: &ModelPackage,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, bytes) in mlmodel::model_files(model_id, run_uuid, now, pkg) {
        let path = dir.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_uris() {
        assert_eq!(
            parse_models_uri("models:/wine@champion"),
            Some(("wine".into(), Which::Alias("champion".into())))
        );
        assert_eq!(
            parse_models_uri("models:/wine/2"),
            Some(("wine".into(), Which::Version(2)))
        );
        assert_eq!(
            parse_models_uri("models:/wine/latest"),
            Some(("wine".into(), Which::Latest))
        );
        assert_eq!(parse_models_uri("models:/wine"), None);
        assert_eq!(parse_models_uri("models:/wine/0"), None);
        assert_eq!(parse_models_uri("runs:/x/model"), None);
    }
}
