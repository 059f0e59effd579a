//! The database record of archives (`hygiene_archives`, one row per archive): an archive
//! is recorded only after it is verified at its final name (and its manifest sidecar
//! written), and a source file is deleted only after the archive holding it is recorded.
//!
//! Which files an archive holds is not in the database: it is read from the archive's
//! sidecar, or from the verified archive itself (see [`crate::sidecar`]).
//!
//! Every read tolerates a database without the table (retention never ran on it, or it
//! is opened read-only for a dry run) and no database at all ([`read`]): both mean "no
//! archive recorded".

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use speckit_engine::storage::table_exists;
use speckit_engine::{Storage, StorageError};
use std::collections::HashMap;
use std::path::Path;

use crate::archive::Manifest;
use crate::schema::ARCHIVES_TABLE;
use crate::sidecar;

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
    /// Last full read and hash check (`None`: not since it was written and verified).
    pub verified_at_ms: Option<i64>,
    /// What the last check found wrong (`None`: intact), and when it was first found.
    pub damage: Option<String>,
    pub damage_found_at_ms: Option<i64>,
    /// The offloaded copy (see [`crate::offload`]); `None`: never offloaded.
    pub remote: Option<RemoteCopy>,
}

/// Where an offloaded archive's copy is: recorded only after the object was read back
/// and matched the archive's sha256 and size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteCopy {
    /// The object's full URL (`s3://bucket/prefix/SPEC/name.tar.zst`, `file:///...`).
    pub url: String,
    pub etag: Option<String>,
    pub version: Option<String>,
    pub offloaded_at_ms: i64,
}

impl ArchiveRecord {
    /// Whether the archive was offloaded (its local file may be gone).
    pub fn is_offloaded(&self) -> bool {
        self.remote.is_some()
    }
}

/// A member of a recorded archive (from its manifest), with the archive it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedMember {
    pub archive_id: i64,
    pub archive_path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub sha256: String,
}

const COLUMNS: &str = "id, spec_id, path, created_at, bytes, member_count, source_bytes, sha256, db_rows, origin, purged_at, verified_at, damage, damage_found_at, remote_url, remote_etag, remote_version, offloaded_at";

/// [`COLUMNS`] for a table still at schema version 2 (a dry run opens the database
/// read-only, so its tables are not brought up to date): no offload columns yet.
const COLUMNS_V2: &str = "id, spec_id, path, created_at, bytes, member_count, source_bytes, sha256, db_rows, origin, purged_at, verified_at, damage, damage_found_at, NULL, NULL, NULL, NULL";

/// [`COLUMNS`] for a table still at schema version 1: no health columns either.
const COLUMNS_V1: &str = "id, spec_id, path, created_at, bytes, member_count, source_bytes, sha256, db_rows, origin, purged_at, NULL, NULL, NULL, NULL, NULL, NULL, NULL";

/// The columns to select: the health and offload columns where the table has them.
fn columns(conn: &Connection) -> rusqlite::Result<&'static str> {
    let has = |column: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('hygiene_archives') WHERE name = ?1)",
            [column],
            |r| r.get(0),
        )
    };
    Ok(if has("remote_url")? {
        COLUMNS
    } else if has("damage")? {
        COLUMNS_V2
    } else {
        COLUMNS_V1
    })
}

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
        verified_at_ms: row.get(11)?,
        damage: row.get(12)?,
        damage_found_at_ms: row.get(13)?,
        remote: match row.get::<_, Option<String>>(14)? {
            Some(url) => Some(RemoteCopy {
                url,
                etag: row.get(15)?,
                version: row.get(16)?,
                offloaded_at_ms: row.get::<_, Option<i64>>(17)?.unwrap_or_default(),
            }),
            None => None,
        },
    })
}

/// Runs a read on `storage`, or returns `T::default()` ("nothing recorded") when the
/// database file does not exist (a read-only open of a missing file).
pub fn read<T, F>(storage: &Storage, f: F) -> Result<T, StorageError>
where
    T: Default,
    F: FnOnce(&Connection) -> rusqlite::Result<T>,
{
    if !storage.exists() {
        return Ok(T::default());
    }
    storage.read_blocking(f)
}

