//! MLflow 3's models in the SQLite store, written as the MLflow 3.17.2 client writes them: a
//! run's model is its own entity (`m-<id>`, files under `<experiment>/models/m-<id>/artifacts`)
//! linked to the run, so that both `runs:/<run id>/model` and `models:/m-<id>` resolve; and the
//! Model Registry (registered models, versions pointing at a logged model, aliases).

use super::MlflowStore;
use crate::track::{now_ms, user, ModelPackage};
use anyhow::{bail, Context, Result};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde_json::{json, Value};
use std::path::PathBuf;

/// The name MLflow gives a run's model, and the one `runs:/<id>/model` asks for.
pub const MODEL_NAME: &str = "model";

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
    let mut size = 0;
    for (name, bytes) in &pkg.files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        size += bytes.len();
    }
    let colspec = |cols: &[(String, String)]| {
        let v: Vec<Value> = cols
            .iter()
            .map(|(n, t)| json!({"type": t, "name": n, "required": true}))
            .collect();
        Value::Array(v).to_string()
    };
    let mut mlmodel = json!({
        "artifact_path": MODEL_NAME,
        "flavors": pkg.flavors,
        "mlflow_version": crate::types::MLFLOW_VERSION,
        "model_id": model_id,
        "model_size_bytes": size,
        "model_uuid": model_id,
        "run_id": run_uuid,
        "signature": {
            "inputs": colspec(&pkg.inputs),
            "outputs": colspec(&pkg.outputs),
            "params": null,
        },
        "utc_time_created": utc_time(now),
    });
    if pkg.files.iter().any(|(n, _)| n == "input_example.json") {
        mlmodel["saved_input_example_info"] = json!({
            "artifact_path": "input_example.json",
            "pandas_orient": "split",
            "serving_input_path": "serving_input_example.json",
            "type": "dataframe",
        });
    }
    let path = dir.join("MLmodel");
    std::fs::write(&path, yaml(&mlmodel, 0))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `2026-12-01 20:15:03.123000`, as MLflow writes `utc_time_created`.
fn utc_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}000",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// Block-style YAML of a JSON value (strings double-quoted, which YAML reads as JSON strings).
fn yaml(v: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| match v {
                Value::Object(m) if !m.is_empty() => format!("{pad}{k}:\n{}", yaml(v, indent + 2)),
                Value::Array(a) if !a.is_empty() => format!("{pad}{k}:\n{}", yaml(v, indent + 2)),
                _ => format!("{pad}{k}: {}\n", yaml(v, 0).trim_end()),
            })
            .collect(),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| format!("{pad}- {}\n", yaml(item, indent + 2).trim()))
            .collect(),
        Value::Object(_) => "{}\n".to_string(),
        Value::Array(_) => "[]\n".to_string(),
        scalar => format!("{scalar}\n"),
    }
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

    #[test]
    fn mlflow_time_format() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00.000000");
        // 2026-12-01 20:15:03.123 UTC
        assert_eq!(utc_time(1_796_156_103_123), "2026-12-01 20:15:03.123000");
    }

    #[test]
    fn yaml_nests_maps_and_quotes_strings() {
        let v = json!({"a": {"b": "x: y", "c": null, "d": [1, 2]}, "e": 3});
        assert_eq!(
            yaml(&v, 0),
            "a:\n  b: \"x: y\"\n  c: null\n  d:\n    - 1\n    - 2\ne: 3\n"
        );
    }
}
