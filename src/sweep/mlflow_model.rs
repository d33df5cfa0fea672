//! The MLflow model of a training run, as `mlflow.onnx.log_model` would log it: the run's
//! model with its fitted preprocessing as one ONNX graph in the column layout that MLflow's
//! pyfunc loader feeds (see `onnx::Layout::Columns`), with a signature, an input example and
//! requirements, loaded by a small loader module shipped with it (`runner_pyfunc.py`).
//! `mlflow.pyfunc.load_model("runs:/<id>/model").predict(frame)` then returns
//! what `runner predict` does: the decoded label (`prediction`) and `proba_<class>` columns.

use super::{Artifacts, Prepared};
use crate::data::{present, FeatureValues};
use crate::etl::{ColumnStep, LabelMapping, Preprocessor};
use crate::models::{ModelConfig, Task};
use crate::onnx::ColumnType;
use crate::track::ModelPackage;
use crate::types::MLFLOW_VERSION;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Rows of the input example.
const EXAMPLE_ROWS: usize = 5;
/// The pyfunc loader, shipped in the model's `code/` folder: MLflow's own ONNX loader hands
/// onnxruntime pandas' string arrays, which it refuses (pandas 3), and no missing text.
const LOADER: &str = include_str!("runner_pyfunc.py");
/// The native libraries' versions (libxgboost from the xgboost-cpu wheel, LightGBM bundled
/// in lightgbm3-sys), written into the native flavours.
const XGBOOST_VERSION: &str = "3.4.1";
const LIGHTGBM_VERSION: &str = "4.7.0";
/// What the pyfunc model needs beside MLflow.
const REQUIREMENTS: &str = "onnxruntime>=1.16";

/// The run's MLflow model, or why it has none (a kind without an ONNX writer yet).
pub(crate) fn model_package(
    prep: &Prepared,
    version: &str,
    artifacts: &Artifacts,
) -> Result<std::result::Result<ModelPackage, String>> {
    let (document, native) = saved_model(artifacts)?;
    let config: ModelConfig =
        serde_json::from_value(document["model"].clone()).context("the run's model config")?;
    if !crate::onnx::exportable_kinds().contains(&config.kind.as_str()) {
        return Ok(Err(format!(
            "{} models have no ONNX writer yet, which the MLflow model is built on",
            config.kind
        )));
    }
    let labels: Option<LabelMapping> = serde_json::from_value(document["labels"].clone())?;
    let preprocessor: Preprocessor = serde_json::from_value(document["preprocessor"].clone())?;
    let types = column_types(prep, &preprocessor);
    let onnx = crate::onnx::export(
        &crate::onnx::Source {
            version,
            config: &config,
            task: prep.task,
            labels: labels.as_ref(),
            preprocessor: &preprocessor,
            fitted: &document["fitted"],
            native: &native,
            column_types: &types,
        },
        crate::onnx::Layout::Columns,
    )?;
    let inputs: Vec<(String, String)> = (preprocessor.steps().iter())
        .zip(&types)
        .map(|((name, _), t)| (name.clone(), t.mlflow().to_string()))
        .collect();
    let example = input_example(prep, &inputs);
    let mut files = vec![
        ("model.onnx".to_string(), onnx),
        ("code/runner_pyfunc.py".into(), LOADER.as_bytes().to_vec()),
        ("requirements.txt".into(), requirements().into_bytes()),
        ("python_env.yaml".into(), python_env().into_bytes()),
        ("conda.yaml".into(), conda_env().into_bytes()),
        ("input_example.json".into(), serde_json::to_vec(&example)?),
        (
            "serving_input_example.json".into(),
            serde_json::to_vec_pretty(&json!({ "dataframe_split": example }))?,
        ),
    ];
    let mut flavors = flavors();
    if let Some((flavor, file, bytes, conf)) = native_flavor(&config, &native) {
        files.push((file.to_string(), bytes.clone()));
        flavors[flavor] = conf;
    }
    Ok(Ok(ModelPackage {
        files,
        flavors,
        outputs: outputs(prep.task, labels.as_ref()),
        inputs,
        source: format!("runner sweep {}", prep.loaded.path.display()),
    }))
}

/// Each input column's type as the training table holds it (polars' integer types are MLflow
/// longs, and a frame of the same data gives pandas int64 columns for them).
fn column_types(prep: &Prepared, preprocessor: &Preprocessor) -> Vec<ColumnType> {
    preprocessor
        .steps()
        .iter()
        .map(|(name, step)| {
            let dtype = (prep.table.features.iter())
                .find(|f| &f.name == name)
                .map_or("", |f| f.dtype.as_str());
            match step {
                ColumnStep::Numeric { .. } if dtype == "bool" => ColumnType::Boolean,
                ColumnStep::Numeric { .. } if dtype.starts_with(['i', 'u']) => ColumnType::Long,
                ColumnStep::Numeric { .. } => ColumnType::Double,
                _ => ColumnType::Text,
            }
        })
        .collect()
}

