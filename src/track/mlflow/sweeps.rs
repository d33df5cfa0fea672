//! Named sweeps in the store: a sweep is its parent run, tagged `runner.sweep_name`; its
//! training runs point at it with `mlflow.parentRunId`. Shards of one sweep, started at once,
//! find or create that parent in one IMMEDIATE transaction, so there is one parent per sweep.

use super::{insert_run, MlflowStore, TrainingRunRow};
use crate::track::{owner, server_registry, RunSpec};
use anyhow::{bail, Result};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

/// The tag naming a sweep's parent run.
pub const SWEEP_NAME_TAG: &str = "runner.sweep_name";

impl MlflowStore {
    /// The parent run of the sweep `name`: the newest one in the experiment, RUNNING again and
    /// owned by this process; or, when there is none or `restart` asks, a new one from `spec`
    /// (RUNNING). Returns its id and whether it is new.
    pub fn join_sweep(
        &self,
        experiment_id: i64,
        artifact_location: &str,
        spec: &RunSpec,
        name: &str,
        restart: bool,
    ) -> Result<(String, bool)> {
        let me = owner::Owner::current();
        let on_server = self.server_parent(spec, name, restart)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: Option<String> = if let Some(holder) = on_server {
            (holder != spec.run_uuid).then_some(holder)
        } else if restart {
            None
        } else {
            tx.query_row(
                "SELECT r.run_uuid FROM runs r JOIN tags g ON g.run_uuid = r.run_uuid
                 JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = 'runner.sweep' AND p.value = 'parent'
                 WHERE g.key = ?1 AND g.value = ?2 AND r.experiment_id = ?3
                   AND r.lifecycle_stage = 'active'
                 ORDER BY r.start_time DESC, r.run_uuid LIMIT 1",
                params![SWEEP_NAME_TAG, name, experiment_id],
                |r| r.get(0),
            )
            .optional()?
        };
        let (run_uuid, created) = match found {
            Some(id) => {
                tx.execute(
                    "UPDATE runs SET status = 'RUNNING', end_time = NULL WHERE run_uuid = ?1",
                    [&id],
                )?;
                (id, false)
            }
            None => {
                insert_run(&tx, experiment_id, artifact_location, spec, "RUNNING")?;
                (spec.run_uuid.clone(), true)
            }
        };
        Self::insert_owner(&tx, &run_uuid, &me)?;
        tx.commit()?;
        Ok((run_uuid, created))
    }

    /// In a replica of a server, the sweep's parent as the server's registry has it: the
    /// newest one claimed under the sweep's name, or (none yet, or `restart`) the next number
    /// claimed for `spec`'s run, or the run of whoever won that number. A parent another host
    /// made is copied in (waiting up to 60 s for it to reach the server). None for a store that
    /// is not a replica.
    fn server_parent(&self, spec: &RunSpec, name: &str, restart: bool) -> Result<Option<String>> {
        let Some(registry) = self.server()? else {
            return Ok(None);
        };
        let prefix = format!("sweep/{}/", server_registry::short_name(name, 200));
        let newest = registry.numbers(&prefix)?.into_iter().next_back();
        let holder = match newest {
            Some((_, run)) if !restart => run,
            newest => {
                let n = newest.map_or(1, |(n, _)| n + 1);
                registry.claim(&format!("{prefix}{n}"), &spec.run_uuid)?
            }
        };
        let started = std::time::Instant::now();
        while holder != spec.run_uuid && !self.has_run(&holder)? {
            if started.elapsed().as_secs() >= 60 {
                bail!(
                    "the sweep `{name}`'s parent run {holder} is not on the MLflow server {} after 60 s (the shard that claimed it stopped?): run again with --restart",
                    registry.client().url()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
            self.refresh_in(Some(&spec.experiment))?;
        }
        Ok(Some(holder))
    }

    /// Lets go of a sweep's parent that other shards may still finish: it stays RUNNING and no
    /// longer counts as this process's (so it is not marked KILLED when this process ends).
    pub fn leave_sweep(&self, parent: &str) -> Result<()> {
        let me = owner::Owner::current();
        self.lock().execute(
            "DELETE FROM runner_run_owners WHERE run_uuid = ?1 AND host = ?2 AND pid = ?3",
            params![parent, me.host, me.pid],
        )?;
        Ok(())
    }

    /// A run's status (`RUNNING`, `FINISHED`, ...), if the store holds it.
    pub fn run_status(&self, run_uuid: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT status FROM runs WHERE run_uuid = ?1",
                [run_uuid],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The newest parent run of the sweep `name`, in any experiment.
    pub fn find_sweep(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT r.run_uuid FROM runs r JOIN tags g ON g.run_uuid = r.run_uuid
                 JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = 'runner.sweep' AND p.value = 'parent'
                 WHERE g.key = ?1 AND g.value = ?2 AND r.lifecycle_stage = 'active'
                 ORDER BY r.start_time DESC, r.run_uuid LIMIT 1",
                params![SWEEP_NAME_TAG, name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The names of the sweeps the store holds, newest first.
    pub fn sweep_names(&self) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT g.value FROM runs r JOIN tags g ON g.run_uuid = r.run_uuid
                 JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = 'runner.sweep' AND p.value = 'parent'
             WHERE g.key = ?1 GROUP BY g.value ORDER BY max(r.start_time) DESC",
        )?;
        let names = st.query_map([SWEEP_NAME_TAG], |r| r.get(0))?;
        Ok(names.collect::<rusqlite::Result<_>>()?)
    }

    /// The training runs of a sweep (whose `mlflow.parentRunId` is `parent`), by number.
    pub fn sweep_runs(&self, parent: &str) -> Result<Vec<TrainingRunRow>> {
        if !self.has_table("runner_training_runs")? {
            return Ok(Vec::new());
        }
        self.query_runs(
            "WHERE t.run_uuid IN (SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId' AND value = ?1) ORDER BY t.version",
            [parent],
        )
    }
}
