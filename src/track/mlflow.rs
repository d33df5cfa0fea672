//! An MLflow tracking store in SQLite, written with plain SQL: what the real MLflow (3.17.2, schema
//! revision dc11669786a5) reads with no warning. A new store gets MLflow's complete schema in one
//! transaction; an existing store that MLflow made is written into through the core tables only,
//! naming no column that older MLflow versions lack. Runner's own registry (ETL versions v1..,
//! training runs t1..) lives in two `runner_` tables of the same file, so a version number and its
//! MLflow run are created in one transaction.

pub mod models;
pub mod replica;
pub mod sweeps;

use super::{
    owner, server_registry, DatasetInput, Metric, RunSpec, RunStatus, TrackedRun, Tracker,
};
use anyhow::{anyhow, bail, Context, Result};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const MLFLOW_SCHEMA: &str = include_str!("mlflow_schema.sql");
pub const SCHEMA_REVISION: &str = "dc11669786a5";

const RUNNER_TABLES: &str = "
CREATE TABLE IF NOT EXISTS runner_etl_versions (
    version INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    record_json TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runner_training_runs (
    version INTEGER PRIMARY KEY,
    run_uuid TEXT NOT NULL,
    experiment_id INTEGER NOT NULL,
    etl_version INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    record_json TEXT NOT NULL,
    summary_json TEXT,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runner_run_owners (
    run_uuid TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    process_start TEXT NOT NULL,
    heartbeat_ms INTEGER NOT NULL
);
";

/// MLflow schema revisions runner writes into: from 7f2a7d5fae7d (MLflow 2.4, which added the
/// dataset tables runner writes) to dc11669786a5 (MLflow 3.17.2, whose schema new stores get),
/// in MLflow's migration order. Runner names no column that the oldest of them lacks.
pub const COMPATIBLE_REVISIONS: &[&str] = &[
    "7f2a7d5fae7d",
    "2d6e25af4d3e",
    "acf3f17fdcc7",
    "867495a8f9d4",
    "5b0e9adcef9c",
    "4465047574b1",
    "f5a4f2784254",
    "0584bdc529eb",
    "400f98739977",
    "6953534de441",
    "bda7b8c39065",
    "cbc13b556ace",
    "770bee3ae1dd",
    "a1b2c3d4e5f6",
    "de4033877273",
    "1a0cddfcaa16",
    "534353b11cbc",
    "71994744cf8e",
    "3da73c924c2f",
    "bf29a5ff90ea",
    "1bd49d398cd23",
    "b7c8d9e0f1a2",
    "5d2d30f0abce",
    "c9d4e5f6a7b8",
    "2c33131f4dae",
    "d3e4f5a6b7c8",
    "d0e1f2a3b4c5",
    "c8d9e0f1a2b3",
    "1b5f0d9ad7c1",
    "e1f2a3b4c5d6",
    "76601a5f987d",
    "c3d6457b6d8a",
    "a5b4c3d2e1f0",
    "ae8bbe7743c9",
    "7d34483879f0",
    "da6fb0208061",
    "89d3d66ed43f",
    "b7e4c1a90f23",
    "a8b9c0d1e2f3",
    "c1d2e3f4a5b6",
    "c3d9e7f1a2b4",
    "6f8d9c3b2a1e",
    "1971f2d9a75b",
    "17e22815139b",
    "b7e2c1a4d9f3",
    "75868b020152",
    "dc11669786a5",
];

/// The MLflow tables runner writes into.
const WRITTEN_TABLES: &[&str] = &[
    "experiments",
    "experiment_tags",
    "runs",
    "tags",
    "params",
    "metrics",
    "latest_metrics",
    "datasets",
    "inputs",
    "input_tags",
];

/// Resolves `sqlite:///rel/path.db` (relative to the working directory) or
/// `sqlite:////abs/path.db`, as MLflow does.
pub fn path_from_uri(uri: &str) -> Result<PathBuf> {
    let rest = uri
        .strip_prefix("sqlite:///")
        .ok_or_else(|| anyhow!("tracking URI \"{uri}\" is not supported; use sqlite:///relative/path.db, sqlite:////absolute/path.db or an MLflow tracking server http(s)://host:port"))?;
    if rest.is_empty() {
        bail!("tracking URI \"{uri}\" names no file");
    }
    Ok(PathBuf::from(rest))
}

pub struct MlflowStore {
    conn: Mutex<Connection>,
    pub path: PathBuf,
    root: PathBuf,
}

/// The columns every training-run query starts with, in this order: version, run id, ETL
/// version, name, kind, status, experiment name (from [`RUNS_WITH_EXPERIMENT`]).
const RUN_HEAD: &str =
    "t.version, t.run_uuid, t.etl_version, t.name, t.kind, t.status, coalesce(e.name, '')";
const RUNS_WITH_EXPERIMENT: &str =
    "runner_training_runs t LEFT JOIN experiments e ON e.experiment_id = t.experiment_id";

/// A training run as listed: what `runner runs` shows and filters on.
#[derive(Debug, Clone)]
pub struct RunListing {
    pub version: i64,
    pub run_uuid: String,
    pub etl_version: i64,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub experiment: String,
    pub primary_metric: String,
    /// The summary's `metrics` object (null for a run that has not finished).
    pub metrics: serde_json::Value,
    /// A search's trial its pruner stopped (status KILLED).
    pub pruned: bool,
}

/// A row of runner's training-run registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingRunRow {
    pub version: i64,
    pub run_uuid: String,
    pub etl_version: i64,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub record: serde_json::Value,
    pub summary: Option<serde_json::Value>,
    pub created_ms: i64,
    /// The MLflow experiment's name.
    pub experiment: String,
}

/// A refusal to use a store: the user's to fix (another file, another revision), exit 2.
fn refuse(path: &Path, message: String) -> anyhow::Error {
    crate::config::ConfigError::new(path.display().to_string(), message).into()
}

fn table_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
    let names = st.query_map([], |r| r.get(0))?;
    names.collect()
}

