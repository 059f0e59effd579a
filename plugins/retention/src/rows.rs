//! Database retention: rows of `consensus_runs`, `agent_outputs` and `agent_executions` of
//! inactive SPECs older than the archive age go into the SPEC's archive as JSON Lines
//! (`db/<table>.jsonl`, one object per row, every column) and are deleted in the same
//! transaction that records the verified archive.
//!
//! Ages: `consensus_runs.run_timestamp` (ms); an `agent_outputs` row goes with its run;
//! `agent_executions.spawned_at` (text, any style [`crate::age`] reads; a row whose date
//! cannot be read is kept and counted).
//!
//! A row is deleted only if it is still byte-for-byte the row that was archived (its JSON
//! hashes the same), and a run only once no output refers to it any more, so a row written
//! or changed after the plan is never lost.

use rusqlite::types::{Value, ValueRef};
use rusqlite::{params_from_iter, Connection, Transaction};
use serde::Serialize;
use sha2::{Digest, Sha256};
use speckit_engine::storage::table_exists;
use std::collections::BTreeSet;
use std::io::{BufRead, BufWriter, Seek, Write};

use crate::archive::DbSpool;
use crate::error::RetentionError;

/// The tables database retention archives, parents first (restore inserts in this order).
pub const TABLES: [&str; 3] = ["consensus_runs", "agent_outputs", "agent_executions"];

fn key_column(table: &str) -> &'static str {
    match table {
        "agent_executions" => "agent_id",
        _ => "id",
    }
}

/// The rows of one SPEC the plan archives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RowsPlan {
    /// The SPEC-ID the rows carry in their `spec_id` column.
    pub spec_id: String,
    pub run_ids: Vec<i64>,
    pub output_ids: Vec<i64>,
    pub execution_ids: Vec<String>,
}

impl RowsPlan {
    pub fn is_empty(&self) -> bool {
        self.run_ids.is_empty() && self.output_ids.is_empty() && self.execution_ids.is_empty()
    }

    /// How many rows of `table` the plan archives.
    pub fn count(&self, table: &str) -> usize {
        match table {
            "consensus_runs" => self.run_ids.len(),
            "agent_outputs" => self.output_ids.len(),
            _ => self.execution_ids.len(),
        }
    }

    pub fn total(&self) -> usize {
        TABLES.iter().map(|t| self.count(t)).sum()
    }

    /// `table:key` of every row, for the archive's name.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::with_capacity(self.total());
        keys.extend(self.run_ids.iter().map(|k| format!("consensus_runs:{k}")));
        keys.extend(self.output_ids.iter().map(|k| format!("agent_outputs:{k}")));
        keys.extend(
            self.execution_ids
                .iter()
                .map(|k| format!("agent_executions:{k}")),
        );
        keys
    }
}

/// Every `spec_id` the host's tables hold (a table that does not exist holds none: the
/// host creates its tables itself, and a dry run opens the database read-only).
pub fn spec_ids(conn: &Connection) -> rusqlite::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for table in ["consensus_runs", "agent_executions"] {
        if !table_exists(conn, table)? {
            continue;
        }
        let mut stmt = conn.prepare(&format!("SELECT DISTINCT spec_id FROM \"{table}\""))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        for row in rows {
            out.insert(row?);
        }
    }
    Ok(out)
}

/// Rows of `spec_id` older than `cutoff_ms`, and how many executions have an unreadable
/// `spawned_at` (kept). The host's formats: `consensus_runs.run_timestamp` is ms since
/// the epoch (an output goes with its run); `agent_executions.spawned_at` is SQLite's
/// `datetime('now')` text (`2026-10-03 12:42:58`, UTC), or RFC 3339 from older releases.
pub fn plan(conn: &Connection, spec_id: &str, cutoff_ms: i64) -> rusqlite::Result<(RowsPlan, u64)> {
    let mut plan = RowsPlan {
        spec_id: spec_id.to_string(),
        ..RowsPlan::default()
    };
    let runs = table_exists(conn, "consensus_runs")?;
    if runs {
        plan.run_ids = run_ids(conn, spec_id, cutoff_ms)?;
    }
    if runs && table_exists(conn, "agent_outputs")? {
        plan.output_ids = output_ids(conn, spec_id, cutoff_ms)?;
    }
    let mut undated = 0;
    if table_exists(conn, "agent_executions")? {
        let (ids, n) = execution_ids(conn, spec_id, cutoff_ms)?;
        plan.execution_ids = ids;
        undated = n;
    }
    Ok((plan, undated))
}

