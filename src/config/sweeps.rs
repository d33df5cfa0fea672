//! Sweep files (`sweeps/*.toml`): each `[[models]]` entry checked against its kind's declared
//! hyperparameters and expanded into configs (every grid point, or a seeded random sample),
//! ensembles resolved to their members, `--set models.<key>` applied.

use super::space::{looks_like_range, range_from_toml, Axis, Study};
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
    /// TPE and random search over ranges: stop asking for trials after this many seconds.
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// TPE: random trials before the estimator takes over (default 10).
    #[serde(default)]
    pub startup_trials: Option<usize>,
    /// TPE: one joint estimator over every dimension instead of one per dimension.
    #[serde(default)]
    pub multivariate: Option<bool>,
    /// TPE: "median" (the default) stops a trial after a fold below the finished trials'
    /// median there; "rounds" also judges iterative models' first fold round by round against
    /// that median; "asha" by successive halving at rungs; "none" trains every fold.
    #[serde(default)]
    pub prune: Option<String>,
    /// `prune = "asha"`: rounds before the first rung (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rounds: Option<i64>,
    /// `prune = "asha"`: each rung keeps the best 1/this of the trials that reach it, and the
    /// next rung is this many times further (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduction_factor: Option<usize>,
    /// TPE: "best" (the default) scores trials by their CV folds only and trains the best one
    /// in full once the search ends; "every" refits every trial and saves its model.
    #[serde(default)]
    pub refit: Option<String>,
}

/// `--search` and `--trials` from the command line, over every sweep file's `[search]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchOverride {
    pub strategy: Option<String>,
    pub trials: Option<usize>,
}

