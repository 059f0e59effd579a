//! `PRAGMA quick_check` and `PRAGMA integrity_check`.
//!
//! Both run on a pooled read connection: a check is a read transaction on a WAL snapshot,
//! so writers of this and other processes carry on while it runs (on the writer's
//! connection every write of the process would wait for the whole check).

use serde::{Deserialize, Serialize};
use speckit_engine::Storage;
use std::time::Instant;

use crate::error::VacuumError;

/// Which check to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// B-tree structure, freelist and page ownership; skips index-against-table checks.
    Quick,
    /// Everything `Quick` does plus every index against its table. Slower.
    Integrity,
}

impl CheckKind {
    pub fn pragma(self) -> &'static str {
        match self {
            CheckKind::Quick => "quick_check",
            CheckKind::Integrity => "integrity_check",
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    /// `quick_check` or `integrity_check`.
    pub pragma: String,
    /// Whether SQLite answered exactly one row, `ok`.
    pub ok: bool,
    /// SQLite's rows: `["ok"]`, or one line per problem (at most 100).
    pub output: Vec<String>,
    pub duration_ms: u64,
}

impl CheckOutcome {
    /// The failure as an error naming the database, for a failed check.
    pub fn to_error(&self, storage: &Storage, kind: CheckKind) -> Option<VacuumError> {
        (!self.ok).then(|| VacuumError::CheckFailed {
            path: storage.path().to_path_buf(),
            pragma: kind.pragma(),
            output: self.output.clone(),
        })
    }
}

/// Runs the check and collects every row it returns.
pub async fn run_check(storage: &Storage, kind: CheckKind) -> Result<CheckOutcome, VacuumError> {
    let started = Instant::now();
    let pragma = kind.pragma();
    let (output, aborted) = storage
        .read(move |conn| {
            let mut statement = conn.prepare(&format!("PRAGMA {pragma}"))?;
            let mut rows = statement.query([])?;
            let mut output = Vec::new();
            // Some damage stops the check itself with SQLITE_CORRUPT before it has listed
            // anything: that is a failed check too, with SQLite's message as its output.
            loop {
                match rows.next() {
                    Ok(Some(row)) => output.push(row.get::<_, String>(0)?),
                    Ok(None) => return Ok((output, false)),
                    Err(e) if is_corruption(&e) => {
                        output.push(format!("the check stopped: {e}"));
                        return Ok((output, true));
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .await?;
    Ok(CheckOutcome {
        pragma: pragma.to_string(),
        ok: !aborted && output.len() == 1 && output[0] == "ok",
        output,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

fn is_corruption(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}
