//! Executes a [`Plan`]: per SPEC, under its lock, in this order: discard temporaries, adopt
//! unrecorded archives, purge old archives (an offloaded one's object first), offload old
//! archives (see [`crate::offload`]), delete already-archived sources, then write
//! the new archive (temp, fsync, verify, rename, fsync folder), write its manifest sidecar
//! (see [`crate::sidecar`]), record it (one row) and delete its database rows in one
//! transaction, and only then delete its sources.
//!
//! Every figure reported is counted from what was done (bytes from `lstat` right before
//! an `unlink`, archive sizes from the verified file). One file's failure is reported with
//! its path and the run goes on; the sources of a failed archive stay where they are.
//! SPECs run on up to `workers` threads; storage writes go through the engine's writer.
//! Each SPEC deletes its sources on up to `delete_threads` threads (see [`delete`]) only
//! after its archive is recorded; a crash among those deletions leaves each source in
//! place or gone, every one held by the recorded archive, and the next run's plan deletes
//! the rest (`finish`). What each thread did is recorded in the plan's order, so the
//! report, messages and figures are the same as on one thread.

mod delete;
mod unit;

pub use delete::DEFAULT_DELETE_THREADS;

use chrono::{DateTime, Utc};
use serde::Serialize;
use speckit_engine::Storage;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::faults::Faults;
use crate::lock::{self, LockError};
use crate::plan::{self, Action, ActionStatus, Plan, Unit};
use unit::run_unit;

/// What executing needs besides the plan.
pub struct ExecRequest<'a> {
    pub plan: &'a Plan,
    pub storage: &'a Storage,
    /// The time archives are stamped with and purges recorded at.
    pub now: DateTime<Utc>,
    pub zstd_level: i32,
    pub faults: Option<&'a dyn Faults>,
    /// The offload store's client, when the plan offloads or purges an offloaded archive
    /// (`Err`: why there is none; those actions fail with it).
    pub remote: Result<&'a crate::offload::Remote, &'a str>,
    /// Polled between steps: stop at the next safe point when it returns true.
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
    /// Told `(SPECs done, SPECs in the plan)` after each SPEC (from the worker threads).
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
    /// SPECs worked on at once.
    pub workers: usize,
    /// Source files each of those SPECs deletes at once (unlinks wait on the disk, not
    /// the CPU: see [`DEFAULT_DELETE_THREADS`]).
    pub delete_threads: usize,
    /// Return every action with its status (`cleanup --json`); off, only the figures are
    /// kept, so memory does not grow with the number of files.
    pub keep_actions: bool,
}

/// Figures of a run, each counted from what was done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Figures {
    /// Files put into new archives this run (their sources were then deleted, except
    /// those counted in `kept_after_archiving`).
    pub archived_files: u64,
    pub archived_bytes: u64,
    pub archives_written: u64,
    pub archive_bytes_written: u64,
    /// Source files deleted (archived this run or by an interrupted run).
    pub deleted_files: u64,
    pub deleted_bytes: u64,
    pub purged_archives: u64,
    pub purged_bytes: u64,
    /// Offloaded archives' objects deleted by purges.
    #[serde(default)]
    pub purged_remote_objects: u64,
    /// Archives whose local copy was deleted after their offloaded copy was read back and
    /// recorded, and those local bytes (apparent, from `stat` before the unlink).
    #[serde(default)]
    pub offloaded_archives: u64,
    #[serde(default)]
    pub offloaded_local_bytes: u64,
    /// Bytes sent to the offload store.
    #[serde(default)]
    pub uploaded_bytes: u64,
    /// Allocated bytes of the offloaded archives' local copies deleted.
    #[serde(default)]
    pub offloaded_allocated_bytes: u64,
    pub adopted_archives: u64,
    pub discarded_temps: u64,
    pub archived_rows: u64,
    pub deleted_rows: u64,
    /// Files in an archive whose source changed after archiving: kept in place.
    pub kept_after_archiving: u64,
    /// Deleted bytes (sources and purged archives) minus bytes of archives written:
    /// apparent sizes (`du --apparent-size`).
    pub bytes_reclaimed: i64,
    /// Allocated bytes (`st_blocks * 512`) of the sources deleted, as each was when read.
    pub deleted_allocated_bytes: u64,
    /// Allocated bytes of the archives purged.
    pub purged_allocated_bytes: u64,
    /// Allocated bytes of the archives written, at their final names.
    pub archive_allocated_bytes_written: u64,
    /// What `du` and `df` see freed: deleted and purged allocated bytes minus the
    /// allocated bytes of the archives written. Negative when the archives take more
    /// blocks than the small files they replaced (each small file fills whole blocks,
    /// so this is rare); the report then says so.
    pub allocated_bytes_reclaimed: i64,
}

