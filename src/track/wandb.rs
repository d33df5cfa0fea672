//! Weights & Biases as a tracking sink, speaking W&B's own HTTP protocol (GraphQL `UpsertBucket`
//! and `CreateRunFiles`, `file_stream` posts, file uploads) as the official SDK does.
//!
//! Nothing a trainer does waits on the network: the sink appends every record to a spool in the
//! run's folder (`mlruns/<exp>/<run>/wandb/spool.jsonl`), and one sender thread sends spools in
//! the background, retrying 429, 5xx and timeouts with backoff (honouring `Retry-After`). A
//! sweep waits for the sender at most `timeout_s` after training; what is left stays spooled and
//! `runner wandb-sync` sends it later, resuming where it stopped: `state.json` records what the
//! server acknowledged, and a resume query asks the server for its history line count, so no
//! history line is sent twice or skipped. The API key is held in memory only.

use super::{Metric, RunStatus, TrackedRun, Tracker};
use crate::config::ConfigError;
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::config::WandbTable;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Online,
    Offline,
}

/// An API key that never prints.
#[derive(Clone)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey(***)")
    }
}

/// Where and how to send; everything but the key is recorded beside each spool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub base_url: String,
    pub entity: Option<String>,
    pub project: String,
    pub mode: Mode,
    pub timeout_s: f64,
    pub request_timeout_s: f64,
    pub backoff_ms: u64,
    #[serde(skip)]
    pub api_key: Option<ApiKey>,
}

const DEFAULT_BASE_URL: &str = "https://api.wandb.ai";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The key for `host` from ~/.netrc (`machine HOST login user password KEY`).
fn netrc_key(host: &str) -> Option<String> {
    let home = env("HOME")?;
    let text = std::fs::read_to_string(Path::new(&home).join(".netrc")).ok()?;
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "machine" && tokens.get(i + 1) == Some(&host) {
            let mut j = i + 2;
            while j + 1 < tokens.len() && tokens[j] != "machine" {
                if tokens[j] == "password" {
                    return Some(tokens[j + 1].to_string());
                }
                j += 1;
            }
        }
        i += 1;
    }
    None
}

fn host_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.split(['/', ':']).next().unwrap_or("").to_string()
}

/// Resolves W&B settings for a sweep: `None` when W&B is not configured or disabled. A
/// configured online W&B without a key is an error before anything trains.
pub fn resolve(
    table: Option<&WandbTable>,
    experiment: &str,
    file: &str,
) -> Result<Option<Settings>, ConfigError> {
    let mode_env = env("WANDB_MODE");
    let configured = table.is_some()
        || env("WANDB_PROJECT").is_some()
        || matches!(mode_env.as_deref(), Some("online" | "offline"));
    if !configured {
        return Ok(None);
    }
    let t = table.cloned().unwrap_or_default();
    let mode = mode_env
        .or(t.mode.clone())
        .unwrap_or_else(|| "online".into());
    let mode = match mode.as_str() {
        "online" | "run" => Mode::Online,
        "offline" | "dryrun" => Mode::Offline,
        "disabled" => return Ok(None),
        other => {
            let mut e = ConfigError::new(
                file,
                format!(
                    "unknown W&B mode \"{other}\"; valid: \"online\", \"offline\", \"disabled\""
                ),
            );
            e.key = Some("tracking.wandb.mode (or WANDB_MODE)".into());
            return Err(e);
        }
    };
    let base_url = env("WANDB_BASE_URL")
        .or(t.base_url.clone())
        .unwrap_or_else(|| DEFAULT_BASE_URL.into());
    let api_key = env("WANDB_API_KEY")
        .or_else(|| netrc_key(&host_of(&base_url)))
        .map(ApiKey);
    if mode == Mode::Online && api_key.is_none() {
        let mut e = ConfigError::new(
            file,
            format!(
                "W&B logging is configured but no API key was found: set WANDB_API_KEY, add `machine {} login user password KEY` to ~/.netrc, or set WANDB_MODE=offline (and `runner wandb-sync` later)",
                host_of(&base_url)
            ),
        );
        e.key = Some("tracking.wandb".into());
        return Err(e);
    }
    Ok(Some(Settings {
        base_url: base_url.trim_end_matches('/').to_string(),
        entity: env("WANDB_ENTITY").or(t.entity),
        project: env("WANDB_PROJECT")
            .or(t.project)
            .unwrap_or_else(|| experiment.to_string()),
        mode,
        timeout_s: t.timeout_s.unwrap_or(60.0),
        request_timeout_s: t.request_timeout_s.unwrap_or(30.0),
        backoff_ms: t.backoff_ms.unwrap_or(2000),
        api_key,
    }))
}

