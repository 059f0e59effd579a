//! Incremental vacuum in chunks: one write transaction per chunk (one step), sized so a
//! step holds the writer about `[vacuum] step_target_ms`; a PASSIVE checkpoint on the
//! storage's checkpointer connection once the WAL outgrows `checkpoint_wal_kib` (it holds
//! no lock, so writers go on meanwhile); at the end PASSIVE then TRUNCATE, which shrinks
//! the file and empties the WAL; a pause after each step so other processes' writers get
//! in; and no next chunk while the WAL cannot be checkpointed.
//!
//! Why these parts (measured on a 150 MiB free list, see BENCHMARKS.md): the
//! `incremental_vacuum` work is about 2 us a page while the chunk's dirty pages fit the page
//! cache; a checkpoint syncs the database file and costs milliseconds, so checkpointing
//! after every chunk made the checkpoints most of the run.

use speckit_engine::JobContext;
use std::time::{Duration, Instant};

use crate::error::VacuumError;
use crate::measure::Measurement;
use crate::report::{Outcome, VacuumReport};
use crate::steps::{CheckpointOutcome, ChunkOutcome, Maintenance};

/// Frees the pages that were free when the job started, in chunks of `chunk_pages`.
pub async fn incremental(
    ctx: &JobContext,
    maintenance: &Maintenance,
    before: &Measurement,
    report: &mut VacuumReport,
    warnings: &mut Vec<String>,
) -> Result<(), VacuumError> {
    let policy = ctx.policy.policy.section::<crate::VacuumPolicy>().clone();
    let mut sizer = ChunkSizer::new(report.chunk_pages, policy.step_target_ms);
    let checkpoint_after_bytes = policy.checkpoint_wal_kib.saturating_mul(1024);
    // Free the pages that were free when the job started: pages other connections free
    // meanwhile wait for the next run, so the job always ends.
    let mut remaining = before.pages.freelist_count;
    let total = before.pages.freelist_count.max(0) as u64;
    let counter = ctx.counter("pages");
    let page_size = before.pages.page_size.max(512) as u64;
    while remaining > 0 {
        if ctx.cancel.is_cancelled() {
            report.outcome = Outcome::Cancelled;
            return Ok(());
        }
        let request = remaining.min(sizer.pages() as i64) as u32;
        let chunk = maintenance
            .incremental_chunk_with(request, checkpoint_after_bytes == 0, sizer.budget())
            .await
            .map_err(VacuumError::from_storage)?;
        sizer.observe(&chunk);
        report.chunks += 1;
        report.pages_freed += chunk.pages_freed;
        report.wal_bytes_peak = report.wal_bytes_peak.max(chunk.wal_bytes_peak);
        report.max_step_ms = report.max_step_ms.max(chunk.duration_us as f64 / 1000.0);
        report.max_chunk_pages = report.max_chunk_pages.max(request);
        report.min_chunk_pages = match report.min_chunk_pages {
            0 => request,
            pages => pages.min(request),
        };
        if chunk.rows_stepped as i64 != chunk.pages_freed {
            tracing::warn!(database = %ctx.storage.path().display(), rows = chunk.rows_stepped, pages = chunk.pages_freed, "incremental_vacuum returned a different number of rows than pages it freed");
        }
        ctx.emit(
            "vacuum_chunk",
            serde_json::json!({
                "chunk": report.chunks,
                "pages_freed": chunk.pages_freed,
                "freelist_after": chunk.freelist_after,
                "requested_pages": request,
                "wal_bytes_peak": chunk.wal_bytes_peak,
                "checkpoint_busy": chunk.checkpoint.is_some_and(|c| c.busy),
                "duration_us": chunk.duration_us,
                "vacuum_us": chunk.vacuum_us,
                "commit_us": chunk.commit_us,
                "checkpoint_us": chunk.checkpoint_us,
            }),
        );
        tracing::debug!(
            chunk = report.chunks,
            freed = chunk.pages_freed,
            free_left = chunk.freelist_after,
            "vacuum chunk done"
        );
        remaining -= chunk.pages_freed;
        counter.set(
            report.pages_freed.max(0) as u64,
            total,
            format!("{} of {total} free pages freed", report.pages_freed),
        );
        // Fewer pages than asked, without the budget stopping it: the freelist ran out.
        let ran_out = chunk.pages_freed < request as i64 && !chunk.stopped_at_budget;
        let last = remaining <= 0 || ran_out;
        let mut held = Duration::from_micros(chunk.duration_us);
        let checkpoint = match chunk.checkpoint {
            Some(checkpoint) => Some(checkpoint),
            None if last => Some(final_checkpoint(maintenance, report, &mut held).await?),
            // PASSIVE on the checkpointer's connection: writers go on while it copies.
            None if wal_in_use(maintenance, &chunk, page_size) > checkpoint_after_bytes => Some(
                maintenance
                    .checkpoint_passive()
                    .await
                    .map_err(VacuumError::from_storage)?,
            ),
            None => None,
        };
        if let Some(checkpoint) = checkpoint {
            report.checkpoints += 1;
            if checkpoint.busy {
                report.checkpoints_busy += 1;
                if !settle_checkpoint(ctx, maintenance, report, warnings).await? {
                    return Ok(());
                }
            }
        }
        if ran_out {
            // The freelist ran out first (another connection reused or freed pages).
            break;
        }
        if remaining > 0 && !pause_for_other_writers(ctx, held, report).await {
            return Ok(());
        }
    }
    if report.pages_freed < before.pages.freelist_count {
        warnings.push(format!(
            "freed {} of the {} pages that were free at the start: other connections reused or vacuumed the rest",
            report.pages_freed, before.pages.freelist_count
        ));
    }
    Ok(())
}

