//! Sharded sweeps: which part of a sweep this process trains (`--shard i/n`, or the index a
//! Kubernetes Indexed Job or a Slurm job array gives it), and what identifies a sweep across
//! processes: its name and each config's key.
//!
//! Every shard expands the same configs in the same order; shard `i` of `n` trains the configs
//! whose index is `i` mod `n`. A config's key is a hash of everything it is (kind, name,
//! parameters), so a retried shard recognises the configs that already have a run.

use crate::config::{ConfigError, Expanded};
use crate::models::ModelConfig;
use crate::prepare::Prepared;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// This process's part of a sweep: index `index` of `count`, and where that came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
    /// What set it ("--shard", "JOB_COMPLETION_INDEX", ...), for messages.
    pub origin: String,
}

impl Shard {
    /// Whether the config at `index` of the sweep's stable order is this shard's.
    pub fn owns(&self, index: usize) -> bool {
        index % self.count == self.index
    }
}

/// `--shard i/n`, checked: i below n.
pub fn parse_shard_arg(s: &str) -> Result<(usize, usize), String> {
    let usage = "expected i/n with 0 <= i < n, such as 0/4";
    let (i, n) = s.split_once('/').ok_or(usage)?;
    let (i, n) = (i.trim().parse::<usize>(), n.trim().parse::<usize>());
    match (i, n) {
        (Ok(i), Ok(n)) if n >= 1 && i < n => Ok((i, n)),
        _ => Err(format!("`{s}`: {usage}")),
    }
}

fn env_usize(name: &str) -> Result<Option<usize>> {
    let Some(v) = std::env::var(name).ok().filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    match v.trim().parse::<usize>() {
        Ok(n) => Ok(Some(n)),
        Err(_) => bail!(ConfigError::new(
            name,
            format!("`{v}` is not a whole number >= 0")
        )),
    }
}

/// The shard index the environment gives: a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX`,
/// or a Slurm array's `SLURM_ARRAY_TASK_ID` counted from `SLURM_ARRAY_TASK_MIN` (an array
/// may start at 1).
fn env_index() -> Result<Option<(usize, &'static str)>> {
    if let Some(i) = env_usize("JOB_COMPLETION_INDEX")? {
        return Ok(Some((i, "JOB_COMPLETION_INDEX")));
    }
    let Some(id) = env_usize("SLURM_ARRAY_TASK_ID")? else {
        return Ok(None);
    };
    let min = env_usize("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
    if id < min {
        bail!(ConfigError::new(
            "SLURM_ARRAY_TASK_ID",
            format!("{id} is below SLURM_ARRAY_TASK_MIN = {min}")
        ));
    }
    Ok(Some((id - min, "SLURM_ARRAY_TASK_ID")))
}

/// The shard count the environment gives: `SLURM_ARRAY_TASK_COUNT`, else the
/// `RUNNER_SHARD_COUNT` a Job manifest sets (a pod is not told its Job's completions).
fn env_count() -> Result<Option<(usize, &'static str)>> {
    for name in ["RUNNER_SHARD_COUNT", "SLURM_ARRAY_TASK_COUNT"] {
        if let Some(n) = env_usize(name)? {
            return Ok(Some((n, name)));
        }
    }
    Ok(None)
}

/// This process's shard: `--shard i/n` first, else the index from the environment with the
/// count from `--shard-count` or the environment; the whole sweep (0 of 1) when nothing says.
pub fn resolve(flag: Option<(usize, usize)>, count_flag: Option<usize>) -> Result<Shard> {
    if let Some((index, count)) = flag {
        return Ok(Shard {
            index,
            count,
            origin: "--shard".into(),
        });
    }
    let Some((index, index_from)) = env_index()? else {
        if count_flag.is_some() {
            bail!(ConfigError::new(
                "--shard-count",
                "gives the number of shards, but nothing gives this shard's index: pass --shard i/n, or run under a Kubernetes Indexed Job (JOB_COMPLETION_INDEX) or a Slurm array (SLURM_ARRAY_TASK_ID)"
            ));
        }
        return Ok(Shard {
            index: 0,
            count: 1,
            origin: "whole sweep".into(),
        });
    };
    let count = match (count_flag, env_count()?) {
        (Some(n), _) => (n, "--shard-count"),
        (None, Some(found)) => found,
        (None, None) => bail!(ConfigError::new(
            index_from,
            format!("says this is shard {index}, but not of how many: set RUNNER_SHARD_COUNT (a Kubernetes Job's completions), or pass --shard-count N")
        )),
    };
    if index >= count.0 {
        bail!(ConfigError::new(
            index_from,
            format!(
                "shard index {index} is not below the shard count {} ({})",
                count.0, count.1
            )
        ));
    }
    Ok(Shard {
        index,
        count: count.0,
        origin: format!("{index_from}, {}", count.1),
    })
}

/// One config of a sweep as every shard sees it: its place in the stable order, and its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub index: usize,
    pub name: String,
    pub kind: String,
    pub key: String,
}

