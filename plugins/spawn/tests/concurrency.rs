//! 100 spawn cycles of three agents each, several at once, while a vacuum-like job writes
//! heavily through the same `Storage` (big inserts and deletes, incremental vacuum chunks,
//! `wal_checkpoint(TRUNCATE)`), a second engine's `Storage` on the same file does the same
//! (another process's connection: real lock contention), and readers compute stats:
//! `integrity_check` stays ok, every row is accounted for, and no BUSY (or any other
//! error) reaches a caller.

mod support;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use rusqlite::params;
use speckit_engine::storage::StorageOptions;
use speckit_engine::{Storage, StorageError};
use speckit_spawn::{spawn_agents, SpawnRequest};
use support::*;

const CYCLES: usize = 100;
const AGENTS: usize = 3;
/// Cycles in flight at once (each starts its three agents in parallel).
const CYCLES_AT_ONCE: usize = 4;

/// What the heavy writer did, to account for its rows afterwards.
#[derive(Default)]
struct WriterTally {
    inserted: AtomicI64,
    deleted: AtomicI64,
    vacuum_steps: AtomicI64,
    checkpoints: AtomicI64,
}

fn sqlite(storage: &Storage) -> impl Fn(rusqlite::Error) -> StorageError + Clone {
    let path = storage.path().to_path_buf();
    move |source| StorageError::Sqlite {
        path: path.clone(),
        cause: source,
    }
}

