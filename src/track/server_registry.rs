//! Runner's registry on an MLflow tracking server that is runner's store (`--tracking-uri
//! http://...`): the numbers of training runs (`tN`), of ETL versions (`vN`) and of sweeps'
//! parent runs, unique and dense per server under any number of concurrent writers.
//!
//! MLflow has no counter, lock or transaction across calls, but it has one compare-and-set: a
//! run's param is logged once, and logging it again with another value is refused (the server's
//! SQL store enforces it with the params table's primary key; the same value again is accepted,
//! so a retried request is harmless). The registry is one run, `numbers`, in the experiment
//! `runner-registry`: claiming number N for a run is logging the registry's param `tN` with the
//! run's id. Exactly one writer's value sticks; the others are refused, read the holder, and try
//! N+1. A number is never given back, so the numbers stay dense; the lowest free number is the
//! tie-break, and the server's primary key decides who took it.
//!
//! The registry run is made by the one writer whose `experiments/create` of `runner-registry`
//! succeeded (the server refuses a second experiment of a name); it records the run's id in the
//! experiment's tag `runner.registry_run`, which the others wait for.

use super::mlflow_rest::{self, RestClient, ServerSettings};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The experiment holding the registry run.
pub const REGISTRY_EXPERIMENT: &str = "runner-registry";
const REGISTRY_RUN_TAG: &str = "runner.registry_run";

/// The registry run of one server.
pub struct ServerRegistry {
    client: RestClient,
    run_id: String,
    /// `<experiment id>/<run id>/artifacts` under the proxied artifact API.
    artifacts: String,
}

/// The registry of the server at `url`, opened once per process.
pub fn for_url(url: &str) -> Result<Arc<ServerRegistry>> {
    static OPEN: OnceLock<Mutex<HashMap<String, Arc<ServerRegistry>>>> = OnceLock::new();
    let open = OPEN.get_or_init(Default::default);
    let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = open.get(url) {
        return Ok(r.clone());
    }
    let registry = Arc::new(ServerRegistry::open(mlflow_rest::settings(
        url,
        "--tracking-uri",
    )?)?);
    open.insert(url.to_string(), registry.clone());
    Ok(registry)
}

/// The file beside a replica's store that names its server.
const BINDING: &str = "runner-server.json";

/// The folder of this host's replicas: `RUNNER_SERVER_CACHE`, else `XDG_CACHE_HOME/runner/servers`,
/// else `~/.cache/runner/servers`.
fn replicas_root() -> PathBuf {
    let var = |n: &str| {
        std::env::var_os(n)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("RUNNER_SERVER_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("runner").join("servers")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("runner").join("servers")))
        .unwrap_or_else(|| PathBuf::from(".runner-servers"))
}

/// The store file of this host's replica of the server at `url`, in a folder of its own named
/// after the server, with the file that binds it to the server (made if missing).
pub fn replica_path(url: &str) -> Result<PathBuf> {
    let url = url.trim_end_matches('/');
    let name: String = (url.split_once("://").map_or(url, |(_, rest)| rest).chars())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = replicas_root().join(short_name(&name, 100));
    let binding = dir.join(BINDING);
    if !binding.is_file() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the replica folder {}", dir.display()))?;
        let text = serde_json::to_vec_pretty(&json!({ "url": url }))?;
        let tmp = dir.join(format!(".{BINDING}.{}", std::process::id()));
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &binding)?;
    }
    Ok(dir.join("mlflow.db"))
}

/// The store as runs are said to be logged to: the server's URL for a server's replica (the
/// runs are the server's), else the file.
pub fn store_label(path: &Path) -> String {
    match bound_url(path) {
        Ok(Some(url)) => url,
        _ => path.display().to_string(),
    }
}