/// One record of a run's spool: what would be, or was, sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Record {
    Upsert { variables: Value },
    History { line: String },
    File { name: String, path: PathBuf },
    Finish { exitcode: i32 },
}

/// What the server has acknowledged for a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SyncState {
    upserted: bool,
    entity: Option<String>,
    history_sent: usize,
    files_sent: Vec<String>,
    finished: bool,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn read_state(dir: &Path) -> SyncState {
    std::fs::read(dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn read_spool(dir: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(dir.join("spool.jsonl"))
        .with_context(|| format!("cannot read {}", dir.join("spool.jsonl").display()))?;
    // A line cut short by a crash is the last one and was never sent: skip it.
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// How a request ended when it did not succeed.
#[derive(Debug)]
enum SendError {
    /// Worth retrying (connection error, timeout, 429, 5xx but 501), after at least this long.
    Retry(String, Option<Duration>),
    /// 401 or 403: stop W&B logging for the whole session.
    Unauthorized(String),
    /// Any other refusal: stop sending this run (it stays spooled).
    Rejected(String),
    /// The time budget ran out.
    OutOfTime,
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<f64>()
        .ok()
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
}

struct Client {
    http: reqwest::blocking::Client,
    settings: Settings,
    stop: Arc<AtomicBool>,
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl Client {
    fn new(
        settings: Settings,
        stop: Arc<AtomicBool>,
        deadline: Arc<Mutex<Option<Instant>>>,
    ) -> Result<Client> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs_f64(settings.request_timeout_s))
            .user_agent(concat!("runner/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            settings,
            stop,
            deadline,
        })
    }

    fn out_of_time(&self, extra: Duration) -> bool {
        if self.stop.load(Ordering::SeqCst) {
            return true;
        }
        match *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(d) => Instant::now() + extra > d,
            None => false,
        }
    }

    /// Sends one request with W&B's retry rules: up to 20 retries, backoff from `backoff_ms`
    /// doubling to 60 s with jitter, `Retry-After` honoured, never past the deadline.
    fn send(
        &self,
        build: &dyn Fn() -> reqwest::blocking::RequestBuilder,
    ) -> Result<Value, SendError> {
        let mut attempt = 0u32;
        loop {
            if self.out_of_time(Duration::ZERO) {
                return Err(SendError::OutOfTime);
            }
            let err = match build().send() {
                Ok(resp) => {
                    let status = resp.status();
                    let after = retry_after(resp.headers());
                    if status.is_success() {
                        let body = resp.text().unwrap_or_default();
                        let v: Value = if body.trim().is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_str(&body).unwrap_or(Value::Null)
                        };
                        if let Some(errors) = v.get("errors").filter(|e| !e.is_null()) {
                            return Err(SendError::Rejected(format!("GraphQL error: {errors}")));
                        }
                        return Ok(v);
                    }
                    let code = status.as_u16();
                    if code == 401 || code == 403 {
                        return Err(SendError::Unauthorized(format!("HTTP {code}")));
                    }
                    if code == 429 || (status.is_server_error() && code != 501) {
                        SendError::Retry(format!("HTTP {code}"), after)
                    } else {
                        return Err(SendError::Rejected(format!("HTTP {code}")));
                    }
                }
                // reqwest's error text names the URL, never the Authorization header.
                Err(e) => SendError::Retry(format!("{}", e.without_url()), None),
            };
            let SendError::Retry(msg, after) = err else {
                unreachable!()
            };
            attempt += 1;
            if attempt > 20 {
                return Err(SendError::Retry(msg, None));
            }
            let base = self.settings.backoff_ms as f64 * 2f64.powi(attempt as i32 - 1);
            let jitter = 1.0 + 0.25 * ((attempt as f64 * 0.618_034).fract());
            let wait = after
                .unwrap_or_else(|| Duration::from_millis((base * jitter).min(60_000.0) as u64));
            if self.out_of_time(wait) {
                return Err(SendError::OutOfTime);
            }
            let until = Instant::now() + wait;
            while Instant::now() < until {
                if self.stop.load(Ordering::SeqCst) {
                    return Err(SendError::OutOfTime);
                }
                std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
            }
        }
    }

    fn graphql(&self, operation: &str, query: &str, variables: &Value) -> Result<Value, SendError> {
        let url = format!("{}/graphql", self.settings.base_url);
        let body = json!({"query": query, "variables": variables, "operationName": operation});
        let key = self.settings.api_key.clone();
        self.send(&|| {
            let r = self.http.post(&url).json(&body);
            match &key {
                Some(k) => r.basic_auth("api", Some(&k.0)),
                None => r,
            }
        })
    }

    fn file_stream(&self, entity: &str, run: &str, body: &Value) -> Result<Value, SendError> {
        let url = format!(
            "{}/files/{}/{}/{}/file_stream",
            self.settings.base_url, entity, self.settings.project, run
        );
        let key = self.settings.api_key.clone();
        self.send(&|| {
            let r = self.http.post(&url).json(body);
            match &key {
                Some(k) => r.basic_auth("api", Some(&k.0)),
                None => r,
            }
        })
    }

    fn upload(
        &self,
        url: &str,
        headers: &[(String, String)],
        bytes: &[u8],
    ) -> Result<Value, SendError> {
        self.send(&|| {
            let mut r = self.http.put(url).body(bytes.to_vec());
            for (k, v) in headers {
                r = r.header(k.as_str(), v.as_str());
            }
            r
        })
    }
}

