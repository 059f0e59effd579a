//! The CLI killed with SIGKILL at random points of a real `cleanup`: after every kill each
//! original file is in place unchanged or in a verified archive (read here with the `tar`,
//! `zstd` and `sha2` crates, not the plugin's code), every original database row is in the
//! database or in an archive, and a rerun reaches the end state of an uninterrupted run.
//!
//! 50 kills by default; `SPECKIT_CRASH_ITERATIONS=N` for more (scripts/soak-cleanup.sh),
//! `SPECKIT_CRASH_SEED=S` to replay a sequence of kill times.

use chrono::Utc;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use speckit_testkit::crash::{assert_succeeds, kill_after, run_timed, Kill, KillSchedule};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

struct Ws {
    _dir: tempfile::TempDir,
    config: PathBuf,
    root: PathBuf,
    db: PathBuf,
}

/// Three finished SPECs with 15 files per kind each, one active SPEC, old database rows.
fn workspace(now: chrono::DateTime<Utc>) -> Ws {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("evidence");
    let specs: Vec<_> = [
        "SPEC-KIT-100",
        "SPEC-KIT-101",
        "SPEC-KIT-102",
        "SPEC-KIT-200",
    ]
    .iter()
    .map(|s| speckit_testkit::evidence::SpecEvidence {
        spec_id: s.to_string(),
        files_per_kind: 25,
        file_bytes: 2_000,
        oldest_age: chrono::Duration::days(150),
        newest_age: chrono::Duration::days(2),
    })
    .collect();
    speckit_testkit::evidence::generate(&root, &specs, now).unwrap();
    speckit_testkit::tracker::write_eleven_column(
        &dir.path().join("SPEC.md"),
        &[
            ("SPEC-KIT-100", "Done"),
            ("SPEC-KIT-101", "DONE"),
            ("SPEC-KIT-102", "Done"),
            ("SPEC-KIT-200", "IN PROGRESS"),
        ],
    )
    .unwrap();
    let db = dir.path().join("db.sqlite");
    speckit_testkit::database::create_bloated(
        &db,
        0,
        2,
        &[
            ("SPEC-KIT-100", "plan", 120),
            ("SPEC-KIT-101", "tasks", 60),
            ("SPEC-KIT-200", "plan", 90),
        ],
        now.timestamp_millis(),
    )
    .unwrap();
    let config = dir.path().join("speckit.toml");
    std::fs::write(
        &config,
        "[storage]\ndatabase_path = \"db.sqlite\"\n[evidence]\nroot = \"evidence\"\ntracker_paths = [\"SPEC.md\"]\n[retention]\nmax_removal_fraction = 1.0\n",
    )
    .unwrap();
    Ws {
        _dir: dir,
        config,
        root,
        db,
    }
}

