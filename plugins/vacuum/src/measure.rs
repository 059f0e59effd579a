//! Measuring the database: page counts from SQLite, file sizes from the file system.
//!
//! File sizes come from `std::fs::metadata` only: opening and closing the database (or its
//! WAL) with plain file APIs would drop the process's POSIX locks on it.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use speckit_engine::{Storage, StorageError};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::VacuumError;

/// `PRAGMA auto_vacuum`: what SQLite does with pages a delete frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoVacuum {
    /// Freed pages stay in the file on the freelist; only a full `VACUUM` returns them.
    None,
    /// SQLite moves pages and truncates the file at every commit.
    Full,
    /// Freed pages stay on the freelist until `PRAGMA incremental_vacuum(N)` returns them.
    Incremental,
}

impl AutoVacuum {
    /// From the value `PRAGMA auto_vacuum` returns (0, 1, 2).
    pub fn from_pragma(value: i64) -> Option<Self> {
        match value {
            0 => Some(AutoVacuum::None),
            1 => Some(AutoVacuum::Full),
            2 => Some(AutoVacuum::Incremental),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            AutoVacuum::None => "NONE",
            AutoVacuum::Full => "FULL",
            AutoVacuum::Incremental => "INCREMENTAL",
        }
    }
}

/// SQLite's view of the database: page size and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageStats {
    pub page_size: i64,
    pub page_count: i64,
    pub freelist_count: i64,
    pub auto_vacuum: AutoVacuum,
}

impl PageStats {
    /// Free pages as a fraction of all pages (0 for an empty file).
    pub fn free_fraction(&self) -> f64 {
        if self.page_count <= 0 {
            0.0
        } else {
            self.freelist_count as f64 / self.page_count as f64
        }
    }
}

/// Page counts plus the sizes of the database file and its WAL, measured together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurement {
    pub pages: PageStats,
    /// Size of the database file in bytes.
    pub bytes: u64,
    /// Size of its `-wal` file in bytes (0 when there is none).
    pub wal_bytes: u64,
}

/// Reads one integer PRAGMA. The name is a constant of this crate: PRAGMA names and
/// arguments cannot be bound parameters.
pub(crate) fn pragma_i64(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
}

/// Page size and counts on `conn`, all from one snapshot.
///
/// `PRAGMA auto_vacuum` answers from the connection's memory without reading the file, so
/// on a pooled connection it can be stale after another connection's `VACUUM`. Reading
/// `page_count` first, inside the same transaction, makes SQLite read page 1 (and with it
/// the current auto-vacuum flag) before the flag is asked for.
pub(crate) fn page_stats(conn: &Connection) -> rusqlite::Result<PageStats> {
    // Outside a transaction each PRAGMA would be its own snapshot; inside the writer's
    // own transaction (a chunk) there is one already.
    let tx = if conn.is_autocommit() {
        Some(conn.unchecked_transaction()?)
    } else {
        None
    };
    let page_count = pragma_i64(conn, "page_count")?;
    let stats = PageStats {
        page_size: pragma_i64(conn, "page_size")?,
        page_count,
        freelist_count: pragma_i64(conn, "freelist_count")?,
        // SQLite documents only 0, 1 and 2; anything else would be a corrupt header.
        auto_vacuum: AutoVacuum::from_pragma(pragma_i64(conn, "auto_vacuum")?)
            .unwrap_or(AutoVacuum::None),
    };
    if let Some(tx) = tx {
        // A read-only transaction: ending it changes nothing.
        tx.rollback()?;
    }
    Ok(stats)
}

/// The WAL file SQLite keeps beside `database`.
pub fn wal_path(database: &Path) -> PathBuf {
    let mut name = OsString::from(database.as_os_str());
    name.push("-wal");
    PathBuf::from(name)
}

/// Size of a file in bytes, 0 when it does not exist.
pub fn file_size(path: &Path) -> Result<u64, VacuumError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(VacuumError::FileSize {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Size of the database's WAL in bytes (0 when there is none). For the per-chunk samples,
/// where a failed `stat` must not fail the step, it reads as 0.
pub(crate) fn wal_size_or_zero(database: &Path) -> u64 {
    file_size(&wal_path(database)).unwrap_or(0)
}

/// Measures the database through a pooled read connection, so writers do not wait.
pub async fn measure(storage: &Storage) -> Result<Measurement, VacuumError> {
    let pages = storage.read(page_stats).await?;
    let path = storage.path();
    Ok(Measurement {
        pages,
        bytes: file_size(path)?,
        wal_bytes: file_size(&wal_path(path))?,
    })
}

/// Maps a SQLite error met on `path` to the storage error that names its cause.
pub(crate) fn classify(path: &Path, source: rusqlite::Error) -> StorageError {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ReadOnly) => StorageError::ReadOnly {
            path: path.to_path_buf(),
        },
        Some(rusqlite::ErrorCode::NotADatabase) => StorageError::NotADatabase {
            path: path.to_path_buf(),
        },
        _ => StorageError::Sqlite {
            path: path.to_path_buf(),
            cause: source,
        },
    }
}