const UPSERT_BUCKET: &str = "mutation UpsertBucket($id: String, $name: String, $project: String, $entity: String, $groupName: String, $description: String, $displayName: String, $notes: String, $commit: String, $config: JSONString, $host: String, $debug: Boolean, $program: String, $repo: String, $jobType: String, $state: String, $sweep: String, $tags: [String!], $summaryMetrics: JSONString) { upsertBucket(input: {id: $id, name: $name, groupName: $groupName, modelName: $project, entityName: $entity, description: $description, displayName: $displayName, notes: $notes, config: $config, commit: $commit, host: $host, debug: $debug, jobProgram: $program, jobRepo: $repo, jobType: $jobType, state: $state, sweep: $sweep, tags: $tags, summaryMetrics: $summaryMetrics}) { bucket { id name displayName description config sweepName project { id name entity { id name } } historyLineCount } inserted } }";
const CREATE_RUN_FILES: &str = "mutation CreateRunFiles($entity: String!, $project: String!, $run: String!, $files: [String!]!) { createRunFiles(input: {entityName: $entity, projectName: $project, runName: $run, files: $files}) { runID uploadHeaders files { name uploadUrl } } }";
const RUN_RESUME_STATUS: &str = "query RunResumeStatus($project: String, $entity: String, $name: String!) { model(name: $project, entityName: $entity) { id name entity { id name } bucket(name: $name, missingOk: true) { id name summaryMetrics displayName logLineCount historyLineCount eventsLineCount historyTail eventsTail config tags notes } } }";

/// One run's spool being sent, with what the server has acknowledged so far.
struct RunSync<'a> {
    client: &'a Client,
    dir: &'a Path,
    run_id: &'a str,
    records: Vec<Record>,
    state: SyncState,
}

