//! Large evidence trees, fast, for benchmarks: e.g. 1 million small files across 500 SPECs
//! (`SPEC-BULK-0000` ...), half under `commands/`, half under `consensus/`, each named with
//! the timestamp of when it was "made" (upstream's `YYYYMMDD_HHMMSS` telemetry style), so
//! no per-file `utime` call is needed: cleanup reads a file's age from its name.
//!
//! Content is deterministic (same arguments, same bytes) and varied enough that archives
//! compress like real JSON evidence rather than to nothing.

use chrono::{DateTime, Duration, Utc};
use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What to generate.
#[derive(Debug, Clone)]
pub struct BulkTree {
    pub specs: usize,
    pub files_per_spec: usize,
    /// Approximate bytes per file.
    pub file_bytes: usize,
    pub now: DateTime<Utc>,
    /// File ages are spread over `[min_age_days, max_age_days)`.
    pub min_age_days: i64,
    pub max_age_days: i64,
}

/// What was generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BulkStats {
    pub files: u64,
    pub bytes: u64,
}

/// The SPEC-ID of SPEC number `i`.
pub fn spec_id(i: usize) -> String {
    format!("SPEC-BULK-{i:04}")
}

const STAGES: [&str; 6] = ["plan", "tasks", "implement", "validate", "audit", "unlock"];

/// Writes the tree under `root` with `threads` writers; returns the file and byte counts.
pub fn generate(root: &Path, tree: &BulkTree, threads: usize) -> io::Result<BulkStats> {
    let next = AtomicUsize::new(0);
    let results: Vec<io::Result<BulkStats>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut stats = BulkStats::default();
                    loop {
                        let s = next.fetch_add(1, Ordering::Relaxed);
                        if s >= tree.specs {
                            return Ok(stats);
                        }
                        let one = spec(root, tree, s)?;
                        stats.files += one.files;
                        stats.bytes += one.bytes;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("generator thread panicked")))
            })
            .collect()
    });
    let mut total = BulkStats::default();
    for r in results {
        let r = r?;
        total.files += r.files;
        total.bytes += r.bytes;
    }
    Ok(total)
}

fn spec(root: &Path, tree: &BulkTree, s: usize) -> io::Result<BulkStats> {
    let id = spec_id(s);
    let dirs = [
        root.join("commands").join(&id),
        root.join("consensus").join(&id),
    ];
    for d in &dirs {
        fs::create_dir_all(d)?;
    }
    let span_secs = ((tree.max_age_days - tree.min_age_days).max(1)) * 86_400;
    let mut stats = BulkStats::default();
    let mut body = Vec::with_capacity(tree.file_bytes + 128);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (s as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
    for i in 0..tree.files_per_spec {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let age =
            Duration::days(tree.min_age_days) + Duration::seconds((x % span_secs as u64) as i64);
        let made = tree.now - age;
        let stage = STAGES[i % STAGES.len()];
        let name = format!(
            "{id}_{stage}_telemetry_{}_{i:05}.json",
            made.format("%Y%m%d_%H%M%S")
        );
        body.clear();
        body.extend_from_slice(
            format!(
                "{{\"spec_id\":\"{id}\",\"stage\":\"{stage}\",\"seq\":{i},\"timestamp\":\"{}\",\"payload\":\"",
                made.to_rfc3339()
            )
            .as_bytes(),
        );
        // Word-like filler: compresses about as well as agent output does.
        while body.len() + 3 < tree.file_bytes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let word = WORDS[(x % WORDS.len() as u64) as usize];
            body.extend_from_slice(word.as_bytes());
            body.push(b' ');
        }
        body.extend_from_slice(b"\"}\n");
        fs::write(dirs[i % 2].join(name), &body)?;
        stats.files += 1;
        stats.bytes += body.len() as u64;
    }
    Ok(stats)
}

const WORDS: [&str; 32] = [
    "agent",
    "consensus",
    "synthesis",
    "stage",
    "plan",
    "tasks",
    "validate",
    "implement",
    "gemini",
    "claude",
    "gpt",
    "verdict",
    "approved",
    "degraded",
    "retry",
    "timeout",
    "evidence",
    "telemetry",
    "spec",
    "kit",
    "review",
    "conflict",
    "resolution",
    "quality",
    "gate",
    "audit",
    "unlock",
    "the",
    "of",
    "and",
    "with",
    "0x3f2a",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_what_it_says_deterministically() {
        let tree = BulkTree {
            specs: 3,
            files_per_spec: 10,
            file_bytes: 300,
            now: chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 1, 0, 0, 0).unwrap(),
            min_age_days: 40,
            max_age_days: 400,
        };
        let a = tempfile_dir();
        let b = tempfile_dir();
        let sa = generate(&a, &tree, 2).unwrap();
        let sb = generate(&b, &tree, 1).unwrap();
        assert_eq!(sa, sb);
        assert_eq!(sa.files, 30);
        let name = fs::read_dir(a.join("commands/SPEC-BULK-0001"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name();
        assert_eq!(
            fs::read(a.join("commands/SPEC-BULK-0001").join(&name)).unwrap(),
            fs::read(b.join("commands/SPEC-BULK-0001").join(&name)).unwrap()
        );
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!(
            "speckit-bulk-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::create_dir_all(&p).unwrap();
        p
    }
}