/// A config's key: a hash of all it is.
pub fn config_key(config: &ModelConfig) -> String {
    let json = serde_json::to_string(config).unwrap_or_default();
    crate::data::sha256_hex(json.as_bytes())[..16].to_string()
}

/// The sweep's configs in their stable order (the order the sweep files list them).
pub fn entries(configs: &[ModelConfig]) -> Vec<Entry> {
    (configs.iter().enumerate())
        .map(|(index, c)| Entry {
            index,
            name: c.name.clone(),
            kind: c.kind.clone(),
            key: config_key(c),
        })
        .collect()
}

/// The sweep's name: `sweep.name` from the config, else the config file's stem and a hash of
/// what the sweep trains (configs, searches, data and ETL, CV, seed, metric), so that the same
/// sweep run again continues and a changed one starts anew.
pub fn sweep_name(prep: &Prepared, expanded: &Expanded, smoke: bool) -> Result<String> {
    let c = &prep.loaded.config;
    if let Some(name) = &c.sweep.name {
        check_name(name, &prep.loaded.path.display().to_string())?;
        return Ok(name.clone());
    }
    let plan = serde_json::json!({
        "configs": entries(&expanded.configs).iter().map(|e| &e.key).collect::<Vec<_>>(),
        "studies": expanded.studies.iter().map(|s| s.identity()).collect::<Vec<_>>(),
        "experiment": c.experiment,
        "data": prep.etl_key,
        "cv": c.cv,
        "seed": c.seed,
        "metric": prep.primary_metric,
        "smoke": smoke,
    });
    let hash = crate::data::sha256_hex(plan.to_string().as_bytes());
    let stem = (prep.loaded.path.file_stem())
        .map(|s| crate::track::sanitize(&s.to_string_lossy()).replace(' ', "_"))
        .unwrap_or_else(|| "sweep".into());
    Ok(format!("{stem}-{}", &hash[..8]))
}

/// A sweep name: 1 to 200 letters, digits, '-', '_' or '.'.
pub fn check_name(name: &str, file: &str) -> Result<()> {
    let ok_char = |ch: char| ch.is_ascii_alphanumeric() || "-_.".contains(ch);
    if name.is_empty() || name.len() > 200 || !name.chars().all(ok_char) {
        bail!(ConfigError::new(
            file,
            format!("key `sweep.name`: `{name}` is not a sweep name: use 1 to 200 letters, digits, '-', '_' or '.'")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_args_need_an_index_below_the_count() {
        assert_eq!(parse_shard_arg("0/4"), Ok((0, 4)));
        assert_eq!(parse_shard_arg("3/4"), Ok((3, 4)));
        for bad in ["4/4", "1/0", "a/2", "2", "-1/3"] {
            assert!(parse_shard_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shards_split_the_configs_without_overlap() {
        let shards: Vec<Shard> = (0..3)
            .map(|index| Shard {
                index,
                count: 3,
                origin: String::new(),
            })
            .collect();
        for config in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.owns(config)).count(), 1);
        }
    }
}