impl RunSync<'_> {
    fn save(&self) {
        if let Ok(bytes) = serde_json::to_vec(&self.state) {
            let _ = write_atomic(&self.dir.join("state.json"), &bytes);
        }
    }

    /// The server may have more than the state says (a crash after a post, before the state
    /// was written): continue from the server's count.
    fn resume_from_server(&mut self) -> Result<(), SendError> {
        let s = &self.client.settings;
        let vars = json!({"project": s.project, "entity": self.state.entity, "name": self.run_id});
        let v = self
            .client
            .graphql("RunResumeStatus", RUN_RESUME_STATUS, &vars)?;
        if let Some(n) = v["data"]["model"]["bucket"]["historyLineCount"].as_u64() {
            self.state.history_sent = self.state.history_sent.max(n as usize);
        }
        Ok(())
    }

    /// Creates the run on the server from its spooled creation record.
    fn upsert(&mut self) -> Result<(), SendError> {
        let Some(Record::Upsert { variables }) = self
            .records
            .iter()
            .find(|r| matches!(r, Record::Upsert { .. }))
        else {
            return Err(SendError::Rejected(
                "spool has no run creation record".into(),
            ));
        };
        let v = self
            .client
            .graphql("UpsertBucket", UPSERT_BUCKET, variables)?;
        let entity = &v["data"]["upsertBucket"]["bucket"]["project"]["entity"]["name"];
        self.state.entity = entity
            .as_str()
            .map(str::to_string)
            .or_else(|| self.client.settings.entity.clone());
        self.state.upserted = true;
        self.save();
        Ok(())
    }

    fn history_lines(&self) -> Vec<&String> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::History { line } => Some(line),
                _ => None,
            })
            .collect()
    }

    /// The summary after the first `upto` history lines: each key's last value.
    fn summary(&self, upto: usize) -> String {
        let mut m = Map::new();
        for l in &self.history_lines()[..upto] {
            if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(l) {
                m.extend(o);
            }
        }
        Value::Object(m).to_string()
    }

    /// Sends the history lines the server lacks, 1000 at a time, with the summary so far.
    fn send_history(&mut self, entity: &str) -> Result<(), SendError> {
        let total = self.history_lines().len();
        while self.state.history_sent < total {
            let end = (self.state.history_sent + 1000).min(total);
            let content: Vec<String> = self.history_lines()[self.state.history_sent..end]
                .iter()
                .map(|l| (*l).clone())
                .collect();
            let body = json!({"files": {
                "wandb-history.jsonl": {"offset": self.state.history_sent, "content": content},
                "wandb-summary.json": {"offset": 0, "content": [self.summary(end)]},
            }});
            self.client.file_stream(entity, self.run_id, &body)?;
            self.state.history_sent = end;
            self.save();
        }
        Ok(())
    }

    /// Uploads the files not sent yet to the URLs the server hands out.
    fn upload_files(&mut self, entity: &str) -> Result<(), SendError> {
        let files: Vec<(String, PathBuf)> = self
            .records
            .iter()
            .filter_map(|r| match r {
                Record::File { name, path } => Some((name.clone(), path.clone())),
                _ => None,
            })
            .filter(|(n, _)| !self.state.files_sent.contains(n))
            .collect();
        if files.is_empty() {
            return Ok(());
        }
        let names: Vec<&String> = files.iter().map(|(n, _)| n).collect();
        let project = &self.client.settings.project;
        let vars =
            json!({"entity": entity, "project": project, "run": self.run_id, "files": names});
        let v = self
            .client
            .graphql("CreateRunFiles", CREATE_RUN_FILES, &vars)?;
        let (headers, urls) = upload_targets(&v["data"]["createRunFiles"]);
        for (name, path) in files {
            let url = urls
                .get(&name)
                .ok_or_else(|| SendError::Rejected(format!("no upload URL for {name}")))?;
            let bytes = std::fs::read(&path)
                .map_err(|e| SendError::Rejected(format!("cannot read {}: {e}", path.display())))?;
            self.client.upload(url, &headers, &bytes)?;
            self.state.files_sent.push(name);
            self.save();
        }
        Ok(())
    }

    /// Marks the run finished on the server once its spool says it ended.
    fn send_finish(&mut self, entity: &str) -> Result<bool, SendError> {
        let Some(Record::Finish { exitcode }) = self
            .records
            .iter()
            .find(|r| matches!(r, Record::Finish { .. }))
        else {
            return Ok(false);
        };
        let body = json!({
            "files": {"wandb-summary.json": {"offset": 0, "content": [self.summary(self.history_lines().len())]}},
            "complete": true,
            "exitcode": exitcode,
            "uploaded": self.state.files_sent,
        });
        self.client.file_stream(entity, self.run_id, &body)?;
        self.state.finished = true;
        self.save();
        Ok(true)
    }
}

