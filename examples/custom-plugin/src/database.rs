//! What the digest keeps in, and reads from, the engine's database: its own table of one
//! row per SPEC (created by its migration, written in one transaction per run), and the
//! host's `consensus_runs` (only read).

use serde_json::{json, Map, Value};
use speckit_plugin_sdk::storage::Storage;
use speckit_plugin_sdk::{table_prefix, Migration, Statement};
use std::collections::BTreeMap;

/// The name this library exports. The engine derives the plugin's table prefix from it
/// (not from the `[plugins.<name>]` key, which the migrations, declared before any run,
/// cannot know): `speckit-digest` owns `plugin_speckit_digest_*`.
pub const PLUGIN_NAME: &str = "speckit-digest";

/// The host's table of consensus runs (upstream's schema: `id`, `spec_id`, `stage`,
/// `run_timestamp` in ms since the epoch, `consensus_ok`, `degraded`, `synthesis_json`).
pub const CONSENSUS_RUNS: &str = "consensus_runs";

/// The digest's own table: one row per SPEC digested.
pub fn specs_table() -> String {
    format!("{}specs", table_prefix(PLUGIN_NAME))
}

/// The digest's schema. Append new steps; never edit a released one.
pub fn migrations() -> Vec<Migration> {
    vec![Migration::new(
        1,
        "specs",
        format!(
            "CREATE TABLE {} (
                -- the SPEC folder's name under consensus/
                spec_id TEXT PRIMARY KEY,
                -- lower-case hex SHA-256 of the Markdown digest on disk
                digest_sha256 TEXT NOT NULL,
                markdown_bytes INTEGER NOT NULL,
                -- stages with at least one real (not template) synthesis
                stages INTEGER NOT NULL,
                -- synthesis files that record a run (templates excluded)
                runs INTEGER NOT NULL,
                -- consensus_runs rows for the SPEC; NULL when the host table is absent
                database_runs INTEGER,
                -- RFC 3339, the host clock's time of the run that wrote the row
                updated_at TEXT NOT NULL,
                -- that run's row in hygiene_job_runs
                run_id INTEGER NOT NULL
            )",
            specs_table()
        ),
    )]
}

/// What the digest needs from the engine's storage: [`Storage`] in a real run, another
/// implementation in tests (a hand-made job context has no storage).
pub trait Database {
    fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Map<String, Value>>, String>;
    fn write(&self, statements: Vec<Statement>) -> Result<Vec<u64>, String>;
}

impl Database for Storage<'_> {
    fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Map<String, Value>>, String> {
        Storage::query(self, sql, params)
    }

    fn write(&self, statements: Vec<Statement>) -> Result<Vec<u64>, String> {
        Storage::write(self, statements)
    }
}

/// The newest `consensus_runs` row of a SPEC.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestRun {
    pub stage: String,
    /// `run_timestamp` as stored (ms since the epoch).
    pub timestamp_ms: i64,
    /// The same as RFC 3339 (UTC, seconds), when SQLite can express it.
    pub time: Option<String>,
    pub consensus_ok: bool,
    pub degraded: bool,
}

/// What `consensus_runs` holds for one SPEC.
#[derive(Debug, Clone, PartialEq)]
pub enum DatabaseRuns {
    /// The database has no `consensus_runs` table (a fresh or foreign database).
    NoTable,
    Rows {
        count: u64,
        latest: Option<LatestRun>,
    },
}

impl DatabaseRuns {
    /// The row count, `None` without a table.
    pub fn count(&self) -> Option<u64> {
        match self {
            DatabaseRuns::NoTable => None,
            DatabaseRuns::Rows { count, .. } => Some(*count),
        }
    }

    /// For the report's data.
    pub fn to_json(&self) -> Value {
        match self {
            DatabaseRuns::NoTable => json!({ "table": false, "rows": null, "latest": null }),
            DatabaseRuns::Rows { count, latest } => json!({
                "table": true,
                "rows": count,
                "latest": latest.as_ref().map(|l| json!({
                    "stage": l.stage,
                    "run_timestamp": l.timestamp_ms,
                    "time": l.time,
                    "consensus_ok": l.consensus_ok,
                    "degraded": l.degraded,
                })),
            }),
        }
    }
}

