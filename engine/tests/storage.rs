//! Storage under contention: retries that really happen, errors that are not retried,
//! rollback on panic, and many writers in two processes at once.

use rusqlite::{params, Connection};
use speckit_engine::storage::{RetryPolicy, Storage, StorageError, StorageOptions};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD_DB_ENV: &str = "SPECKIT_TEST_CHILD_DB";
const CHILD_TAG_ENV: &str = "SPECKIT_TEST_CHILD_TAG";
const CYCLES: usize = 100;
const TASKS_PER_CYCLE: usize = 8;

fn options(path: &Path) -> StorageOptions {
    let mut o = StorageOptions::new(path);
    o.busy_timeout = Duration::from_millis(20);
    o.retry = RetryPolicy {
        max_attempts: 400,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
    };
    o
}

async fn create_table(storage: &Storage) {
    storage
        .write(|tx| {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS t (tag TEXT NOT NULL, cycle INTEGER NOT NULL, task INTEGER NOT NULL, payload TEXT, UNIQUE(tag, cycle, task))",
            )
            .map_err(sqlite)
        })
        .await
        .unwrap();
}

fn sqlite(source: rusqlite::Error) -> StorageError {
    StorageError::Sqlite {
        path: Default::default(),
        cause: source,
    }
}

/// Waits (bounded) until `condition` holds, yielding between checks.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_write_is_retried_until_the_lock_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let storage = Storage::open(options(&path)).unwrap();
    create_table(&storage).await;

    // Another process's connection (same file, own handle) takes the write lock.
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let writer = storage.clone();
    let write = tokio::spawn(async move {
        writer
            .write(|tx| {
                tx.execute("INSERT INTO t VALUES ('a', 1, 1, 'x')", [])
                    .map_err(sqlite)
            })
            .await
    });
    // The write must meet SQLITE_BUSY and go round the retry loop at least twice...
    wait_until("two busy retries", || storage.stats().busy_retries >= 2);
    assert!(!write.is_finished());
    // ...and succeed once the lock is released.
    other.execute_batch("COMMIT").unwrap();
    assert_eq!(write.await.unwrap().unwrap(), 1);
    let rows: i64 = storage
        .read(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(rows, 1);
    assert_eq!(storage.stats().busy_failures, 0);
}

#[tokio::test]
async fn permanent_error_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(&dir.path().join("c.db"))).unwrap();
    create_table(&storage).await;
    let insert = |s: Storage| async move {
        s.write(|tx| {
            tx.execute("INSERT INTO t VALUES ('a', 1, 1, 'x')", [])
                .map_err(sqlite)
        })
        .await
    };
    insert(storage.clone()).await.unwrap();
    let err = insert(storage.clone()).await.unwrap_err();
    assert_eq!(
        err.sqlite().and_then(|e| e.sqlite_error_code()),
        Some(rusqlite::ErrorCode::ConstraintViolation)
    );
    assert_eq!(storage.stats().busy_retries, 0);
    assert_eq!(storage.stats().writes_rolled_back, 1);
}

#[tokio::test]
async fn lock_held_past_the_budget_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut opts = options(&path);
    opts.retry.max_attempts = 3;
    let storage = Storage::open(opts).unwrap();
    create_table(&storage).await;
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = storage
        .write(|tx| {
            tx.execute("INSERT INTO t VALUES ('a', 1, 1, 'x')", [])
                .map_err(sqlite)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Busy { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("c.db"), "{err}");
    assert_eq!(storage.stats().busy_failures, 1);
    other.execute_batch("ROLLBACK").unwrap();
}

#[tokio::test]
async fn panic_rolls_back_and_the_writer_survives() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(options(&dir.path().join("c.db"))).unwrap();
    create_table(&storage).await;
    let err = storage
        .write(|tx| -> Result<(), StorageError> {
            tx.execute("INSERT INTO t VALUES ('a', 1, 1, 'x')", [])
                .map_err(sqlite)?;
            panic!("boom in the middle of a transaction");
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Panicked(ref m) if m.contains("boom")),
        "{err}"
    );
    storage
        .write(|tx| {
            tx.execute("INSERT INTO t VALUES ('b', 1, 1, 'x')", [])
                .map_err(sqlite)
        })
        .await
        .unwrap();
    let tags: Vec<String> = storage
        .read(|c| {
            let mut s = c.prepare("SELECT tag FROM t")?;
            let rows = s.query_map([], |r| r.get(0))?.collect();
            rows
        })
        .await
        .unwrap();
    assert_eq!(tags, vec!["b".to_string()]);
}

