//! The vacuum job's report: every figure it measured, stored as the job's JSON data
//! (`--json` prints it). `render` turns it into text for people.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::check::CheckOutcome;
use crate::measure::{AutoVacuum, Measurement};

/// What the job set out to do, decided from the database's state and the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `auto_vacuum = NONE`: switch to INCREMENTAL with one full `VACUUM`.
    Migrate,
    /// `auto_vacuum = INCREMENTAL`: free the free pages in chunks.
    Incremental,
    /// Nothing to do; `reason` says why.
    None,
}

/// How the job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The action ran to its end (or there was nothing to do).
    Done,
    /// `--dry-run`: measured and checked, changed nothing.
    DryRun,
    /// The check failed; nothing was changed.
    CheckFailed,
    /// A step failed; the report says how far it got (every finished step is kept).
    Failed,
    /// The engine shut down between two chunks.
    Cancelled,
    /// Stopped between chunks because the WAL could not be checkpointed; the next run
    /// goes on. Not a failure: nothing is wrong with the database.
    Incomplete,
}

/// Every figure of one vacuum run. Sizes in bytes, times in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VacuumReport {
    pub database: PathBuf,
    pub action: Action,
    pub outcome: Outcome,
    /// Why `action` is `none`.
    pub reason: Option<String>,
    pub dry_run: bool,
    pub forced: bool,
    /// The database was switched from `auto_vacuum = NONE` to INCREMENTAL by this run.
    pub migrated: bool,
    /// The `quick_check` run before anything else.
    pub check: CheckOutcome,
    pub auto_vacuum_before: AutoVacuum,
    pub auto_vacuum_after: AutoVacuum,
    pub page_size: i64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub wal_bytes_before: u64,
    pub wal_bytes_after: u64,
    /// The largest WAL size sampled after each step, before its checkpoint.
    pub wal_bytes_peak: u64,
    pub page_count_before: i64,
    pub page_count_after: i64,
    pub freelist_before: i64,
    pub freelist_after: i64,
    /// `freelist_before / page_count_before`.
    pub free_fraction_before: f64,
    /// The policy's `free_fraction_threshold`.
    pub free_fraction_threshold: f64,
    /// Pages the steps returned to the file system: per chunk, `freelist_count` before
    /// minus after; for the migration, `page_count` before minus after the VACUUM.
    pub pages_freed: i64,
    /// `bytes_before - bytes_after` (negative if writers grew the file meanwhile).
    pub bytes_freed: i64,
    /// Dry run: the pages a real run would free (for a migration, at least the free ones).
    pub would_free_pages: Option<i64>,
    pub would_free_bytes: Option<u64>,
    /// The policy's `chunk_pages` (the most pages a step frees), and the fewest and most
    /// pages a step of this run was asked to free (steps are sized to `step_target_ms`).
    pub chunk_pages: u32,
    #[serde(default)]
    pub min_chunk_pages: u32,
    #[serde(default)]
    pub max_chunk_pages: u32,
    pub chunks: u32,
    pub checkpoints: u32,
    /// Checkpoints that could not finish (another connection held the checkpoint lock or
    /// pinned an old snapshot); each was retried before the next chunk.
    pub checkpoints_busy: u32,
    /// Step attempts repeated because another process held the write lock.
    pub busy_retries: u64,
    /// The longest a single step (a chunk, or a checkpoint) held the writer connection:
    /// the most any other write of this process waited for the vacuum.
    pub max_step_ms: f64,
    /// Time spent pausing between chunks for other processes' writers
    /// (`[vacuum] lock_time_fraction`).
    pub paused_ms: f64,
    /// Free disk where the database lives, and what the migration needs (migration only).
    pub free_disk_bytes: Option<u64>,
    pub needed_disk_bytes: Option<u64>,
    pub duration_ms: u64,
}

impl VacuumReport {
    /// A report of nothing done yet: the "after" figures equal the "before" ones until
    /// [`VacuumReport::set_after`] records a new measurement.
    pub fn new(
        database: PathBuf,
        before: &Measurement,
        check: CheckOutcome,
        threshold: f64,
        chunk_pages: u32,
        dry_run: bool,
        forced: bool,
    ) -> Self {
        let p = &before.pages;
        Self {
            database,
            action: Action::None,
            outcome: Outcome::Done,
            reason: None,
            dry_run,
            forced,
            migrated: false,
            check,
            auto_vacuum_before: p.auto_vacuum,
            auto_vacuum_after: p.auto_vacuum,
            page_size: p.page_size,
            bytes_before: before.bytes,
            bytes_after: before.bytes,
            wal_bytes_before: before.wal_bytes,
            wal_bytes_after: before.wal_bytes,
            wal_bytes_peak: before.wal_bytes,
            page_count_before: p.page_count,
            page_count_after: p.page_count,
            freelist_before: p.freelist_count,
            freelist_after: p.freelist_count,
            free_fraction_before: p.free_fraction(),
            free_fraction_threshold: threshold,
            pages_freed: 0,
            bytes_freed: 0,
            would_free_pages: None,
            would_free_bytes: None,
            chunk_pages,
            min_chunk_pages: 0,
            max_chunk_pages: 0,
            chunks: 0,
            checkpoints: 0,
            checkpoints_busy: 0,
            busy_retries: 0,
            max_step_ms: 0.0,
            paused_ms: 0.0,
            free_disk_bytes: None,
            needed_disk_bytes: None,
            duration_ms: 0,
        }
    }

    /// Records the measurement taken at the end.
    pub fn set_after(&mut self, after: &Measurement) {
        self.auto_vacuum_after = after.pages.auto_vacuum;
        self.bytes_after = after.bytes;
        self.wal_bytes_after = after.wal_bytes;
        self.wal_bytes_peak = self.wal_bytes_peak.max(after.wal_bytes);
        self.page_count_after = after.pages.page_count;
        self.freelist_after = after.pages.freelist_count;
        self.bytes_freed = self.bytes_before as i64 - self.bytes_after as i64;
    }
}
