//! Upstream-shaped consensus databases, optionally bloated like the real 153 MB one
//! (nearly all pages free, a handful of live rows, `auto_vacuum = NONE`).

use rusqlite::{params, Connection};
use std::path::Path;

/// Lays out a database the way the host application does on its first start: its
/// `ConsensusDb::init` and `migrate_to_latest` statements (the engine's copy of them, which
/// a test compares with the upstream-made fixture), then `PRAGMA user_version = 2`, the
/// host's schema version. Only a generator playing the host may set that version.
pub fn create_upstream_schema(conn: &Connection) -> rusqlite::Result<()> {
    speckit_engine::storage::host::complete(conn)?;
    conn.execute_batch("PRAGMA user_version = 2")
}

/// What a generated database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseSummary {
    pub live_executions: i64,
    pub live_runs: i64,
    pub live_outputs: i64,
    pub page_count: i64,
    pub freelist_count: i64,
}

/// Creates an upstream-made database at `path` ([`create_upstream_schema`], version 2) of
/// about `bloat_bytes`, then deletes all but `keep_rows` agent executions, leaving the
/// space on the freelist (auto_vacuum NONE, as upstream leaves it; WAL mode, which the
/// host's pool sets). Rows follow the host's formats: `datetime('now')`-style text times,
/// millisecond run timestamps. Consensus runs of `runs` (spec, stage, age in days) are
/// added with one agent output each and kept.
pub fn create_bloated(
    path: &Path,
    bloat_bytes: u64,
    keep_rows: usize,
    runs: &[(&str, &str, i64)],
    now_ms: i64,
) -> rusqlite::Result<DatabaseSummary> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA synchronous = OFF;")?;
    create_upstream_schema(&conn)?;
    let response: String = (0..16 * 1024)
        .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    let rows = (bloat_bytes / (response.len() as u64 + 200)).max(keep_rows as u64) as usize;
    let tx = conn.unchecked_transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO agent_executions (agent_id, spec_id, stage, phase_type, agent_name, run_id, spawned_at, completed_at, response_text) VALUES (?1, ?2, ?3, 'regular_stage', ?4, ?5, ?6, ?6, ?7)",
        )?;
        for i in 0..rows {
            insert.execute(params![
                format!("agent-{i:08}"),
                format!("SPEC-KIT-{:03}", i % 50),
                ["spec-plan", "spec-tasks", "spec-implement"][i % 3],
                ["gemini", "claude", "gpt_pro"][i % 3],
                format!("run-{}", i / 3),
                "2025-10-01 00:00:00",
                response,
            ])?;
        }
        for (i, (spec, stage, age_days)) in runs.iter().enumerate() {
            let ts = now_ms - age_days * 86_400_000 - i as i64;
            tx.execute(
                "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, degraded, synthesis_json) VALUES (?1, ?2, ?3, 1, 0, ?4)",
                params![spec, stage, ts, format!("{{\"stage\":\"{stage}\",\"verdict\":\"ok\"}}")],
            )?;
            let run_id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO agent_outputs (run_id, agent_name, model_version, content, output_timestamp) VALUES (?1, 'gemini', 'g-2.5', ?2, ?3)",
                params![run_id, format!("{{\"spec\":\"{spec}\",\"analysis\":\"fine\"}}"), ts],
            )?;
        }
    }
    tx.commit()?;
    conn.execute(
        "DELETE FROM agent_executions WHERE rowid NOT IN (SELECT rowid FROM agent_executions ORDER BY rowid DESC LIMIT ?1)",
        params![keep_rows as i64],
    )?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    summarize(&conn)
}

/// Row and page counts of a database.
pub fn summarize(conn: &Connection) -> rusqlite::Result<DatabaseSummary> {
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
    Ok(DatabaseSummary {
        live_executions: count("SELECT count(*) FROM agent_executions")?,
        live_runs: count("SELECT count(*) FROM consensus_runs")?,
        live_outputs: count("SELECT count(*) FROM agent_outputs")?,
        page_count: count("PRAGMA page_count")?,
        freelist_count: count("PRAGMA freelist_count")?,
    })
}
