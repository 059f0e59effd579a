//! The retention plugin's own tables in the host's database, versioned under the component
//! name `retention` in `hygiene_schema_versions` (never in `PRAGMA user_version`).
//!
//! One row per archive, whatever the number of files in it: the per-member manifest lives
//! in the archive (`MANIFEST.json`) and in a sidecar file beside it (see
//! [`crate::sidecar`]), not in the host's database. Version 1 drops
//! `hygiene_archive_members`, the one-row-per-member table of speckit-hygiene 0.1 (137k
//! archived files grew a host database by 35.7 MB); every member it listed is in the
//! archive it described.
//!
//! Readers must expect these tables to be missing: a read-only open (dry runs), or a host
//! database the plugin never ran on.

use rusqlite::Connection;
use speckit_engine::storage::{ComponentSchema, Migration, MigrationStep};

/// The table of archive records.
pub const ARCHIVES_TABLE: &str = "hygiene_archives";

pub static RETENTION_SCHEMA: ComponentSchema = ComponentSchema {
    component: "retention",
    migrations: &[
        Migration {
            version: 1,
            name: "archive records, one row per archive",
            apply: MigrationStep::Code(retention_v1),
        },
        Migration {
            version: 2,
            name: "archive health: when each archive was last verified, and damage found",
            apply: MigrationStep::Code(retention_v2),
        },
        Migration {
            version: 3,
            name: "offload: where each archive's remote copy is",
            apply: MigrationStep::Code(retention_v3),
        },
    ],
    sandbox: None,
};

fn retention_v1(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        r#"
-- One row per verified archive; kept (with purged_at) after the file is purged. The list
-- of members is in the archive (MANIFEST.json) and its sidecar, never here.
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
-- speckit-hygiene 0.1 kept one row per archive member here.
DROP TABLE IF EXISTS hygiene_archive_members;
"#,
    )
}

/// Version 2: what the last check of each archive found (see [`crate::verify`]).
fn retention_v2(conn: &Connection) -> rusqlite::Result<()> {
    // ALTER TABLE ... ADD COLUMN has no IF NOT EXISTS: look first, so a rerun after a
    // crash between the change and its version row is harmless.
    let have: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('hygiene_archives')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (column, ddl) in [
        // ms since the epoch of the last full read and hash check; NULL: not re-checked
        // since it was written (archives are verified before they are recorded, so
        // created_at counts as the last check).
        (
            "verified_at",
            "ALTER TABLE hygiene_archives ADD COLUMN verified_at INTEGER",
        ),
        // NULL while intact; else what is wrong ("missing", "size 12 bytes, recorded 40",
        // "sha256 ... differs from the recorded ...")
        (
            "damage",
            "ALTER TABLE hygiene_archives ADD COLUMN damage TEXT",
        ),
        // ms since the epoch when that damage was first found
        (
            "damage_found_at",
            "ALTER TABLE hygiene_archives ADD COLUMN damage_found_at INTEGER",
        ),
    ] {
        if !have.iter().any(|c| c == column) {
            conn.execute_batch(ddl)?;
        }
    }
    Ok(())
}

/// Version 3: the remote copy of an offloaded archive (see [`crate::offload`]).
fn retention_v3(conn: &Connection) -> rusqlite::Result<()> {
    add_missing_columns(
        conn,
        &[
            // the object's full URL (s3://bucket/prefix/SPEC/name.tar.zst or
            // file:///folder/SPEC/name.tar.zst); NULL: never offloaded. Set only after
            // the object was read back and matched sha256; the local file may then be gone.
            (
                "remote_url",
                "ALTER TABLE hygiene_archives ADD COLUMN remote_url TEXT",
            ),
            // the store's ETag and version id of that object, when it gave them
            (
                "remote_etag",
                "ALTER TABLE hygiene_archives ADD COLUMN remote_etag TEXT",
            ),
            (
                "remote_version",
                "ALTER TABLE hygiene_archives ADD COLUMN remote_version TEXT",
            ),
            // ms since the epoch when the offload was recorded
            (
                "offloaded_at",
                "ALTER TABLE hygiene_archives ADD COLUMN offloaded_at INTEGER",
            ),
        ],
    )
}

/// Adds each column the table lacks. ALTER TABLE ... ADD COLUMN has no IF NOT EXISTS:
/// looking first makes a rerun after a crash between the change and its version row
/// harmless.
fn add_missing_columns(conn: &Connection, columns: &[(&str, &str)]) -> rusqlite::Result<()> {
    let have: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('hygiene_archives')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (column, ddl) in columns {
        if !have.iter().any(|c| c == column) {
            conn.execute_batch(ddl)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_creates_the_records_and_drops_the_old_member_table() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE hygiene_archive_members (archive_id INTEGER, path TEXT, size INTEGER, mtime INTEGER, sha256 TEXT);
             INSERT INTO hygiene_archive_members VALUES (1, 'commands/S/a.json', 1, 0, 'x');",
        )
        .unwrap();
        retention_v1(&conn).unwrap();
        retention_v1(&conn).unwrap(); // idempotent
        let names: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE name LIKE 'hygiene_archive%' ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(names, ["hygiene_archives"]);
    }

    fn archive_columns(conn: &Connection) -> Vec<String> {
        conn.prepare("SELECT name FROM pragma_table_info('hygiene_archives')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn version_2_adds_the_health_columns_once() {
        let conn = Connection::open_in_memory().unwrap();
        retention_v1(&conn).unwrap();
        retention_v2(&conn).unwrap();
        retention_v2(&conn).unwrap(); // a rerun after a crash
        let columns = archive_columns(&conn);
        for c in ["verified_at", "damage", "damage_found_at"] {
            assert!(columns.iter().any(|x| x == c), "{c} missing: {columns:?}");
        }
    }

    #[test]
    fn version_3_adds_the_offload_columns_once() {
        let conn = Connection::open_in_memory().unwrap();
        retention_v1(&conn).unwrap();
        retention_v2(&conn).unwrap();
        retention_v3(&conn).unwrap();
        retention_v3(&conn).unwrap(); // a rerun after a crash
        let columns = archive_columns(&conn);
        for c in [
            "remote_url",
            "remote_etag",
            "remote_version",
            "offloaded_at",
        ] {
            assert!(columns.iter().any(|x| x == c), "{c} missing: {columns:?}");
        }
        assert_eq!(RETENTION_SCHEMA.latest_version(), 3);
    }
}
