//! Sweep files (`sweeps/*.toml`): each `[[models]]` entry checked against its kind's declared
//! hyperparameters and expanded into configs (every grid point, or a seeded random sample),
//! ensembles resolved to their members, `--set models.<key>` applied.

use super::{locate, param_from_toml, toml_error, toml_type, ConfigError, LoadedConfig};
use crate::models::{self, check_value, kind_spec, ModelConfig, ParamValue, Task};
use crate::rng::SplitMix64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// How sweep configs are chosen: every grid point, or a seeded random sample of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    #[serde(default = "default_strategy")]
    pub strategy: String,
    #[serde(default)]
    pub trials: Option<usize>,
    #[serde(default)]
    pub seed: Option<u64>,
}

fn default_strategy() -> String {
    "grid".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    #[serde(default)]
    search: Option<SearchConfig>,
    #[serde(default)]
    models: Vec<toml::Table>,
}

/// Reads every sweep file of the config and expands it into resolved model configs for `task`.
pub fn expand_sweeps(loaded: &LoadedConfig, task: Task) -> Result<Vec<ModelConfig>, ConfigError> {
    let mut out: Vec<ModelConfig> = Vec::new();
    for s in &loaded.config.sweeps {
        let path = loaded.resolve(s);
        let configs = expand_sweep_file_after(&path, task, loaded.config.seed, &out)?;
        out.extend(configs);
    }
    for (key, value) in &loaded.model_overrides {
        let mut hit = false;
        for cfg in &mut out {
            hit |= apply_override(cfg, key, value)?;
        }
        if !hit {
            return Err(ConfigError::new(
                "--set",
                "no model config in the sweep has this parameter",
            )
            .key(format!("models.{key}")));
        }
    }
    let mut seen = BTreeMap::new();
    for cfg in &out {
        if let Some(prev) = seen.insert(cfg.name.clone(), cfg) {
            if prev.params != cfg.params || prev.kind != cfg.kind {
                return Err(ConfigError::new(
                    loaded.path.display().to_string(),
                    format!("two different model configs are both named \"{}\"; give them distinct `name`s", cfg.name),
                ));
            }
        }
    }
    Ok(out)
}

/// Sets `models.<key>` on a config and its members wherever the kind has that parameter.
fn apply_override(
    cfg: &mut ModelConfig,
    key: &str,
    value: &ParamValue,
) -> Result<bool, ConfigError> {
    let mut hit = false;
    for m in &mut cfg.members {
        hit |= apply_override(m, key, value)?;
    }
    if cfg.from_run.is_some() {
        return Ok(hit);
    }
    let spec = kind_spec(&cfg.kind).ok_or_else(|| {
        ConfigError::new(
            "--set",
            format!("`{}` has an unknown kind `{}`", cfg.name, cfg.kind),
        )
    })?;
    if let Some(p) = spec.params.iter().find(|p| p.name == key) {
        let v = check_value(p, value)
            .map_err(|m| ConfigError::new("--set", m).key(format!("models.{key}")))?;
        cfg.params.insert(key.to_string(), v);
        hit = true;
    }
    Ok(hit)
}

pub fn expand_sweep_file(
    path: &Path,
    task: Task,
    default_seed: u64,
) -> Result<Vec<ModelConfig>, ConfigError> {
    expand_sweep_file_after(path, task, default_seed, &[])
}

/// One `[[models]]` entry of a sweep file, for errors that point at its keys.
struct Entry<'a> {
    file: &'a str,
    src: &'a str,
    index: usize,
    table: &'a toml::Table,
}