fn run_ids(conn: &Connection, spec_id: &str, cutoff_ms: i64) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM consensus_runs WHERE spec_id = ?1 AND run_timestamp < ?2 ORDER BY id",
    )?;
    let ids = stmt
        .query_map(rusqlite::params![spec_id, cutoff_ms], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

fn output_ids(conn: &Connection, spec_id: &str, cutoff_ms: i64) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT o.id FROM agent_outputs o JOIN consensus_runs r ON r.id = o.run_id \
         WHERE r.spec_id = ?1 AND r.run_timestamp < ?2 ORDER BY o.id",
    )?;
    let ids = stmt
        .query_map(rusqlite::params![spec_id, cutoff_ms], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

fn execution_ids(
    conn: &Connection,
    spec_id: &str,
    cutoff_ms: i64,
) -> rusqlite::Result<(Vec<String>, u64)> {
    let mut ids = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT agent_id, spawned_at FROM agent_executions WHERE spec_id = ?1 ORDER BY agent_id",
    )?;
    let mut undated = 0;
    let rows = stmt.query_map([spec_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
    })?;
    for row in rows {
        let (agent_id, spawned_at) = row?;
        match spawned_at.as_deref().and_then(crate::age::parse_timestamp) {
            Some(at) if at.timestamp_millis() < cutoff_ms => ids.push(agent_id),
            Some(_) => {}
            None => undated += 1,
        }
    }
    Ok((ids, undated))
}

/// The key of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Int(i64),
    Text(String),
}

impl rusqlite::ToSql for Key {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Key::Int(i) => i.to_sql(),
            Key::Text(s) => s.to_sql(),
        }
    }
}

/// The hash of an archived row, to check before deleting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowHash {
    pub table: &'static str,
    pub key: Key,
    pub sha256: [u8; 32],
}

/// Rows written to spool files, ready for an archive.
#[derive(Debug)]
pub struct Spooled {
    pub spools: Vec<DbSpool>,
    pub hashes: Vec<RowHash>,
}

/// One row as a JSON object of every column (blobs as `{"$blob_hex": ".."}`).
pub fn row_json(row: &rusqlite::Row<'_>, columns: &[String]) -> rusqlite::Result<String> {
    let mut object = serde_json::Map::new();
    for (i, name) in columns.iter().enumerate() {
        let value = match row.get_ref(i)? {
            ValueRef::Null => serde_json::Value::Null,
            ValueRef::Integer(n) => serde_json::Value::from(n),
            ValueRef::Real(f) => serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            ValueRef::Text(t) => serde_json::Value::String(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => serde_json::json!({ "$blob_hex": hex::encode(b) }),
        };
        object.insert(name.clone(), value);
    }
    Ok(serde_json::Value::Object(object).to_string())
}

fn sha(line: &str) -> [u8; 32] {
    Sha256::digest(line.as_bytes()).into()
}

fn select_one<'c>(
    conn: &'c Connection,
    table: &str,
) -> rusqlite::Result<(rusqlite::CachedStatement<'c>, Vec<String>)> {
    let stmt = conn.prepare_cached(&format!(
        "SELECT * FROM \"{table}\" WHERE \"{}\" = ?1",
        key_column(table)
    ))?;
    let columns = stmt.column_names().map(|c| c.to_string()).collect();
    Ok((stmt, columns))
}

/// Reads the plan's rows into unnamed temporary files in `dir` (one per table, gone on a
/// crash). Rows deleted since the plan are left out.
pub fn spool(
    conn: &Connection,
    plan: &RowsPlan,
    dir: &crate::folder::Folder,
) -> Result<Spooled, RetentionError> {
    let mut spools = Vec::new();
    let mut hashes = Vec::new();
    let keys: [(&'static str, Vec<Key>); 3] = [
        (
            "consensus_runs",
            plan.run_ids.iter().map(|k| Key::Int(*k)).collect(),
        ),
        (
            "agent_outputs",
            plan.output_ids.iter().map(|k| Key::Int(*k)).collect(),
        ),
        (
            "agent_executions",
            plan.execution_ids
                .iter()
                .map(|k| Key::Text(k.clone()))
                .collect(),
        ),
    ];
    for (table, keys) in keys {
        if keys.is_empty() {
            continue;
        }
        let file = dir.unnamed_file().map_err(RetentionError::io(dir.path()))?;
        let mut out = BufWriter::new(file);
        let mut hasher = Sha256::new();
        let (mut stmt, columns) =
            select_one(conn, table).map_err(RetentionError::sqlite(format!("reading {table}")))?;
        let (mut rows, mut size) = (0u64, 0u64);
        for key in keys {
            let line = stmt
                .query_row([&key], |row| row_json(row, &columns))
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })
                .map_err(RetentionError::sqlite(format!("reading {table}")))?;
            let Some(line) = line else { continue };
            hashes.push(RowHash {
                table,
                key,
                sha256: sha(&line),
            });
            out.write_all(line.as_bytes())
                .map_err(RetentionError::io(dir.path()))?;
            out.write_all(b"\n")
                .map_err(RetentionError::io(dir.path()))?;
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
            rows += 1;
            size += line.len() as u64 + 1;
        }
        let mut file = out
            .into_inner()
            .map_err(|e| RetentionError::io(dir.path())(e.into_error()))?;
        file.rewind().map_err(RetentionError::io(dir.path()))?;
        spools.push(DbSpool {
            table: table.to_string(),
            file,
            rows,
            size,
            sha256: hex::encode(hasher.finalize()),
        });
    }
    Ok(Spooled { spools, hashes })
}

