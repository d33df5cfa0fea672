//! `runner register tN --name NAME [--alias ALIAS]`: a training run's MLflow model becomes the
//! next version of a registered model in the store's Model Registry, which
//! `mlflow.pyfunc.load_model("models:/NAME@ALIAS")` and `runner predict models:/NAME@ALIAS` read.

use crate::config::ConfigError;
use crate::sweep::{self, SweepReport};
use crate::track::mlflow::MlflowStore;
use anyhow::Result;
use std::process::ExitCode;

/// A registered model's name, as MLflow accepts it and as a `models:/` URI can carry it.
pub fn check_model_name(v: &str) -> std::result::Result<String, String> {
    let bad = v.is_empty() || v.len() > 256 || v.contains(['/', '@', ':', '%']);
    if bad || v.trim() != v {
        return Err(format!(
            "\"{v}\" is not a registered model name: 1 to 256 characters, no '/', '@', ':', '%' and no surrounding spaces"
        ));
    }
    Ok(v.to_string())
}

/// An alias as MLflow accepts it: letters, digits, '_' and '-', not `latest` nor `v<number>`.
pub fn check_alias(v: &str) -> std::result::Result<String, String> {
    let chars_ok = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let reserved = v.eq_ignore_ascii_case("latest")
        || (v.len() > 1 && v.starts_with(['v', 'V']) && v[1..].chars().all(|c| c.is_ascii_digit()));
    if v.is_empty() || v.len() > 255 || !chars_ok || reserved {
        return Err(format!(
            "\"{v}\" is not an alias: letters, digits, '_' and '-', and neither \"latest\" nor v<number>"
        ));
    }
    Ok(v.to_string())
}

/// `--register-best NAME[@ALIAS]` for clap.
pub fn check_register_arg(v: &str) -> std::result::Result<(String, Option<String>), String> {
    match v.split_once('@') {
        Some((name, alias)) => Ok((check_model_name(name)?, Some(check_alias(alias)?))),
        None => Ok((check_model_name(v)?, None)),
    }
}

/// Registers training run `version`'s model; returns the model version's number.
pub fn register_run(
    store: &MlflowStore,
    version: i64,
    name: &str,
    alias: Option<&str>,
) -> Result<i64> {
    let tv = format!("t{version}");
    let refuse = |msg: String| ConfigError::new(&tv, msg);
    let run = store.training_run(version)?.ok_or_else(|| {
        refuse(format!(
            "no training run {tv} in the store (`runner runs` lists them)"
        ))
    })?;
    if run.status != "FINISHED" {
        return Err(refuse(format!(
            "{} ended {}; it has no model to register",
            run.name, run.status
        ))
        .into());
    }
    if !store.has_model(&run.run_uuid)? {
        let why = store
            .tags(&run.run_uuid)?
            .into_iter()
            .find(|(k, _)| k == "runner.mlflow_model")
            .map(|(_, v)| v)
            .unwrap_or_else(|| "it was trained before runner logged MLflow models; `runner replay` retrains it as a new run with one".into());
        return Err(refuse(format!(
            "{} ({}) has no MLflow model to register: {}",
            run.name,
            run.kind,
            why.trim_start_matches("none: ")
        ))
        .into());
    }
    store.register(name, &run.run_uuid, alias)
}

/// What a registration prints.
fn said(tv: &str, name: &str, version: i64, alias: Option<&str>) -> String {
    let uri = match alias {
        Some(a) => format!("models:/{name}@{a}"),
        None => format!("models:/{name}/{version}"),
    };
    format!("{tv} registered as {name} version {version}: {uri}")
}

pub fn register_command(
    uri: Option<&str>,
    version: &str,
    name: &str,
    alias: Option<&str>,
) -> Result<ExitCode> {
    let v = sweep::parse_version(version, 't').map_err(|m| ConfigError::new(version, m))?;
    let path = sweep::tracking_path(uri, None)?;
    let store = MlflowStore::open_existing(&path)?;
    let model_version = register_run(&store, v, name, alias)?;
    println!("{}", said(version, name, model_version, alias));
    Ok(ExitCode::SUCCESS)
}

/// `runner sweep --register-best NAME[@ALIAS]`: registers the best finished run of the sweep
/// that has an MLflow model, saying so when a better run has none.
pub fn register_best(
    store: &MlflowStore,
    report: &SweepReport,
    name: &str,
    alias: Option<&str>,
) -> Result<()> {
    let ranked = sweep::ranked(report);
    let mut passed_over = Vec::new();
    for r in ranked {
        let v = sweep::parse_version(&r.version, 't').map_err(anyhow::Error::msg)?;
        let has_model = store.has_model(&r.run_uuid)?;
        if !has_model {
            passed_over.push(format!("{} ({})", r.version, r.kind));
            continue;
        }
        if !passed_over.is_empty() {
            eprintln!(
                "{} rank above {} but have no MLflow model (their kinds have no ONNX writer yet)",
                passed_over.join(", "),
                r.version
            );
        }
        let model_version = register_run(store, v, name, alias)?;
        eprintln!("{}", said(&r.version, name, model_version, alias));
        return Ok(());
    }
    anyhow::bail!("--register-best {name}: no finished run of this sweep has an MLflow model")
}
