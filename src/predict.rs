//! `runner predict tN`: the model a run saved, with its fitted preprocessing and label mapping,
//! applied to new data after the run's recorded ETL (casts and filters), with the input's
//! columns and types checked against what the run was trained on.

use crate::config::{ConfigError, Impute};
use crate::data::{self, FeatureValues};
use crate::etl::{LabelMapping, Preprocessor};
use crate::models::{self, FittedModel, ModelConfig, Prediction, Task};
use crate::sweep;
use crate::track::mlflow::models::parse_models_uri;
use crate::track::mlflow::MlflowStore;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A run's model as saved, ready to predict.
pub struct SavedModel {
    pub version: String,
    pub task: Task,
    pub config: ModelConfig,
    pub labels: Option<LabelMapping>,
    pub preprocessor: Preprocessor,
    pub model: Box<dyn FittedModel>,
    /// The run's record (config, plan, ETL version).
    pub record: Value,
    /// Where the run's artifacts are.
    pub artifact_dir: PathBuf,
    /// The saved files the model was read from.
    pub files: Vec<PathBuf>,
    /// The saved runner model document (`fitted` holds the model's own form).
    pub document: Value,
    /// Native files by extension.
    pub native: BTreeMap<String, Vec<u8>>,
}

/// Reads training run `version`'s model from its artifacts.
pub fn load_run_model(store: &MlflowStore, version: i64) -> Result<SavedModel> {
    let tv = format!("t{version}");
    let run = store
        .training_run(version)?
        .with_context(|| format!("no training run {tv} in the store (`runner runs` lists them)"))?;
    if run.status != "FINISHED" {
        bail!("{tv} ended {}; it saved no model", run.status);
    }
    if run.record["plan"]["cv_only"] == true {
        let msg = format!("a search trial scored by CV only (refit = \"best\") saved no model; use its search's `#best` run (`runner runs`), or `runner replay {tv} --set refit=true`");
        return Err(ConfigError::new(&tv, msg).into());
    }
    let dir = store.artifact_dir(&run.run_uuid)?;
    let runner_file = dir.join(format!("runner_model_{tv}.json"));
    let (main, has_native) = if runner_file.is_file() {
        (runner_file, true)
    } else {
        (dir.join(format!("model_{tv}.json")), false)
    };
    let text = std::fs::read(&main)
        .with_context(|| format!("cannot read {tv}'s saved model {}", main.display()))?;
    let saved: Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a runner model", main.display()))?;
    let mut files = vec![main.clone()];
    let mut native = BTreeMap::new();
    if has_native {
        for ext in ["json", "txt", "pt", "safetensors"] {
            let p = dir.join(format!("model_{tv}.{ext}"));
            if p.is_file() {
                native.insert(ext.to_string(), std::fs::read(&p)?);
                files.push(p);
            }
        }
    }
    let task: Task = serde_json::from_value(saved["task"].clone()).context("saved task")?;
    let config: ModelConfig =
        serde_json::from_value(saved["model"].clone()).context("saved model config")?;
    let labels: Option<LabelMapping> =
        serde_json::from_value(saved["labels"].clone()).context("saved labels")?;
    let preprocessor: Preprocessor =
        serde_json::from_value(saved["preprocessor"].clone()).context("saved preprocessing")?;
    let n_classes = labels.as_ref().map(|l| l.classes.len()).unwrap_or(0);
    let model = models::load(&models::SavedModel {
        config: &config,
        fitted: &saved["fitted"],
        native: &native,
        task,
        n_classes,
        n_features: preprocessor.output_names.len(),
    })
    .with_context(|| format!("loading {tv}'s {} model", config.kind))?;
    Ok(SavedModel {
        version: tv,
        task,
        config,
        labels,
        preprocessor,
        model,
        record: run.record,
        artifact_dir: dir,
        files,
        document: saved,
        native,
    })
}

/// `tN`, or the run of a registered model's version (`models:/NAME@ALIAS`, `models:/NAME/3`,
/// `models:/NAME/latest`), of the chosen store, loaded.
pub fn open_saved(uri: Option<&str>, version: &str) -> Result<SavedModel> {
    let store = MlflowStore::open_read_only(&sweep::tracking_path(uri, None)?)?;
    let v = match parse_models_uri(version) {
        Some((name, which)) => {
            let mv = store.model_version(&name, &which)?;
            store.training_version_of(&mv.run_uuid)?.with_context(|| {
                format!("{version} is version {} of {name}, whose run {} is not a runner training run", mv.version, mv.run_uuid)
            })?
        }
        None if version.starts_with("models:/") => bail!(ConfigError::new(
            version,
            "not a registered model URI; write models:/NAME@ALIAS, models:/NAME/VERSION or models:/NAME/latest"
        )),
        None => sweep::parse_version(version, 't').map_err(|m| ConfigError::new(version, m))?,
    };
    load_run_model(&store, v)
}