/// What deleting archived rows did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub rows: u64,
    /// Rows kept because they changed after being archived, or a run still referenced.
    pub kept: Vec<String>,
}

/// Deletes every archived row that is still exactly as archived. Runs last, and only
/// when no output refers to them any more.
pub fn delete_archived(tx: &Transaction<'_>, hashes: &[RowHash]) -> rusqlite::Result<Deleted> {
    let mut deleted = Deleted::default();
    let order = ["agent_outputs", "agent_executions", "consensus_runs"];
    for table in order {
        let (mut select, columns) = select_one(tx, table)?;
        let mut delete = tx.prepare_cached(&format!(
            "DELETE FROM \"{table}\" WHERE \"{}\" = ?1",
            key_column(table)
        ))?;
        for h in hashes.iter().filter(|h| h.table == table) {
            let current = select
                .query_row([&h.key], |row| row_json(row, &columns))
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            let Some(current) = current else { continue };
            if sha(&current) != h.sha256 {
                deleted.kept.push(format!(
                    "{table} row {:?} changed after it was archived; kept",
                    h.key
                ));
                continue;
            }
            if table == "consensus_runs" {
                let Key::Int(id) = h.key else { continue };
                let children: i64 = tx.query_row(
                    "SELECT count(*) FROM agent_outputs WHERE run_id = ?1",
                    [id],
                    |r| r.get(0),
                )?;
                if children > 0 {
                    deleted.kept.push(format!(
                        "consensus_runs row {id} kept: {children} output(s) not in the archive refer to it"
                    ));
                    continue;
                }
            }
            deleted.rows += delete.execute([&h.key])? as u64;
        }
    }
    Ok(deleted)
}

/// The hashes of the rows in an archive's `db/<table>.jsonl` (for adopting an archive found
/// on disk: its rows are deleted only if still identical).
pub fn hashes_of(table: &str, jsonl: &[u8]) -> Vec<RowHash> {
    let Some(table) = TABLES.iter().find(|t| **t == table) else {
        return Vec::new();
    };
    let column = key_column(table);
    let mut out = Vec::new();
    for line in jsonl.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(text) = std::str::from_utf8(line) else {
            continue;
        };
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(text)
        else {
            continue;
        };
        let key = match obj.get(column) {
            Some(serde_json::Value::Number(n)) if n.is_i64() => {
                Key::Int(n.as_i64().unwrap_or_default())
            }
            Some(serde_json::Value::String(s)) => Key::Text(s.clone()),
            _ => continue,
        };
        out.push(RowHash {
            table,
            key,
            sha256: sha(text),
        });
    }
    out
}

/// What restoring one table's rows did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RestoredRows {
    pub inserted: u64,
    /// Already there, identical.
    pub identical: u64,
    /// Rows not restored, with why (a different row with that key exists, a constraint).
    pub conflicts: Vec<String>,
}

fn table_columns(tx: &Transaction<'_>, table: &str) -> rusqlite::Result<BTreeSet<String>> {
    let mut stmt = tx.prepare(&format!("PRAGMA table_info(\"{table}\")"))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(1))?;
    rows.collect()
}

fn sql_value(v: &serde_json::Value) -> Option<Value> {
    Some(match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64()?),
        },
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Object(o) => {
            Value::Blob(hex::decode(o.get("$blob_hex")?.as_str()?).ok()?)
        }
        serde_json::Value::Array(_) => return None,
    })
}