/// The upload headers and each file's upload URL from a `CreateRunFiles` answer.
fn upload_targets(crf: &Value) -> (Vec<(String, String)>, HashMap<String, String>) {
    let headers = crf["uploadHeaders"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| {
                    h.as_str()?
                        .split_once(':')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    let urls = crf["files"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| {
                    Some((
                        f["name"].as_str()?.to_string(),
                        f["uploadUrl"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    (headers, urls)
}

/// Sends whatever of one run's spool the server has not acknowledged yet.
fn sync_run(client: &Client, dir: &Path, run_id: &str, resume: bool) -> Result<bool, SendError> {
    let records = read_spool(dir).map_err(|e| SendError::Rejected(format!("{e:#}")))?;
    let mut sync = RunSync {
        client,
        dir,
        run_id,
        records,
        state: read_state(dir),
    };
    if sync.state.finished {
        return Ok(true);
    }
    if resume && sync.state.upserted {
        sync.resume_from_server()?;
    }
    if !sync.state.upserted {
        sync.upsert()?;
    }
    let entity = sync
        .state
        .entity
        .clone()
        .unwrap_or_else(|| "default".into());
    sync.send_history(&entity)?;
    sync.upload_files(&entity)?;
    sync.send_finish(&entity)
}

struct RunSpool {
    dir: PathBuf,
    step: u64,
    started: Instant,
    /// The history key that carries a learning curve's step: "round", "epoch" or "step".
    axis: &'static str,
}

/// Run folders with spooled records the sender has not looked at yet. Appends mark their folder
/// here and wake the sender through a channel of one slot, so the memory the sink holds is
/// bounded by its number of runs however far the sender falls behind: the records themselves
/// wait on disk.
type Marked = Arc<Mutex<BTreeSet<String>>>;

/// The W&B sink of one sweep.
pub struct WandbSink {
    settings: Settings,
    /// Run spools go in `<spool_root>/<run id>/`.
    spool_root: PathBuf,
    /// The run folders not fully sent, once closed.
    pending: Mutex<Option<Vec<PathBuf>>>,
    /// How long closing waited for the sender.
    waited_s: Mutex<f64>,
    runs: Mutex<HashMap<String, RunSpool>>,
    marked: Marked,
    /// Wakes the sender (one slot; a full slot means a wake-up is already pending).
    wake: Mutex<Option<mpsc::SyncSender<()>>>,
    closing: Arc<AtomicBool>,
    sender: Mutex<Option<std::thread::JoinHandle<()>>>,
    stop: Arc<AtomicBool>,
    deadline: Arc<Mutex<Option<Instant>>>,
    disabled: Arc<AtomicBool>,
    /// Run folders whose spool is fully sent.
    done: Arc<Mutex<HashSet<String>>>,
    warned: AtomicBool,
}

fn wrap_config(record: &Value) -> String {
    let mut m = Map::new();
    if let Value::Object(o) = record {
        for (k, v) in o {
            m.insert(k.clone(), json!({"value": v}));
        }
    }
    Value::Object(m).to_string()
}

impl WandbSink {
    /// A sink whose runs spool under `spool_root/<run id>/` (next to the store, like the W&B
    /// SDK's `wandb/` folder).
    pub fn new(settings: Settings, spool_root: PathBuf) -> Result<WandbSink> {
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Arc::new(Mutex::new(None));
        let disabled = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new(HashSet::new()));
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let marked: Marked = Arc::default();
        let closing = Arc::new(AtomicBool::new(false));
        let sender = if settings.mode == Mode::Online {
            let client = Client::new(settings.clone(), stop.clone(), deadline.clone())?;
            let queue = SenderQueue {
                woken,
                marked: marked.clone(),
                closing: closing.clone(),
            };
            let (disabled, done) = (disabled.clone(), done.clone());
            Some(std::thread::spawn(move || {
                sender_loop(client, queue, disabled, done)
            }))
        } else {
            None
        };
        Ok(WandbSink {
            settings,
            spool_root,
            pending: Mutex::new(None),
            waited_s: Mutex::new(0.0),
            runs: Mutex::new(HashMap::new()),
            marked,
            wake: Mutex::new(Some(wake)),
            closing,
            sender: Mutex::new(sender),
            stop,
            deadline,
            disabled,
            done,
            warned: AtomicBool::new(false),
        })
    }

    fn append(&self, run_uuid: &str, rec: &Record) {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = runs.get(run_uuid) else {
            return;
        };
        let dir = r.dir.clone();
        self.write_spool(&dir, rec);
        drop(runs);
        self.mark_and_wake(&dir);
    }

    /// Appends one record to the run's spool. Callers hold the `runs` lock, so records of one
    /// run (from parallel folds too) reach the spool in the order their `_step`s were given.
    fn write_spool(&self, dir: &Path, rec: &Record) {
        let res = (|| -> Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("spool.jsonl"))?;
            let mut line = serde_json::to_vec(rec)?;
            line.push(b'\n');
            f.write_all(&line)?;
            Ok(())
        })();
        if let Err(e) = res {
            if !self.warned.swap(true, Ordering::SeqCst) {
                eprintln!("W&B: cannot write the spool in {}: {e:#}; W&B data of this run may be incomplete", dir.display());
            }
        }
    }

    /// Marks the run folder as having unsent records and wakes the sender.
    fn mark_and_wake(&self, dir: &Path) {
        self.marked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.display().to_string());
        if let Some(wake) = self.wake.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = wake.try_send(());
        }
    }

    /// Waits at most `timeout_s` for the sender, then stops it. Returns the run folders whose
    /// spool is not fully sent.
    pub fn close_spools(&self) -> Vec<PathBuf> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + Duration::from_secs_f64(self.settings.timeout_s));
        self.closing.store(true, Ordering::SeqCst);
        // Dropping the waker ends a sender waiting with nothing to send.
        self.wake.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = self.sender.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let limit = Instant::now() + Duration::from_secs_f64(self.settings.timeout_s);
            while !h.is_finished() && Instant::now() < limit {
                std::thread::sleep(Duration::from_millis(20));
            }
            self.stop.store(true, Ordering::SeqCst);
            let _ = h.join();
        }
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending: Vec<PathBuf> = self
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|r| r.dir.clone())
            .filter(|d| !done.contains(&d.display().to_string()))
            .collect();
        pending.sort();
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(pending.clone());
        pending
    }

    /// The run folders not fully sent when the sink closed (none before it closes).
    pub fn pending(&self) -> Vec<PathBuf> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// Where the spool of a run lives.
    pub fn spool_dir(spool_root: &Path, run_uuid: &str) -> PathBuf {
        spool_root.join(run_uuid)
    }

    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::SeqCst)
    }
}

