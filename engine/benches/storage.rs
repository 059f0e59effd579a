//! Storage benchmark: write transactions per second through the single writer against many
//! connections contending with `BEGIN IMMEDIATE` (the baseline), and write latency
//! percentiles with 8 concurrent tasks while a second process writes to the same database.
//!
//! `cargo bench -p speckit-engine --bench storage` runs it for real; without `--bench`
//! (as `cargo test --all-targets` runs it) it does a tiny smoke run.

use rusqlite::{params, Connection};
use speckit_engine::storage::{Storage, StorageError, StorageOptions};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "SPECKIT_BENCH_CHILD_DB";
const TASKS: usize = 8;

fn sqlite(source: rusqlite::Error) -> StorageError {
    StorageError::Sqlite {
        path: Default::default(),
        cause: source,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn setup(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, who TEXT, n INTEGER, payload TEXT);",
    )
    .unwrap();
}

/// Writes through the engine's single writer from `TASKS` tasks; returns (tx/s, latencies).
async fn single_writer(storage: &Storage, total: usize, who: &'static str) -> (f64, Vec<Duration>) {
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let s = storage.clone();
        set.spawn(async move {
            let mut latencies = Vec::with_capacity(total / TASKS);
            for n in 0..total / TASKS {
                let t = Instant::now();
                s.write(move |tx| {
                    tx.execute(
                        "INSERT INTO bench (who, n, payload) VALUES (?1, ?2, ?3)",
                        params![who, (task * 1_000_000 + n) as i64, "x".repeat(200)],
                    )
                    .map_err(sqlite)
                })
                .await
                .unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        });
    }
    let mut all = Vec::with_capacity(total);
    while let Some(l) = set.join_next().await {
        all.extend(l.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / secs, all)
}

/// Baseline: `threads` connections, each its own `BEGIN IMMEDIATE` per insert, contending
/// through SQLite's busy handler.
fn many_connections(path: &Path, threads: usize, total: usize) -> (f64, Vec<Duration>) {
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let path = path.to_path_buf();
            std::thread::spawn(move || {
                let conn = Connection::open(&path).unwrap();
                conn.busy_timeout(Duration::from_secs(30)).unwrap();
                conn.execute_batch("PRAGMA synchronous = NORMAL").unwrap();
                let mut latencies = Vec::new();
                for n in 0..total / threads {
                    let start = Instant::now();
                    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                    conn.execute(
                        "INSERT INTO bench (who, n, payload) VALUES ('many', ?1, ?2)",
                        params![(t * 1_000_000 + n) as i64, "x".repeat(200)],
                    )
                    .unwrap();
                    conn.execute_batch("COMMIT").unwrap();
                    latencies.push(start.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / secs, all)
}

fn spawn_child_writer(path: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, path)
        .stdout(Stdio::null())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The second process: writes through its own engine storage until stdin closes.
fn child_main(path: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let storage = Storage::open(StorageOptions::new(path)).unwrap();
        let stop = tokio::task::spawn_blocking(|| {
            let mut buf = String::new();
            let _ = std::io::stdin().read_line(&mut buf);
        });
        tokio::pin!(stop);
        let mut n = 0i64;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                r = storage.write(move |tx| tx.execute(
                    "INSERT INTO bench (who, n, payload) VALUES ('child', ?1, ?2)",
                    params![n, "y".repeat(200)],
                ).map_err(sqlite)) => { r.unwrap(); n += 1; }
            }
        }
        storage.close();
    });
}

fn main() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        return child_main(&path);
    }
    let real = std::env::args().any(|a| a == "--bench");
    let total = if real { 40_000 } else { 400 };
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // 1. Throughput: single writer vs many contending connections.
    let a = dir.path().join("single.db");
    setup(&a);
    let (single_tps, single_lat) = rt.block_on(async {
        let storage = Storage::open(StorageOptions::new(&a)).unwrap();
        let r = single_writer(&storage, total, "single").await;
        storage.close();
        r
    });
    let b = dir.path().join("many.db");
    setup(&b);
    let threads = if real { 100 } else { 4 };
    let (many_tps, many_lat) = many_connections(&b, threads, total);
    println!("storage/throughput  transactions: {total}");
    println!(
        "  single writer ({TASKS} tasks):          {single_tps:>9.0} tx/s  p99 {:>8.2?}  max {:>8.2?}",
        percentile(&single_lat, 99.0),
        single_lat.last().copied().unwrap_or_default()
    );
    println!(
        "  baseline: {threads} connections IMMEDIATE: {many_tps:>9.0} tx/s  p99 {:>8.2?}  max {:>8.2?}",
        percentile(&many_lat, 99.0),
        many_lat.last().copied().unwrap_or_default()
    );
    println!("  ratio single/many: {:.2}x", single_tps / many_tps);

    // 2. Latency with a second process writing to the same database.
    let c = dir.path().join("shared.db");
    setup(&c);
    let latency_total = if real { 8_000 } else { 160 };
    let (alone, with_child) = rt.block_on(async {
        let storage = Storage::open(StorageOptions::new(&c)).unwrap();
        let (_, alone) = single_writer(&storage, latency_total, "alone").await;
        let mut child = spawn_child_writer(&c);
        // Let the child get going: wait until its first rows are visible.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n: i64 = storage
                .read(|conn| conn.query_row("SELECT count(*) FROM bench WHERE who = 'child'", [], |r| r.get(0)))
                .await
                .unwrap();
            if n > 0 || Instant::now() > deadline {
                break;
            }
            tokio::task::yield_now().await;
        }
        let (_, with_child) = single_writer(&storage, latency_total, "parent").await;
        drop(child.stdin.take());
        let status = child.wait().unwrap();
        assert!(status.success(), "child writer failed");
        let child_rows: i64 = storage
            .read(|conn| conn.query_row("SELECT count(*) FROM bench WHERE who = 'child'", [], |r| r.get(0)))
            .await
            .unwrap();
        println!("storage/latency  {latency_total} writes from {TASKS} tasks; child process wrote {child_rows} rows meanwhile");
        storage.close();
        (alone, with_child)
    });
    for (label, lat) in [
        ("alone", &alone),
        ("with a second writing process", &with_child),
    ] {
        println!(
            "  {label:<31} p50 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}",
            percentile(lat, 50.0),
            percentile(lat, 99.0),
            lat.last().copied().unwrap_or_default()
        );
    }
}
