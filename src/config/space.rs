//! Search spaces of sweep entries: a hyperparameter given as a list is a set of choices (a grid
//! axis for grid search), one given as an inline table `{ low, high, log, int, step }` is a
//! range. A [`Study`] is an entry searched by random search over ranges or by TPE: its fixed
//! parameters, its space, and how a sampled point becomes a config named `entry#k`.

use super::sweeps::SearchConfig;
use crate::models::{check_value, ModelConfig, ParamSpec, ParamType, ParamValue};
use crate::tpe::{Dim, Sampler};
use serde::Serialize;

/// A numeric range: `low..=high`, searched in the logarithm with `log`, on multiples of
/// `step` from `low` (whole numbers for an integer parameter or with `int`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Range {
    pub low: f64,
    pub high: f64,
    pub log: bool,
    pub int: bool,
    pub step: Option<f64>,
}

/// How an entry gives one hyperparameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Axis {
    /// One value, or several: a grid axis, or the choices of a random or TPE search.
    Values(Vec<ParamValue>),
    Range(Range),
}

const RANGE_KEYS: [&str; 5] = ["low", "high", "log", "int", "step"];

/// What marks the name of a search's best trial trained in full: `entry#best[key=value,...]`.
const BEST_MARK: &str = "#best[";

/// Whether a run's config name is a search's best trial trained in full.
pub fn is_best_of_search(name: &str) -> bool {
    name.contains(BEST_MARK)
}

/// Whether an inline table is written as a range (it has `low` and `high` and nothing beyond
/// the range's keys).
pub fn looks_like_range(table: &toml::Table) -> bool {
    table.contains_key("low")
        && table.contains_key("high")
        && table.keys().all(|k| RANGE_KEYS.contains(&k.as_str()))
}

/// A range of `spec` from its inline table, checked: both ends valid values of the parameter,
/// `low < high`, a log range above 0, a step above 0.
pub fn range_from_toml(spec: &ParamSpec, table: &toml::Table) -> Result<Range, String> {
    if let Some(k) = table.keys().find(|k| !RANGE_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "`{k}` is not a range key; a range is {{ low = .., high = .., log = true, int = true, step = .. }} (log, int and step optional)"
        ));
    }
    let number = |key: &str| -> Result<f64, String> {
        match table.get(key) {
            Some(toml::Value::Integer(i)) => Ok(*i as f64),
            Some(toml::Value::Float(x)) => Ok(*x),
            Some(_) => Err(format!("the range's `{key}` must be a number")),
            None => Err(format!(
                "a range needs `low` and `high`; `{key}` is missing"
            )),
        }
    };
    let flag = |key: &str| {
        table
            .get(key)
            .and_then(toml::Value::as_bool)
            .unwrap_or(false)
    };
    let integer_param = matches!(spec.ty, ParamType::Int { .. });
    if !matches!(spec.ty, ParamType::Int { .. } | ParamType::Float { .. }) {
        return Err(format!(
            "`{}` is {}: list its choices, e.g. [\"a\", \"b\"], instead of a range",
            spec.name, spec.ty
        ));
    }
    let range = Range {
        low: number("low")?,
        high: number("high")?,
        log: flag("log"),
        int: integer_param || flag("int"),
        step: table.get("step").map(|_| number("step")).transpose()?,
    };
    if range.low >= range.high {
        return Err(format!(
            "the range's low {} is not below its high {}",
            range.low, range.high
        ));
    }
    if range.log && range.low <= 0.0 {
        return Err(format!("a log range needs low above 0, got {}", range.low));
    }
    if range.step.is_some_and(|s| s <= 0.0) {
        return Err("the range's step must be above 0".into());
    }
    for end in [range.low, range.high] {
        check_value(spec, &range.value(end)).map_err(|e| format!("the range's end {e}"))?;
    }
    Ok(range)
}

impl Range {
    /// A sampled number as the parameter's value.
    fn value(&self, v: f64) -> ParamValue {
        if self.int {
            ParamValue::Int(v.round() as i64)
        } else {
            ParamValue::Float(v)
        }
    }

    fn dim(&self) -> Dim {
        let step = match (self.step, self.int) {
            (Some(s), true) => Some(s.round().max(1.0)),
            (None, true) => Some(1.0),
            (s, false) => s,
        };
        Dim::Number {
            low: self.low,
            high: self.high,
            log: self.log,
            step,
        }
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..={}", self.low, self.high)?;
        if self.log {
            write!(f, " log")?;
        }
        if self.int {
            write!(f, " int")?;
        }
        if let Some(s) = self.step {
            write!(f, " step {s}")?;
        }
        Ok(())
    }
}

