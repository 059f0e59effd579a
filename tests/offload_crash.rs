//! The CLI killed with SIGKILL at random points of a real `cleanup` that offloads archives
//! to a `file://` store (inside the test's temporary folder) and purges offloaded ones.
//! After every kill, read here with `sha2` and the file system, not the plugin's code:
//! every archive not due for purge is local, in the store, or both, never neither; every
//! copy there is has the recorded sha256; no unpurged record names an object that is
//! absent (except an archive being purged: its object goes before its record, by design);
//! a record marked purged has no copy left. Then a rerun must reach the end state of an
//! uninterrupted run: the offloaded archives only in the store, the purged ones nowhere,
//! and no upload's leftover in the store's folder.
//!
//! 40 kills by default; `SPECKIT_CRASH_ITERATIONS=N` for more, `SPECKIT_CRASH_SEED=S` to
//! replay a sequence of kill times.

use chrono::{DateTime, Duration as Days, Utc};
use rusqlite::{Connection, OpenFlags};
use speckit_engine::engine::storage_options;
use speckit_engine::policy::load_policy;
use speckit_engine::Storage;
use speckit_retention::job::{cleanup_blocking, CleanupOptions, Control};
use speckit_testkit::crash::{assert_succeeds, kill_after, run_timed, Kill, KillSchedule};
use speckit_testkit::evidence::SpecEvidence;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

/// Archived 130 days ago and offloaded 85 days ago: past `purge_after_days` (90) now, so
/// the run deletes their objects, sidecars and records.
const PURGED: [&str; 3] = ["SPEC-KIT-300", "SPEC-KIT-301", "SPEC-KIT-302"];
/// Archived 60 days ago: past `offload.after_days` (40) now, so the run offloads them. The
/// first is large enough (about 7 MB) to go up in parts of 5 MiB.
const OFFLOADED: [&str; 6] = [
    "SPEC-KIT-400",
    "SPEC-KIT-401",
    "SPEC-KIT-402",
    "SPEC-KIT-403",
    "SPEC-KIT-404",
    "SPEC-KIT-405",
];

/// A workspace in `work/`, and a snapshot of its state before the CLI's run that
/// [`Ws::reset`] puts back (in the same place, so the absolute paths in the policy and
/// the records stay true).
struct Ws {
    _dir: tempfile::TempDir,
    work: PathBuf,
    snapshot: PathBuf,
    config: PathBuf,
    root: PathBuf,
    db: PathBuf,
    store: PathBuf,
}

impl Ws {
    /// Back to the state before the CLI's run (file times kept: ages are read from them).
    fn reset(&self) {
        if self.work.exists() {
            std::fs::remove_dir_all(&self.work).unwrap();
        }
        copy_tree(&self.snapshot, &self.work);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
            let modified = e.metadata().unwrap().modified().unwrap();
            std::fs::File::options()
                .write(true)
                .open(&target)
                .unwrap()
                .set_modified(modified)
                .unwrap();
        }
    }
}

fn evidence(id: &str, oldest: i64, newest: i64, files: usize, bytes: usize) -> SpecEvidence {
    SpecEvidence {
        spec_id: id.to_string(),
        files_per_kind: files,
        file_bytes: bytes,
        oldest_age: Days::days(oldest),
        newest_age: Days::days(newest),
    }
}

/// A workspace whose archives were written (and partly offloaded) by earlier cleanups,
/// run through the library at past times; `now` is the time the CLI will see (today).
fn workspace(now: DateTime<Utc>) -> Ws {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let root = work.join("evidence");
    let store = work.join("store");
    std::fs::create_dir_all(&store).unwrap();
    // The purged group's files are old enough to archive at now-130d; the offloaded
    // group's are not (under 30 days old then, and at now-85d), but are at now-60d.
    let mut specs: Vec<_> = PURGED
        .iter()
        .map(|id| evidence(id, 220, 170, 6, 4_000))
        .collect();
    specs.extend(OFFLOADED.iter().enumerate().map(|(i, id)| match i {
        0 => evidence(id, 110, 95, 40, 160_000),
        _ => evidence(id, 110, 95, 6, 4_000),
    }));
    specs.push(evidence("SPEC-KIT-500", 20, 1, 4, 2_000));
    speckit_testkit::evidence::generate(&root, &specs, now).unwrap();
    let mut statuses: Vec<(&str, &str)> = PURGED
        .iter()
        .chain(&OFFLOADED)
        .map(|s| (*s, "Done"))
        .collect();
    statuses.push(("SPEC-KIT-500", "In Progress"));
    speckit_testkit::tracker::write_four_column(&work.join("SPEC.md"), &statuses).unwrap();
    let config = work.join("speckit.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndatabase_path = \"db.sqlite\"\n[evidence]\nroot = \"evidence\"\ntracker_paths = [\"SPEC.md\"]\n\
             [retention]\narchive_after_days = 30\npurge_after_days = 90\nmax_removal_fraction = 1.0\n\
             [offload]\nafter_days = 40\nurl = \"file://{}\"\npart_size_mib = 5\n",
            store.display()
        ),
    )
    .unwrap();
    let policy = load_policy(
        &config,
        true,
        Vec::<(String, String)>::new(),
        &speckit_retention::RetentionPlugin::policy_shape(),
    )
    .unwrap();
    let storage = Storage::open(storage_options(&policy.policy)).unwrap();
    for days_ago in [130, 85, 60] {
        let result = cleanup_blocking(
            &policy.policy,
            &storage,
            now - Days::days(days_ago),
            &CleanupOptions::default(),
            None,
            &Control::NONE,
            1,
            1,
        )
        .unwrap();
        let executed = result.executed.expect("a real run");
        assert!(executed.errors.is_empty(), "{:?}", executed.errors);
    }
    drop(storage);
    let snapshot = dir.path().join("snapshot");
    copy_tree(&work, &snapshot);
    Ws {
        db: work.join("db.sqlite"),
        _dir: dir,
        work,
        snapshot,
        config,
        root,
        store,
    }
}

