//! Shared transactional storage: the one place that opens the consensus database.
//!
//! Inside the process every write goes through one writer thread fed by a queue, each as a
//! `BEGIN IMMEDIATE` transaction (SQLite's busy handler is unfair; one writer is about 3.6x
//! faster than many contending ones). Against other processes a write waits `busy_timeout`
//! inside SQLite, then retries with exponential backoff and full jitter, but only on
//! `SQLITE_BUSY`/`SQLITE_LOCKED` (see [`retry`]). Reads come from a small pool of
//! `query_only` connections.
//!
//! The database belongs to the host application (see [`host`]): the engine never reads or
//! writes `PRAGMA user_version` (its own schema is versioned per component in
//! [`schema`]; [`legacy`] repairs what 0.1 did to it), creates the host's tables only where
//! they are missing and only as the host would, and opens the file read-only for every
//! command that only reports ([`Storage::open_read_only`]): such an open creates nothing,
//! not even the file. A database that fails `PRAGMA quick_check` at open is never written.
//!
//! Durability assumptions (see ARCHITECTURE.md): WAL mode; `synchronous = NORMAL` may lose
//! the last transactions on power loss but never corrupts; `FULL` (a policy switch) is
//! durable on commit. The engine never touches the `-wal`/`-shm` files, and never opens the
//! database file with plain file APIs (closing such a descriptor drops SQLite's locks).

pub mod checkpoint;
pub mod host;
pub mod legacy;
pub mod retry;
pub mod sandbox;
pub mod schema;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use checkpoint::Checkpointer;

pub use checkpoint::PassiveCheckpoint;
pub use retry::{is_transient, RetryPolicy};
pub use schema::{
    column_exists, table_exists, ComponentSchema, Migration, MigrationStep, ENGINE_SCHEMA,
};

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
    /// Create the file (and its folder) when it does not exist; when false, a read-write
    /// open of a missing file fails with [`StorageError::Missing`] and creates nothing.
    pub create_if_missing: bool,
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
            create_if_missing: true,
        }
    }
}

/// Storage errors, each naming the database file once and the cause once. (The cause is
/// part of the message, not a `source()`, so `{:#}` chains do not print it twice.)
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("SQLite {found} is too old: the engine needs 3.51.3 or newer (older releases can corrupt a WAL database when writers and checkpoints race)")]
    SqliteTooOld { found: String },
    #[error("cannot create the folder for database {path}: {cause}")]
    CreateDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot open database {path}: {cause}")]
    Open {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error("database {path} does not exist (nothing was created)")]
    Missing { path: PathBuf },
    #[error("{path} is not a SQLite database (or is encrypted or corrupt)")]
    NotADatabase { path: PathBuf },
    #[error("database {path} is read-only: the engine needs to write to it and to its folder (for the -wal and -shm files)")]
    ReadOnly { path: PathBuf },
    #[error("database {path} could not switch to WAL mode (journal_mode is {mode})")]
    NoWal { path: PathBuf, mode: String },
    #[error("migrating the {component} tables of database {path} to version {version} ({name}) failed: {cause}")]
    Migration {
        path: PathBuf,
        component: &'static str,
        version: i64,
        name: &'static str,
        /// Boxed: this variant would otherwise make every storage `Result` large.
        cause: Box<rusqlite::Error>,
    },
    #[error("the {component} tables of database {path} are at version {found}, newer than this engine knows ({known}); upgrade speckit-hygiene")]
    SchemaTooNew {
        path: PathBuf,
        component: &'static str,
        found: i64,
        known: i64,
    },
    #[error("database {path} stayed locked by another process after {attempts} attempts over {waited_ms} ms")]
    Busy {
        path: PathBuf,
        attempts: u32,
        waited_ms: u64,
    },
    #[error("database {path}: {cause}")]
    Sqlite {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error("database {path} is not written: {reason}")]
    NotWritable { path: PathBuf, reason: WriteRefusal },
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
            StorageError::Open { cause, .. } | StorageError::Sqlite { cause, .. } => Some(cause),
            StorageError::Migration { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

/// Maps SQLite errors met on `conn` to [`StorageError::Sqlite`] naming its file; for the
/// callbacks of [`Storage::write`] and [`Storage::read`].
pub fn sql_error(conn: &Connection) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
    move |cause| StorageError::Sqlite {
        path: PathBuf::from(conn.path().unwrap_or_default()),
        cause,
    }
}

