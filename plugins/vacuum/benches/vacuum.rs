//! Vacuum benchmark: MB freed per second (migration VACUUM and chunked incremental
//! vacuum), the WAL's peak size during vacuum (sampled after each chunk, before its
//! checkpoint), and a concurrent writer's transaction latency during vacuum against the
//! same writer with no vacuum running, measured in one run.
//!
//! The writers are paced: one transaction, then 1 ms of other work, like a busy agent
//! process. (A writer in a tight loop never lets go of the lock; SQLite's busy handler is
//! unfair, so it starves every other connection, vacuum or not.)
//!
//! `cargo bench -p speckit-vacuum --bench vacuum` runs it for real (150 MB databases);
//! without `--bench` (as `cargo test --all-targets` runs it) it does a tiny smoke run.

use rusqlite::{params, Connection};
use speckit_engine::{Engine, EngineEvent, EngineOptions, JobTrigger, Plugin, StorageError};
use speckit_vacuum::{VacuumPlugin, VacuumReport};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: f64 = 1024.0 * 1024.0;

struct Scale {
    database_mib: u64,
    /// (chunk_pages, lock_time_fraction) pairs to run.
    settings: &'static [(u32, f64)],
    baseline_transactions: usize,
}

const FULL: Scale = Scale {
    database_mib: 150,
    settings: &[(64, 0.5), (256, 0.5), (1024, 0.5), (256, 1.0)],
    baseline_transactions: 2_000,
};

const SMOKE: Scale = Scale {
    database_mib: 2,
    settings: &[(64, 0.5)],
    baseline_transactions: 50,
};

/// Other work a writer does between two transactions.
const WRITER_THINK: Duration = Duration::from_millis(1);

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { &FULL } else { &SMOKE };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        migration(scale).await;
        for &(chunk, fraction) in scale.settings {
            incremental_with_writers(scale, chunk, fraction).await;
        }
    });
}

async fn start_engine(dir: &Path, db: &Path, chunk_pages: u32, lock_time_fraction: f64) -> Engine {
    let config = dir.join("speckit.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndatabase_path = {:?}\n[vacuum]\nchunk_pages = {chunk_pages}\nlock_time_fraction = {lock_time_fraction}\n",
            db.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut options = EngineOptions::new(config);
    options.env.retain(|(k, _)| !k.starts_with("SPECKIT_"));
    let plugins: Vec<Arc<dyn Plugin>> = vec![Arc::new(VacuumPlugin::new())];
    Engine::start(options, plugins).await.expect("engine")
}

async fn vacuum(engine: &Engine) -> VacuumReport {
    let run = engine
        .run_job(
            "vacuum",
            JobTrigger::Manual,
            serde_json::json!({"force": true}),
        )
        .await
        .expect("vacuum job");
    let report = run.report.expect("a report");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    serde_json::from_value(report.data).expect("vacuum report")
}

/// Upstream's case: an `auto_vacuum = NONE` database, nearly all free, migrated by one
/// full VACUUM.
async fn migration(scale: &Scale) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus_artifacts.db");
    speckit_testkit::database::create_bloated(&db, scale.database_mib * 1024 * 1024, 3, &[], 0)
        .unwrap();
    let engine = start_engine(dir.path(), &db, 256, 0.5).await;
    let report = vacuum(&engine).await;
    engine.shutdown(Duration::from_secs(30)).await;
    assert!(report.migrated);
    let freed = report.bytes_freed as f64 / MIB;
    println!(
        "migration (NONE -> INCREMENTAL, one VACUUM): {:.1} MiB -> {:.1} KiB, {:.1} MiB freed in {} ms = {:.0} MiB/s; WAL peak {:.1} KiB; writer connection held {:.1} ms",
        report.bytes_before as f64 / MIB,
        report.bytes_after as f64 / 1024.0,
        freed,
        report.duration_ms,
        freed / (report.duration_ms.max(1) as f64 / 1000.0),
        report.wal_bytes_peak as f64 / 1024.0,
        report.max_step_ms
    );
}

/// An INCREMENTAL database with about `mib` MiB of free pages and a few live rows.
fn incremental_db(path: &Path, mib: u64) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;",
    )
    .unwrap();
    speckit_testkit::database::create_upstream_schema(&conn).unwrap();
    let rows = (mib * 1024 * 1024 / (16 * 1024 + 200)) as i64;
    conn.execute(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?1)
         INSERT INTO agent_executions (agent_id, spec_id, stage, phase_type, agent_name, spawned_at, response_text)
         SELECT printf('agent-%08d', x), 'SPEC-KIT-900', 'plan', 'agent', 'gemini', '2025-10-01T00:00:00Z', printf('%.*c', 16384, 'r') FROM n",
        params![rows],
    )
    .unwrap();
    conn.execute("DELETE FROM agent_executions WHERE rowid > 3", [])
        .unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
}

/// Latencies in microseconds, sorted.
struct Latencies(Vec<u64>);

impl Latencies {
    fn new(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        Self(samples)
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1] as f64 / 1000.0
    }

    fn line(&self) -> String {
        format!(
            "n={:>6}  p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
            self.0.len(),
            self.percentile(50.0),
            self.percentile(99.0),
            self.percentile(100.0)
        )
    }
}