fn run_id_of(dir: &Path) -> Option<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(dir.join("settings.json")).ok()?).ok()?;
    v["run_id"].as_str().map(str::to_string)
}

/// What the sender waits on: wake-ups, the marked folders, and whether the sink is closing.
struct SenderQueue {
    woken: mpsc::Receiver<()>,
    marked: Marked,
    closing: Arc<AtomicBool>,
}

fn sender_loop(
    client: Client,
    queue: SenderQueue,
    disabled: Arc<AtomicBool>,
    done: Arc<Mutex<HashSet<String>>>,
) {
    let mut dirty: BTreeMap<String, ()> = BTreeMap::new();
    loop {
        let marked = std::mem::take(&mut *queue.marked.lock().unwrap_or_else(|e| e.into_inner()));
        dirty.extend(marked.into_iter().map(|d| (d, ())));
        // Block only when there is nothing to send.
        if dirty.is_empty() {
            if queue.closing.load(Ordering::SeqCst) || queue.woken.recv().is_err() {
                return;
            }
            continue;
        }
        if disabled.load(Ordering::SeqCst) {
            return;
        }
        let dirs: Vec<String> = dirty.keys().cloned().collect();
        for d in dirs {
            let path = PathBuf::from(&d);
            let Some(run_id) = run_id_of(&path) else {
                dirty.remove(&d);
                continue;
            };
            match sync_run(&client, &path, &run_id, false) {
                Ok(finished) => {
                    dirty.remove(&d);
                    if finished {
                        done.lock().unwrap_or_else(|e| e.into_inner()).insert(d);
                    }
                }
                Err(SendError::Unauthorized(m)) => {
                    eprintln!("W&B: the server refused the API key ({m}); W&B logging stops for this sweep, the runs stay spooled for `runner wandb-sync`");
                    disabled.store(true, Ordering::SeqCst);
                    return;
                }
                Err(SendError::Rejected(m)) => {
                    eprintln!("W&B: run {run_id} was refused ({m}); it stays spooled in {d}");
                    dirty.remove(&d);
                }
                Err(SendError::OutOfTime) => return,
                Err(SendError::Retry(..)) => {} // try again on the next round
            }
        }
    }
}

impl Tracker for WandbSink {
    fn name(&self) -> &str {
        "W&B"
    }

