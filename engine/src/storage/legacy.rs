//! Repairs a database laid out by speckit-hygiene 0.1, which versioned its schema in
//! `PRAGMA user_version`, the host's own version number.
//!
//! This module is the only code that reads or writes `user_version`, and it writes it at
//! most once per database: to give the host back the version our 0.1 migrations overwrote.
//! 0.1 applied its migrations 1-4 above whatever version it found (`U`) and set the version
//! to the last one applied. The host's versions are 0-2, so 0.1 found `U` <= 2 and set 3 or
//! 4; on an upstream database at 2 it skipped its own migrations 1-2 (so no
//! `hygiene_job_runs`). Which of 0.1's migrations ran is written in the tables each left
//! behind, so `U` = (the first migration that ran) - 1:
//!
//! | 0.1 migration | left behind                                   |
//! |---------------|-----------------------------------------------|
//! | 1             | index `idx_consensus_runs_spec` (a duplicate of the host's `idx_consensus_spec_stage`) |
//! | 2             | `hygiene_job_runs`                            |
//! | 3             | `hygiene_archives`                            |
//! | 4             | `hygiene_spawn_batches`                       |
//!
//! The version is given back only while it still reads as the last 0.1 migration that
//! ran (nobody has changed it since), and only when no `hygiene_schema_versions` table
//! exists yet (a database this release has already seen is never looked at again).

use rusqlite::Connection;

use super::schema::{object_exists, table_exists};

/// The markers of 0.1's migrations 1-4, in order.
const MARKERS: &[(i64, &str)] = &[
    (1, "idx_consensus_runs_spec"),
    (2, "hygiene_job_runs"),
    (3, "hygiene_archives"),
    (4, "hygiene_spawn_batches"),
];

/// What the repair did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyRepair {
    /// `user_version` as found, and as given back.
    pub found_version: i64,
    pub restored_version: i64,
}

/// Whether the database may hold a 0.1 layout not yet repaired (a cheap read).
pub fn may_need_repair(conn: &Connection) -> rusqlite::Result<bool> {
    if table_exists(conn, "hygiene_schema_versions")? {
        return Ok(false);
    }
    for (_, name) in MARKERS {
        if object_exists(conn, name)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Inside a write transaction: gives the host its version back and drops 0.1's duplicate
/// index. Returns what it changed, `None` when the database is not (or no longer) a 0.1
/// layout.
///
/// Runs as part of the engine's first schema migration, so in the same transaction that
/// creates `hygiene_schema_versions`: it runs once per database.
pub fn repair(conn: &Connection) -> rusqlite::Result<Option<LegacyRepair>> {
    let mut applied = Vec::new();
    for (version, name) in MARKERS {
        if object_exists(conn, name)? {
            applied.push(*version);
        }
    }
    // 0.1's own duplicate of the host's index; the host never made it.
    conn.execute_batch("DROP INDEX IF EXISTS idx_consensus_runs_spec")?;
    let (Some(first), Some(last)) = (applied.first(), applied.last()) else {
        return Ok(None);
    };
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found != *last {
        // Someone set the version since 0.1 did: it is theirs, leave it.
        return Ok(None);
    }
    let restored = first - 1;
    // PRAGMA arguments cannot be bound; `restored` is 0, 1 or 2.
    conn.execute_batch(&format!("PRAGMA user_version = {restored}"))?;
    tracing::warn!(
        found_version = found,
        restored_version = restored,
        "gave the host application back the schema version speckit-hygiene 0.1 had overwritten"
    );
    Ok(Some(LegacyRepair {
        found_version: found,
        restored_version: restored,
    }))
}
