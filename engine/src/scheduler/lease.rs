//! Who runs a tick: the `hygiene_schedule_state` row of each job, shared by every engine on
//! the database. Each decision reads and writes the row in one `BEGIN IMMEDIATE`
//! transaction, so two engines can never both claim the same tick.
//!
//! Columns (times are milliseconds since the Unix epoch, on the claiming engine's clock):
//! - `last_fire_at`: the newest tick that is settled: claimed by some engine, or, for a job
//!   first seen by a catch-up check, the time it was first seen (nothing before it is owed);
//! - `last_started_at`, `last_finished_at`, `last_outcome`: the newest scheduled run;
//!   A `last_fire_at` more than [`FUTURE_TOLERANCE`] ahead of the claiming engine's clock
//!   was written before the clock was set back; it does not block claims.
//! - `lease_owner`, `lease_expires_at`: the engine running the job now. The owner renews the
//!   lease while the job runs and clears it when the job ends; a crashed owner's lease
//!   simply expires, and then another engine may claim later ticks.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Transaction};
use std::path::PathBuf;

use super::plan;
use crate::cron_expr::{CronSchedule, ScheduleTz};
use crate::storage::{Storage, StorageError};

/// How far in the future a recorded fire time may lie and still count as "this tick was
/// already run". Beyond it the record came from a clock that has since been set back.
pub const FUTURE_TOLERANCE: chrono::Duration = chrono::Duration::hours(1);

/// Why a schedule-state read or write failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} for job {job:?}: {source}")]
pub struct ScheduleStateError {
    pub job: String,
    /// What the scheduler was doing ("claim a tick", "renew the lease", ...).
    pub action: &'static str,
    #[source]
    pub source: StorageError,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This engine owns the tick and the lease: run the job.
    Claimed,
    /// Some engine already claimed this tick or a later one.
    AlreadyFired { last_fire_at: DateTime<Utc> },
    /// Another engine's unexpired lease: the job is (or may still be) running there.
    Leased {
        owner: String,
        expires_at: DateTime<Utc>,
    },
}

/// What the start-up catch-up check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUp {
    /// No run was recorded for the job yet: nothing is owed, and `now` is recorded as the
    /// point from which later downtime counts.
    FirstSeen,
    /// No fire time passed since the last recorded run.
    NotOwed,
    /// A fire time passed unrun; `claim` says whether this engine is the one to run it.
    Owed {
        missed_at: DateTime<Utc>,
        claim: Claim,
    },
}

/// Everything that identifies one claim attempt.
#[derive(Debug, Clone)]
pub struct Claimant {
    pub job: String,
    pub owner: String,
    pub lease: chrono::Duration,
}

struct StateRow {
    last_fire_at: Option<i64>,
    last_started_at: Option<i64>,
    lease_owner: Option<String>,
    lease_expires_at: Option<i64>,
}