/// Why a storage refuses writes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WriteRefusal {
    /// Opened with [`Storage::open_read_only`] (dry runs and reporting commands).
    ReadOnlyOpen,
    /// `PRAGMA quick_check` found problems at open; writing could spread the damage.
    FailedQuickCheck { problems: Vec<String> },
}

impl std::fmt::Display for WriteRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteRefusal::ReadOnlyOpen => f.write_str("it was opened read-only"),
            WriteRefusal::FailedQuickCheck { problems } => write!(
                f,
                "it failed PRAGMA quick_check ({}); restore it from a backup or check it with the sqlite3 shell",
                problems.join("; ")
            ),
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
    /// PASSIVE checkpoints the checkpointer thread ran, and those that failed.
    pub checkpoints: AtomicU64,
    pub checkpoint_failures: AtomicU64,
}

/// A snapshot of [`StorageCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StorageStats {
    pub writes_committed: u64,
    pub writes_rolled_back: u64,
    pub busy_retries: u64,
    pub busy_failures: u64,
    pub checkpoints: u64,
    pub checkpoint_failures: u64,
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
    /// `None` while writes are allowed.
    refusal: Option<WriteRefusal>,
    /// Opened read-only and the file does not exist: every read says so.
    absent: bool,
    /// Components whose schema this storage has brought up to date.
    schemas: Mutex<HashSet<&'static str>>,
    queue: Mutex<Option<mpsc::Sender<WriterJob>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    counters: Arc<StorageCounters>,
    /// Runs the automatic checkpoints off the writer thread; `None` without a writer, or
    /// if it could not start (SQLite's own automatic checkpoint stays on then).
    checkpointer: Option<Checkpointer>,
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
    /// Opens (creating if needed) the database for reading and writing: applies pragmas,
    /// checks it (`quick_check`), completes the host's tables where missing, brings the
    /// engine's own tables up to date, and starts the writer thread. A database that fails
    /// the check is opened all the same, for reading: every write is refused
    /// ([`StorageError::NotWritable`]). Blocking: call from `spawn_blocking` in async code.
    pub fn open(options: StorageOptions) -> Result<Self, StorageError> {
        check_sqlite_version()?;
        let path = options.path.clone();
        if !options.create_if_missing && !path.exists() {
            return Err(StorageError::Missing { path });
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|cause| StorageError::CreateDir {
                path: parent.to_path_buf(),
                cause,
            })?;
        }
        // Two processes creating the same new database race for its first locks; the
        // loser meets SQLITE_BUSY outside the busy handler, so the whole open is retried.
        // The check runs before anything is written, `journal_mode` included: a damaged
        // file is opened for reading only and never gets a writer.
        let checked = with_open_retry(&options, || {
            let conn = open_connection(&options, Role::Unconfigured)?;
            match quick_check(&conn, &path)? {
                Some(refusal) => Ok(Err(refusal)),
                None => {
                    configure_writer(&conn, &options)?;
                    prepare_schema(&conn, &options)?;
                    Ok(Ok(conn))
                }
            }
        })?;
        match checked {
            Ok(conn) => Self::start(options, Some(conn), None, false),
            Err(refusal) => {
                tracing::error!(database = %path.display(), "{refusal}: the engine will not write to it");
                Self::start(options, None, Some(refusal), false)
            }
        }
    }

    /// Opens the database for reading only: nothing is created (not the file, not a table),
    /// no pragma that writes is set, and every write is refused. When the file does not
    /// exist, the storage says so on every read ([`StorageError::Missing`]) and
    /// [`Storage::exists`] is false (or, with `create_if_missing = false`, the open fails
    /// with that error).
    pub fn open_read_only(options: StorageOptions) -> Result<Self, StorageError> {
        check_sqlite_version()?;
        let path = options.path.clone();
        if !path.exists() {
            // Nothing is created either way; `create_if_missing = false` makes it an error.
            if !options.create_if_missing {
                return Err(StorageError::Missing { path });
            }
            return Self::start(options, None, Some(WriteRefusal::ReadOnlyOpen), true);
        }
        let conn = with_open_retry(&options, || open_connection(&options, Role::Reader))?;
        let storage = Self::start(options, None, Some(WriteRefusal::ReadOnlyOpen), false)?;
        storage.return_reader(conn);
        Ok(storage)
    }

    fn start(
        options: StorageOptions,
        writer_conn: Option<Connection>,
        refusal: Option<WriteRefusal>,
        absent: bool,
    ) -> Result<Self, StorageError> {
        let mut schemas = HashSet::new();
        let counters = Arc::new(StorageCounters::default());
        let mut checkpointer = None;
        let (queue, writer) = match writer_conn {
            Some(mut conn) => {
                schemas.insert(ENGINE_SCHEMA.component);
                checkpointer = start_checkpointer(&options.path, &counters, &mut conn);
                let (sender, receiver) = mpsc::channel::<WriterJob>();
                let writer = std::thread::Builder::new()
                    .name("speckit-storage-writer".into())
                    .spawn(move || {
                        for job in receiver {
                            job(&mut conn);
                        }
                        // Dropping `conn` here closes it; SQLite checkpoints on last close.
                    })
                    .map_err(|e| {
                        StorageError::Other(format!("cannot start the writer thread: {e}"))
                    })?;
                (Some(sender), Some(writer))
            }
            None => (None, None),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                refusal,
                absent,
                schemas: Mutex::new(schemas),
                queue: Mutex::new(queue),
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                counters,
                checkpointer,
            }),
        })
    }

    /// Whether the database file exists (false only for a read-only open of a missing file).
    pub fn exists(&self) -> bool {
        !self.inner.absent
    }

    /// Why writes are refused, or `None` when they are allowed.
    pub fn write_refusal(&self) -> Option<&WriteRefusal> {
        self.inner.refusal.as_ref()
    }

    pub fn is_writable(&self) -> bool {
        self.inner.refusal.is_none()
    }

    /// Brings a component's tables up to date (its migrations, each in one transaction),
    /// once per storage; later calls return at once. On a storage that refuses writes this
    /// does nothing: readers of a component's tables must expect them to be missing.
    pub async fn ensure_schema(
        &self,
        schema: &'static ComponentSchema,
    ) -> Result<(), StorageError> {
        if !self.needs_schema(schema) {
            return Ok(());
        }
        let this = self.clone();
        self.maintain(move |conn| this.apply_schema(conn, schema))
            .await
    }

    /// [`Storage::ensure_schema`] for blocking code.
    pub fn ensure_schema_blocking(
        &self,
        schema: &'static ComponentSchema,
    ) -> Result<(), StorageError> {
        if !self.needs_schema(schema) {
            return Ok(());
        }
        let (reply, receiver) = mpsc::sync_channel(1);
        let this = self.clone();
        self.submit(Box::new(move |conn| {
            let _ = reply.send(this.apply_schema(conn, schema));
        }))?;
        receiver.recv().map_err(|_| StorageError::Closed)?
    }

    fn needs_schema(&self, schema: &'static ComponentSchema) -> bool {
        self.is_writable()
            && !self
                .inner
                .schemas
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(schema.component)
    }

    fn apply_schema(
        &self,
        conn: &mut Connection,
        schema: &'static ComponentSchema,
    ) -> Result<(), StorageError> {
        migrate_component(conn, &self.inner.options, schema)?;
        self.inner
            .schemas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(schema.component);
        Ok(())
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
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
            checkpoint_failures: c.checkpoint_failures.load(Ordering::Relaxed),
        }
    }

    fn submit(&self, job: WriterJob) -> Result<(), StorageError> {
        if let Some(reason) = &self.inner.refusal {
            return Err(StorageError::NotWritable {
                path: self.inner.options.path.clone(),
                reason: reason.clone(),
            });
        }
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

    /// Frames in the WAL after the writer connection's last commit (its commits and every
    /// other connection's before them): how much of the WAL file is in use, which its
    /// size does not say once a checkpoint let SQLite reuse it from the start. `None`
    /// before the first commit, or without the checkpointer.
    pub fn wal_frames_at_last_commit(&self) -> Option<u64> {
        self.inner
            .checkpointer
            .as_ref()
            .and_then(Checkpointer::wal_frames_at_last_commit)
    }

    /// One `wal_checkpoint(PASSIVE)` on the checkpointer's connection, started after this
    /// call: copies every WAL frame no reader still needs into the database without
    /// taking the write lock, so writes of this process and of others go on meanwhile.
    pub async fn checkpoint_passive(&self) -> Result<PassiveCheckpoint, StorageError> {
        if let Some(reason) = &self.inner.refusal {
            return Err(StorageError::NotWritable {
                path: self.inner.options.path.clone(),
                reason: reason.clone(),
            });
        }
        match &self.inner.checkpointer {
            Some(checkpointer) => checkpointer
                .request()
                .await
                .map_err(|_| StorageError::Closed)?,
            // No checkpointer thread: the writer connection checkpoints (between writes).
            None => {
                let path = self.inner.options.path.clone();
                self.maintain(move |conn| {
                    let (wal_frames, checkpointed_frames) = conn
                        .wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::PASSIVE)
                        .map_err(|cause| StorageError::Sqlite { path, cause })?;
                    Ok(PassiveCheckpoint {
                        wal_frames: wal_frames.into(),
                        checkpointed_frames: checkpointed_frames.into(),
                        busy: false,
                    })
                })
                .await
            }
        }
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
        if self.inner.absent {
            return Err(StorageError::Missing {
                path: self.inner.options.path.clone(),
            });
        }
        let pooled = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_connection(&self.inner.options, Role::Reader)?,
        };
        let result = f(&conn).map_err(|cause| StorageError::Sqlite {
            path: self.inner.options.path.clone(),
            cause,
        });
        self.return_reader(conn);
        result
    }

    fn return_reader(&self, conn: Connection) {
        let mut readers = self.inner.readers.lock().unwrap_or_else(|e| e.into_inner());
        if readers.len() < self.inner.options.read_pool_size {
            readers.push(conn);
        }
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
        if let Some(checkpointer) = &self.inner.checkpointer {
            checkpointer.stop();
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
    let sqlite_err = |cause| StorageError::Sqlite {
        path: ctx.path.clone(),
        cause,
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

/// Starts the checkpointer thread and hands it `writer`'s automatic checkpoint; on
/// failure the writer keeps SQLite's own (slower commits, nothing lost).
fn start_checkpointer(
    path: &Path,
    counters: &Arc<StorageCounters>,
    writer: &mut Connection,
) -> Option<Checkpointer> {
    let started = Checkpointer::start(path, counters.clone()).and_then(|checkpointer| {
        checkpointer
            .take_over_auto_checkpoint(writer)
            .map_err(|cause| StorageError::Sqlite {
                path: path.to_path_buf(),
                cause,
            })?;
        Ok(checkpointer)
    });
    match started {
        Ok(checkpointer) => Some(checkpointer),
        Err(e) => {
            tracing::warn!(error = %e, "checkpoints stay inside commits: {e}");
            None
        }
    }
}

/// What a connection is opened for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Read-only file access, `query_only`, and no pragma that writes (not even
    /// `journal_mode`: a host database in rollback-journal mode stays so until a writer
    /// opens it).
    Reader,
    /// Read-write access, nothing written yet: [`configure_writer`] follows once the
    /// database passed its check.
    Unconfigured,
}

/// Opens one connection and checks that the file is a database.
fn open_connection(options: &StorageOptions, role: Role) -> Result<Connection, StorageError> {
    let path = &options.path;
    let flags = match role {
        Role::Reader => OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        Role::Unconfigured => {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        }
    };
    let mut conn =
        Connection::open_with_flags(path, flags).map_err(|cause| StorageError::Open {
            path: path.clone(),
            cause,
        })?;
    if let Role::Unconfigured = role {
        // Allows everything except inside `sandbox::within` (plugin SQL on this thread).
        conn.authorizer(Some(sandbox::authorize))
            .map_err(|e| classify_open(path, e))?;
    }
    conn.busy_timeout(options.busy_timeout)
        .map_err(|e| classify_open(path, e))?;
    // Reading the schema fails on a file that is not a database.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| classify_open(path, e))?;
    match role {
        Role::Reader => conn
            .execute_batch("PRAGMA query_only = ON; PRAGMA foreign_keys = ON;")
            .map_err(|e| classify_open(path, e))?,
        Role::Unconfigured => {
            if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
                return Err(StorageError::ReadOnly { path: path.clone() });
            }
        }
    }
    Ok(conn)
}

fn classify_open(path: &Path, cause: rusqlite::Error) -> StorageError {
    match cause.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => StorageError::NotADatabase {
            path: path.to_path_buf(),
        },
        Some(rusqlite::ErrorCode::ReadOnly) => StorageError::ReadOnly {
            path: path.to_path_buf(),
        },
        _ => StorageError::Open {
            path: path.to_path_buf(),
            cause,
        },
    }
}