/// The fewest pages an adaptive step frees: below this the step's fixed costs
/// (`BEGIN`, the counts, `COMMIT`) outweigh its vacuum work.
pub const MIN_ADAPTIVE_CHUNK_PAGES: u32 = 16;

/// How many pages the next step frees: `chunk_pages` each time, or, with a step target,
/// as many as the last step's rate says fit in the target, changing by at most 2x a step
/// (one step slowed by the machine should not swing the next one far), within
/// [`MIN_ADAPTIVE_CHUNK_PAGES`]`..=chunk_pages`.
#[derive(Debug, Clone)]
pub struct ChunkSizer {
    pages: u32,
    max: u32,
    target_us: f64,
    /// The last step's `COMMIT`, in microseconds: the part of a step after its budget.
    last_commit_us: u64,
}

impl ChunkSizer {
    pub fn new(chunk_pages: u32, step_target_ms: f64) -> Self {
        let max = chunk_pages.max(1);
        let target_us = step_target_ms * 1000.0;
        // Adaptive runs start small: the first step measures the rate.
        let pages = if target_us > 0.0 {
            max.min(64).max(MIN_ADAPTIVE_CHUNK_PAGES.min(max))
        } else {
            max
        };
        Self {
            pages,
            max,
            target_us,
            last_commit_us: 0,
        }
    }

    /// How long the next step's vacuum may run before it stops and commits: the target
    /// less the last step's commit, at least half the target; none without a target.
    /// Pages are not all alike (a page moved costs more than one dropped from the end), so
    /// a count sized from the last step's rate alone overshot the target up to 5x.
    pub fn budget(&self) -> Option<Duration> {
        if self.target_us <= 0.0 {
            return None;
        }
        let budget_us = (self.target_us - self.last_commit_us as f64).max(self.target_us / 2.0);
        Some(Duration::from_secs_f64(budget_us / 1e6))
    }

    /// Pages for the next step.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// Sizes the next step from one that ran: its pages over the time it held the lock
    /// for its transaction (the checkpoint, when it has one, is a cost of the WAL's size,
    /// not of the chunk's).
    pub fn observe(&mut self, chunk: &ChunkOutcome) {
        self.last_commit_us = chunk.commit_us;
        let pages = u32::try_from(chunk.rows_stepped).unwrap_or(u32::MAX);
        self.observe_rate(pages, chunk.vacuum_us + chunk.commit_us);
    }

    /// [`ChunkSizer::observe`] from its figures: `pages` freed holding `held_us`.
    pub fn observe_rate(&mut self, pages: u32, held_us: u64) {
        if self.target_us <= 0.0 || pages == 0 {
            return;
        }
        let fitting = pages as f64 * self.target_us / held_us.max(1) as f64;
        let current = self.pages as f64;
        let next = fitting.clamp(current / 2.0, current * 2.0);
        let floor = MIN_ADAPTIVE_CHUNK_PAGES.min(self.max) as f64;
        self.pages = next.clamp(floor, self.max as f64) as u32;
    }
}

/// Leaves the database to other writers after a chunk, so the vacuum holds the write lock
/// at most `lock_time_fraction` of the time. Writers of this process queue on the writer
/// connection and get their turn anyway; writers of other processes poll for the lock in
/// SQLite's busy handler (after 1, 2, 5, 10, ... up to 100 ms) and would otherwise land
/// inside the next chunk again and again. Returns false if the engine shut down meanwhile.
async fn pause_for_other_writers(
    ctx: &JobContext,
    held: Duration,
    report: &mut VacuumReport,
) -> bool {
    let share = ctx
        .policy
        .policy
        .section::<crate::VacuumPolicy>()
        .lock_time_fraction
        .clamp(f64::MIN_POSITIVE, 1.0);
    let pause = held.mul_f64((1.0 - share) / share);
    if pause.is_zero() {
        return true;
    }
    report.paused_ms += pause.as_secs_f64() * 1000.0;
    tokio::select! {
        _ = ctx.cancel.cancelled() => {
            report.outcome = Outcome::Cancelled;
            false
        }
        _ = tokio::time::sleep(pause) => true,
    }
}

/// Bytes of the WAL in use after a chunk: its frames since SQLite last started it over,
/// or, without that count, the file's size (which never shrinks until a TRUNCATE).
fn wal_in_use(maintenance: &Maintenance, chunk: &ChunkOutcome, page_size: u64) -> u64 {
    match maintenance.wal_frames_at_last_commit() {
        Some(frames) => frames.saturating_mul(page_size),
        None => chunk.wal_bytes_peak,
    }
}

