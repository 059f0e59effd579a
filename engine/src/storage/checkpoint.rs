//! Checkpoints off the commit path: the writer connection's automatic checkpoint is
//! replaced by a WAL hook that wakes a checkpointer thread, which runs
//! `wal_checkpoint(PASSIVE)` on a connection of its own.
//!
//! Why: SQLite's automatic checkpoint runs inside the `COMMIT` that takes the WAL past
//! [`AUTO_CHECKPOINT_PAGES`], so that one commit also copies the WAL into the database and
//! syncs it (two fsyncs, tens of milliseconds), and every write queued behind it on the
//! writer thread waits as long (one of 32 spawn rows waited 2.34 s that way). A PASSIVE
//! checkpoint takes no write lock: commits of this process and of others go on while it
//! copies. It is the same checkpoint SQLite would have run (PASSIVE, same threshold), only
//! on another connection, so nothing about the file changes; when the whole WAL is copied
//! SQLite also truncates the database file to its pages, as its own checkpoint does.
//!
//! The checkpointer never waits for anything: PASSIVE copies what no reader still needs
//! and stops. What it could not copy is copied by a later checkpoint (its own, the host's,
//! or the last connection's close).

use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::{StorageCounters, StorageError};

/// WAL pages after a commit that wake the checkpointer: SQLite's own default for its
/// automatic checkpoint (`wal_autocheckpoint = 1000`).
pub const AUTO_CHECKPOINT_PAGES: i32 = 1000;

/// What one PASSIVE checkpoint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PassiveCheckpoint {
    /// Frames in the WAL when it ran.
    pub wal_frames: i64,
    /// Frames copied into the database, counting those copied by earlier checkpoints.
    pub checkpointed_frames: i64,
    /// Another connection was checkpointing (SQLite allows one at a time): nothing was
    /// done, and both counts are 0.
    pub busy: bool,
}

impl PassiveCheckpoint {
    /// Whether every frame is in the database now (the database file then has its final
    /// size; the WAL is reused from its start by the next write).
    pub fn complete(&self) -> bool {
        !self.busy && self.checkpointed_frames >= self.wal_frames
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<PassiveCheckpoint, StorageError>>;

#[derive(Default)]
struct State {
    /// A commit took the WAL past the threshold since the last checkpoint.
    nudged: bool,
    /// Callers waiting for a checkpoint of their own.
    waiters: Vec<Reply>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Frames in the WAL after the writer's last commit (from the WAL hook), -1 before
    /// the first. The WAL file keeps its largest size; this is how much of it is in use.
    wal_frames: AtomicI64,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            wake: Condvar::new(),
            wal_frames: AtomicI64::new(-1),
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The checkpointer thread and how to reach it.
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Opens the checkpointer's connection (the database exists and is in WAL mode by
    /// now) and starts its thread.
    pub(crate) fn start(path: &Path, counters: Arc<StorageCounters>) -> Result<Self, StorageError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|cause| StorageError::Open {
                path: path.to_path_buf(),
                cause,
            })?;
        // A connection knows the database is in WAL mode only once it has read it: until
        // then SQLite answers a checkpoint with -1 frames and does nothing.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|cause| StorageError::Sqlite {
            path: path.to_path_buf(),
            cause,
        })?;
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            let path = path.to_path_buf();
            std::thread::Builder::new()
                .name("speckit-storage-checkpointer".into())
                .spawn(move || run(conn, &path, &shared, &counters))
                .map_err(|e| {
                    StorageError::Other(format!("cannot start the checkpointer thread: {e}"))
                })?
        };
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Replaces `writer`'s automatic checkpoint with a hook that wakes this checkpointer
    /// once a commit leaves [`AUTO_CHECKPOINT_PAGES`] or more in the WAL.
    pub(crate) fn take_over_auto_checkpoint(
        &self,
        writer: &mut Connection,
    ) -> rusqlite::Result<()> {
        let shared = self.shared.clone();
        writer.wal_hook(Some(move |_: &mut Wal, pages: std::ffi::c_int| {
            shared.wal_frames.store(pages.into(), Ordering::Relaxed);
            if pages >= AUTO_CHECKPOINT_PAGES {
                shared.lock().nudged = true;
                shared.wake.notify_one();
            }
            Ok(())
        }))
    }

    /// Frames in the WAL after the writer connection's last commit, if it committed yet.
    pub(crate) fn wal_frames_at_last_commit(&self) -> Option<u64> {
        u64::try_from(self.shared.wal_frames.load(Ordering::Relaxed)).ok()
    }

    /// Queues a checkpoint of the caller's own; the answer comes on the returned channel.
    pub(crate) fn request(
        &self,
    ) -> tokio::sync::oneshot::Receiver<Result<PassiveCheckpoint, StorageError>> {
        let (reply, receiver) = tokio::sync::oneshot::channel();
        let mut state = self.shared.lock();
        if !state.stop {
            state.waiters.push(reply);
            self.shared.wake.notify_one();
        }
        // After stop the reply is dropped: the caller sees the storage closed.
        receiver
    }

    /// Answers the waiting callers, stops the thread and closes its connection.
    pub(crate) fn stop(&self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread: waits for a nudge or a caller, checkpoints, repeats until stopped. Nudges
/// that arrive while a checkpoint runs fold into the next one.
fn run(conn: Connection, path: &Path, shared: &Shared, counters: &StorageCounters) {
    loop {
        let (nudged, waiters) = {
            let mut state = shared.lock();
            while !state.nudged && state.waiters.is_empty() && !state.stop {
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.stop && state.waiters.is_empty() {
                return;
            }
            (
                std::mem::take(&mut state.nudged),
                std::mem::take(&mut state.waiters),
            )
        };
        if waiters.is_empty() && nudged {
            if let Err(e) = passive(&conn, path, counters) {
                tracing::warn!(error = %e, "background checkpoint failed; the next commit past the threshold tries again");
            }
        }
        // Each caller gets a checkpoint that started after it asked.
        for reply in waiters {
            let _ = reply.send(passive(&conn, path, counters));
        }
    }
}

fn passive(
    conn: &Connection,
    path: &Path,
    counters: &StorageCounters,
) -> Result<PassiveCheckpoint, StorageError> {
    let outcome = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE);
    match outcome {
        Ok((wal_frames, _)) if wal_frames < 0 => {
            counters.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
            Err(StorageError::Other(format!(
                "cannot checkpoint {}: SQLite says it is not in WAL mode",
                path.display()
            )))
        }
        Ok((wal_frames, checkpointed_frames)) => {
            counters.checkpoints.fetch_add(1, Ordering::Relaxed);
            Ok(PassiveCheckpoint {
                wal_frames: wal_frames.into(),
                checkpointed_frames: checkpointed_frames.into(),
                busy: false,
            })
        }
        Err(cause) if cause.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
            Ok(PassiveCheckpoint {
                wal_frames: 0,
                checkpointed_frames: 0,
                busy: true,
            })
        }
        Err(cause) => {
            counters.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
            Err(StorageError::Sqlite {
                path: path.to_path_buf(),
                cause,
            })
        }
    }
}
