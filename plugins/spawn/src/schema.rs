//! The spawn plugin's own tables, versioned as component `spawn` in
//! `hygiene_schema_versions` (never in `PRAGMA user_version`, which belongs to the host).
//!
//! Version 1 creates `hygiene_spawn_batches` and `hygiene_spawn_metrics` (until now made
//! by the engine's 0.1 migration 4, which also gave batches a `consensus_run_id` column;
//! a legacy table keeps that column, and no code needs it) and repairs what 0.1's spawn
//! wrote into the host's tables:
//!
//! - Every batch got a `consensus_runs` row as a carrier of its figures (`synthesis_json`
//!   `{"agents_completed":..,"source":"speckit-hygiene spawn",..}`; serde_json sorts keys,
//!   so `source` is not the first), with each successful agent's response under it in
//!   `agent_outputs`. The host shows the newest `consensus_runs` row of a SPEC's stage as
//!   its result, so a carrier hid the real synthesis. Carriers are deleted with their
//!   `agent_outputs`. Nothing is lost: 0.1 wrote the same response, in the same
//!   transaction, to `agent_executions.response_text`, except when that row had been
//!   completed already; such a missing `response_text` is filled in from the output
//!   first, and a carrier holding an output that is nowhere else (its execution row gone)
//!   is kept.
//! - `spawned_at`/`completed_at` of its `agent_executions` rows were ISO 8601 with
//!   milliseconds (`2026-12-02T12:49:21.004Z`); the host writes `datetime('now')`
//!   (`2026-12-02 12:49:21`), and compares and sorts those texts. They are rewritten in
//!   the host's format (SQLite's own `datetime()`, which truncates the fraction as the
//!   host's does).

use rusqlite::Connection;

use speckit_engine::storage::{table_exists, ComponentSchema, Migration, MigrationStep};

/// The tables the spawn plugin owns.
pub static SPAWN_SCHEMA: ComponentSchema = ComponentSchema {
    component: crate::PLUGIN_NAME,
    migrations: &[Migration {
        version: 1,
        name: "spawn batches and metrics; repair of 0.1's rows in the host's tables",
        apply: MigrationStep::Code(spawn_v1),
    }],
    sandbox: None,
};

const TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS hygiene_spawn_batches (
    batch_id TEXT PRIMARY KEY,
    spec_id TEXT NOT NULL,
    -- as the host names it (spec-plan, speckit.specify...)
    stage TEXT NOT NULL,
    agent_count INTEGER NOT NULL,
    max_concurrency INTEGER NOT NULL,
    -- ms since the epoch
    started_at INTEGER NOT NULL,
    -- request to every agent initialised, in microseconds; NULL while the batch runs
    total_us INTEGER,
    ok_count INTEGER,
    failed_count INTEGER
);
CREATE INDEX IF NOT EXISTS idx_hygiene_spawn_batches_started ON hygiene_spawn_batches(started_at);
CREATE TABLE IF NOT EXISTS hygiene_spawn_metrics (
    batch_id TEXT NOT NULL REFERENCES hygiene_spawn_batches(batch_id) ON DELETE CASCADE,
    agent_id TEXT NOT NULL,
    agent_name TEXT NOT NULL,
    -- waiting for a concurrency slot, in microseconds
    queued_us INTEGER NOT NULL,
    -- request to the agent running (and ready) with its row committed, in microseconds
    spawn_us INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    error TEXT,
    PRIMARY KEY (batch_id, agent_name)
);
"#;

fn spawn_v1(conn: &Connection) -> rusqlite::Result<()> {
    if table_exists(conn, "hygiene_spawn_batches")? {
        repair_legacy(conn)?;
    }
    conn.execute_batch(TABLES)
}

/// The `consensus_runs` ids 0.1's spawn created as carriers: referenced by a batch and
/// saying so in their synthesis.
const CARRIERS: &str = r#"
SELECT r.id FROM consensus_runs r JOIN hygiene_spawn_batches b ON b.consensus_run_id = r.id
WHERE r.synthesis_json IS NOT NULL
  AND (substr(r.synthesis_json, 1, 33) = '{"source":"speckit-hygiene spawn"'
       OR (CASE WHEN json_valid(r.synthesis_json)
                THEN json_extract(r.synthesis_json, '$.source') = 'speckit-hygiene spawn'
                     AND json_extract(r.synthesis_json, '$.batch_id') IS b.batch_id
           END))
"#;