impl Entry<'_> {
    /// An error about `key` of this entry, with its line and column.
    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, message)
            .key(format!("models[{}].{key}", self.index))
            .at(locate(self.src, Some("models"), Some(self.index), key))
    }

    /// Parameters about classes (weights, resampling, calibration, threshold): refused for a
    /// regression, and `class_weight = "balanced"` with `class_weights` refused together.
    fn check_class_only(&self, task: Task, configs: &[ModelConfig]) -> Result<(), ConfigError> {
        let set = |c: &ModelConfig, key: &str, unset: &str| {
            c.params
                .get(key)
                .is_some_and(|v| v.to_string().trim_matches('"') != unset)
        };
        let weighs = |c: &ModelConfig| set(c, "class_weights", "");
        if configs
            .iter()
            .any(|c| weighs(c) && set(c, "class_weight", "none"))
        {
            return Err(self.error(
                "class_weights",
                "give either class_weight = \"balanced\" or class_weights, not both",
            ));
        }
        if task != Task::Regression {
            return Ok(());
        }
        let rules = [
            (
                "class_weights",
                "",
                "class weights apply to classification only",
            ),
            (
                "resample",
                "none",
                "resampling balances classes: it applies to classification only",
            ),
            (
                "calibration",
                "none",
                "calibration maps class probabilities: it applies to classification only",
            ),
            (
                "threshold",
                "none",
                "a decision threshold splits two classes: it applies to classification only",
            ),
        ];
        for (key, unset, message) in rules {
            if configs.iter().any(|c| set(c, key, unset)) {
                return Err(self.error(key, message));
            }
        }
        Ok(())
    }

    /// The entry's kind, known to this build and able to do `task`.
    fn kind(&self, task: Task) -> Result<(String, &'static models::KindSpec), ConfigError> {
        let names = models::kind_names();
        let kind = match self.table.get("kind") {
            Some(toml::Value::String(k)) => k.clone(),
            Some(other) => {
                return Err(self.error(
                    "kind",
                    format!("must be a string, got {}", toml_type(other)),
                ))
            }
            None => {
                let msg = format!(
                    "model entry {} has no `kind`; valid kinds: {}",
                    self.index + 1,
                    models::quoted_list(&names)
                );
                return Err(ConfigError::new(self.file, msg).key(format!("models[{}]", self.index)));
            }
        };
        let spec = kind_spec(&kind).ok_or_else(|| {
            let hint = crate::suggest::hint(&kind, &names);
            let msg = format!(
                "unknown model kind \"{kind}\"; valid kinds: {}{hint}",
                models::quoted_list(&names)
            );
            self.error("kind", msg)
        })?;
        if !spec.available() {
            let feature = spec.feature.unwrap_or("?");
            return Err(self.error("kind", format!("model kind \"{kind}\" needs the cargo feature `{feature}`, which this build lacks: build with `cargo build --release --features {feature}` (the README's commands enable it)")));
        }
        if !spec.tasks.contains(&task) {
            let valid: Vec<&str> = models::kind_specs()
                .filter(|k| k.tasks.contains(&task))
                .map(|k| k.kind)
                .collect();
            let msg = format!(
                "model kind \"{kind}\" cannot do {task}; kinds for {task}: {}",
                models::quoted_list(&valid)
            );
            return Err(self.error("kind", msg));
        }
        Ok((kind, spec))
    }

    /// The entry's name: `name`, or its kind.
    fn name(&self, kind: &str) -> Result<String, ConfigError> {
        match self.table.get("name") {
            None => Ok(kind.to_string()),
            Some(toml::Value::String(n)) if !n.trim().is_empty() => Ok(n.clone()),
            Some(other) => Err(self.error(
                "name",
                format!("must be a non-empty string, got {}", toml_type(other)),
            )),
        }
    }

    /// An ensemble's `members` (names of configs or runs), with its meta-learner checked
    /// against the task; none for other kinds.
    fn members(&self, kind: &str, task: Task) -> Result<Vec<String>, ConfigError> {
        if !models::is_ensemble(kind) {
            return Ok(Vec::new());
        }
        let members: Vec<String> = match self.table.get("members") {
            Some(toml::Value::Array(items))
                if items.len() >= 2 && items.iter().all(|v| v.is_str()) =>
            {
                items
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            }
            _ => {
                let msg = format!("\"{kind}\" needs `members = [\"name\", ...]`: at least two names of model configs in the sweeps (a grid config by its full name, e.g. \"forest[n_trees=100]\") or earlier runs (\"t3\")");
                let at = locate(self.src, Some("models"), Some(self.index), "members").or(locate(
                    self.src,
                    Some("models"),
                    Some(self.index),
                    "kind",
                ));
                return Err(ConfigError::new(self.file, msg)
                    .key(format!("models[{}].members", self.index))
                    .at(at));
            }
        };
        if let Some(toml::Value::String(meta)) = self.table.get("meta") {
            let ok = match meta.as_str() {
                "linear" => task == Task::Regression,
                "logistic_regression" => task == Task::Classification,
                _ => true,
            };
            if !ok {
                let own = if task == Task::Regression {
                    "\"linear\""
                } else {
                    "\"logistic_regression\""
                };
                let msg = format!("meta-learner \"{meta}\" cannot do {task}; use \"auto\", \"random_forest\" or {own}");
                return Err(self.error("meta", msg));
            }
        }
        Ok(members)
    }

    /// Each hyperparameter the entry sets, with its candidate values (one value is a list of
    /// one), every value checked against the kind's declared type and range.
    fn axes(
        &self,
        kind: &str,
        spec: &models::KindSpec,
        has_members: bool,
    ) -> Result<Vec<(String, Vec<ParamValue>)>, ConfigError> {
        let mut axes = Vec::new();
        for (key, value) in self.table {
            if key == "kind" || key == "name" || (key == "members" && has_members) {
                continue;
            }
            let pspec = spec.params.iter().find(|p| p.name == key).ok_or_else(|| {
                let valid: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
                let hint = crate::suggest::hint(key, &valid);
                let msg = format!(
                    "unknown parameter for \"{kind}\"; valid: {}{hint}",
                    models::quoted_list(&valid)
                );
                self.error(key, msg)
            })?;
            let raw: Vec<&toml::Value> = match value {
                toml::Value::Array(items) if !items.is_empty() => items.iter().collect(),
                toml::Value::Array(_) => {
                    return Err(self.error(key, "an empty list gives no configs"))
                }
                v => vec![v],
            };
            let mut values = Vec::new();
            for v in raw {
                let pv = class_weights_from_toml(pspec, v).or_else(|| param_from_toml(v));
                let pv = pv.ok_or_else(|| {
                    self.error(key, format!("must be {}, got {}", pspec.ty, toml_type(v)))
                })?;
                values.push(check_value(pspec, &pv).map_err(|m| self.error(key, m))?);
            }
            axes.push((key.clone(), values));
        }
        Ok(axes)
    }
}

