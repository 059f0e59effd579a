//! Shared transactional storage: the one place that opens the consensus database.
//!
//! Inside the process every write goes through one writer thread fed by a queue, each as a
//! `BEGIN IMMEDIATE` transaction (SQLite's busy handler is unfair; one writer is about 3.6x
//! faster than many contending ones). Against other processes a write waits `busy_timeout`
//! inside SQLite, then retries with exponential backoff and full jitter, but only on
//! `SQLITE_BUSY`/`SQLITE_LOCKED` (see [`retry`]). Reads come from a small pool of
//! `query_only` connections.
//!
//! Durability assumptions (see ARCHITECTURE.md): WAL mode; `synchronous = NORMAL` may lose
//! the last transactions on power loss but never corrupts; `FULL` (a policy switch) is
//! durable on commit. The engine never touches the `-wal`/`-shm` files, and never opens the
//! database file with plain file APIs (closing such a descriptor drops SQLite's locks).

pub mod migrations;
pub mod retry;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use retry::{is_transient, RetryPolicy};

/// The oldest SQLite the engine accepts: earlier releases have a WAL-reset bug that
/// concurrent writers and checkpoints can turn into corruption.
pub const MIN_SQLITE_VERSION: i32 = 3_051_003;

/// How durable a commit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// WAL + NORMAL: a commit survives a process crash; power loss may drop the last ones.
    Normal,
    /// A commit survives power loss too; slower.
    Full,
}

impl Synchronous {
    fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Everything needed to open the database.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    pub path: PathBuf,
    pub synchronous: Synchronous,
    /// How long SQLite's own busy handler waits for another process's lock per attempt.
    pub busy_timeout: Duration,
    /// Upper bound the WAL is truncated to after a checkpoint.
    pub journal_size_limit_bytes: i64,
    pub retry: RetryPolicy,
    /// How many read connections may be kept open.
    pub read_pool_size: usize,
}

impl StorageOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_millis(5_000),
            journal_size_limit_bytes: 64 * 1024 * 1024,
            retry: RetryPolicy::default(),
            read_pool_size: 4,
        }
    }
}

/// Storage errors, each naming the database file where it helps.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("SQLite {found} is too old: the engine needs 3.51.3 or newer (older releases can corrupt a WAL database when writers and checkpoints race)")]
    SqliteTooOld { found: String },
    #[error("cannot create the folder for database {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path} is not a SQLite database (or is encrypted or corrupt)")]
    NotADatabase { path: PathBuf },
    #[error("database {path} is read-only: the engine needs to write to it and to its folder (for the -wal and -shm files)")]
    ReadOnly { path: PathBuf },
    #[error("database {path} could not switch to WAL mode (journal_mode is {mode})")]
    NoWal { path: PathBuf, mode: String },
    #[error("migrating database {path} to schema version {version} failed: {source}")]
    Migration {
        path: PathBuf,
        version: i64,
        source: rusqlite::Error,
    },
    #[error("database {path} has schema version {found}, newer than this engine knows ({known}); upgrade speckit-hygiene")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("database {path} stayed locked by another process after {attempts} attempts over {waited_ms} ms")]
    Busy {
        path: PathBuf,
        attempts: u32,
        waited_ms: u64,
    },
    #[error("SQLite error on {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("a storage callback panicked: {0}; its transaction was rolled back")]
    Panicked(String),
    #[error("the storage writer has shut down")]
    Closed,
    #[error("{0}")]
    Other(String),
}

impl StorageError {
    /// The underlying SQLite error, if there is one.
    pub fn sqlite(&self) -> Option<&rusqlite::Error> {
        match self {
            StorageError::Open { source, .. }
            | StorageError::Migration { source, .. }
            | StorageError::Sqlite { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Counters the storage layer keeps; read them with [`Storage::stats`].
#[derive(Debug, Default)]
pub struct StorageCounters {
    pub writes_committed: AtomicU64,
    pub writes_rolled_back: AtomicU64,
    /// Attempts repeated after `SQLITE_BUSY`/`SQLITE_LOCKED`.
    pub busy_retries: AtomicU64,
    /// Writes that gave up after the retry budget.
    pub busy_failures: AtomicU64,
}

/// A snapshot of [`StorageCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StorageStats {
    pub writes_committed: u64,
    pub writes_rolled_back: u64,
    pub busy_retries: u64,
    pub busy_failures: u64,
}

type WriterJob = Box<dyn FnOnce(&mut Connection) + Send>;

/// A cheap, cloneable handle to the shared database.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.inner.options.path)
            .finish()
    }
}

struct Inner {
    options: StorageOptions,
    queue: Mutex<Option<mpsc::Sender<WriterJob>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    counters: Arc<StorageCounters>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = handle.join();
        }
    }
}