/// PASSIVE checkpoints the end tries (1, 2 and 4 ms apart) before its TRUNCATE.
const FINAL_PASSIVE_ATTEMPTS: u32 = 4;

/// TRUNCATE attempts the end makes without waiting before one that waits; after each it
/// sleeps (1, 2, 4, 8 and 16 ms), holding nothing.
const FINAL_TRUNCATE_ATTEMPTS: u32 = 5;

/// The end's checkpoint, which shrinks the file and empties the WAL: PASSIVE first, which
/// copies the WAL and truncates the database file without holding anything, then
/// TRUNCATE on the writer connection, which then has nothing left to copy or sync and
/// holds the write lock only to reset the WAL. (A TRUNCATE alone held it for the copy and
/// two fsyncs, the longest step of a run.) The TRUNCATE is tried without waiting first: a
/// waiting one takes the write lock, then sleeps in SQLite's busy handler (1, 2, 5 ms)
/// while another connection finishes its transaction, and that connection's next write
/// waits the whole time (measured: an 8.4 ms step, a 12.6 ms write). Only if every quick
/// attempt found the WAL in use does it wait, as before. Counts every checkpoint in
/// `report` but the one it returns.
async fn final_checkpoint(
    maintenance: &Maintenance,
    report: &mut VacuumReport,
    held: &mut Duration,
) -> Result<CheckpointOutcome, VacuumError> {
    // Another connection's checkpoint (the host's automatic one) makes PASSIVE give up at
    // once; it is over in milliseconds, and copying here beats copying under the lock.
    for attempt in 0..FINAL_PASSIVE_ATTEMPTS {
        let copied = maintenance
            .checkpoint_passive()
            .await
            .map_err(VacuumError::from_storage)?;
        report.checkpoints += 1;
        if !copied.busy {
            break;
        }
        report.checkpoints_busy += 1;
        if attempt + 1 < FINAL_PASSIVE_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(1 << attempt)).await;
        }
    }
    for attempt in 0..FINAL_TRUNCATE_ATTEMPTS {
        let emptied = timed_truncate(maintenance, report, held, false).await?;
        if !emptied.busy {
            return Ok(emptied);
        }
        report.checkpoints += 1;
        report.checkpoints_busy += 1;
        tokio::time::sleep(Duration::from_millis(1 << attempt)).await;
    }
    timed_truncate(maintenance, report, held, true).await
}

/// One TRUNCATE checkpoint (waiting for other connections or not), timed as a step.
async fn timed_truncate(
    maintenance: &Maintenance,
    report: &mut VacuumReport,
    held: &mut Duration,
    waits: bool,
) -> Result<CheckpointOutcome, VacuumError> {
    let started = Instant::now();
    let outcome = if waits {
        maintenance.checkpoint().await
    } else {
        maintenance.try_truncate().await
    };
    let took = started.elapsed();
    report.max_step_ms = report.max_step_ms.max(took.as_secs_f64() * 1000.0);
    *held += took;
    outcome.map_err(VacuumError::from_storage)
}

/// After a checkpoint that could not finish, retries `wal_checkpoint(TRUNCATE)` as steps
/// of its own, sleeping between them without holding the writer connection (the storage's
/// retry budget: `write_retry_attempts`, exponential backoff with jitter). The next chunk
/// waits for it: chunking on into a WAL nobody can checkpoint grows the WAL by every
/// page the vacuum moves (another process writing continuously holds the checkpoint
/// lock in its own auto-checkpoints; a long read transaction pins an old snapshot).
///
/// Returns false, with a warning and `outcome = incomplete`, when the WAL stayed blocked
/// (or the engine shut down): the job stops there and the next run goes on.
pub(crate) async fn settle_checkpoint(
    ctx: &JobContext,
    maintenance: &Maintenance,
    report: &mut VacuumReport,
    warnings: &mut Vec<String>,
) -> Result<bool, VacuumError> {
    let retry = ctx.storage.options().retry.clone();
    let started = Instant::now();
    for attempt in 0..retry.max_attempts.max(1) {
        tokio::select! {
            _ = ctx.cancel.cancelled() => {
                report.outcome = Outcome::Cancelled;
                return Ok(false);
            }
            _ = tokio::time::sleep(retry.backoff(attempt)) => {}
        }
        let checkpoint = maintenance
            .checkpoint()
            .await
            .map_err(VacuumError::from_storage)?;
        report.checkpoints += 1;
        if !checkpoint.busy {
            return Ok(true);
        }
        report.checkpoints_busy += 1;
    }
    report.outcome = Outcome::Incomplete;
    warnings.push(format!(
        "stopped after {} chunks: for {} ms another connection kept the WAL of {} from being checkpointed (a long read transaction, or continuous writes); vacuuming on would grow the WAL by every page moved. The next run frees the remaining pages",
        report.chunks,
        started.elapsed().as_millis(),
        ctx.storage.path().display()
    ));
    Ok(false)
}
