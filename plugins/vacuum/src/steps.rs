//! The maintenance steps, each one `Storage::maintain` call on the engine's writer
//! connection: one chunk of incremental vacuum (with or without its checkpoint), the
//! migration `VACUUM`, a TRUNCATE checkpoint; and the PASSIVE checkpoint, which runs on the
//! storage's checkpointer connection instead and holds nothing.
//!
//! One call per step, because every other write of the process queues behind the writer
//! connection: a step is the longest any of them waits. Writers of other processes meet
//! SQLite's write lock instead and poll for it in their busy handler; the job pauses
//! between steps (`[vacuum] lock_time_fraction`) so their polls find it free.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use speckit_engine::storage::{RetryPolicy, StorageCounters};
use speckit_engine::{Storage, StorageError};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::measure::{classify, page_stats, pragma_i64, wal_size_or_zero, AutoVacuum};

/// The longest one checkpoint attempt waits in SQLite's busy handler (for another
/// process's write transaction to end, or its readers to move to the newest snapshot).
/// It waits on the writer connection, so every write of this process waits with it; a
/// longer blockage is retried between chunks by the job, without holding the writer.
pub const CHECKPOINT_BUSY_WAIT: Duration = Duration::from_millis(50);

/// What a checkpoint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointOutcome {
    /// It could not finish: another connection was writing, or reading an older snapshot
    /// whose pages the WAL still holds.
    pub busy: bool,
    /// Frames in the WAL, and how many of them were copied into the database.
    pub wal_frames: i64,
    pub checkpointed_frames: i64,
    /// Size of the WAL file afterwards, in bytes.
    pub wal_bytes_after: u64,
}

/// What one chunk of incremental vacuum did, measured inside its own write transaction
/// (so another process's commit cannot slip between the counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkOutcome {
    pub requested_pages: u32,
    /// `freelist_count` before minus after: pages returned to the file system.
    pub pages_freed: i64,
    /// Rows `PRAGMA incremental_vacuum(N)` returned; SQLite returns one per page it frees,
    /// which is why the statement is stepped to the end.
    pub rows_stepped: u64,
    pub freelist_before: i64,
    pub freelist_after: i64,
    pub page_count_before: i64,
    pub page_count_after: i64,
    /// The step reached its time budget and stopped before `requested_pages` (so fewer
    /// pages freed does not mean the freelist ran out).
    pub stopped_at_budget: bool,
    /// WAL size after the chunk committed and before its checkpoint: the chunk's peak.
    pub wal_bytes_peak: u64,
    /// The checkpoint run in the same step, if one was asked for.
    pub checkpoint: Option<CheckpointOutcome>,
    /// How long the step held the writer connection, in microseconds, and its parts:
    /// `BEGIN IMMEDIATE` to the last row of `incremental_vacuum`, the `COMMIT` (the WAL
    /// write), and the checkpoint (which syncs the WAL and the database file).
    pub duration_us: u64,
    pub vacuum_us: u64,
    pub commit_us: u64,
    pub checkpoint_us: u64,
}

/// What the migration `VACUUM` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationOutcome {
    pub auto_vacuum_before: AutoVacuum,
    pub auto_vacuum_after: AutoVacuum,
    pub page_count_before: i64,
    pub page_count_after: i64,
    pub freelist_before: i64,
    pub freelist_after: i64,
    /// WAL size right after the VACUUM, before the checkpoint: in WAL mode the VACUUM
    /// writes the whole new database into the WAL first.
    pub wal_bytes_peak: u64,
    pub checkpoint: CheckpointOutcome,
    pub duration_us: u64,
}

/// Runs maintenance steps on a storage's writer connection, retrying a step that meets
/// another process's write lock the way the storage retries a write (`busy_timeout` per
/// attempt, then exponential backoff with jitter, `write_retry_attempts` in all).
#[derive(Clone)]
pub struct Maintenance {
    storage: Storage,
    counters: Arc<StorageCounters>,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("database", &self.storage.path())
            .finish()
    }
}

/// What a step needs on the writer thread.
struct StepCtx {
    path: PathBuf,
    retry: RetryPolicy,
    counters: Arc<StorageCounters>,
    /// The connection's normal busy timeout, restored after a checkpoint.
    busy_timeout: Duration,
}

