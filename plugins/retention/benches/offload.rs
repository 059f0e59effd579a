//! Offload benchmark: 500 recorded archives of 256 KiB (incompressible, like zstd output)
//! offloaded by a real cleanup run to a moto S3 server on loopback, and in the same run the
//! baseline: boto3's `upload_file` of the same files to another bucket of the same server
//! (one after the other, and on 4 threads), from a small Python script.
//!
//! The cleanup's figure covers every step of an offload, not just the upload: the local
//! file's check, the upload (hashing what is sent), the full read-back and sha256 check,
//! the database record, the local delete and its folder's fsync; SPECs on 4 workers.
//! The baseline only uploads.
//!
//! `cargo bench -p speckit-retention --bench offload` runs it for real; without `--bench`
//! (as `cargo test` runs bench binaries) it does a smoke run of 5 archives. Needs moto
//! (`pip install 'moto[server]'`, installed by `.ci/run`); without it, it says so and
//! stops (in CI, where `CI` is set, it fails).

use chrono::Utc;
use sha2::Digest;
use speckit_engine::engine::storage_options;
use speckit_engine::policy::load_policy;
use speckit_engine::Storage;
use speckit_retention::archive::Manifest;
use speckit_retention::job::{cleanup_blocking, CleanupOptions};
use speckit_retention::RetentionPlugin;
use speckit_testkit::moto::{http, Moto};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ARCHIVE_BYTES: usize = 256 * 1024;
const WORKERS: usize = 4;

