//! The job-run history (`hygiene_job_runs`): a row when a run starts, its outcome and
//! report when it ends, and pruning to the policy's bounds so the engine's footprint in
//! the host's database does not grow with every run. On a storage that refuses writes (a
//! read-only open, a database that failed `quick_check`) nothing is written: the run is
//! logged instead.

use rusqlite::params;

use crate::policy::SchedulePolicy;
use crate::storage::{sql_error, Storage, StorageError};

/// How much history to keep, resolved against the time of the run.
#[derive(Debug, Clone, Copy)]
pub struct HistoryBounds {
    /// Finished runs that started before this (ms since the epoch) are deleted.
    pub cutoff_ms: i64,
    /// All but the newest this many rows are deleted (finished ones only).
    pub max_rows: i64,
}

impl HistoryBounds {
    pub fn of(schedule: &SchedulePolicy, now_ms: i64) -> Self {
        let days = i64::from(schedule.job_history_days);
        Self {
            cutoff_ms: now_ms.saturating_sub(days.saturating_mul(86_400_000)),
            max_rows: i64::from(schedule.job_history_max_rows),
        }
    }
}

/// The history table of one storage.
pub struct JobHistory<'a> {
    storage: &'a Storage,
}

impl<'a> JobHistory<'a> {
    pub fn of(storage: &'a Storage) -> Self {
        Self { storage }
    }

    /// Records a run's start; `None` (and a log line) when the database refuses writes.
    pub async fn started(
        &self,
        job: String,
        plugin: String,
        engine_id: String,
        trigger: &'static str,
        started_at_ms: i64,
    ) -> Result<Option<i64>, StorageError> {
        if let Some(reason) = self.storage.write_refusal() {
            tracing::info!(
                job,
                database = %self.storage.path().display(),
                "job run not recorded in the database: {reason}"
            );
            return Ok(None);
        }
        self.storage
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO hygiene_job_runs (job, plugin, engine_id, trigger, started_at, outcome) VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
                    params![job, plugin, engine_id, trigger, started_at_ms],
                )
                .map_err(sql_error(tx))?;
                Ok::<_, StorageError>(Some(tx.last_insert_rowid()))
            })
            .await
    }

    /// Records a run's end and prunes the history, in one transaction.
    pub async fn finished(
        &self,
        run_id: Option<i64>,
        finished_at_ms: i64,
        outcome: &'static str,
        report_json: String,
        bounds: HistoryBounds,
    ) -> Result<(), StorageError> {
        let Some(run_id) = run_id else {
            tracing::info!(outcome, report = %report_json, "job run finished (not recorded)");
            return Ok(());
        };
        self.storage
            .write(move |tx| {
                tx.execute(
                    "UPDATE hygiene_job_runs SET finished_at = ?1, outcome = ?2, report_json = ?3 WHERE id = ?4",
                    params![finished_at_ms, outcome, report_json, run_id],
                )
                .map_err(sql_error(tx))?;
                prune(tx, bounds).map_err(sql_error(tx))?;
                Ok::<_, StorageError>(())
            })
            .await
    }
}

/// Deletes finished runs past either bound; running ones are never deleted.
fn prune(conn: &rusqlite::Connection, bounds: HistoryBounds) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM hygiene_job_runs WHERE finished_at IS NOT NULL AND \
         (started_at < ?1 OR id <= (SELECT max(id) FROM hygiene_job_runs) - ?2)",
        params![bounds.cutoff_ms, bounds.max_rows],
    )
}
