//! The experiment config (`configs/*.toml`) and sweep files (`sweeps/*.toml`): parsed, checked
//! and expanded into resolved model configs before anything trains. Every error names the file,
//! line and column, the key, and what would be valid.

use crate::models::{self, ParamValue};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::types::ConfigError;

pub mod space;
mod sweeps;
pub use space::{Axis, Range, Study};
pub use sweeps::{expand_sweep_file, expand_sweeps, Expanded, SearchConfig, SearchOverride};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TaskChoice {
    #[default]
    Auto,
    Classification,
    Regression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Impute {
    #[default]
    None,
    Mean,
    Median,
    MostFrequent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encode {
    #[default]
    Onehot,
    Ordinal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    #[default]
    None,
    Standard,
    Minmax,
}

/// A per-column transform of `etl.transform`, fitted on each training fold before scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransformChoice {
    #[serde(rename = "log1p")]
    Log1p,
    #[serde(rename = "sqrt")]
    Sqrt,
    #[serde(rename = "yeo-johnson")]
    YeoJohnson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CastType {
    F64,
    I64,
    Str,
    Bool,
}

/// The data source and the target column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `builtin:winequality-red`, or a CSV / Parquet path relative to the config file.
    pub source: String,
    pub target: String,
}

/// The ETL spec: stateless steps (select, drop, filter, cast) run in polars on the whole table;
/// steps that learn statistics (impute, encode, scale) are fitted on each training fold only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EtlSpec {
    #[serde(default)]
    pub select: Vec<String>,
    #[serde(default)]
    pub drop: Vec<String>,
    /// Row filters such as `"alcohol > 9"` or `"colour == 'red'"`, all of which must hold.
    #[serde(default)]
    pub filter: Vec<String>,
    #[serde(default)]
    pub cast: BTreeMap<String, CastType>,
    #[serde(default)]
    pub impute: Impute,
    #[serde(default)]
    pub encode: Encode,
    #[serde(default)]
    pub scale: Scale,
    /// Per-column transforms, e.g. `transform = { "residual sugar" = "log1p" }`; none by
    /// default (left out of the recorded spec then, so earlier ETL versions keep their keys).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transform: BTreeMap<String, TransformChoice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CvConfig {
    #[serde(default = "default_folds")]
    pub folds: usize,
    #[serde(default = "default_true")]
    pub stratified: bool,
    #[serde(default = "default_one")]
    pub repeats: usize,
    /// Share of rows held out from CV (stratified) and scored once by the refitted model.
    #[serde(default)]
    pub holdout: f64,
    /// Regression: the per-bin MAE's bins, at this many quantiles of the target (whole-number
    /// targets with at most 20 values keep one bin per value).
    #[serde(default = "default_bins")]
    pub regression_bins: usize,
    /// Regression: the bins' inner edges instead of quantiles, ascending.
    #[serde(default)]
    pub regression_bin_edges: Option<Vec<f64>>,
    /// Fixed folds from a CSV of `row` (or a key column) and `fold`, relative to the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignments: Option<String>,
    /// The permutation importance of each fold (one prediction per input column), or none.
    #[serde(default, skip_serializing_if = "Importance::is_default")]
    pub importance: Importance,
}

/// `cv.importance`: what a run measures of its features' importance on its CV folds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Importance {
    /// Shuffle each input column of the fold's validation rows in turn.
    #[default]
    Permutation,
    /// Only the backend's own importance of the refitted model, where it has one.
    None,
}

impl Importance {
    fn is_default(&self) -> bool {
        *self == Importance::Permutation
    }
}