/// A maintenance step retried on a transient error, as the vacuum plugin's steps are: with
/// two writers in one process SQLite's lock has no fairness, so one writer can wait out its
/// whole busy timeout behind the other on a loaded machine.
async fn maintain_retrying<T: Send + 'static>(
    storage: &Storage,
    step: impl Fn(&mut rusqlite::Connection) -> Result<T, StorageError> + Clone + Send + 'static,
) -> Result<T, StorageError> {
    let retry = storage.options().retry.clone();
    let mut attempt = 0;
    loop {
        match storage.maintain(step.clone()).await {
            Err(StorageError::Sqlite { cause, .. })
                if speckit_engine::storage::retry::is_transient(&cause)
                    && attempt + 1 < retry.max_attempts.max(1) =>
            {
                tokio::time::sleep(retry.backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A vacuum-like job: inserts 16 KiB blobs, deletes half of them, frees the pages with an
/// incremental vacuum (stepped to the end, in chunks), checkpoints with TRUNCATE.
async fn heavy_writer(storage: Storage, stop: Arc<AtomicBool>, tally: Arc<WriterTally>) {
    let err = sqlite(&storage);
    let blob = vec![0x5au8; 16 * 1024];
    let mut round: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let (b, e) = (blob.clone(), err.clone());
        storage
            .write(move |tx| {
                for i in 0..20 {
                    tx.execute(
                        "INSERT INTO scratch (round, n, payload) VALUES (?1, ?2, ?3)",
                        params![round, i, b],
                    )
                    .map_err(&e)?;
                }
                Ok::<_, StorageError>(())
            })
            .await
            .expect("heavy insert");
        tally.inserted.fetch_add(20, Ordering::Relaxed);
        let e = err.clone();
        let deleted = storage
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM scratch WHERE round = ?1 AND n % 2 = 0",
                    params![round],
                )
                .map_err(&e)
            })
            .await
            .expect("heavy delete");
        tally.deleted.fetch_add(deleted as i64, Ordering::Relaxed);
        if round % 3 == 0 {
            let e = err.clone();
            maintain_retrying(&storage, move |conn| {
                let mut stmt = conn.prepare("PRAGMA incremental_vacuum(64)").map_err(&e)?;
                let mut rows = stmt.query([]).map_err(&e)?;
                while rows.next().map_err(&e)?.is_some() {}
                Ok(())
            })
            .await
            .expect("vacuum chunk");
            tally.vacuum_steps.fetch_add(1, Ordering::Relaxed);
            let e = err.clone();
            maintain_retrying(&storage, move |conn| {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(&e)
            })
            .await
            .expect("checkpoint");
            tally.checkpoints.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_parallel_cycles_with_a_heavy_writer() {
    let fx = Fixture::new();
    let err = sqlite(&fx.storage);
    // An incrementally vacuumable database (switching needs one VACUUM) with a scratch table.
    let e = err.clone();
    fx.storage
        .maintain(move |conn| {
            conn.execute_batch(
                "PRAGMA auto_vacuum = INCREMENTAL; VACUUM; CREATE TABLE scratch (round INTEGER, n INTEGER, payload BLOB);",
            )
            .map_err(&e)
        })
        .await
        .unwrap();

    let policy = Arc::new(fx.policy(
        vec![
            stub(
                "gemini",
                &["--ready-after-ms", "2", "--output-bytes", "3000"],
            ),
            stub("claude", &["--output-bytes", "2000"]),
            stub("gpt_pro", &["--ready-after-ms", "1", "--run-ms", "3"]),
        ],
        |s| s.max_concurrency = 3,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(WriterTally::default());
    let writer = tokio::spawn(heavy_writer(
        fx.storage.clone(),
        stop.clone(),
        tally.clone(),
    ));
    // A second engine sharing the database (say, one embedded in a terminal application).
    let other_engine = Storage::open(StorageOptions::new(fx.storage.path())).unwrap();
    let other_writer = tokio::spawn(heavy_writer(
        other_engine.clone(),
        stop.clone(),
        tally.clone(),
    ));
    let reader = {
        let (storage, stop) = (fx.storage.clone(), stop.clone());
        tokio::spawn(async move {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) {
                speckit_spawn::stats::load(&storage)
                    .await
                    .expect("stats read");
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        })
    };

    let slots = Arc::new(tokio::sync::Semaphore::new(CYCLES_AT_ONCE));
    let mut cycles = tokio::task::JoinSet::new();
    for cycle in 0..CYCLES {
        let (storage, events, policy, slots) = (
            fx.storage.clone(),
            fx.events.clone(),
            policy.clone(),
            slots.clone(),
        );
        cycles.spawn(async move {
            let _slot = slots.acquire_owned().await.unwrap();
            let spec_id = spec(&format!("SPEC-KIT-{:03}", cycle % 10));
            let request = SpawnRequest::new(spec_id, "implement", format!("cycle {cycle}\n"));
            let batch = spawn_agents(&storage, &policy, &events, request)
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
            assert!(
                batch.failures.is_empty(),
                "cycle {cycle}: {:?}",
                batch.failures
            );
            assert!(
                batch.warnings.is_empty(),
                "cycle {cycle}: {:?}",
                batch.warnings
            );
            let mut pids = Vec::new();
            for handle in batch.handles {
                let c = handle
                    .wait()
                    .await
                    .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
                assert!(c.succeeded(), "cycle {cycle}: {c:?}");
                assert!(
                    c.response.contains(&format!("cycle {cycle}")),
                    "{}",
                    c.response
                );
                pids.push(c.pid);
            }
            (batch.metrics.batch_id, pids)
        });
    }
    let mut batch_ids = Vec::new();
    while let Some(done) = cycles.join_next().await {
        let (batch_id, pids) = done.expect("cycle task");
        assert!(pids.iter().all(|p| process_gone(*p)));
        batch_ids.push(batch_id);
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    other_writer.await.expect("second engine's writer");
    let reads = reader.await.expect("reader");

    // The writer really ran alongside.
    let inserted = tally.inserted.load(Ordering::Relaxed);
    let deleted = tally.deleted.load(Ordering::Relaxed);
    eprintln!(
        "heavy writers: {inserted} rows of 16 KiB inserted, {deleted} deleted, {} vacuum chunks, {} checkpoints; {reads} stats reads; storage {:?} / second engine {:?}",
        tally.vacuum_steps.load(Ordering::Relaxed),
        tally.checkpoints.load(Ordering::Relaxed),
        fx.storage.stats(),
        other_engine.stats(),
    );
    assert!(tally.checkpoints.load(Ordering::Relaxed) > 0 && reads > 0);
    assert_eq!(
        fx.count("SELECT count(*) FROM scratch").await,
        inserted - deleted
    );

    // Integrity, on a fresh read connection after everything was written.
    let integrity = fx.text("PRAGMA integrity_check").await.unwrap();
    assert_eq!(integrity, "ok");
    assert_eq!(
        fx.count("SELECT count(*) FROM pragma_foreign_key_check")
            .await,
        0
    );

    // Every row accounted for.
    let rows = (CYCLES * AGENTS) as i64;
    assert_eq!(
        fx.count("SELECT count(*) FROM agent_executions").await,
        rows
    );
    assert_eq!(
        fx.count("SELECT count(*) FROM agent_executions WHERE completed_at IS NOT NULL AND extraction_error IS NULL AND response_text LIKE '%cycle%'").await,
        rows
    );
    // Spawning is no consensus: the host's result tables are not written.
    assert_eq!(fx.count("SELECT count(*) FROM agent_outputs").await, 0);
    assert_eq!(fx.count("SELECT count(*) FROM consensus_runs").await, 0);
    assert_eq!(
        fx.count("SELECT count(*) FROM hygiene_spawn_batches WHERE total_us IS NOT NULL AND ok_count = 3 AND failed_count = 0").await,
        CYCLES as i64
    );
    assert_eq!(
        fx.count("SELECT count(*) FROM hygiene_spawn_metrics WHERE ok = 1")
            .await,
        rows
    );
    batch_ids.sort();
    batch_ids.dedup();
    assert_eq!(batch_ids.len(), CYCLES);
    // Four evidence files per agent, plus one metrics export per SPEC.
    let files: usize = (0..10)
        .map(|i| files_in(&fx.spec_dir(&format!("SPEC-KIT-{i:03}"))).len())
        .sum();
    assert_eq!(files, CYCLES * AGENTS * 4 + 10);

    // No BUSY reached a caller: every result above was unwrapped, and neither engine's
    // storage gave up on a write.
    for stats in [fx.storage.stats(), other_engine.stats()] {
        assert_eq!(stats.busy_failures, 0, "{stats:?}");
        assert!(stats.writes_committed > 0, "{stats:?}");
    }
    let spawn_stats = speckit_spawn::stats::load(&fx.storage).await.unwrap();
    assert_eq!(
        (spawn_stats.batches, spawn_stats.agents_ok),
        (CYCLES, CYCLES * AGENTS)
    );
    other_engine.close();
}
