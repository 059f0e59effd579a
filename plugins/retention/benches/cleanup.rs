//! Cleanup benchmark: a generated tree of 1 million files across 500 SPECs (all finished,
//! all older than the archive age), then in the same run:
//!
//! 1. plan time (`plan::build`: walk, ages, tracker, database lookups);
//! 2. archive-and-delete time (`execute::run`: tar + zstd -3 per SPEC, fsync, read back and
//!    check every member's sha256, rename, fsync, record the manifest, delete the sources);
//! 3. the baseline on an identical tree: `tar -cf - commands consensus | zstd -3` then
//!    `find commands consensus -type f -delete` (no hashes, no read-back, no fsync);
//! 4. peak memory (VmHWM of this process, reset before the pass) of plan and execution.
//!
//! `cargo bench -p speckit-retention --bench cleanup` runs it for real (minutes);
//! without `--bench` (as `cargo test` runs bench binaries) it does a tiny smoke run.
//! `SPECKIT_BENCH_DIR` chooses where the trees go (default: the system temp folder).

use chrono::Utc;
use speckit_engine::engine::storage_options;
use speckit_engine::policy::load_policy;
use speckit_engine::Storage;
use speckit_retention::execute::{self, ExecRequest};
use speckit_retention::plan::{self, PlanRequest};
use speckit_retention::tracker::Trackers;
use speckit_retention::EvidencePolicy;
use speckit_retention::RetentionPolicy;
use speckit_testkit::bulk::{self, BulkTree};
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    let real = std::env::args().any(|a| a == "--bench");
    let (specs, per_spec) = if real { (500, 2000) } else { (3, 20) };
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
    println!(
        "cleanup benchmark: {} files across {specs} SPECs, ~{} bytes each, {threads} cores{}",
        specs * per_spec,
        tree.file_bytes,
        if real {
            ""
        } else {
            " (smoke run; pass --bench for the real one)"
        }
    );

    // --- Ours -------------------------------------------------------------------------
    let ws = dir.path().join("ours");
    let root = ws.join("evidence");
    let t = Instant::now();
    let generated = bulk::generate(&root, &tree, threads).expect("generate");
    println!(
        "generated {} files ({:.1} MiB) in {:.1?}",
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

    let t = Instant::now();
    let outcome = execute::run(&ExecRequest {
        plan: &plan,
        storage: &storage,
        now,
        zstd_level: policy.section::<RetentionPolicy>().zstd_level,
        faults: None,
        remote: Err("no offload in this benchmark"),
        cancelled: &|| false,
        progress: &|_, _| {},
        workers: threads,
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
        "  archive + delete:  {:>10.2?}  ({} archives, {:.1} MiB, sha256 verified read-back, fsync, manifest recorded)",
        exec_time,
        outcome.figures.archives_written,
        archives_bytes as f64 / 1048576.0
    );
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
    let out = dir.path().join("baseline.tar.zst");
    let t = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg("tar -C \"$1\" -cf - commands consensus | zstd -3 -q -f -o \"$2\"")
        .arg("sh")
        .arg(&base_root)
        .arg(&out)
        .status();
    let tar_time = t.elapsed();
    match status {
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
            println!("\nbaseline (same files, same run):");
            println!(
                "  tar | zstd -3:     {:>10.2?}  ({:.1} MiB)",
                tar_time,
                size as f64 / 1048576.0
            );
            println!("  find -delete:      {:>10.2?}", find_time);
            println!("  total:             {:>10.2?}", tar_time + find_time);
            println!(
                "\nours / baseline (archive + delete): {:.2}x",
                exec_time.as_secs_f64() / (tar_time + find_time).as_secs_f64().max(1e-9)
            );
        }
        other => println!("\nbaseline skipped: tar or zstd unavailable ({other:?})"),
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