#[tokio::test]
async fn existing_upstream_rows_survive_opening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let summary = speckit_testkit::database::create_bloated(
        &path,
        1024 * 1024,
        3,
        &[("SPEC-KIT-900", "plan", 40), ("SPEC-KIT-901", "tasks", 2)],
        1_760_000_000_000,
    )
    .unwrap();
    let storage = Storage::open(options(&path)).unwrap();
    let (execs, runs, outputs, version): (i64, i64, i64, i64) = storage
        .read(|c| {
            Ok((
                c.query_row("SELECT count(*) FROM agent_executions", [], |r| r.get(0))?,
                c.query_row("SELECT count(*) FROM consensus_runs", [], |r| r.get(0))?,
                c.query_row("SELECT count(*) FROM agent_outputs", [], |r| r.get(0))?,
                c.query_row("PRAGMA user_version", [], |r| r.get(0))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(
        (execs, runs, outputs),
        (
            summary.live_executions,
            summary.live_runs,
            summary.live_outputs
        )
    );
    assert_eq!(version, 2, "the host's user_version is never touched");
}

#[test]
fn not_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    let content = b"this is a text file, not SQLite\n".repeat(200);
    std::fs::write(&path, &content).unwrap();
    let err = Storage::open(options(&path)).unwrap_err();
    assert!(matches!(err, StorageError::NotADatabase { .. }), "{err}");
    assert!(err.to_string().contains("notes.db"));
    assert_eq!(std::fs::read(&path).unwrap(), content);
}

/// Writes every (tag, cycle, task) row: `CYCLES` cycles of `TASKS_PER_CYCLE` concurrent
/// tasks. Returns how many writes were acknowledged.
async fn write_cycles(storage: &Storage, tag: &str) -> usize {
    let mut acknowledged = 0;
    for cycle in 0..CYCLES {
        let mut set = tokio::task::JoinSet::new();
        for task in 0..TASKS_PER_CYCLE {
            let (s, tag) = (storage.clone(), tag.to_string());
            set.spawn(async move {
                s.write(move |tx| {
                    tx.execute(
                        "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
                        params![tag, cycle as i64, task as i64, "p".repeat(512)],
                    )
                    .map_err(sqlite)
                })
                .await
            });
        }
        while let Some(result) = set.join_next().await {
            // Any error here (BUSY included) fails the test: none may reach a caller.
            result.unwrap().unwrap();
            acknowledged += 1;
        }
    }
    acknowledged
}

/// The other process of `two_processes_write_concurrently`: the same test binary running
/// the same test again, with the database and a tag in its environment.
async fn child_writer_process(db: String, tag: String) {
    let mut opts = StorageOptions::new(&db);
    opts.busy_timeout = Duration::from_millis(50);
    let storage = Storage::open(opts).unwrap();
    let n = write_cycles(&storage, &tag).await;
    println!("ACKNOWLEDGED {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_write_concurrently() {
    if let (Ok(db), Ok(tag)) = (std::env::var(CHILD_DB_ENV), std::env::var(CHILD_TAG_ENV)) {
        return child_writer_process(db, tag).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut opts = StorageOptions::new(&path);
    opts.busy_timeout = Duration::from_millis(50);
    let storage = Storage::open(opts).unwrap();
    create_table(&storage).await;

    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "two_processes_write_concurrently",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB_ENV, &path)
        .env(CHILD_TAG_ENV, "child")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let parent_acks = write_cycles(&storage, "parent").await;
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "child failed: {output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let child_acks: usize = stdout
        .split("ACKNOWLEDGED ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("child did not report its count: {stdout}"));

    assert_eq!(parent_acks, CYCLES * TASKS_PER_CYCLE);
    assert_eq!(child_acks, CYCLES * TASKS_PER_CYCLE);
    let (integrity, parent_rows, child_rows): (String, i64, i64) = storage
        .read(|c| {
            Ok((
                c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?,
                c.query_row("SELECT count(*) FROM t WHERE tag = 'parent'", [], |r| {
                    r.get(0)
                })?,
                c.query_row("SELECT count(*) FROM t WHERE tag = 'child'", [], |r| {
                    r.get(0)
                })?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    assert_eq!(parent_rows as usize, parent_acks);
    assert_eq!(child_rows as usize, child_acks);
}

/// Frames in the WAL file and how many of them are in the database, from a connection of
/// the test's own (PASSIVE: it copies nothing a reader still needs, and waits for nobody).
fn wal_state(path: &Path) -> (i64, i64) {
    let conn = Connection::open(path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_past_the_wal_threshold_are_checkpointed_off_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let storage = Storage::open(options(&path)).unwrap();
    create_table(&storage).await;
    // SQLite's own automatic checkpoint is off on the writer connection: it would run
    // inside the commit that crosses the threshold.
    let auto: i64 = storage
        .maintain(|conn| {
            conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
                .map_err(sqlite)
        })
        .await
        .unwrap();
    assert_eq!(auto, 0, "the writer's automatic checkpoint is handed over");
    assert_eq!(storage.stats().checkpoints, 0);
    // About 1300 pages of WAL in 100 commits of 13 pages each.
    let pages = speckit_engine::storage::checkpoint::AUTO_CHECKPOINT_PAGES as usize;
    for cycle in 0..(pages / 10) {
        storage
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO t (tag, cycle, task, payload) VALUES ('wal', ?1, 0, ?2)",
                    params![cycle as i64, "x".repeat(13 * 4096)],
                )
                .map_err(sqlite)
            })
            .await
            .unwrap();
    }
    wait_until("a background checkpoint", || {
        storage.stats().checkpoints >= 1
    });
    assert_eq!(storage.stats().checkpoint_failures, 0);
    // What the background checkpoint copied is in the database file: a checkpoint asked
    // for now (after the last commit) leaves nothing behind.
    let asked = storage.checkpoint_passive().await.unwrap();
    assert!(asked.complete(), "{asked:?}");
    assert!(asked.wal_frames >= pages as i64, "{asked:?}");
    let (frames, copied) = wal_state(&path);
    assert_eq!(frames, copied, "every frame is in the database");
    let rows: i64 = storage
        .read(|conn| conn.query_row("SELECT count(*) FROM t WHERE tag = 'wal'", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(rows, (pages / 10) as i64);
}

#[tokio::test]
async fn read_only_storage_refuses_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    Storage::open(options(&path)).unwrap().close();
    let storage = Storage::open_read_only(options(&path)).unwrap();
    let refused = storage.checkpoint_passive().await.unwrap_err();
    assert!(
        matches!(refused, StorageError::NotWritable { .. }),
        "{refused}"
    );
}
