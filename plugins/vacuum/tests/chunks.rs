//! Incremental vacuum in chunks: a chunk of N pages frees exactly N pages (upstream's
//! `execute` freed one), the job frees every free page, checkpoints the WAL back to zero,
//! and keeps every live row.

mod common;

use common::*;
use rusqlite::Connection;
use speckit_vacuum::report::{Action, Outcome};
use speckit_vacuum::Maintenance;

#[tokio::test]
async fn one_chunk_of_n_pages_frees_exactly_n_pages() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    incremental_db(&db, 3, 400, 16 * 1024);
    let engine = engine(dir.path(), &db, "").await;
    let maintenance = Maintenance::new(engine.storage().clone());

    for n in [1u32, 7, 100, 333] {
        let chunk = maintenance.incremental_chunk(n).await.unwrap();
        assert!(
            chunk.freelist_before > n as i64,
            "enough free pages for the test"
        );
        assert_eq!(chunk.pages_freed, n as i64, "chunk of {n}: {chunk:?}");
        assert_eq!(chunk.rows_stepped, n as u64, "one row per freed page");
        assert_eq!(chunk.freelist_after, chunk.freelist_before - n as i64);
        // The file loses the N pages, plus a pointer-map page when one is no longer needed.
        let shrunk = chunk.page_count_before - chunk.page_count_after;
        assert!(
            (n as i64..=n as i64 + 1).contains(&shrunk),
            "page_count shrank by {shrunk} for {n} pages"
        );
        let checkpoint = chunk.checkpoint.expect("incremental_chunk checkpoints");
        assert!(!checkpoint.busy);
        assert_eq!(checkpoint.wal_bytes_after, 0, "TRUNCATE empties the WAL");
        assert!(chunk.wal_bytes_peak > 0, "the chunk went through the WAL");
        let file = std::fs::metadata(&db).unwrap().len() as i64;
        assert_eq!(
            file,
            chunk.page_count_after * 4096,
            "the file really shrank"
        );
    }
    engine.shutdown(std::time::Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_chunk_stopped_by_its_budget_keeps_the_pages_it_freed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    incremental_db(&db, 3, 400, 16 * 1024);
    let rows_before = upstream_rows(&Connection::open(&db).unwrap());
    let engine = engine(dir.path(), &db, "").await;
    let maintenance = Maintenance::new(engine.storage().clone());
    // A budget already spent: the vacuum stops after its first page and commits it.
    let chunk = maintenance
        .incremental_chunk_with(1000, true, Some(std::time::Duration::ZERO))
        .await
        .unwrap();
    assert!(chunk.freelist_before > 1000, "{chunk:?}");
    assert!(chunk.stopped_at_budget, "{chunk:?}");
    assert_eq!(chunk.rows_stepped, 1, "{chunk:?}");
    assert_eq!(
        chunk.pages_freed, 1,
        "the page freed before the stop is kept: {chunk:?}"
    );
    // A budget it does not reach: every page asked for.
    let chunk = maintenance
        .incremental_chunk_with(100, true, Some(std::time::Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(!chunk.stopped_at_budget, "{chunk:?}");
    assert_eq!(chunk.pages_freed, 100, "{chunk:?}");
    let file = std::fs::metadata(&db).unwrap().len() as i64;
    assert_eq!(
        file,
        chunk.page_count_after * 4096,
        "the file really shrank"
    );
    engine.shutdown(std::time::Duration::from_secs(10)).await;
    let conn = Connection::open(&db).unwrap();
    let state = db_state(&conn);
    assert_eq!(state.integrity, vec!["ok"]);
    assert_eq!(upstream_rows(&conn), rows_before, "every live row intact");
}

/// Upstream ran `PRAGMA incremental_vacuum(N)` with rusqlite's `execute_batch`, which steps
/// the statement once: one page freed, whatever N. This pins down that SQLite fact, which
/// the plugin's stepping exists for.
#[test]
fn stepping_once_frees_one_page_which_is_why_the_plugin_steps_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    incremental_db(&db, 3, 50, 16 * 1024);
    let conn = Connection::open(&db).unwrap();
    let free = |c: &Connection| {
        c.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    let before = free(&conn);
    conn.execute_batch("PRAGMA incremental_vacuum(100)")
        .unwrap();
    assert_eq!(before - free(&conn), 1, "execute_batch steps once");
    let stepped = speckit_vacuum::steps::step_incremental_vacuum(&conn, 100).unwrap();
    assert_eq!(stepped, 100);
    assert_eq!(before - free(&conn), 101);
}

#[tokio::test]
async fn the_job_frees_every_free_page_in_chunks_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    incremental_db(&db, 5, 300, 12 * 1024);
    let rows_before = upstream_rows(&Connection::open(&db).unwrap());
    // Fixed 64-page chunks, each checkpointed (the policy before steps had a time target).
    let engine = engine(
        dir.path(),
        &db,
        "[vacuum]\nchunk_pages = 64\nstep_target_ms = 0\ncheckpoint_wal_kib = 0\n",
    )
    .await;

    let run = run_job(&engine, "vacuum", serde_json::json!({})).await;
    assert_succeeded(&run);
    let report = report_of(&run);
    assert_eq!(report.action, Action::Incremental);
    assert_eq!(report.outcome, Outcome::Done);
    assert!(report.check.ok, "{:?}", report.check);
    assert!(report.freelist_before > 900, "{report:?}");
    assert_eq!(report.freelist_after, 0);
    assert_eq!(report.pages_freed, report.freelist_before);
    assert_eq!(
        report.chunks as i64,
        (report.freelist_before + 63) / 64,
        "chunks of 64 pages"
    );
    assert_eq!(report.checkpoints, report.chunks);
    assert_eq!(report.wal_bytes_after, 0);
    assert!(report.wal_bytes_peak > 0);
    assert_eq!(
        report.bytes_after,
        report.page_count_after as u64 * 4096,
        "bytes_after is the file's size"
    );
    assert!(report.bytes_freed >= report.pages_freed * 4096);
    assert!(report.max_step_ms > 0.0);
    engine.shutdown(std::time::Duration::from_secs(10)).await;

    let conn = Connection::open(&db).unwrap();
    let state = db_state(&conn);
    assert_eq!(state.freelist_count, 0);
    assert_eq!(state.auto_vacuum, 2);
    assert_eq!(state.integrity, vec!["ok"]);
    assert_eq!(upstream_rows(&conn), rows_before, "every live row intact");
}

#[tokio::test]
async fn chunks_pause_for_other_writers_by_the_lock_time_fraction() {
    for (fraction, pauses) in [(0.5, true), (1.0, false)] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("consensus.db");
        incremental_db(&db, 3, 60, 16 * 1024);
        let policy = format!("[vacuum]\nchunk_pages = 32\nlock_time_fraction = {fraction}\n");
        let engine = engine(dir.path(), &db, &policy).await;
        let run = run_job(&engine, "vacuum", serde_json::json!({})).await;
        assert_succeeded(&run);
        let report = report_of(&run);
        assert!(report.chunks > 3, "{report:?}");
        assert_eq!(report.freelist_after, 0);
        if pauses {
            // At 0.5 the vacuum pauses as long as each chunk (but the last) held the lock.
            assert!(report.paused_ms > 0.0, "{report:?}");
            assert!(
                report.paused_ms <= report.duration_ms as f64,
                "pauses are part of the run: {report:?}"
            );
        } else {
            assert_eq!(report.paused_ms, 0.0, "1.0 means no pause");
        }
        engine.shutdown(std::time::Duration::from_secs(10)).await;
    }
}