/// Checks the linked SQLite library against [`MIN_SQLITE_VERSION`].
pub fn check_sqlite_version() -> Result<(), StorageError> {
    check_version_number(rusqlite::version_number(), rusqlite::version())
}

fn check_version_number(number: i32, text: &str) -> Result<(), StorageError> {
    if number < MIN_SQLITE_VERSION {
        return Err(StorageError::SqliteTooOld {
            found: text.to_string(),
        });
    }
    Ok(())
}

impl Storage {
    /// Opens (creating if needed) the database, applies pragmas and migrations, and starts
    /// the writer thread. Blocking: call from `spawn_blocking` inside async code.
    pub fn open(options: StorageOptions) -> Result<Self, StorageError> {
        check_sqlite_version()?;
        let path = options.path.clone();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StorageError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let mut conn = open_connection(&options, false)?;
        migrations::migrate(&mut conn, &path)?;

        let (sender, receiver) = mpsc::channel::<WriterJob>();
        let writer = std::thread::Builder::new()
            .name("speckit-storage-writer".into())
            .spawn(move || {
                for job in receiver {
                    job(&mut conn);
                }
                // Dropping `conn` here closes it; SQLite checkpoints on last close.
            })
            .map_err(|e| StorageError::Other(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                queue: Mutex::new(Some(sender)),
                writer: Mutex::new(Some(writer)),
                readers: Mutex::new(Vec::new()),
                counters: Arc::new(StorageCounters::default()),
            }),
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.inner.options.path
    }

    pub fn options(&self) -> &StorageOptions {
        &self.inner.options
    }

    pub fn stats(&self) -> StorageStats {
        let c = &self.inner.counters;
        StorageStats {
            writes_committed: c.writes_committed.load(Ordering::Relaxed),
            writes_rolled_back: c.writes_rolled_back.load(Ordering::Relaxed),
            busy_retries: c.busy_retries.load(Ordering::Relaxed),
            busy_failures: c.busy_failures.load(Ordering::Relaxed),
        }
    }

    fn submit(&self, job: WriterJob) -> Result<(), StorageError> {
        let queue = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
        match queue.as_ref() {
            Some(sender) => sender.send(job).map_err(|_| StorageError::Closed),
            None => Err(StorageError::Closed),
        }
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the writer thread: commit on `Ok`,
    /// roll back on `Err` or panic. Waits behind earlier writes of this process; retries
    /// `BEGIN`/`COMMIT` on another process's lock within the retry budget.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        let (reply, receiver) = tokio::sync::oneshot::channel();
        let ctx = self.write_ctx();
        self.submit(Box::new(move |conn| {
            let _ = reply.send(run_write(conn, &ctx, f));
        }))?;
        receiver.await.map_err(|_| StorageError::Closed)?
    }

    /// [`Storage::write`] for blocking code (never call it from the writer itself).
    pub fn write_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        let (reply, receiver) = mpsc::sync_channel(1);
        let ctx = self.write_ctx();
        self.submit(Box::new(move |conn| {
            let _ = reply.send(run_write(conn, &ctx, f));
        }))?;
        receiver.recv().map_err(|_| StorageError::Closed)?
    }

    /// Runs `f` on the writer's connection outside any transaction, for maintenance that
    /// cannot run inside one (`VACUUM`, `incremental_vacuum`, `wal_checkpoint`). Other
    /// writes of this process wait until `f` returns, so keep each call short (one chunk).
    pub async fn maintain<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, receiver) = tokio::sync::oneshot::channel();
        let path = self.inner.options.path.clone();
        self.submit(Box::new(move |conn| {
            let result = catch_unwind(AssertUnwindSafe(|| f(conn)))
                .unwrap_or_else(|panic| Err(StorageError::Panicked(panic_message(&panic))));
            // A maintenance callback must not leave a transaction open.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
                tracing::warn!(database = %path.display(), "maintenance left a transaction open; rolled back");
            }
            let _ = reply.send(result);
        }))?;
        receiver.await.map_err(|_| StorageError::Closed)?
    }

    /// Runs `f` on a pooled read-only connection, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_blocking(f))
            .await
            .map_err(|e| StorageError::Panicked(e.to_string()))?
    }

    /// [`Storage::read`] for blocking code.
    pub fn read_blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T>,
    {
        let pooled = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_connection(&self.inner.options, true)?,
        };
        let result = f(&conn).map_err(|source| StorageError::Sqlite {
            path: self.inner.options.path.clone(),
            source,
        });
        let mut readers = self.inner.readers.lock().unwrap_or_else(|e| e.into_inner());
        if readers.len() < self.inner.options.read_pool_size {
            readers.push(conn);
        }
        result
    }

    /// Stops accepting writes and waits until every queued write has finished.
    pub fn close(&self) {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = handle.join();
        }
        self.inner
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn write_ctx(&self) -> WriteCtx {
        WriteCtx {
            path: self.inner.options.path.clone(),
            retry: self.inner.options.retry.clone(),
            counters: self.inner.counters.clone(),
        }
    }
}