fn cleanup(ws: &Ws) -> Command {
    speckit_testkit::crash::cleanup_command(BIN, &ws.config)
}

fn sha_of(path: &Path) -> Option<String> {
    speckit_testkit::digest::sha256_file(path).ok()
}

/// Files below `dir`, relative, with their sha256.
fn files(dir: &Path) -> BTreeMap<String, String> {
    speckit_testkit::digest::tree_sha256(dir)
}

/// One archive's record.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    path: String,
    sha256: String,
    bytes: u64,
    /// The object's path on disk (from `remote_url`, a `file://` url).
    remote: Option<PathBuf>,
    purged: bool,
}

fn rows(db: &Path) -> BTreeMap<String, Row> {
    // Read-write: after a SIGKILL the WAL index must be rebuilt, which a read-only
    // connection cannot do. Only a SELECT runs here.
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT path, sha256, bytes, remote_url, purged_at IS NOT NULL FROM hygiene_archives",
        )
        .unwrap();
    stmt.query_map([], |r| {
        let url: Option<String> = r.get(3)?;
        Ok(Row {
            path: r.get(0)?,
            sha256: r.get(1)?,
            bytes: r.get::<_, i64>(2)? as u64,
            remote: url
                .map(|u| PathBuf::from(u.strip_prefix("file://").expect("a file:// url recorded"))),
            purged: r.get(4)?,
        })
    })
    .unwrap()
    .map(|r| {
        let r = r.unwrap();
        (r.path.clone(), r)
    })
    .collect()
}

/// Where an archive is expected in the store: `<store>/<SPEC>/<name>`.
fn object_of(ws: &Ws, path: &str) -> PathBuf {
    ws.store
        .join(path.strip_prefix("cleanup/archives/").unwrap())
}

