//! A store that replicates an MLflow tracking server (`--tracking-uri http://...`): the server
//! is the store, and this SQLite file beside a `server.json` naming it is the host's copy of
//! what runner reads, so every command reads as it does from a local store.
//!
//! Writes go to the server: numbers are claimed in its registry
//! ([`crate::track::server_registry`]), and each run is sent to it as the MLflow client sends
//! it (the mirror of `tracking.server`), with runner's own record of a training run beside it
//! (`runner/run.json`, `runner/summary.json`). [`MlflowStore::refresh`] copies in what other
//! hosts wrote: every run that carries `runner.run_uuid` (the same id on every host), its
//! params, tags and metrics (with their history once it has ended), the training registry's row
//! and the ETL versions. A run's artifacts are fetched the first time a command asks for its
//! folder. Runs copied in are the server's: the replica never judges their owners (another
//! host's process), and a copy is replaced whenever the server's status differs.

use super::{insert_metrics, insert_run, MlflowStore};
use crate::track::mlflow_rest::{
    self, is_ended, pairs_of, MlflowServer, RestClient, RUN_FILE, SUMMARY_FILE,
};
use crate::track::server_registry::{self, ServerRegistry, REGISTRY_EXPERIMENT};
use crate::track::{owner, Metric, RunSpec, RunStatus, TrackedRun, Tracker};
use anyhow::{Context, Result};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

const REPLICA_TABLE: &str = "CREATE TABLE IF NOT EXISTS runner_replica_runs (
    run_uuid TEXT PRIMARY KEY,
    server_run_id TEXT NOT NULL,
    status TEXT NOT NULL,
    artifact_path TEXT
)";

/// A run of runner's on the server, as `runs/search` gives it.
struct ServerRun<'a> {
    uuid: String,
    server_id: String,
    status: String,
    info: &'a Value,
    data: &'a Value,
}

/// A run's copy as fetched from the server, before it is written to the replica.
struct Fetched {
    /// A training run's number, `runner/run.json` and `runner/summary.json` (if it has ended).
    training: Option<(i64, Value, Option<Value>)>,
    metrics: Vec<Metric>,
    /// The run's folder under the proxied artifact API.
    artifacts: Option<String>,
}

/// Copies fetched from the server at once (each a few requests): a host's first copy of a
/// team server's thousands of runs waits on the server's workers, not on one request at a time.
const FETCHES_AT_ONCE: usize = 4;

/// The tag by which a run's process tells other hosts it is alive: `<host> <ms>`.
const HEARTBEAT_TAG: &str = "runner.heartbeat";

/// Marks KILLED on the server (and in `run`) another host's unfinished run whose heartbeat (or,
/// before its first, its start) is older than `RUNNER_STALE_AFTER`: its process stopped
/// without a word (killed, its node gone), and nobody else can tell.
fn mark_if_silent(client: &RestClient, run: &mut ServerRun) -> Result<()> {
    let tags = pairs_of(&run.data["tags"]);
    // A sweep's parent belongs to no one process: the shards complete or leave it.
    let parent = (tags.iter()).any(|(k, v)| k == "runner.sweep" && v == "parent");
    if is_ended(&run.status) || parent {
        return Ok(());
    }
    let beat = (tags.into_iter()).find(|(k, _)| k == HEARTBEAT_TAG);
    let (host, last) = match &beat {
        Some((_, v)) => {
            let (host, ms) = v.rsplit_once(' ').unwrap_or(("another host", v));
            (host.to_string(), ms.parse().unwrap_or(0))
        }
        None => (
            "its host".to_string(),
            int(&run.info["start_time"]).unwrap_or(0),
        ),
    };
    let now = crate::track::now_ms();
    let owner::Liveness::Gone(reason) = owner::stale_heartbeat(&host, last, now) else {
        return Ok(());
    };
    let me = owner::Owner::current();
    let note = format!(
        "{reason}; marked KILLED by pid {} on {} at {now} ms",
        me.pid, me.host
    );
    let tag = json!({"run_id": run.server_id, "key": "runner.killed_reason", "value": note});
    client.post("runs/set-tag", &tag)?;
    let update = json!({"run_id": run.server_id, "status": "KILLED", "end_time": now});
    client.post("runs/update", &update)?;
    run.status = "KILLED".into();
    Ok(())
}

