//! The engine's and the plugins' own schema, versioned per component in
//! `hygiene_schema_versions`, never in `PRAGMA user_version` (that belongs to the host).
//!
//! A component (`engine`, `retention`, `spawn`, a host's own plugin) declares an ordered list
//! of migrations. Each applies in one `BEGIN IMMEDIATE` transaction together with its
//! version row, so a crash leaves a component at the old version or the new, never between.
//! Append new migrations with the next number; never edit a released one.

use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

use super::sandbox::{within, Sandbox};
use super::StorageError;

/// One step of a component's schema.
#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    /// Runs inside the migration's transaction (open on this connection). Statements should be `IF NOT EXISTS` where
    /// they can: a database laid out by an earlier release may already hold the table.
    pub apply: MigrationStep,
}

/// What a migration runs.
#[derive(Debug)]
pub enum MigrationStep {
    /// Compiled-in code.
    Code(fn(&Connection) -> rusqlite::Result<()>),
    /// SQL a dynamic plugin declared; run inside its component's sandbox.
    Sql(&'static str),
}

/// The schema one component owns.
#[derive(Debug)]
pub struct ComponentSchema {
    /// Unique among components: `engine`, or the plugin's name.
    pub component: &'static str,
    pub migrations: &'static [Migration],
    /// Set for a dynamic plugin: its migrations may touch only these tables.
    pub sandbox: Option<&'static Sandbox>,
}

impl ComponentSchema {
    /// The newest version this build knows.
    pub fn latest_version(&self) -> i64 {
        self.migrations.last().map(|m| m.version).unwrap_or(0)
    }
}

const VERSIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS hygiene_schema_versions (
    -- `engine`, or the name of the plugin that owns the tables
    component TEXT PRIMARY KEY,
    -- the newest migration applied
    version INTEGER NOT NULL,
    -- ms since the epoch
    applied_at INTEGER NOT NULL
)";

/// Whether a table (or view) exists in the main database.
pub fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?1",
    )?
    .query_row([name], |r| r.get::<_, i64>(0))
    .map(|n| n > 0)
}

/// Whether `table` has a column named `column` (false when the table does not exist).
pub fn column_exists(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2")?
        .query_row([table, column], |r| r.get::<_, i64>(0))
        .map(|n| n > 0)
}

/// Whether any schema object (table, index, view, trigger) of that name exists.
pub fn object_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT count(*) FROM sqlite_master WHERE name = ?1")?
        .query_row([name], |r| r.get::<_, i64>(0))
        .map(|n| n > 0)
}

/// The component's recorded version (0 when it has none, or no versions table exists).
pub fn recorded_version(conn: &Connection, component: &str) -> rusqlite::Result<i64> {
    if !table_exists(conn, "hygiene_schema_versions")? {
        return Ok(0);
    }
    Ok(conn
        .query_row(
            "SELECT version FROM hygiene_schema_versions WHERE component = ?1",
            [component],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Whether `schema` is fully applied (a cheap read; no lock taken).
pub fn is_current(conn: &Connection, schema: &ComponentSchema) -> rusqlite::Result<bool> {
    Ok(recorded_version(conn, schema.component)? >= schema.latest_version())
}

/// Applies every migration of `schema` newer than its recorded version, each in its own
/// `BEGIN IMMEDIATE` transaction, opened by `begin_immediate` (which retries it on another
/// process's lock).
pub fn migrate(
    conn: &Connection,
    path: &Path,
    schema: &'static ComponentSchema,
    now_ms: i64,
    begin_immediate: &dyn Fn(&Connection) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    for migration in schema.migrations {
        begin_immediate(conn)?;
        let applied = apply_one(conn, path, schema, migration, now_ms).and_then(|applied| {
            conn.execute_batch("COMMIT")
                .map_err(|cause| failed(path, schema, migration, cause))?;
            Ok(applied)
        });
        match applied {
            Ok(true) => tracing::info!(
                component = schema.component,
                version = migration.version,
                name = migration.name,
                "applied schema migration"
            ),
            Ok(false) => {}
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    Ok(())
}

fn failed(
    path: &Path,
    schema: &'static ComponentSchema,
    migration: &Migration,
    cause: rusqlite::Error,
) -> StorageError {
    StorageError::Migration {
        path: path.to_path_buf(),
        component: schema.component,
        version: migration.version,
        name: migration.name,
        cause: Box::new(cause),
    }
}

/// One migration inside the open transaction; `Ok(false)` when it was already applied.
/// The version is read inside the write transaction: another process may have applied the
/// migration since we last looked.
fn apply_one(
    conn: &Connection,
    path: &Path,
    schema: &'static ComponentSchema,
    migration: &Migration,
    now_ms: i64,
) -> Result<bool, StorageError> {
    let fail = |cause| failed(path, schema, migration, cause);
    conn.execute_batch(VERSIONS_TABLE).map_err(fail)?;
    let current = recorded_version(conn, schema.component).map_err(fail)?;
    if current > schema.latest_version() {
        return Err(StorageError::SchemaTooNew {
            path: path.to_path_buf(),
            component: schema.component,
            found: current,
            known: schema.latest_version(),
        });
    }
    if current >= migration.version {
        return Ok(false);
    }
    apply_step(conn, schema, migration).map_err(fail)?;
    conn.execute(
        "INSERT INTO hygiene_schema_versions (component, version, applied_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (component) DO UPDATE SET version = excluded.version, applied_at = excluded.applied_at",
        params![schema.component, migration.version, now_ms],
    )
    .map_err(fail)?;
    Ok(true)
}

fn apply_step(
    conn: &Connection,
    schema: &ComponentSchema,
    migration: &Migration,
) -> rusqlite::Result<()> {
    let run = || match migration.apply {
        MigrationStep::Code(apply) => apply(conn),
        MigrationStep::Sql(sql) => conn.execute_batch(sql),
    };
    match schema.sandbox {
        None => run(),
        Some(sandbox) => match within(sandbox, run) {
            (Err(e), Some(refused)) => Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_AUTH),
                Some(format!("{e}: {refused}")),
            )),
            (result, _) => result,
        },
    }
}

/// The engine's own tables: job runs (bounded by `[schedule] job_history_*`) and schedule
/// state with leases. Migration 1 also repairs a 0.1 layout (see [`super::legacy`]), in
/// the same transaction that first records a version here.
pub static ENGINE_SCHEMA: ComponentSchema = ComponentSchema {
    component: "engine",
    migrations: &[
        Migration {
            version: 1,
            name: "job runs, schedule state and leases",
            apply: MigrationStep::Code(engine_v1),
        },
        Migration {
            version: 2,
            name: "the policy file each job run served",
            apply: MigrationStep::Code(engine_v2),
        },
    ],
    sandbox: None,
};

/// Version 2: `hygiene_job_runs.config_path`, the policy file a run served (one database
/// may serve several repositories). Looked for first: ADD COLUMN has no IF NOT EXISTS.
fn engine_v2(conn: &Connection) -> rusqlite::Result<()> {
    if !column_exists(conn, "hygiene_job_runs", "config_path")? {
        conn.execute_batch("ALTER TABLE hygiene_job_runs ADD COLUMN config_path TEXT")?;
    }
    Ok(())
}

fn engine_v1(conn: &Connection) -> rusqlite::Result<()> {
    super::legacy::repair(conn)?;
    conn.execute_batch(
        r#"
CREATE TABLE IF NOT EXISTS hygiene_job_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    plugin TEXT NOT NULL,
    engine_id TEXT NOT NULL,
    trigger TEXT NOT NULL,
    -- ms since the epoch
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    -- running, succeeded, failed or skipped
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
    )
}
