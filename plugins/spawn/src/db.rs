//! The spawn plugin's SQL: its `agent_executions` rows, written as the host writes them
//! (times as `YYYY-MM-DD HH:MM:SS` UTC text, the host's stage names), and its own metrics
//! tables (`hygiene_spawn_batches`, `hygiene_spawn_metrics`; see [`crate::schema`]). It
//! never writes `consensus_runs` or `agent_outputs`. Each function runs inside a
//! transaction the caller got from `Storage::write`, so a group of statements commits or
//! rolls back whole.

use chrono::{DateTime, Utc};
use rusqlite::{params, Transaction};

/// A time as the host writes it (`datetime('now')`): `2026-10-03 12:42:58`, UTC, no
/// fraction.
pub fn host_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// What identifies a batch in the database.
#[derive(Debug, Clone)]
pub struct BatchRow {
    pub batch_id: String,
    pub spec_id: String,
    /// As the host names it (see [`crate::request::host_stage`]).
    pub stage: String,
    pub agent_count: usize,
    pub max_concurrency: usize,
    /// Milliseconds since the epoch.
    pub started_at_ms: i64,
}

/// Inserts the batch row if absent (the first agent's transaction creates it).
pub fn ensure_batch(tx: &Transaction<'_>, batch: &BatchRow) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO hygiene_spawn_batches (batch_id, spec_id, stage, agent_count, max_concurrency, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            batch.batch_id,
            batch.spec_id,
            batch.stage,
            batch.agent_count as i64,
            batch.max_concurrency as i64,
            batch.started_at_ms
        ],
    )?;
    Ok(())
}

/// Inserts an agent's `agent_executions` row (and the batch row if absent).
pub fn insert_execution(
    tx: &Transaction<'_>,
    batch: &BatchRow,
    agent_id: &str,
    agent_name: &str,
    phase_type: &str,
    spawned_at: &str,
) -> rusqlite::Result<()> {
    ensure_batch(tx, batch)?;
    tx.execute(
        "INSERT INTO agent_executions (agent_id, spec_id, stage, phase_type, agent_name, run_id, spawned_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            agent_id,
            batch.spec_id,
            batch.stage,
            phase_type,
            agent_name,
            batch.batch_id,
            spawned_at
        ],
    )?;
    Ok(())
}

/// Marks an agent's row failed: `completed_at` set, the cause in `extraction_error`.
/// Returns whether a row was updated.
pub fn mark_failed(
    tx: &Transaction<'_>,
    agent_id: &str,
    completed_at: &str,
    cause: &str,
) -> rusqlite::Result<bool> {
    let n = tx.execute(
        "UPDATE agent_executions SET completed_at = ?2, extraction_error = ?3 WHERE agent_id = ?1 AND completed_at IS NULL",
        params![agent_id, completed_at, cause],
    )?;
    Ok(n > 0)
}

/// One agent's finished run, as recorded.
#[derive(Debug, Clone)]
pub struct CompletionRow<'a> {
    pub agent_id: &'a str,
    /// The host's text time (`YYYY-MM-DD HH:MM:SS`, UTC).
    pub completed_at: &'a str,
    /// The bounded response (stored for failed runs too: partial output helps).
    pub response: &'a str,
    /// `None` when the run succeeded.
    pub error: Option<&'a str>,
}

/// Records a completion on the agent's `agent_executions` row, as the host does
/// (`completed_at`, `response_text`, `extraction_error`). Spawning produces no consensus:
/// nothing goes to `consensus_runs` or `agent_outputs`, whose newest row per SPEC and
/// stage the host shows as the stage's result. Returns whether a row was updated.
pub fn record_completion(tx: &Transaction<'_>, row: &CompletionRow<'_>) -> rusqlite::Result<bool> {
    let updated = tx.execute(
        "UPDATE agent_executions SET completed_at = ?2, response_text = ?3, extraction_error = ?4 WHERE agent_id = ?1 AND completed_at IS NULL",
        params![row.agent_id, row.completed_at, row.response, row.error],
    )?;
    if updated == 0 {
        tracing::warn!(
            agent_id = row.agent_id,
            "agent_executions row is gone or already completed; its response stays in the evidence files"
        );
    }
    Ok(updated > 0)
}

/// One agent's spawn measurement.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AgentMetric {
    pub agent: String,
    pub agent_id: String,
    /// Waiting for a concurrency slot, in microseconds.
    pub queued_us: u64,
    /// From the request to this agent running (and ready) with its row committed.
    pub spawn_us: u64,
    pub ok: bool,
    pub pid: Option<u32>,
    pub error: Option<String>,
    /// When each step of this agent's spawn ended, measured like `spawn_us`.
    #[serde(default)]
    pub phases: SpawnPhases,
}

/// When each step of one agent's spawn ended, in microseconds from the request (0: the step
/// was not reached). The steps overlap: the row commits while the prompt file is written
/// and the process starts. Kept in the metrics export and event, not in the tables: they
/// say where a slow spawn's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpawnPhases {
    /// The agent's task began (the batch's set-up before it: configuration, stage
    /// prompts, schema, evidence folder).
    pub task_started_us: u64,
    /// It got its concurrency slot.
    pub slot_us: u64,
    /// Its prompt file was written.
    pub prompt_file_us: u64,
    /// `spawn` returned: the process exists (and has exec'd its program).
    pub process_spawned_us: u64,
    /// Its `agent_executions` row was committed (a batch's shared rows, submitted during
    /// its set-up, may commit before the agent's task begins).
    pub row_committed_us: u64,
    /// Its ready line was read (0 for `readiness = "started"`).
    pub ready_line_us: u64,
}

/// Stores a finished batch's figures: totals on the batch row, one metrics row per agent.
pub fn record_metrics(
    tx: &Transaction<'_>,
    batch: &BatchRow,
    total_us: u64,
    agents: &[AgentMetric],
) -> rusqlite::Result<()> {
    ensure_batch(tx, batch)?;
    let ok_count = agents.iter().filter(|a| a.ok).count() as i64;
    tx.execute(
        "UPDATE hygiene_spawn_batches SET total_us = ?2, ok_count = ?3, failed_count = ?4 WHERE batch_id = ?1",
        params![
            batch.batch_id,
            total_us as i64,
            ok_count,
            agents.len() as i64 - ok_count
        ],
    )?;
    let mut insert = tx.prepare(
        "INSERT INTO hygiene_spawn_metrics (batch_id, agent_id, agent_name, queued_us, spawn_us, ok, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for a in agents {
        insert.execute(params![
            batch.batch_id,
            a.agent_id,
            a.agent,
            a.queued_us as i64,
            a.spawn_us as i64,
            a.ok as i64,
            a.error
        ])?;
    }
    Ok(())
}