/// The URL of the server whose replica `store` is; none for a store that is not one.
pub fn bound_url(store: &Path) -> Result<Option<String>> {
    let binding = store.parent().unwrap_or(Path::new(".")).join(BINDING);
    if !binding.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read(&binding).with_context(|| format!("cannot read {}", binding.display()))?;
    let doc: Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not JSON", binding.display()))?;
    let url = doc["url"]
        .as_str()
        .ok_or_else(|| anyhow!("{} names no `url`", binding.display()))?;
    Ok(Some(url.to_string()))
}

/// The registry of the server whose replica `store` is; none for a store that is not one.
pub fn bound(store: &Path) -> Result<Option<Arc<ServerRegistry>>> {
    match bound_url(store)? {
        Some(url) => for_url(&url).map(Some),
        None => Ok(None),
    }
}

impl ServerRegistry {
    /// Finds the server's registry run, or makes it when this writer created its experiment.
    pub fn open(settings: ServerSettings) -> Result<ServerRegistry> {
        let client = RestClient::new(settings)?;
        let (experiment_id, created) = client.experiment_id_created(REGISTRY_EXPERIMENT)?;
        let run_id = match created {
            true => make_registry_run(&client, &experiment_id)?,
            false => wait_for_registry_run(&client, &experiment_id)?,
        };
        let info = client.get("runs/get", &[("run_id", &run_id)])?;
        let artifacts = mlflow_rest::artifact_path(&info["run"]["info"]).ok_or_else(|| {
            anyhow!(
                "the MLflow server at {} does not proxy artifacts (start it with --artifacts-destination, or without --no-serve-artifacts): runner needs them to use it as its store",
                client.url()
            )
        })?;
        Ok(ServerRegistry {
            client,
            run_id,
            artifacts,
        })
    }

    pub fn client(&self) -> &RestClient {
        &self.client
    }

    /// Every claim: key -> the value that holds it.
    pub fn claims(&self) -> Result<BTreeMap<String, String>> {
        let run = self.client.get("runs/get", &[("run_id", &self.run_id)])?;
        let params = run["run"]["data"]["params"].as_array().cloned();
        Ok((params.unwrap_or_default().iter())
            .filter_map(|p| Some((p["key"].as_str()?.into(), p["value"].as_str()?.into())))
            .collect())
    }

    /// Claims `key` for `value`: the value that holds it now (`value` when this call won, or
    /// had won before).
    pub fn claim(&self, key: &str, value: &str) -> Result<String> {
        let body = json!({"run_id": self.run_id, "key": key, "value": value});
        match self.client.post("runs/log-parameter", &body) {
            Ok(_) => Ok(value.to_string()),
            Err(e) if mlflow_rest::refused_with(&e, 400) => {
                // Refused: another value holds it (or the request was bad: then say why).
                self.claims()?.remove(key).ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The numbers claimed under `prefix` (`t`, `v`, ...): number -> holder.
    pub fn numbers(&self, prefix: &str) -> Result<BTreeMap<i64, String>> {
        Ok((self.claims()?.into_iter())
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.parse::<i64>().ok()?, v)))
            .collect())
    }

    /// The number `prefix`N that `value` holds: the one it holds already, else the lowest
    /// number above every claimed one that it wins; with `start`, exactly that number or an
    /// error naming its holder.
    pub fn claim_number(&self, prefix: &str, value: &str, start: Option<i64>) -> Result<i64> {
        loop {
            let taken = self.numbers(prefix)?;
            if let Some((n, _)) = taken.iter().find(|(_, v)| v.as_str() == value) {
                return Ok(*n);
            }
            let n = start.unwrap_or_else(|| taken.keys().max().map_or(1, |m| m + 1));
            let holder = self.claim(&format!("{prefix}{n}"), value)?;
            if holder == value {
                return Ok(n);
            }
            if start.is_some() {
                bail!(
                    "{prefix}{n} is already taken on the MLflow server at {}; pick a free number or leave --first-run out",
                    self.client.url()
                );
            }
        }
    }