/// `class_weights = { "3" = 2.0, "8" = 5 }` as the parameter's text form "3=2,8=5" (labels in
/// the table's order); None for any other parameter or value, or a weight that is not a number.
fn class_weights_from_toml(spec: &models::ParamSpec, v: &toml::Value) -> Option<ParamValue> {
    if !matches!(spec.ty, models::ParamType::ClassWeights) {
        return None;
    }
    let table = v.as_table()?;
    let entries: Option<Vec<String>> = table
        .iter()
        .map(|(label, w)| {
            let w = w.as_float().or_else(|| w.as_integer().map(|i| i as f64))?;
            Some(format!("{label}={w}"))
        })
        .collect();
    Some(ParamValue::Str(entries?.join(",")))
}

/// The configs of one entry: every combination of its candidate values, the other
/// hyperparameters at their defaults, named `base[key=value,...]` by what varies.
fn grid_configs(
    kind: &str,
    spec: &models::KindSpec,
    base_name: &str,
    axes: &[(String, Vec<ParamValue>)],
) -> Vec<ModelConfig> {
    let varying: Vec<&str> = axes
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k.as_str())
        .collect();
    cartesian(axes)
        .into_iter()
        .map(|chosen| {
            let mut params: BTreeMap<String, ParamValue> = spec
                .params
                .iter()
                .map(|p| (p.name.to_string(), models::default_value(p)))
                .collect();
            for (k, v) in &chosen {
                params.insert(k.clone(), v.clone());
            }
            let suffix: Vec<String> = chosen
                .iter()
                .filter(|(k, _)| varying.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let name = if suffix.is_empty() {
                base_name.to_string()
            } else {
                format!("{base_name}[{}]", suffix.join(","))
            };
            ModelConfig {
                name,
                kind: kind.to_string(),
                params,
                members: Vec::new(),
                from_run: None,
                algorithm: Some(spec.algorithm),
            }
        })
        .collect()
}

/// The file's `[search]`, checked: grid, or random with a positive number of trials.
fn search_of(
    file: &str,
    src: &str,
    search: Option<SearchConfig>,
) -> Result<SearchConfig, ConfigError> {
    let search = search.unwrap_or(SearchConfig {
        strategy: "grid".into(),
        trials: None,
        seed: None,
    });
    let at = locate(src, Some("search"), None, "strategy");
    if search.strategy != "grid" && search.strategy != "random" {
        let msg = format!(
            "unknown strategy \"{}\"; valid: \"grid\", \"random\"",
            search.strategy
        );
        return Err(ConfigError::new(file, msg).key("search.strategy").at(at));
    }
    if search.strategy == "random" && search.trials.unwrap_or(0) == 0 {
        let msg = "random search needs `trials` = a positive integer";
        return Err(ConfigError::new(file, msg).key("search.trials").at(at));
    }
    Ok(search)
}

