//! The spawn plugin's SQL: its `agent_executions` rows, the batch's `consensus_runs` and
//! `agent_outputs` rows, and the metrics tables (`hygiene_spawn_batches`,
//! `hygiene_spawn_metrics`, migration 4). Each function runs inside a transaction the
//! caller got from `Storage::write`, so a group of statements commits or rolls back whole.

use rusqlite::{params, OptionalExtension, Transaction};

/// What identifies a batch in the database.
#[derive(Debug, Clone)]
pub struct BatchRow {
    pub batch_id: String,
    pub spec_id: String,
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
    pub agent_name: &'a str,
    pub completed_at: &'a str,
    pub completed_at_ms: i64,
    /// The bounded response (stored for failed runs too: partial output helps).
    pub response: &'a str,
    /// `None` when the run succeeded.
    pub error: Option<&'a str>,
}

/// Records a completion: the execution row, and for a successful run an `agent_outputs`
/// row under the batch's consensus run (created on first use); then refreshes the consensus
/// run's status. Returns the consensus run id, if there is one.
pub fn record_completion(
    tx: &Transaction<'_>,
    batch: &BatchRow,
    row: &CompletionRow<'_>,
) -> rusqlite::Result<Option<i64>> {
    let updated = tx.execute(
        "UPDATE agent_executions SET completed_at = ?2, response_text = ?3, extraction_error = ?4 WHERE agent_id = ?1 AND completed_at IS NULL",
        params![row.agent_id, row.completed_at, row.response, row.error],
    )?;
    if updated == 0 {
        tracing::warn!(
            agent_id = row.agent_id,
            "agent_executions row is gone or already completed; recording the output anyway"
        );
    }
    ensure_batch(tx, batch)?;
    let run_id = if row.error.is_none() {
        let run_id = consensus_run(tx, batch)?;
        tx.execute(
            "INSERT INTO agent_outputs (run_id, agent_name, model_version, content, output_timestamp) VALUES (?1, ?2, NULL, ?3, ?4)",
            params![run_id, row.agent_name, row.response, row.completed_at_ms],
        )?;
        Some(run_id)
    } else {
        existing_consensus_run(tx, &batch.batch_id)?
    };
    if let Some(run_id) = run_id {
        refresh_consensus_run(tx, batch, run_id)?;
    }
    Ok(run_id)
}

fn existing_consensus_run(tx: &Transaction<'_>, batch_id: &str) -> rusqlite::Result<Option<i64>> {
    tx.query_row(
        "SELECT b.consensus_run_id FROM hygiene_spawn_batches b JOIN consensus_runs r ON r.id = b.consensus_run_id WHERE b.batch_id = ?1",
        params![batch_id],
        |r| r.get::<_, i64>(0),
    )
    .optional()
}

/// The batch's consensus run, created if it has none. Its `run_timestamp` is the batch's
/// start; if another run of the same SPEC and stage already holds that millisecond
/// (`UNIQUE(spec_id, stage, run_timestamp)`), the next free one is taken.
fn consensus_run(tx: &Transaction<'_>, batch: &BatchRow) -> rusqlite::Result<i64> {
    if let Some(id) = existing_consensus_run(tx, &batch.batch_id)? {
        return Ok(id);
    }
    let mut timestamp = batch.started_at_ms;
    loop {
        let inserted = tx.execute(
            "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, degraded, synthesis_json) VALUES (?1, ?2, ?3, 0, 0, NULL) ON CONFLICT (spec_id, stage, run_timestamp) DO NOTHING",
            params![batch.spec_id, batch.stage, timestamp],
        )?;
        if inserted == 1 {
            break;
        }
        timestamp += 1;
    }
    let id = tx.last_insert_rowid();
    tx.execute(
        "UPDATE hygiene_spawn_batches SET consensus_run_id = ?2 WHERE batch_id = ?1",
        params![batch.batch_id, id],
    )?;
    Ok(id)
}

/// `consensus_ok` = every agent of the batch delivered output and none failed;
/// `degraded` = some agent failed (to spawn or to run). `synthesis_json` says so in
/// figures; the synthesis of the answers themselves is spec-kit's job, not ours.
fn refresh_consensus_run(
    tx: &Transaction<'_>,
    batch: &BatchRow,
    run_id: i64,
) -> rusqlite::Result<()> {
    let completed: i64 = tx.query_row(
        "SELECT count(*) FROM agent_outputs WHERE run_id = ?1",
        params![run_id],
        |r| r.get(0),
    )?;
    let failed: i64 = tx.query_row(
        "SELECT count(*) FROM agent_executions WHERE run_id = ?1 AND extraction_error IS NOT NULL",
        params![batch.batch_id],
        |r| r.get(0),
    )?;
    let ok = completed == batch.agent_count as i64 && failed == 0;
    let synthesis = serde_json::json!({
        "source": "speckit-hygiene spawn",
        "batch_id": batch.batch_id,
        "agents_expected": batch.agent_count,
        "agents_completed": completed,
        "agents_failed": failed,
    })
    .to_string();
    tx.execute(
        "UPDATE consensus_runs SET consensus_ok = ?2, degraded = ?3, synthesis_json = ?4 WHERE id = ?1",
        params![run_id, ok as i64, (failed > 0) as i64, synthesis],
    )?;
    Ok(())
}

/// One agent's spawn measurement.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