/// Whether runner may write into the file at `path`, decided with reads alone: an empty file or
/// an MLflow store at a compatible revision with every table runner writes. Anything else is
/// refused before the first write, so a refused file is left exactly as it was.
fn check_before_writing(conn: &Connection, path: &Path) -> Result<()> {
    let tables = table_names(conn).map_err(|e| {
        refuse(
            path,
            format!("is not an SQLite database ({e}); refusing to write into it"),
        )
    })?;
    if tables.is_empty() {
        return Ok(());
    }
    if !tables.iter().any(|t| t == "alembic_version") {
        return Err(refuse(path, "is an SQLite file but not an MLflow tracking store (no alembic_version table); refusing to write into it".into()));
    }
    let revision: String = conn
        .query_row("SELECT version_num FROM alembic_version", [], |r| r.get(0))
        .map_err(|e| {
            refuse(
                path,
                format!("has no readable MLflow schema revision ({e})"),
            )
        })?;
    if !COMPATIBLE_REVISIONS.contains(&revision.as_str()) {
        return Err(refuse(path, format!(
            "is an MLflow store at schema revision {revision}, which this runner does not know; it writes revision {SCHEMA_REVISION} (MLflow 3.17.2) and the {} revisions back to 7f2a7d5fae7d (MLflow 2.4). A newer store needs a newer runner; an older one can be upgraded with `mlflow db upgrade`",
            COMPATIBLE_REVISIONS.len() - 1
        )));
    }
    let missing: Vec<&str> = WRITTEN_TABLES
        .iter()
        .copied()
        .filter(|t| !tables.iter().any(|x| x == t))
        .collect();
    if !missing.is_empty() {
        return Err(refuse(path, format!(
            "is an MLflow store at revision {revision} but lacks the tables {}; refusing to write into a damaged store",
            missing.join(", ")
        )));
    }
    Ok(())
}

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)
        .with_context(|| format!("cannot open tracking store {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(20))?;
    check_before_writing(&conn, path)?;
    // WAL: readers (the MLflow UI) never block the writer, and a commit needs no fsync of the
    // whole database (synchronous = NORMAL keeps it consistent after a crash). MLflow reads and
    // writes WAL stores as they are. Checkpoints (which do fsync) run every 20000 pages rather
    // than every 1000, and when the last connection closes: a third of the write time went there.
    // Switching a new file to WAL needs the file to itself: when another runner holds it (it is
    // creating the schema), SQLite answers "locked" at once rather than waiting, so wait here.
    let started = std::time::Instant::now();
    loop {
        let set = conn.execute_batch(
            "PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 20000;",
        );
        match set {
            Ok(()) => return Ok(conn),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && started.elapsed() < std::time::Duration::from_secs(20) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot set up tracking store {}", path.display()))
            }
        }
    }
}

/// `file:` URI of a path, with the characters a URI gives meaning to escaped.
fn file_uri(path: &Path, query: &str) -> String {
    let mut out = String::from("file:");
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'%' | b'?' | b'#' => out.push_str(&format!("%{b:02X}")),
            _ => out.push(*b as char),
        }
    }
    format!("{out}?{query}")
}