/// One sweep entry searched trial by trial.
#[derive(Debug, Clone)]
pub struct Study {
    /// The entry's name; trial k (from 1) is the config `name#k[key=value,...]`.
    pub name: String,
    /// The kind, the defaults and the entry's single values.
    pub base: ModelConfig,
    /// The searched hyperparameters: choices (two or more values) and ranges.
    pub space: Vec<(String, Axis)>,
    pub search: SearchConfig,
    /// The search's seed (the file's `seed`, else the config's), per entry.
    pub seed: u64,
}

impl Study {
    /// The sampler of the space: random for `startup_trials` (default 10) trials, then TPE.
    pub fn sampler(&self) -> Sampler {
        let dims = self
            .space
            .iter()
            .map(|(_, axis)| match axis {
                Axis::Values(v) => Dim::Choice(v.len()),
                Axis::Range(r) => r.dim(),
            })
            .collect();
        let startup = match self.search.strategy.as_str() {
            "tpe" => self.search.startup_trials.unwrap_or(10),
            _ => usize::MAX,
        };
        Sampler::new(
            dims,
            startup,
            self.search.multivariate.unwrap_or(true),
            self.seed,
        )
    }

    /// The config of trial `trial` (0-based) from the sampler's values.
    pub fn config(&self, trial: usize, values: &[f64]) -> ModelConfig {
        let mut cfg = self.base.clone();
        let mut shown = Vec::new();
        for ((key, axis), v) in self.space.iter().zip(values) {
            let value = match axis {
                Axis::Values(choices) => choices[(*v as usize).min(choices.len() - 1)].clone(),
                Axis::Range(r) => r.value(*v),
            };
            shown.push(format!("{key}={}", short(&value)));
            cfg.params.insert(key.clone(), value);
        }
        cfg.name = format!("{}#{}[{}]", self.name, trial + 1, shown.join(","));
        cfg
    }

    /// Trial `trial`'s config (as [`Study::config`] named it) renamed as the search's best,
    /// `entry#best[key=value,...]`.
    pub fn best_config(&self, trial: usize, cfg: &ModelConfig) -> ModelConfig {
        let numbered = format!("{}#{}[", self.name, trial + 1);
        let named = format!("{}{BEST_MARK}", self.name);
        let mut best = cfg.clone();
        best.name = best.name.replacen(&numbered, &named, 1);
        best
    }

    /// Whether a config name is this study's best trial trained in full.
    pub fn is_best(&self, name: &str) -> bool {
        (name.strip_prefix(&self.name)).is_some_and(|rest| rest.starts_with(BEST_MARK))
    }

    /// The sampler's values of a trial's config (for a search that resumes), if it is one of
    /// this study's.
    pub fn values_of(&self, cfg: &ModelConfig) -> Option<Vec<f64>> {
        self.space
            .iter()
            .map(|(key, axis)| {
                let v = cfg.params.get(key)?;
                match axis {
                    Axis::Values(choices) => choices.iter().position(|c| c == v).map(|i| i as f64),
                    Axis::Range(_) => match v {
                        ParamValue::Int(i) => Some(*i as f64),
                        ParamValue::Float(x) => Some(*x),
                        _ => None,
                    },
                }
            })
            .collect()
    }

    /// The trial number (0-based) a config name `name#k` gives, if it is this study's.
    pub fn trial_of(&self, name: &str) -> Option<usize> {
        let rest = name.strip_prefix(&self.name)?.strip_prefix('#')?;
        let k: usize = rest.split('[').next()?.parse().ok()?;
        k.checked_sub(1)
    }

    /// What makes two sweeps the same search: the kind, its fixed parameters, the space, the
    /// strategy's settings and the seed (not the budget: more trials continue a search).
    pub fn identity(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "kind": self.base.kind,
            "algorithm": self.base.algorithm,
            "params": self.base.params,
            "space": self.describe(),
            "strategy": self.search.strategy,
            "startup_trials": self.search.startup_trials,
            "multivariate": self.search.multivariate,
            // The TPE's arithmetic: searches of an earlier one are not continued by this one.
            "sampler": crate::tpe::VERSION,
            "seed": self.seed,
        })
    }

    /// One line per searched hyperparameter, for `runner validate`.
    pub fn describe(&self) -> Vec<String> {
        self.space
            .iter()
            .map(|(key, axis)| match axis {
                Axis::Values(v) => format!(
                    "{key}: one of {}",
                    v.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Axis::Range(r) => format!("{key}: {r}"),
            })
            .collect()
    }
}

/// A value as a trial's name shows it: numbers to four significant digits.
fn short(value: &ParamValue) -> String {
    match value {
        ParamValue::Float(x) if *x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e4) => {
            format!("{x:.3e}")
        }
        ParamValue::Float(x) => {
            let digits = (3 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
            let text = format!("{x:.digits$}");
            if text.contains('.') {
                text.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                text
            }
        }
        other => other.to_string(),
    }
}