impl Default for CvConfig {
    fn default() -> Self {
        CvConfig {
            folds: 5,
            stratified: true,
            repeats: 1,
            holdout: 0.0,
            regression_bins: default_bins(),
            regression_bin_edges: None,
            assignments: None,
            importance: Importance::Permutation,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    /// `sqlite:///relative/path.db` or `sqlite:////absolute/path.db`; default `sqlite:///mlflow.db`.
    #[serde(default)]
    pub uri: Option<String>,
    /// Weights & Biases; absent means W&B only if the WANDB_* variables ask for it.
    #[serde(default)]
    pub wandb: Option<WandbTable>,
    /// A JSON-lines file that gets every run event as it happens (a CI log), relative to the
    /// working folder.
    #[serde(default)]
    pub jsonl: Option<String>,
    /// An MLflow tracking server (`http(s)://host:port`) that gets every run too, beside the
    /// store.
    #[serde(default)]
    pub server: Option<String>,
}

/// `[tracking.wandb]` in a config. Every key may also come from the SDK's variables
/// (WANDB_PROJECT, WANDB_ENTITY, WANDB_BASE_URL, WANDB_MODE), which take precedence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WandbTable {
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub entity: Option<String>,
    /// online | offline | disabled
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub base_url: Option<String>,
    /// How long a sweep waits after training for W&B to catch up (seconds, default 60).
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// Per-request timeout (seconds, default 30).
    #[serde(default)]
    pub request_timeout_s: Option<f64>,
    /// First retry wait in milliseconds, doubling up to 60 s (default 2000).
    #[serde(default)]
    pub backoff_ms: Option<u64>,
}

fn default_folds() -> usize {
    5
}
fn default_true() -> bool {
    true
}
fn default_bins() -> usize {
    5
}
fn default_one() -> usize {
    1
}
fn default_seed() -> u64 {
    42
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub experiment: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub task: TaskChoice,
    /// Metric that ranks the leaderboard; default accuracy (classification) or mae (regression).
    #[serde(default)]
    pub primary_metric: Option<String>,
    pub data: DataConfig,
    #[serde(default)]
    pub etl: EtlSpec,
    #[serde(default)]
    pub cv: CvConfig,
    #[serde(default)]
    pub tracking: TrackingConfig,
    /// Sweep files, relative to the config file.
    #[serde(default)]
    pub sweeps: Vec<String>,
    /// Model configs written in the config itself (`[[models]]` entries, as in a sweep file;
    /// a notebook's inline sweep), trained after the sweep files' configs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<toml::Table>,
    /// The sweep's identity across runs and shards.
    #[serde(default)]
    pub sweep: SweepTable,
}

/// `[sweep]`: the sweep's name. Running a sweep of the same name again continues it (trains the
/// configs without a FINISHED run); by default the name is the config file's stem plus a hash
/// of what the sweep trains.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepTable {
    #[serde(default)]
    pub name: Option<String>,
}

pub const CLASSIFICATION_METRICS: &[&str] = &[
    "accuracy",
    "balanced_accuracy",
    "f1_macro",
    "f1_weighted",
    "f1",
    "precision",
    "recall",
    "log_loss",
    "roc_auc",
    "pr_auc",
    "brier",
];
/// Classification metrics of the second class, which exist for two classes only.
pub const BINARY_METRICS: &[&str] = &["f1", "precision", "recall"];
pub const REGRESSION_METRICS: &[&str] = &[
    "mae",
    "rmse",
    "r2",
    "acc_within_0.25",
    "acc_within_0.5",
    "acc_within_1",
];

/// Whether a larger value of the metric is better.
pub fn higher_is_better(metric: &str) -> bool {
    !matches!(metric, "log_loss" | "brier" | "mae" | "rmse")
}

/// A config file after `--set` overrides, parsed and range-checked.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub path: PathBuf,
    /// The TOML it was read from (before `--set`), where errors find a key's line.
    pub text: String,
    pub config: Config,
    /// Model-level overrides (`--set models.n_trees=50`, a list or a range), applied to every
    /// sweep entry whose kind has the parameter.
    pub model_overrides: Vec<(String, toml::Value)>,
    /// `--search` and `--trials`, over every sweep file's `[search]`.
    pub search_override: Option<SearchOverride>,
}

impl LoadedConfig {
    pub fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// A path written in the config, resolved against the config file's folder.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let pb = PathBuf::from(p);
        if pb.is_absolute() {
            pb
        } else {
            self.dir().join(pb)
        }
    }
}