/// A writer that inserts one small row per transaction until `stop`, timing each.
/// `Queue` goes through the engine's storage (how this process writes); `Connection` has
/// its own connection with BEGIN IMMEDIATE (how another process writes).
#[derive(Clone, Copy, Debug)]
enum Writer {
    Queue,
    Connection,
}

async fn write_until(
    writer: Writer,
    engine: &Engine,
    db: &Path,
    stop: Arc<AtomicBool>,
    limit: usize,
    tag: &'static str,
) -> Vec<u64> {
    match writer {
        Writer::Queue => {
            let storage = engine.storage().clone();
            let mut samples = Vec::new();
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) && samples.len() < limit {
                let started = Instant::now();
                storage
                    .write(move |tx| {
                        tx.execute(
                            "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, synthesis_json) VALUES (?1, 'plan', ?2, 1, ?3)",
                            params![tag, i, "s".repeat(1000)],
                        )
                        .map_err(|e| StorageError::Other(e.to_string()))
                    })
                    .await
                    .expect("write");
                samples.push(started.elapsed().as_micros() as u64);
                i += 1;
                tokio::time::sleep(WRITER_THINK).await;
            }
            samples
        }
        Writer::Connection => {
            let db = db.to_path_buf();
            tokio::task::spawn_blocking(move || {
                let mut conn = Connection::open(&db).unwrap();
                conn.busy_timeout(Duration::from_secs(30)).unwrap();
                conn.execute_batch("PRAGMA synchronous = NORMAL").unwrap();
                let mut samples = Vec::new();
                let mut i = 0i64;
                while !stop.load(Ordering::Relaxed) && samples.len() < limit {
                    let started = Instant::now();
                    let tx = conn
                        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                        .unwrap();
                    tx.execute(
                        "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, synthesis_json) VALUES (?1, 'plan', ?2, 1, ?3)",
                        params![tag, i, "s".repeat(1000)],
                    )
                    .unwrap();
                    tx.commit().unwrap();
                    samples.push(started.elapsed().as_micros() as u64);
                    i += 1;
                    std::thread::sleep(WRITER_THINK);
                }
                samples
            })
            .await
            .unwrap()
        }
    }
}

/// Incremental vacuum of about `scale.database_mib` MiB of free pages in chunks of
/// `chunk_pages`, with the writer latency baseline before it, in the same run.
async fn incremental_with_writers(scale: &Scale, chunk_pages: u32, lock_time_fraction: f64) {
    for writer in [Writer::Queue, Writer::Connection] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("consensus_artifacts.db");
        incremental_db(&db, scale.database_mib);
        let engine = start_engine(dir.path(), &db, chunk_pages, lock_time_fraction).await;

        // Baseline: the writer alone, on the same bloated database.
        let never = Arc::new(AtomicBool::new(false));
        let baseline = Latencies::new(
            write_until(
                writer,
                &engine,
                &db,
                never,
                scale.baseline_transactions,
                "BASE",
            )
            .await,
        );

        // Empty the WAL the baseline filled, so the peak below is the vacuum's.
        engine
            .storage()
            .maintain(|conn| {
                conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                    .map_err(|e| StorageError::Other(e.to_string()))
            })
            .await
            .unwrap();

        // The same writer while the vacuum runs; only transactions that started during it.
        let mut events = engine.events().subscribe();
        let stop = Arc::new(AtomicBool::new(false));
        let writer_engine = engine.clone();
        let writer_stop = stop.clone();
        let writer_db = db.clone();
        let during = tokio::spawn(async move {
            write_until(
                writer,
                &writer_engine,
                &writer_db,
                writer_stop,
                usize::MAX,
                "VAC",
            )
            .await
        });
        let report = vacuum(&engine).await;
        stop.store(true, Ordering::Relaxed);
        let during = Latencies::new(during.await.unwrap());
        let mut chunk_us = Vec::new();
        while let Ok(event) = events.try_recv() {
            if let EngineEvent::Plugin { kind, data, .. } = event {
                if kind == "vacuum_chunk" {
                    chunk_us.push(data["duration_us"].as_u64().unwrap_or(0));
                }
            }
        }
        let chunks = Latencies::new(chunk_us);
        engine.shutdown(Duration::from_secs(30)).await;

        let freed_mib = report.pages_freed as f64 * report.page_size as f64 / MIB;
        let seconds = report.duration_ms.max(1) as f64 / 1000.0;
        println!(
            "\nincremental vacuum, chunk_pages {chunk_pages}, lock_time_fraction {lock_time_fraction}, writer {writer:?}: {:.1} MiB freed ({} pages, {} chunks, outcome {:?}) in {} ms (of which paused {:.0} ms) = {:.0} MiB/s; WAL peak {:.1} KiB (after each chunk, before its checkpoint), WAL after {} B; busy checkpoints {}",
            freed_mib,
            report.pages_freed,
            report.chunks,
            report.outcome,
            report.duration_ms,
            report.paused_ms,
            freed_mib / seconds,
            report.wal_bytes_peak as f64 / 1024.0,
            report.wal_bytes_after,
            report.checkpoints_busy
        );
        println!("  chunk step (writer held)   {}", chunks.line());
        println!("  writer, no vacuum          {}", baseline.line());
        println!("  writer, during vacuum      {}", during.line());
        println!(
            "  p99 during / p99 without   {:.1}x",
            during.percentile(99.0) / baseline.percentile(99.0)
        );
    }
}