/// What prediction made of an input file.
pub struct Predicted {
    /// Input row (0-based) of each prediction.
    pub rows: Vec<u64>,
    pub prediction: Prediction,
    /// Filters of the recorded ETL that removed rows.
    pub filters: Vec<String>,
    pub input_rows: usize,
}

/// Applies the run's ETL and preprocessing to `input` and predicts; the input must have every
/// column the run was trained on, with the same kind of values.
pub fn predict_file(saved: &SavedModel, input: &Path) -> Result<Predicted> {
    let file = input.display().to_string();
    if !input.is_file() && crate::frames::sha_of(&file).is_none() {
        bail!(ConfigError::new(&file, "no such input file"));
    }
    let df = data::read_source(&file)?;
    let input_rows = df.height();
    let etl: crate::config::EtlSpec = serde_json::from_value(saved.record["config"]["etl"].clone())
        .context("the run's recorded ETL")?;
    let (df, filters) = data::apply_for_prediction(df, &etl)?;
    let inputs = saved.preprocessor.inputs();
    let present: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let missing: Vec<&str> = inputs
        .iter()
        .filter(|(n, _)| !present.contains(n))
        .map(|(n, _)| n.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(ConfigError::new(
            &file,
            format!(
                "lacks {} column(s) that {} was trained on: {}; {} needs: {}",
                missing.len(),
                saved.version,
                quoted(&missing),
                saved.version,
                quoted(&inputs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
            )
        ));
    }
    let names: Vec<String> = inputs.iter().map(|(n, _)| n.clone()).collect();
    let table = data::feature_table(&df, &names)?;
    for ((name, numeric), f) in inputs.iter().zip(&table.features) {
        let is_numeric = matches!(f.values, FeatureValues::Numeric(_));
        if *numeric != is_numeric {
            bail!(ConfigError::new(
                &file,
                format!(
                    "column \"{name}\" holds {} ({}) but {} was trained on it as {}",
                    if is_numeric { "numbers" } else { "text" },
                    f.dtype,
                    saved.version,
                    if *numeric {
                        "numbers"
                    } else {
                        "categories (text)"
                    }
                )
            ));
        }
        if *numeric && etl.impute == Impute::None && f.missing() > 0 {
            bail!(ConfigError::new(
                &file,
                format!(
                    "column \"{name}\" has {} missing values, and {} was trained with etl.impute = \"none\" (no fill value); fill them or train with an imputation",
                    f.missing(),
                    saved.version
                )
            ));
        }
    }
    let rows: Vec<usize> = (0..table.n_rows).collect();
    let x = saved.preprocessor.transform(&table, &rows)?;
    let prediction = saved.model.predict(x.view())?;
    let row_ids: Vec<u64> = df
        .column("row")?
        .cast(&polars::prelude::DataType::UInt64)?
        .u64()?
        .into_no_null_iter()
        .collect();
    let applied = if row_ids.len() < input_rows {
        filters
    } else {
        Vec::new()
    };
    Ok(Predicted {
        rows: row_ids,
        prediction,
        filters: applied,
        input_rows,
    })
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The predictions as CSV: input row, prediction (original labels), and class probabilities.
pub fn to_csv(saved: &SavedModel, p: &Predicted, proba: bool) -> Result<String> {
    let labels = saved.labels.as_ref();
    let mut out = String::from("row,prediction");
    let probs = if proba {
        match (labels, &p.prediction.proba) {
            (Some(l), Some(m)) => {
                for c in &l.classes {
                    out.push_str(&format!(",proba_{c}"));
                }
                Some(m)
            }
            (None, _) => bail!(
                "--proba: {} is a regression model; it predicts values, not class probabilities",
                saved.version
            ),
            (Some(_), None) => bail!(
                "--proba: {}'s {} model gives no class probabilities",
                saved.version,
                saved.config.kind
            ),
        }
    } else {
        None
    };
    out.push('\n');
    for (i, (r, v)) in p.rows.iter().zip(&p.prediction.values).enumerate() {
        let shown = match labels {
            Some(l) => l.decode(*v as usize).to_string(),
            None => format!("{v}"),
        };
        out.push_str(&format!("{r},{shown}"));
        if let Some(m) = probs {
            for x in m.row(i) {
                out.push_str(&format!(",{x}"));
            }
        }
        out.push('\n');
    }
    Ok(out)
}