/// A config given as JSON (a Python dict) written as TOML text, for [`load_config_text`]. A
/// value TOML cannot hold (null) is refused with its key path.
pub fn toml_from_json(json: &str, origin: &str) -> Result<String, ConfigError> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| ConfigError::new(origin, format!("not a config: {e}")))?;
    let table = match json_to_toml(&value, "", origin)? {
        toml::Value::Table(t) => t,
        _ => {
            return Err(ConfigError::new(
                origin,
                "a config is a table (a dict) of keys",
            ))
        }
    };
    toml::to_string(&table)
        .map_err(|e| ConfigError::new(origin, format!("cannot be written as TOML: {e}")))
}

fn json_to_toml(
    value: &serde_json::Value,
    key: &str,
    origin: &str,
) -> Result<toml::Value, ConfigError> {
    use serde_json::Value as J;
    let at = |k: &str| {
        if key.is_empty() {
            k.to_string()
        } else {
            format!("{key}.{k}")
        }
    };
    Ok(match value {
        J::Null => {
            let mut e = ConfigError::new(
                origin,
                "None has no TOML value: leave the key out for its default",
            );
            e.key = Some(key.to_string());
            return Err(e);
        }
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(items) => toml::Value::Array(
            (items.iter().enumerate())
                .map(|(i, v)| json_to_toml(v, &format!("{key}[{i}]"), origin))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(map) => toml::Value::Table(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), json_to_toml(v, &at(k), origin)?)))
                .collect::<Result<_, ConfigError>>()?,
        ),
    })
}

/// Byte offset -> 1-based (line, column).
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// Finds where `key` is written inside `[table]` (or at the top level, or in the `index`-th
/// `[[table]]`), for errors found after parsing. Returns 1-based (line, column).
pub fn locate(
    src: &str,
    table: Option<&str>,
    index: Option<usize>,
    key: &str,
) -> Option<(usize, usize)> {
    let mut current: Option<String> = None;
    let mut seen_arrays: BTreeMap<String, usize> = BTreeMap::new();
    let mut current_index: Option<usize> = None;
    for (i, raw) in src.lines().enumerate() {
        let line = raw.trim_start();
        let indent = raw.len() - line.len();
        if let Some(rest) = line.strip_prefix("[[") {
            let name = rest.split("]]").next().unwrap_or("").trim().to_string();
            let n = seen_arrays.entry(name.clone()).or_insert(0);
            current_index = Some(*n);
            *n += 1;
            current = Some(name);
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            current = Some(rest.split(']').next().unwrap_or("").trim().to_string());
            current_index = None;
            continue;
        }
        let in_place = current.as_deref() == table && (index.is_none() || index == current_index);
        if !in_place {
            // `cv.folds = 3` or `cv = { folds = 3 }` written at the top level.
            if current.is_none() {
                if let Some(t) = table {
                    let dotted = format!("{t}.{key}");
                    let k = line
                        .split('=')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .trim_matches('"');
                    if k == dotted {
                        return Some((i + 1, indent + 1));
                    }
                    if k == t && line.contains(key) {
                        let col = raw.find(key).unwrap_or(indent);
                        return Some((i + 1, col + 1));
                    }
                }
            }
            continue;
        }
        let k = line
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if line.contains('=') && k == key {
            return Some((i + 1, indent + 1));
        }
    }
    None
}

/// Parses `value` from `--set key=value` as a TOML value; bare words become strings.
pub fn parse_cli_value(value: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or(toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

pub(super) fn param_from_toml(v: &toml::Value) -> Option<ParamValue> {
    Some(match v {
        toml::Value::Boolean(b) => ParamValue::Bool(*b),
        toml::Value::Integer(i) => ParamValue::Int(*i),
        toml::Value::Float(x) => ParamValue::Float(*x),
        toml::Value::String(s) => ParamValue::Str(s.clone()),
        _ => return None,
    })
}

pub(super) fn toml_type(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// Reads a config file, applies `--set` overrides and checks every value.
pub fn load_config(path: &Path, sets: &[String]) -> Result<LoadedConfig, ConfigError> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&file, format!("cannot read the config file: {e}")))?;
    load_config_text(src, path, sets)
}