/// Whether the host's `consensus_runs` table exists.
pub fn has_consensus_runs(db: &dyn Database) -> Result<bool, String> {
    let rows = db
        .query(
            "SELECT count(*) AS n FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?1",
            vec![json!(CONSENSUS_RUNS)],
        )
        .map_err(|e| format!("cannot look for the {CONSENSUS_RUNS} table: {e}"))?;
    Ok(rows
        .first()
        .and_then(|r| r.get("n"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
        > 0)
}

/// Each of `spec_ids`' `consensus_runs` rows: how many, and the newest (by `run_timestamp`,
/// then `id`). One query for all SPECs, their ids bound as one JSON array. A SPEC without
/// rows is absent from the map. The caller checks first that the table exists.
pub fn consensus_runs(
    db: &dyn Database,
    spec_ids: &[String],
) -> Result<BTreeMap<String, DatabaseRuns>, String> {
    if spec_ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows = db
        .query(
            // The count per SPEC first, then one look-up of each SPEC's newest row (not
            // one per row: a SPEC may have thousands).
            "WITH counts AS ( \
                 SELECT spec_id, count(*) AS runs FROM consensus_runs \
                 WHERE spec_id IN (SELECT value FROM json_each(?1)) GROUP BY spec_id) \
             SELECT counts.spec_id AS spec_id, counts.runs AS runs, l.stage AS stage, \
                    l.run_timestamp AS run_timestamp, \
                    strftime('%Y-%m-%dT%H:%M:%SZ', l.run_timestamp / 1000, 'unixepoch') AS time, \
                    l.consensus_ok AS consensus_ok, l.degraded AS degraded \
             FROM counts LEFT JOIN consensus_runs l ON l.id = ( \
                 SELECT n.id FROM consensus_runs n WHERE n.spec_id = counts.spec_id \
                 ORDER BY n.run_timestamp DESC, n.id DESC LIMIT 1)",
            vec![json!(spec_ids)],
        )
        .map_err(|e| format!("cannot read {CONSENSUS_RUNS}: {e}"))?;
    let mut out = BTreeMap::new();
    for row in rows {
        let text = |key: &str| row.get(key).and_then(Value::as_str).map(str::to_string);
        let int = |key: &str| row.get(key).and_then(Value::as_i64);
        let Some(spec_id) = text("spec_id") else {
            return Err(format!(
                "{CONSENSUS_RUNS}: a row came back without a spec_id: {row:?}"
            ));
        };
        let count = int("runs").unwrap_or(0).max(0) as u64;
        let latest = int("run_timestamp").map(|timestamp_ms| LatestRun {
            stage: text("stage").unwrap_or_default(),
            timestamp_ms,
            time: text("time"),
            consensus_ok: int("consensus_ok").unwrap_or(0) != 0,
            degraded: int("degraded").unwrap_or(0) != 0,
        });
        out.insert(spec_id, DatabaseRuns::Rows { count, latest });
    }
    Ok(out)
}

/// One row of the digest's table, as written (or, dry, as it would be).
#[derive(Debug, Clone, PartialEq)]
pub struct SpecRow {
    pub spec_id: String,
    pub digest_sha256: String,
    pub markdown_bytes: u64,
    pub stages: u64,
    pub runs: u64,
    pub database_runs: Option<u64>,
}

/// The upsert of every row, for one write batch (one transaction).
pub fn upsert_statements(rows: &[SpecRow], updated_at: &str, run_id: i64) -> Vec<Statement> {
    let sql = format!(
        "INSERT INTO {} (spec_id, digest_sha256, markdown_bytes, stages, runs, database_runs, updated_at, run_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT(spec_id) DO UPDATE SET digest_sha256 = excluded.digest_sha256, \
             markdown_bytes = excluded.markdown_bytes, stages = excluded.stages, \
             runs = excluded.runs, database_runs = excluded.database_runs, \
             updated_at = excluded.updated_at, run_id = excluded.run_id",
        specs_table()
    );
    rows.iter()
        .map(|r| {
            Statement::new(
                sql.clone(),
                vec![
                    json!(r.spec_id),
                    json!(r.digest_sha256),
                    json!(r.markdown_bytes),
                    json!(r.stages),
                    json!(r.runs),
                    json!(r.database_runs),
                    json!(updated_at),
                    json!(run_id),
                ],
            )
        })
        .collect()
}
