//! A guest in the host's database: a second process writing the way upstream's TUI writes
//! (its pool's pragmas, `busy_timeout = 5000`, its statements and transactions) while our
//! engine runs its heaviest write loads, against the same process writing alone, in the
//! same run. The host must never see `SQLITE_BUSY` and never wait longer than one of our
//! steps.
//!
//! `cargo bench -p speckit-hygiene --bench host_writer` runs it for real; without
//! `--bench` (as `cargo test --all-targets` runs it) it does a tiny smoke run.
//!
//! Method:
//! - The host writer is a separate process: this binary re-run with `HOST_ENV` naming the
//!   database. It opens one plain rusqlite connection (upstream's pool, one connection
//!   busy at a time as the TUI writes sequentially) with upstream's pragmas, and loops
//!   flat out until its stdin closes: per iteration (a) an autocommit
//!   `INSERT OR REPLACE INTO agent_executions` and an autocommit `UPDATE ... SET
//!   response_text` of 10-20 KB, (b) `BEGIN IMMEDIATE` + the consensus-run upsert +
//!   `COMMIT`, (c) an autocommit `INSERT INTO agent_outputs`. After every write it thinks
//!   for `THINK` (1 ms, a TUI doing other work). On `SQLITE_BUSY` it retries as upstream
//!   does (up to 5 times, 100 ms then x1.5); every BUSY counts as a failure in the figures.
//!   A write's latency is from its first attempt to its success (retries included). It
//!   prints every write (kind, start as Unix µs, latency µs, BUSY seen) as JSON.
//! - "alone": the host writer for `alone` on a copy of the bloated database, no job.
//!   "during": the host writer starts, runs `LEAD`, our job runs, the writer goes on for
//!   `LEAD` and stops; the figures count the writes that overlap the job's run
//!   (`Engine::run_job` called to returned). Throughput is writes that finished inside the
//!   window over the window.
//! - Jobs: the vacuum's migration (`auto_vacuum` NONE -> INCREMENTAL, one full VACUUM) on
//!   a fresh copy of an upstream-made bloated database (`create_bloated`), repeated on a
//!   fresh copy each time and pooled; its incremental vacuum after a second bloat (insert
//!   and delete of large rows after the migration); the cleanup's database-row archiving
//!   (50 SPECs Done in the tracker, consensus runs and executions older than 30 days).
//!   Default policy otherwise (`[vacuum]` steps of about `step_target_ms = 1`,
//!   `lock_time_fraction = 0.5`).
//! - "our longest step": the vacuum report's `max_step_ms` (the longest our writer
//!   connection held the database in one step). The cleanup's report has no per-step
//!   figure, so that column is empty for it.

use rusqlite::{params, Connection, ErrorCode};
use serde_json::{json, Value};
use speckit_engine::{Engine, EngineEvent, EngineOptions, JobTrigger};
use speckit_vacuum::VacuumReport;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HOST_ENV: &str = "SPECKIT_HOST_WRITER_BENCH_DB";
const MIB: u64 = 1024 * 1024;
/// The host's think time after each write.
const THINK: Duration = Duration::from_millis(1);
/// Upstream's retry of a BUSY write: 5 retries, 100 ms first, x1.5.
const RETRIES: u32 = 5;
const KINDS: [&str; 4] = [
    "exec_insert",
    "exec_update",
    "consensus_tx",
    "output_insert",
];
/// The SPECs of the cleanup database, all Done in the tracker.
const SPECS: usize = 50;

struct Scale {
    full: bool,
    bloat_bytes: u64,
    alone: Duration,
    lead: Duration,
    migration_repeats: usize,
    runs_per_spec: usize,
    cleanup_executions: usize,
}

const FULL: Scale = Scale {
    full: true,
    bloat_bytes: 150 * MIB,
    alone: Duration::from_secs(5),
    lead: Duration::from_millis(300),
    migration_repeats: 3,
    runs_per_spec: 60,
    cleanup_executions: 2_000,
};

const SMOKE: Scale = Scale {
    full: false,
    bloat_bytes: 4 * MIB,
    alone: Duration::from_millis(300),
    lead: Duration::from_millis(50),
    migration_repeats: 1,
    runs_per_spec: 2,
    cleanup_executions: 50,
};