impl<'a> ServerRun<'a> {
    fn of(run: &'a Value) -> Option<ServerRun<'a>> {
        let info = &run["info"];
        let data = &run["data"];
        let uuid = (pairs_of(&data["tags"]).into_iter())
            .find(|(k, _)| k == "runner.run_uuid")?
            .1;
        Some(ServerRun {
            uuid,
            server_id: info["run_id"].as_str()?.to_string(),
            status: info["status"].as_str()?.to_string(),
            info,
            data,
        })
    }
}

/// Every experiment on the server but runner's registry: id -> name.
fn experiments(client: &RestClient) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut token = String::new();
    loop {
        let mut body = json!({"max_results": 1000});
        if !token.is_empty() {
            body["page_token"] = json!(token);
        }
        let page = client.post("experiments/search", &body)?;
        for e in page["experiments"].as_array().into_iter().flatten() {
            let (Some(id), Some(name)) = (e["experiment_id"].as_str(), e["name"].as_str()) else {
                continue;
            };
            if name != REGISTRY_EXPERIMENT {
                out.insert(id.to_string(), name.to_string());
            }
        }
        token = page["next_page_token"].as_str().unwrap_or_default().into();
        if token.is_empty() {
            return Ok(out);
        }
    }
}

/// Every run of runner's on the server (those tagged `runner.run_uuid`).
fn runner_runs(client: &RestClient, experiment_ids: &[&String]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for ids in experiment_ids.chunks(100) {
        let mut token = String::new();
        loop {
            let mut body = json!({
                "experiment_ids": ids,
                "filter": "tags.`runner.run_uuid` LIKE '%'",
                "max_results": 1000,
            });
            if !token.is_empty() {
                body["page_token"] = json!(token);
            }
            let page = client.post("runs/search", &body)?;
            out.extend(page["runs"].as_array().cloned().unwrap_or_default());
            token = page["next_page_token"].as_str().unwrap_or_default().into();
            if token.is_empty() {
                break;
            }
        }
    }
    Ok(out)
}

impl MlflowStore {
    /// The server this store replicates, if it is a replica.
    pub fn server(&self) -> Result<Option<Arc<ServerRegistry>>> {
        server_registry::bound(&self.path)
    }

    /// Brings the replica up to date with its server (nothing for a store that is not one):
    /// the ETL versions, and every run of runner's that is new here or whose status changed
    /// there. A run this host created and marked KILLED (its process gone) is marked KILLED
    /// on the server too.
    pub fn refresh(&self) -> Result<()> {
        self.refresh_in(None)
    }

    /// [`MlflowStore::refresh`] of the experiment of run `run_uuid` only (every experiment if
    /// the run is not here): what a sweep reads of a team's server, whatever else it holds.
    pub fn refresh_around(&self, run_uuid: &str) -> Result<()> {
        let experiment: Option<String> = self
            .lock()
            .query_row(
                "SELECT e.name FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id WHERE r.run_uuid = ?1",
                [run_uuid],
                |r| r.get(0),
            )
            .optional()?;
        self.refresh_in(experiment.as_deref())
    }