/// What `object_store`'s local store leaves while an upload is in flight: `<key>#<n>`.
fn is_staging(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// How far a killed run got, counted in archives.
#[derive(Debug, Default)]
struct Progress {
    untouched: usize,
    /// Neither untouched nor finished (uploaded but not recorded, recorded but still
    /// local, object deleted but purge not recorded).
    between: usize,
    finished: usize,
    /// `<object>#<n>` files in the store: uploads cut short.
    leftovers: usize,
}

/// The invariants after a kill (see the file's documentation), and how far the run got.
fn check_after_kill(ws: &Ws, before: &BTreeMap<String, Row>, context: &str) -> Progress {
    let now_rows = rows(&ws.db);
    let mut progress = Progress::default();
    for (path, old) in before {
        let due_purge = PURGED.iter().any(|s| path.contains(s));
        let row = now_rows
            .get(path)
            .unwrap_or_else(|| panic!("{context}: the record of {path} is gone"));
        let local_sha = sha_of(&ws.root.join(path));
        let object = object_of(ws, path);
        let remote_sha = sha_of(&object);
        for (what, sha) in [("local file", &local_sha), ("object", &remote_sha)] {
            if let Some(sha) = sha {
                assert_eq!(
                    sha, &old.sha256,
                    "{context}: {path}: the {what} is not the archive"
                );
            }
        }
        if !due_purge {
            assert!(
                local_sha.is_some() || remote_sha.is_some(),
                "{context}: {path} is neither local nor in the store"
            );
        }
        if let Some(recorded) = &row.remote {
            assert_eq!(
                recorded, &object,
                "{context}: {path}: recorded at another key"
            );
            if !row.purged && !due_purge {
                assert!(
                    remote_sha.is_some(),
                    "{context}: {path}: its record names an absent object"
                );
            }
        }
        if row.purged {
            assert!(
                local_sha.is_none() && remote_sha.is_none(),
                "{context}: {path}: recorded as purged, but a copy is left"
            );
        }
        let finished = if due_purge {
            row.purged
        } else {
            row.remote.is_some() && local_sha.is_none()
        };
        let untouched = row == old
            && local_sha.is_some() == ws_local_at_start(old)
            && remote_sha.is_some() == old.remote.is_some();
        match (finished, untouched) {
            (true, _) => progress.finished += 1,
            (false, true) => progress.untouched += 1,
            (false, false) => progress.between += 1,
        }
    }
    progress.leftovers = files(&ws.store).keys().filter(|k| is_staging(k)).count();
    progress
}

/// Whether the archive's local file was there before the run: only the offloaded group
/// had one (the purged group's went at its offload, 85 days ago).
fn ws_local_at_start(row: &Row) -> bool {
    row.remote.is_none()
}

#[derive(Debug, PartialEq)]
struct EndState {
    /// `cleanup/archives`, relative paths (archives and sidecars).
    local: Vec<String>,
    /// The store's folder, relative paths (any upload leftover included).
    store: Vec<String>,
    /// path -> (offloaded, purged).
    records: BTreeMap<String, (bool, bool)>,
}

fn end_state(ws: &Ws) -> EndState {
    EndState {
        local: files(&ws.root.join("cleanup/archives"))
            .into_keys()
            .collect(),
        store: files(&ws.store).into_keys().collect(),
        records: rows(&ws.db)
            .into_iter()
            .map(|(p, r)| (p, (r.remote.is_some(), r.purged)))
            .collect(),
    }
}

#[test]
fn sigkill_during_offload_and_purge_loses_nothing_and_a_rerun_finishes() {
    let started = Instant::now();
    let mut schedule = KillSchedule::from_env("offload SIGKILL test", 40);
    let (iterations, seed) = (schedule.iterations, schedule.seed);
    let now = Utc::now();

    // The uninterrupted run and its duration: the fastest of three.
    let t = Instant::now();
    let ws = workspace(now);
    eprintln!("workspace set up in {:?}", t.elapsed());
    let mut full = Duration::MAX;
    let mut reference = None;
    for _ in 0..3 {
        ws.reset();
        let before = rows(&ws.db);
        assert_eq!(before.len(), PURGED.len() + OFFLOADED.len(), "{before:?}");
        let big = before
            .values()
            .find(|r| r.path.contains(OFFLOADED[0]))
            .unwrap();
        assert!(
            big.bytes > 5 << 20,
            "the large archive ({} bytes) goes up in parts",
            big.bytes
        );
        full = full.min(run_timed(&mut cleanup(&ws), "the reference run"));
        // What an uninterrupted run must reach, checked here from the files themselves.
        let after = rows(&ws.db);
        for (path, row) in &after {
            let local = ws.root.join(path);
            let sidecar = PathBuf::from(format!("{}.manifest.json", local.display()));
            if PURGED.iter().any(|s| path.contains(s)) {
                assert!(row.purged, "{path} purged");
                assert!(
                    !object_of(&ws, path).exists() && !sidecar.exists(),
                    "{path}"
                );
            } else {
                assert!(!row.purged && !local.exists() && sidecar.exists(), "{path}");
                assert_eq!(
                    sha_of(&object_of(&ws, path)).as_ref(),
                    Some(&row.sha256),
                    "{path}"
                );
            }
        }
        reference = Some(end_state(&ws));
    }
    let reference = reference.expect("three reference runs");
    assert_eq!(reference.store.len(), OFFLOADED.len(), "{reference:?}");

    // Kills that found the process running; that left some archives done and others not
    // (or one part-way); that left an archive part-way; upload leftovers they left.
    let (mut killed_mid_run, mut mid_work, mut caught_between, mut leftovers_seen) = (0, 0, 0, 0);
    for i in 0..iterations {
        ws.reset();
        let before = rows(&ws.db);
        let delay = schedule.next_delay(full);
        let Kill {
            was_running,
            status,
        } = kill_after(&mut cleanup(&ws), delay);
        killed_mid_run += usize::from(was_running);
        let context = format!("kill {i} after {delay:?} (seed {seed}, exit {status:?})");

        let p = check_after_kill(&ws, &before, &context);
        mid_work += usize::from(p.between > 0 || (p.finished > 0 && p.untouched > 0));
        caught_between += usize::from(p.between > 0);
        leftovers_seen += p.leftovers;

        assert_succeeds(&mut cleanup(&ws), &context);
        assert_eq!(
            end_state(&ws),
            reference,
            "{context}: rerun end state differs"
        );
    }
    eprintln!(
        "{killed_mid_run} of {iterations} kills landed while cleanup ran, {mid_work} in the middle of the offload and \
         purge work, {caught_between} with an archive part-way (uploaded, recorded or its object deleted, not finished); \
         {leftovers_seen} upload leftovers seen after kills, none after reruns (full run {full:?}, test {:?})",
        started.elapsed()
    );
    assert!(
        killed_mid_run * 2 >= iterations,
        "only {killed_mid_run} of {iterations} kills hit a running cleanup"
    );
    assert!(
        mid_work * 5 >= iterations,
        "only {mid_work} of {iterations} kills landed in the offload and purge work"
    );
}
