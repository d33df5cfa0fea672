//! What a search reads from the store: the trials earlier sweeps (or, for a sharded search,
//! the other shards) ended, with the learning curves its pruner needs; and the claim by which
//! one shard of a sharded search trains its best trial in full.

use crate::search::{EarlierTrial, SharedTrials};
use crate::track::mlflow::MlflowStore;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Which earlier trials' first-fold learning curves a search's pruner reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Curves {
    None,
    /// `prune = "rounds"`: the finished trials'.
    Finished,
    /// `prune = "asha"`: every trial's, pruned ones too (their losses at the rungs reached).
    Every,
}

/// The trials earlier sweeps of these searches (by signature) finished or pruned, in the order
/// they were numbered, with the first-fold learning curves `curves` asks for.
pub fn ended_trials(
    path: &Path,
    metric: &str,
    signatures: &[String],
    curves: Curves,
) -> Result<Vec<(String, EarlierTrial)>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let store = MlflowStore::open_read_only(path)?;
    let mut runs = store.training_runs()?;
    runs.sort_by_key(|r| r.version);
    let mut out = Vec::new();
    for r in runs {
        let signature = r.record["search"]["signature"].as_str();
        let Some(signature) = signature.filter(|s| signatures.iter().any(|t| t == s)) else {
            continue;
        };
        let Ok(config) = serde_json::from_value(r.record["plan"]["model"].clone()) else {
            continue;
        };
        let Some(summary) = r.summary.as_ref() else {
            continue;
        };
        let pruned = !summary["pruned"].is_null();
        let score = summary["metrics"][metric]["mean"].as_f64();
        let folds: Option<Vec<f64>> =
            serde_json::from_value(summary["fold_metrics"][metric].clone()).ok();
        // A trial pruned inside its first fold has no fold score, yet its number was asked.
        let folds = match (r.status.as_str(), score, folds) {
            ("FINISHED", Some(_), Some(folds)) => folds,
            (_, _, folds) if pruned => folds.unwrap_or_default(),
            _ => continue,
        };
        let wanted = curves == Curves::Every || (curves == Curves::Finished && !pruned);
        let first_fold_losses = if wanted {
            first_fold_losses(&store, &r.run_uuid)?
        } else {
            Vec::new()
        };
        let trial = EarlierTrial {
            config,
            score,
            folds,
            pruned,
            first_fold_losses,
        };
        out.push((signature.to_string(), trial));
    }
    Ok(out)
}

/// A run's first-fold validation loss by round, as the store holds its learning curve.
fn first_fold_losses(store: &MlflowStore, run_uuid: &str) -> Result<Vec<f64>> {
    let latest = store.latest_metrics(run_uuid)?;
    let key = latest.iter().map(|(k, _)| k).find(|k| {
        k.strip_prefix("fold0/")
            .is_some_and(crate::sweep::prune::judged_metric)
    });
    let Some(key) = key else {
        return Ok(Vec::new());
    };
    let mut history = store.metric_history(run_uuid, key)?;
    history.sort_by_key(|(step, _)| *step);
    Ok(history.into_iter().map(|(_, v)| v).collect())
}

/// A sharded search's view of the store its shards share.
pub struct StoreTrials {
    pub path: PathBuf,
    pub metric: String,
    pub signature: String,
    pub curves: Curves,
    /// The sweep's parent run, which holds the claim on the best run.
    pub parent_run: String,
    /// This shard's index: on a server, a retry of the shard holds the claim its first
    /// attempt made.
    pub shard: usize,
}

impl SharedTrials for StoreTrials {
    fn ended(&mut self) -> Result<Vec<EarlierTrial>> {
        // A server's replica copies in what the other hosts' shards have ended.
        MlflowStore::open_existing(&self.path)?.refresh_around(&self.parent_run)?;
        let signatures = std::slice::from_ref(&self.signature);
        let trials = ended_trials(&self.path, &self.metric, signatures, self.curves)?;
        Ok(trials.into_iter().map(|(_, t)| t).collect())
    }

    fn claim_best(&mut self) -> Result<bool> {
        let store = MlflowStore::open_existing(&self.path)?;
        let short = &self.signature[..self.signature.len().min(16)];
        if let Some(registry) = store.server()? {
            // The server's registry takes a claim once, for good: the shard that made it (or
            // a retry of that shard) trains the best run.
            let me = format!("shard {}", self.shard);
            let key = format!("best/{}/{short}", self.parent_run);
            return Ok(registry.claim(&key, &me)? == me);
        }
        store.claim(
            &self.parent_run,
            &format!("runner.search_best_claim.{short}"),
        )
    }
}