/// Every archive whose file has not been purged, oldest first (none without the table).
pub fn unpurged(conn: &Connection) -> rusqlite::Result<Vec<ArchiveRecord>> {
    if !table_exists(conn, ARCHIVES_TABLE)? {
        return Ok(Vec::new());
    }
    let columns = columns(conn)?;
    let mut stmt = conn.prepare(&format!(
        "SELECT {columns} FROM hygiene_archives WHERE purged_at IS NULL ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([], record_from)?;
    rows.collect()
}

/// Every archive record, purged ones included, oldest first (none without the table).
pub fn all(conn: &Connection) -> rusqlite::Result<Vec<ArchiveRecord>> {
    if !table_exists(conn, ARCHIVES_TABLE)? {
        return Ok(Vec::new());
    }
    let columns = columns(conn)?;
    let mut stmt = conn.prepare(&format!(
        "SELECT {columns} FROM hygiene_archives ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([], record_from)?;
    rows.collect()
}

/// The record of the archive at `path` (relative to the root), purged or not.
pub fn by_path(conn: &Connection, path: &str) -> rusqlite::Result<Option<ArchiveRecord>> {
    if !table_exists(conn, ARCHIVES_TABLE)? {
        return Ok(None);
    }
    let columns = columns(conn)?;
    conn.query_row(
        &format!("SELECT {columns} FROM hygiene_archives WHERE path = ?1"),
        [path],
        record_from,
    )
    .optional()
}

/// A recorded archive whose sidecar was missing or stale, with the manifest read from the
/// verified archive: a real run writes the sidecar again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarRepair {
    /// Relative to the evidence root.
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    pub manifest: Manifest,
}

/// What [`file_members_of`] found.
#[derive(Debug, Default)]
pub struct HeldFiles {
    /// Evidence file path -> the newest recorded archive's copy.
    pub members: HashMap<String, RecordedMember>,
    /// Archives whose manifest could be read neither from the sidecar nor from the archive
    /// (their files count as not archived: a new archive takes them).
    pub warnings: Vec<String>,
    /// Archives read from the archive itself because the sidecar was missing or stale.
    pub repairs: Vec<SidecarRepair>,
}

/// The evidence files held by the unpurged archives in `recorded` whose SPEC is `spec`,
/// by path; where a path is in several archives, the newest archive's copy. Each archive's
/// manifest comes from its sidecar, or else from the archive, verified in full against its
/// record. A recorded archive missing from disk is skipped (`verify` reports it).
pub fn file_members_of(root: &Path, recorded: &[ArchiveRecord], spec: &str) -> HeldFiles {
    let mut out = HeldFiles::default();
    let mut mine: Vec<&ArchiveRecord> = recorded
        .iter()
        .filter(|r| r.spec == spec && r.purged_at_ms.is_none())
        .collect();
    mine.sort_by_key(|r| (r.created_at_ms, r.id));
    for record in mine {
        let path = root.join(&record.path);
        // An offloaded archive whose local file is gone holds its files only remotely:
        // deleting a source on its word would need the archive fetched to check each
        // member's hash, so its files count as not archived here (if a copy is still in
        // the tree, a new local archive takes it; nothing is deleted without one).
        if record.is_offloaded() && std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        let manifest = match sidecar::manifest_of(&path, &record.sha256, record.bytes) {
            Ok((manifest, sidecar::Source::Sidecar)) => manifest,
            Ok((manifest, sidecar::Source::Archive)) => {
                out.repairs.push(SidecarRepair {
                    path: record.path.clone(),
                    sha256: record.sha256.clone(),
                    bytes: record.bytes,
                    manifest: manifest.clone(),
                });
                manifest
            }
            Err(crate::archive::ArchiveError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                continue
            }
            Err(e) => {
                out.warnings.push(format!(
                    "recorded archive {}: {e}; its manifest cannot be read, so its files are archived again",
                    record.path
                ));
                continue;
            }
        };
        for m in manifest.files {
            out.members.insert(
                m.path,
                RecordedMember {
                    archive_id: record.id,
                    archive_path: record.path.clone(),
                    size: m.size,
                    mtime_ns: m.mtime_ns,
                    sha256: m.sha256,
                },
            );
        }
    }
    out
}

/// Records a verified archive (one row, its figures from the manifest); returns its id.
/// A record of the same path with the same hash is kept as it is (a rerun); any other
/// record of that path (a purged namesake) is replaced.
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
    Ok(tx.last_insert_rowid())
}

/// Marks an archive purged (its file and sidecar are gone).
pub fn mark_purged(tx: &Transaction<'_>, id: i64, at_ms: i64) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE hygiene_archives SET purged_at = ?2 WHERE id = ?1 AND purged_at IS NULL",
        params![id, at_ms],
    )?;
    Ok(())
}

/// Records archive `id` as offloaded to `remote` (its object read back and matched), in
/// the caller's transaction; only after this commits may the local file be deleted.
/// Returns whether the record was there (unpurged) to mark.
pub fn mark_offloaded(
    tx: &Transaction<'_>,
    id: i64,
    remote: &RemoteCopy,
) -> rusqlite::Result<bool> {
    let n = tx.execute(
        "UPDATE hygiene_archives SET remote_url = ?2, remote_etag = ?3, remote_version = ?4, offloaded_at = ?5 \
         WHERE id = ?1 AND purged_at IS NULL",
        params![id, remote.url, remote.etag, remote.version, remote.offloaded_at_ms],
    )?;
    Ok(n == 1)
}

/// Records a full check of archive `id` that found it intact at `at_ms` (clearing any
/// damage an earlier check found: the file was put back).
pub fn mark_verified(tx: &Transaction<'_>, id: i64, at_ms: i64) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE hygiene_archives SET verified_at = ?2, damage = NULL, damage_found_at = NULL WHERE id = ?1",
        params![id, at_ms],
    )?;
    Ok(())
}

/// Records what is wrong with archive `id`; the time it was first found is kept while the
/// damage stays the same.
pub fn mark_damaged(
    tx: &Transaction<'_>,
    id: i64,
    damage: &str,
    at_ms: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE hygiene_archives SET damage = ?2, \
         damage_found_at = CASE WHEN damage IS ?2 THEN damage_found_at ELSE ?3 END WHERE id = ?1",
        params![id, damage, at_ms],
    )?;
    Ok(())
}
