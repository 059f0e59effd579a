//! Benchmark: `stats` (the whole-root measurement behind `speckit-hygiene stats`) against
//! `du -sb` and `find -type f -printf '%s\n'` on the same generated tree, in the same run.
//!
//! `cargo bench -p speckit-retention --bench stats` builds a tree of 1,000,000 small files
//! (500 SPECs x 2 halves x 999 files, plus 1,000 non-SPEC files) in a temporary folder,
//! warms the page cache with one run of each tool, then times `ROUNDS` alternating runs of
//! each and prints min and median. Files are sparse (`set_len`): apparent sizes of 200 B to
//! 20 KiB but no data blocks, so the tree costs inodes, not gigabytes; every tool measured
//! only stats files, so their content does not matter. Without `--bench` (as
//! `cargo test --all-targets` runs it) it does the same on 210 files, once.

use speckit_engine::Policy;
use speckit_retention::stats::{collect, Scope, SpecNames, StatsReport};
use speckit_retention::EvidencePolicy;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SPECS: usize = 500;
const NON_SPEC_FILES: usize = 1_000;
const ROUNDS: usize = 5;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let files_per_half = if full { 999 } else { 2 };
    let rounds = if full { ROUNDS } else { 1 };

    // STATS_BENCH_TREE=DIR keeps the generated tree in DIR and reuses it on the next run
    // (generating and removing a million files takes most of a run's time).
    let kept = std::env::var_os("STATS_BENCH_TREE").map(PathBuf::from);
    let temp = match &kept {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("speckit-stats-bench-")
                .tempdir()
                .expect("a temporary folder"),
        ),
    };
    let base = kept
        .clone()
        .unwrap_or_else(|| temp.as_ref().unwrap().path().to_path_buf());
    let root = base.join(if full {
        "evidence-1m"
    } else {
        "evidence-smoke"
    });
    let marker = base.join(if full { "done-1m" } else { "done-smoke" });
    let started = Instant::now();
    let (files, bytes) = match std::fs::read_to_string(&marker) {
        Ok(text) => {
            let (f, b) = text.trim().split_once(' ').expect("marker: files bytes");
            println!("reusing the tree under {}", root.display());
            (f.parse().unwrap(), b.parse().unwrap())
        }
        Err(_) => {
            let _ = std::fs::remove_dir_all(&root);
            let (files, bytes) = if full {
                generate(&root, SPECS, files_per_half, NON_SPEC_FILES)
            } else {
                generate(&root, 50, files_per_half, 10)
            };
            std::fs::write(&marker, format!("{files} {bytes}")).expect("marker");
            println!(
                "generated {files} files ({bytes} apparent bytes) in {:.1} s under {}",
                started.elapsed().as_secs_f64(),
                root.display()
            );
            (files, bytes)
        }
    };

    let mut policy = Policy::default();
    policy
        .sections
        .update::<EvidencePolicy>(|s| s.root = root.clone());
    let run_stats = || {
        let t = Instant::now();
        let report = collect(&policy, &Scope::All, &SpecNames::canonical()).expect("stats");
        (t.elapsed(), report)
    };

    // Warm-up: one run of each, so every tool meets the same warm page cache.
    let (_, report) = run_stats();
    // Before du and find run: their captured output would count in this process's peak.
    let stats_peak_kib = peak_rss_kib();
    let du_total = du_sb(&root).map(|(_, total)| total);
    let find_total = find_sum(&root).map(|(_, total)| total);
    check(&report, files, bytes, find_total);

    let (mut stats_times, mut du_times, mut find_times) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        stats_times.push(run_stats().0);
        if let Some((t, _)) = du_sb(&root) {
            du_times.push(t);
        }
        if let Some((t, _)) = find_sum(&root) {
            find_times.push(t);
        }
    }
    println!("rounds: {rounds} (after one warm-up run each; warm page cache)");
    print_times("stats (speckit-retention collect)", &stats_times);
    print_times("du -sb", &du_times);
    print_times("find -type f -printf '%s\\n' (summed)", &find_times);
    if let (Some(s), Some(d)) = (median(&stats_times), median(&du_times)) {
        println!(
            "stats / du -sb (median): {:.2}x",
            s.as_secs_f64() / d.as_secs_f64()
        );
    }
    println!(
        "totals: stats {} bytes in {} files; find {}; du -sb {} (du also counts the folders' own sizes)",
        report.root_total.map(|u| u.bytes).unwrap_or(0),
        report.root_total.map(|u| u.files).unwrap_or(0),
        find_total.map_or("n/a".into(), |t| t.to_string()),
        du_total.map_or("n/a".into(), |t| t.to_string()),
    );
    if let Some(kib) = stats_peak_kib {
        println!("peak resident memory after generating and measuring the tree: {kib} KiB");
    }
    if let Some(temp) = temp {
        let started = Instant::now();
        drop(temp);
        println!(
            "removed the tree in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Writes the tree with two threads (the machine has two cores); returns files and bytes.
fn generate(root: &Path, specs: usize, files_per_half: usize, non_spec: usize) -> (u64, u64) {
    let halves = ["commands", "consensus"];
    let chunks: Vec<Vec<usize>> = (0..2)
        .map(|t| (0..specs).filter(|s| s % 2 == t).collect())
        .collect();
    let totals: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                scope.spawn(move || {
                    let (mut files, mut bytes) = (0u64, 0u64);
                    for &s in chunk {
                        for half in halves {
                            let dir = root.join(half).join(format!("SPEC-BENCH-{s:03}"));
                            std::fs::create_dir_all(&dir).expect("spec folder");
                            for i in 0..files_per_half {
                                let len = size_for(s, i);
                                let name = format!("SPEC-BENCH-{s:03}_plan_{i:04}.json");
                                sparse(&dir.join(name), len);
                                files += 1;
                                bytes += len;
                            }
                        }
                    }
                    (files, bytes)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (mut files, mut bytes) = totals
        .iter()
        .fold((0, 0), |(f, b), (tf, tb)| (f + tf, b + tb));
    let other = root.join("costs");
    std::fs::create_dir_all(&other).expect("costs folder");
    for i in 0..non_spec {
        let len = size_for(i, 7);
        sparse(&other.join(format!("cost_{i:04}.json")), len);
        files += 1;
        bytes += len;
    }
    (files, bytes)
}

/// 200 B to about 20 KiB, varied but reproducible.
fn size_for(spec: usize, i: usize) -> u64 {
    let x = (spec as u64)
        .wrapping_mul(0x9E37_79B9)
        .wrapping_add(i as u64 * 7919);
    200 + x % 20_000
}

fn sparse(path: &Path, len: u64) {
    let file = std::fs::File::create(path).expect("bench file");
    file.set_len(len).expect("bench file size");
}

fn check(report: &StatsReport, files: u64, bytes: u64, find_total: Option<u64>) {
    let total = report.root_total.expect("whole-root stats");
    assert_eq!(
        (total.files, total.bytes),
        (files, bytes),
        "stats disagrees with the generator"
    );
    if let Some(find) = find_total {
        assert_eq!(find, bytes, "find disagrees with the generator");
    }
    assert!(report.complete && report.skipped.is_empty());
}

/// `du -sb ROOT`: its time and total; `None` when `du` is missing.
fn du_sb(root: &Path) -> Option<(Duration, u64)> {
    let t = Instant::now();
    let out = Command::new("du").arg("-sb").arg(root).output().ok()?;
    let elapsed = t.elapsed();
    let text = String::from_utf8(out.stdout).ok()?;
    let total = text.split_whitespace().next()?.parse().ok()?;
    Some((elapsed, total))
}

/// `find ROOT -type f -printf '%s\n'`, summed here: its time and total.
fn find_sum(root: &Path) -> Option<(Duration, u64)> {
    let t = Instant::now();
    let out = Command::new("find")
        .arg(root)
        .args(["-type", "f", "-printf", "%s\\n"])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let total = text.lines().filter_map(|l| l.parse::<u64>().ok()).sum();
    Some((t.elapsed(), total))
}

fn median(times: &[Duration]) -> Option<Duration> {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied()
}

fn print_times(label: &str, times: &[Duration]) {
    match (times.iter().min(), median(times)) {
        (Some(min), Some(med)) => println!(
            "{label}: min {:.3} s, median {:.3} s",
            min.as_secs_f64(),
            med.as_secs_f64()
        ),
        _ => println!("{label}: not available on this machine"),
    }
}

/// VmHWM from /proc/self/status (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