#[tokio::test]
async fn a_lock_time_fraction_outside_zero_to_one_is_refused_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    let config = write_config(dir.path(), &db, "[vacuum]\nlock_time_fraction = 0\n");
    let mut options = speckit_engine::EngineOptions::new(config);
    options.env.retain(|(k, _)| !k.starts_with("SPECKIT_"));
    let plugins: Vec<std::sync::Arc<dyn speckit_engine::Plugin>> =
        vec![std::sync::Arc::new(speckit_vacuum::VacuumPlugin::new())];
    let Err(error) = speckit_engine::Engine::start(options, plugins).await else {
        panic!("a lock_time_fraction of 0 was accepted");
    };
    let error = error.to_string();
    assert!(
        error.contains("vacuum.lock_time_fraction (line 4)"),
        "{error}"
    );
    assert!(error.contains("must be in (0, 1], got 0"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_vacuum_between_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    incremental_db(&db, 3, 300, 16 * 1024);
    let rows_before = upstream_rows(&Connection::open(&db).unwrap());
    // Long pauses between one-page chunks: the shutdown lands mid-job.
    let engine = engine(
        dir.path(),
        &db,
        "[vacuum]\nchunk_pages = 1\nlock_time_fraction = 0.01\n",
    )
    .await;
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
        let event = tokio::time::timeout(std::time::Duration::from_secs(60), events.recv())
            .await
            .expect("a chunk within a minute")
            .unwrap();
        if matches!(&event, speckit_engine::EngineEvent::Plugin { kind, .. } if kind == "vacuum_chunk")
        {
            break;
        }
    }
    engine.shutdown_token().cancel();
    let run = job.await.unwrap();
    assert_succeeded(&run);
    let report = report_of(&run);
    assert_eq!(report.outcome, Outcome::Cancelled, "{report:?}");
    assert!(
        report.chunks >= 1 && report.freelist_after > 0,
        "{report:?}"
    );
    assert_eq!(
        report.pages_freed,
        report.freelist_before - report.freelist_after
    );
    assert!(run
        .report
        .as_ref()
        .unwrap()
        .summary
        .contains("stopped at shutdown"));
    engine.shutdown(std::time::Duration::from_secs(10)).await;
    let conn = Connection::open(&db).unwrap();
    assert_eq!(db_state(&conn).integrity, vec!["ok"]);
    assert_eq!(upstream_rows(&conn), rows_before);
}

