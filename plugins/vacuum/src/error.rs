//! Why a vacuum or check did not happen, each naming the database file and the cause.

use speckit_engine::{PluginError, StorageError};
use std::path::PathBuf;

use crate::render::human_bytes;

#[derive(Debug, thiserror::Error)]
pub enum VacuumError {
    #[error(
        "not enough free disk to migrate {} to incremental auto-vacuum: the full VACUUM needs up to twice the database's size, {} ({needed_bytes} bytes), free in {}, and only {} ({free_bytes} bytes) is free; nothing was changed",
        path.display(), human_bytes(*needed_bytes), dir.display(), human_bytes(*free_bytes)
    )]
    InsufficientDisk {
        path: PathBuf,
        dir: PathBuf,
        free_bytes: u64,
        needed_bytes: u64,
    },
    #[error("cannot read the free disk space of {} (needed before migrating {}): {source}; nothing was changed", dir.display(), path.display())]
    DiskSpace {
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the size of {}: {source}", path.display())]
    FileSize {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} failed PRAGMA {pragma}, so it was not vacuumed; the check reported:{}", path.display(), indented_head(output))]
    CheckFailed {
        path: PathBuf,
        pragma: &'static str,
        output: Vec<String>,
    },
    #[error("the disk filled up while vacuuming {} (SQLite also writes a temporary copy to $SQLITE_TMPDIR, $TMPDIR or /var/tmp); SQLite rolled the step back and nothing was lost: {source}", path.display())]
    DiskFull {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("VACUUM of {} finished but auto_vacuum is still {found}, not INCREMENTAL", path.display())]
    MigrationIneffective { path: PathBuf, found: &'static str },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The first lines of a check's output, indented; SQLite lists up to 100 problems and a
/// row may hold several lines.
fn indented_head(output: &[String]) -> String {
    const SHOWN: usize = 20;
    let lines: Vec<&str> = output.iter().flat_map(|row| row.lines()).collect();
    let mut text = String::new();
    for line in lines.iter().take(SHOWN) {
        text.push_str("\n  ");
        text.push_str(line);
    }
    if lines.len() > SHOWN {
        text.push_str(&format!(
            "\n  ... and {} more lines (the job report's check.output has them all)",
            lines.len() - SHOWN
        ));
    }
    text
}

impl VacuumError {
    /// Replaces a storage error that means "disk full" by [`VacuumError::DiskFull`].
    pub(crate) fn from_storage(error: StorageError) -> Self {
        let disk_full = error
            .sqlite()
            .and_then(|e| e.sqlite_error_code())
            .is_some_and(|code| code == rusqlite::ErrorCode::DiskFull);
        match error {
            StorageError::Sqlite {
                path,
                cause: source,
            } if disk_full => VacuumError::DiskFull { path, source },
            other => VacuumError::Storage(other),
        }
    }
}

impl From<VacuumError> for PluginError {
    fn from(error: VacuumError) -> Self {
        match error {
            VacuumError::Storage(e) => PluginError::Storage(e),
            other => PluginError::Failed(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sqlite_error(code: std::ffi::c_int) -> StorageError {
        StorageError::Sqlite {
            path: Path::new("/data/consensus.db").to_path_buf(),
            cause: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        }
    }

    #[test]
    fn disk_full_is_named_and_other_errors_pass_through() {
        let full = VacuumError::from_storage(sqlite_error(rusqlite::ffi::SQLITE_FULL));
        assert!(matches!(full, VacuumError::DiskFull { .. }));
        let text = full.to_string();
        assert!(
            text.contains("/data/consensus.db") && text.contains("nothing was lost"),
            "{text}"
        );
        let other = VacuumError::from_storage(sqlite_error(rusqlite::ffi::SQLITE_IOERR));
        assert!(matches!(other, VacuumError::Storage(_)));
    }

    #[test]
    fn a_long_check_output_is_cut_in_the_message_not_in_the_report() {
        let output: Vec<String> = (0..100).map(|i| format!("Page {i}: never used")).collect();
        let error = VacuumError::CheckFailed {
            path: Path::new("/data/consensus.db").to_path_buf(),
            pragma: "integrity_check",
            output,
        };
        let text = error.to_string();
        assert!(
            text.contains("Page 19: never used") && !text.contains("Page 20:"),
            "{text}"
        );
        assert!(text.contains("80 more lines"), "{text}");
    }
}