impl Maintenance {
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            counters: Arc::new(StorageCounters::default()),
        }
    }

    /// Attempts these steps repeated after `SQLITE_BUSY`/`SQLITE_LOCKED`.
    pub fn busy_retries(&self) -> u64 {
        self.counters.busy_retries.load(Ordering::Relaxed)
    }

    fn ctx(&self) -> StepCtx {
        StepCtx {
            path: self.storage.path().to_path_buf(),
            retry: self.storage.options().retry.clone(),
            counters: self.counters.clone(),
            busy_timeout: self.storage.options().busy_timeout,
        }
    }

    /// Frees up to `pages` pages (at least 1) in one write transaction, stepping
    /// `PRAGMA incremental_vacuum(N)` to the end, then runs `wal_checkpoint(TRUNCATE)`.
    pub async fn incremental_chunk(&self, pages: u32) -> Result<ChunkOutcome, StorageError> {
        self.incremental_chunk_with(pages, true, None).await
    }

    /// [`Maintenance::incremental_chunk`], with the checkpoint only if `checkpoint`, and
    /// the vacuum stopped (and committed) once it has run `budget`, if one is given: how a
    /// step stays near its time target when some pages cost more than the last step's.
    pub async fn incremental_chunk_with(
        &self,
        pages: u32,
        checkpoint: bool,
        budget: Option<Duration>,
    ) -> Result<ChunkOutcome, StorageError> {
        let ctx = self.ctx();
        self.storage
            .maintain(move |conn| chunk_blocking(conn, &ctx, pages, checkpoint, budget))
            .await
    }

    /// Switches the database to `auto_vacuum = INCREMENTAL` with one full `VACUUM`, then
    /// checkpoints with TRUNCATE. The caller checks free disk first.
    pub async fn migrate_to_incremental(&self) -> Result<MigrationOutcome, StorageError> {
        let ctx = self.ctx();
        self.storage
            .maintain(move |conn| migrate_blocking(conn, &ctx))
            .await
    }

    /// Frames in the WAL after the writer connection's last commit (see
    /// [`Storage::wal_frames_at_last_commit`]).
    pub fn wal_frames_at_last_commit(&self) -> Option<u64> {
        self.storage.wal_frames_at_last_commit()
    }

    /// One `wal_checkpoint(PASSIVE)` on the storage's checkpointer connection: copies the
    /// WAL into the database (and, once all of it is copied, truncates the database file
    /// to its pages) without holding the writer connection or the write lock. `busy`
    /// means it could not copy everything: a reader still needs old frames, or another
    /// connection was checkpointing.
    pub async fn checkpoint_passive(&self) -> Result<CheckpointOutcome, StorageError> {
        let done = self.storage.checkpoint_passive().await?;
        Ok(CheckpointOutcome {
            busy: !done.complete(),
            wal_frames: done.wal_frames,
            checkpointed_frames: done.checkpointed_frames,
            wal_bytes_after: wal_size_or_zero(self.storage.path()),
        })
    }

    /// One `wal_checkpoint(TRUNCATE)` on the writer connection, waiting at most
    /// [`CHECKPOINT_BUSY_WAIT`] for other connections.
    pub async fn checkpoint(&self) -> Result<CheckpointOutcome, StorageError> {
        let ctx = self.ctx();
        self.storage
            .maintain(move |conn| checkpoint_blocking(conn, &ctx, CHECKPOINT_BUSY_WAIT))
            .await
    }

    /// One `wal_checkpoint(TRUNCATE)` that does not wait: busy at once if another
    /// connection holds the write lock or reads the WAL, so it holds the write lock only
    /// when it can finish, for as long as resetting the WAL takes.
    pub async fn try_truncate(&self) -> Result<CheckpointOutcome, StorageError> {
        let ctx = self.ctx();
        self.storage
            .maintain(move |conn| checkpoint_blocking(conn, &ctx, Duration::ZERO))
            .await
    }
}

fn retried(ctx: &StepCtx, conn: &Connection, sql: &'static str) -> Result<(), StorageError> {
    ctx.retry
        .run(&ctx.path, &ctx.counters, || conn.execute_batch(sql))
        .map_err(|e| e.into_storage_error_with(&ctx.path, |cause| classify(&ctx.path, cause)))
}

/// Counts gathered inside a chunk's transaction.
struct ChunkCounts {
    freelist_before: i64,
    freelist_after: i64,
    page_count_before: i64,
    page_count_after: i64,
    rows_stepped: u64,
    stopped_at_budget: bool,
}