/// Claims tick `tick` for `who` at wall time `now`: only if no engine recorded a fire time
/// at or after `tick`, and no other engine holds an unexpired lease. On success the lease
/// runs until `now + lease` and `last_fire_at = tick`.
pub async fn claim_tick(
    storage: &Storage,
    who: &Claimant,
    tick: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Claim, ScheduleStateError> {
    let path = storage.path().to_path_buf();
    let who_tx = who.clone();
    storage
        .write(move |tx| {
            let row = read_row(tx, &path, &who_tx.job)?;
            try_claim(tx, &path, &who_tx, row.as_ref(), tick, now)
        })
        .await
        .map_err(|source| who.error("claim a tick", source))
}

/// At start-up: decides whether `who.job` missed a fire time since its last recorded run
/// (`last_fire_at` or `last_started_at`, whichever is later) and, if so, claims the newest
/// missed fire time, all in one transaction. Two engines starting together therefore run
/// the missed job once between them, and never once per missed tick.
pub async fn claim_catch_up(
    storage: &Storage,
    who: &Claimant,
    schedule: &CronSchedule,
    tz: ScheduleTz,
    now: DateTime<Utc>,
) -> Result<CatchUp, ScheduleStateError> {
    let path = storage.path().to_path_buf();
    let who_tx = who.clone();
    let schedule = schedule.clone();
    storage
        .write(move |tx| {
            let row = read_row(tx, &path, &who_tx.job)?;
            let recorded = row
                .as_ref()
                .and_then(|r| r.last_fire_at.max(r.last_started_at));
            let Some(recorded) = recorded else {
                tx.execute(
                    "INSERT INTO hygiene_schedule_state (job, last_fire_at) VALUES (?1, ?2)
                     ON CONFLICT(job) DO UPDATE SET last_fire_at = excluded.last_fire_at
                     WHERE last_fire_at IS NULL",
                    params![who_tx.job, now.timestamp_millis()],
                )
                .map_err(|source| sqlite(&path, source))?;
                return Ok(CatchUp::FirstSeen);
            };
            let Some(missed_at) = plan::latest_in(&schedule, tz, from_millis(recorded), now) else {
                return Ok(CatchUp::NotOwed);
            };
            let claim = try_claim(tx, &path, &who_tx, row.as_ref(), missed_at, now)?;
            Ok(CatchUp::Owed { missed_at, claim })
        })
        .await
        .map_err(|source| who.error("check for a missed run", source))
}

/// Extends this engine's lease to `now + lease`. `Ok(false)` when the lease is no longer
/// this engine's (it expired and another engine took the job over).
pub async fn renew(
    storage: &Storage,
    who: &Claimant,
    now: DateTime<Utc>,
) -> Result<bool, ScheduleStateError> {
    let path = storage.path().to_path_buf();
    let (job, owner) = (who.job.clone(), who.owner.clone());
    let expires_at = (now + who.lease).timestamp_millis();
    storage
        .write(move |tx| {
            tx.execute(
                "UPDATE hygiene_schedule_state SET lease_expires_at = ?1
                 WHERE job = ?2 AND lease_owner = ?3",
                params![expires_at, job, owner],
            )
            .map(|changed| changed == 1)
            .map_err(|source| sqlite(&path, source))
        })
        .await
        .map_err(|source| who.error("renew the lease", source))
}

/// Records how the run ended and gives the lease up. `Ok(false)` when the lease had already
/// passed to another engine: its row is then left alone.
pub async fn release(
    storage: &Storage,
    who: &Claimant,
    finished_at: DateTime<Utc>,
    outcome: &'static str,
) -> Result<bool, ScheduleStateError> {
    let path = storage.path().to_path_buf();
    let (job, owner) = (who.job.clone(), who.owner.clone());
    storage
        .write(move |tx| {
            tx.execute(
                "UPDATE hygiene_schedule_state
                 SET last_finished_at = ?1, last_outcome = ?2, lease_owner = NULL, lease_expires_at = NULL
                 WHERE job = ?3 AND lease_owner = ?4",
                params![finished_at.timestamp_millis(), outcome, job, owner],
            )
            .map(|changed| changed == 1)
            .map_err(|source| sqlite(&path, source))
        })
        .await
        .map_err(|source| who.error("release the lease", source))
}

impl Claimant {
    fn error(&self, action: &'static str, source: StorageError) -> ScheduleStateError {
        ScheduleStateError {
            job: self.job.clone(),
            action,
            source,
        }
    }
}

fn read_row(
    tx: &Transaction<'_>,
    path: &std::path::Path,
    job: &str,
) -> Result<Option<StateRow>, StorageError> {
    tx.query_row(
        "SELECT last_fire_at, last_started_at, lease_owner, lease_expires_at
         FROM hygiene_schedule_state WHERE job = ?1",
        params![job],
        |r| {
            Ok(StateRow {
                last_fire_at: r.get(0)?,
                last_started_at: r.get(1)?,
                lease_owner: r.get(2)?,
                lease_expires_at: r.get(3)?,
            })
        },
    )
    .optional()
    .map_err(|source| sqlite(path, source))
}

fn try_claim(
    tx: &Transaction<'_>,
    path: &std::path::Path,
    who: &Claimant,
    row: Option<&StateRow>,
    tick: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Claim, StorageError> {
    let tick_ms = tick.timestamp_millis();
    let now_ms = now.timestamp_millis();
    if let Some(row) = row {
        if let Some(last) = row.last_fire_at.filter(|last| *last >= tick_ms) {
            if last <= now_ms + FUTURE_TOLERANCE.num_milliseconds() {
                return Ok(Claim::AlreadyFired {
                    last_fire_at: from_millis(last),
                });
            }
            // Recorded by a clock that was ahead (the clock has since been set back): if it
            // counted, the job would not run again until the wall clock caught up with it,
            // possibly for years.
            tracing::warn!(
                job = %who.job,
                recorded = %from_millis(last),
                %now,
                "the recorded last fire time lies in the future (was the clock set back?); claiming the tick anyway"
            );
        }
        if let (Some(owner), Some(expires)) = (&row.lease_owner, row.lease_expires_at) {
            // This engine's own lease (same engine id after a restart) is no obstacle: a
            // run of its own still in progress was already ruled out before claiming.
            if *owner != who.owner && expires > now_ms {
                return Ok(Claim::Leased {
                    owner: owner.clone(),
                    expires_at: from_millis(expires),
                });
            }
        }
    }
    tx.execute(
        "INSERT INTO hygiene_schedule_state (job, last_fire_at, last_started_at, lease_owner, lease_expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(job) DO UPDATE SET
             last_fire_at = excluded.last_fire_at,
             last_started_at = excluded.last_started_at,
             lease_owner = excluded.lease_owner,
             lease_expires_at = excluded.lease_expires_at",
        params![
            who.job,
            tick_ms,
            now_ms,
            who.owner,
            (now + who.lease).timestamp_millis()
        ],
    )
    .map_err(|source| sqlite(path, source))?;
    Ok(Claim::Claimed)
}

fn sqlite(path: &std::path::Path, source: rusqlite::Error) -> StorageError {
    StorageError::Sqlite {
        path: PathBuf::from(path),
        cause: source,
    }
}

/// Milliseconds since the epoch as a time; out-of-range values (a hand-edited row) clamp
/// to the epoch rather than failing the scheduler.
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
