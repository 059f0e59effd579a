//! Schema migrations, versioned by `PRAGMA user_version`, each in one transaction.
//!
//! Version 1 creates the upstream spec-kit tables where absent (so an existing
//! `consensus_artifacts.db` keeps every row); later versions add the engine's own tables.
//! Every statement is `IF NOT EXISTS`, so a database that already has a table is left as is.
//! Append new migrations with the next number; never edit a released one.

use super::StorageError;
use rusqlite::Connection;
use std::path::Path;

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "upstream spec-kit schema",
        sql: r#"
CREATE TABLE IF NOT EXISTS consensus_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    spec_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    run_timestamp INTEGER NOT NULL,
    consensus_ok INTEGER NOT NULL,
    degraded INTEGER NOT NULL DEFAULT 0,
    synthesis_json TEXT,
    UNIQUE(spec_id, stage, run_timestamp)
);
CREATE TABLE IF NOT EXISTS agent_outputs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES consensus_runs(id) ON DELETE CASCADE,
    agent_name TEXT NOT NULL,
    model_version TEXT,
    content TEXT NOT NULL,
    output_timestamp INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_executions (
    agent_id TEXT PRIMARY KEY,
    spec_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    phase_type TEXT NOT NULL,
    agent_name TEXT NOT NULL,
    run_id TEXT,
    spawned_at TEXT NOT NULL,
    completed_at TEXT,
    response_text TEXT,
    extraction_error TEXT
);
CREATE INDEX IF NOT EXISTS idx_consensus_runs_spec ON consensus_runs(spec_id, stage);
CREATE INDEX IF NOT EXISTS idx_agent_outputs_run ON agent_outputs(run_id);
CREATE INDEX IF NOT EXISTS idx_agent_executions_spec ON agent_executions(spec_id, stage);
"#,
    },
    Migration {
        version: 2,
        name: "engine tables: job runs, schedule state and leases",
        sql: r#"
CREATE TABLE IF NOT EXISTS hygiene_job_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    plugin TEXT NOT NULL,
    engine_id TEXT NOT NULL,
    trigger TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    outcome TEXT NOT NULL,
    report_json TEXT
);
CREATE INDEX IF NOT EXISTS idx_hygiene_job_runs_job ON hygiene_job_runs(job, started_at);
CREATE TABLE IF NOT EXISTS hygiene_schedule_state (
    job TEXT PRIMARY KEY,
    last_fire_at INTEGER,
    last_started_at INTEGER,
    last_finished_at INTEGER,
    last_outcome TEXT,
    lease_owner TEXT,
    lease_expires_at INTEGER
);
"#,
    },
    Migration {
        version: 3,
        name: "retention: archive manifests",
        sql: r#"
-- One row per verified archive; kept (with purged_at) after the file is purged.
CREATE TABLE IF NOT EXISTS hygiene_archives (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- the SPEC folder (or database SPEC-ID) the archive belongs to
    spec_id TEXT NOT NULL,
    -- relative to the evidence root: cleanup/archives/<SPEC>/<name>.tar.zst
    path TEXT NOT NULL UNIQUE,
    -- ms since the epoch, from the manifest
    created_at INTEGER NOT NULL,
    -- size of the archive file, and sha256 of its bytes
    bytes INTEGER NOT NULL,
    member_count INTEGER NOT NULL,
    source_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    db_rows INTEGER NOT NULL DEFAULT 0,
    -- 'written' by cleanup, or 'adopted': found verified on disk without a record
    origin TEXT NOT NULL DEFAULT 'written',
    -- ms since the epoch; NULL while the file exists
    purged_at INTEGER
);
CREATE INDEX IF NOT EXISTS idx_hygiene_archives_spec ON hygiene_archives(spec_id, purged_at);
-- The manifest: one row per member (evidence files and db/<table>.jsonl parts); deleted
-- when the archive is purged.
CREATE TABLE IF NOT EXISTS hygiene_archive_members (
    archive_id INTEGER NOT NULL REFERENCES hygiene_archives(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    -- ns since the epoch (0 for db parts)
    mtime INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (archive_id, path)
);
"#,
    },
    Migration {
        version: 4,
        name: "spawn: metrics",
        sql: r#"
CREATE TABLE IF NOT EXISTS hygiene_spawn_batches (
    batch_id TEXT PRIMARY KEY,
    spec_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    agent_count INTEGER NOT NULL,
    max_concurrency INTEGER NOT NULL,
    -- ms since the epoch
    started_at INTEGER NOT NULL,
    -- request to every agent initialised, in microseconds; NULL while the batch runs
    total_us INTEGER,
    ok_count INTEGER,
    failed_count INTEGER,
    -- the consensus run its agents' outputs go to, created at the first completion
    consensus_run_id INTEGER REFERENCES consensus_runs(id) ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS idx_hygiene_spawn_batches_started ON hygiene_spawn_batches(started_at);
CREATE INDEX IF NOT EXISTS idx_hygiene_spawn_batches_run ON hygiene_spawn_batches(consensus_run_id);
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
"#,
    },
];

/// The newest schema version this engine knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

/// Applies every migration newer than the database's `user_version`, each in its own
/// `BEGIN IMMEDIATE` transaction together with the version bump.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StorageError> {
    let sqlite = |source| StorageError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sqlite)?;
    if current > latest_version() {
        return Err(StorageError::SchemaTooNew {
            path: path.to_path_buf(),
            found: current,
            known: latest_version(),
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let failed = |source| StorageError::Migration {
            path: path.to_path_buf(),
            version: migration.version,
            source,
        };
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(failed)?;
        tx.execute_batch(migration.sql).map_err(failed)?;
        // PRAGMA arguments cannot be bound; the version is an integer constant.
        tx.execute_batch(&format!("PRAGMA user_version = {}", migration.version))
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(database = %path.display(), version = migration.version, name = migration.name, "applied migration");
    }
    Ok(())
}
