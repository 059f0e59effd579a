//! The job-run history (`hygiene_job_runs`): a row when a run starts, its outcome and
//! report when it ends, pruning to the policy's bounds so the engine's footprint in the
//! host's database does not grow with every run, and the reader hosts and `jobs` use
//! (runs from before this engine started and from other engines sharing the database). On a storage that refuses writes (a
//! read-only open, a database that failed `quick_check`) nothing is written: the run is
//! logged instead.

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;

use crate::plugin::JobReport;
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
        config_path: String,
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
                    "INSERT INTO hygiene_job_runs (job, plugin, engine_id, trigger, started_at, outcome, config_path) VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6)",
                    params![job, plugin, engine_id, trigger, started_at_ms, config_path],
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
        report: Option<&JobReport>,
        error: Option<&str>,
        bounds: HistoryBounds,
    ) -> Result<(), StorageError> {
        // The shape `parse_report` reads back.
        let report_json = serde_json::json!({ "report": report, "error": error }).to_string();
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

/// What [`abandon_dead_runs`] found: runs and schedule leases of engines that are gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Abandoned {
    /// Rows that were `running` and are now `abandoned`.
    pub runs: Vec<AbandonedRun>,
    /// `(job, engine_id)` of each schedule lease released.
    pub leases: Vec<(String, String)>,
}

/// A run whose engine died before it finished, now marked `abandoned`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AbandonedRun {
    pub run_id: i64,
    pub job: String,
    pub engine_id: String,
}

/// Marks every `running` row whose engine is gone ([`crate::identity::liveness`] says
/// `Dead`) as `abandoned`, with an error saying so, and releases every schedule lease such
/// an engine held, in one transaction. Rows and leases of live or unjudgeable engines are
/// left alone; nothing is done on a storage that refuses writes.
pub async fn abandon_dead_runs(storage: &Storage, now_ms: i64) -> Result<Abandoned, StorageError> {
    if storage.write_refusal().is_some() {
        return Ok(Abandoned::default());
    }
    // (run id, job, engine id) of running rows; (job, owner) of held leases.
    type Running = Vec<(i64, String, String)>;
    type Leases = Vec<(String, String)>;
    let (running, leases): (Running, Leases) = storage
        .read(|conn| {
            if !crate::storage::table_exists(conn, "hygiene_job_runs")? {
                return Ok((Vec::new(), Vec::new()));
            }
            let mut stmt = conn.prepare(
                "SELECT id, job, engine_id FROM hygiene_job_runs WHERE outcome = 'running'",
            )?;
            let running = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut stmt = conn.prepare(
                "SELECT job, lease_owner FROM hygiene_schedule_state WHERE lease_owner IS NOT NULL",
            )?;
            let leases = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok((running, leases))
        })
        .await?;
    let dead = |engine: &str| crate::identity::liveness(engine) == crate::identity::Liveness::Dead;
    let runs: Vec<AbandonedRun> = running
        .into_iter()
        .filter(|(_, _, engine)| dead(engine))
        .map(|(run_id, job, engine_id)| AbandonedRun {
            run_id,
            job,
            engine_id,
        })
        .collect();
    let leases: Vec<(String, String)> = leases.into_iter().filter(|(_, e)| dead(e)).collect();
    if runs.is_empty() && leases.is_empty() {
        return Ok(Abandoned::default());
    }
    storage
        .write(move |tx| {
            let mut found = Abandoned::default();
            for run in runs {
                let error = format!(
                    "abandoned: engine {} ended (killed or crashed) before the run finished; what it did is unknown",
                    run.engine_id
                );
                let report_json = serde_json::json!({ "report": null, "error": error }).to_string();
                let changed = tx
                    .execute(
                        "UPDATE hygiene_job_runs SET outcome = 'abandoned', finished_at = ?1, report_json = ?2 \
                         WHERE id = ?3 AND outcome = 'running'",
                        params![now_ms, report_json, run.run_id],
                    )
                    .map_err(sql_error(tx))?;
                if changed > 0 {
                    found.runs.push(run);
                }
            }
            for (job, owner) in leases {
                // Only while that engine still holds it: a live engine may have claimed it since.
                let changed = tx
                    .execute(
                        "UPDATE hygiene_schedule_state \
                         SET lease_owner = NULL, lease_expires_at = NULL, last_finished_at = ?1, last_outcome = 'abandoned' \
                         WHERE job = ?2 AND lease_owner = ?3",
                        params![now_ms, job, owner],
                    )
                    .map_err(sql_error(tx))?;
                if changed > 0 {
                    found.leases.push((job, owner));
                }
            }
            Ok::<_, StorageError>(found)
        })
        .await
}