    /// Stores a file of the registry (an ETL version's record).
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        (self.client).put_artifact(&format!("{}/{name}", self.artifacts), bytes)
    }

    /// A file of the registry, waiting up to 30 s for a writer that claimed its number and is
    /// about to store it.
    pub fn get(&self, name: &str) -> Result<Vec<u8>> {
        let started = Instant::now();
        loop {
            match (self.client).get_artifact(&format!("{}/{name}", self.artifacts)) {
                Err(e) if mlflow_rest::not_found(&e) && started.elapsed().as_secs() < 30 => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                other => return other,
            }
        }
    }
}

/// The Model Registry of the server.
impl ServerRegistry {
    /// The server's id of runner's run `run_uuid` (its `runner.run_uuid` tag) in `experiment`.
    pub fn server_run(&self, experiment: &str, run_uuid: &str) -> Result<(String, String)> {
        let experiment_id = self.client.experiment_id(experiment)?;
        let found = self.client.post(
            "runs/search",
            &json!({
                "experiment_ids": [experiment_id],
                "filter": format!("tags.`runner.run_uuid` = '{run_uuid}'"),
                "max_results": 1,
            }),
        )?;
        let run_id = (found["runs"][0]["info"]["run_id"].as_str()).ok_or_else(|| {
            anyhow!(
                "run {run_uuid} is not on the MLflow server at {}",
                self.client.url()
            )
        })?;
        Ok((experiment_id, run_id.to_string()))
    }

    /// Registers the logged model of run `run_uuid` (of `experiment`) as the next version of
    /// `name` on the server, with `alias` if given: the version's number.
    pub fn register(
        &self,
        experiment: &str,
        run_uuid: &str,
        name: &str,
        alias: Option<&str>,
    ) -> Result<i64> {
        let (experiment_id, run_id) = self.server_run(experiment, run_uuid)?;
        let search = json!({"experiment_ids": [experiment_id], "max_results": 1000});
        let models = self.client.post("logged-models/search", &search)?;
        let model_id = (models["models"].as_array().into_iter().flatten())
            .map(|m| &m["info"])
            .filter(|i| i["source_run_id"] == run_id.as_str() && i["name"] == "model")
            .find_map(|i| i["model_id"].as_str())
            .ok_or_else(|| {
                anyhow!("the run's MLflow model is not on the MLflow server at {} (its run was trained by an earlier runner, or its model never reached the server)", self.client.url())
            })?
            .to_string();
        match self
            .client
            .post("registered-models/create", &json!({ "name": name }))
        {
            Err(e) if !mlflow_rest::refused_with(&e, 400) => return Err(e),
            _ => {}
        }
        let created = self.client.post(
            "model-versions/create",
            &json!({"name": name, "source": format!("models:/{model_id}"), "run_id": run_id, "model_id": model_id}),
        )?;
        let version = (created["model_version"]["version"].as_str())
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| {
                anyhow!("model-versions/create answered without a version: {created}")
            })?;
        if let Some(alias) = alias {
            let body = json!({"name": name, "alias": alias, "version": version.to_string()});
            self.client.post("registered-models/alias", &body)?;
        }
        Ok(version)
    }

    /// The version of `name` that an alias, a number or `latest` (`None`, `None`) names on
    /// the server: its number and runner's id of its run.
    pub fn model_version(
        &self,
        name: &str,
        alias: Option<&str>,
        number: Option<i64>,
    ) -> Result<(i64, String)> {
        let found = match (alias, number) {
            (Some(a), _) => {
                let q = [("name", name), ("alias", a)];
                self.client.get("registered-models/alias", &q)?["model_version"].clone()
            }
            (None, Some(v)) => {
                let v = v.to_string();
                let q = [("name", name), ("version", v.as_str())];
                self.client.get("model-versions/get", &q)?["model_version"].clone()
            }
            (None, None) => {
                let all = self
                    .client
                    .get("registered-models/get", &[("name", name)])?;
                let versions = all["registered_model"]["latest_versions"]
                    .as_array()
                    .cloned();
                (versions.unwrap_or_default().into_iter())
                    .max_by_key(|v| v["version"].as_str().and_then(|n| n.parse::<i64>().ok()))
                    .ok_or_else(|| anyhow!("{name} has no version on the MLflow server"))?
            }
        };
        let version = (found["version"].as_str())
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| anyhow!("the server answered no version of {name}: {found}"))?;
        let run_id = found["run_id"].as_str().unwrap_or_default();
        let run = self.client.get("runs/get", &[("run_id", run_id)])?;
        let tags = run["run"]["data"]["tags"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let uuid = (tags.iter())
            .find(|t| t["key"] == "runner.run_uuid")
            .and_then(|t| t["value"].as_str())
            .ok_or_else(|| anyhow!("version {version} of {name} comes from run {run_id}, which runner did not train"))?;
        Ok((version, uuid.to_string()))
    }
}

