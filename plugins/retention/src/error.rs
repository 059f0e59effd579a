//! The retention plugin's errors, each naming the file, SPEC or table and the cause.

use std::path::PathBuf;

use crate::archive::ArchiveError;
use crate::layout::LayoutError;
use crate::tracker::TrackerError;
use speckit_engine::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("database: {what}: {source}")]
    Sqlite {
        what: String,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Conflict(String),
    #[error("cancelled")]
    Cancelled,
}

impl RetentionError {
    pub fn sqlite(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> RetentionError {
        let what = what.into();
        move |source| RetentionError::Sqlite { what, source }
    }

    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RetentionError {
        let path = path.into();
        move |source| RetentionError::Io { path, source }
    }
}