/// Deletes finished runs past either bound; running ones are never deleted.
fn prune(conn: &rusqlite::Connection, bounds: HistoryBounds) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM hygiene_job_runs WHERE finished_at IS NOT NULL AND \
         (started_at < ?1 OR id <= (SELECT max(id) FROM hygiene_job_runs) - ?2)",
        params![bounds.cutoff_ms, bounds.max_rows],
    )
}

/// One recorded job run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub run_id: i64,
    pub job: String,
    pub plugin: String,
    /// `schedule`, `catch_up` or `manual`.
    pub trigger: String,
    pub engine_id: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `succeeded`, `failed`, `skipped`, or `abandoned` (its engine died before
    /// it finished; found at a later engine's start).
    pub outcome: String,
    pub report: Option<JobReport>,
    pub error: Option<String>,
    /// The policy file the run served (`None` for runs recorded before version 0.3):
    /// one database may serve several repositories.
    pub config_path: Option<String>,
}

impl JobRecord {
    /// The report's one-line summary, else the error.
    pub fn summary(&self) -> &str {
        self.report
            .as_ref()
            .map(|r| r.summary.as_str())
            .or(self.error.as_deref())
            .unwrap_or("")
    }
}

/// The newest `limit` runs, newest first; none when the engine's tables do not exist yet
/// (a host database no writing engine has opened).
pub async fn recent(storage: &Storage, limit: u32) -> Result<Vec<JobRecord>, StorageError> {
    storage
        .read(move |conn| {
            if !crate::storage::table_exists(conn, "hygiene_job_runs")? {
                return Ok(Vec::new());
            }
            // A read-only open does not bring the table up to date: before version 2 it
            // has no config_path.
            let config_path = if crate::storage::column_exists(conn, "hygiene_job_runs", "config_path")? {
                "config_path"
            } else {
                "NULL"
            };
            let mut stmt = conn.prepare(&format!(
                "SELECT id, job, plugin, trigger, engine_id, started_at, finished_at, outcome, report_json, {config_path} \
                 FROM hygiene_job_runs ORDER BY id DESC LIMIT ?1"
            ))?;
            let rows = stmt.query_map([limit], |r| {
                let report_json: Option<String> = r.get(8)?;
                let (report, error) = parse_report(report_json.as_deref());
                Ok(JobRecord {
                    run_id: r.get(0)?,
                    job: r.get(1)?,
                    plugin: r.get(2)?,
                    trigger: r.get(3)?,
                    engine_id: r.get(4)?,
                    started_at: r.get::<_, Option<i64>>(5)?.and_then(DateTime::from_timestamp_millis),
                    finished_at: r.get::<_, Option<i64>>(6)?.and_then(DateTime::from_timestamp_millis),
                    outcome: r.get(7)?,
                    report,
                    error,
                    config_path: r.get(9)?,
                })
            })?;
            rows.collect()
        })
        .await
}

/// [`JobHistory::finished`] stores `{"report": JobReport | null, "error": string | null}`; a row it could
/// not parse (written by another version) shows as an error rather than vanishing.
fn parse_report(json: Option<&str>) -> (Option<JobReport>, Option<String>) {
    let Some(json) = json else {
        return (None, None);
    };
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(value) => (
            value
                .get("report")
                .filter(|r| !r.is_null())
                .and_then(|r| serde_json::from_value(r.clone()).ok()),
            value
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_string),
        ),
        Err(e) => (None, Some(format!("unreadable report: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_and_errors_parse() {
        let (report, error) = parse_report(Some(
            r#"{"report":{"summary":"freed 3 pages","data":{}},"error":null}"#,
        ));
        assert_eq!(report.unwrap().summary, "freed 3 pages");
        assert_eq!(error, None);
        let (report, error) = parse_report(Some(r#"{"report":null,"error":"boom"}"#));
        assert!(report.is_none());
        assert_eq!(error.as_deref(), Some("boom"));
        let (_, error) = parse_report(Some("{not json"));
        assert!(error.unwrap().starts_with("unreadable report"));
        assert_eq!(parse_report(None), (None, None));
    }
}