/// The writer's pragmas: WAL, durability, foreign keys, WAL size bound.
fn configure_writer(conn: &Connection, options: &StorageOptions) -> Result<(), StorageError> {
    let path = &options.path;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| classify_open(path, e))?;
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
    .map_err(|e| classify_open(path, e))
}

/// Retries `op` while it fails on another process's lock (busy or locked), with the
/// storage's backoff; any other error is returned at once.
fn with_open_retry<T>(
    options: &StorageOptions,
    op: impl FnMut() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    options
        .retry
        .run(&options.path, &StorageCounters::default(), op)
        .map_err(|e| e.into_storage_error_with(&options.path, |permanent| permanent))
}

/// `PRAGMA quick_check`: `None` when the database is sound, else why writes are refused.
fn quick_check(conn: &Connection, path: &Path) -> Result<Option<WriteRefusal>, StorageError> {
    let mut stmt =
        conn.prepare("PRAGMA quick_check(20)")
            .map_err(|cause| StorageError::Sqlite {
                path: path.to_path_buf(),
                cause,
            })?;
    let rows: rusqlite::Result<Vec<String>> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect());
    let problems = match rows {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => return Ok(None),
        Ok(rows) => rows,
        // A check that cannot finish (a corrupt page) is itself the finding.
        Err(e) if !is_transient(&e) => vec![e.to_string()],
        Err(cause) => {
            return Err(StorageError::Sqlite {
                path: path.to_path_buf(),
                cause,
            })
        }
    };
    Ok(Some(WriteRefusal::FailedQuickCheck { problems }))
}