/// A config given as TOML text (from Python: a string, or a dict written as TOML) standing
/// for the file `path`: errors name it, and paths written in it resolve against its folder.
pub fn load_config_text(
    src: String,
    path: &Path,
    sets: &[String],
) -> Result<LoadedConfig, ConfigError> {
    let file = path.display().to_string();
    let mut table: toml::Table = toml::from_str(&src).map_err(|e| toml_error(&file, &src, &e))?;
    let mut model_overrides = Vec::new();
    let mut overridden = Vec::new();
    for set in sets {
        let (key, value) = set.split_once('=').ok_or_else(|| {
            ConfigError::new(
                "--set",
                format!("`{set}` is not of the form key.path=value"),
            )
        })?;
        let key = key.trim();
        let value = parse_cli_value(value.trim());
        if let Some(param) = key.strip_prefix("models.") {
            model_overrides.push((param.to_string(), value));
            continue;
        }
        let parts: Vec<&str> = key.split('.').collect();
        let mut t = &mut table;
        for p in &parts[..parts.len() - 1] {
            let entry = t
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = entry.as_table_mut().ok_or_else(|| {
                ConfigError::new("--set", format!("`{key}`: `{p}` is not a table in {file}"))
            })?;
        }
        t.insert(parts[parts.len() - 1].to_string(), value);
        overridden.push(key.to_string());
    }
    let config: Config = if overridden.is_empty() {
        toml::from_str(&src).map_err(|e| toml_error(&file, &src, &e))?
    } else {
        let text = toml::to_string(&table).map_err(|e| {
            ConfigError::new(
                format!("{file} (after --set {})", overridden.join(", ")),
                format!("cannot be written back as TOML: {e}"),
            )
        })?;
        toml::from_str(&text).map_err(|e| {
            let label = format!("{file} (after --set {})", overridden.join(", "));
            after_set_error(&label, &src, &text, &e)
        })?
    };
    let loaded = LoadedConfig {
        path: path.to_path_buf(),
        text: src,
        config,
        model_overrides,
        search_override: None,
    };
    check_config(&loaded, &loaded.text, &overridden)?;
    Ok(loaded)
}

/// An error in the config rewritten with `--set` values: its key, found in the rewritten text,
/// and that key's line in the text as written (the rewritten text's lines mean nothing).
fn after_set_error(label: &str, src: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let mut err = toml_error(label, text, e);
    let pos = (err.key.as_deref()).and_then(|key| match key.rsplit_once('.') {
        Some((table, _)) if table.contains('[') => None,
        Some((table, k)) => locate(src, Some(table), None, k),
        None => locate(src, None, None, key),
    });
    err.line = pos.map(|p| p.0);
    err.col = pos.map(|p| p.1);
    err
}

pub(super) fn toml_error(file: &str, src: &str, e: &toml::de::Error) -> ConfigError {
    let pos = e.span().map(|s| line_col(src, s.start));
    let message = e.message().trim().to_string();
    let hint = unknown_field_hint(&message);
    let mut err = ConfigError::new(file, format!("{message}{hint}")).at(pos);
    err.key = pos.and_then(|(line, _)| key_at_line(src, line));
    err
}

/// serde's "unknown field `folsd`, expected one of `folds`, `repeats`" gains "; did you mean
/// \"folds\"?".
fn unknown_field_hint(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return String::new();
    };
    let Some((given, expected)) = rest.split_once('`') else {
        return String::new();
    };
    let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    crate::suggest::hint(given, &valid)
}

/// The dotted key written on `line` (1-based), with its table: `cv.folds` for `folds = 1` under
/// `[cv]`, `models[2].k` inside the third `[[models]]`.
fn key_at_line(src: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = src.lines().collect();
    let text = lines.get(line.checked_sub(1)?)?.trim();
    let (key, _) = text.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    for prev in lines[..line - 1].iter().rev() {
        let prev = prev.trim();
        if let Some(rest) = prev.strip_prefix("[[") {
            let name = rest.split("]]").next()?.trim();
            let index = lines[..line - 1]
                .iter()
                .filter(|l| l.trim().starts_with(&format!("[[{name}]]")))
                .count()
                - 1;
            return Some(format!("{name}[{index}].{key}"));
        }
        if let Some(rest) = prev.strip_prefix('[') {
            return Some(format!("{}.{key}", rest.split(']').next()?.trim()));
        }
    }
    Some(key.to_string())
}

