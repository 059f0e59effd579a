//! The `[vacuum]` section: when and how the database is vacuumed, with its checks.

use serde::{Deserialize, Serialize};
use speckit_engine::policy::{Section, SectionProblems};

/// `[vacuum]`: keeping the database small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VacuumPolicy {
    /// Run an incremental vacuum when `freelist_count / page_count` reaches this (0-1].
    pub free_fraction_threshold: f64,
    /// The most pages one step frees; writers wait at most one step. With
    /// `step_target_ms > 0` steps are sized to take that long, up to this many pages.
    pub chunk_pages: u32,
    /// The time one step should hold the writer connection, in milliseconds: after each
    /// step the next one's page count is set from the pages per millisecond just measured
    /// (within 16..=`chunk_pages`). 0 frees `chunk_pages` pages in every step.
    pub step_target_ms: f64,
    /// Checkpoint the WAL between steps once more than this many KiB of it are in use
    /// (PASSIVE, on the storage's checkpointer connection: writers go on meanwhile), and
    /// at the end (PASSIVE, then TRUNCATE to empty it). 0 runs a TRUNCATE inside every
    /// step. A checkpoint syncs the database file, so one per step costs more than the
    /// step itself.
    pub checkpoint_wal_kib: u64,
    /// Switch an `auto_vacuum = NONE` database to INCREMENTAL with one full VACUUM.
    pub migrate_to_incremental: bool,
    /// The largest share (0-1] of the time the vacuum holds the write lock: after a chunk
    /// that took T it pauses T * (1 - share) / share, so writers in other processes (which
    /// poll for the lock) get in between chunks. 1 means no pause.
    pub lock_time_fraction: f64,
}

impl Default for VacuumPolicy {
    fn default() -> Self {
        Self {
            free_fraction_threshold: 0.1,
            chunk_pages: 4096,
            step_target_ms: 1.0,
            checkpoint_wal_kib: 1024,
            migrate_to_incremental: true,
            lock_time_fraction: 0.5,
        }
    }
}

impl Section for VacuumPolicy {
    const NAME: &'static str = "vacuum";

    fn validate(&self, problems: &mut SectionProblems) {
        if !(self.free_fraction_threshold > 0.0 && self.free_fraction_threshold <= 1.0) {
            problems.bad(
                "free_fraction_threshold",
                format!("must be in (0, 1], got {}", self.free_fraction_threshold),
            );
        }
        if self.chunk_pages == 0 {
            problems.bad("chunk_pages", "must be at least 1");
        }
        // SQLite takes the page count of `incremental_vacuum(N)` as a C int.
        if self.chunk_pages > i32::MAX as u32 {
            problems.bad(
                "chunk_pages",
                format!(
                    "must be at most {} (SQLite's limit), got {}",
                    i32::MAX,
                    self.chunk_pages
                ),
            );
        }
        if !(self.step_target_ms.is_finite() && (0.0..=1000.0).contains(&self.step_target_ms)) {
            problems.bad(
                "step_target_ms",
                format!("must be in [0, 1000], got {}", self.step_target_ms),
            );
        }
        if !(self.lock_time_fraction > 0.0 && self.lock_time_fraction <= 1.0) {
            problems.bad(
                "lock_time_fraction",
                format!("must be in (0, 1], got {}", self.lock_time_fraction),
            );
        }
    }
}
