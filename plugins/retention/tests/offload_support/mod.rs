//! Shared by the offload tests: a workspace whose archives are old enough to offload, the
//! runs, the record and store checks, and a real S3-compatible server (`moto`, from PyPI)
//! started on loopback for the tests that need one.

#![allow(dead_code)]

use crate::cleanup_support::*;
use speckit_engine::Storage;
use speckit_retention::faults::Faults;
use speckit_retention::job::{cleanup_blocking, CleanupOptions, CleanupResult};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Days before `now()` at which the first cleanup wrote the archives: past
/// `offload.after_days` (40), before `purge_after_days` (90).
pub const ARCHIVED_DAYS_AGO: i64 = 60;

/// A workspace with two finished SPECs archived `ARCHIVED_DAYS_AGO` days ago, and the
/// `[offload]` section `offload` in its policy. Returns the original tree too.
pub fn archived_workspace(offload: &str) -> (Ws, Storage, BTreeMap<String, String>) {
    archived_workspace_with(|_| offload.to_string())
}

/// [`archived_workspace`] whose `[offload]` section is made from the workspace's folder
/// (a `file://` store inside it, removed with it).
pub fn archived_workspace_with(
    offload: impl FnOnce(&Path) -> String,
) -> (Ws, Storage, BTreeMap<String, String>) {
    let ws = Ws::new(
        &[
            ("SPEC-KIT-100", "Done"),
            ("SPEC-KIT-101", "Done"),
            ("SPEC-KIT-200", "In Progress"),
        ],
        "",
    );
    let section = offload(ws.dir.path());
    let mut config = std::fs::read_to_string(&ws.config).unwrap();
    config.push_str(&section);
    std::fs::write(&ws.config, config).unwrap();
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

#[allow(unused_imports)] // offload_file.rs needs no server; offload_s3.rs does.
pub use speckit_testkit::moto::*;

/// Objects under a `file://` store folder: relative path -> sha256.
pub fn file_store_objects(dir: &Path) -> BTreeMap<String, String> {
    speckit_testkit::digest::tree_sha256(dir)
}