fn writable(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated path. access() on a read-only mount fails with EROFS
    // even for root, who ignores file modes.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

impl MlflowStore {
    /// Opens the store for writing, creating it (MLflow's full schema plus runner's tables) if
    /// missing. A file that is not a compatible MLflow store is refused before anything is
    /// written. Runs of this store whose owner is gone are marked KILLED.
    pub fn open(path: &Path) -> Result<MlflowStore> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create folder {}", parent.display()))?;
            }
        }
        let mut conn = open_conn(path)?;
        let root = std::fs::canonicalize(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Decided again inside the write lock: another runner may have created the schema since
        // the file was checked.
        let has_schema = tx.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'",
            [],
            |r| r.get::<_, i64>(0),
        )? > 0;
        if !has_schema {
            tx.execute_batch(MLFLOW_SCHEMA)
                .context("loading MLflow's schema")?;
            let now = super::now_ms();
            let loc = root.join("mlruns").join("0");
            tx.execute(
                "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time) VALUES (0, 'Default', ?1, 'active', ?2, ?2)",
                params![loc.display().to_string(), now],
            )?;
        }
        tx.execute_batch(RUNNER_TABLES)?;
        tx.commit()
            .with_context(|| format!("cannot write tracking store {}", path.display()))?;
        let store = MlflowStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            root,
        };
        store.reconcile()?;
        Ok(store)
    }

    /// Opens an existing store for writing; a missing file is an error, not a new store.
    pub fn open_existing(path: &Path) -> Result<MlflowStore> {
        Self::require_file(path)?;
        Self::open(path)
    }

    /// Opens an existing store for reading only: nothing in the file changes (no journal mode,
    /// no tables), and it works on read-only media.
    pub fn open_read_only(path: &Path) -> Result<MlflowStore> {
        Self::refresh_replica_once(path)?;
        Self::require_file(path)?;
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // On read-only media SQLite cannot make the WAL index a WAL-mode store needs, even to
        // read: `immutable` tells it that nothing can change the file there.
        let query = if writable(dir) {
            "mode=ro"
        } else {
            "immutable=1"
        };
        let conn = Connection::open_with_flags(file_uri(path, query), flags)
            .with_context(|| format!("cannot open tracking store {} to read", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(20))?;
        let mut tables = table_names(&conn)
            .with_context(|| format!("cannot read tracking store {}", path.display()))?;
        // A file with no table at all may be a store another runner is creating this moment
        // (the file exists before its schema's transaction commits): give it a moment.
        let started = std::time::Instant::now();
        while tables.is_empty() && started.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            tables = table_names(&conn)?;
        }
        if !tables.iter().any(|t| t == "runs") {
            return Err(refuse(
                path,
                "is not an MLflow tracking store (no runs table)".into(),
            ));
        }
        let root = std::fs::canonicalize(dir)?;
        Ok(MlflowStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            root,
        })
    }

    /// A replica of a server is brought up to date before this process first reads it (later
    /// reads in the same process see what it wrote, and what the sweep's own refreshes copied).
    fn refresh_replica_once(path: &Path) -> Result<()> {
        static DONE: std::sync::OnceLock<Mutex<std::collections::HashSet<PathBuf>>> =
            std::sync::OnceLock::new();
        if server_registry::bound_url(path)?.is_none() {
            return Ok(());
        }
        let done = DONE.get_or_init(Default::default);
        if !done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf())
        {
            return Ok(());
        }
        Self::open(path)?.refresh()
    }

    fn require_file(path: &Path) -> Result<()> {
        if !path.is_file() {
            bail!(
                "tracking store {} does not exist; run `runner sweep` first or pass --tracking-uri",
                path.display()
            );
        }
        Ok(())
    }

    fn has_table(&self, name: &str) -> Result<bool> {
        Ok(self.lock().query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )? > 0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn schema_revision(&self) -> Result<String> {
        Ok(self
            .lock()
            .query_row("SELECT version_num FROM alembic_version", [], |r| r.get(0))?)
    }

    /// Finds or creates the experiment; returns (id, artifact location).
    pub fn experiment(&self, name: &str) -> Result<(i64, String)> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: Option<(i64, Option<String>, String)> = tx
            .query_row(
                "SELECT experiment_id, artifact_location, lifecycle_stage FROM experiments WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let out = match found {
            Some((_, _, stage)) if stage != "active" => {
                bail!("experiment \"{name}\" is deleted in the store; restore it in MLflow or choose another name")
            }
            Some((id, loc, _)) => (
                id,
                loc.unwrap_or_else(|| {
                    self.root
                        .join("mlruns")
                        .join(id.to_string())
                        .display()
                        .to_string()
                }),
            ),
            None => {
                let now = super::now_ms();
                tx.execute(
                    "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time) VALUES (?1, '', 'active', ?2, ?2)",
                    params![name, now],
                )?;
                let id = tx.last_insert_rowid();
                let loc = self
                    .root
                    .join("mlruns")
                    .join(id.to_string())
                    .display()
                    .to_string();
                tx.execute(
                    "UPDATE experiments SET artifact_location = ?1 WHERE experiment_id = ?2",
                    params![loc, id],
                )?;
                (id, loc)
            }
        };
        // The MLflow UI files experiments by this tag; without it, runner's experiments appear
        // under the GenAI navigation.
        tx.execute(
            "INSERT OR IGNORE INTO experiment_tags (key, value, experiment_id) VALUES ('mlflow.experimentKind', 'custom_model_development', ?1)",
            [out.0],
        )?;
        tx.commit()?;
        Ok(out)
    }

    /// Returns the ETL version recorded under `key`, or allocates the next number for it.
    /// Runs in one IMMEDIATE transaction, so two processes never get the same number.
    pub fn etl_version(&self, key: &str, record: &serde_json::Value) -> Result<(i64, bool)> {
        if let Some(registry) = self.server()? {
            return self.claim_etl_version(&registry, key, record);
        }
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(v) = tx
            .query_row(
                "SELECT version FROM runner_etl_versions WHERE key = ?1",
                [key],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
        {
            tx.commit()?;
            return Ok((v, false));
        }
        let next: i64 = tx.query_row(
            "SELECT coalesce(max(version), 0) + 1 FROM runner_etl_versions",
            [],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO runner_etl_versions (version, key, record_json, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![next, key, record.to_string(), super::now_ms()],
        )?;
        tx.commit()?;
        Ok((next, true))
    }

    /// [`MlflowStore::etl_version`] of a replica: the number is claimed on the server (the
    /// one `key` holds there already, else the next), and the record is stored there.
    fn claim_etl_version(
        &self,
        registry: &server_registry::ServerRegistry,
        key: &str,
        record: &serde_json::Value,
    ) -> Result<(i64, bool)> {
        // Known here already (made by this host, or copied in by a refresh): no request.
        let here = self
            .lock()
            .query_row(
                "SELECT version FROM runner_etl_versions WHERE key = ?1",
                [key],
                |r| r.get::<_, i64>(0),
            )
            .optional()?;
        if let Some(v) = here {
            return Ok((v, false));
        }
        let known = registry.numbers("v")?;
        let had = (known.iter())
            .find(|(_, k)| k.as_str() == key)
            .map(|(v, _)| *v);
        let (v, record) = match had {
            Some(v) => (
                v,
                serde_json::from_slice(&registry.get(&replica::etl_file(v))?)?,
            ),
            None => {
                let v = registry.claim_number("v", key, None)?;
                registry.put(&replica::etl_file(v), record.to_string().as_bytes())?;
                (v, record.clone())
            }
        };
        self.lock().execute(
            "INSERT OR IGNORE INTO runner_etl_versions (version, key, record_json, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![v, key, record.to_string(), super::now_ms()],
        )?;
        Ok((v, had.is_none()))
    }

    pub fn etl_record(&self, version: i64) -> Result<Option<serde_json::Value>> {
        let conn = self.lock();
        let rec: Option<String> = conn
            .query_row(
                "SELECT record_json FROM runner_etl_versions WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?;
        Ok(rec.map(|s| serde_json::from_str(&s)).transpose()?)
    }

    /// The record of ETL version `version`, or an error that lists the versions the store has.
    pub fn require_etl_record(&self, version: i64) -> Result<serde_json::Value> {
        if let Some(rec) = self.etl_record(version)? {
            return Ok(rec);
        }
        let known: Vec<String> = self
            .etl_versions()?
            .iter()
            .map(|(v, _)| format!("v{v}"))
            .collect();
        bail!(
            "ETL version v{version} is not in {}; known: {}",
            server_registry::store_label(&self.path),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    }

    pub fn etl_versions(&self) -> Result<Vec<(i64, serde_json::Value)>> {
        let conn = self.lock();
        let mut st =
            conn.prepare("SELECT version, record_json FROM runner_etl_versions ORDER BY version")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (v, s) = row?;
            out.push((v, serde_json::from_str(&s)?));
        }
        Ok(out)
    }

    /// Allocates training versions for `runs` and creates their MLflow runs (status SCHEDULED,
    /// params, tags, dataset input) in one transaction: all of them or none. With `start`, the
    /// numbers start there and every one must be free. A replica claims each number on its
    /// server and records its run at once, one by one: a number claimed there always has its
    /// run here, which this host sends to the server even if this process stops first.
    pub fn create_runs(
        &self,
        experiment_id: i64,
        artifact_location: &str,
        etl_version: i64,
        runs: &mut [(RunSpec, String, serde_json::Value)],
        start: Option<i64>,
    ) -> Result<Vec<i64>> {
        let new = NewRuns {
            experiment_id,
            artifact_location,
            etl_version,
            owner: owner::Owner::current(),
        };
        let mut versions = Vec::new();
        if let Some(registry) = self.server()? {
            for (i, run) in runs.iter_mut().enumerate() {
                let wanted = start.map(|s| s + i as i64);
                let v = registry.claim_number("t", &run.0.run_uuid, wanted)?;
                let mut conn = self.lock();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                self.insert_training_run(&tx, &new, v, run)?;
                tx.commit()?;
                versions.push(v);
            }
            return Ok(versions);
        }
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let first: i64 = match start {
            Some(s) => s,
            None => tx.query_row(
                "SELECT coalesce(max(version), 0) + 1 FROM runner_training_runs",
                [],
                |r| r.get(0),
            )?,
        };
        for (i, run) in runs.iter_mut().enumerate() {
            let v = first + i as i64;
            self.insert_training_run(&tx, &new, v, run)?;
            versions.push(v);
        }
        tx.commit()?;
        Ok(versions)
    }

    /// One training run of [`MlflowStore::create_runs`] as version `v`, named by it.
    fn insert_training_run(
        &self,
        tx: &rusqlite::Transaction,
        new: &NewRuns,
        v: i64,
        (spec, kind, record): &mut (RunSpec, String, serde_json::Value),
    ) -> Result<()> {
        let taken: bool = tx.query_row(
            "SELECT count(*) FROM runner_training_runs WHERE version = ?1",
            [v],
            |r| r.get::<_, i64>(0),
        )? > 0;
        if taken {
            bail!("training version t{v} is already taken in {}; pick a free number or leave --first-run out", server_registry::store_label(&self.path));
        }
        let tag_version = format!("t{v}");
        spec.name = format!("{tag_version}-{}", spec.name);
        spec.tags
            .push(("runner.training_version".into(), tag_version.clone()));
        spec.tags.push(("mlflow.runName".into(), spec.name.clone()));
        record["training_version"] = serde_json::Value::from(tag_version);
        insert_run(
            tx,
            new.experiment_id,
            new.artifact_location,
            spec,
            "SCHEDULED",
        )?;
        Self::insert_owner(tx, &spec.run_uuid, &new.owner)?;
        tx.execute(
            "INSERT INTO runner_training_runs (version, run_uuid, experiment_id, etl_version, name, kind, status, record_json, summary_json, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'SCHEDULED', ?7, NULL, ?8)",
            params![v, spec.run_uuid, new.experiment_id, new.etl_version, spec.name, kind.as_str(), record.to_string(), spec.start_ms],
        )?;
        Ok(())
    }

    /// Renames a run (its `name` and its `mlflow.runName` tag).
    pub fn rename_run(&self, run_uuid: &str, name: &str) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE runs SET name = ?1 WHERE run_uuid = ?2",
            params![name, run_uuid],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES ('mlflow.runName', ?1, ?2)",
            params![name, run_uuid],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Creates an MLflow run outside runner's training versions (an EDA run, say), SCHEDULED.
    pub fn create_plain_run(
        &self,
        experiment_id: i64,
        artifact_location: &str,
        spec: &RunSpec,
    ) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert_run(&tx, experiment_id, artifact_location, spec, "SCHEDULED")?;
        Self::insert_owner(&tx, &spec.run_uuid, &owner::Owner::current())?;
        tx.commit()?;
        Ok(())
    }

    /// Records the final summary of a training run in the registry.
    pub fn set_summary(&self, run_uuid: &str, summary: &serde_json::Value) -> Result<()> {
        self.lock().execute(
            "UPDATE runner_training_runs SET summary_json = ?1 WHERE run_uuid = ?2",
            params![summary.to_string(), run_uuid],
        )?;
        Ok(())
    }

    /// Every training run, by number; none in a store runner never wrote into.
    pub fn training_runs(&self) -> Result<Vec<TrainingRunRow>> {
        if !self.has_table("runner_training_runs")? {
            return Ok(Vec::new());
        }
        self.query_runs("ORDER BY t.version", [])
    }

    /// Every training run as `runner runs` lists it, by number: only the record's primary metric
    /// and the summary's metrics are read, with SQLite's JSON functions, so a store of 10,000
    /// runs lists quickly.
    pub fn run_list(&self) -> Result<Vec<RunListing>> {
        if !self.has_table("runner_training_runs")? {
            return Ok(Vec::new());
        }
        let conn = self.lock();
        let mut st = conn.prepare(&format!(
            "SELECT {RUN_HEAD}, coalesce(json_extract(t.record_json, '$.primary_metric'), ''),
                        json_extract(t.summary_json, '$.metrics'),
                        json_extract(t.summary_json, '$.pruned') IS NOT NULL
                 FROM {RUNS_WITH_EXPERIMENT} ORDER BY t.version"
        ))?;
        let rows = st.query_map([], |r| {
            let run = RunListing {
                version: r.get(0)?,
                run_uuid: r.get(1)?,
                etl_version: r.get(2)?,
                name: r.get(3)?,
                kind: r.get(4)?,
                status: r.get(5)?,
                experiment: r.get(6)?,
                primary_metric: r.get(7)?,
                metrics: serde_json::Value::Null,
                pruned: r.get(9)?,
            };
            Ok((run, r.get::<_, Option<String>>(8)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut run, metrics) = row?;
            if let Some(m) = metrics {
                run.metrics = serde_json::from_str(&m)?;
            }
            out.push(run);
        }
        Ok(out)
    }

    /// Runs still RUNNING or SCHEDULED whose owner is gone, with the reason: runner's runs that
    /// record an owner, and training runs of older runners (no owner) silent for longer than
    /// the stale limit. Runs that other programs (MLflow's own client) made are never judged.
    pub fn gone_runs(&self) -> Result<Vec<(String, String)>> {
        if !self.has_table("runner_training_runs")? {
            return Ok(Vec::new());
        }
        // A store of an older runner has no owners table: its runs are judged by age alone.
        let owners = if self.has_table("runner_run_owners")? {
            "runner_run_owners"
        } else {
            "(SELECT NULL AS run_uuid, NULL AS host, NULL AS pid, NULL AS process_start, NULL AS heartbeat_ms)"
        };
        // A replica never judges the runs it copied from its server: another host's.
        let copied = match self.has_table("runner_replica_runs")? {
            true => "AND r.run_uuid NOT IN (SELECT run_uuid FROM runner_replica_runs)",
            false => "",
        };
        let conn = self.lock();
        let mut st = conn.prepare(&format!(
            "SELECT r.run_uuid, r.start_time, o.host, o.pid, o.process_start, o.heartbeat_ms
             FROM runs r
             LEFT JOIN {owners} o ON o.run_uuid = r.run_uuid
             LEFT JOIN runner_training_runs t ON t.run_uuid = r.run_uuid
             WHERE r.status IN ('RUNNING', 'SCHEDULED')
               AND (o.run_uuid IS NOT NULL OR t.version IS NOT NULL)
               {copied}"
        ))?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })?;
        let now = super::now_ms();
        let mut gone = Vec::new();
        for row in rows {
            let (run_uuid, start, host, pid, process_start, heartbeat) = row?;
            let liveness = match (host, pid, process_start) {
                (Some(host), Some(pid), Some(process_start)) => owner::Owner {
                    host,
                    pid,
                    process_start,
                }
                .liveness(heartbeat.unwrap_or(0), now),
                _ => owner::stale_heartbeat(
                    "a run of an older runner (no owner recorded)",
                    start.unwrap_or(0),
                    now,
                ),
            };
            if let owner::Liveness::Gone(reason) = liveness {
                gone.push((run_uuid, reason));
            }
        }
        Ok(gone)
    }

    /// Marks every run whose owner is gone KILLED, with the reason in `runner.killed_reason`.
    /// Every command that writes to the store does this when it opens it.
    fn reconcile(&self) -> Result<()> {
        let gone = self.gone_runs()?;
        if gone.is_empty() {
            return Ok(());
        }
        let now = super::now_ms();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (run_uuid, reason) in &gone {
            // Only if still unfinished: the owner may have finished it since the check.
            let changed = tx.execute(
                "UPDATE runs SET status = 'KILLED', end_time = ?1 WHERE run_uuid = ?2 AND status IN ('RUNNING', 'SCHEDULED')",
                params![now, run_uuid],
            )?;
            if changed == 0 {
                continue;
            }
            tx.execute(
                "UPDATE runner_training_runs SET status = 'KILLED' WHERE run_uuid = ?1",
                [run_uuid],
            )?;
            let note = format!(
                "{reason}; marked KILLED by pid {} at {now} ms",
                std::process::id()
            );
            tx.execute(
                "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES ('runner.killed_reason', ?1, ?2)",
                params![note, run_uuid],
            )?;
        }
        tx.commit()
            .with_context(|| format!("cannot mark stale runs KILLED in {}", self.path.display()))?;
        Ok(())
    }

    /// Claims tag `key` of run `run_uuid` for this process, as one transaction: true when the
    /// tag was free or its holder is gone (on this host: its process no longer runs; from
    /// another: claimed longer ago than `RUNNER_STALE_AFTER`), false while another holds it.
    pub fn claim(&self, run_uuid: &str, key: &str) -> Result<bool> {
        let me = owner::Owner::current();
        let now = super::now_ms();
        let mine = format!("{}\t{}\t{}\t{now}", me.host, me.pid, me.process_start);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let held: Option<String> = tx
            .query_row(
                "SELECT value FROM tags WHERE key = ?1 AND run_uuid = ?2",
                params![key, run_uuid],
                |r| r.get(0),
            )
            .optional()?;
        let free = match &held {
            None => true,
            Some(v) => claim_holder_gone(v, now),
        };
        if free {
            tx.execute(
                "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?1, ?2, ?3)",
                params![key, mine, run_uuid],
            )?;
        }
        tx.commit()
            .with_context(|| format!("cannot claim {key} in {}", self.path.display()))?;
        Ok(free)
    }

    /// Records this process as the owner of a run, in the transaction that creates it.
    fn insert_owner(tx: &rusqlite::Transaction, run_uuid: &str, me: &owner::Owner) -> Result<()> {
        tx.execute(
            "INSERT OR REPLACE INTO runner_run_owners (run_uuid, host, pid, process_start, heartbeat_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run_uuid, me.host, me.pid, me.process_start, super::now_ms()],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES ('runner.owner', ?1, ?2)",
            params![format!("pid {} on {}", me.pid, me.host), run_uuid],
        )?;
        Ok(())
    }

    /// Refreshes the heartbeat of every unfinished run this process owns.
    pub fn beat(&self, me: &owner::Owner) -> Result<()> {
        self.lock().execute(
            "UPDATE runner_run_owners SET heartbeat_ms = ?1
             WHERE host = ?2 AND pid = ?3 AND process_start = ?4
               AND run_uuid IN (SELECT run_uuid FROM runs WHERE status IN ('RUNNING', 'SCHEDULED'))",
            params![super::now_ms(), me.host, me.pid, me.process_start],
        )?;
        Ok(())
    }

    pub fn training_run(&self, version: i64) -> Result<Option<TrainingRunRow>> {
        Ok(self
            .query_runs("WHERE t.version = ?1", [version])?
            .into_iter()
            .next())
    }

    /// The training version (N of tN) of an MLflow run, if it is a training run.
    pub fn training_version_of(&self, run_uuid: &str) -> Result<Option<i64>> {
        Ok(self
            .query_runs("WHERE t.run_uuid = ?1", [run_uuid])?
            .first()
            .map(|r| r.version))
    }

    fn query_runs<P: rusqlite::Params>(&self, tail: &str, p: P) -> Result<Vec<TrainingRunRow>> {
        let conn = self.lock();
        let mut st = conn.prepare(&format!(
            "SELECT {RUN_HEAD}, t.record_json, t.summary_json, t.created_ms FROM {RUNS_WITH_EXPERIMENT} {tail}"
        ))?;
        let rows = st.query_map(p, |r| {
            let run = TrainingRunRow {
                version: r.get(0)?,
                run_uuid: r.get(1)?,
                etl_version: r.get(2)?,
                name: r.get(3)?,
                kind: r.get(4)?,
                status: r.get(5)?,
                experiment: r.get(6)?,
                record: serde_json::Value::Null,
                summary: None,
                created_ms: r.get(9)?,
            };
            Ok((run, r.get::<_, String>(7)?, r.get::<_, Option<String>>(8)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut run, record, summary) = row?;
            run.record = serde_json::from_str(&record)?;
            run.summary = summary.map(|s| serde_json::from_str(&s)).transpose()?;
            out.push(run);
        }
        Ok(out)
    }

    /// The artifact folder of a run, from its `artifact_uri`; in a replica of a server, a run
    /// copied from the server has its artifacts fetched into it first.
    pub fn artifact_dir(&self, run_uuid: &str) -> Result<PathBuf> {
        let dir = self.artifact_folder(run_uuid)?;
        self.fetch_artifacts(run_uuid, &dir)?;
        Ok(dir)
    }

    /// The artifact folder of a run, from its `artifact_uri`.
    fn artifact_folder(&self, run_uuid: &str) -> Result<PathBuf> {
        let uri: String = self
            .lock()
            .query_row(
                "SELECT artifact_uri FROM runs WHERE run_uuid = ?1",
                [run_uuid],
                |r| r.get(0),
            )
            .with_context(|| format!("run {run_uuid} is not in the store"))?;
        Ok(PathBuf::from(uri.strip_prefix("file://").unwrap_or(&uri)))
    }

    /// The latest value of every metric of a run (what the MLflow UI shows).
    pub fn latest_metrics(&self, run_uuid: &str) -> Result<Vec<(String, f64)>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?1 ORDER BY key",
        )?;
        let rows = st.query_map([run_uuid], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, f64>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (k, v, nan) = row?;
            out.push((k, if nan { f64::NAN } else { v }));
        }
        Ok(out)
    }

    /// Full history of one metric: (step, value).
    pub fn metric_history(&self, run_uuid: &str, key: &str) -> Result<Vec<(i64, f64)>> {
        let conn = self.lock();
        let mut st = conn.prepare("SELECT step, value, is_nan FROM metrics WHERE run_uuid = ?1 AND key = ?2 ORDER BY step, timestamp")?;
        let rows = st.query_map(params![run_uuid, key], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, f64>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (s, v, nan) = row?;
            out.push((s, if nan { f64::NAN } else { v }));
        }
        Ok(out)
    }

    pub fn params(&self, run_uuid: &str) -> Result<Vec<(String, String)>> {
        let conn = self.lock();
        let mut st =
            conn.prepare("SELECT key, value FROM params WHERE run_uuid = ?1 ORDER BY key")?;
        let rows = st.query_map([run_uuid], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn tags(&self, run_uuid: &str) -> Result<Vec<(String, String)>> {
        let conn = self.lock();
        let mut st =
            conn.prepare("SELECT key, value FROM tags WHERE run_uuid = ?1 ORDER BY key")?;
        let rows = st.query_map([run_uuid], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

/// A run's metric values into the history, and each key's newest into `latest_metrics`.
fn insert_metrics(tx: &rusqlite::Transaction, run_uuid: &str, metrics: &[Metric]) -> Result<()> {
    let mut hist = tx.prepare_cached(
            "INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
    let mut latest = tx.prepare_cached(
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(key, run_uuid) DO UPDATE SET value = excluded.value, timestamp = excluded.timestamp, step = excluded.step, is_nan = excluded.is_nan
             WHERE (excluded.step, excluded.timestamp, excluded.value) > (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)",
        )?;
    // The batch's own latest value per key, so latest_metrics is written once per key.
    let mut newest: std::collections::BTreeMap<&str, &Metric> = std::collections::BTreeMap::new();
    for m in metrics {
        let (v, nan) = mlflow_value(m.value);
        hist.execute(params![m.key, v, m.timestamp_ms, run_uuid, m.step, nan])?;
        let e = newest.entry(m.key.as_str()).or_insert(m);
        let rank = |x: &Metric| (x.step, x.timestamp_ms, mlflow_value(x.value).0);
        if rank(m).partial_cmp(&rank(e)) == Some(std::cmp::Ordering::Greater) {
            *e = m;
        }
    }
    for m in newest.values() {
        let (v, nan) = mlflow_value(m.value);
        latest.execute(params![m.key, v, m.timestamp_ms, m.step, nan, run_uuid])?;
    }
    Ok(())
}

/// The MLflow rows of one run: the run, its tags and params, and its dataset input.
fn insert_run(
    tx: &rusqlite::Transaction,
    experiment_id: i64,
    artifact_location: &str,
    spec: &RunSpec,
    status: &str,
) -> Result<()> {
    let artifact_uri = format!(
        "{}/{}/artifacts",
        artifact_location.trim_end_matches('/'),
        spec.run_uuid
    );
    tx.execute(
        "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id)
         VALUES (?1, ?2, 'UNKNOWN', '', '', ?3, ?4, ?5, NULL, ?6, 'active', ?7, ?8)",
        params![spec.run_uuid, spec.name, spec.user, status, spec.start_ms, spec.git_commit, artifact_uri, experiment_id],
    )?;
    for (k, val) in &spec.tags {
        tx.execute(
            "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?1, ?2, ?3)",
            params![k, val, spec.run_uuid],
        )?;
    }
    for (k, val) in &spec.params {
        let val: String = val.chars().take(6000).collect();
        tx.execute(
            "INSERT OR REPLACE INTO params (key, value, run_uuid) VALUES (?1, ?2, ?3)",
            params![k, val, spec.run_uuid],
        )?;
    }
    if let Some(ds) = &spec.dataset {
        insert_dataset_input(tx, experiment_id, &spec.run_uuid, ds)?;
    }
    Ok(())
}

fn insert_dataset_input(
    tx: &rusqlite::Transaction,
    experiment_id: i64,
    run_uuid: &str,
    ds: &DatasetInput,
) -> Result<()> {
    let digest: String = ds.digest.chars().take(36).collect();
    let existing: Option<String> = tx
        .query_row(
            "SELECT dataset_uuid FROM datasets WHERE experiment_id = ?1 AND name = ?2 AND digest = ?3",
            params![experiment_id, ds.name, digest],
            |r| r.get(0),
        )
        .optional()?;
    let dataset_uuid = match existing {
        Some(u) => u,
        None => {
            let u = uuid::Uuid::new_v4().simple().to_string();
            let colspec: Vec<serde_json::Value> = ds
                .schema
                .iter()
                .map(|(n, t)| serde_json::json!({"type": t, "name": n, "required": true}))
                .collect();
            let schema = serde_json::json!({"mlflow_colspec": colspec});
            let profile = serde_json::json!({"num_rows": ds.num_rows, "num_elements": ds.num_rows * ds.num_cols});
            let source = serde_json::json!({"uri": ds.source_uri});
            tx.execute(
                "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, dataset_source_type, dataset_source, dataset_schema, dataset_profile)
                 VALUES (?1, ?2, ?3, ?4, 'local', ?5, ?6, ?7)",
                params![u, experiment_id, ds.name, digest, source.to_string(), schema.to_string(), profile.to_string()],
            )?;
            u
        }
    };
    let input_uuid = uuid::Uuid::new_v4().simple().to_string();
    tx.execute(
        "INSERT OR IGNORE INTO inputs (input_uuid, source_type, source_id, destination_type, destination_id) VALUES (?1, 'DATASET', ?2, 'RUN', ?3)",
        params![input_uuid, dataset_uuid, run_uuid],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO input_tags (input_uuid, name, value) VALUES (?1, 'mlflow.data.context', 'training')",
        params![input_uuid],
    )?;
    Ok(())
}

/// MLflow stores NaN as 0 with is_nan = 1 and clamps infinities to +-f64::MAX.
fn mlflow_value(v: f64) -> (f64, bool) {
    if v.is_nan() {
        (0.0, true)
    } else if v.is_infinite() {
        (if v > 0.0 { f64::MAX } else { f64::MIN }, false)
    } else {
        (v, false)
    }
}

/// Refreshes the heartbeat of this process's unfinished runs every [`owner::HEARTBEAT_EVERY`],
/// on a connection of its own, until dropped.
pub struct Heartbeat {
    stop: std::sync::Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MlflowStore {
    pub fn heartbeat(&self) -> Result<Heartbeat> {
        let path = self.path.clone();
        let stop = std::sync::Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::spawn(move || {
            let me = owner::Owner::current();
            let Ok(conn) = open_conn(&path) else {
                return;
            };
            let store = MlflowStore {
                conn: Mutex::new(conn),
                path,
                root: PathBuf::new(),
            };
            let (lock, wake) = &*signal;
            let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
            // A server's replica also tells the server, for the other hosts (run id -> the
            // server's id, found once).
            let mut on_server = std::collections::HashMap::new();
            while !*stopped {
                let (guard, _) = wake
                    .wait_timeout(stopped, owner::HEARTBEAT_EVERY)
                    .unwrap_or_else(|e| e.into_inner());
                stopped = guard;
                if !*stopped {
                    // A missed beat is harmless: the next one, or the process itself, tells.
                    let _ = store.beat(&me);
                    let _ = store.beat_on_server(&me, &mut on_server);
                }
            }
        });
        Ok(Heartbeat {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The tracker calls, whose errors [`Tracker for MlflowStore`] names the store in.
impl MlflowStore {
    fn write_log_metrics(&self, run_uuid: &str, metrics: &[Metric]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert_metrics(&tx, run_uuid, metrics)?;
        tx.commit()?;
        Ok(())
    }

    fn write_log_artifact(&self, run_uuid: &str, file_name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.artifact_dir(run_uuid)?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create artifact folder {}", dir.display()))?;
        // Write to a temporary name and rename, so a reader never sees half a file. The name is
        // this write's own: two shards completing a sweep's parent at once write its files
        // side by side (the last rename wins, with the same content).
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{file_name}.{}-{n}.partial", std::process::id()));
        let written = std::fs::write(&tmp, bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))
            .and_then(|_| {
                std::fs::rename(&tmp, dir.join(file_name))
                    .with_context(|| format!("cannot rename {}", tmp.display()))
            });
        if written.is_err() {
            // A disk that filled up mid-write leaves no half file behind.
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    fn write_set_status(
        &self,
        run_uuid: &str,
        status: RunStatus,
        end_ms: Option<i64>,
    ) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE runs SET status = ?1, end_time = coalesce(?2, end_time) WHERE run_uuid = ?3",
            params![status.as_mlflow(), end_ms, run_uuid],
        )?;
        if status == RunStatus::Running {
            tx.execute(
                "UPDATE runs SET start_time = ?1 WHERE run_uuid = ?2",
                params![super::now_ms(), run_uuid],
            )?;
        }
        tx.execute(
            "UPDATE runner_training_runs SET status = ?1 WHERE run_uuid = ?2",
            params![status.as_mlflow(), run_uuid],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn write_set_tags(&self, run_uuid: &str, tags: &[(String, String)]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for (k, v) in tags {
            let v: String = v.chars().take(8000).collect();
            tx.execute(
                "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?1, ?2, ?3)",
                params![k, v, run_uuid],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl MlflowStore {
    fn context(&self, doing: &str) -> String {
        format!("tracking store {}: {doing}", self.path.display())
    }

    /// Whether a run with this id is in the store.
    pub fn has_run(&self, run_uuid: &str) -> Result<bool> {
        Ok(self.lock().query_row(
            "SELECT count(*) FROM runs WHERE run_uuid = ?1",
            [run_uuid],
            |r| r.get::<_, i64>(0),
        )? > 0)
    }

    fn write_params(&self, run_uuid: &str, params: &[(String, String)]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (k, val) in params {
            let val: String = val.chars().take(6000).collect();
            tx.execute(
                "INSERT OR REPLACE INTO params (key, value, run_uuid) VALUES (?1, ?2, ?3)",
                params![k, val, run_uuid],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl Tracker for MlflowStore {
    fn name(&self) -> &str {
        "mlflow"
    }
    /// Training runs are created with their numbers by [`MlflowStore::create_runs`]; this
    /// creates any other run (EDA, a sweep's parent) SCHEDULED in its experiment.
    fn create_run(&self, run: &TrackedRun) -> Result<()> {
        if self.has_run(&run.spec.run_uuid)? {
            return Ok(());
        }
        let (experiment_id, location) = self.experiment(&run.spec.experiment)?;
        self.create_plain_run(experiment_id, &location, &run.spec)
            .with_context(|| self.context("creating a run"))
    }
    fn start_run(&self, run_uuid: &str) -> Result<()> {
        self.write_set_status(run_uuid, RunStatus::Running, None)
            .with_context(|| self.context("recording status RUNNING"))
    }
    fn log_params(&self, run_uuid: &str, params: &[(String, String)]) -> Result<()> {
        self.write_params(run_uuid, params)
            .with_context(|| self.context("logging params"))
    }
    fn log_metrics(&self, run_uuid: &str, metrics: &[Metric]) -> Result<()> {
        self.write_log_metrics(run_uuid, metrics)
            .with_context(|| self.context("logging metrics"))
    }
    fn log_artifact(&self, run_uuid: &str, file_name: &str, bytes: &[u8]) -> Result<()> {
        self.write_log_artifact(run_uuid, file_name, bytes)
            .with_context(|| self.context(&format!("saving {file_name}")))
    }
    fn log_model(&self, run_uuid: &str, model: &super::ModelPackage) -> Result<()> {
        self.write_log_model(run_uuid, model)
            .with_context(|| self.context("logging the run's MLflow model"))
    }
    fn finish_run(&self, run_uuid: &str, status: RunStatus, end_ms: i64) -> Result<()> {
        self.write_set_status(run_uuid, status, Some(end_ms))
            .with_context(|| self.context(&format!("recording status {}", status.as_mlflow())))
    }
    fn set_tags(&self, run_uuid: &str, tags: &[(String, String)]) -> Result<()> {
        self.write_set_tags(run_uuid, tags)
            .with_context(|| self.context("setting tags"))
    }
    fn record_summary(&self, run_uuid: &str, summary: &serde_json::Value) -> Result<()> {
        self.set_summary(run_uuid, summary)
            .with_context(|| self.context("recording the run's summary"))
    }
}

/// What every run of one [`MlflowStore::create_runs`] call shares.
struct NewRuns<'a> {
    experiment_id: i64,
    artifact_location: &'a str,
    etl_version: i64,
    owner: owner::Owner,
}

/// Whether the process that wrote a [`MlflowStore::claim`] value is gone.
fn claim_holder_gone(value: &str, now_ms: i64) -> bool {
    let parts: Vec<&str> = value.split('\t').collect();
    let [host, pid, process_start, claimed_ms] = parts[..] else {
        return true;
    };
    let holder = owner::Owner {
        host: host.to_string(),
        pid: pid.parse().unwrap_or(-1),
        process_start: process_start.to_string(),
    };
    let claimed_ms = claimed_ms.parse().unwrap_or(0);
    holder.liveness(claimed_ms, now_ms) != owner::Liveness::Alive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_paths_follow_mlflow() {
        assert_eq!(
            path_from_uri("sqlite:///mlflow.db").unwrap(),
            PathBuf::from("mlflow.db")
        );
        assert_eq!(
            path_from_uri("sqlite:////tmp/x.db").unwrap(),
            PathBuf::from("/tmp/x.db")
        );
        assert!(path_from_uri("postgresql://x").is_err());
    }

    #[test]
    fn new_store_has_mlflow_schema_and_default_experiment() {
        let d = tempfile::tempdir().unwrap();
        let s = MlflowStore::open(&d.path().join("m.db")).unwrap();
        assert_eq!(s.schema_revision().unwrap(), SCHEMA_REVISION);
        let n: i64 = s
            .lock()
            .query_row(
                "SELECT count(*) FROM experiments WHERE experiment_id = 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn latest_metric_is_the_largest_step() {
        let d = tempfile::tempdir().unwrap();
        let s = MlflowStore::open(&d.path().join("m.db")).unwrap();
        let (exp, loc) = s.experiment("e").unwrap();
        let spec = RunSpec {
            run_uuid: "0".repeat(32),
            name: "x".into(),
            experiment: "e".into(),
            user: "u".into(),
            start_ms: 1,
            git_commit: "c".into(),
            params: vec![],
            tags: vec![],
            dataset: None,
        };
        let v = s
            .create_runs(
                exp,
                &loc,
                1,
                &mut [(spec, "knn".into(), serde_json::json!({}))],
                None,
            )
            .unwrap();
        assert_eq!(v, vec![1]);
        let m = |step, value| Metric {
            key: "loss".into(),
            value,
            step,
            timestamp_ms: 5,
        };
        s.log_metrics(&"0".repeat(32), &[m(2, 0.5), m(1, 0.9), m(3, f64::NAN)])
            .unwrap();
        let latest = s.latest_metrics(&"0".repeat(32)).unwrap();
        assert!(
            latest[0].1.is_nan(),
            "step 3 is the latest even though it is NaN"
        );
        assert_eq!(s.metric_history(&"0".repeat(32), "loss").unwrap().len(), 3);
    }
}
