//! A local W&B server for the tests: speaks the protocol runner uses (GraphQL UpsertBucket,
//! CreateRunFiles, RunResumeStatus; file_stream; upload PUTs), checks the API key, records every
//! request and every history line by offset, and fails on purpose when told to.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum FaultKind {
    Status(u16),
    TooMany { retry_after_s: u64 },
    Drop,
    Slow(Duration),
}

#[derive(Clone, Debug)]
pub struct Fault {
    /// Applies to requests whose path (or GraphQL operation) contains this.
    pub matching: String,
    pub kind: FaultKind,
    /// How many requests it applies to (usize::MAX: all).
    pub times: usize,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Default, Debug)]
pub struct RunRecord {
    pub upserts: Vec<Value>,
    pub entity: String,
    pub project: String,
    /// History line by offset, and how many times each offset was received.
    pub history: BTreeMap<usize, String>,
    pub received: BTreeMap<usize, usize>,
    /// Offsets that arrived with content different from what was stored (must never happen).
    pub conflicts: usize,
    /// Posts whose first offset left a gap after the lines received so far (must never happen).
    pub gaps: usize,
    pub summary: Option<Value>,
    pub files: BTreeMap<String, Vec<u8>>,
    pub upload_headers_ok: bool,
    pub exitcode: Option<i64>,
    pub complete: bool,
}

#[derive(Default)]
pub struct State {
    pub key: String,
    pub requests: Vec<Request>,
    pub runs: BTreeMap<String, RunRecord>,
    pub faults: Vec<Fault>,
    /// Uploads that carried an Authorization header (must never happen).
    pub auth_on_upload: usize,
}

pub struct WandbServer {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64(input: &[u8]) -> String {
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl WandbServer {
    pub fn start(key: &str) -> WandbServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            key: key.to_string(),
            ..Default::default()
        }));
        let (st, u) = (state.clone(), url.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (st, u) = (st.clone(), u.clone());
                std::thread::spawn(move || serve(stream, st, u));
            }
        });
        WandbServer { url, state }
    }

    pub fn fail(&self, matching: &str, kind: FaultKind, times: usize) {
        self.state.lock().unwrap().faults.push(Fault {
            matching: matching.into(),
            kind,
            times,
        });
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn respond(stream: &mut TcpStream, status: u16, extra: &[(&str, String)], body: &Value) {
    let text = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        text.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&text);
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.flush();
}

fn serve(stream: TcpStream, state: Arc<Mutex<State>>, url: String) {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_request(&mut reader) {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let op = body["operationName"].as_str().unwrap_or("").to_string();
        // Faults first.
        let fault = {
            let mut st = state.lock().unwrap();
            st.requests.push(req.clone());
            let mut hit = None;
            for f in st.faults.iter_mut() {
                if f.times > 0
                    && (req.path.contains(&f.matching) || (!op.is_empty() && op == f.matching))
                {
                    if f.times != usize::MAX {
                        f.times -= 1;
                    }
                    hit = Some(f.kind.clone());
                    break;
                }
            }
            hit
        };
        match fault {
            Some(FaultKind::Status(code)) => {
                respond(&mut writer, code, &[], &json!({"error": "injected"}));
                continue;
            }
            Some(FaultKind::TooMany { retry_after_s }) => {
                respond(
                    &mut writer,
                    429,
                    &[("Retry-After", retry_after_s.to_string())],
                    &json!({"error": "slow down"}),
                );
                continue;
            }
            Some(FaultKind::Drop) => return,
            Some(FaultKind::Slow(d)) => std::thread::sleep(d),
            None => {}
        }
        let auth = req
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.clone());
        let mut st = state.lock().unwrap();
        let expected = format!("Basic {}", base64(format!("api:{}", st.key).as_bytes()));
        if req.method == "PUT" && req.path.starts_with("/upload/") {
            if auth.is_some() {
                st.auth_on_upload += 1;
            }
            let rest: Vec<&str> = req
                .path
                .trim_start_matches("/upload/")
                .splitn(2, '/')
                .collect();
            let run = st.runs.entry(rest[0].to_string()).or_default();
            run.upload_headers_ok = req
                .headers
                .iter()
                .any(|(k, v)| k == "x-upload-token" && v == "ok");
            run.files.insert(rest[1].to_string(), req.body.clone());
            drop(st);
            respond(&mut writer, 200, &[], &json!({}));
            continue;
        }
        if auth.as_deref() != Some(expected.as_str()) {
            drop(st);
            respond(&mut writer, 401, &[], &json!({"error": "unauthorized"}));
            continue;
        }
        let answer = if req.path == "/graphql" {
            let v = &body["variables"];
            match op.as_str() {
                "UpsertBucket" => {
                    let name = v["name"].as_str().unwrap_or("").to_string();
                    let run = st.runs.entry(name.clone()).or_default();
                    run.upserts.push(v.clone());
                    run.entity = v["entity"].as_str().unwrap_or("test-entity").to_string();
                    run.project = v["project"].as_str().unwrap_or("").to_string();
                    json!({"data": {"upsertBucket": {"bucket": {"id": format!("b-{name}"), "name": name, "displayName": v["displayName"],
                        "project": {"id": "p", "name": v["project"], "entity": {"id": "e", "name": run.entity}}, "historyLineCount": run.history.len()}, "inserted": run.upserts.len() == 1}}})
                }
                "CreateRunFiles" => {
                    let run = v["run"].as_str().unwrap_or("");
                    let files: Vec<Value> = v["files"].as_array().cloned().unwrap_or_default().iter()
                        .map(|f| json!({"name": f, "uploadUrl": format!("{url}/upload/{run}/{}", f.as_str().unwrap_or(""))}))
                        .collect();
                    json!({"data": {"createRunFiles": {"runID": run, "uploadHeaders": ["X-Upload-Token:ok"], "files": files}}})
                }
                "RunResumeStatus" => {
                    let name = v["name"].as_str().unwrap_or("");
                    match st.runs.get(name) {
                        Some(r) => {
                            json!({"data": {"model": {"id": "p", "name": v["project"], "entity": {"id": "e", "name": r.entity},
                            "bucket": {"id": format!("b-{name}"), "name": name, "historyLineCount": r.history.len()}}}})
                        }
                        None => json!({"data": {"model": {"id": "p", "bucket": null}}}),
                    }
                }
                other => json!({"errors": [{"message": format!("unknown operation {other}")}]}),
            }
        } else if req.path.ends_with("/file_stream") {
            let parts: Vec<&str> = req.path.split('/').collect();
            let run = st
                .runs
                .entry(parts[parts.len() - 2].to_string())
                .or_default();
            if let Some(h) = body["files"]["wandb-history.jsonl"].as_object() {
                let offset = h["offset"].as_u64().unwrap() as usize;
                if offset > run.history.len() {
                    run.gaps += 1;
                }
                for (i, line) in h["content"].as_array().unwrap().iter().enumerate() {
                    let line = line.as_str().unwrap().to_string();
                    *run.received.entry(offset + i).or_default() += 1;
                    if let Some(old) = run.history.get(&(offset + i)) {
                        if *old != line {
                            run.conflicts += 1;
                        }
                    }
                    run.history.insert(offset + i, line);
                }
            }
            if let Some(s) = body["files"]["wandb-summary.json"]["content"][0].as_str() {
                run.summary = serde_json::from_str(s).ok();
            }
            if body["complete"] == true {
                run.complete = true;
                run.exitcode = body["exitcode"].as_i64();
            }
            json!({})
        } else {
            json!({"error": "not found"})
        };
        drop(st);
        respond(&mut writer, 200, &[], &answer);
    }
}