fn cleanup(ws: &Ws) -> Command {
    speckit_testkit::crash::cleanup_command(BIN, &ws.config)
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Files under the root except `cleanup/` (our archives and summaries) and `.locks/`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == "cleanup" || rel == ".locks" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(rel, sha(&std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out
}

/// Every final archive, read and checked against its manifest: (member sets, files, row ids).
struct Archived {
    member_sets: BTreeSet<Vec<String>>,
    files: BTreeMap<String, String>,
    run_ids: BTreeSet<i64>,
}

fn archived(root: &Path) -> Archived {
    let mut out = Archived {
        member_sets: BTreeSet::new(),
        files: BTreeMap::new(),
        run_ids: BTreeSet::new(),
    };
    let Ok(specs) = std::fs::read_dir(root.join("cleanup/archives")) else {
        return out;
    };
    for s in specs {
        for f in std::fs::read_dir(s.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // a temporary: never the only copy of anything
            }
            if name.ends_with(".manifest.json") {
                continue; // a sidecar: a copy of the manifest inside its archive
            }
            let decoder =
                zstd::stream::read::Decoder::new(std::fs::File::open(&path).unwrap()).unwrap();
            let mut tar = tar::Archive::new(decoder);
            let mut members = BTreeMap::new();
            let mut manifest: Option<serde_json::Value> = None;
            for entry in tar.entries().unwrap() {
                let mut entry = entry.unwrap();
                let n = entry.path().unwrap().to_string_lossy().into_owned();
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                if n == "MANIFEST.json" {
                    manifest = Some(serde_json::from_slice(&bytes).unwrap());
                } else {
                    members.insert(n, bytes);
                }
            }
            let manifest = manifest.unwrap_or_else(|| panic!("{name}: no manifest"));
            let mut set = Vec::new();
            for m in manifest["files"].as_array().unwrap() {
                let p = m["path"].as_str().unwrap();
                let h = sha(&members[p]);
                assert_eq!(
                    h,
                    m["sha256"].as_str().unwrap(),
                    "{name}: {p} fails its hash"
                );
                out.files.insert(p.to_string(), h);
                set.push(p.to_string());
            }
            for d in manifest["db"].as_array().unwrap() {
                let p = d["path"].as_str().unwrap();
                assert_eq!(
                    sha(&members[p]),
                    d["sha256"].as_str().unwrap(),
                    "{name}: {p}"
                );
                set.push(p.to_string());
                if d["table"] == "consensus_runs" {
                    for line in String::from_utf8_lossy(&members[p]).lines() {
                        let v: serde_json::Value = serde_json::from_str(line).unwrap();
                        out.run_ids.insert(v["id"].as_i64().unwrap());
                    }
                }
            }
            set.sort();
            out.member_sets.insert(set);
        }
    }
    out
}

fn query(db: &Path, sql: &str) -> Vec<String> {
    // Read-write: after a SIGKILL the WAL index must be rebuilt, which a read-only
    // connection cannot do. Only SELECTs run here.
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |row| {
        let mut cells = Vec::new();
        for i in 0..n {
            let v: rusqlite::types::Value = row.get(i)?;
            cells.push(format!("{v:?}"));
        }
        Ok(cells.join("|"))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn run_ids(db: &Path) -> BTreeSet<i64> {
    query(db, "SELECT id FROM consensus_runs")
        .iter()
        .map(|s| {
            s.trim_start_matches("Integer(")
                .trim_end_matches(')')
                .parse()
                .unwrap()
        })
        .collect()
}

#[derive(Debug, PartialEq)]
struct EndState {
    tree: BTreeMap<String, String>,
    member_sets: BTreeSet<Vec<String>>,
    runs: Vec<String>,
    executions: Vec<String>,
    records: Vec<String>,
}

fn end_state(ws: &Ws) -> EndState {
    EndState {
        tree: tree(&ws.root),
        member_sets: archived(&ws.root).member_sets,
        runs: query(&ws.db, "SELECT * FROM consensus_runs ORDER BY id"),
        executions: query(&ws.db, "SELECT * FROM agent_executions ORDER BY agent_id"),
        records: query(
            &ws.db,
            "SELECT member_count, source_bytes, db_rows, purged_at IS NULL FROM hygiene_archives ORDER BY source_bytes, member_count",
        ),
    }
}

#[test]
fn sigkill_at_random_points_loses_nothing_and_a_rerun_finishes() {
    let mut schedule = KillSchedule::from_env("SIGKILL test", 50);
    let (iterations, seed) = (schedule.iterations, schedule.seed);
    let now = Utc::now();

    // The uninterrupted run, and how long it takes: the fastest of three, so a slow first
    // run (cold caches, a busy machine) does not put most kills after the end.
    let mut full = Duration::MAX;
    let mut reference = None;
    for _ in 0..3 {
        let reference_ws = workspace(now);
        full = full.min(run_timed(&mut cleanup(&reference_ws), "the reference run"));
        reference = Some(end_state(&reference_ws));
    }
    let reference = reference.expect("three reference runs");
    assert!(!reference.member_sets.is_empty());

    let mut killed_mid_run = 0;
    for i in 0..iterations {
        let ws = workspace(now);
        let original = tree(&ws.root);
        let original_runs = run_ids(&ws.db);
        let delay = schedule.next_delay(full);
        let Kill {
            was_running,
            status,
        } = kill_after(&mut cleanup(&ws), delay);
        killed_mid_run += usize::from(was_running);
        let context = format!("kill {i} after {delay:?} (seed {seed}, exit {status:?})");

        let now_tree = tree(&ws.root);
        let archived = archived(&ws.root);
        for (path, h) in &original {
            assert!(
                now_tree.get(path) == Some(h) || archived.files.get(path) == Some(h),
                "{context}: {path} is neither in place nor in a verified archive"
            );
        }
        let present = run_ids(&ws.db);
        for id in &original_runs {
            assert!(
                present.contains(id) || archived.run_ids.contains(id),
                "{context}: consensus_runs row {id} lost"
            );
        }

        assert_succeeds(&mut cleanup(&ws), &context);
        assert_eq!(
            end_state(&ws),
            reference,
            "{context}: rerun end state differs"
        );
    }
    eprintln!(
        "{killed_mid_run} of {iterations} kills landed while cleanup ran (full run {full:?})"
    );
    assert!(
        killed_mid_run * 2 >= iterations,
        "only {killed_mid_run} of {iterations} kills hit a running cleanup"
    );
}