/// Rewrites 0.1's rows in the host's tables (see the module docs). Runs inside the
/// migration's transaction.
pub(crate) fn repair_legacy(conn: &Connection) -> rusqlite::Result<()> {
    let has_run_column: bool = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('hygiene_spawn_batches') WHERE name = 'consensus_run_id'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    let host_runs = table_exists(conn, "consensus_runs")? && table_exists(conn, "agent_outputs")?;
    let executions = table_exists(conn, "agent_executions")?;
    // Without agent_executions (never the case after the engine's open) a carrier's
    // outputs are the only copy of the responses: left alone.
    if has_run_column && host_runs && executions {
        repair_carriers(conn)?;
    }
    if executions {
        let rewritten = conn.execute(
            "UPDATE agent_executions SET
                 spawned_at = CASE WHEN instr(spawned_at, 'T') > 0 THEN coalesce(datetime(spawned_at), spawned_at) ELSE spawned_at END,
                 completed_at = CASE WHEN instr(completed_at, 'T') > 0 THEN coalesce(datetime(completed_at), completed_at) ELSE completed_at END
             WHERE run_id IN (SELECT batch_id FROM hygiene_spawn_batches)
               AND (instr(spawned_at, 'T') > 0 OR instr(completed_at, 'T') > 0)",
            [],
        )?;
        if rewritten > 0 {
            tracing::info!(
                rows = rewritten,
                "rewrote the times of agent_executions rows speckit-hygiene 0.1 spawned in the host's format"
            );
        }
    }
    Ok(())
}

fn repair_carriers(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS temp.spawn_legacy_carriers (id INTEGER PRIMARY KEY);
         DELETE FROM temp.spawn_legacy_carriers;
         INSERT OR IGNORE INTO temp.spawn_legacy_carriers (id) {CARRIERS};"
    ))?;
    // A response 0.1 put only in agent_outputs (its execution row was completed already)
    // moves to its execution row before the output goes.
    conn.execute(
        "UPDATE agent_executions SET response_text = (
                 SELECT o.content FROM agent_outputs o
                 JOIN hygiene_spawn_batches b ON b.consensus_run_id = o.run_id
                 WHERE o.run_id IN (SELECT id FROM temp.spawn_legacy_carriers)
                   AND b.batch_id = agent_executions.run_id
                   AND o.agent_name = agent_executions.agent_name
                 ORDER BY o.id DESC LIMIT 1)
             WHERE response_text IS NULL AND EXISTS (
                 SELECT 1 FROM agent_outputs o
                 JOIN hygiene_spawn_batches b ON b.consensus_run_id = o.run_id
                 WHERE o.run_id IN (SELECT id FROM temp.spawn_legacy_carriers)
                   AND b.batch_id = agent_executions.run_id
                   AND o.agent_name = agent_executions.agent_name)",
        [],
    )?;
    // Keep a carrier holding an output found nowhere else.
    let kept = conn.execute(
        "DELETE FROM temp.spawn_legacy_carriers WHERE id IN (
             SELECT o.run_id FROM agent_outputs o
             JOIN hygiene_spawn_batches b ON b.consensus_run_id = o.run_id
             WHERE o.run_id IN (SELECT id FROM temp.spawn_legacy_carriers)
               AND NOT EXISTS (SELECT 1 FROM agent_executions e
                   WHERE e.run_id = b.batch_id AND e.agent_name = o.agent_name
                     AND e.response_text = o.content))",
        [],
    )?;
    if kept > 0 {
        tracing::warn!(
            runs = kept,
            "kept consensus_runs rows speckit-hygiene 0.1 spawn created: their agent_outputs hold responses found in no agent_executions row"
        );
    }
    // The foreign key would cascade, but only on a connection with foreign_keys on.
    conn.execute_batch(
        "DELETE FROM agent_outputs WHERE run_id IN (SELECT id FROM temp.spawn_legacy_carriers);
         UPDATE hygiene_spawn_batches SET consensus_run_id = NULL
             WHERE consensus_run_id IN (SELECT id FROM temp.spawn_legacy_carriers);",
    )?;
    let deleted = conn.execute(
        "DELETE FROM consensus_runs WHERE id IN (SELECT id FROM temp.spawn_legacy_carriers)",
        [],
    )?;
    conn.execute_batch("DROP TABLE temp.spawn_legacy_carriers")?;
    if deleted > 0 {
        tracing::info!(
            runs = deleted,
            "deleted the consensus_runs rows speckit-hygiene 0.1 spawn created as carriers of its figures"
        );
    }
    Ok(())
}