    /// [`MlflowStore::refresh`] of one experiment's runs (`None`: every experiment's).
    pub fn refresh_in(&self, experiment: Option<&str>) -> Result<()> {
        let Some(registry) = self.server()? else {
            return Ok(());
        };
        self.lock().execute_batch(REPLICA_TABLE)?;
        let client = registry.client();
        let mut names = experiments(client)?;
        names.retain(|_, name| experiment.is_none_or(|e| e == name));
        let found = runner_runs(client, &names.keys().collect::<Vec<_>>())?;
        // Read after the runs: a training run is created after its number is claimed, so every
        // run listed has its number here (read before, a run claimed and trained in between was
        // copied without its number, for good: its status never changed again).
        let claims = registry.claims()?;
        self.import_etl_versions(&registry, &claims)?;
        let numbers: HashMap<&str, i64> = (claims.iter())
            .filter_map(|(k, v)| Some((v.as_str(), k.strip_prefix('t')?.parse().ok()?)))
            .collect();
        let mut runs: Vec<ServerRun> = found.iter().filter_map(ServerRun::of).collect();
        let (local, copied) = self.replica_statuses(experiment)?;
        let unnumbered = self.unnumbered_copies()?;
        self.send_missed(&registry, &runs, &local, &copied)?;
        // Other hosts' runs: their processes are judged by their heartbeats on the server.
        let others =
            |r: &&mut ServerRun| !local.contains_key(&r.uuid) || copied.contains_key(&r.uuid);
        for run in runs.iter_mut().filter(others) {
            mark_if_silent(client, run)?;
        }
        let ids: HashMap<&str, &str> = (runs.iter())
            .map(|r| (r.server_id.as_str(), r.uuid.as_str()))
            .collect();
        let wanted: Vec<(&ServerRun, &String)> = (runs.iter())
            .filter(|run| match (local.get(&run.uuid), copied.get(&run.uuid)) {
                (None, _) => true,
                // A copy without its number is copied again once the number is known.
                (Some(_), Some(status)) => {
                    *status != run.status
                        || (unnumbered.contains(&run.uuid)
                            && numbers.contains_key(run.uuid.as_str()))
                }
                _ => false,
            })
            .filter_map(|run| {
                let experiment = names.get(run.info["experiment_id"].as_str().unwrap_or_default());
                Some((run, experiment?))
            })
            .collect();
        let fetched = self.fetch_copies(client, &wanted, &numbers);
        for ((run, experiment), fetched) in wanted.into_iter().zip(fetched) {
            let copied = fetched.and_then(|f| match f {
                Some(f) => self.import_run(run, experiment, f, &ids),
                None => Ok(()),
            });
            copied.with_context(|| format!("copying run {} from {}", run.uuid, client.url()))?;
        }
        Ok(())
    }

