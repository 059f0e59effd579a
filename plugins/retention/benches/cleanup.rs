//! Cleanup benchmark: a generated tree of 1 million files across 500 SPECs (all finished,
//! all older than the archive age), then in the same run:
//!
//! 1. plan time (`plan::build`: walk, ages, tracker, database lookups);
//! 2. archive-and-delete time (`execute::run`: tar + zstd -3 per SPEC, fsync, read back and
//!    check every member's sha256, rename, fsync, record the manifest, delete the sources);
//! 3. the baseline on an identical tree: `tar -cf - commands consensus | zstd -3` then
//!    `find commands consensus -type f -delete` (no hashes, no read-back, no fsync);
//! 4. the floor of deleting alone, on two more identical trees: `find -print0 | xargs -0
//!    -P <n> rm -f` with n = the cores, and n = the deletions ours has in flight
//!    (workers x delete threads);
//! 5. peak memory (VmHWM of this process, reset before the pass) of plan and execution.
//!
//! Every tree is written, then `sync`ed before anything is timed: the files cleanup meets
//! are old, long on disk (deleting a file whose blocks were never written costs less).
//! Target: ours <= 0.7x the baseline (tar | zstd plus find -delete) of the same run; the
//! load average is printed beside each figure (the machine may be shared).
//!
//! `cargo bench -p speckit-retention --bench cleanup` runs it for real (minutes);
//! without `--bench` (as `cargo test` runs bench binaries) it does a tiny smoke run.
//! `SPECKIT_BENCH_DIR` chooses where the trees go (default: the system temp folder);
//! `SPECKIT_BENCH_SPECS` the number of SPECs (2,000 files each; default 500),
//! `SPECKIT_BENCH_WORKERS` and `SPECKIT_BENCH_DELETE_THREADS` override ours (defaults: the
//! cores, [`execute::DEFAULT_DELETE_THREADS`]); `SPECKIT_BENCH_PHASES=1` adds a breakdown of
//! the units' time (archiving, deleting) taken through the fault hook (costs a little).

use chrono::Utc;
use speckit_engine::engine::storage_options;
use speckit_engine::policy::load_policy;
use speckit_engine::Storage;
use speckit_retention::execute::{self, ExecRequest};
use speckit_retention::faults::{Faults, Step};
use speckit_retention::plan::{self, PlanRequest};
use speckit_retention::tracker::Trackers;
use speckit_retention::EvidencePolicy;
use speckit_retention::RetentionPolicy;
use speckit_testkit::bulk::{self, BulkTree};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The target: ours over the baseline, same run.
const TARGET_RATIO: f64 = 0.7;

