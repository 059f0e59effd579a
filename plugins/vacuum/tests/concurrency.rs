//! Vacuum next to other writers: a task of the engine's process and another process keep
//! committing while chunks run, and lose nothing; another process holding the write lock
//! past the retry budget fails the job cleanly and the engine carries on.

mod common;

use common::*;
use rusqlite::{params, Connection, TransactionBehavior};
use speckit_engine::events::JobOutcome;
use speckit_engine::{EngineEvent, StorageError};
use speckit_vacuum::report::{Action, Outcome};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Helper process: inserts one `consensus_runs` row per transaction (spec `PROCESS`,
/// `run_timestamp` 0, 1, 2...), one every 2 ms or so, until told to stop, then answers
/// `committed N`.
fn helper_process_writer() {
    let Some(db) = helper_db() else { return };
    let conn = Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_reader = stop.clone();
    std::thread::spawn(move || {
        // Any line, or stdin closing, means stop.
        let _ = next_command();
        stop_reader.store(true, Ordering::SeqCst);
    });
    let mut conn = conn;
    let mut committed = 0i64;
    while !stop.load(Ordering::SeqCst) {
        // BEGIN IMMEDIATE waits in the busy handler for the engine's current chunk.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        tx.execute(
            "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, synthesis_json) VALUES ('PROCESS', 'plan', ?1, 1, ?2)",
            params![committed, "x".repeat(100)],
        )
        .unwrap();
        tx.commit().unwrap();
        committed += 1;
        if committed == 1 {
            answer("ready");
        }
        // A busy agent process, not a tight loop: SQLite's busy handler is unfair, and a
        // writer that never lets go of the lock starves every other connection.
        std::thread::sleep(Duration::from_millis(2));
    }
    answer(&format!("committed {committed}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_in_another_task_and_another_process_lose_nothing() {
    serve_helper(&[("helper_process_writer", helper_process_writer)]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    // About 4,000 free pages in chunks of 64: over fifty chunks to interleave with.
    incremental_db(&db, 10, 1_000, 16 * 1024);
    let rows_before = upstream_rows(&Connection::open(&db).unwrap());
    let engine = engine(dir.path(), &db, "[vacuum]\nchunk_pages = 64\n").await;

    let helper = Helper::start(
        "helper_process_writer",
        &[("SPECKIT_VACUUM_HELPER_DB", db.display().to_string())],
    );
    helper.expect("ready");

    // The in-process writer: every write goes through the engine's storage queue.
    let stop = Arc::new(AtomicBool::new(false));
    let storage = engine.storage().clone();
    let task_stop = stop.clone();
    let task_writer = tokio::spawn(async move {
        let mut committed = Vec::new();
        let mut i = 0i64;
        while !task_stop.load(Ordering::SeqCst) {
            storage
                .write(move |tx| {
                    tx.execute(
                        "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, synthesis_json) VALUES ('TASK', 'plan', ?1, 1, ?2)",
                        params![i, "y".repeat(100)],
                    )
                    .map_err(|e| StorageError::Other(e.to_string()))
                })
                .await
                .expect("the task's write commits");
            committed.push(i);
            i += 1;
            // Paced like the helper process: a writer that takes the lock again at once
            // starves the other process, whose busy handler only polls now and then
            // (SQLite's lock is unfair), and on a loaded machine it would never get in.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        committed
    });

    let count = |spec: &'static str| {
        let storage = engine.storage().clone();
        async move {
            storage
                .read(move |c| {
                    c.query_row(
                        "SELECT count(*) FROM consensus_runs WHERE spec_id = ?1",
                        [spec],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .await
                .unwrap()
        }
    };
    let (task_at_start, process_at_start) = (count("TASK").await, count("PROCESS").await);
    let run = run_job(&engine, "vacuum", serde_json::json!({})).await;
    let (task_at_end, process_at_end) = (count("TASK").await, count("PROCESS").await);
    stop.store(true, Ordering::SeqCst);
    let task_committed = task_writer.await.unwrap();
    let status_line = {
        let mut helper = helper;
        helper.send("stop");
        let line = helper.expect("committed");
        assert!(helper.finish().success());
        line
    };
    let process_committed: i64 = status_line
        .trim_start_matches("committed ")
        .parse()
        .unwrap();

    assert_succeeded(&run);
    let report = report_of(&run);
    assert_eq!(report.action, Action::Incremental);
    assert!(report.chunks > 50, "{report:?}");
    assert!(
        task_at_end > task_at_start && process_at_end > process_at_start,
        "both writers committed while the vacuum ran: task {task_at_start}->{task_at_end}, process {process_at_start}->{process_at_end}"
    );
    eprintln!(
        "during the vacuum ({} chunks, {} ms, WAL peak {} bytes, {} busy checkpoints): task committed {}, process committed {}; longest step {:.1} ms",
        report.chunks,
        report.duration_ms,
        report.wal_bytes_peak,
        report.checkpoints_busy,
        task_at_end - task_at_start,
        process_at_end - process_at_start,
        report.max_step_ms
    );
    engine.shutdown(Duration::from_secs(10)).await;

    let conn = Connection::open(&db).unwrap();
    let state = db_state(&conn);
    assert_eq!(state.integrity, vec!["ok"]);
    let stamps = |spec: &str| -> Vec<i64> {
        let mut stmt = conn
            .prepare("SELECT run_timestamp FROM consensus_runs WHERE spec_id = ?1 ORDER BY run_timestamp")
            .unwrap();
        let rows = stmt.query_map([spec], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    };
    assert_eq!(stamps("TASK"), task_committed, "every task write present");
    assert_eq!(
        stamps("PROCESS"),
        (0..process_committed).collect::<Vec<_>>(),
        "every process write present"
    );
    let rows_now = upstream_rows(&conn);
    let untouched: Vec<_> = rows_now
        .iter()
        .filter(|r| !r.contains("TASK") && !r.contains("PROCESS"))
        .cloned()
        .collect();
    assert_eq!(untouched, rows_before, "every earlier row intact");
}

/// Helper process: `lock` takes the write lock (BEGIN IMMEDIATE) and answers `locked`;
/// `unlock` rolls back and answers `unlocked`.
fn helper_lock_holder() {
    let Some(db) = helper_db() else { return };
    let conn = Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    while let Some(command) = next_command() {
        match command.as_str() {
            "lock" => {
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                answer("locked");
            }
            "unlock" => {
                conn.execute_batch("ROLLBACK").unwrap();
                answer("unlocked");
            }
            other => panic!("unknown command {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_another_process_fails_the_job_cleanly() {
    serve_helper(&[("helper_lock_holder", helper_lock_holder)]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    // About 600 free pages in chunks of 4: the lock lands with most chunks still to go.
    incremental_db(&db, 5, 120, 16 * 1024);
    let rows_before = upstream_rows(&Connection::open(&db).unwrap());
    let engine = engine(
        dir.path(),
        &db,
        "[storage]\nbusy_timeout_ms = 100\nwrite_retry_attempts = 2\n[vacuum]\nchunk_pages = 4\n",
    )
    .await;
    let helper = Arc::new(Mutex::new(Helper::start(
        "helper_lock_holder",
        &[("SPECKIT_VACUUM_HELPER_DB", db.display().to_string())],
    )));

    // Lock taken before the job: the engine cannot even record the run.
    {
        let mut h = helper.lock().unwrap();
        h.send("lock");
        h.expect("locked");
    }
    let refused = engine
        .run_job(
            "vacuum",
            speckit_engine::JobTrigger::Manual,
            serde_json::json!({}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains(db.to_str().unwrap()), "{refused}");
    assert!(refused.contains("locked by another process"), "{refused}");
    {
        let mut h = helper.lock().unwrap();
        h.send("unlock");
        h.expect("unlocked");
    }

    // Lock taken between two chunks: the next chunk waits through the retry budget and
    // the job stops there, keeping what the finished chunks did.
    let mut events = engine.events().subscribe();
    let job_engine = engine.clone();
    let job = tokio::spawn(async move {
        job_engine
            .run_job(
                "vacuum",
                speckit_engine::JobTrigger::Manual,
                serde_json::json!({}),
            )
            .await
            .unwrap()
    });
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("a chunk event within a minute")
            .unwrap();
        if matches!(&event, EngineEvent::Plugin { kind, .. } if kind == "vacuum_chunk") {
            break;
        }
    }
    // Runs on the writer connection between two chunks, so the helper can take the lock.
    let locker = helper.clone();
    engine
        .storage()
        .maintain(move |_conn| {
            let mut h = locker.lock().unwrap();
            h.send("lock");
            h.expect("locked");
            Ok(())
        })
        .await
        .unwrap();
    let run = job.await.unwrap();
    assert_eq!(run.outcome, JobOutcome::Failed);
    let report = report_of(&run);
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(report.chunks >= 1 && report.pages_freed >= 1, "{report:?}");
    assert!(
        report.freelist_after > 0,
        "the job stopped before the end (it finished before the lock was taken?)"
    );
    assert!(report.busy_retries >= 1, "{report:?}");
    let error = &run.report.as_ref().unwrap().errors[0];
    assert!(error.contains(db.to_str().unwrap()), "{error}");
    assert!(
        error.contains("stayed locked by another process after 2 attempts"),
        "{error}"
    );
    assert!(run.report.as_ref().unwrap().summary.contains("stopped"));

    // The engine keeps running: once the lock is gone the next run finishes the job.
    {
        let mut h = helper.lock().unwrap();
        h.send("unlock");
        h.expect("unlocked");
    }
    let run = run_job(&engine, "vacuum", serde_json::json!({})).await;
    assert_succeeded(&run);
    assert_eq!(report_of(&run).freelist_after, 0);
    engine.shutdown(Duration::from_secs(10)).await;
    let conn = Connection::open(&db).unwrap();
    assert_eq!(db_state(&conn).integrity, vec!["ok"]);
    assert_eq!(upstream_rows(&conn), rows_before);
}

/// Helper process: `read` opens a read transaction (a snapshot) and answers `reading`;
/// `end` ends it and answers `ended`.
fn helper_snapshot_reader() {
    let Some(db) = helper_db() else { return };
    let conn = Connection::open(&db).unwrap();
    while let Some(command) = next_command() {
        match command.as_str() {
            "read" => {
                conn.execute_batch("BEGIN").unwrap();
                let _: i64 = conn
                    .query_row("SELECT count(*) FROM agent_executions", [], |r| r.get(0))
                    .unwrap();
                answer("reading");
            }
            "end" => {
                conn.execute_batch("COMMIT").unwrap();
                answer("ended");
            }
            other => panic!("unknown command {other}"),
        }
    }
}

/// The helper process holding a read transaction on `db` (until it is sent `end`).
fn reader_holding_a_snapshot(db: &std::path::Path) -> Helper {
    let mut reader = Helper::start(
        "helper_snapshot_reader",
        &[("SPECKIT_VACUUM_HELPER_DB", db.display().to_string())],
    );
    reader.send("read");
    reader.expect("reading");
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_pinning_an_old_snapshot_pauses_the_vacuum_instead_of_growing_the_wal() {
    serve_helper(&[("helper_snapshot_reader", helper_snapshot_reader)]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    incremental_db(&db, 5, 500, 16 * 1024);
    let rows_before = upstream_rows(&Connection::open(&db).unwrap());
    let engine = engine(
        dir.path(),
        &db,
        "[storage]\nbusy_timeout_ms = 50\nwrite_retry_attempts = 3\n[vacuum]\nchunk_pages = 64\nstep_target_ms = 0\ncheckpoint_wal_kib = 0\n",
    )
    .await;
    let mut reader = reader_holding_a_snapshot(&db);

    let run = run_job(&engine, "vacuum", serde_json::json!({})).await;
    assert_succeeded(&run);
    let report = report_of(&run);
    assert_eq!(report.outcome, Outcome::Incomplete, "{report:?}");
    assert_eq!(
        report.chunks, 1,
        "no chunk after a checkpoint that could not finish"
    );
    assert_eq!(report.pages_freed, 64);
    // The chunk's checkpoint and the three retries all met the pinned snapshot.
    assert_eq!((report.checkpoints, report.checkpoints_busy), (4, 4));
    assert!(report.wal_bytes_after > 0);
    assert!(
        report.wal_bytes_after <= report.wal_bytes_peak,
        "the WAL did not grow after the chunk: {report:?}"
    );
    let warnings = &run.report.as_ref().unwrap().warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("from being checkpointed")),
        "{warnings:?}"
    );
    assert!(run.report.as_ref().unwrap().summary.contains("paused"));

    // Once the reader is gone, the next run finishes and empties the WAL.
    reader.send("end");
    reader.expect("ended");
    let run = run_job(&engine, "vacuum", serde_json::json!({})).await;
    assert_succeeded(&run);
    let report = report_of(&run);
    assert_eq!(report.outcome, Outcome::Done);
    assert_eq!(report.freelist_after, 0);
    assert_eq!(report.wal_bytes_after, 0);
    assert!(reader.finish().success());
    engine.shutdown(Duration::from_secs(10)).await;
    let conn = Connection::open(&db).unwrap();
    assert_eq!(db_state(&conn).integrity, vec!["ok"]);
    assert_eq!(upstream_rows(&conn), rows_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_tries_its_truncate_without_waiting_before_it_waits() {
    serve_helper(&[("helper_snapshot_reader", helper_snapshot_reader)]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    incremental_db(&db, 5, 200, 16 * 1024);
    let rows_before = upstream_rows(&Connection::open(&db).unwrap());
    // One chunk frees every page, so its checkpoint is the end's.
    let engine = engine(
        dir.path(),
        &db,
        "[storage]\nbusy_timeout_ms = 50\nwrite_retry_attempts = 3\n[vacuum]\nchunk_pages = 100000\nstep_target_ms = 0\n",
    )
    .await;
    let mut reader = reader_holding_a_snapshot(&db);

    let run = run_job(&engine, "vacuum", serde_json::json!({})).await;
    assert_succeeded(&run);
    let report = report_of(&run);
    assert_eq!(report.chunks, 1, "{report:?}");
    // Four PASSIVE ones, five TRUNCATEs that gave up at once, the one that waited, and the
    // storage's three retries: every one met the reader.
    assert_eq!(
        (report.checkpoints, report.checkpoints_busy),
        (13, 13),
        "{report:?}"
    );
    assert_eq!(report.outcome, Outcome::Incomplete, "{report:?}");

    // The quick TRUNCATE: busy while the reader holds the WAL, done once it is gone.
    let maintenance = speckit_vacuum::Maintenance::new(engine.storage().clone());
    assert!(maintenance.try_truncate().await.unwrap().busy);
    reader.send("end");
    reader.expect("ended");
    let emptied = maintenance.try_truncate().await.unwrap();
    assert!(!emptied.busy, "{emptied:?}");
    assert_eq!(emptied.wal_bytes_after, 0);
    engine.shutdown(Duration::from_secs(10)).await;
    let conn = Connection::open(&db).unwrap();
    assert_eq!(db_state(&conn).integrity, vec!["ok"]);
    assert_eq!(upstream_rows(&conn), rows_before);
}