#[test]
fn adaptive_chunks_follow_the_measured_rate_within_their_bounds() {
    use speckit_vacuum::incremental::{ChunkSizer, MIN_ADAPTIVE_CHUNK_PAGES};
    // 1 ms target, at most 1,000 pages; the first step measures.
    let mut sizer = ChunkSizer::new(1_000, 1.0);
    assert_eq!(sizer.pages(), 64);
    // 64 pages in 100 us: 640 fit in 1 ms, but one step grows at most 2x.
    sizer.observe_rate(64, 100);
    assert_eq!(sizer.pages(), 128);
    sizer.observe_rate(128, 200);
    sizer.observe_rate(256, 400);
    sizer.observe_rate(512, 800);
    assert_eq!(sizer.pages(), 640, "settles where a step takes 1 ms");
    // Much faster: capped by chunk_pages.
    sizer.observe_rate(640, 10);
    sizer.observe_rate(1_000, 10);
    assert_eq!(sizer.pages(), 1_000);
    // A step that took 1 s: halves at most per step, never below the floor.
    for _ in 0..20 {
        let pages = sizer.pages();
        sizer.observe_rate(pages, 1_000_000);
    }
    assert_eq!(sizer.pages(), MIN_ADAPTIVE_CHUNK_PAGES);
    // A target of 0: chunk_pages every time, whatever the rate.
    let mut fixed = ChunkSizer::new(300, 0.0);
    fixed.observe_rate(300, 1_000_000);
    assert_eq!(fixed.pages(), 300);
    // chunk_pages below the floor is still the most a step frees.
    let mut tiny = ChunkSizer::new(4, 1.0);
    tiny.observe_rate(4, 1);
    assert_eq!(tiny.pages(), 4);
}

#[tokio::test]
async fn the_default_policy_sizes_steps_to_time_and_checkpoints_by_wal_size() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    incremental_db(&db, 5, 600, 16 * 1024);
    let rows_before = upstream_rows(&Connection::open(&db).unwrap());
    // The default step target and chunk bound; a 64 KiB WAL limit so a few checkpoints
    // fall inside the job.
    let engine = engine(dir.path(), &db, "[vacuum]\ncheckpoint_wal_kib = 64\n").await;
    let mut events = engine.events().subscribe();
    let run = run_job(&engine, "vacuum", serde_json::json!({})).await;
    assert_succeeded(&run);
    let report = report_of(&run);
    assert_eq!(report.outcome, Outcome::Done);
    assert_eq!(report.freelist_after, 0);
    assert_eq!(report.pages_freed, report.freelist_before);
    assert!(report.freelist_before > 2_000, "{report:?}");
    let policy = speckit_vacuum::VacuumPolicy::default();
    assert!(
        report.min_chunk_pages >= 1 && report.max_chunk_pages <= policy.chunk_pages,
        "{report:?}"
    );
    // Steps are sized: the second asks for another count than the first's 64, unless
    // the rate happened to fit 64 pages in the target exactly.
    let mut requested = Vec::new();
    let mut checkpointed_in_step = 0;
    while let Ok(event) = events.try_recv() {
        if let speckit_engine::EngineEvent::Plugin { kind, data, .. } = event {
            if kind == "vacuum_chunk" {
                requested.push(data["requested_pages"].as_u64().unwrap());
                checkpointed_in_step += data["checkpoint_us"].as_u64().unwrap_or(0);
            }
        }
    }
    assert_eq!(requested.len() as u32, report.chunks);
    assert_eq!(requested[0], 64, "the first step measures with 64 pages");
    assert_eq!(checkpointed_in_step, 0, "no step checkpoints by itself");
    // Checkpoints: one each time the WAL in use passed 64 KiB, and two at the end (PASSIVE
    // then TRUNCATE); fewer than chunks, and the WAL ends empty and the file shrunk to
    // its pages.
    assert!(report.checkpoints >= 2, "{report:?}");
    assert!(report.checkpoints < report.chunks, "{report:?}");
    assert_eq!(report.wal_bytes_after, 0);
    assert_eq!(report.bytes_after, report.page_count_after as u64 * 4096);
    engine.shutdown(std::time::Duration::from_secs(10)).await;
    let conn = Connection::open(&db).unwrap();
    let state = db_state(&conn);
    assert_eq!(state.freelist_count, 0);
    assert_eq!(state.integrity, vec!["ok"]);
    assert_eq!(upstream_rows(&conn), rows_before, "every live row intact");
}