fn main() {
    if let Ok(db) = std::env::var(HOST_ENV) {
        host_writer(Path::new(&db));
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { &FULL } else { &SMOKE };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(scale));
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

// ---------------------------------------------------------------------------------------
// The host writer (child process).

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::DatabaseBusy || f.code == ErrorCode::DatabaseLocked)
}

struct HostLog {
    /// (kind, start Unix µs, latency µs, BUSY seen)
    ops: Vec<(usize, u64, u64, u32)>,
    /// (Unix µs the BUSY came back, kind, µs the attempt waited)
    busy: Vec<(u64, usize, u64)>,
    errors: Vec<String>,
}

impl HostLog {
    /// Runs one write with upstream's BUSY retry and records it.
    fn write(&mut self, kind: usize, mut f: impl FnMut() -> rusqlite::Result<()>) {
        let start = now_us();
        let started = Instant::now();
        let mut busy = 0;
        let mut delay = Duration::from_millis(100);
        loop {
            let attempt = Instant::now();
            match f() {
                Ok(()) => break,
                Err(e) if is_busy(&e) && busy < RETRIES => {
                    busy += 1;
                    self.busy
                        .push((now_us(), kind, attempt.elapsed().as_micros() as u64));
                    std::thread::sleep(delay);
                    delay = delay.mul_f64(1.5);
                }
                Err(e) => {
                    if is_busy(&e) {
                        busy += 1;
                        self.busy
                            .push((now_us(), kind, attempt.elapsed().as_micros() as u64));
                    }
                    self.errors.push(format!("{}: {e}", KINDS[kind]));
                    break;
                }
            }
        }
        self.ops
            .push((kind, start, started.elapsed().as_micros() as u64, busy));
        std::thread::sleep(THINK);
    }
}

fn host_writer(db: &Path) {
    let conn = Connection::open(db).expect("host: open");
    // Upstream's pool customizer, statement for statement.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -32000; PRAGMA temp_store = MEMORY; PRAGMA auto_vacuum = INCREMENTAL;
         PRAGMA mmap_size = 1073741824; PRAGMA busy_timeout = 5000;",
    )
    .expect("host: pragmas");
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            stop.store(true, Ordering::Relaxed);
        });
    }
    eprintln!("READY");
    let pid = std::process::id();
    let text: String = (0..20 * 1024)
        .map(|i| (b'a' + (i * 11 % 26) as u8) as char)
        .collect();
    let synthesis = format!("{{\"verdict\":\"ok\",\"notes\":\"{}\"}}", &text[..2_000]);
    let content = format!("{{\"analysis\":\"{}\"}}", &text[..4_000]);
    let mut log = HostLog {
        ops: Vec::new(),
        busy: Vec::new(),
        errors: Vec::new(),
    };
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let agent_id = format!("host-{pid}-{i}");
        let stage = ["spec-plan", "spec-tasks", "spec-implement"][(i % 3) as usize];
        log.write(0, || {
            conn.execute(
                "INSERT OR REPLACE INTO agent_executions (agent_id, spec_id, stage, phase_type, agent_name, run_id, branch_id, spawned_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, datetime('now'))",
                params![agent_id, "SPEC-KIT-950", stage, "regular_stage", "gemini", format!("host-run-{i}"), "main"],
            )
            .map(drop)
        });
        let response = &text[..10 * 1024 + (i as usize * 997) % (10 * 1024)];
        log.write(1, || {
            conn.execute(
                "UPDATE agent_executions SET completed_at = datetime('now'), response_text = ?2 WHERE agent_id = ?1",
                params![agent_id, response],
            )
            .map(drop)
        });
        let ts = (now_us() / 1000) as i64;
        let mut run_id = 0;
        log.write(2, || {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let r = conn
                .execute(
                    "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, degraded, synthesis_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(spec_id, stage, run_timestamp) DO UPDATE SET consensus_ok = excluded.consensus_ok, degraded = excluded.degraded, synthesis_json = excluded.synthesis_json",
                    params!["SPEC-KIT-950", stage, ts, true, false, synthesis],
                )
                .and_then(|_| {
                    run_id = conn.last_insert_rowid();
                    conn.execute_batch("COMMIT")
                });
            if r.is_err() && !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            r
        });
        log.write(3, || {
            conn.execute(
                "INSERT INTO agent_outputs (run_id, agent_name, model_version, content, output_timestamp) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, "gemini", "gemini-2.5-pro", content, ts],
            )
            .map(drop)
        });
        i += 1;
    }
    let out = json!({
        "ops": log.ops,
        "busy": log.busy,
        "errors": log.errors,
    });
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &out).expect("host: output");
    stdout.flush().unwrap();
}