/// A name for a claim's key: the server takes keys of up to 250 characters, of letters,
/// digits, `_`, `-`, `.`, space, `:` and `/`. A name within `max` characters of those is kept;
/// another (a sweep's long or unusual name) is cut and cleaned, and told apart by a hash of
/// the whole.
pub fn short_name(name: &str, max: usize) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-. :".contains(c);
    if name.len() <= max && name.chars().all(allowed) {
        return name.to_string();
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(name.as_bytes());
    let hash: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    let head: String = (name.chars().take(max - 17))
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    format!("{head}.{hash}")
}

fn make_registry_run(client: &RestClient, experiment_id: &str) -> Result<String> {
    let note = "runner's registry: each param tN, vN or sweep/NAME/N is a number claimed by one writer (its value); see runner's README, \"The server as the store\"";
    let created = client.post(
        "runs/create",
        &json!({
            "experiment_id": experiment_id,
            "run_name": "numbers",
            "start_time": super::now_ms(),
            "tags": [{"key": "mlflow.note.content", "value": note}],
        }),
    )?;
    let run_id = (created["run"]["info"]["run_id"].as_str())
        .ok_or_else(|| anyhow!("runs/create answered without a run id: {created}"))?
        .to_string();
    let done = json!({"run_id": run_id, "status": "FINISHED", "end_time": super::now_ms()});
    client.post("runs/update", &done)?;
    let tag = json!({"experiment_id": experiment_id, "key": REGISTRY_RUN_TAG, "value": run_id});
    client.post("experiments/set-experiment-tag", &tag)?;
    Ok(run_id)
}

/// The registry run's id from the experiment's tag, waiting up to 60 s for the writer that
/// created the experiment to record it.
fn wait_for_registry_run(client: &RestClient, experiment_id: &str) -> Result<String> {
    let started = Instant::now();
    loop {
        let found = client.get("experiments/get", &[("experiment_id", experiment_id)])?;
        let tags = found["experiment"]["tags"].as_array().cloned();
        let run = (tags.unwrap_or_default().iter())
            .find(|t| t["key"] == REGISTRY_RUN_TAG)
            .and_then(|t| t["value"].as_str().map(str::to_string));
        if let Some(run) = run {
            return Ok(run);
        }
        if started.elapsed().as_secs() >= 60 {
            bail!(
                "the MLflow server at {} has the experiment `{REGISTRY_EXPERIMENT}` without its tag `{REGISTRY_RUN_TAG}` (the runner that created it stopped before making its registry run): rename or delete that experiment and permanently remove it (`mlflow gc`), then run again",
                client.url()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_to_the_limit_and_stay_apart() {
        let a = "a".repeat(300);
        let b = format!("{}b", "a".repeat(300));
        assert_eq!(short_name(&a, 200).chars().count(), 200);
        assert_ne!(short_name(&a, 200), short_name(&b, 200));
        assert_eq!(short_name("wine-3fa2c1d0", 200), "wine-3fa2c1d0");
        let odd = short_name("wine#2/é", 200);
        assert!(
            odd.starts_with("wine_2__.")
                && odd
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        );
    }
}