impl Figures {
    fn add(&mut self, o: &Figures) {
        self.archived_files += o.archived_files;
        self.archived_bytes += o.archived_bytes;
        self.archives_written += o.archives_written;
        self.archive_bytes_written += o.archive_bytes_written;
        self.deleted_files += o.deleted_files;
        self.deleted_bytes += o.deleted_bytes;
        self.purged_archives += o.purged_archives;
        self.purged_bytes += o.purged_bytes;
        self.purged_remote_objects += o.purged_remote_objects;
        self.offloaded_archives += o.offloaded_archives;
        self.offloaded_local_bytes += o.offloaded_local_bytes;
        self.uploaded_bytes += o.uploaded_bytes;
        self.offloaded_allocated_bytes += o.offloaded_allocated_bytes;
        self.adopted_archives += o.adopted_archives;
        self.discarded_temps += o.discarded_temps;
        self.archived_rows += o.archived_rows;
        self.deleted_rows += o.deleted_rows;
        self.kept_after_archiving += o.kept_after_archiving;
        self.deleted_allocated_bytes += o.deleted_allocated_bytes;
        self.purged_allocated_bytes += o.purged_allocated_bytes;
        self.archive_allocated_bytes_written += o.archive_allocated_bytes_written;
    }
}

/// The result of executing a plan.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The plan's actions, each with its status (when asked for: `keep_actions`).
    pub actions: Vec<Action>,
    pub figures: Figures,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub cancelled: bool,
}

/// Executes the plan. Brings the retention tables up to date first (once per storage; a
/// no-op when the engine already did it before the job): callers that run a plan outside
/// `Engine::run_job` (benchmarks, tests, embedders) need no step of their own.
pub fn run(req: &ExecRequest<'_>) -> Outcome {
    // Exempt and skipped entries are reported, never touched.
    let mut outcome = Outcome {
        actions: req.plan.head_actions(),
        ..Outcome::default()
    };
    let units = &req.plan.units;
    if !units.is_empty() {
        if let Err(e) = req
            .storage
            .ensure_schema_blocking(&crate::schema::RETENTION_SCHEMA)
        {
            let message = format!(
                "the retention tables cannot be brought up to date: {e}; nothing was changed"
            );
            for u in units {
                let out = UnitOutcome::all(u, ActionStatus::Failed, &message);
                if req.keep_actions {
                    outcome.actions.extend(out.actions);
                }
            }
            outcome.errors.push(message);
            return outcome;
        }
    }
    // Folders that map to one tracker ID (`SPEC-KIT-025-...-with` and `...-wit`) run one
    // after the other under that ID's lock too: a writer may lock either name.
    let mut by_tracker: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, u) in units.iter().enumerate() {
        by_tracker.entry(u.tracker_id.as_str()).or_default().push(i);
    }
    let groups: Vec<(&str, Vec<usize>)> = by_tracker.into_iter().collect();
    let results: Vec<Mutex<Option<UnitOutcome>>> = units.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let workers = req.workers.clamp(1, groups.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let g = next.fetch_add(1, Ordering::Relaxed);
                let Some((tracker_id, members)) = groups.get(g) else {
                    break;
                };
                let outcomes = run_group(req, tracker_id, members);
                let done = finished.fetch_add(members.len(), Ordering::Relaxed) + members.len();
                (req.progress)(done as u64, units.len() as u64);
                for (i, mut result) in members.iter().zip(outcomes) {
                    if !req.keep_actions {
                        result.actions = Vec::new();
                    }
                    *results[*i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                }
            });
        }
    });
    for slot in results {
        let Some(u) = slot.into_inner().unwrap_or_else(|e| e.into_inner()) else {
            continue;
        };
        outcome.actions.extend(u.actions);
        outcome.figures.add(&u.figures);
        outcome.errors.extend(u.errors);
        outcome.warnings.extend(u.warnings);
        outcome.cancelled |= u.cancelled;
    }
    let f = &mut outcome.figures;
    f.bytes_reclaimed = (f.deleted_bytes + f.purged_bytes + f.offloaded_local_bytes) as i64
        - f.archive_bytes_written as i64;
    f.allocated_bytes_reclaimed =
        (f.deleted_allocated_bytes + f.purged_allocated_bytes + f.offloaded_allocated_bytes) as i64
            - f.archive_allocated_bytes_written as i64;
    if f.allocated_bytes_reclaimed < 0 {
        let f = outcome.figures.clone();
        outcome.warnings.push(format!(
            "this run freed no space: the {} archive(s) written take {} allocated bytes, more than the {} freed by deleting {} file(s) and purging {} archive(s)",
            f.archives_written,
            f.archive_allocated_bytes_written,
            f.deleted_allocated_bytes + f.purged_allocated_bytes,
            f.deleted_files,
            f.purged_archives
        ));
    }
    outcome
}

