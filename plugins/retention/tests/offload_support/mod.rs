//! Shared by the offload tests: a workspace whose archives are old enough to offload, the
//! runs, the record and store checks, and a real S3-compatible server (`moto`, from PyPI)
//! started on loopback for the tests that need one.

#![allow(dead_code)]

use crate::cleanup_support::*;
use speckit_engine::Storage;
use speckit_retention::faults::Faults;
use speckit_retention::job::{cleanup_blocking, CleanupOptions, CleanupResult};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Days before `now()` at which the first cleanup wrote the archives: past
/// `offload.after_days` (40), before `purge_after_days` (90).
pub const ARCHIVED_DAYS_AGO: i64 = 60;

/// A workspace with two finished SPECs archived `ARCHIVED_DAYS_AGO` days ago, and the
/// `[offload]` section `offload` in its policy. Returns the original tree too.
pub fn archived_workspace(offload: &str) -> (Ws, Storage, BTreeMap<String, String>) {
    let ws = Ws::new(
        &[
            ("SPEC-KIT-100", "Done"),
            ("SPEC-KIT-101", "Done"),
            ("SPEC-KIT-200", "In Progress"),
        ],
        offload,
    );
    ws.generate(&[
        old_spec("SPEC-KIT-100", 3),
        old_spec("SPEC-KIT-101", 3),
        spec("SPEC-KIT-200", 2),
    ]);
    let original = tree(&ws.root);
    let storage = ws.storage();
    let first = run_at(
        &ws,
        &storage,
        now() - chrono::Duration::days(ARCHIVED_DAYS_AGO),
        false,
        None,
    );
    let executed = first.executed.expect("a real run");
    assert!(executed.errors.is_empty(), "{:?}", executed.errors);
    assert_eq!(executed.figures.archives_written, 2);
    (ws, storage, original)
}

/// One SPEC's evidence, all of it old enough for the first cleanup to archive (so later
/// runs write no new archive and only offload or purge).
pub fn old_spec(id: &str, n: usize) -> speckit_testkit::evidence::SpecEvidence {
    speckit_testkit::evidence::SpecEvidence {
        oldest_age: chrono::Duration::days(150),
        newest_age: chrono::Duration::days(ARCHIVED_DAYS_AGO + 35),
        ..spec(id, n)
    }
}

pub fn run_at(
    ws: &Ws,
    storage: &Storage,
    at: chrono::DateTime<chrono::Utc>,
    dry_run: bool,
    faults: Option<&dyn Faults>,
) -> CleanupResult {
    let policy = ws.policy();
    cleanup_blocking(
        &policy.policy,
        storage,
        at,
        &CleanupOptions {
            dry_run,
            ..CleanupOptions::default()
        },
        faults,
        &speckit_retention::job::Control::NONE,
        1,
        // One SPEC after the other: the fault tests stop the server between two archives.
        1,
    )
    .unwrap()
}

/// A real cleanup at `now()`; its errors.
pub fn offload_run(ws: &Ws, storage: &Storage, faults: Option<&dyn Faults>) -> Vec<String> {
    let result = run_at(ws, storage, now(), false, faults);
    let mut errors = result.archive_health.errors();
    errors.extend(result.executed.expect("a real run").errors);
    errors
}

/// Per archive path: (remote_url, local file there?, sidecar there?).
pub fn placement(ws: &Ws, storage: &Storage) -> BTreeMap<String, (Option<String>, bool, bool)> {
    let rows: Vec<(String, Option<String>)> = storage
        .read_blocking(|c| {
            let mut s = c.prepare("SELECT path, remote_url FROM hygiene_archives WHERE purged_at IS NULL ORDER BY path")?;
            let r = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            r.collect()
        })
        .unwrap();
    rows.into_iter()
        .map(|(path, url)| {
            let local = ws.root.join(&path);
            let sidecar = PathBuf::from(format!("{}.manifest.json", local.display()));
            (path, (url, local.is_file(), sidecar.is_file()))
        })
        .collect()
}

/// The recorded sha256 of each unpurged archive.
pub fn recorded_hashes(storage: &Storage) -> BTreeMap<String, String> {
    storage
        .read_blocking(|c| {
            let mut s =
                c.prepare("SELECT path, sha256 FROM hygiene_archives WHERE purged_at IS NULL")?;
            let r = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            r.collect()
        })
        .unwrap()
}

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto S3 server on loopback, killed when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub endpoint: String,
}

/// The credentials moto accepts (any); set in this test process's environment, which is
/// where the plugin reads them from.
pub fn set_test_credentials() {
    // Every test of a binary sets the same values, so concurrent tests agree.
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", "us-east-1");
}

impl Moto {
    /// Starts `python3 -m moto.server` on a free port and waits until it answers; `None`
    /// (with the reason printed) when moto is not installed outside CI. In CI (`CI` set) a
    /// missing moto fails the test: `.ci/run` installs it.
    pub fn start() -> Option<Moto> {
        let have = Command::new("python3")
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            let why =
                "moto is not installed (pip install 'moto[server]'); the S3 offload tests need it";
            if std::env::var_os("CI").is_some() {
                panic!("{why}: .ci/run installs it");
            }
            eprintln!("skipped: {why}");
            return None;
        }
        set_test_credentials();
        Some(Moto::start_on(free_port()))
    }

    /// Starts moto on `port` (a restart after [`Moto::stop`] uses the same port).
    pub fn start_on(port: u16) -> Moto {
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m moto.server");
        let moto = Moto {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        moto.wait_ready();
        moto
    }

    /// Polls until the server answers HTTP (at most 30 s).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http(self.port, "GET", "/").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto did not answer on port {} within 30 s", self.port);
    }

    /// Creates a bucket (a plain PUT; moto needs no signature).
    pub fn create_bucket(&self, bucket: &str) {
        let status = http(self.port, "PUT", &format!("/{bucket}")).expect("moto answers");
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "creating {bucket}: {status}"
        );
    }

    /// The `[offload]` section for `bucket/prefix` on this server.
    pub fn section(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "[offload]\nafter_days = 40\nurl = \"s3://{bucket}/{prefix}\"\nendpoint = \"{}\"\nallow_http = true\npath_style = true\nregion = \"us-east-1\"\ntimeout_seconds = 10\n",
            self.endpoint
        )
    }

    /// Stops the server (it is gone when this returns).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One plain HTTP/1.1 request to loopback; the status line, or `None` when nothing answers.
fn http(port: u16, method: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().map(str::to_string)
}

/// Objects under a `file://` store folder: relative path -> sha256.
pub fn file_store_objects(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, sha_hex(&std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out
}
