//! Every command against a copy of the database upstream's own code made
//! (`../shared/fixtures/upstream-db`), checked the way the host checks it at open: its
//! `user_version` is never above 2 (it is 2 after every command), and upstream's own queries
//! (newest synthesis per SPEC and stage, executions per SPEC) return what they returned
//! before, except rows retention archived on purpose (which `restore` puts back). Commands
//! that only report or plan change no byte of the file; on a missing database they say so
//! and create nothing.

use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

/// The read-only commands, each with its arguments.
const READ_ONLY: &[&[&str]] = &[
    &["check"],
    &["plugins"],
    &["jobs"],
    &["stats"],
    &["guard", "SPEC-KIT-900"],
    &["vacuum", "--dry-run"],
    &["cleanup", "--dry-run"],
    &["spawn", "stats"],
];

struct Ws {
    dir: tempfile::TempDir,
    config: PathBuf,
    db: PathBuf,
}

/// A workspace whose database is a copy of the upstream-made fixture. Its SPECs are
/// about 60 days old (067, 070, 900, 901: Done in the tracker) and 5 days (909: In
/// Progress).
fn workspace(copy_db: bool) -> Ws {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus_artifacts.db");
    if copy_db {
        std::fs::copy(speckit_testkit::fixtures::upstream_db(), &db).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("evidence/commands")).unwrap();
    speckit_testkit::tracker::write_four_column(
        &dir.path().join("SPEC.md"),
        &[
            ("SPEC-KIT-067", "Done"),
            ("SPEC-KIT-070", "Done"),
            ("SPEC-KIT-900", "Done"),
            ("SPEC-KIT-901", "Done"),
            ("SPEC-KIT-909", "In Progress"),
        ],
    )
    .unwrap();
    let config = dir.path().join("speckit.toml");
    std::fs::write(
        &config,
        "[storage]\ndatabase_path = \"consensus_artifacts.db\"\n\
         [evidence]\nroot = \"evidence\"\ntracker_paths = [\"SPEC.md\"]\n\
         [[spawn.agents]]\nname = \"echo\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"echo READY; echo done\"]\nreadiness = { line = \"READY\" }\n",
    )
    .unwrap();
    Ws { dir, config, db }
}

fn hygiene(ws: &Ws, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(&ws.config).args(args);
    speckit_testkit::process::without_speckit_env(&mut cmd);
    cmd.output().unwrap()
}

fn sha256(path: &Path) -> String {
    speckit_testkit::digest::sha256_file(path).unwrap()
}