/// Expands one sweep file; ensemble members may name configs of this file or of `earlier` ones.
pub fn expand_sweep_file_after(
    path: &Path,
    task: Task,
    default_seed: u64,
    earlier: &[ModelConfig],
) -> Result<Vec<ModelConfig>, ConfigError> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&file, format!("cannot read the sweep file: {e}")))?;
    let sweep: SweepFile = toml::from_str(&src).map_err(|e| toml_error(&file, &src, &e))?;
    if sweep.models.is_empty() {
        return Err(ConfigError::new(&file, "no [[models]] entries"));
    }
    let search = search_of(&file, &src, sweep.search)?;
    let mut all = Vec::new();
    for (i, table) in sweep.models.iter().enumerate() {
        let entry = Entry {
            file: &file,
            src: &src,
            index: i,
            table,
        };
        let (kind, spec) = entry.kind(task)?;
        let base_name = entry.name(&kind)?;
        let member_refs = entry.members(&kind, task)?;
        let axes = entry.axes(&kind, spec, !member_refs.is_empty())?;
        let mut configs = grid_configs(&kind, spec, &base_name, &axes);
        entry.check_class_only(task, &configs)?;
        if !member_refs.is_empty() {
            let known: Vec<&ModelConfig> = earlier.iter().chain(&all).collect();
            let members =
                resolve_members(&member_refs, &known).map_err(|m| entry.error("members", m))?;
            for c in &mut configs {
                c.members = members.clone();
            }
        }
        if search.strategy == "random" {
            let trials = search.trials.unwrap_or(1);
            if configs.len() > trials {
                let seed = search.seed.unwrap_or(default_seed);
                let mut rng = SplitMix64::derive(seed, 0x5EED + i as u64);
                rng.shuffle(&mut configs);
                configs.truncate(trials);
            }
        }
        all.extend(configs);
    }
    Ok(all)
}

/// Finds each member: an earlier run ("t3", resolved against the store later), a config by its
/// full name, or by its entry name when that entry expanded to one config.
fn resolve_members(refs: &[String], known: &[&ModelConfig]) -> Result<Vec<ModelConfig>, String> {
    let mut out = Vec::new();
    for r in refs {
        if crate::types::parse_version(r, 't').is_ok() {
            out.push(ModelConfig {
                name: r.clone(),
                from_run: Some(r.clone()),
                ..Default::default()
            });
            continue;
        }
        let exact: Vec<&&ModelConfig> = known.iter().filter(|c| &c.name == r).collect();
        let prefix = format!("{r}[");
        let hits: Vec<&&ModelConfig> = if exact.is_empty() {
            known
                .iter()
                .filter(|c| c.name.starts_with(&prefix))
                .collect()
        } else {
            exact
        };
        match hits.as_slice() {
            [one] if models::is_ensemble(&one.kind) => {
                return Err(format!(
                    "member \"{r}\" is itself an ensemble; members must be single models"
                ))
            }
            [one] => out.push((**one).clone()),
            [] => {
                let names: Vec<&str> = known
                    .iter()
                    .filter(|c| !models::is_ensemble(&c.kind))
                    .map(|c| c.name.as_str())
                    .collect();
                return Err(format!(
                    "member \"{r}\" is not a model config of the sweeps above this entry nor a run version (t3); names: {}",
                    names.join(", ")
                ));
            }
            many => {
                return Err(format!(
                    "member \"{r}\" matches {} configs ({}); name one",
                    many.len(),
                    many.iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    }
    Ok(out)
}

fn cartesian(axes: &[(String, Vec<ParamValue>)]) -> Vec<Vec<(String, ParamValue)>> {
    let mut out: Vec<Vec<(String, ParamValue)>> = vec![Vec::new()];
    for (k, values) in axes {
        let mut next = Vec::with_capacity(out.len() * values.len());
        for prefix in &out {
            for v in values {
                let mut p = prefix.clone();
                p.push((k.clone(), v.clone()));
                next.push(p);
            }
        }
        out = next;
    }
    out
}