/// A mistake in a config: the table and key it is at, and what is wrong.
type Problem = (Option<&'static str>, &'static str, String);

/// The first out-of-range `[cv]` setting, or an empty experiment name.
fn cv_problem(c: &Config) -> Option<Problem> {
    if c.cv.folds < 2 || c.cv.folds > 100 {
        let msg = format!("must be an integer in 2..=100, got {}", c.cv.folds);
        return Some((Some("cv"), "folds", msg));
    }
    if c.cv.repeats < 1 || c.cv.repeats > 100 {
        let msg = format!("must be an integer in 1..=100, got {}", c.cv.repeats);
        return Some((Some("cv"), "repeats", msg));
    }
    if !(0.0..0.9).contains(&c.cv.holdout) {
        let msg = format!("must be a share in [0, 0.9), got {}", c.cv.holdout);
        return Some((Some("cv"), "holdout", msg));
    }
    if c.cv.regression_bins < 1 || c.cv.regression_bins > 100 {
        let msg = format!(
            "must be an integer in 1..=100, got {}",
            c.cv.regression_bins
        );
        return Some((Some("cv"), "regression_bins", msg));
    }
    if let Some(edges) = &c.cv.regression_bin_edges {
        if edges.is_empty()
            || edges.windows(2).any(|w| w[0] >= w[1])
            || edges.iter().any(|e| !e.is_finite())
        {
            let msg = format!("must be finite numbers in ascending order, got {edges:?}");
            return Some((Some("cv"), "regression_bin_edges", msg));
        }
    }
    if c.experiment.trim().is_empty() {
        return Some((None, "experiment", "must not be empty".into()));
    }
    None
}

/// A primary metric the task does not have, or a tracking URI runner cannot write.
fn metric_or_tracking_problem(c: &Config) -> Option<Problem> {
    if let Some(m) = &c.primary_metric {
        let valid: Vec<&str> = match c.task {
            TaskChoice::Classification => CLASSIFICATION_METRICS.to_vec(),
            TaskChoice::Regression => REGRESSION_METRICS.to_vec(),
            TaskChoice::Auto => CLASSIFICATION_METRICS
                .iter()
                .chain(REGRESSION_METRICS)
                .copied()
                .collect(),
        };
        if !valid.contains(&m.as_str()) {
            let hint = crate::suggest::hint(m, &valid);
            let msg = format!(
                "unknown metric \"{m}\"; valid: {}{hint}",
                models::quoted_list(&valid)
            );
            return Some((None, "primary_metric", msg));
        }
    }
    match &c.tracking.uri {
        Some(uri) if !uri.starts_with("sqlite:///") => Some((Some("tracking"), "uri", format!("\"{uri}\" is not supported; use sqlite:///relative/path.db or sqlite:////absolute/path.db"))),
        _ => None,
    }
}

/// A sweep file or data source that is missing or of a kind runner does not read.
fn file_problem(loaded: &LoadedConfig) -> Option<Problem> {
    let c = &loaded.config;
    for s in &c.sweeps {
        let p = loaded.resolve(s);
        if !p.is_file() {
            let msg = format!("sweep file \"{s}\" not found (looked at {})", p.display());
            return Some((None, "sweeps", msg));
        }
    }
    let source = &c.data.source;
    if source.starts_with(crate::frames::PREFIX) {
        // A DataFrame handed over from Python: checked where it is read.
        return None;
    }
    let accepted = crate::source::ACCEPTED_EXTENSIONS;
    if source.starts_with("builtin:") {
        let builtin = crate::source::BUILTIN_RED_WINE;
        return (source != builtin).then(|| {
            let msg = format!("unknown builtin \"{source}\"; valid: \"{builtin}\"");
            (Some("data"), "source", msg)
        });
    }
    let p = loaded.resolve(source);
    if !p.is_file() {
        return Some((Some("data"), "source", format!("data file \"{source}\" not found (looked at {}); valid sources: a file ({accepted}) or builtin:winequality-red", p.display())));
    }
    if crate::source::Format::of(&p).is_none() {
        let msg = format!("\"{source}\" is not a file type runner reads; accepted: {accepted}");
        return Some((Some("data"), "source", msg));
    }
    None
}