/// A sweep's configs: those listed up front (grid, random), and the entries searched trial by
/// trial (TPE).
#[derive(Debug, Clone, Default)]
pub struct Expanded {
    pub configs: Vec<ModelConfig>,
    pub studies: Vec<Study>,
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

/// Reads every sweep file of the config and expands it into resolved model configs for `task`
/// (and the entries TPE searches), `--set models.<key>` applied to every entry whose kind has
/// the parameter: a value, a list (a grid axis or choices) or a range.
pub fn expand_sweeps(loaded: &LoadedConfig, task: Task) -> Result<Expanded, ConfigError> {
    if loaded.config.sweeps.is_empty() && loaded.config.models.is_empty() {
        let file = loaded.path.display().to_string();
        let message = "name at least one sweep file (or write [[models]] entries in the config)";
        return Err(ConfigError::new(file, message).key("sweeps"));
    }
    let mut out = Expanded::default();
    let mut hit = std::collections::BTreeSet::new();
    for s in &loaded.config.sweeps {
        let path = loaded.resolve(s);
        let file = ExpandInput {
            path: &path,
            task,
            default_seed: loaded.config.seed,
            overrides: &loaded.model_overrides,
            search: loaded.search_override.as_ref(),
        };
        let (expanded, keys) = expand_file(&file, &out.configs)?;
        out.configs.extend(expanded.configs);
        out.studies.extend(expanded.studies);
        hit.extend(keys);
    }
    if !loaded.config.models.is_empty() {
        let file = loaded.path.display().to_string();
        let input = ExpandInput {
            path: &loaded.path,
            task,
            default_seed: loaded.config.seed,
            overrides: &loaded.model_overrides,
            search: loaded.search_override.as_ref(),
        };
        let search = search_of(&file, &loaded.text, None, input.search)?;
        let models = &loaded.config.models;
        let (expanded, keys) =
            expand_models(&input, (&file, &loaded.text), models, &search, &out.configs)?;
        out.configs.extend(expanded.configs);
        out.studies.extend(expanded.studies);
        hit.extend(keys);
    }
    if let Some((key, _)) = loaded
        .model_overrides
        .iter()
        .find(|(k, _)| !hit.contains(k))
    {
        return Err(
            ConfigError::new("--set", "no model config in the sweep has this parameter")
                .key(format!("models.{key}")),
        );
    }
    let mut seen = BTreeMap::new();
    let names = out.configs.iter().map(|c| (&c.name, &c.kind, &c.params));
    let study_names = out
        .studies
        .iter()
        .map(|s| (&s.name, &s.base.kind, &s.base.params));
    for (name, kind, params) in names.chain(study_names) {
        if let Some((k, p)) = seen.insert(name.clone(), (kind, params)) {
            if p != params || k != kind {
                return Err(ConfigError::new(
                    loaded.path.display().to_string(),
                    format!("two different model configs are both named \"{name}\"; give them distinct `name`s"),
                ));
            }
        }
    }
    Ok(out)
}

pub fn expand_sweep_file(
    path: &Path,
    task: Task,
    default_seed: u64,
) -> Result<Vec<ModelConfig>, ConfigError> {
    let input = ExpandInput {
        path,
        task,
        default_seed,
        overrides: &[],
        search: None,
    };
    Ok(expand_file(&input, &[])?.0.configs)
}

/// What one sweep file is expanded with.
struct ExpandInput<'a> {
    path: &'a Path,
    task: Task,
    default_seed: u64,
    /// `--set models.<key>=<value>`.
    overrides: &'a [(String, toml::Value)],
    search: Option<&'a SearchOverride>,
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
    ) -> Result<Vec<(String, Axis)>, ConfigError> {
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
            if let toml::Value::Table(t) = value {
                let weights = matches!(pspec.ty, models::ParamType::ClassWeights);
                if weights && looks_like_range(t) {
                    let msg = "class weights are a table of class = weight, not a range: list weight tables to search them";
                    return Err(self.error(key, msg));
                }
                if !weights {
                    let range = range_from_toml(pspec, t).map_err(|m| self.error(key, m))?;
                    axes.push((key.clone(), Axis::Range(range)));
                    continue;
                }
            }
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
            axes.push((key.clone(), Axis::Values(values)));
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

/// The file's `[search]` with `--search`/`--trials` over it, checked: grid; random with a
/// positive number of trials; TPE with trials or a timeout.
fn search_of(
    file: &str,
    src: &str,
    search: Option<SearchConfig>,
    cli: Option<&SearchOverride>,
) -> Result<SearchConfig, ConfigError> {
    let mut search = search.unwrap_or(SearchConfig {
        strategy: "grid".into(),
        trials: None,
        seed: None,
        timeout_s: None,
        startup_trials: None,
        multivariate: None,
        prune: None,
        min_rounds: None,
        reduction_factor: None,
        refit: None,
    });
    if let Some(cli) = cli {
        search.strategy = cli.strategy.clone().unwrap_or(search.strategy);
        search.trials = cli.trials.or(search.trials);
    }
    let at = locate(src, Some("search"), None, "strategy");
    if !["grid", "random", "tpe"].contains(&search.strategy.as_str()) {
        let msg = format!(
            "unknown strategy \"{}\"; valid: \"grid\", \"random\", \"tpe\"",
            search.strategy
        );
        return Err(ConfigError::new(file, msg).key("search.strategy").at(at));
    }
    let no_trials = search.trials.unwrap_or(0) == 0;
    if search.strategy == "random" && no_trials {
        let msg = "random search needs `trials` = a positive integer";
        return Err(ConfigError::new(file, msg).key("search.trials").at(at));
    }
    if search.strategy == "tpe" && no_trials && search.timeout_s.is_none() {
        let msg = "TPE needs `trials` = a positive integer, or `timeout_s`";
        return Err(ConfigError::new(file, msg).key("search.trials").at(at));
    }
    if let Some(p) = search
        .prune
        .as_deref()
        .filter(|p| !["median", "rounds", "asha", "none"].contains(p))
    {
        let msg =
            format!("unknown pruner \"{p}\"; valid: \"median\", \"rounds\", \"asha\", \"none\"");
        return Err(ConfigError::new(file, msg).key("search.prune").at(at));
    }
    check_asha(file, src, &search)?;
    if let Some(r) = (search.refit.as_deref()).filter(|r| !["best", "every"].contains(r)) {
        let msg = format!("unknown refit \"{r}\"; valid: \"best\", \"every\"");
        return Err(ConfigError::new(file, msg).key("search.refit").at(at));
    }
    if search.refit.is_some() && search.strategy != "tpe" {
        let msg =
            "`refit` applies to strategy = \"tpe\" (grid and random search refit every config)";
        return Err(ConfigError::new(file, msg).key("search.refit").at(at));
    }
    if search.timeout_s.is_some_and(|t| t.is_nan() || t <= 0.0) {
        let msg = "`timeout_s` must be a number of seconds above 0";
        return Err(ConfigError::new(file, msg).key("search.timeout_s").at(at));
    }
    Ok(search)
}

/// `min_rounds` and `reduction_factor` belong to `prune = "asha"`, in their ranges.
fn check_asha(file: &str, src: &str, search: &SearchConfig) -> Result<(), ConfigError> {
    let asha = search.prune.as_deref() == Some("asha");
    let given = [
        ("min_rounds", search.min_rounds.is_some()),
        ("reduction_factor", search.reduction_factor.is_some()),
    ];
    if let Some((key, _)) = given.iter().find(|(_, set)| *set && !asha) {
        let msg = format!("`{key}` applies to prune = \"asha\" only");
        let at = locate(src, Some("search"), None, key);
        return Err(ConfigError::new(file, msg)
            .key(format!("search.{key}"))
            .at(at));
    }
    if search.min_rounds.is_some_and(|r| r < 1) {
        let msg = "`min_rounds` must be a whole number of rounds, 1 or more";
        let at = locate(src, Some("search"), None, "min_rounds");
        return Err(ConfigError::new(file, msg).key("search.min_rounds").at(at));
    }
    if search.reduction_factor.is_some_and(|f| f < 2) {
        let msg = "`reduction_factor` must be 2 or more (each rung keeps the best 1/factor)";
        let at = locate(src, Some("search"), None, "reduction_factor");
        return Err(ConfigError::new(file, msg)
            .key("search.reduction_factor")
            .at(at));
    }
    Ok(())
}

/// The entry's table with `--set models.<key>` put in for every key its kind has; the keys
/// that were.
fn with_overrides(
    table: &toml::Table,
    spec: &models::KindSpec,
    overrides: &[(String, toml::Value)],
) -> (toml::Table, Vec<String>) {
    let mut table = table.clone();
    let mut hit = Vec::new();
    for (key, value) in overrides {
        if spec.params.iter().any(|p| p.name == key) {
            table.insert(key.clone(), value.clone());
            hit.push(key.clone());
        }
    }
    (table, hit)
}

/// Expands one sweep file; ensemble members may name configs of this file or of `earlier` ones.
/// Returns the configs and studies, and the `--set` keys some entry had.
fn expand_file(
    input: &ExpandInput,
    earlier: &[ModelConfig],
) -> Result<(Expanded, Vec<String>), ConfigError> {
    let file = input.path.display().to_string();
    let src = std::fs::read_to_string(input.path)
        .map_err(|e| ConfigError::new(&file, format!("cannot read the sweep file: {e}")))?;
    let sweep: SweepFile = toml::from_str(&src).map_err(|e| toml_error(&file, &src, &e))?;
    if sweep.models.is_empty() {
        return Err(ConfigError::new(&file, "no [[models]] entries"));
    }
    let search = search_of(&file, &src, sweep.search, input.search)?;
    expand_models(input, (&file, &src), &sweep.models, &search, earlier)
}

/// The configs of `[[models]]` entries written in `file` (whose text `src` locates their keys
/// in errors): a sweep file's, or the config's own.
fn expand_models(
    input: &ExpandInput,
    (file, src): (&str, &str),
    models: &[toml::Table],
    search: &SearchConfig,
    earlier: &[ModelConfig],
) -> Result<(Expanded, Vec<String>), ConfigError> {
    let mut out = Expanded::default();
    let mut hit = Vec::new();
    for (i, original) in models.iter().enumerate() {
        let probe = Entry {
            file,
            src,
            index: i,
            table: original,
        };
        let (kind, spec) = probe.kind(input.task)?;
        let (table, keys) = with_overrides(original, spec, input.overrides);
        hit.extend(keys);
        let entry = Entry {
            table: &table,
            ..probe
        };
        let seed = SplitMix64::derive(search.seed.unwrap_or(input.default_seed), 0x5EED + i as u64)
            .next_u64();
        let known: Vec<&ModelConfig> = earlier.iter().chain(&out.configs).collect();
        let part = expand_entry(&entry, &kind, spec, search, input.task, seed, &known)?;
        out.configs.extend(part.configs);
        out.studies.extend(part.studies);
    }
    Ok((out, hit))
}

/// One entry's configs: its grid, a random sample of it (or of its ranges), or its study.
fn expand_entry(
    entry: &Entry,
    kind: &str,
    spec: &'static models::KindSpec,
    search: &SearchConfig,
    task: Task,
    seed: u64,
    known: &[&ModelConfig],
) -> Result<Expanded, ConfigError> {
    let base_name = entry.name(kind)?;
    let member_refs = entry.members(kind, task)?;
    let axes = entry.axes(kind, spec, !member_refs.is_empty())?;
    let ranged = axes.iter().find(|(_, a)| matches!(a, Axis::Range(_)));
    if let (Some((key, _)), "grid") = (ranged, search.strategy.as_str()) {
        let msg = "a range is searched, not listed: set [search] strategy = \"random\" or \"tpe\" (with trials), or list the values";
        return Err(entry.error(key, msg));
    }
    let searched = axes.iter().any(|(_, a)| match a {
        Axis::Values(v) => v.len() > 1,
        Axis::Range(_) => true,
    });
    let by_trial = member_refs.is_empty()
        && searched
        && (search.strategy == "tpe" || (search.strategy == "random" && ranged.is_some()));
    if by_trial {
        let study = study_of(kind, spec, &base_name, &axes, search, seed);
        entry.check_class_only(task, std::slice::from_ref(&study.base))?;
        if search.strategy == "tpe" {
            return Ok(Expanded {
                configs: Vec::new(),
                studies: vec![study],
            });
        }
        let sampler = study.sampler();
        let configs = (0..search.trials.unwrap_or(1))
            .map(|t| study.config(t, &sampler.suggest(t, &[])))
            .collect();
        return Ok(Expanded {
            configs,
            studies: Vec::new(),
        });
    }
    let values: Vec<(String, Vec<ParamValue>)> = axes
        .into_iter()
        .filter_map(|(k, a)| match a {
            Axis::Values(v) => Some((k, v)),
            Axis::Range(_) => None,
        })
        .collect();
    let mut configs = grid_configs(kind, spec, &base_name, &values);
    entry.check_class_only(task, &configs)?;
    if !member_refs.is_empty() {
        let members =
            resolve_members(&member_refs, known).map_err(|m| entry.error("members", m))?;
        for c in &mut configs {
            c.members = members.clone();
        }
    }
    if search.strategy == "random" {
        let trials = search.trials.unwrap_or(1);
        if configs.len() > trials {
            SplitMix64::new(seed).shuffle(&mut configs);
            configs.truncate(trials);
        }
    }
    Ok(Expanded {
        configs,
        studies: Vec::new(),
    })
}

/// The study of an entry: its single values fixed in the base config, the rest its space.
fn study_of(
    kind: &str,
    spec: &models::KindSpec,
    name: &str,
    axes: &[(String, Axis)],
    search: &SearchConfig,
    seed: u64,
) -> Study {
    let fixed: Vec<(String, Vec<ParamValue>)> = axes
        .iter()
        .filter_map(|(k, a)| match a {
            Axis::Values(v) if v.len() == 1 => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect();
    let mut base = grid_configs(kind, spec, name, &fixed).remove(0);
    base.name = name.to_string();
    let space = axes
        .iter()
        .filter(|(_, a)| !matches!(a, Axis::Values(v) if v.len() == 1))
        .cloned()
        .collect();
    Study {
        name: name.to_string(),
        base,
        space,
        search: search.clone(),
        seed,
    }
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