// ---------------------------------------------------------------------------------------
// The parent: scenarios and figures.

struct Host {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: std::thread::JoinHandle<String>,
}

/// Starts the host writer on `db`; returns once it has opened the database.
fn start_host(db: &Path) -> Host {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(HOST_ENV, db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the host writer");
    let stdin = child.stdin.take();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY", "host writer: {line}");
    let stderr = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    Host {
        child,
        stdin,
        stderr,
    }
}

struct HostRun {
    ops: Vec<(usize, u64, u64, u32)>,
    busy: Vec<(u64, usize, u64)>,
    errors: Vec<String>,
}

fn stop_host(mut host: Host) -> HostRun {
    drop(host.stdin.take());
    let mut stdout = String::new();
    host.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = host.child.wait().unwrap();
    let stderr = host.stderr.join().unwrap();
    assert!(status.success(), "host writer failed: {stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("host writer JSON");
    let ops = serde_json::from_value(v["ops"].clone()).unwrap();
    let busy = serde_json::from_value(v["busy"].clone()).unwrap();
    let errors = serde_json::from_value(v["errors"].clone()).unwrap();
    HostRun { ops, busy, errors }
}

/// Host figures over the writes that overlap [from, to] (Unix µs).
struct Figures {
    n: usize,
    per_second: f64,
    p50: f64,
    p99: f64,
    max: f64,
    busy: u64,
    errors: usize,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn figures(runs: &[(&HostRun, u64, u64)]) -> Figures {
    let mut lat = Vec::new();
    let mut finished = 0usize;
    let mut window_us = 0u64;
    let mut busy = 0u64;
    let mut errors = 0;
    for (run, from, to) in runs {
        window_us += to - from;
        for &(_, start, us, b) in &run.ops {
            let end = start + us;
            if start < *to && end > *from {
                lat.push(us);
                busy += u64::from(b);
            }
            if start >= *from && end <= *to {
                finished += 1;
            }
        }
        errors += run.errors.len();
    }
    lat.sort_unstable();
    Figures {
        n: lat.len(),
        per_second: finished as f64 / (window_us.max(1) as f64 / 1e6),
        p50: percentile(&lat, 50.0),
        p99: percentile(&lat, 99.0),
        max: percentile(&lat, 100.0),
        busy,
        errors,
    }
}

/// The three slowest host writes overlapping [from, to]: kind, start after `from`, latency.
fn slowest(label: &str, runs: &[(&HostRun, u64, u64)]) {
    let mut all: Vec<(u64, usize, f64)> = Vec::new();
    for (run, from, to) in runs {
        for &(kind, start, us, _) in &run.ops {
            if start < *to && start + us > *from {
                all.push((us, kind, (start as f64 - *from as f64) / 1000.0));
            }
        }
    }
    all.sort_by_key(|b| std::cmp::Reverse(b.0));
    let text: Vec<String> = all
        .iter()
        .take(3)
        .map(|(us, kind, at)| {
            format!(
                "{} {:.1} ms at +{at:.1} ms",
                KINDS[*kind],
                *us as f64 / 1000.0
            )
        })
        .collect();
    println!("  slowest host writes, {label}: {}", text.join("; "));
}

/// The whole run of a host writer (alone).
fn whole(run: &HostRun) -> (u64, u64) {
    let from = run.ops.first().map(|o| o.1).unwrap_or(0);
    let to = run.ops.last().map(|o| o.1 + o.2).unwrap_or(from);
    (from, to)
}

/// A workspace in `dir`: the policy, a tracker with every cleanup SPEC Done, an empty
/// evidence root; schedules off (jobs run only when the bench runs them).
fn workspace(dir: &Path) -> (PathBuf, PathBuf) {
    let db = dir.join("consensus_artifacts.db");
    std::fs::create_dir_all(dir.join("evidence")).unwrap();
    let specs: Vec<String> = (0..SPECS).map(|i| format!("SPEC-KIT-{i:03}")).collect();
    let rows: Vec<(&str, &str)> = specs.iter().map(|s| (s.as_str(), "Done")).collect();
    speckit_testkit::tracker::write_four_column(&dir.join("SPEC.md"), &rows).unwrap();
    let config = dir.join("speckit.toml");
    std::fs::write(
        &config,
        "[storage]\ndatabase_path = \"consensus_artifacts.db\"\n\
         [evidence]\nroot = \"evidence\"\ntracker_paths = [\"SPEC.md\"]\n\
         [retention]\narchive_after_days = 30\narchive_database_rows = true\n\
         [schedule]\ncleanup = \"off\"\nvacuum = \"off\"\nintegrity_check = \"off\"\n",
    )
    .unwrap();
    (config, db)
}

async fn start_engine(config: &Path) -> Engine {
    let mut options = EngineOptions::new(config);
    options.env.retain(|(k, _)| !k.starts_with("SPECKIT_"));
    Engine::start(options, speckit_hygiene::builtin_plugins())
        .await
        .expect("engine")
}

struct Job {
    duration_ms: f64,
    longest_step_ms: Option<f64>,
    data: Value,
    /// (Unix µs received, kind, data) of the job's plugin events.
    events: Vec<(u64, String, Value)>,
    from: u64,
    to: u64,
}

/// Runs `job` with the host writer on `db` before, during and after it.
async fn during(engine: &Engine, db: &Path, job: &str, lead: Duration) -> (Job, HostRun) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut receiver = engine.events().subscribe();
    let sink = events.clone();
    let collector = tokio::spawn(async move {
        loop {
            match receiver.recv().await {
                Ok(EngineEvent::Plugin { kind, data, .. }) => {
                    sink.lock().unwrap().push((now_us(), kind, data))
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    });
    let host = start_host(db);
    tokio::time::sleep(lead).await;
    let from = now_us();
    let started = Instant::now();
    let run = engine
        .run_job(job, JobTrigger::Manual, json!({"force": true}))
        .await
        .expect("job");
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let to = now_us();
    tokio::time::sleep(lead).await;
    let host = stop_host(host);
    collector.abort();
    assert!(run.error.is_none(), "{job}: {:?}", run.error);
    let report = run.report.expect("a report");
    assert!(report.errors.is_empty(), "{job}: {:?}", report.errors);
    let longest_step_ms = report.data.get("max_step_ms").and_then(Value::as_f64);
    let events = std::mem::take(&mut *events.lock().unwrap());
    (
        Job {
            duration_ms,
            longest_step_ms,
            data: report.data,
            events,
            from,
            to,
        },
        host,
    )
}

async fn alone(db: &Path, how_long: Duration) -> HostRun {
    let host = start_host(db);
    tokio::time::sleep(how_long).await;
    stop_host(host)
}

/// Inserts then deletes about `bytes` of large rows (after the migration, the space goes
/// to the freelist of an INCREMENTAL database), from a plain connection.
fn rebloat(db: &Path, bytes: u64) {
    let conn = Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let rows = (bytes / (16 * 1024 + 200)) as i64;
    conn.execute(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?1)
         INSERT INTO agent_executions (agent_id, spec_id, stage, phase_type, agent_name, spawned_at, response_text)
         SELECT printf('bloat-%08d', x), 'SPEC-KIT-990', 'spec-plan', 'regular_stage', 'gemini', datetime('now'), printf('%.*c', 16384, 'r') FROM n",
        params![rows],
    )
    .unwrap();
    conn.execute(
        "DELETE FROM agent_executions WHERE spec_id = 'SPEC-KIT-990'",
        [],
    )
    .unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
}

struct Row {
    name: String,
    job_ms: String,
    step_ms: String,
    host: Figures,
}

fn row(name: impl Into<String>, job_ms: String, step_ms: String, host: Figures) -> Row {
    Row {
        name: name.into(),
        job_ms,
        step_ms,
        host,
    }
}

/// Prints every BUSY the host saw, with our vacuum chunk steps around it.
fn busy_findings(label: &str, job: &Job, host: &HostRun) {
    for &(at, kind, waited) in &host.busy {
        println!(
            "FINDING {label}: host {} got SQLITE_BUSY at job +{:.1} ms after waiting {:.1} ms",
            KINDS[kind],
            (at as f64 - job.from as f64) / 1000.0,
            waited as f64 / 1000.0
        );
        for (t, kind, data) in &job.events {
            if t.abs_diff(at) < 6_000_000 {
                println!(
                    "  our event {kind} at job +{:.1} ms: {data}",
                    (*t as f64 - job.from as f64) / 1000.0
                );
            }
        }
    }
    for e in &host.errors {
        println!("FINDING {label}: host write failed: {e}");
    }
}

async fn bench(scale: &Scale) {
    let started = Instant::now();
    let mut rows = Vec::new();

    // The upstream-made bloated database, made once; every scenario gets a copy.
    let pristine_dir = tempfile::tempdir().unwrap();
    let pristine = pristine_dir.path().join("bloated.db");
    speckit_testkit::database::create_bloated(&pristine, scale.bloat_bytes, 3, &[], 0).unwrap();
    println!(
        "bloated database: {:.1} MiB (auto_vacuum NONE, nearly all free); host think time {:?} after each write",
        std::fs::metadata(&pristine).unwrap().len() as f64 / MIB as f64,
        THINK
    );

    // 1. Alone, on a copy of the bloated database (after the engine's start-up on it, as
    //    in every other scenario).
    {
        let dir = tempfile::tempdir().unwrap();
        let (config, db) = workspace(dir.path());
        std::fs::copy(&pristine, &db).unwrap();
        let engine = start_engine(&config).await;
        let host = alone(&db, scale.alone).await;
        engine.shutdown(Duration::from_secs(30)).await;
        let (from, to) = whole(&host);
        busy_findings(
            "alone",
            &Job {
                duration_ms: 0.0,
                longest_step_ms: None,
                data: Value::Null,
                events: Vec::new(),
                from,
                to,
            },
            &host,
        );
        slowest("alone, bloated db", &[(&host, from, to)]);
        rows.push(row(
            "alone, bloated db",
            "-".into(),
            "-".into(),
            figures(&[(&host, from, to)]),
        ));
    }

    // 2a. During the migration VACUUM, each on a fresh copy; pooled.
    {
        let mut runs = Vec::new();
        let mut jobs = Vec::new();
        for _ in 0..scale.migration_repeats {
            let dir = tempfile::tempdir().unwrap();
            let (config, db) = workspace(dir.path());
            std::fs::copy(&pristine, &db).unwrap();
            let engine = start_engine(&config).await;
            let (job, host) = during(&engine, &db, "vacuum", scale.lead).await;
            engine.shutdown(Duration::from_secs(30)).await;
            let report: VacuumReport = serde_json::from_value(job.data.clone()).unwrap();
            assert!(report.migrated, "the first vacuum migrates");
            println!(
                "migration: {:.1} MiB -> {:.1} KiB in {} ms (report), run_job {:.1} ms, max step {:.1} ms",
                report.bytes_before as f64 / MIB as f64,
                report.bytes_after as f64 / 1024.0,
                report.duration_ms,
                job.duration_ms,
                report.max_step_ms
            );
            busy_findings("migration", &job, &host);
            runs.push(host);
            jobs.push(job);
        }
        let windows: Vec<_> = runs
            .iter()
            .zip(&jobs)
            .map(|(h, j)| (h, j.from, j.to))
            .collect();
        let range = |f: &dyn Fn(&Job) -> f64| {
            let v: Vec<f64> = jobs.iter().map(f).collect();
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            if v.len() == 1 {
                format!("{lo:.1}")
            } else {
                format!("{lo:.1}-{hi:.1}")
            }
        };
        slowest("during migration", &windows);
        rows.push(row(
            format!("during migration VACUUM (x{})", jobs.len()),
            range(&|j| j.duration_ms),
            range(&|j| j.longest_step_ms.unwrap_or(f64::NAN)),
            figures(&windows),
        ));
    }

    // 2b. During an incremental vacuum: migrate (no host), bloat again, vacuum with the host.
    {
        let dir = tempfile::tempdir().unwrap();
        let (config, db) = workspace(dir.path());
        std::fs::copy(&pristine, &db).unwrap();
        let engine = start_engine(&config).await;
        engine
            .run_job("vacuum", JobTrigger::Manual, json!({"force": true}))
            .await
            .expect("migration");
        rebloat(&db, scale.bloat_bytes);
        let (job, host) = during(&engine, &db, "vacuum", scale.lead).await;
        engine.shutdown(Duration::from_secs(30)).await;
        let report: VacuumReport = serde_json::from_value(job.data.clone()).unwrap();
        assert!(!report.migrated);
        let chunk_us: Vec<u64> = job
            .events
            .iter()
            .filter(|(_, k, _)| k == "vacuum_chunk")
            .filter_map(|(_, _, d)| d["duration_us"].as_u64())
            .collect();
        println!(
            "incremental: {} pages freed in {} chunks, {} ms (report; paused {:.0} ms), run_job {:.1} ms, max step {:.1} ms, {} chunk events, busy retries {}",
            report.pages_freed,
            report.chunks,
            report.duration_ms,
            report.paused_ms,
            job.duration_ms,
            report.max_step_ms,
            chunk_us.len(),
            report.busy_retries
        );
        busy_findings("incremental", &job, &host);
        slowest("during incremental", &[(&host, job.from, job.to)]);
        rows.push(row(
            "during incremental vacuum",
            format!("{:.1}", job.duration_ms),
            format!("{:.1}", report.max_step_ms),
            figures(&[(&host, job.from, job.to)]),
        ));
    }
    drop(pristine_dir);

    // 3. The cleanup's database-row archiving: runs and executions older than 30 days of
    //    50 SPECs, all Done.
    {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let specs: Vec<String> = (0..SPECS).map(|i| format!("SPEC-KIT-{i:03}")).collect();
        let runs: Vec<(&str, &str, i64)> = (0..scale.runs_per_spec)
            .flat_map(|r| {
                specs.iter().map(move |s| {
                    (
                        s.as_str(),
                        ["spec-plan", "spec-tasks", "spec-implement"][r % 3],
                        31 + 3 * r as i64,
                    )
                })
            })
            .collect();
        let base = tempfile::tempdir().unwrap();
        let pristine = base.path().join("cleanup.db");
        let summary = speckit_testkit::database::create_bloated(
            &pristine,
            scale.cleanup_executions as u64 * (16 * 1024 + 200),
            scale.cleanup_executions,
            &runs,
            now_ms,
        )
        .unwrap();
        println!(
            "cleanup database: {:.1} MiB, {} runs, {} outputs, {} executions (16 KiB responses) across {SPECS} SPECs Done",
            std::fs::metadata(&pristine).unwrap().len() as f64 / MIB as f64,
            summary.live_runs,
            summary.live_outputs,
            summary.live_executions
        );
        {
            let dir = tempfile::tempdir().unwrap();
            let (config, db) = workspace(dir.path());
            std::fs::copy(&pristine, &db).unwrap();
            let engine = start_engine(&config).await;
            let host = alone(&db, scale.alone).await;
            engine.shutdown(Duration::from_secs(30)).await;
            let (from, to) = whole(&host);
            for e in &host.errors {
                println!("FINDING alone (cleanup db): host write failed: {e}");
            }
            slowest("alone, cleanup db", &[(&host, from, to)]);
            rows.push(row(
                "alone, cleanup db",
                "-".into(),
                "-".into(),
                figures(&[(&host, from, to)]),
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let (config, db) = workspace(dir.path());
        std::fs::copy(&pristine, &db).unwrap();
        let engine = start_engine(&config).await;
        let (job, host) = during(&engine, &db, "cleanup", scale.lead).await;
        engine.shutdown(Duration::from_secs(30)).await;
        println!(
            "cleanup: archived {} rows, deleted {} rows into {} archives, {} ms (report), run_job {:.1} ms",
            job.data["archived_rows"],
            job.data["deleted_rows"],
            job.data["archives_written"],
            job.data["duration_ms"],
            job.duration_ms
        );
        assert!(
            job.data["deleted_rows"].as_u64().unwrap_or(0) > 0,
            "the cleanup archived rows"
        );
        busy_findings("cleanup", &job, &host);
        slowest("during cleanup", &[(&host, job.from, job.to)]);
        rows.push(row(
            "during cleanup (row archiving)",
            format!("{:.1}", job.duration_ms),
            "n/a".into(),
            figures(&[(&host, job.from, job.to)]),
        ));
    }

    println!();
    println!(
        "| scenario | our job (ms) | our longest step (ms) | host writes | host writes/s | p50 (ms) | p99 (ms) | max (ms) | BUSY | failed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let h = &r.host;
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {} |",
            r.name, r.job_ms, r.step_ms, h.n, h.per_second, h.p50, h.p99, h.max, h.busy, h.errors
        );
    }
    for r in rows.iter().filter(|r| r.name.starts_with("alone")) {
        assert!(r.host.n > 0, "{}: the host wrote nothing", r.name);
    }
    println!(
        "\n{} run, {:.1} s",
        if scale.full { "full" } else { "smoke" },
        started.elapsed().as_secs_f64()
    );
}