/// The runner model document and the native files among a run's artifacts.
fn saved_model(artifacts: &Artifacts) -> Result<(Value, BTreeMap<String, Vec<u8>>)> {
    let has_runner_doc = artifacts.iter().any(|(n, _)| n == "runner_model.json");
    let doc_name = if has_runner_doc {
        "runner_model.json"
    } else {
        "model.json"
    };
    let mut document = None;
    let mut native = BTreeMap::new();
    for (name, bytes) in artifacts {
        if name == doc_name {
            document = Some(serde_json::from_slice(bytes).context("the run's model document")?);
        } else if let Some(ext) = name.strip_prefix("model.") {
            native.insert(ext.to_string(), bytes.clone());
        }
    }
    Ok((document.context("the run saved no model document")?, native))
}

/// The signature's outputs: `prediction` (the label or value) and each class's probability.
fn outputs(task: Task, labels: Option<&LabelMapping>) -> Vec<(String, String)> {
    match (task, labels) {
        (Task::Classification, Some(l)) => {
            let whole = l.classes.iter().all(|c| c.parse::<i64>().is_ok());
            let label_type = if whole { "long" } else { "string" };
            std::iter::once(("prediction".to_string(), label_type.to_string()))
                .chain(
                    l.classes
                        .iter()
                        .map(|c| (format!("proba_{c}"), "double".to_string())),
                )
                .collect()
        }
        _ => vec![("prediction".into(), "double".into())],
    }
}

/// The first rows of the training table's input columns, in pandas' "split" orient.
fn input_example(prep: &Prepared, inputs: &[(String, String)]) -> Value {
    let n = prep.table.n_rows.min(EXAMPLE_ROWS);
    let columns: Vec<(&crate::data::Feature, &str)> = inputs
        .iter()
        .filter_map(|(name, t)| {
            let f = prep.table.features.iter().find(|f| &f.name == name)?;
            Some((f, t.as_str()))
        })
        .collect();
    let cell = |f: &crate::data::Feature, t: &str, r: usize| match (&f.values, t) {
        (FeatureValues::Numeric(v), "long") => json!(present(v[r]).map(|x| x as i64)),
        (FeatureValues::Numeric(v), "boolean") => json!(present(v[r]).map(|x| x != 0.0)),
        (FeatureValues::Numeric(v), _) => json!(present(v[r])),
        (FeatureValues::Categorical(v), _) => json!(v[r]),
    };
    let data: Vec<Value> = (0..n)
        .map(|r| Value::Array(columns.iter().map(|(f, t)| cell(f, t, r)).collect()))
        .collect();
    json!({
        "columns": columns.iter().map(|(f, _)| f.name.clone()).collect::<Vec<_>>(),
        "data": data,
    })
}

/// The booster's own flavour (`mlflow.xgboost` / `mlflow.lightgbm` load it): the native file,
/// which reads the model matrix's columns by name (raw numeric columns, since boosters train
/// unscaled; one-hot columns named `column=value`, missing values filled as the run did).
fn native_flavor<'a>(
    config: &ModelConfig,
    native: &'a BTreeMap<String, Vec<u8>>,
) -> Option<(&'static str, &'static str, &'a Vec<u8>, Value)> {
    match config.kind.as_str() {
        "xgboost" => Some((
            "xgboost",
            "model.json",
            native.get("json")?,
            json!({"code": null, "data": "model.json", "model_class": "xgboost.core.Booster", "model_format": "json", "xgb_version": XGBOOST_VERSION}),
        )),
        "lightgbm" => Some((
            "lightgbm",
            "model.lgb",
            native.get("txt")?,
            json!({"code": null, "data": "model.lgb", "model_class": "lightgbm.basic.Booster", "lgb_version": LIGHTGBM_VERSION}),
        )),
        _ => None,
    }
}

fn flavors() -> Value {
    json!({
        "onnx": {
            "code": null,
            "data": "model.onnx",
            "onnx_session_options": null,
            "onnx_version": "1.17.0",
            "providers": ["CPUExecutionProvider"],
        },
        "python_function": {
            "code": "code",
            "data": "model.onnx",
            "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
            "loader_module": "runner_pyfunc",
            "python_version": "3.11",
        },
    })
}

fn requirements() -> String {
    format!("mlflow=={MLFLOW_VERSION}\n{REQUIREMENTS}\n")
}

fn python_env() -> String {
    "python: \"3.11\"\nbuild_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n".into()
}

fn conda_env() -> String {
    format!(
        "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- pip\n- pip:\n  - mlflow=={MLFLOW_VERSION}\n  - {REQUIREMENTS}\nname: mlflow-env\n"
    )
}