    /// [`MlflowStore::fetch_copy`] of every run in `wanted`, [`FETCHES_AT_ONCE`] at a time, in
    /// `wanted`'s order.
    fn fetch_copies(
        &self,
        client: &RestClient,
        wanted: &[(&ServerRun, &String)],
        numbers: &HashMap<&str, i64>,
    ) -> Vec<Result<Option<Fetched>>> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let fetch_some = || {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((run, _)) = wanted.get(i) else {
                    return done;
                };
                let number = numbers.get(run.uuid.as_str()).copied();
                done.push((i, self.fetch_copy(client, run, number)));
            }
        };
        let mut all: Vec<(usize, Result<Option<Fetched>>)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..FETCHES_AT_ONCE.min(wanted.len()))
                .map(|_| scope.spawn(fetch_some))
                .collect();
            (workers.into_iter())
                .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, fetched)| fetched).collect()
    }

    /// Tells the server that this process's unfinished runs are alive: their tag
    /// `runner.heartbeat` (`<host> <ms>`), which other hosts judge them by.
    pub(super) fn beat_on_server(
        &self,
        me: &owner::Owner,
        known: &mut HashMap<String, String>,
    ) -> Result<()> {
        let Some(registry) = self.server()? else {
            return Ok(());
        };
        let mine: Vec<(String, String)> = {
            let conn = self.lock();
            let mut st = conn.prepare(
                "SELECT r.run_uuid, e.name FROM runner_run_owners o JOIN runs r ON r.run_uuid = o.run_uuid
                 JOIN experiments e ON e.experiment_id = r.experiment_id
                 WHERE o.host = ?1 AND o.pid = ?2 AND r.status IN ('RUNNING', 'SCHEDULED')",
            )?;
            let rows = st.query_map(params![me.host, me.pid], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let beat = format!("{} {}", me.host, crate::track::now_ms());
        for (uuid, experiment) in mine {
            if !known.contains_key(&uuid) {
                // Not on the server yet (its creation is still queued): next beat.
                let Ok(id) = registry.server_run(&experiment, &uuid) else {
                    continue;
                };
                known.insert(uuid.clone(), id.1);
            }
            let tag = json!({"run_id": known[&uuid], "key": HEARTBEAT_TAG, "value": beat});
            registry.client().post("runs/set-tag", &tag)?;
        }
        Ok(())
    }

    /// The status here of every run of `experiment` (of every experiment: `None`), and the
    /// status of those copied from the server as copied.
    fn replica_statuses(
        &self,
        experiment: Option<&str>,
    ) -> Result<(HashMap<String, String>, HashMap<String, String>)> {
        let conn = self.lock();
        let read = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<HashMap<String, String>> {
            let mut st = conn.prepare(sql)?;
            let rows = st.query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        Ok((
            read(
                "SELECT r.run_uuid, r.status FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id
                 WHERE ?1 IS NULL OR e.name = ?1",
                &[&experiment],
            )?,
            read("SELECT run_uuid, status FROM runner_replica_runs", &[])?,
        ))
    }

    /// The runs copied from the server without a training row: not training runs, or (in a
    /// replica written before numbers were read after the runs) training runs copied before
    /// their number was known.
    fn unnumbered_copies(&self) -> Result<std::collections::HashSet<String>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT c.run_uuid FROM runner_replica_runs c
             WHERE NOT EXISTS (SELECT 1 FROM runner_training_runs t WHERE t.run_uuid = c.run_uuid)",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Sends again the runs this host made that have ended here (or were marked KILLED here,
    /// their process gone) while the server lacks them or has them unfinished: the process that
    /// trained them was killed before its queue of calls reached the server. Runs of a live
    /// process are left to its own sender. Every call is one the server takes twice unchanged
    /// (same params, same metric points, the same files). A run the server has ended otherwise
    /// keeps the server's end, here too ([`MlflowStore::adopt_server_end`]).
    fn send_missed(
        &self,
        registry: &ServerRegistry,
        runs: &[ServerRun],
        local: &HashMap<String, String>,
        copied: &HashMap<String, String>,
    ) -> Result<()> {
        let on_server: HashMap<&str, &ServerRun> =
            runs.iter().map(|r| (r.uuid.as_str(), r)).collect();
        let mine_ended =
            |(uuid, status): &(&String, &String)| !copied.contains_key(*uuid) && is_ended(status);
        let mut missed = Vec::new();
        for (uuid, status) in local.iter().filter(mine_ended) {
            match on_server.get(uuid.as_str()) {
                Some(there) if there.status == *status => {}
                Some(there) if is_ended(&there.status) => self.adopt_server_end(there)?,
                _ => missed.push(uuid),
            }
        }
        missed.retain(|uuid| !self.owner_alive(uuid).unwrap_or(true));
        if missed.is_empty() {
            return Ok(());
        }
        let mut settings = registry.client().settings().clone();
        settings.as_store = true;
        let server = MlflowServer::open(settings)?;
        // Parents first: a training run names its parent's copy on the server.
        missed.sort_by_key(|uuid| !self.is_parent(uuid).unwrap_or(false));
        for uuid in missed {
            self.send_run(&server, uuid)?;
        }
        let failed = server.close();
        if let Some(first) = failed.first() {
            anyhow::bail!("{first}");
        }
        Ok(())
    }

    /// Takes the server's end of a run this host ended otherwise: another host found this one
    /// silent (its heartbeat stale), marked the run KILLED on the server and trained its config
    /// again. That verdict stands, so the config keeps one FINISHED run; the reason is kept.
    /// (A sweep's parent ends as the shard that completed it, or left it last, sent it.)
    fn adopt_server_end(&self, run: &ServerRun) -> Result<()> {
        let tags = pairs_of(&run.data["tags"]);
        let reason = (tags.iter()).find(|(k, _)| k == "runner.killed_reason");
        let end = int(&run.info["end_time"]).unwrap_or_else(crate::track::now_ms);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE runs SET status = ?1, end_time = ?2 WHERE run_uuid = ?3",
            params![run.status, end, run.uuid],
        )?;
        tx.execute(
            "UPDATE runner_training_runs SET status = ?1 WHERE run_uuid = ?2",
            params![run.status, run.uuid],
        )?;
        if let Some((key, value)) = reason {
            let note =
                format!("{value}; the server's end, kept here (this host had ended it otherwise)");
            tx.execute(
                "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?1, ?2, ?3)",
                params![key, note, run.uuid],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn owner_alive(&self, run_uuid: &str) -> Result<bool> {
        let row: Option<(String, i64, String, i64)> = self
            .lock()
            .query_row(
                "SELECT host, pid, process_start, heartbeat_ms FROM runner_run_owners WHERE run_uuid = ?1",
                [run_uuid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((host, pid, process_start, beat)) = row else {
            return Ok(false);
        };
        let owner = owner::Owner {
            host,
            pid,
            process_start,
        };
        Ok(owner.liveness(beat, crate::track::now_ms()) == owner::Liveness::Alive)
    }

    fn is_parent(&self, run_uuid: &str) -> Result<bool> {
        Ok((self.tags(run_uuid)?.iter()).any(|(k, v)| k == "runner.sweep" && v == "parent"))
    }

    /// One run of this store, whole, to the server: found there by its id if it has a copy,
    /// else created; its params, tags, every metric point, its files, its summary and status.
    fn send_run(&self, server: &MlflowServer, run_uuid: &str) -> Result<()> {
        let (spec, status, end_ms) = self.stored_spec(run_uuid)?;
        let training = self.training_version_of(run_uuid)?;
        let row = match training {
            Some(v) => self.training_run(v)?,
            None => None,
        };
        server.find_run(run_uuid, &spec.experiment)?;
        let tracked = TrackedRun {
            version: row.as_ref().map(|r| format!("t{}", r.version)),
            kind: row.as_ref().map_or("run".into(), |r| r.kind.clone()),
            record: row.as_ref().map_or(Value::Null, |r| r.record.clone()),
            curve_axis: "step",
            group: None,
            spec: spec.clone(),
        };
        server.create_run(&tracked)?;
        server.log_params(run_uuid, &spec.params)?;
        server.set_tags(run_uuid, &spec.tags)?;
        server.log_metrics(run_uuid, &self.all_metrics(run_uuid)?)?;
        let dir = self.artifact_dir(run_uuid)?;
        for file in files_under(&dir, &dir) {
            let bytes = std::fs::read(dir.join(&file))?;
            server.log_artifact(run_uuid, &file, &bytes)?;
        }
        if let Some(summary) = row.as_ref().and_then(|r| r.summary.as_ref()) {
            server.record_summary(run_uuid, summary)?;
        }
        let status = RunStatus::parse(&status).unwrap_or(RunStatus::Killed);
        server.finish_run(
            run_uuid,
            status,
            end_ms.unwrap_or_else(crate::track::now_ms),
        )
    }

    /// A run of this store as it was created, with its status and end.
    fn stored_spec(&self, run_uuid: &str) -> Result<(RunSpec, String, Option<i64>)> {
        let (name, experiment, user, start_ms, git_commit, status, end_ms) = self.lock().query_row(
            "SELECT r.name, e.name, r.user_id, r.start_time, coalesce(r.source_version, ''), r.status, r.end_time
             FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id WHERE r.run_uuid = ?1",
            [run_uuid],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            },
        )?;
        let spec = RunSpec {
            run_uuid: run_uuid.to_string(),
            name,
            experiment,
            user: user.unwrap_or_default(),
            start_ms: start_ms.unwrap_or(0),
            git_commit,
            params: self.params(run_uuid)?,
            tags: self.tags(run_uuid)?,
            dataset: None,
        };
        Ok((spec, status, end_ms))
    }

    /// Every point of every metric of a run.
    fn all_metrics(&self, run_uuid: &str) -> Result<Vec<Metric>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT key, value, is_nan, step, timestamp FROM metrics WHERE run_uuid = ?1 ORDER BY key, step, timestamp",
        )?;
        let rows = st.query_map([run_uuid], |r| {
            let nan: bool = r.get(2)?;
            Ok(Metric {
                key: r.get(0)?,
                value: if nan { f64::NAN } else { r.get(1)? },
                step: r.get(3)?,
                timestamp_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn import_etl_versions(
        &self,
        registry: &ServerRegistry,
        claims: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        for (k, key) in claims {
            let Some(v) = k.strip_prefix('v').and_then(|n| n.parse::<i64>().ok()) else {
                continue;
            };
            if self.etl_record(v)?.is_some() {
                continue;
            }
            let bytes = registry.get(&etl_file(v))?;
            let record: Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("the server's {} is not JSON", etl_file(v)))?;
            self.lock().execute(
                "INSERT OR IGNORE INTO runner_etl_versions (version, key, record_json, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![v, key, record.to_string(), crate::track::now_ms()],
            )?;
        }
        Ok(())
    }

    /// Copies one run from the server, replacing any earlier copy.
    /// What copying `run` needs from the server: runner's record of a training run (its
    /// number, `runner/run.json` and `runner/summary.json`) and the run's metrics with their
    /// histories. None for a training run whose record has not reached the server yet (it is
    /// copied next time).
    fn fetch_copy(
        &self,
        client: &RestClient,
        run: &ServerRun,
        number: Option<i64>,
    ) -> Result<Option<Fetched>> {
        let artifacts = mlflow_rest::artifact_path(run.info);
        let fetch = |name: &str| -> Result<Option<Value>> {
            let Some(root) = &artifacts else {
                return Ok(None);
            };
            match client.get_artifact(&format!("{root}/{name}")) {
                Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
                Err(e) if mlflow_rest::not_found(&e) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let training = match number {
            Some(n) => match fetch(RUN_FILE)? {
                Some(file) => Some((n, file, fetch(SUMMARY_FILE)?)),
                None => return Ok(None),
            },
            None => None,
        };
        Ok(Some(Fetched {
            training,
            metrics: self.server_metrics(client, run)?,
            artifacts,
        }))
    }

    /// Replaces the replica's copy of `run` with what [`MlflowStore::fetch_copy`] fetched.
    fn import_run(
        &self,
        run: &ServerRun,
        experiment: &str,
        fetched: Fetched,
        ids: &HashMap<&str, &str>,
    ) -> Result<()> {
        let Fetched {
            training,
            metrics,
            artifacts,
        } = fetched;
        let spec = self.spec_of(run, experiment, ids);
        // An earlier copy's artifacts are fetched anew when a command asks for them.
        if let Ok(dir) = self.artifact_folder(&run.uuid) {
            let _ = std::fs::remove_dir_all(dir);
        }
        let (experiment_id, location) = self.experiment(experiment)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for table in [
            "tags",
            "params",
            "metrics",
            "latest_metrics",
            "runner_training_runs",
            "runner_replica_runs",
            "runs",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE run_uuid = ?1"),
                [&run.uuid],
            )?;
        }
        insert_run(&tx, experiment_id, &location, &spec, &run.status)?;
        tx.execute(
            "UPDATE runs SET end_time = ?1 WHERE run_uuid = ?2",
            params![int(&run.info["end_time"]), run.uuid],
        )?;
        insert_metrics(&tx, &run.uuid, &metrics)?;
        if let Some((n, file, summary)) = &training {
            let record = &file["record"];
            let etl = (record["etl_version"].as_str())
                .and_then(|v| v.trim_start_matches('v').parse::<i64>().ok())
                .unwrap_or(0);
            tx.execute(
                "INSERT INTO runner_training_runs (version, run_uuid, experiment_id, etl_version, name, kind, status, record_json, summary_json, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![n, run.uuid, experiment_id, etl, spec.name, file["kind"].as_str().unwrap_or_default(), run.status, record.to_string(), summary.as_ref().map(|s| s.to_string()), spec.start_ms],
            )?;
        }
        tx.execute(
            "INSERT INTO runner_replica_runs (run_uuid, server_run_id, status, artifact_path) VALUES (?1, ?2, ?3, ?4)",
            params![run.uuid, run.server_id, run.status, artifacts],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The run as MLflow rows: its parent named by the parent's id in runner's stores.
    fn spec_of(&self, run: &ServerRun, experiment: &str, ids: &HashMap<&str, &str>) -> RunSpec {
        let mut tags = Vec::new();
        for (k, v) in pairs_of(&run.data["tags"]) {
            if k == "mlflow.parentRunId" {
                if let Some(parent) = ids.get(v.as_str()) {
                    tags.push((k, parent.to_string()));
                }
            } else {
                tags.push((k, v));
            }
        }
        let git_commit = (tags.iter())
            .find(|(k, _)| k == "mlflow.source.git.commit")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        RunSpec {
            run_uuid: run.uuid.clone(),
            name: run.info["run_name"].as_str().unwrap_or_default().into(),
            experiment: experiment.into(),
            user: run.info["user_id"].as_str().unwrap_or_default().into(),
            start_ms: int(&run.info["start_time"]).unwrap_or(0),
            git_commit,
            params: pairs_of(&run.data["params"]),
            tags,
            dataset: None,
        }
    }

    /// The run's metrics: the latest of each key, and (once the run has ended) the whole
    /// history of each key logged at more than one step.
    fn server_metrics(&self, client: &RestClient, run: &ServerRun) -> Result<Vec<Metric>> {
        let mut out = Vec::new();
        for m in run.data["metrics"].as_array().into_iter().flatten() {
            let point = metric_of(m);
            if point.step > 0 && is_ended(&run.status) {
                let query = [
                    ("run_id", run.server_id.as_str()),
                    ("metric_key", point.key.as_str()),
                    ("max_results", "25000"),
                ];
                let history = client.get("metrics/get-history", &query)?;
                out.extend((history["metrics"].as_array().into_iter().flatten()).map(metric_of));
            } else {
                out.push(point);
            }
        }
        Ok(out)
    }

    /// Fetches the artifacts of a run copied from the server into `dir`, once (a run this host
    /// made has its own; so does a copy fetched before).
    pub(super) fn fetch_artifacts(&self, run_uuid: &str, dir: &Path) -> Result<()> {
        if dir.exists() || !self.has_table("runner_replica_runs")? {
            return Ok(());
        }
        let root: Option<Option<String>> = self
            .lock()
            .query_row(
                "SELECT artifact_path FROM runner_replica_runs WHERE run_uuid = ?1",
                [run_uuid],
                |r| r.get(0),
            )
            .optional()?;
        let (Some(Some(root)), Some(registry)) = (root, self.server()?) else {
            return Ok(());
        };
        let client = registry.client();
        let partial = dir.with_extension(format!("partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        for file in client.list_artifacts(&root)? {
            let bytes = client.get_artifact(&format!("{root}/{file}"))?;
            let to = partial.join(&file);
            if let Some(folder) = to.parent() {
                std::fs::create_dir_all(folder)?;
            }
            std::fs::write(&to, bytes).with_context(|| format!("cannot write {}", to.display()))?;
        }
        std::fs::create_dir_all(&partial)?;
        if let Some(folder) = dir.parent() {
            std::fs::create_dir_all(folder)?;
        }
        // Another process may have fetched them meanwhile: theirs stay.
        if std::fs::rename(&partial, dir).is_err() {
            let _ = std::fs::remove_dir_all(&partial);
        }
        Ok(())
    }
}

/// Where the registry keeps ETL version `v`'s record.
pub fn etl_file(v: i64) -> String {
    format!("etl/v{v}.json")
}

fn metric_of(m: &Value) -> Metric {
    let value = match &m["value"] {
        Value::String(s) => match s.as_str() {
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            _ => f64::NAN,
        },
        v => v.as_f64().unwrap_or(f64::NAN),
    };
    Metric {
        key: m["key"].as_str().unwrap_or_default().into(),
        value,
        step: int(&m["step"]).unwrap_or(0),
        timestamp_ms: int(&m["timestamp"]).unwrap_or(0),
    }
}

/// An integer of MLflow's JSON: a number, or protobuf's int64 as a string.
fn int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str()?.parse().ok())
}

/// The files under `dir`, as paths relative to `root`, in order; partial files left out.
fn files_under(dir: &Path, root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(files_under(&path, root));
        } else if let Ok(rel) = path.strip_prefix(root) {
            let rel = rel.to_string_lossy().into_owned();
            if !rel.ends_with(".partial") {
                out.push(rel);
            }
        }
    }
    out
}
