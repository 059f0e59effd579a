//! The host's tables, created exactly as the host creates them, where they are missing.
//!
//! The consensus database belongs to the spec-kit terminal application (upstream's
//! codex-rs TUI). Its `ConsensusDb::init` creates `agent_executions` on a plain connection
//! (then adds `run_id`, `extraction_error` and `branch_id` by `ALTER TABLE`, ignoring the
//! "duplicate column" errors, and creates three indexes); its `migrate_to_latest` (V1)
//! creates `consensus_runs`, `agent_outputs` and four indexes, and sets `PRAGMA
//! user_version = 2`. The statements below are the host's, byte for byte where SQLite keeps
//! the text (`sqlite_master.sql`), so the host's own `IF NOT EXISTS` migrations are no-ops
//! on a database we created. We never set `user_version`: the host sets it itself when it
//! first opens the file, and refuses a file whose version is above its own.

use rusqlite::Connection;

/// `ConsensusDb::init`: the table, then the columns added by later releases.
const EXECUTIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS agent_executions (
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
            )";

/// Added by `ALTER TABLE agent_executions ADD COLUMN`, in the host's order.
const EXECUTIONS_ADDED_COLUMNS: &[(&str, &str)] = &[
    ("run_id", "run_id TEXT"),
    ("extraction_error", "extraction_error TEXT"),
    ("branch_id", "branch_id TEXT"),
];

const EXECUTIONS_INDEXES: &str = "CREATE INDEX IF NOT EXISTS idx_agent_executions_spec
             ON agent_executions(spec_id, stage);
CREATE INDEX IF NOT EXISTS idx_agent_executions_run
             ON agent_executions(run_id);
CREATE INDEX IF NOT EXISTS idx_agent_executions_branch
             ON agent_executions(spec_id, stage, branch_id);";

/// `migrate_to_latest`, V1 (V2 only drops tables of the host's older releases).
const V1_TABLES_AND_INDEXES: &str = "CREATE TABLE IF NOT EXISTS consensus_runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            spec_id TEXT NOT NULL,
            stage TEXT NOT NULL,
            run_timestamp INTEGER NOT NULL,
            consensus_ok BOOLEAN NOT NULL,
            degraded BOOLEAN DEFAULT 0,
            synthesis_json TEXT,
            UNIQUE(spec_id, stage, run_timestamp)
        );
CREATE TABLE IF NOT EXISTS agent_outputs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id INTEGER NOT NULL,
            agent_name TEXT NOT NULL,
            model_version TEXT,
            content TEXT NOT NULL,
            output_timestamp INTEGER NOT NULL,
            FOREIGN KEY(run_id) REFERENCES consensus_runs(id) ON DELETE CASCADE
        );
CREATE INDEX IF NOT EXISTS idx_consensus_spec_stage
            ON consensus_runs(spec_id, stage);
CREATE INDEX IF NOT EXISTS idx_consensus_timestamp
            ON consensus_runs(run_timestamp);
CREATE INDEX IF NOT EXISTS idx_agent_outputs_run
            ON agent_outputs(run_id);
CREATE INDEX IF NOT EXISTS idx_agent_outputs_agent
            ON agent_outputs(agent_name);";

/// The host's tables and indexes, by name.
pub const HOST_TABLES: &[&str] = &["agent_executions", "consensus_runs", "agent_outputs"];
pub const HOST_INDEXES: &[&str] = &[
    "idx_agent_executions_spec",
    "idx_agent_executions_run",
    "idx_agent_executions_branch",
    "idx_consensus_spec_stage",
    "idx_consensus_timestamp",
    "idx_agent_outputs_run",
    "idx_agent_outputs_agent",
];

/// Whether any of the host's tables, columns or indexes is missing.
pub fn incomplete(conn: &Connection) -> rusqlite::Result<bool> {
    for name in HOST_TABLES.iter().chain(HOST_INDEXES) {
        if !super::schema::object_exists(conn, name)? {
            return Ok(true);
        }
    }
    let columns = execution_columns(conn)?;
    Ok(EXECUTIONS_ADDED_COLUMNS
        .iter()
        .any(|(name, _)| !columns.iter().any(|c| c == name)))
}

fn execution_columns(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('agent_executions')")?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    names.collect()
}

/// Creates what is missing, as the host would; run inside a write transaction. Present
/// objects are left exactly as they are.
pub fn complete(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(EXECUTIONS_TABLE)?;
    let columns = execution_columns(conn)?;
    for (name, definition) in EXECUTIONS_ADDED_COLUMNS {
        if !columns.iter().any(|c| c == name) {
            conn.execute_batch(&format!(
                "ALTER TABLE agent_executions ADD COLUMN {definition}"
            ))?;
        }
    }
    conn.execute_batch(EXECUTIONS_INDEXES)?;
    conn.execute_batch(V1_TABLES_AND_INDEXES)?;
    Ok(())
}