fn main() {
    let real = std::env::args().any(|a| a == "--bench");
    let count = if real { 500 } else { 5 };
    let Some(mut moto) = Moto::start() else {
        println!("offload benchmark skipped: moto is not installed");
        return;
    };
    std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
    std::env::set_var("AWS_REGION", "us-east-1");
    for bucket in ["offload", "baseline"] {
        http(moto.port, "PUT", &format!("/{bucket}")).expect("moto answers");
    }
    let dir = tempfile::Builder::new()
        .prefix("speckit-offload-bench-")
        .tempdir()
        .expect("bench folder");
    let root = dir.path().join("evidence");
    let specs: Vec<String> = (0..count).map(|i| format!("SPEC-BENCH-{i:03}")).collect();
    let archives = write_archives(&root, &specs);
    let total: u64 = archives.iter().map(|a| a.2).sum();
    println!(
        "offload benchmark: {count} archives of {} KiB ({:.1} MiB) to moto on 127.0.0.1:{}{}",
        ARCHIVE_BYTES / 1024,
        mib(total),
        moto.port,
        if real {
            ""
        } else {
            " (smoke run; pass --bench for the real one)"
        }
    );

    // The baseline first (the offload deletes the local files).
    let files: Vec<String> = archives
        .iter()
        .map(|(rel, _, _)| root.join(rel).to_string_lossy().into_owned())
        .collect();
    let (sequential, threaded) = boto3_baseline(moto.port, &files);

    let (policy, storage) = setup(dir.path(), &root, &specs, moto.port);
    record(&storage, &archives);
    let started = Instant::now();
    let result = cleanup_blocking(
        &policy.policy,
        &storage,
        Utc::now(),
        &CleanupOptions::default(),
        None,
        &speckit_retention::job::Control::NONE,
        1,
        WORKERS,
    )
    .expect("cleanup");
    let elapsed = started.elapsed();
    let outcome = result.executed.expect("a real run");
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.figures.offloaded_archives, count as u64);
    assert_eq!(outcome.figures.uploaded_bytes, total);
    let ours = mib(outcome.figures.uploaded_bytes) / elapsed.as_secs_f64();
    let seq = mib(total) / sequential.as_secs_f64();
    let par = mib(total) / threaded.as_secs_f64();
    println!("| | time | MiB/s | archives/s |");
    println!("|---|---|---|---|");
    println!(
        "| cleanup offload ({WORKERS} workers: upload, read back, sha256, record, delete) | {:.2} s | {ours:.1} | {:.0} |",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    println!(
        "| baseline: boto3 upload_file, one after the other | {:.2} s | {seq:.1} | {:.0} |",
        sequential.as_secs_f64(),
        count as f64 / sequential.as_secs_f64()
    );
    println!(
        "| baseline: boto3 upload_file, {WORKERS} threads | {:.2} s | {par:.1} | {:.0} |",
        threaded.as_secs_f64(),
        count as f64 / threaded.as_secs_f64()
    );
    println!(
        "ratio: offload / sequential boto3 = {:.2}, offload / {WORKERS}-thread boto3 = {:.2}",
        ours / seq,
        ours / par
    );
    moto.stop();
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One archive per SPEC: (relative path, sha256, bytes).
fn write_archives(root: &std::path::Path, specs: &[String]) -> Vec<(String, String, u64)> {
    let mut x = 0x2545_f491_u32;
    specs
        .iter()
        .map(|spec| {
            let mut bytes = vec![0u8; ARCHIVE_BYTES];
            for b in &mut bytes {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            let rel = format!("cleanup/archives/{spec}/{spec}_20250101_000000000000.tar.zst");
            let path = root.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            let sha = hex::encode(sha2::Sha256::digest(&bytes));
            (rel, sha, bytes.len() as u64)
        })
        .collect()
}

fn setup(
    dir: &std::path::Path,
    root: &std::path::Path,
    specs: &[String],
    port: u16,
) -> (speckit_engine::policy::PolicySnapshot, Storage) {
    let rows: Vec<(&str, &str)> = specs.iter().map(|s| (s.as_str(), "Done")).collect();
    speckit_testkit::tracker::write_four_column(&dir.join("SPEC.md"), &rows).unwrap();
    let config = dir.join("speckit.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndatabase_path = \"db.sqlite\"\n[evidence]\nroot = \"{}\"\ntracker_paths = [\"SPEC.md\"]\n[retention]\nmax_removal_fraction = 1.0\nverify_archive_hashes_every_days = 0\n[offload]\nafter_days = 40\nurl = \"s3://offload/bench\"\nendpoint = \"http://127.0.0.1:{port}\"\nallow_http = true\npath_style = true\n",
            root.display()
        ),
    )
    .unwrap();
    let policy = load_policy(
        &config,
        true,
        Vec::<(String, String)>::new(),
        &RetentionPlugin::policy_shape(),
    )
    .unwrap();
    let storage = Storage::open(storage_options(&policy.policy)).unwrap();
    storage
        .ensure_schema_blocking(&speckit_retention::RETENTION_SCHEMA)
        .unwrap();
    (policy, storage)
}

/// Records each archive as a cleanup 60 days ago would have.
fn record(storage: &Storage, archives: &[(String, String, u64)]) {
    let archives = archives.to_vec();
    let at = Utc::now() - chrono::Duration::days(60);
    storage
        .write_blocking(move |tx| {
            for (rel, sha, bytes) in &archives {
                let spec = rel.split('/').nth(2).unwrap().to_string();
                let manifest = Manifest {
                    format: speckit_retention::archive::FORMAT.to_string(),
                    spec,
                    created_at_ms: at.timestamp_millis(),
                    created_at: at.to_rfc3339(),
                    files: Vec::new(),
                    db: Vec::new(),
                };
                speckit_retention::catalog::insert(tx, rel, *bytes, sha, &manifest, "written")
                    .map_err(|e| speckit_engine::StorageError::Other(e.to_string()))?;
            }
            Ok::<_, speckit_engine::StorageError>(())
        })
        .unwrap();
}

/// boto3's `upload_file` of every file, timed in Python: (one after the other, 4 threads).
fn boto3_baseline(port: u16, files: &[String]) -> (Duration, Duration) {
    const SCRIPT: &str = r#"
import sys, time, boto3
from concurrent.futures import ThreadPoolExecutor
port, files = sys.argv[1], sys.stdin.read().split("\n")
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:" + port, region_name="us-east-1")
def up(prefix):
    return lambda f: s3.upload_file(f, "baseline", prefix + f.rsplit("/", 1)[1])
t = time.perf_counter()
for f in files:
    up("seq/")(f)
seq = time.perf_counter() - t
t = time.perf_counter()
with ThreadPoolExecutor(4) as pool:
    list(pool.map(up("par/"), files))
par = time.perf_counter() - t
print(seq, par)
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(files.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the boto3 baseline failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().map(|p| p.parse::<f64>().unwrap());
    let seq = parts.next().unwrap();
    let par = parts.next().unwrap();
    (Duration::from_secs_f64(seq), Duration::from_secs_f64(par))
}