/// Inserts archived rows back: a row whose key exists is left alone (identical: counted;
/// different: a conflict). Column names must be the table's own.
pub fn restore(
    tx: &Transaction<'_>,
    table: &str,
    jsonl: impl BufRead,
) -> Result<RestoredRows, RetentionError> {
    let Some(table) = TABLES.iter().find(|t| **t == table).copied() else {
        return Err(RetentionError::Conflict(format!(
            "{table} is not a table restore writes"
        )));
    };
    let what = format!("restoring {table}");
    let known = table_columns(tx, table).map_err(RetentionError::sqlite(what.clone()))?;
    let (mut select, columns) =
        select_one(tx, table).map_err(RetentionError::sqlite(what.clone()))?;
    let key_col = key_column(table);
    let mut out = RestoredRows::default();
    for (n, line) in jsonl.lines().enumerate() {
        let line =
            line.map_err(|e| RetentionError::Conflict(format!("{table} line {}: {e}", n + 1)))?;
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| format!("{table} line {}: {why}", n + 1);
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(&line)
        else {
            out.conflicts.push(bad("not a JSON object"));
            continue;
        };
        if let Some(unknown) = obj.keys().find(|k| !known.contains(*k)) {
            out.conflicts
                .push(bad(&format!("unknown column {unknown:?}")));
            continue;
        }
        let key = match obj.get(key_col) {
            Some(serde_json::Value::Number(n)) if n.is_i64() => {
                Key::Int(n.as_i64().unwrap_or_default())
            }
            Some(serde_json::Value::String(s)) => Key::Text(s.clone()),
            _ => {
                out.conflicts.push(bad(&format!("no {key_col}")));
                continue;
            }
        };
        let existing = select
            .query_row([&key], |row| row_json(row, &columns))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(RetentionError::sqlite(what.clone()))?;
        if let Some(existing) = existing {
            if sha(&existing) == sha(&line) {
                out.identical += 1;
            } else {
                out.conflicts.push(bad(&format!(
                    "a different row with {key_col} {key:?} exists; not overwritten"
                )));
            }
            continue;
        }
        let mut names = Vec::new();
        let mut values = Vec::new();
        for (k, v) in &obj {
            let Some(value) = sql_value(v) else {
                names.clear();
                break;
            };
            names.push(format!("\"{k}\""));
            values.push(value);
        }
        if names.is_empty() {
            out.conflicts.push(bad("a value cannot be stored"));
            continue;
        }
        let sql = format!(
            "INSERT INTO \"{table}\" ({}) VALUES ({})",
            names.join(", "),
            vec!["?"; names.len()].join(", ")
        );
        match tx.execute(&sql, params_from_iter(values.iter())) {
            Ok(_) => out.inserted += 1,
            Err(e) => out.conflicts.push(bad(&e.to_string())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        speckit_engine::storage::host::complete(&conn).unwrap();
        conn
    }

    #[test]
    fn execution_ages_read_the_hosts_datetime_text_and_the_old_iso_text() {
        let conn = host_db();
        // cutoff: 2026-03-01 00:00:00 UTC
        let cutoff_ms = 1_772_323_200_000;
        for (id, spawned) in [
            ("old-host", "2026-02-27 12:42:58"),
            ("young-host", "2026-03-02 08:00:00"),
            ("old-iso", "2026-02-01T10:00:00+00:00"),
            ("young-iso", "2026-03-05T10:00:00Z"),
            ("junk", "yesterday"),
        ] {
            conn.execute(
                "INSERT INTO agent_executions (agent_id, spec_id, stage, phase_type, agent_name, spawned_at) \
                 VALUES (?1, 'SPEC-KIT-1', 'spec-plan', 'agent', 'gemini', ?2)",
                [id, spawned],
            )
            .unwrap();
        }
        let (found, undated) = plan(&conn, "SPEC-KIT-1", cutoff_ms).unwrap();
        assert_eq!(found.execution_ids, ["old-host", "old-iso"]);
        assert_eq!(undated, 1);
    }

    #[test]
    fn missing_host_tables_hold_no_rows() {
        let conn = Connection::open_in_memory().unwrap();
        assert!(spec_ids(&conn).unwrap().is_empty());
        let (none, undated) = plan(&conn, "SPEC-KIT-1", i64::MAX).unwrap();
        assert!(none.is_empty() && undated == 0);
        conn.execute_batch(
            "CREATE TABLE agent_executions (agent_id TEXT, spec_id TEXT, spawned_at TEXT)",
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO agent_executions VALUES ('a', 'SPEC-KIT-2', '2020-01-01 00:00:00')",
        )
        .unwrap();
        assert_eq!(
            spec_ids(&conn).unwrap().into_iter().collect::<Vec<_>>(),
            ["SPEC-KIT-2"]
        );
        let (found, _) = plan(&conn, "SPEC-KIT-2", i64::MAX).unwrap();
        assert_eq!(found.execution_ids, ["a"]);
    }
}
