//! An MLflow tracking server as a tracker beside the store (`tracking.server`): every run is
//! also created on the server through MLflow's REST API, as the Python client does it
//! (experiments, runs, log-batch, log-inputs, update), with its artifacts through the server's
//! proxied artifact API (`mlflow-artifacts`). Credentials and TLS come from the variables the
//! MLflow client reads. The SQLite store stays the primary: it numbers the runs.
//!
//! Each request that fails with a connection error, a timeout, 429 or a 5xx is retried with
//! backoff for up to `RUNNER_MLFLOW_RETRY_S` seconds (default 120), so a server restarted
//! mid-sweep misses nothing; batches stay within the server's limits (1000 metrics, 100 params,
//! 100 tags per log-batch).

use super::mlmodel::{self, MODEL_NAME};
use super::{Metric, ModelPackage, RunStatus, TrackedRun, Tracker};
use crate::config::ConfigError;
use anyhow::{anyhow, bail, Context, Result};
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The server's limits per log-batch request.
const MAX_METRICS: usize = 1000;
const MAX_PARAMS: usize = 100;
const MAX_TAGS: usize = 100;

/// How runner authenticates to the server.
#[derive(Clone)]
enum Auth {
    Basic(String, String),
    Bearer(String),
}

/// Where the server is and how to reach it.
#[derive(Clone)]
pub struct ServerSettings {
    pub url: String,
    auth: Option<Auth>,
    insecure_tls: bool,
    cert_path: Option<String>,
    retry_for: Duration,
    /// The server is runner's store (not a mirror): it also gets runner's records of training
    /// runs ([`RUN_FILE`], [`SUMMARY_FILE`]), which other hosts' replicas read back.
    pub as_store: bool,
}

/// The artifact a training run's number, kind and record are sent to a store server as.
pub const RUN_FILE: &str = "runner/run.json";
/// The artifact a training run's summary is sent to a store server as.
pub const SUMMARY_FILE: &str = "runner/summary.json";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The settings for `tracking.server = URL`, with the MLflow client's variables:
/// `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`, `MLFLOW_TRACKING_TOKEN`,
/// `MLFLOW_TRACKING_INSECURE_TLS`, `MLFLOW_TRACKING_SERVER_CERT_PATH`. A mistake is the user's
/// (exit 2).
pub fn settings(url: &str, file: &str) -> Result<ServerSettings> {
    let url = url.trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!(ConfigError::new(
            file,
            format!("key `tracking.server`: `{url}` is not an http:// or https:// URL of an MLflow tracking server")
        ));
    }
    let auth = match (
        env("MLFLOW_TRACKING_USERNAME"),
        env("MLFLOW_TRACKING_PASSWORD"),
        env("MLFLOW_TRACKING_TOKEN"),
    ) {
        (Some(user), Some(password), _) => Some(Auth::Basic(user, password)),
        (Some(_), None, _) | (None, Some(_), _) => bail!(ConfigError::new(
            "MLFLOW_TRACKING_USERNAME",
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD together"
        )),
        (None, None, Some(token)) => Some(Auth::Bearer(token)),
        (None, None, None) => None,
    };
    let cert_path = env("MLFLOW_TRACKING_SERVER_CERT_PATH");
    if let Some(p) = &cert_path {
        if !std::path::Path::new(p).is_file() {
            bail!(ConfigError::new(
                "MLFLOW_TRACKING_SERVER_CERT_PATH",
                format!("no certificate file at {p}")
            ));
        }
    }
    let insecure_tls = env("MLFLOW_TRACKING_INSECURE_TLS")
        .is_some_and(|v| matches!(v.to_lowercase().as_str(), "true" | "1"));
    let retry_s = env("RUNNER_MLFLOW_RETRY_S")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(120.0);
    Ok(ServerSettings {
        url,
        auth,
        insecure_tls,
        cert_path,
        retry_for: Duration::from_secs_f64(retry_s),
        as_store: false,
    })
}

/// The server did not answer for the whole retry window.
#[derive(Debug)]
pub struct ServerGone(String);

impl std::fmt::Display for ServerGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerGone {}

/// The server answered a request with an error that retrying will not change.
#[derive(Debug)]
pub struct Refused {
    code: u16,
    text: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Refused {}

/// Whether the server answered 404 (no such experiment, run or endpoint).
pub fn not_found(e: &anyhow::Error) -> bool {
    refused_with(e, 404)
}

/// Whether the server answered with this HTTP status (400: a value it will not take).
pub fn refused_with(e: &anyhow::Error, code: u16) -> bool {
    e.downcast_ref::<Refused>().is_some_and(|r| r.code == code)
}

/// Whether the server refused a write because another writer inserted the same row between its
/// check and its insert (hosts logging one new dataset at once): its database's unique
/// constraint, in SQLAlchemy's, PostgreSQL's, SQLite's or MySQL's words. The server's transaction
/// was rolled back, so sending the request again is as sending it the first time, and by then
/// the row is there to be found.
fn lost_insert_race(code: u16, message: &str) -> bool {
    let said = [
        "IntegrityError",
        "UniqueViolation",
        "UNIQUE constraint",
        "Duplicate entry",
    ];
    code == 400 && said.iter().any(|s| message.contains(s))
}

/// Why a request did not succeed.
enum Failure {
    /// A connection error, a timeout, 429 or a 5xx: worth trying again.
    Transient(String),
    /// Anything else: the server's answer, as it gave it.
    Refused(u16, String),
    /// The server's TLS certificate is not one runner trusts: asking again will not help.
    Untrusted(String),
}

/// An error's text with its causes, as far as they add something ("error sending request:
/// client error (Connect): tcp connect error: Connection refused (os error 111)").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        cause = c.source();
    }
    text
}

