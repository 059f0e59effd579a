//! The database record of archives (`hygiene_archives`, `hygiene_archive_members`): an
//! archive is recorded only after it is verified at its final name, and a source file is
//! deleted only after the archive holding it is recorded.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::collections::HashMap;

use crate::archive::Manifest;

/// One row of `hygiene_archives`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveRecord {
    pub id: i64,
    pub spec: String,
    /// Relative to the evidence root.
    pub path: String,
    pub created_at_ms: i64,
    pub bytes: u64,
    pub member_count: u64,
    pub source_bytes: u64,
    pub sha256: String,
    pub db_rows: u64,
    pub origin: String,
    pub purged_at_ms: Option<i64>,
}

/// A recorded archive member, with the archive it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedMember {
    pub archive_id: i64,
    pub archive_path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub sha256: String,
}

const COLUMNS: &str = "id, spec_id, path, created_at, bytes, member_count, source_bytes, sha256, db_rows, origin, purged_at";

fn record_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<ArchiveRecord> {
    Ok(ArchiveRecord {
        id: row.get(0)?,
        spec: row.get(1)?,
        path: row.get(2)?,
        created_at_ms: row.get(3)?,
        bytes: row.get::<_, i64>(4)? as u64,
        member_count: row.get::<_, i64>(5)? as u64,
        source_bytes: row.get::<_, i64>(6)? as u64,
        sha256: row.get(7)?,
        db_rows: row.get::<_, i64>(8)? as u64,
        origin: row.get(9)?,
        purged_at_ms: row.get(10)?,
    })
}

/// Every archive whose file has not been purged, oldest first.
pub fn unpurged(conn: &Connection) -> rusqlite::Result<Vec<ArchiveRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM hygiene_archives WHERE purged_at IS NULL ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([], record_from)?;
    rows.collect()
}

/// The record of the archive at `path` (relative to the root), purged or not.
pub fn by_path(conn: &Connection, path: &str) -> rusqlite::Result<Option<ArchiveRecord>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM hygiene_archives WHERE path = ?1"),
        [path],
        record_from,
    )
    .optional()
}

/// The evidence files held by unpurged archives of `spec`, by path; where a path is in
/// several archives, the newest archive's copy.
pub fn file_members_of(
    conn: &Connection,
    spec: &str,
) -> rusqlite::Result<HashMap<String, RecordedMember>> {
    let mut stmt = conn.prepare(
        "SELECT m.path, m.size, m.mtime, m.sha256, a.id, a.path FROM hygiene_archive_members m \
         JOIN hygiene_archives a ON a.id = m.archive_id \
         WHERE a.spec_id = ?1 AND a.purged_at IS NULL AND m.path NOT LIKE 'db/%' \
         ORDER BY a.created_at, a.id",
    )?;
    let mut out = HashMap::new();
    let rows = stmt.query_map([spec], |row| {
        Ok((
            row.get::<_, String>(0)?,
            RecordedMember {
                size: row.get::<_, i64>(1)? as u64,
                mtime_ns: row.get(2)?,
                sha256: row.get(3)?,
                archive_id: row.get(4)?,
                archive_path: row.get(5)?,
            },
        ))
    })?;
    for row in rows {
        let (path, member) = row?;
        out.insert(path, member);
    }
    Ok(out)
}

/// Records a verified archive and its manifest; returns its id. A record of the same path
/// with the same hash is kept as it is (a rerun); any other record of that path (a purged
/// namesake) is replaced.
pub fn insert(
    tx: &Transaction<'_>,
    path: &str,
    bytes: u64,
    sha256: &str,
    manifest: &Manifest,
    origin: &str,
) -> rusqlite::Result<i64> {
    if let Some(existing) = by_path(tx, path)? {
        if existing.sha256 == sha256 && existing.purged_at_ms.is_none() {
            return Ok(existing.id);
        }
        tx.execute("DELETE FROM hygiene_archives WHERE id = ?1", [existing.id])?;
    }
    let member_count = (manifest.files.len() + manifest.db.len()) as i64;
    tx.execute(
        "INSERT INTO hygiene_archives (spec_id, path, created_at, bytes, member_count, source_bytes, sha256, db_rows, origin) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            manifest.spec,
            path,
            manifest.created_at_ms,
            bytes as i64,
            member_count,
            manifest.source_bytes() as i64,
            sha256,
            manifest.db_rows() as i64,
            origin
        ],
    )?;
    let id = tx.last_insert_rowid();
    let mut insert = tx.prepare_cached(
        "INSERT INTO hygiene_archive_members (archive_id, path, size, mtime, sha256) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for m in &manifest.files {
        insert.execute(params![id, m.path, m.size as i64, m.mtime_ns, m.sha256])?;
    }
    for d in &manifest.db {
        insert.execute(params![id, d.path, d.size as i64, 0i64, d.sha256])?;
    }
    Ok(id)
}

/// Marks an archive purged and drops its member rows (the file that held them is gone).
pub fn mark_purged(tx: &Transaction<'_>, id: i64, at_ms: i64) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE hygiene_archives SET purged_at = ?2 WHERE id = ?1 AND purged_at IS NULL",
        params![id, at_ms],
    )?;
    tx.execute(
        "DELETE FROM hygiene_archive_members WHERE archive_id = ?1",
        [id],
    )?;
    Ok(())
}
