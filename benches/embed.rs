//! Embedding benchmark: time from `EngineBuilder::start()` to a usable handle on a fresh
//! database and on an upstream-shaped ~150 MB one, the per-call cost of talking to the
//! embedded engine against upstream's pattern of reopening the database (and re-running
//! migrations) at every call site (the baseline), and the memory the idle engine holds.
//!
//! `cargo bench --bench embed` runs it for real; without `--bench` (as
//! `cargo test --all-targets` runs it) it does a tiny smoke run.
//!
//! Method:
//! - "start" is `start()` returning; "usable" is that plus the first answer read from the
//!   database through the handle (`recent_runs(1)`), i.e. the first call a host makes.
//! - The 150 MB database is made once by `speckit_testkit::database::create_bloated`
//!   (upstream's shape: `auto_vacuum = NONE`, rollback journal, nearly all pages free);
//!   every "first start" run gets a fresh copy of it (the copy is not timed), so each pays
//!   the switch to WAL and the migrations. "Restart" runs start again on the migrated copy.
//!   The file is in the page cache (it was just written): cold-cache I/O is not measured.
//! - Memory: a child process per case builds its tokio runtime, reads `VmRSS` from
//!   `/proc/self/status`, starts the engine (scheduler and config watcher running), lets
//!   it idle for a settle period, and reads `VmRSS` and `VmHWM` again. The delta is what
//!   the idle engine holds (allocator arenas included); each case runs in its own process
//!   so earlier cases' freed memory does not hide it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use speckit_engine::storage::{Storage, StorageOptions};
use speckit_hygiene::embed::{EngineBuilder, EngineHandle};

const CHILD_ENV: &str = "SPECKIT_EMBED_BENCH_CHILD";
const SETTLE_ENV: &str = "SPECKIT_EMBED_BENCH_SETTLE_MS";
const MIB: u64 = 1024 * 1024;

struct Scale {
    full: bool,
    bloated_bytes: u64,
    fresh_runs: usize,
    bloated_runs: usize,
    reopen_calls: usize,
    handle_calls: usize,
    settle: Duration,
}

fn main() {
    if let Ok(config) = std::env::var(CHILD_ENV) {
        let settle = std::env::var(SETTLE_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2_000);
        memory_child(Path::new(&config), Duration::from_millis(settle));
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full {
        Scale {
            full,
            bloated_bytes: 150 * MIB,
            fresh_runs: 10,
            bloated_runs: 5,
            reopen_calls: 20,
            handle_calls: 200,
            settle: Duration::from_secs(2),
        }
    } else {
        Scale {
            full,
            bloated_bytes: 2 * MIB,
            fresh_runs: 1,
            bloated_runs: 1,
            reopen_calls: 2,
            handle_calls: 5,
            settle: Duration::from_millis(200),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench(&scale));
}

/// A workspace whose config names `database` (absolute) and an empty evidence root.
fn workspace(dir: &Path, database: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("evidence")).expect("evidence root");
    let config = dir.join("speckit.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndatabase_path = {:?}\n[evidence]\nroot = \"evidence\"\ntracker_paths = []\n",
            database.display().to_string()
        ),
    )
    .expect("config");
    config
}