/// MLflow's REST API over HTTP, with retries.
pub struct RestClient {
    http: Client,
    settings: ServerSettings,
}

impl RestClient {
    pub fn new(settings: ServerSettings) -> Result<RestClient> {
        let mut builder = Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("runner/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(settings.insecure_tls);
        if let Some(p) = &settings.cert_path {
            let pem = std::fs::read(p).with_context(|| format!("cannot read {p}"))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{p} is not a PEM certificate"))?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(RestClient {
            http: builder.build()?,
            settings,
        })
    }

    fn with_auth(&self, r: RequestBuilder) -> RequestBuilder {
        match &self.settings.auth {
            Some(Auth::Basic(user, password)) => r.basic_auth(user, Some(password)),
            Some(Auth::Bearer(token)) => r.bearer_auth(token),
            None => r,
        }
    }

    fn once(&self, build: &dyn Fn() -> RequestBuilder) -> Result<Vec<u8>, Failure> {
        let resp = match self.with_auth(build()).send() {
            Ok(r) => r,
            // reqwest's error text names the URL, never the Authorization header.
            Err(e) => {
                let why = with_causes(&e.without_url());
                return Err(match why.contains("certificate") {
                    true => Failure::Untrusted(why),
                    false => Failure::Transient(why),
                });
            }
        };
        let status = resp.status();
        let body = match resp.bytes() {
            Ok(b) => b.to_vec(),
            Err(e) => return Err(Failure::Transient(format!("{}", e.without_url()))),
        };
        if status.is_success() {
            return Ok(body);
        }
        let code = status.as_u16();
        // 501: the method is not there (a proxy without PATCH, say); asking again will not help.
        if code == 429 || (status.is_server_error() && code != 501) {
            return Err(Failure::Transient(format!("HTTP {code}")));
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        Err(Failure::Refused(code, message))
    }

    /// Sends a request, retrying transient failures with backoff (0.5 s doubling to 10 s) for
    /// up to the retry window; the answer as JSON.
    fn send(&self, what: &str, build: &dyn Fn() -> RequestBuilder) -> Result<Value> {
        let body = self.send_raw(what, build)?;
        Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// [`RestClient::send`], the answer's bytes as they came. A request that lost an insert race
    /// ([`lost_insert_race`]) is sent again up to 3 times, 100 ms doubling apart.
    fn send_raw(&self, what: &str, build: &dyn Fn() -> RequestBuilder) -> Result<Vec<u8>> {
        let started = Instant::now();
        let mut wait = Duration::from_millis(500);
        let mut races = 0;
        loop {
            match self.once(build) {
                Ok(v) => return Ok(v),
                Err(Failure::Refused(code, message))
                    if races < 3 && lost_insert_race(code, &message) =>
                {
                    std::thread::sleep(Duration::from_millis(100 << races));
                    races += 1;
                }
                Err(Failure::Refused(code, message)) => {
                    return Err(self.refusal(what, code, &message))
                }
                Err(Failure::Untrusted(why)) => bail!(
                    "the MLflow server at {} presented a TLS certificate runner does not trust ({why}): set MLFLOW_TRACKING_SERVER_CERT_PATH to the PEM file of the certificate authority that signed it, or MLFLOW_TRACKING_INSECURE_TLS=true to skip the check",
                    self.settings.url
                ),
                Err(Failure::Transient(why)) => {
                    if started.elapsed() + wait > self.settings.retry_for {
                        return Err(ServerGone(format!(
                            "the MLflow server at {} did not answer {what} for {:.0} s ({why})",
                            self.settings.url,
                            started.elapsed().as_secs_f64()
                        ))
                        .into());
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn refusal(&self, what: &str, code: u16, message: &str) -> anyhow::Error {
        let text = if code == 401 || code == 403 {
            format!(
                "the MLflow server at {} refused the credentials (HTTP {code}) for {what}: check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN",
                self.settings.url
            )
        } else {
            format!(
                "the MLflow server at {} refused {what} (HTTP {code}): {message}",
                self.settings.url
            )
        };
        Refused { code, text }.into()
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/2.0/mlflow/{path}", self.settings.url)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = self.api(path);
        self.send(path, &|| self.http.post(&url).json(body))
    }

    pub fn patch(&self, path: &str, body: &Value) -> Result<Value> {
        let url = self.api(path);
        self.send(path, &|| self.http.patch(&url).json(body))
    }

    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let url = self.api(path);
        self.send(path, &|| self.http.get(&url).query(query))
    }

    /// Uploads an artifact through the server's proxied artifact API.
    pub fn put_artifact(&self, artifact_path: &str, bytes: &[u8]) -> Result<()> {
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{artifact_path}",
            self.settings.url
        );
        let what = format!("the artifact {artifact_path}");
        self.send(&what, &|| self.http.put(&url).body(bytes.to_vec()))?;
        Ok(())
    }

    /// Downloads an artifact through the server's proxied artifact API.
    pub fn get_artifact(&self, artifact_path: &str) -> Result<Vec<u8>> {
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{artifact_path}",
            self.settings.url
        );
        let what = format!("the artifact {artifact_path}");
        self.send_raw(&what, &|| self.http.get(&url))
    }

    /// The files under an artifact folder, recursively: paths relative to `folder`.
    pub fn list_artifacts(&self, folder: &str) -> Result<Vec<String>> {
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts", self.settings.url);
        let what = format!("the artifacts of {folder}");
        let listing = self.send(&what, &|| self.http.get(&url).query(&[("path", folder)]))?;
        let mut files = Vec::new();
        for f in listing["files"].as_array().into_iter().flatten() {
            let name = f["path"].as_str().unwrap_or_default();
            if name.is_empty() {
                continue;
            }
            if f["is_dir"].as_bool() == Some(true) {
                let inner = self.list_artifacts(&format!("{folder}/{name}"))?;
                files.extend(inner.into_iter().map(|p| format!("{name}/{p}")));
            } else {
                files.push(name.to_string());
            }
        }
        Ok(files)
    }

    /// The experiment's id, created if missing (another writer may create it at once).
    pub fn experiment_id(&self, name: &str) -> Result<String> {
        Ok(self.experiment_id_created(name)?.0)
    }

    /// The experiment's id, created if missing, and whether this call created it: the server
    /// refuses a second experiment of a name, so exactly one writer creates it.
    pub fn experiment_id_created(&self, name: &str) -> Result<(String, bool)> {
        let by_name = || match self.get("experiments/get-by-name", &[("experiment_name", name)]) {
            Ok(v) => Ok(v["experiment"]["experiment_id"]
                .as_str()
                .map(str::to_string)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        };
        if let Some(id) = by_name()? {
            return Ok((id, false));
        }
        match self.post("experiments/create", &json!({ "name": name })) {
            Ok(v) => v["experiment_id"]
                .as_str()
                .map(|id| (id.to_string(), true))
                .ok_or_else(|| anyhow!("experiments/create answered without an id: {v}")),
            // Created by another writer since: look again.
            Err(e) => Ok((by_name()?.ok_or(e)?, false)),
        }
    }

    pub fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    /// The server's URL, as the settings give it.
    pub fn url(&self) -> &str {
        &self.settings.url
    }
}

/// Key-value pairs as MLflow's REST API takes them: one per key (the last, as the store keeps
/// it; the server refuses a batch that repeats a key), values cut to the server's limit.
fn pairs(items: &[(String, String)], max_value: usize) -> Vec<Value> {
    let last: HashMap<&str, usize> = (items.iter().enumerate())
        .map(|(i, (k, _))| (k.as_str(), i))
        .collect();
    (items.iter().enumerate())
        .filter(|(i, (k, _))| last[k.as_str()] == *i)
        .map(
            |(_, (k, v))| json!({"key": k, "value": v.chars().take(max_value).collect::<String>()}),
        )
        .collect()
}

/// A metric value as MLflow's JSON takes it: NaN and infinities as protobuf's strings.
fn metric_value(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(v)
    }
}

/// Where a run's artifacts go under the proxied artifact API, from its `artifact_uri`
/// (`mlflow-artifacts:/<experiment id>/<run id>/artifacts`); none when the server does not
/// proxy artifacts.
pub fn artifact_path(info: &Value) -> Option<String> {
    (info["artifact_uri"].as_str())
        .and_then(|u| u.strip_prefix("mlflow-artifacts:"))
        .map(|p| p.trim_start_matches('/').to_string())
}

/// A run on the server: its id and where its artifacts go.
#[derive(Clone)]
struct ServerRun {
    run_id: String,
    /// `<experiment id>/<run id>/artifacts` under the proxied artifact API.
    artifact_path: Option<String>,
}

/// Runs of the store mirrored on an MLflow server, one request after another.
struct Mirror {
    client: RestClient,
    experiments: Mutex<HashMap<String, String>>,
    /// The store's run id -> the server's run.
    runs: Mutex<HashMap<String, ServerRun>>,
}

impl Mirror {
    /// Checks that the server answers (and takes the credentials) before anything is written.
    fn open(settings: ServerSettings) -> Result<Mirror> {
        let client = RestClient::new(settings)?;
        // Any answer but a refusal will do (a server may have deleted the Default experiment).
        match client.get("experiments/get", &[("experiment_id", "0")]) {
            Err(e) if !not_found(&e) => return Err(e),
            _ => {}
        }
        Ok(Mirror {
            client,
            experiments: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
        })
    }

    fn experiment(&self, name: &str) -> Result<String> {
        let mut known = self.experiments.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = known.get(name) {
            return Ok(id.clone());
        }
        let id = self.client.experiment_id(name)?;
        known.insert(name.to_string(), id.clone());
        Ok(id)
    }

    fn run(&self, run_uuid: &str) -> Result<ServerRun> {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.get(run_uuid)
            .cloned()
            .ok_or_else(|| anyhow!("run {run_uuid} was not created on the MLflow server"))
    }

    /// The server's copy of the store's run `run_uuid` in `experiment`, found by its
    /// `runner.run_uuid` tag when another process created it (a sweep's parent, made by the
    /// first shard).
    pub fn find_run(&self, run_uuid: &str, experiment: &str) -> Result<Option<String>> {
        if let Ok(run) = self.run(run_uuid) {
            return Ok(Some(run.run_id));
        }
        let body = json!({
            "experiment_ids": [self.experiment(experiment)?],
            "filter": format!("tags.`runner.run_uuid` = '{run_uuid}'"),
            "max_results": 1,
        });
        let found = self.client.post("runs/search", &body)?;
        let Some(info) = found["runs"].get(0).map(|r| &r["info"]) else {
            return Ok(None);
        };
        let run_id = info["run_id"].as_str().unwrap_or_default().to_string();
        let artifact_path = artifact_path(info);
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.insert(
            run_uuid.to_string(),
            ServerRun {
                run_id: run_id.clone(),
                artifact_path,
            },
        );
        Ok(Some(run_id))
    }

    /// The run's tags for the server: a parent run id is the server's id of that run (dropped
    /// when the server has no copy of it), and the store's id is kept as `runner.run_uuid`.
    fn server_tags(&self, spec: &super::RunSpec) -> Result<Vec<(String, String)>> {
        let mut tags = Vec::new();
        for (k, v) in &spec.tags {
            if k == "mlflow.parentRunId" {
                if let Some(id) = self.find_run(v, &spec.experiment)? {
                    tags.push((k.clone(), id));
                }
            } else {
                tags.push((k.clone(), v.clone()));
            }
        }
        tags.push(("runner.run_uuid".into(), spec.run_uuid.clone()));
        Ok(tags)
    }

    fn log_batch(
        &self,
        run_id: &str,
        key: &str,
        items: Vec<Value>,
        per_batch: usize,
    ) -> Result<()> {
        for chunk in items.chunks(per_batch) {
            let mut body = json!({ "run_id": run_id });
            body[key] = Value::Array(chunk.to_vec());
            self.client.post("runs/log-batch", &body)?;
        }
        Ok(())
    }

    fn set_status(&self, run_id: &str, status: RunStatus, end_ms: Option<i64>) -> Result<()> {
        let mut body = json!({ "run_id": run_id, "status": status.as_mlflow() });
        if let Some(end) = end_ms {
            body["end_time"] = json!(end);
        }
        self.client.post("runs/update", &body)?;
        Ok(())
    }

    fn log_dataset(&self, run_id: &str, ds: &super::DatasetInput) -> Result<()> {
        let colspec: Vec<Value> = (ds.schema.iter())
            .map(|(n, t)| json!({"type": t, "name": n, "required": true}))
            .collect();
        let dataset = json!({
            "name": ds.name,
            "digest": ds.digest.chars().take(36).collect::<String>(),
            "source_type": "local",
            "source": json!({"uri": ds.source_uri}).to_string(),
            "schema": json!({"mlflow_colspec": colspec}).to_string(),
            "profile": json!({"num_rows": ds.num_rows, "num_elements": ds.num_rows * ds.num_cols}).to_string(),
        });
        let input = json!({
            "tags": [{"key": "mlflow.data.context", "value": "training"}],
            "dataset": dataset,
        });
        let body = json!({ "run_id": run_id, "datasets": [input] });
        self.client.post("runs/log-inputs", &body)?;
        Ok(())
    }
}

impl Tracker for Mirror {
    fn name(&self) -> &str {
        "MLflow server"
    }

    fn create_run(&self, run: &TrackedRun) -> Result<()> {
        let spec = &run.spec;
        if self.run(&spec.run_uuid).is_ok() {
            return Ok(());
        }
        let experiment_id = self.experiment(&spec.experiment)?;
        let tags = self.server_tags(spec)?;
        let first_tags: Vec<(String, String)> = tags.iter().take(MAX_TAGS).cloned().collect();
        let created = self.client.post(
            "runs/create",
            &json!({
                "experiment_id": experiment_id,
                "user_id": spec.user,
                "run_name": spec.name,
                "start_time": spec.start_ms,
                "tags": pairs(&first_tags, 8000),
            }),
        )?;
        let info = &created["run"]["info"];
        let run_id = (info["run_id"].as_str())
            .ok_or_else(|| anyhow!("runs/create answered without a run id: {created}"))?
            .to_string();
        let artifact_path = artifact_path(info);
        self.log_batch(
            &run_id,
            "tags",
            pairs(&tags[first_tags.len()..], 8000),
            MAX_TAGS,
        )?;
        self.log_batch(&run_id, "params", pairs(&spec.params, 6000), MAX_PARAMS)?;
        if let Some(ds) = &spec.dataset {
            self.log_dataset(&run_id, ds)?;
        }
        self.set_status(&run_id, RunStatus::Scheduled, None)?;
        if let (true, Some(version), Some(root)) =
            (self.client.settings.as_store, &run.version, &artifact_path)
        {
            let file = json!({"version": version, "kind": run.kind, "record": run.record});
            (self.client)
                .put_artifact(&format!("{root}/{RUN_FILE}"), file.to_string().as_bytes())?;
        }
        let server_run = ServerRun {
            run_id,
            artifact_path,
        };
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.insert(spec.run_uuid.clone(), server_run);
        Ok(())
    }

    fn start_run(&self, run_uuid: &str) -> Result<()> {
        self.set_status(&self.run(run_uuid)?.run_id, RunStatus::Running, None)
    }

    fn log_params(&self, run_uuid: &str, params: &[(String, String)]) -> Result<()> {
        let run_id = self.run(run_uuid)?.run_id;
        self.log_batch(&run_id, "params", pairs(params, 6000), MAX_PARAMS)
    }

    fn log_metrics(&self, run_uuid: &str, metrics: &[Metric]) -> Result<()> {
        let run_id = self.run(run_uuid)?.run_id;
        let items = (metrics.iter())
            .map(|m| json!({"key": m.key, "value": metric_value(m.value), "timestamp": m.timestamp_ms, "step": m.step}))
            .collect();
        self.log_batch(&run_id, "metrics", items, MAX_METRICS)
    }

    fn set_tags(&self, run_uuid: &str, tags: &[(String, String)]) -> Result<()> {
        let run_id = self.run(run_uuid)?.run_id;
        self.log_batch(&run_id, "tags", pairs(tags, 8000), MAX_TAGS)
    }

    fn log_artifact(&self, run_uuid: &str, file_name: &str, bytes: &[u8]) -> Result<()> {
        let run = self.run(run_uuid)?;
        let Some(root) = run.artifact_path else {
            bail!("the MLflow server at {} does not proxy artifacts (start it with --artifacts-destination, or without --no-serve-artifacts): {file_name} is only in the local store", self.client.settings.url);
        };
        self.client
            .put_artifact(&format!("{root}/{file_name}"), bytes)
    }

    /// On a server that is the store, a run the server has already ended is left as it is
    /// there: another host judged this one silent, marked the run KILLED and trained its
    /// config again, so this end would give the config a second FINISHED run.
    fn finish_run(&self, run_uuid: &str, status: RunStatus, end_ms: i64) -> Result<()> {
        let run_id = self.run(run_uuid)?.run_id;
        if self.client.settings.as_store {
            let there = self.client.get("runs/get", &[("run_id", &run_id)])?;
            let ended = there["run"]["info"]["status"].as_str().unwrap_or_default();
            let tags = pairs_of(&there["run"]["data"]["tags"]);
            let tag = |key: &str| {
                (tags.iter().find(|(k, _)| k == key)).map_or(String::new(), |(_, v)| v.clone())
            };
            // A sweep's parent is ended by whichever shard completes the sweep, and no host
            // judges it: its last end is the one that counts.
            let parent = tag("runner.sweep") == "parent";
            if !parent && is_ended(ended) && ended != status.as_mlflow() {
                let reason = tag("runner.killed_reason");
                bail!("run {run_uuid} is {ended} on the server already ({reason}): its end here ({}) was not sent, the server's stands", status.as_mlflow());
            }
        }
        self.set_status(&run_id, status, Some(end_ms))
    }

    /// The run's MLflow model as MLflow 3's client logs it: a logged model of the run's
    /// experiment, its files through the proxied artifact API, finalized READY, and the run's
    /// output; `runs:/<run id>/model` and `models:/m-<id>` then load it from the server.
    fn log_model(&self, run_uuid: &str, pkg: &ModelPackage) -> Result<()> {
        let run = self.run(run_uuid)?;
        let Some(root) = &run.artifact_path else {
            bail!("the MLflow server at {} does not proxy artifacts: the run's model is only in the local store", self.client.settings.url);
        };
        let experiment_id = root.split('/').next().unwrap_or_default();
        let tags = pairs(
            &[
                ("mlflow.user".into(), super::user()),
                ("mlflow.source.name".into(), pkg.source.clone()),
                ("mlflow.source.type".into(), "LOCAL".into()),
            ],
            8000,
        );
        let created = self.client.post(
            "logged-models",
            &json!({"experiment_id": experiment_id, "name": MODEL_NAME, "source_run_id": run.run_id, "tags": tags}),
        )?;
        let info = &created["model"]["info"];
        let model_id = (info["model_id"].as_str())
            .ok_or_else(|| anyhow!("logged-models answered without a model id: {created}"))?;
        let folder = artifact_path(info).ok_or_else(|| {
            anyhow!(
                "the server keeps logged model {model_id} where runner cannot upload to: {info}"
            )
        })?;
        for (name, bytes) in mlmodel::model_files(model_id, &run.run_id, super::now_ms(), pkg) {
            self.client
                .put_artifact(&format!("{folder}/{name}"), &bytes)?;
        }
        let ready = json!({"model_id": model_id, "status": 2});
        self.client
            .patch(&format!("logged-models/{model_id}"), &ready)?;
        let output = json!({"run_id": run.run_id, "models": [{"model_id": model_id, "step": 0}]});
        self.client.post("runs/outputs", &output)?;
        Ok(())
    }
}

/// Whether a run's status on the server is an end.
pub fn is_ended(status: &str) -> bool {
    matches!(status, "FINISHED" | "FAILED" | "KILLED")
}

/// A server's list of `{"key": .., "value": ..}` (a run's tags or params) as pairs.
pub fn pairs_of(v: &Value) -> Vec<(String, String)> {
    (v.as_array().into_iter().flatten())
        .filter_map(|p| Some((p["key"].as_str()?.into(), p["value"].as_str()?.into())))
        .collect()
}

/// One call of the [`Tracker`] lifecycle, queued for the sender thread.
enum Op {
    Create(Box<TrackedRun>),
    Start(String),
    Params(String, Vec<(String, String)>),
    Metrics(String, Vec<Metric>),
    Tags(String, Vec<(String, String)>),
    Artifact(String, String, Vec<u8>),
    Model(String, Box<ModelPackage>),
    Finish(String, RunStatus, i64),
}

impl Op {
    /// The store's id of the run the call is about.
    fn run(&self) -> &str {
        match self {
            Op::Create(r) => &r.spec.run_uuid,
            Op::Start(r)
            | Op::Params(r, _)
            | Op::Metrics(r, _)
            | Op::Tags(r, _)
            | Op::Artifact(r, _, _)
            | Op::Model(r, _)
            | Op::Finish(r, _, _) => r,
        }
    }

    fn apply(self, mirror: &Mirror) -> Result<()> {
        match self {
            Op::Create(run) => mirror.create_run(&run),
            Op::Start(r) => mirror.start_run(&r),
            Op::Params(r, p) => mirror.log_params(&r, &p),
            Op::Metrics(r, m) => mirror.log_metrics(&r, &m),
            Op::Tags(r, t) => mirror.set_tags(&r, &t),
            Op::Artifact(r, name, bytes) => mirror.log_artifact(&r, &name, &bytes),
            Op::Model(r, pkg) => mirror.log_model(&r, &pkg),
            Op::Finish(r, status, end) => mirror.finish_run(&r, status, end),
        }
    }
}

/// The next call to send: the first queued, with (if it logs metrics) the metrics its run
/// logged after it, up to a batch of the server's limit. Only other runs' calls are passed
/// over, so each run's calls keep their order.
fn next_op(ops: &mut VecDeque<Op>) -> Option<Op> {
    let first = ops.pop_front()?;
    let Op::Metrics(run, mut points) = first else {
        return Some(first);
    };
    let mut i = 0;
    while i < ops.len() {
        match &ops[i] {
            Op::Metrics(r, p) if *r == run && points.len() + p.len() <= MAX_METRICS => {
                if let Some(Op::Metrics(_, p)) = ops.remove(i) {
                    points.extend(p);
                }
            }
            op if op.run() == run => break,
            _ => i += 1,
        }
    }
    Some(Op::Metrics(run, points))
}

#[derive(Default)]
struct Queue {
    ops: VecDeque<Op>,
    closed: bool,
    /// What the server did not take, in words.
    failed: Vec<String>,
    /// Set once a call found the server gone for the whole retry window: the calls after it
    /// are not sent (each would wait that long again), only counted.
    down: bool,
    skipped: usize,
    /// A call is being sent.
    busy: bool,
}

type Shared = Arc<(Mutex<Queue>, Condvar)>;

/// The tracker: every call is queued and sent in order by one thread, so training never waits
/// on the server (a request takes 10-15 ms on a local server, and a network's round trip on
/// top); metrics logged while a request is out go in the next batch. `close` waits until
/// everything is sent (or has failed after its retries).
pub struct MlflowServer {
    mirror: Arc<Mirror>,
    queue: Shared,
    sender: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn send_queued(mirror: Arc<Mirror>, queue: Shared) {
    let (lock, ready) = &*queue;
    loop {
        let op = {
            let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
            while q.ops.is_empty() && !q.closed {
                q = ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            match next_op(&mut q.ops) {
                None => return,
                Some(_) if q.down => {
                    q.skipped += 1;
                    ready.notify_all();
                    continue;
                }
                Some(op) => {
                    q.busy = true;
                    op
                }
            }
        };
        let sent = op.apply(&mirror);
        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
        q.busy = false;
        if let Err(e) = sent {
            q.down |= e.downcast_ref::<ServerGone>().is_some();
            q.failed.push(format!("{e:#}"));
        }
        ready.notify_all();
    }
}

impl MlflowServer {
    /// Checks that the server answers (and takes the credentials) before anything is written,
    /// then starts the sender.
    pub fn open(settings: ServerSettings) -> Result<MlflowServer> {
        let mirror = Arc::new(Mirror::open(settings)?);
        let queue: Shared = Arc::default();
        let sender = {
            let (mirror, queue) = (mirror.clone(), queue.clone());
            std::thread::Builder::new()
                .name("mlflow-server".into())
                .spawn(move || send_queued(mirror, queue))?
        };
        Ok(MlflowServer {
            mirror,
            queue,
            sender: Mutex::new(Some(sender)),
        })
    }

    /// The server's id of the store's run `run_uuid` (see [`Mirror::find_run`]).
    pub fn find_run(&self, run_uuid: &str, experiment: &str) -> Result<Option<String>> {
        self.mirror.find_run(run_uuid, experiment)
    }

    fn push(&self, op: Op) -> Result<()> {
        let (lock, ready) = &*self.queue;
        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
        if q.closed {
            bail!("the MLflow server's sender is closed");
        }
        q.ops.push_back(op);
        ready.notify_one();
        Ok(())
    }

    /// Waits until every call queued so far has been sent (or has failed).
    fn flush(&self) {
        let (lock, ready) = &*self.queue;
        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
        while (!q.ops.is_empty() || q.busy) && !q.closed {
            q = ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Sends what is queued, then stops the sender; what failed, in words.
    fn drain(&self) -> Vec<String> {
        let (lock, ready) = &*self.queue;
        lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        ready.notify_all();
        let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = sender {
            let _ = handle.join();
        }
        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut failed = std::mem::take(&mut q.failed);
        if q.skipped > 0 {
            failed.push(format!(
                "{} later calls were not sent: the server was gone",
                q.skipped
            ));
        }
        failed
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        for note in self.drain() {
            eprintln!("MLflow server: {note}");
        }
    }
}

impl Tracker for MlflowServer {
    fn name(&self) -> &str {
        "MLflow server"
    }
    fn create_run(&self, run: &TrackedRun) -> Result<()> {
        self.push(Op::Create(Box::new(run.clone())))
    }
    fn start_run(&self, run_uuid: &str) -> Result<()> {
        self.push(Op::Start(run_uuid.into()))
    }
    fn log_params(&self, run_uuid: &str, params: &[(String, String)]) -> Result<()> {
        self.push(Op::Params(run_uuid.into(), params.to_vec()))
    }
    fn log_metrics(&self, run_uuid: &str, metrics: &[Metric]) -> Result<()> {
        self.push(Op::Metrics(run_uuid.into(), metrics.to_vec()))
    }
    fn set_tags(&self, run_uuid: &str, tags: &[(String, String)]) -> Result<()> {
        self.push(Op::Tags(run_uuid.into(), tags.to_vec()))
    }
    fn log_artifact(&self, run_uuid: &str, file_name: &str, bytes: &[u8]) -> Result<()> {
        self.push(Op::Artifact(
            run_uuid.into(),
            file_name.into(),
            bytes.to_vec(),
        ))
    }
    fn log_model(&self, run_uuid: &str, model: &ModelPackage) -> Result<()> {
        self.push(Op::Model(run_uuid.into(), Box::new(model.clone())))
    }
    /// On a server that is the store, waits until the run's end has reached it: a shard that
    /// then reads the server (is every config or trial done?) sees its own runs as they are.
    fn finish_run(&self, run_uuid: &str, status: RunStatus, end_ms: i64) -> Result<()> {
        self.push(Op::Finish(run_uuid.into(), status, end_ms))?;
        if self.mirror.client.settings.as_store {
            self.flush();
        }
        Ok(())
    }
    fn record_summary(&self, run_uuid: &str, summary: &Value) -> Result<()> {
        if !self.mirror.client.settings.as_store {
            return Ok(());
        }
        let bytes = summary.to_string().into_bytes();
        self.push(Op::Artifact(run_uuid.into(), SUMMARY_FILE.into(), bytes))
    }
    /// Waits until every queued call is sent; says what the server did not take: a mirror's
    /// runs are complete in the store; a store server's are in this host's replica, which sends
    /// them again when a runner command next opens it.
    fn close(&self) -> Vec<String> {
        let kept = match self.mirror.client.settings.as_store {
            true => "the run is in this host's replica; its next runner command sends it again",
            false => "the run is complete in the store",
        };
        (self.drain().into_iter())
            .map(|e| format!("MLflow server: {e} ({kept})"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(run: &str, n: usize) -> Op {
        let m = Metric {
            key: "loss".into(),
            value: 1.0,
            step: 0,
            timestamp_ms: 0,
        };
        Op::Metrics(run.into(), vec![m; n])
    }

    #[test]
    fn queued_metrics_of_a_run_go_in_one_batch_without_passing_its_other_calls() {
        let mut ops: VecDeque<Op> = VecDeque::from([
            metrics("a", 3),
            metrics("b", 2),
            metrics("a", 4),
            Op::Start("b".into()),
            Op::Finish("a".into(), RunStatus::Finished, 1),
            metrics("a", 5),
        ]);
        let sent: Vec<(String, usize)> = std::iter::from_fn(|| next_op(&mut ops))
            .map(|op| match op {
                Op::Metrics(r, p) => (r, p.len()),
                other => (format!("{}:call", other.run()), 0),
            })
            .collect();
        let expected = [("a", 7), ("b", 2), ("b:call", 0), ("a:call", 0), ("a", 5)];
        let expected: Vec<(String, usize)> =
            expected.iter().map(|(r, n)| (r.to_string(), *n)).collect();
        assert_eq!(sent, expected);
        let mut full = VecDeque::from([metrics("a", 900), metrics("a", 200)]);
        assert!(matches!(next_op(&mut full), Some(Op::Metrics(_, p)) if p.len() == 900));
    }

    #[test]
    fn metric_values_follow_protobuf_json() {
        assert_eq!(metric_value(0.5), json!(0.5));
        assert_eq!(metric_value(f64::NAN), json!("NaN"));
        assert_eq!(metric_value(f64::NEG_INFINITY), json!("-Infinity"));
    }

    #[test]
    fn a_repeated_key_is_sent_once_with_its_last_value() {
        let items =
            [("a", "1"), ("b", "2"), ("a", "3")].map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(
            pairs(&items, 10),
            vec![
                json!({"key": "b", "value": "2"}),
                json!({"key": "a", "value": "3"})
            ]
        );
    }

    /// A server on loopback that answers each request with the next of `answers` (HTTP status,
    /// JSON body) and sends back the paths it was asked for when the answers run out.
    fn scripted_server(
        answers: Vec<(u16, Value)>,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let serve = std::thread::spawn(move || {
            let mut paths = Vec::new();
            for (code, body) in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let (mut head, mut line) = (String::new(), String::new());
                while reader.read_line(&mut line).unwrap() > 2 {
                    head.push_str(&line.to_lowercase());
                    line.clear();
                }
                let length = (head.lines())
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |n| n.trim().parse().unwrap());
                reader.read_exact(&mut vec![0; length]).unwrap();
                paths.push(head.split_whitespace().nth(1).unwrap().to_string());
                let body = body.to_string();
                let answer = format!("HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                reader.get_mut().write_all(answer.as_bytes()).unwrap();
            }
            paths
        });
        (url, serve)
    }

    fn mirror_of(url: &str) -> Mirror {
        Mirror {
            client: RestClient::new(settings(url, "test.toml").unwrap()).unwrap(),
            experiments: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
        }
    }

    fn wine_input() -> crate::track::DatasetInput {
        crate::track::DatasetInput {
            name: "wine-v1".into(),
            digest: "dc71b914".into(),
            source_uri: "builtin:winequality-red".into(),
            schema: vec![("alcohol".into(), "double".into())],
            num_rows: 1599,
            num_cols: 12,
        }
    }

    #[test]
    fn a_dataset_another_host_inserted_first_is_linked_on_a_second_try() {
        let race = json!({"error_code": "BAD_REQUEST", "message": "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest"});
        let (url, server) = scripted_server(vec![(400, race), (200, json!({}))]);
        mirror_of(&url).log_dataset("r1", &wine_input()).unwrap();
        let asked = server.join().unwrap();
        assert_eq!(asked, ["/api/2.0/mlflow/runs/log-inputs"; 2]);
    }

    #[test]
    fn a_dataset_the_server_refuses_for_another_reason_is_not_sent_again() {
        let refused =
            json!({"error_code": "INVALID_PARAMETER_VALUE", "message": "Dataset name too long"});
        let (url, server) = scripted_server(vec![(400, refused)]);
        let e = mirror_of(&url)
            .log_dataset("r1", &wine_input())
            .unwrap_err();
        assert!(e.to_string().contains("Dataset name too long"), "{e}");
        assert_eq!(server.join().unwrap().len(), 1);
    }

    #[test]
    fn long_values_are_cut_to_the_servers_limit() {
        let long = vec![("k".to_string(), "x".repeat(7000))];
        assert_eq!(pairs(&long, 6000)[0]["value"].as_str().unwrap().len(), 6000);
    }
}