/// At a read-write open: the host's tables where missing, then the engine's own.
fn prepare_schema(conn: &Connection, options: &StorageOptions) -> Result<(), StorageError> {
    let path = &options.path;
    let sqlite = |cause| StorageError::Sqlite {
        path: path.clone(),
        cause,
    };
    if host::incomplete(conn).map_err(sqlite)? {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(sqlite)?;
        let completed = host::complete(conn).and_then(|()| conn.execute_batch("COMMIT"));
        if let Err(cause) = completed {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(sqlite(cause));
        }
    }
    migrate_component(conn, options, &ENGINE_SCHEMA)
}

/// Applies a component's pending migrations (a cheap read when there are none).
fn migrate_component(
    conn: &Connection,
    options: &StorageOptions,
    schema: &'static ComponentSchema,
) -> Result<(), StorageError> {
    let path = &options.path;
    let current = schema::is_current(conn, schema).map_err(|cause| StorageError::Sqlite {
        path: path.clone(),
        cause,
    })?;
    if current {
        return Ok(());
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let begin_immediate = |c: &Connection| {
        options
            .retry
            .run(path, &StorageCounters::default(), || {
                c.execute_batch("BEGIN IMMEDIATE")
            })
            .map_err(|e| e.into_storage_error(path))
    };
    schema::migrate(conn, path, schema, now_ms, &begin_immediate)
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