/// Pages of page cache kept beside a chunk's own: the b-tree pages, pointer-map and
/// freelist trunk pages the chunk reads and writes.
const CACHE_HEADROOM_PAGES: i64 = 256;

/// Makes the connection's page cache hold a chunk of `pages` pages; returns the
/// `cache_size` to restore afterwards, if it had to change. SQLite marks every page it
/// takes off the freelist dirty; once a transaction's dirty pages outgrow the cache they
/// spill into the WAL (pages the commit then truncates away), which made a 1024-page
/// chunk cost 6x per page what a 64-page one did. Memory only: nothing on disk changes.
fn fit_cache(conn: &Connection, pages: u32) -> rusqlite::Result<Option<i64>> {
    let cache_size = pragma_i64(conn, "cache_size")?;
    // Positive: pages; negative: KiB.
    let cached_pages = if cache_size >= 0 {
        cache_size
    } else {
        -cache_size * 1024 / pragma_i64(conn, "page_size")?.max(512)
    };
    let wanted = pages as i64 + CACHE_HEADROOM_PAGES;
    if cached_pages >= wanted {
        return Ok(None);
    }
    conn.execute_batch(&format!("PRAGMA cache_size = {wanted}"))?;
    Ok(Some(cache_size))
}

fn chunk_blocking(
    conn: &mut Connection,
    ctx: &StepCtx,
    pages: u32,
    checkpoint: bool,
    budget: Option<Duration>,
) -> Result<ChunkOutcome, StorageError> {
    let started = Instant::now();
    // incremental_vacuum(0) and negative arguments mean "every free page", and SQLite
    // reads the argument as a 32-bit integer: keep it in 1..=i32::MAX.
    let pages = pages.clamp(1, i32::MAX as u32);
    let restore_cache = fit_cache(conn, pages).map_err(|e| classify(&ctx.path, e))?;
    let deadline = budget.map(|budget| started + budget);
    let outcome = chunk_in_cache(conn, ctx, pages, checkpoint, started, deadline);
    if let Some(cache_size) = restore_cache {
        let restored = conn.execute_batch(&format!("PRAGMA cache_size = {cache_size}"));
        if let Err(e) = restored {
            tracing::warn!(database = %ctx.path.display(), error = %e, "could not restore cache_size after a vacuum chunk");
        }
    }
    outcome
}

fn chunk_in_cache(
    conn: &mut Connection,
    ctx: &StepCtx,
    pages: u32,
    checkpoint: bool,
    started: Instant,
    deadline: Option<Instant>,
) -> Result<ChunkOutcome, StorageError> {
    // BEGIN IMMEDIATE takes the write lock up front, so the counts below and the vacuum
    // see one state no other connection can change in between.
    retried(ctx, conn, "BEGIN IMMEDIATE")?;
    let counts = (|| -> rusqlite::Result<ChunkCounts> {
        let freelist_before = pragma_i64(conn, "freelist_count")?;
        let page_count_before = pragma_i64(conn, "page_count")?;
        let (rows_stepped, stopped_at_budget) =
            step_incremental_vacuum_until(conn, pages, deadline)?;
        Ok(ChunkCounts {
            freelist_before,
            page_count_before,
            rows_stepped,
            stopped_at_budget,
            freelist_after: pragma_i64(conn, "freelist_count")?,
            page_count_after: pragma_i64(conn, "page_count")?,
        })
    })();
    let counts = match counts {
        Ok(counts) => counts,
        Err(source) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(classify(&ctx.path, source));
        }
    };
    let vacuumed = Instant::now();
    if let Err(e) = retried(ctx, conn, "COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e);
    }
    let committed = Instant::now();
    let wal_bytes_peak = wal_size_or_zero(&ctx.path);
    let micros = |d: Duration| d.as_micros() as u64;
    let (checkpoint, checkpoint_us) = if checkpoint {
        let started = Instant::now();
        let done = checkpoint_blocking(conn, ctx, CHECKPOINT_BUSY_WAIT)?;
        (Some(done), micros(started.elapsed()))
    } else {
        (None, 0)
    };
    Ok(ChunkOutcome {
        requested_pages: pages,
        pages_freed: counts.freelist_before - counts.freelist_after,
        rows_stepped: counts.rows_stepped,
        stopped_at_budget: counts.stopped_at_budget,
        freelist_before: counts.freelist_before,
        freelist_after: counts.freelist_after,
        page_count_before: counts.page_count_before,
        page_count_after: counts.page_count_after,
        wal_bytes_peak,
        checkpoint,
        duration_us: micros(started.elapsed()),
        vacuum_us: micros(vacuumed - started),
        commit_us: micros(committed - vacuumed),
        checkpoint_us,
    })
}