    /// Registers a run: its spool folder and the W&B run creation record.
    fn create_run(&self, run: &TrackedRun) -> Result<()> {
        let spec = &run.spec;
        if self
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&spec.run_uuid)
        {
            return Ok(());
        }
        let dir = Self::spool_dir(&self.spool_root, &spec.run_uuid);
        std::fs::create_dir_all(dir.join("files"))
            .with_context(|| format!("W&B spool {}", dir.display()))?;
        write_atomic(
            &dir.join("settings.json"),
            &serde_json::to_vec_pretty(
                &json!({"run_id": spec.run_uuid, "settings": self.settings}),
            )?,
        )?;
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).insert(
            spec.run_uuid.clone(),
            RunSpool {
                dir,
                step: 0,
                started: Instant::now(),
                axis: run.curve_axis,
            },
        );
        let tag = |key: &str| {
            spec.tags
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let tags: Vec<String> = std::iter::once(run.kind.clone())
            .chain(tag("runner.etl_version"))
            .chain(run.version.clone())
            .collect();
        let variables = json!({
            "name": spec.run_uuid,
            "project": self.settings.project,
            "entity": self.settings.entity,
            "displayName": spec.name,
            "groupName": run.group,
            "jobType": if run.version.is_some() { "train" } else { run.kind.as_str() },
            "config": wrap_config(&run.record),
            "commit": spec.git_commit,
            "program": "runner",
            "tags": tags,
            "notes": tag("mlflow.note.content"),
        });
        self.append(&spec.run_uuid, &Record::Upsert { variables });
        Ok(())
    }

    fn start_run(&self, _run_uuid: &str) -> Result<()> {
        Ok(())
    }

    /// W&B keeps a run's settings in its config, which [`Tracker::create_run`] sent.
    fn log_params(&self, _run_uuid: &str, _params: &[(String, String)]) -> Result<()> {
        Ok(())
    }

    fn log_metrics(&self, run_uuid: &str, metrics: &[Metric]) -> Result<()> {
        if metrics.is_empty() {
            return Ok(());
        }
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let (line, dir) = {
            let Some(r) = runs.get_mut(run_uuid) else {
                return Ok(());
            };
            let mut row = Map::new();
            for m in metrics {
                let v = if m.value.is_finite() {
                    json!(m.value)
                } else {
                    json!(if m.value.is_nan() {
                        "NaN"
                    } else if m.value > 0.0 {
                        "Infinity"
                    } else {
                        "-Infinity"
                    })
                };
                row.insert(m.key.clone(), v);
            }
            if metrics.iter().all(|m| m.step == metrics[0].step) {
                row.insert(r.axis.into(), json!(metrics[0].step));
            }
            row.insert("_step".into(), json!(r.step));
            row.insert(
                "_timestamp".into(),
                json!(metrics[0].timestamp_ms as f64 / 1000.0),
            );
            row.insert("_runtime".into(), json!(r.started.elapsed().as_secs_f64()));
            r.step += 1;
            (Value::Object(row).to_string(), r.dir.clone())
        };
        // The line is written before the lock is let go: `_step`s reach the spool in order.
        self.write_spool(&dir, &Record::History { line });
        drop(runs);
        self.mark_and_wake(&dir);
        Ok(())
    }

    /// Copies the file into the run's spool: the sender uploads it from there, also after the
    /// store is gone.
    fn log_artifact(&self, run_uuid: &str, file_name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run_uuid)
            .map(|r| r.dir.clone());
        let Some(dir) = dir else {
            return Ok(());
        };
        let path = dir.join("files").join(file_name);
        write_atomic(&path, bytes).with_context(|| format!("W&B spool {}", path.display()))?;
        self.append(
            run_uuid,
            &Record::File {
                name: file_name.to_string(),
                path,
            },
        );
        Ok(())
    }

    fn finish_run(&self, run_uuid: &str, status: RunStatus, _end_ms: i64) -> Result<()> {
        let exitcode = if status == RunStatus::Finished { 0 } else { 1 };
        self.append(run_uuid, &Record::Finish { exitcode });
        Ok(())
    }

    fn set_tags(&self, _run_uuid: &str, _tags: &[(String, String)]) -> Result<()> {
        Ok(())
    }

    fn report(&self) -> Option<(&'static str, Value)> {
        let waited = self.waited_s.lock().unwrap_or_else(|e| e.into_inner());
        Some((
            "wandb",
            json!({
                "mode": format!("{:?}", self.mode()).to_lowercase(),
                "pending_runs": self.pending().len(),
                "wait_seconds": *waited,
            }),
        ))
    }

    fn close(&self) -> Vec<String> {
        let waited = Instant::now();
        let pending = self.close_spools();
        *self.waited_s.lock().unwrap_or_else(|e| e.into_inner()) = waited.elapsed().as_secs_f64();
        if pending.is_empty() {
            return Vec::new();
        }
        let why = if self.mode() == Mode::Offline {
            "offline mode"
        } else if self.is_disabled() {
            "the key was refused"
        } else {
            "the server did not answer in time"
        };
        vec![format!(
            "W&B: {} of {} runs are not fully sent ({why}); they are spooled: `runner wandb-sync` sends them",
            pending.len(),
            self.runs.lock().unwrap_or_else(|e| e.into_inner()).len()
        )]
    }
}