struct WriteCtx {
    path: PathBuf,
    retry: RetryPolicy,
    counters: Arc<StorageCounters>,
}

fn run_write<T, E, F>(conn: &mut Connection, ctx: &WriteCtx, f: F) -> Result<T, E>
where
    F: FnOnce(&Transaction<'_>) -> Result<T, E>,
    E: From<StorageError>,
{
    let sqlite_err = |source| StorageError::Sqlite {
        path: ctx.path.clone(),
        source,
    };
    // BEGIN IMMEDIATE takes the write lock up front: a deferred transaction that reads and
    // then writes fails with SQLITE_BUSY at once, without the busy handler, if another
    // connection committed in between.
    let mut tx = ctx
        .retry
        .run(&ctx.path, &ctx.counters, || {
            Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        })
        .map_err(|e| e.into_storage_error(&ctx.path))?;
    let outcome = catch_unwind(AssertUnwindSafe(|| f(&tx)));
    match outcome {
        Ok(Ok(value)) => {
            // COMMIT by hand so a busy COMMIT can be retried: the transaction stays open.
            tx.set_drop_behavior(rusqlite::DropBehavior::Ignore);
            drop(tx);
            let committed = ctx
                .retry
                .run(&ctx.path, &ctx.counters, || conn.execute_batch("COMMIT"));
            match committed {
                Ok(()) => {
                    ctx.counters
                        .writes_committed
                        .fetch_add(1, Ordering::Relaxed);
                    Ok(value)
                }
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    ctx.counters
                        .writes_rolled_back
                        .fetch_add(1, Ordering::Relaxed);
                    Err(e.into_storage_error(&ctx.path).into())
                }
            }
        }
        Ok(Err(e)) => {
            tx.set_drop_behavior(rusqlite::DropBehavior::Rollback);
            if let Err(source) = tx.rollback() {
                tracing::error!(error = %sqlite_err(source), "rollback failed");
            }
            ctx.counters
                .writes_rolled_back
                .fetch_add(1, Ordering::Relaxed);
            Err(e)
        }
        Err(panic) => {
            drop(tx); // rolls back
            ctx.counters
                .writes_rolled_back
                .fetch_add(1, Ordering::Relaxed);
            Err(StorageError::Panicked(panic_message(&panic)).into())
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Opens one connection with the engine's pragmas.
fn open_connection(options: &StorageOptions, reader: bool) -> Result<Connection, StorageError> {
    let path = &options.path;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|source| StorageError::Open {
        path: path.clone(),
        source,
    })?;
    let classify = |source: rusqlite::Error| match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => {
            StorageError::NotADatabase { path: path.clone() }
        }
        Some(rusqlite::ErrorCode::ReadOnly) => StorageError::ReadOnly { path: path.clone() },
        _ => StorageError::Open {
            path: path.clone(),
            source,
        },
    };
    conn.busy_timeout(options.busy_timeout).map_err(classify)?;
    // Reading the schema fails on a file that is not a database.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(classify)?;
    if !reader && conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
        return Err(StorageError::ReadOnly { path: path.clone() });
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(classify)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::NoWal {
            path: path.clone(),
            mode,
        });
    }
    // PRAGMA arguments cannot be bound parameters; these values come from enums and integers.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; PRAGMA journal_size_limit = {};",
        options.synchronous.pragma_value(),
        options.journal_size_limit_bytes
    ))
    .map_err(classify)?;
    if reader {
        conn.execute_batch("PRAGMA query_only = ON")
            .map_err(classify)?;
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_old_sqlite() {
        let err = check_version_number(3_051_002, "3.51.2").unwrap_err();
        assert!(err.to_string().contains("3.51.2"));
        assert!(check_version_number(3_051_003, "3.51.3").is_ok());
        assert!(check_sqlite_version().is_ok(), "bundled SQLite must pass");
    }
}