/// Steps `PRAGMA incremental_vacuum(pages)` until SQLite says it is done. Each step frees
/// one page and returns one row: `execute` or `execute_batch` would step once and free one
/// page only (the bug upstream shipped).
pub fn step_incremental_vacuum(conn: &Connection, pages: u32) -> rusqlite::Result<u64> {
    Ok(step_incremental_vacuum_until(conn, pages, None)?.0)
}

/// [`step_incremental_vacuum`] that stops after the row (the page) on which `deadline`
/// passed; returns the rows stepped and whether it stopped there. Stopping is safe: the
/// statement frees one page per row inside the caller's transaction, each page complete
/// (SQLite updates the page count with each), and the pragma opens no statement journal,
/// so resetting it keeps the pages freed so far; the caller counts them from
/// `freelist_count` anyway.
pub fn step_incremental_vacuum_until(
    conn: &Connection,
    pages: u32,
    deadline: Option<Instant>,
) -> rusqlite::Result<(u64, bool)> {
    // PRAGMA arguments cannot be bound parameters; `pages` is an integer.
    let mut statement = conn.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut rows = statement.query([])?;
    let mut stepped = 0;
    while rows.next()?.is_some() {
        stepped += 1;
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) && stepped < pages as u64 {
            return Ok((stepped, true));
        }
    }
    Ok((stepped, false))
}

fn migrate_blocking(
    conn: &mut Connection,
    ctx: &StepCtx,
) -> Result<MigrationOutcome, StorageError> {
    let started = Instant::now();
    let sqlite = |source| classify(&ctx.path, source);
    let before = page_stats(conn).map_err(sqlite)?;
    // On a database that has tables, this only records the wish; the VACUUM applies it.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
        .map_err(sqlite)?;
    if let Err(e) = retried(ctx, conn, "VACUUM") {
        // A failed VACUUM changed nothing; forget the wish so no later VACUUM on this
        // connection applies it behind the policy's back.
        let _ = conn.execute_batch(&format!(
            "PRAGMA auto_vacuum = {}",
            before.auto_vacuum.label()
        ));
        return Err(e);
    }
    let after = page_stats(conn).map_err(sqlite)?;
    let wal_bytes_peak = wal_size_or_zero(&ctx.path);
    let checkpoint = checkpoint_blocking(conn, ctx, CHECKPOINT_BUSY_WAIT)?;
    Ok(MigrationOutcome {
        auto_vacuum_before: before.auto_vacuum,
        auto_vacuum_after: after.auto_vacuum,
        page_count_before: before.page_count,
        page_count_after: after.page_count,
        freelist_before: before.freelist_count,
        freelist_after: after.freelist_count,
        wal_bytes_peak,
        checkpoint,
        duration_us: started.elapsed().as_micros() as u64,
    })
}

/// `wal_checkpoint(TRUNCATE)`: waits up to `wait` for writers and old readers (none with
/// zero: SQLite has no busy handler then), copies every frame into the database and
/// truncates the WAL to zero bytes.
fn checkpoint_blocking(
    conn: &Connection,
    ctx: &StepCtx,
    wait: Duration,
) -> Result<CheckpointOutcome, StorageError> {
    let path: &Path = &ctx.path;
    let sqlite = |source| classify(path, source);
    conn.busy_timeout(wait.min(ctx.busy_timeout))
        .map_err(sqlite)?;
    // A checkpoint that cannot finish answers busy = 1 in its row rather than failing.
    let answer = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get(2)?))
    });
    // Restore the writer's own timeout before anything else can fail.
    conn.busy_timeout(ctx.busy_timeout).map_err(sqlite)?;
    let (busy, wal_frames, checkpointed_frames) = answer.map_err(sqlite)?;
    Ok(CheckpointOutcome {
        busy: busy != 0,
        wal_frames,
        checkpointed_frames,
        wal_bytes_after: wal_size_or_zero(path),
    })
}