fn check_config(
    loaded: &LoadedConfig,
    src: &str,
    overridden: &[String],
) -> Result<(), ConfigError> {
    let c = &loaded.config;
    let problem = cv_problem(c)
        .or_else(|| metric_or_tracking_problem(c))
        .or_else(|| file_problem(loaded));
    let Some((table, key, msg)) = problem else {
        return Ok(());
    };
    let full = match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    };
    if overridden.contains(&full) {
        Err(ConfigError::new("--set", msg).key(full))
    } else {
        let file = loaded.path.display().to_string();
        Err(ConfigError::new(file, msg)
            .key(&full)
            .at(locate(src, table, None, key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Task;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn grid_is_the_cartesian_product_with_defaults_filled() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "s.toml",
            "[[models]]\nkind = \"random_forest\"\nn_trees = [10, 20]\nmax_depth = [3, 5, 7]\n",
        );
        let cfgs = expand_sweep_file(&p, Task::Classification, 1).unwrap();
        assert_eq!(cfgs.len(), 6);
        assert_eq!(cfgs[0].name, "random_forest[max_depth=3,n_trees=10]");
        assert_eq!(cfgs[0].params["bootstrap"], ParamValue::Bool(true));
    }

    #[test]
    fn unknown_parameter_names_line_key_and_valid_choices() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "s.toml",
            "[[models]]\nkind = \"knn\"\n\n[[models]]\nkind = \"knn\"\nkk = 3\n",
        );
        let e = expand_sweep_file(&p, Task::Classification, 1).unwrap_err();
        assert_eq!(e.line, Some(6));
        assert_eq!(e.key.as_deref(), Some("models[1].kk"));
        assert!(e.message.contains("\"k\""), "{e}");
    }

    #[test]
    fn mistyped_kind_and_parameter_get_a_did_you_mean() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "s.toml",
            "[[models]]\nkind = \"random_forrest\"\n",
        );
        let e = expand_sweep_file(&p, Task::Classification, 1).unwrap_err();
        assert!(e.message.contains("did you mean \"random_forest\"?"), "{e}");
        let p = write(
            d.path(),
            "s.toml",
            "[[models]]\nkind = \"knn\"\nweigths = \"distance\"\n",
        );
        let e = expand_sweep_file(&p, Task::Classification, 1).unwrap_err();
        assert!(e.message.contains("did you mean \"weights\"?"), "{e}");
    }

    #[test]
    fn mistyped_config_key_gets_a_did_you_mean() {
        assert_eq!(
            unknown_field_hint("unknown field `fodls`, expected one of `folds`, `repeats`"),
            "; did you mean \"folds\"?"
        );
        assert_eq!(unknown_field_hint("invalid type: integer"), "");
    }

    #[test]
    fn random_search_samples_trials_reproducibly() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "s.toml", "[search]\nstrategy = \"random\"\ntrials = 3\nseed = 5\n[[models]]\nkind = \"knn\"\nk = [1, 2, 3, 4, 5, 6, 7, 8]\n");
        let a = expand_sweep_file(&p, Task::Classification, 1).unwrap();
        let b = expand_sweep_file(&p, Task::Classification, 1).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a, b);
    }

    #[test]
    fn locate_finds_keys_in_tables_and_array_entries() {
        let src = "a = 1\n[cv]\nfolds = 1\n[[models]]\nk = 1\n[[models]]\n  k = 2\n";
        assert_eq!(locate(src, Some("cv"), None, "folds"), Some((3, 1)));
        assert_eq!(locate(src, Some("models"), Some(1), "k"), Some((7, 3)));
        assert_eq!(locate(src, None, None, "a"), Some((1, 1)));
    }

    #[test]
    fn cli_values_parse_as_toml_or_fall_back_to_strings() {
        assert_eq!(parse_cli_value("10"), toml::Value::Integer(10));
        assert_eq!(parse_cli_value("0.5"), toml::Value::Float(0.5));
        assert_eq!(
            parse_cli_value("standard"),
            toml::Value::String("standard".into())
        );
    }
}