/// Where the W&B spools of a store's runs go: `wandb-spool/` beside the store file.
pub fn spool_root(store_path: &Path) -> PathBuf {
    let store_path = std::path::absolute(store_path).unwrap_or_else(|_| store_path.to_path_buf());
    store_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("wandb-spool")
}

/// Run folders fully sent, and those still pending with the reason.
pub type SyncOutcome = (Vec<PathBuf>, Vec<(PathBuf, String)>);

/// `runner wandb-sync`: sends what the spools of `dirs` still hold.
pub fn sync_dirs(dirs: &[PathBuf], timeout_s: f64) -> Result<SyncOutcome> {
    let mut synced = Vec::new();
    let mut pending = Vec::new();
    for dir in dirs {
        let v: Value = serde_json::from_slice(
            &std::fs::read(dir.join("settings.json"))
                .with_context(|| format!("{} has no W&B settings", dir.display()))?,
        )?;
        let run_id = v["run_id"]
            .as_str()
            .context("settings without run id")?
            .to_string();
        let mut settings: Settings = serde_json::from_value(v["settings"].clone())?;
        // The SDK's variables override what was recorded; the key comes from them or ~/.netrc.
        if let Some(u) = env("WANDB_BASE_URL") {
            settings.base_url = u.trim_end_matches('/').to_string();
        }
        if let Some(p) = env("WANDB_PROJECT") {
            settings.project = p;
        }
        if let Some(e) = env("WANDB_ENTITY") {
            settings.entity = Some(e);
        }
        settings.api_key = env("WANDB_API_KEY")
            .or_else(|| netrc_key(&host_of(&settings.base_url)))
            .map(ApiKey);
        if settings.api_key.is_none() {
            return Err(anyhow!(
                "no W&B API key: set WANDB_API_KEY or add machine {} to ~/.netrc",
                host_of(&settings.base_url)
            ));
        }
        settings.timeout_s = timeout_s;
        let deadline = Arc::new(Mutex::new(Some(
            Instant::now() + Duration::from_secs_f64(timeout_s),
        )));
        let client = Client::new(settings, Arc::new(AtomicBool::new(false)), deadline)?;
        match sync_run(&client, dir, &run_id, true) {
            Ok(true) => synced.push(dir.clone()),
            Ok(false) => pending.push((dir.clone(), "the run has not finished yet".into())),
            Err(SendError::Unauthorized(m)) => {
                return Err(anyhow!("W&B refused the API key ({m})"))
            }
            Err(SendError::Rejected(m)) | Err(SendError::Retry(m, _)) => {
                pending.push((dir.clone(), m))
            }
            Err(SendError::OutOfTime) => pending.push((dir.clone(), "out of time".into())),
        }
    }
    Ok((synced, pending))
}

/// Whether a run folder's spool still holds unsent data.
pub fn has_pending(dir: &Path) -> bool {
    dir.join("spool.jsonl").exists() && !read_state(dir).finished
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parallel folds log to one run at once: the spool must hold their lines in `_step` order,
    /// or the sender uploads a history whose steps go backwards.
    #[test]
    fn lines_from_parallel_folds_reach_the_spool_in_step_order() {
        let root = tempfile::tempdir().unwrap();
        let settings = Settings {
            base_url: DEFAULT_BASE_URL.into(),
            entity: None,
            project: "p".into(),
            mode: Mode::Offline,
            timeout_s: 1.0,
            request_timeout_s: 1.0,
            backoff_ms: 1,
            api_key: None,
        };
        let sink = WandbSink::new(settings, root.path().to_path_buf()).unwrap();
        let dir = root.path().join("run");
        std::fs::create_dir_all(&dir).unwrap();
        let spool = RunSpool {
            dir: dir.clone(),
            step: 0,
            started: Instant::now(),
            axis: "round",
        };
        sink.runs.lock().unwrap().insert("r".into(), spool);
        std::thread::scope(|s| {
            for fold in 0..8 {
                let sink = &sink;
                s.spawn(move || {
                    for round in 0..200 {
                        let metric = Metric {
                            key: format!("fold{fold}/valid_loss"),
                            value: 1.0,
                            step: round,
                            timestamp_ms: 0,
                        };
                        sink.log_metrics("r", &[metric]).unwrap();
                    }
                });
            }
        });
        let steps: Vec<u64> = read_spool(&dir)
            .unwrap()
            .iter()
            .filter_map(|r| match r {
                Record::History { line } => serde_json::from_str::<Value>(line).ok(),
                _ => None,
            })
            .map(|l| l["_step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, (0..1600).collect::<Vec<_>>());
    }
}