/// Starts an engine; returns (start() returned, first answer through the handle).
async fn timed_start(config: &Path) -> (Duration, Duration, EngineHandle) {
    let started = Instant::now();
    let handle = EngineBuilder::new(config)
        .env(Vec::new())
        .start()
        .await
        .expect("start");
    let start = started.elapsed();
    handle.recent_runs(1).await.expect("first read");
    (start, started.elapsed(), handle)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (min, median, max) in milliseconds.
fn summary(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    (
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
    )
}

fn report(label: &str, samples: Vec<Duration>) {
    let n = samples.len();
    let (min, median, max) = summary(samples);
    println!("{label:<56} n={n:<3} min {min:>9.2} ms  median {median:>9.2} ms  max {max:>9.2} ms");
}

async fn bench(scale: &Scale) {
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "embed bench ({} run)",
        if scale.full { "full" } else { "smoke" }
    );

    // Fresh database: created by the start.
    let (mut starts, mut usable) = (Vec::new(), Vec::new());
    for i in 0..scale.fresh_runs {
        let ws = dir.path().join(format!("fresh-{i}"));
        let config = workspace(&ws, &ws.join("consensus.db"));
        let (start, ready, handle) = timed_start(&config).await;
        starts.push(start);
        usable.push(ready);
        handle.shutdown().await;
    }
    report("fresh database: start() returned", starts);
    report("fresh database: start() to first answer (usable)", usable);

    // Upstream-shaped bloated database.
    let pristine = dir.path().join("pristine.db");
    let made = Instant::now();
    let summary_made = speckit_testkit::database::create_bloated(
        &pristine,
        scale.bloated_bytes,
        3,
        &[("SPEC-KIT-900", "plan", 3)],
        chrono::Utc::now().timestamp_millis(),
    )
    .expect("bloated database");
    let size = std::fs::metadata(&pristine).expect("size").len();
    println!(
        "bloated database: {:.1} MiB, {} pages, {} free, {} live agent rows (made in {:.1} s, not timed)",
        size as f64 / MIB as f64,
        summary_made.page_count,
        summary_made.freelist_count,
        summary_made.live_executions,
        made.elapsed().as_secs_f64()
    );
    let (mut first_starts, mut first_usable) = (Vec::new(), Vec::new());
    let (mut restarts, mut restart_usable) = (Vec::new(), Vec::new());
    let mut migrated = None;
    for i in 0..scale.bloated_runs {
        let ws = dir.path().join(format!("bloated-{i}"));
        std::fs::create_dir_all(&ws).expect("ws");
        let database = ws.join("consensus.db");
        std::fs::copy(&pristine, &database).expect("copy");
        let config = workspace(&ws, &database);
        let (start, ready, handle) = timed_start(&config).await;
        first_starts.push(start);
        first_usable.push(ready);
        handle.shutdown().await;
        let (start, ready, handle) = timed_start(&config).await;
        restarts.push(start);
        restart_usable.push(ready);
        handle.shutdown().await;
        if i > 0 {
            // Keep one copy for the per-call comparison; free the disk of the others.
            let _ = std::fs::remove_dir_all(&ws);
        } else {
            migrated = Some((config, database));
        }
    }
    report(
        "bloated, first start (WAL switch + migrations): start()",
        first_starts,
    );
    report(
        "bloated, first start: start() to first answer",
        first_usable,
    );
    report("bloated, restart (migrated): start()", restarts);
    report("bloated, restart: start() to first answer", restart_usable);

    // Baseline: upstream reopened the database (and ran its migrations) at every call site.
    // Here each call pays the engine's own open (pragmas, WAL, schema version check; the
    // migrations themselves are already applied), a read, and the close: a lower bound of
    // what upstream's pattern costs.
    let (config, database) = migrated.expect("one bloated copy kept");
    let mut reopen = Vec::new();
    for _ in 0..scale.reopen_calls {
        let database = database.clone();
        let t = Instant::now();
        tokio::task::spawn_blocking(move || {
            let storage = Storage::open(StorageOptions::new(database)).expect("open");
            storage
                .read_blocking(|conn| {
                    conn.query_row("SELECT count(*) FROM hygiene_job_runs", [], |r| {
                        r.get::<_, i64>(0)
                    })
                })
                .expect("read");
            storage.close();
        })
        .await
        .expect("reopen task");
        reopen.push(t.elapsed());
    }
    let handle = EngineBuilder::new(&config)
        .env(Vec::new())
        .start()
        .await
        .expect("start");
    let mut through_handle = Vec::new();
    for _ in 0..scale.handle_calls {
        let t = Instant::now();
        handle.recent_runs(1).await.expect("read");
        through_handle.push(t.elapsed());
    }
    handle.shutdown().await;
    let (_, reopen_median, _) = summary(reopen.clone());
    let (_, handle_median, _) = summary(through_handle.clone());
    report("baseline: Storage::open + read + close per call", reopen);
    report("embedded handle: one read per call", through_handle);
    println!(
        "per-call median: handle is {:.0}x faster than reopening",
        reopen_median / handle_median.max(1e-9)
    );

    // Memory of the idle engine, one child process per case.
    for (label, ws_name, database) in [
        ("fresh", "mem-fresh", None),
        ("bloated (migrated copy)", "mem-bloated", Some(&database)),
    ] {
        let ws = dir.path().join(ws_name);
        std::fs::create_dir_all(&ws).expect("ws");
        let db = match database {
            Some(source) => {
                let copy = ws.join("consensus.db");
                std::fs::copy(source, &copy).expect("copy");
                copy
            }
            None => ws.join("consensus.db"),
        };
        let config = workspace(&ws, &db);
        let output = Command::new(std::env::current_exe().expect("exe"))
            .env(CHILD_ENV, &config)
            .env(SETTLE_ENV, scale.settle.as_millis().to_string())
            .output()
            .expect("memory child");
        assert!(
            output.status.success(),
            "memory child failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = String::from_utf8_lossy(&output.stdout);
        let figures: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let [before, after, hwm] = figures[..] else {
            panic!("unexpected child output: {line}");
        };
        println!(
            "idle engine memory, {label:<24} RSS {:.1} MiB -> {:.1} MiB after {} ms idle: +{:.1} MiB (peak RSS {:.1} MiB)",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            scale.settle.as_millis(),
            after.saturating_sub(before) as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
}

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

/// Prints `rss_before_kib rss_after_kib hwm_kib` for one idle engine.
fn memory_child(config: &Path, settle: Duration) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Warm the runtime's workers first, so their stacks are not counted as the engine.
        tokio::task::spawn_blocking(|| ()).await.expect("warm");
        let before = status_kib("VmRSS:");
        let handle = EngineBuilder::new(config)
            .env(Vec::new())
            .start()
            .await
            .expect("start");
        tokio::time::sleep(settle).await;
        let after = status_kib("VmRSS:");
        let hwm = status_kib("VmHWM:");
        println!("{before} {after} {hwm}");
        handle.shutdown().await;
    });
}
