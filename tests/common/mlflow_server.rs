//! A real `mlflow server` (PyPI mlflow 3.17.2, from the MLflow venv of `tests/setup.sh`) for
//! the tests that talk to one, started on loopback and killed with its workers when dropped.
#![allow(dead_code)]
use super::common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A process group killed when dropped: a server and its workers.
pub struct Group(pub Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &pgid]).status();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `GET path` on the port answers 200.
pub fn answers(port: u16, path: &str) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut head = [0u8; 12];
    s.write_all(req.as_bytes()).is_ok() && s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

pub fn wait_until_up(port: u16, path: &str) {
    let started = Instant::now();
    while !answers(port, path) {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "port {port} never answered {path}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A real `mlflow server` with its SQLite store and proxied artifacts in `dir`.
pub fn mlflow_server(dir: &Path, port: u16) -> Group {
    let mlflow = mlflow_python().with_file_name("mlflow");
    let log = std::fs::File::create(dir.join(format!("server-{port}.log"))).unwrap();
    let child = Command::new(mlflow)
        .arg("server")
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("server.db").display()))
        .arg("--artifacts-destination")
        .arg(dir.join("server-artifacts"))
        .args(["--host", "127.0.0.1", "--workers", "1", "--port"])
        .arg(port.to_string())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    let group = Group(child);
    wait_until_up(port, "/health");
    group
}

/// Every experiment and run on the server, as the real MLflow client reads them.
pub fn read_server(url: &str) -> Value {
    json_of(
        Command::new(mlflow_python())
            .arg(repo().join("tests/mlflow_read.py"))
            .arg(url),
    )
}

/// Runs a checking proxy (tests/auth_proxy.py) on `port` in front of `upstream`.
pub fn auth_proxy(port: u16, upstream: &str) -> Group {
    proxy(port, upstream, false)
}

/// [`auth_proxy`] serving HTTPS with the test certificate of tests/data/tls (its authority:
/// `tls-ca.pem`).
pub fn tls_auth_proxy(port: u16, upstream: &str) -> Group {
    proxy(port, upstream, true)
}

fn proxy(port: u16, upstream: &str, tls: bool) -> Group {
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("tests/auth_proxy.py"))
        .arg(port.to_string())
        .arg(upstream)
        .args(["alice", "s3cret", "tok-123"]);
    if tls {
        let dir = repo().join("tests/data/tls");
        cmd.arg(dir.join("tls-server.pem"))
            .arg(dir.join("tls-server.key"));
    }
    let child = cmd.process_group(0).spawn().unwrap();
    let group = Group(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "proxy never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    group
}

/// A real `mlflow server` on a free port with its files in a new temporary folder: the folder,
/// the port, the server.
pub fn server_in_temp_folder() -> (tempfile::TempDir, u16, Group) {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = mlflow_server(root.path(), port);
    (root, port, server)
}