fn main() {
    let real = std::env::args().any(|a| a == "--bench");
    let (specs, per_spec) = if real {
        (env_usize("SPECKIT_BENCH_SPECS").unwrap_or(500), 2000)
    } else {
        (3, 20)
    };
    let base = std::env::var_os("SPECKIT_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("speckit-cleanup-bench-")
        .tempdir_in(base)
        .expect("bench folder");
    let now = Utc::now();
    let tree = BulkTree {
        specs,
        files_per_spec: per_spec,
        file_bytes: 400,
        now,
        min_age_days: 40,
        max_age_days: 400,
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let workers = env_usize("SPECKIT_BENCH_WORKERS").unwrap_or(threads);
    let delete_threads =
        env_usize("SPECKIT_BENCH_DELETE_THREADS").unwrap_or(execute::DEFAULT_DELETE_THREADS);
    println!(
        "cleanup benchmark: {} files across {specs} SPECs, ~{} bytes each, {threads} cores, {workers} workers x {delete_threads} delete threads{}",
        specs * per_spec,
        tree.file_bytes,
        if real {
            ""
        } else {
            " (smoke run; pass --bench for the real one)"
        }
    );
    println!("load average at start: {}", load_average());
    let phases = (std::env::var_os("SPECKIT_BENCH_PHASES").is_some_and(|v| v == "1"))
        .then(|| Phases::new(specs));

    // --- Ours -------------------------------------------------------------------------
    let ws = dir.path().join("ours");
    let root = ws.join("evidence");
    let t = Instant::now();
    let generated = bulk::generate(&root, &tree, threads).expect("generate");
    sync();
    println!(
        "generated {} files ({:.1} MiB) and synced in {:.1?}",
        generated.files,
        generated.bytes as f64 / 1048576.0,
        t.elapsed()
    );
    let statuses: Vec<(String, &str)> = (0..specs).map(|i| (bulk::spec_id(i), "Done")).collect();
    let rows: Vec<(&str, &str)> = statuses.iter().map(|(s, st)| (s.as_str(), *st)).collect();
    speckit_testkit::tracker::write_four_column(&ws.join("SPEC.md"), &rows).expect("tracker");
    std::fs::write(
        ws.join("speckit.toml"),
        "[storage]\ndatabase_path = \"db.sqlite\"\n[evidence]\nroot = \"evidence\"\ntracker_paths = [\"SPEC.md\"]\n[retention]\nmax_removal_fraction = 1.0\n",
    )
    .expect("config");
    let policy = load_policy(
        &ws.join("speckit.toml"),
        true,
        Vec::<(String, String)>::new(),
        &speckit_retention::RetentionPlugin::policy_shape(),
    )
    .expect("policy")
    .policy;
    let storage = Storage::open(storage_options(&policy)).expect("storage");
    let trackers =
        Trackers::load(&policy.section::<EvidencePolicy>().tracker_paths).expect("trackers");
    // The tree was just written: plan and baseline both run with a warm page cache.
    let db_before = database_bytes(&storage);

    reset_peak_memory();
    let t = Instant::now();
    let plan = plan::build(&PlanRequest {
        root: &policy.section::<EvidencePolicy>().root,
        policy: &policy,
        trackers: &trackers,
        now,
        only: None,
        storage: &storage,
    })
    .expect("plan");
    let plan_time = t.elapsed();
    let plan_peak = peak_memory_kib();
    let figures = plan.figures();
    assert_eq!(
        figures.archive_files, generated.files,
        "every file is old enough"
    );

    let load_ours = load_average();
    let t = Instant::now();
    let outcome = execute::run(&ExecRequest {
        plan: &plan,
        storage: &storage,
        now,
        zstd_level: policy.section::<RetentionPolicy>().zstd_level,
        faults: phases.as_ref().map(|p| p as &dyn Faults),
        remote: Err("no offload in this benchmark"),
        cancelled: &|| false,
        progress: &|_, _| {},
        workers,
        delete_threads,
        keep_actions: false,
    });
    let exec_time = t.elapsed();
    let pass_peak = peak_memory_kib();
    let db_after = database_bytes(&storage);
    assert!(
        outcome.errors.is_empty(),
        "{:?}",
        &outcome.errors[..outcome.errors.len().min(5)]
    );
    assert_eq!(outcome.figures.deleted_files, generated.files);
    let archives_bytes = outcome.figures.archive_bytes_written;
    let records: i64 = storage
        .read_blocking(|c| c.query_row("SELECT count(*) FROM hygiene_archives", [], |r| r.get(0)))
        .expect("records");
    drop(plan);
    storage.close();

    println!("\nours (speckit-hygiene retention):");
    println!(
        "  host database:     {:.1} KiB before, {:.1} KiB after archiving {} files (+{:.1} KiB; {records} archive rows, manifests in sidecars)",
        db_before as f64 / 1024.0,
        db_after as f64 / 1024.0,
        generated.files,
        (db_after - db_before) as f64 / 1024.0
    );
    println!(
        "  plan:              {:>10.2?}  ({} actions)",
        plan_time, figures.archive_files
    );
    println!(
        "  archive + delete:  {:>10.2?}  ({} archives, {:.1} MiB, sha256 verified read-back, fsync, manifest recorded; load before {load_ours})",
        exec_time,
        outcome.figures.archives_written,
        archives_bytes as f64 / 1048576.0
    );
    if let Some(p) = &phases {
        p.print(workers);
    }
    println!("  full pass:         {:>10.2?}", plan_time + exec_time);
    println!(
        "  peak memory (VmHWM): plan {}, plan + execution {}",
        fmt_kib(plan_peak),
        fmt_kib(pass_peak)
    );
    std::fs::remove_dir_all(&ws).ok();

    // --- Baseline ---------------------------------------------------------------------
    let base_root = dir.path().join("baseline");
    bulk::generate(&base_root, &tree, threads).expect("generate baseline");
    sync();
    let out = dir.path().join("baseline.tar.zst");
    let load_baseline = load_average();
    let t = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg("tar -C \"$1\" -cf - commands consensus | zstd -3 -q -f -o \"$2\"")
        .arg("sh")
        .arg(&base_root)
        .arg(&out)
        .status();
    let tar_time = t.elapsed();
    let baseline = match status {
        Ok(s) if s.success() => {
            let t = Instant::now();
            let deleted = Command::new("find")
                .arg(base_root.join("commands"))
                .arg(base_root.join("consensus"))
                .args(["-type", "f", "-delete"])
                .status()
                .expect("find");
            let find_time = t.elapsed();
            assert!(deleted.success());
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            println!("\nbaseline (same files, same run; load before {load_baseline}):");
            println!(
                "  tar | zstd -3:     {:>10.2?}  ({:.1} MiB)",
                tar_time,
                size as f64 / 1048576.0
            );
            println!("  find -delete:      {:>10.2?}", find_time);
            println!("  total:             {:>10.2?}", tar_time + find_time);
            Some((tar_time + find_time, find_time))
        }
        other => {
            println!("\nbaseline skipped: tar or zstd unavailable ({other:?})");
            None
        }
    };
    std::fs::remove_dir_all(&base_root).ok();

    // --- Floor: deleting alone, in parallel ---------------------------------------------
    println!("\nfloor: parallel rm of an identical tree (no archive at all):");
    let mut floors = Vec::new();
    let mut ns = vec![threads, workers * delete_threads];
    ns.dedup();
    for n in ns {
        let floor_root = dir.path().join(format!("floor-{n}"));
        bulk::generate(&floor_root, &tree, threads).expect("generate floor tree");
        sync();
        let load = load_average();
        let t = Instant::now();
        let ok = Command::new("sh")
            .arg("-c")
            .arg("find \"$1/commands\" \"$1/consensus\" -type f -print0 | xargs -0 -n 256 -P \"$2\" rm -f")
            .arg("sh")
            .arg(&floor_root)
            .arg(n.to_string())
            .status()
            .is_ok_and(|s| s.success());
        let took = t.elapsed();
        assert!(ok, "parallel rm failed");
        println!("  xargs -P {n:<3} rm -f: {took:>10.2?}  (load before {load})");
        floors.push((n, took));
        std::fs::remove_dir_all(&floor_root).ok();
    }

    println!("\nresults (load average now {}):", load_average());
    if let Some((total, find_time)) = baseline {
        let ratio = exec_time.as_secs_f64() / total.as_secs_f64().max(1e-9);
        println!(
            "  ours / baseline (archive + delete vs tar | zstd + find -delete): {ratio:.2}x, target <= {TARGET_RATIO:.2}x {}",
            if ratio <= TARGET_RATIO { "met" } else { "NOT met" }
        );
        for (n, took) in &floors {
            println!(
                "  floor xargs -P {n} rm / find -delete: {:.2}x; ours / that floor: {:.2}x",
                took.as_secs_f64() / find_time.as_secs_f64().max(1e-9),
                exec_time.as_secs_f64() / took.as_secs_f64().max(1e-9)
            );
        }
    }
    let bar = Duration::from_secs(300);
    println!(
        "\nfull pass {} the 5-minute bar",
        if plan_time + exec_time < bar {
            "is under"
        } else {
            "is OVER"
        }
    );
}

/// Resets VmHWM (Linux: writing 5 to clear_refs), so the peak covers only what follows.
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn fmt_kib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

/// The database's size as SQLite sees it (`page_count * page_size`, WAL frames included).
fn database_bytes(storage: &Storage) -> i64 {
    storage
        .read_blocking(|c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            Ok(pages * size)
        })
        .expect("database size")
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok().filter(|n| *n > 0)
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

/// Writes every dirty page to disk, so timing starts from files that are on disk.
fn sync() {
    let ok = Command::new("sync").status().is_ok_and(|s| s.success());
    assert!(ok, "sync failed");
}

/// Where each unit's time goes, from the fault hook's steps: from its first source read
/// to its record (archiving: read, tar + zstd, fsync, read-back check, rename, sidecar),
/// and from its record to its last folder fsync (deleting its sources).
struct Phases {
    start: Instant,
    first_read: Vec<AtomicU64>,
    recorded: Vec<AtomicU64>,
    last_sync: Vec<AtomicU64>,
}

impl Phases {
    fn new(specs: usize) -> Self {
        let v = |x| (0..specs).map(|_| AtomicU64::new(x)).collect();
        Self {
            start: Instant::now(),
            first_read: v(u64::MAX),
            recorded: v(0),
            last_sync: v(0),
        }
    }

    /// The SPEC number in a path (`.../SPEC-BULK-0042/...`).
    fn unit(path: &Path) -> Option<usize> {
        let s = path.to_str()?;
        let at = s.find("SPEC-BULK-")? + "SPEC-BULK-".len();
        s.get(at..at + 4)?.parse().ok()
    }

    fn print(&self, workers: usize) {
        let secs = |v: u64| v as f64 / 1e9;
        let (mut archiving, mut deleting) = (0.0, 0.0);
        for i in 0..self.first_read.len() {
            let (r, c, s) = (
                self.first_read[i].load(Ordering::Relaxed),
                self.recorded[i].load(Ordering::Relaxed),
                self.last_sync[i].load(Ordering::Relaxed),
            );
            if r != u64::MAX && c >= r && s >= c {
                archiving += secs(c - r);
                deleting += secs(s - c);
            }
        }
        println!(
            "  phases, summed over the units ({workers} at once): archiving {archiving:.2} s, deleting sources {deleting:.2} s"
        );
    }
}

impl Faults for Phases {
    fn check(&self, step: Step, path: &Path) -> std::io::Result<()> {
        let Some(i) = Self::unit(path).filter(|i| *i < self.first_read.len()) else {
            return Ok(());
        };
        let t = self.start.elapsed().as_nanos() as u64;
        match step {
            Step::ReadSource => {
                self.first_read[i].fetch_min(t, Ordering::Relaxed);
            }
            Step::RecordArchive => {
                self.recorded[i].fetch_max(t, Ordering::Relaxed);
            }
            Step::SyncDir => {
                self.last_sync[i].fetch_max(t, Ordering::Relaxed);
            }
            _ => {}
        }
        Ok(())
    }
}