/// The units of one tracker ID, under that ID's lock when a folder is named differently.
fn run_group(req: &ExecRequest<'_>, tracker_id: &str, members: &[usize]) -> Vec<UnitOutcome> {
    let units: Vec<&Unit> = members.iter().map(|i| &req.plan.units[*i]).collect();
    let needs_id_lock = units.iter().any(|u| u.key != tracker_id)
        && speckit_engine::SpecId::parse(tracker_id).is_ok();
    let id_lock = if needs_id_lock {
        match lock::try_lock(&req.plan.root, tracker_id) {
            Ok(l) => Some(l),
            Err(e) => {
                // Every folder of the ID is skipped (or failed); the cause is said once.
                let busy = matches!(e, LockError::Busy { .. });
                return units
                    .iter()
                    .enumerate()
                    .map(|(i, u)| {
                        let status = if busy {
                            ActionStatus::Skipped
                        } else {
                            ActionStatus::Failed
                        };
                        let mut out = UnitOutcome::all(u, status, &e.to_string());
                        if i == 0 {
                            if busy {
                                out.warnings.push(e.to_string());
                            } else {
                                out.errors.push(e.to_string());
                            }
                        }
                        out
                    })
                    .collect();
            }
        }
    } else {
        None
    };
    units
        .iter()
        .map(|u| {
            if (req.cancelled)() {
                UnitOutcome::all(u, ActionStatus::Skipped, "cancelled before this SPEC").cancelled()
            } else {
                // The folder named exactly the ID runs under the ID's lock held here.
                run_unit(req, u, id_lock.as_ref())
            }
        })
        .collect()
}

pub(crate) struct UnitOutcome {
    actions: Vec<Action>,
    figures: Figures,
    errors: Vec<String>,
    warnings: Vec<String>,
    cancelled: bool,
}

impl UnitOutcome {
    pub(crate) fn all(unit: &Unit, status: ActionStatus, detail: &str) -> Self {
        let mut actions = plan::unit_actions(unit);
        for a in &mut actions {
            a.status = Some(status);
            a.detail = Some(detail.to_string());
        }
        Self {
            actions,
            figures: Figures::default(),
            errors: Vec::new(),
            warnings: Vec::new(),
            cancelled: false,
        }
    }

    fn cancelled(mut self) -> Self {
        self.cancelled = true;
        self
    }
}