fn open(db: &Path) -> Connection {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

fn user_version(db: &Path) -> i64 {
    open(db)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// One row of verify.rs's query: stage, agent, phase, spawned, completed, run id.
type Execution = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

/// What upstream's readers see: per (SPEC, stage) the newest synthesis (its
/// `query_synthesis_new_schema`), and per SPEC the executions (`verify.rs`).
#[derive(Debug, PartialEq)]
struct HostView {
    synthesis: BTreeMap<(String, String), Option<String>>,
    executions: BTreeMap<String, Vec<Execution>>,
}

fn host_view(db: &Path) -> HostView {
    let conn = open(db);
    let pairs: Vec<(String, String)> = conn
        .prepare("SELECT DISTINCT spec_id, stage FROM consensus_runs")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut synthesis = BTreeMap::new();
    for (spec, stage) in pairs {
        let newest: Option<String> = conn
            .query_row(
                "SELECT synthesis_json FROM consensus_runs WHERE spec_id = ?1 AND stage = ?2 ORDER BY run_timestamp DESC LIMIT 1",
                [&spec, &stage],
                |r| r.get(0),
            )
            .unwrap();
        synthesis.insert((spec, stage), newest);
    }
    let specs: Vec<String> = conn
        .prepare("SELECT DISTINCT spec_id FROM agent_executions")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut executions = BTreeMap::new();
    for spec in specs {
        // verify.rs pastes the SPEC into the SQL; the same query, bound here.
        let rows = conn
            .prepare(
                "SELECT stage, agent_name, phase_type, spawned_at, completed_at, run_id FROM agent_executions \
                 WHERE spec_id = ?1 ORDER BY spawned_at DESC, agent_id LIMIT 50",
            )
            .unwrap()
            .query_map([&spec], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        executions.insert(spec, rows);
    }
    HostView {
        synthesis,
        executions,
    }
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn read_only_commands_change_no_byte_of_the_hosts_database() {
    let ws = workspace(true);
    let digest = sha256(&ws.db);
    for args in READ_ONLY {
        let out = hygiene(&ws, args);
        assert!(
            out.status.code().is_some_and(|c| c <= 3),
            "{args:?} crashed: {}",
            describe(&out)
        );
        assert_eq!(sha256(&ws.db), digest, "{args:?} changed the database");
        assert_eq!(user_version(&ws.db), 2, "{args:?}");
        let wal = ws.dir.path().join("consensus_artifacts.db-wal");
        assert!(
            !wal.exists(),
            "{args:?} left a WAL: it opened the file for writing"
        );
    }
}

#[test]
fn on_a_missing_database_commands_say_so_and_create_nothing() {
    let ws = workspace(false);
    for args in READ_ONLY.iter().copied().chain([&["vacuum"][..]]) {
        let out = hygiene(&ws, args);
        assert!(
            out.status.code().is_some_and(|c| c <= 3),
            "{args:?}: {}",
            describe(&out)
        );
        assert!(
            !ws.db.exists(),
            "{args:?} created the database: {}",
            describe(&out)
        );
    }
    for args in [&["jobs"][..], &["vacuum"], &["vacuum", "--dry-run"]] {
        let out = hygiene(&ws, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("consensus_artifacts.db") && stderr.contains("nothing was created"),
            "{args:?} says the database is missing: {stderr}"
        );
    }
}

#[test]
fn every_command_keeps_the_hosts_version_and_what_its_queries_return() {
    let ws = workspace(true);
    let before = host_view(&ws.db);
    assert!(
        before
            .synthesis
            .keys()
            .any(|(spec, _)| spec == "SPEC-KIT-909")
            && before
                .synthesis
                .keys()
                .any(|(spec, _)| spec == "SPEC-KIT-900"),
        "the fixture's SPECs: {:?}",
        before.synthesis.keys()
    );
    let steps: &[&[&str]] = &[
        &["run", "--once"],
        &["vacuum", "--force"],
        &["spawn", "--spec", "SPEC-KIT-909", "--stage", "plan"],
        &["cleanup", "--force"],
    ];
    for args in steps {
        let out = hygiene(&ws, args);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        assert_eq!(user_version(&ws.db), 2, "after {args:?}");
    }
    // Cleanup archived the rows of the finished SPECs (older than 30 days) on purpose, and
    // nothing else: SPEC-KIT-909 (in progress) reads as before, spawn's rows aside.
    let archived = host_view(&ws.db);
    for ((spec, stage), newest) in &before.synthesis {
        let now = archived.synthesis.get(&(spec.clone(), stage.clone()));
        if spec == "SPEC-KIT-909" {
            assert_eq!(
                now,
                Some(newest),
                "{spec} {stage}: the host's newest synthesis"
            );
        } else {
            assert_eq!(now, None, "{spec} {stage} was archived");
        }
    }
    assert!(
        archived
            .synthesis
            .keys()
            .all(|(spec, _)| spec == "SPEC-KIT-909"),
        "spawn wrote no consensus run: {:?}",
        archived.synthesis.keys()
    );
    for spec in [
        "SPEC-KIT-067",
        "SPEC-KIT-070",
        "SPEC-KIT-900",
        "SPEC-KIT-901",
    ] {
        let out = hygiene(&ws, &["restore", spec]);
        assert!(out.status.success(), "restore {spec}: {}", describe(&out));
        assert_eq!(user_version(&ws.db), 2, "after restore {spec}");
    }
    let restored = host_view(&ws.db);
    assert_eq!(
        restored.synthesis, before.synthesis,
        "restore puts every synthesis back"
    );
    for (spec, rows) in &before.executions {
        let now = &restored.executions[spec];
        let spawned: Vec<_> = now.iter().filter(|r| !rows.contains(r)).collect();
        assert!(
            rows.iter().all(|r| now.contains(r)),
            "{spec}: every execution row back"
        );
        // The only new rows are the ones our spawn wrote (one agent), in the host's formats.
        if spec == "SPEC-KIT-909" {
            assert_eq!(spawned.len(), 1, "{spec}: the spawned agent's row");
        }
        for row in spawned {
            assert_eq!(spec, "SPEC-KIT-909");
            assert_eq!(row.0, "spec-plan");
            assert_eq!(row.2, "regular_stage");
            assert!(is_host_datetime(&row.3), "spawned_at {:?}", row.3);
        }
    }
}

/// `datetime('now')` text: `2026-10-03 12:42:58`.
fn is_host_datetime(text: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").is_ok() && text.len() == 19
}
