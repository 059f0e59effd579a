//! The engine as a guest in the host's database: the host's `user_version`, tables and
//! indexes are left as the host made them, a database the engine creates is laid out as
//! the host would lay it out (compared with the upstream-made fixture), a 0.1 layout is
//! repaired, read-only opens create and change nothing, and a database that fails
//! `quick_check` is never written.

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use speckit_engine::storage::{
    host, schema, Storage, StorageError, StorageOptions, WriteRefusal, ENGINE_SCHEMA,
};
use speckit_testkit::fixtures;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (type, name, table, sql) of the host's objects, sorted by name.
fn host_objects(conn: &Connection) -> Vec<(String, String, String, Option<String>)> {
    let mut stmt = conn
        .prepare(
            "SELECT type, name, tbl_name, sql FROM sqlite_master \
             WHERE name NOT LIKE 'hygiene_%' AND tbl_name NOT LIKE 'hygiene_%' ORDER BY name",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

fn read_only(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

fn user_version(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A copy of the upstream-made fixture in a temporary folder (the fixture is read in place).
fn fixture_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("consensus_artifacts.db");
    std::fs::copy(fixtures::upstream_db(), &copy).unwrap();
    copy
}

#[test]
fn a_database_the_engine_creates_has_the_host_schema_exactly() {
    let fixture = read_only(&fixtures::upstream_db());
    let expected = host_objects(&fixture);
    assert_eq!(
        user_version(&fixture),
        2,
        "the fixture is at the host's version"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let storage = Storage::open(StorageOptions::new(&path)).unwrap();
    storage.close();
    let created = read_only(&path);
    assert_eq!(host_objects(&created), expected);
    // The host sets its own version when it first opens the file; its migrations are all
    // IF NOT EXISTS, so they are no-ops on these tables.
    assert_eq!(user_version(&created), 0);

    // And the text in schema.sql (sqlite3's .schema of the fixture) is the same statements.
    let schema_sql = std::fs::read_to_string(fixtures::require("upstream-db/schema.sql")).unwrap();
    for (kind, name, _, sql) in host_objects(&created) {
        if let Some(sql) = sql {
            assert!(
                schema_sql.contains(&format!("{sql};")),
                "{kind} {name} differs from schema.sql:\n{sql}"
            );
        }
    }
}

#[test]
fn the_host_can_run_its_own_migrations_on_a_database_we_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    Storage::open(StorageOptions::new(&path)).unwrap().close();
    // What upstream's ConsensusDb::init and migrate_to_latest run, in order: every CREATE
    // is IF NOT EXISTS, the ALTERs' errors are ignored, V2 only drops old tables.
    let conn = Connection::open(&path).unwrap();
    host::complete(&conn).unwrap();
    conn.execute_batch(
        "BEGIN EXCLUSIVE; DROP TABLE IF EXISTS consensus_artifacts; DROP TABLE IF EXISTS consensus_synthesis; \
         PRAGMA user_version = 2; COMMIT;",
    )
    .unwrap();
    drop(conn);
    // And we open it again without touching the version.
    Storage::open(StorageOptions::new(&path)).unwrap().close();
    assert_eq!(user_version(&read_only(&path)), 2);
}

#[test]
fn opening_an_upstream_database_keeps_its_version_schema_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_copy(dir.path());
    let before = read_only(&path);
    let objects = host_objects(&before);
    let counts = |c: &Connection| -> Vec<i64> {
        ["agent_executions", "consensus_runs", "agent_outputs"]
            .iter()
            .map(|t| {
                c.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
                    .unwrap()
            })
            .collect()
    };
    let rows = counts(&before);
    drop(before);

    let storage = Storage::open(StorageOptions::new(&path)).unwrap();
    assert!(storage.is_writable());
    storage.close();
    let after = read_only(&path);
    assert_eq!(user_version(&after), 2);
    assert_eq!(
        host_objects(&after),
        objects,
        "no host table or index changed"
    );
    assert_eq!(counts(&after), rows);
    assert_eq!(
        schema::recorded_version(&after, "engine").unwrap(),
        ENGINE_SCHEMA.latest_version()
    );
    assert!(schema::table_exists(&after, "hygiene_job_runs").unwrap());
    for absent in [
        "idx_consensus_runs_spec",
        "hygiene_archives",
        "hygiene_spawn_batches",
    ] {
        let n: i64 = after
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = ?1",
                [absent],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0, "{absent} is not created by opening");
    }
}

#[test]
fn a_read_only_open_of_a_missing_database_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/none.db");
    let storage = Storage::open_read_only(StorageOptions::new(&path)).unwrap();
    assert!(!storage.exists());
    let err = storage.read_blocking(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)));
    assert!(matches!(err, Err(StorageError::Missing { .. })), "{err:?}");
    assert!(err.unwrap_err().to_string().contains("none.db"));
    let write = storage.write_blocking(|_| Ok::<_, StorageError>(()));
    assert!(matches!(
        write,
        Err(StorageError::NotWritable {
            reason: WriteRefusal::ReadOnlyOpen,
            ..
        })
    ));
    assert!(
        !dir.path().join("sub").exists(),
        "not even the folder is created"
    );
}

#[test]
fn a_read_only_open_of_the_upstream_database_changes_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_copy(dir.path());
    let digest = sha256(&path);
    let storage = Storage::open_read_only(StorageOptions::new(&path)).unwrap();
    let runs: i64 = storage
        .read_blocking(|c| c.query_row("SELECT count(*) FROM consensus_runs", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(runs, 40);
    assert!(
        storage.ensure_schema_blocking(&ENGINE_SCHEMA).is_ok(),
        "a no-op when read-only"
    );
    storage.close();
    drop(storage);
    assert_eq!(sha256(&path), digest);
    assert!(!dir.path().join("consensus_artifacts.db-wal").exists());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        1,
        "no -wal, -shm or journal left behind: {names:?}"
    );
}

/// 0.1's migrations, as it applied them on top of whatever `user_version` it found.
const LEGACY_MIGRATIONS: &[(i64, &str)] = &[
    (1, "CREATE TABLE IF NOT EXISTS consensus_runs (id INTEGER PRIMARY KEY AUTOINCREMENT, spec_id TEXT NOT NULL, stage TEXT NOT NULL, run_timestamp INTEGER NOT NULL, consensus_ok INTEGER NOT NULL, degraded INTEGER NOT NULL DEFAULT 0, synthesis_json TEXT, UNIQUE(spec_id, stage, run_timestamp));
         CREATE TABLE IF NOT EXISTS agent_outputs (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL REFERENCES consensus_runs(id) ON DELETE CASCADE, agent_name TEXT NOT NULL, model_version TEXT, content TEXT NOT NULL, output_timestamp INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS agent_executions (agent_id TEXT PRIMARY KEY, spec_id TEXT NOT NULL, stage TEXT NOT NULL, phase_type TEXT NOT NULL, agent_name TEXT NOT NULL, run_id TEXT, spawned_at TEXT NOT NULL, completed_at TEXT, response_text TEXT, extraction_error TEXT);
         CREATE INDEX IF NOT EXISTS idx_consensus_runs_spec ON consensus_runs(spec_id, stage);
         CREATE INDEX IF NOT EXISTS idx_agent_outputs_run ON agent_outputs(run_id);
         CREATE INDEX IF NOT EXISTS idx_agent_executions_spec ON agent_executions(spec_id, stage);"),
    (2, "CREATE TABLE IF NOT EXISTS hygiene_job_runs (id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, plugin TEXT NOT NULL, engine_id TEXT NOT NULL, trigger TEXT NOT NULL, started_at INTEGER NOT NULL, finished_at INTEGER, outcome TEXT NOT NULL, report_json TEXT);
         CREATE TABLE IF NOT EXISTS hygiene_schedule_state (job TEXT PRIMARY KEY, last_fire_at INTEGER, last_started_at INTEGER, last_finished_at INTEGER, last_outcome TEXT, lease_owner TEXT, lease_expires_at INTEGER);"),
    (3, "CREATE TABLE IF NOT EXISTS hygiene_archives (id INTEGER PRIMARY KEY AUTOINCREMENT, spec_id TEXT NOT NULL, path TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL, bytes INTEGER NOT NULL, member_count INTEGER NOT NULL, source_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, db_rows INTEGER NOT NULL DEFAULT 0, origin TEXT NOT NULL DEFAULT 'written', purged_at INTEGER);
         CREATE TABLE IF NOT EXISTS hygiene_archive_members (archive_id INTEGER NOT NULL REFERENCES hygiene_archives(id) ON DELETE CASCADE, path TEXT NOT NULL, size INTEGER NOT NULL, mtime INTEGER NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (archive_id, path));"),
    (4, "CREATE TABLE IF NOT EXISTS hygiene_spawn_batches (batch_id TEXT PRIMARY KEY, spec_id TEXT NOT NULL, stage TEXT NOT NULL, agent_count INTEGER NOT NULL, max_concurrency INTEGER NOT NULL, started_at INTEGER NOT NULL, total_us INTEGER, ok_count INTEGER, failed_count INTEGER, consensus_run_id INTEGER REFERENCES consensus_runs(id) ON DELETE SET NULL);"),
];

/// What 0.1 did to a database at `found_version`: its migrations above it, then the version.
fn apply_legacy(path: &Path, found_version: i64) {
    let conn = Connection::open(path).unwrap();
    for (version, sql) in LEGACY_MIGRATIONS {
        if *version > found_version {
            conn.execute_batch(sql).unwrap();
            conn.execute_batch(&format!("PRAGMA user_version = {version}"))
                .unwrap();
        }
    }
}

#[test]
fn an_upstream_database_0_1_set_to_4_gets_version_2_back_and_the_engine_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_copy(dir.path());
    apply_legacy(&path, 2);
    let conn = read_only(&path);
    assert_eq!(
        user_version(&conn),
        4,
        "what 0.1 left: the host refuses this file"
    );
    assert!(
        !schema::table_exists(&conn, "hygiene_job_runs").unwrap(),
        "0.1 skipped its tables"
    );
    let objects = host_objects(&conn);
    drop(conn);

    Storage::open(StorageOptions::new(&path)).unwrap().close();
    let conn = read_only(&path);
    assert_eq!(user_version(&conn), 2);
    assert!(schema::table_exists(&conn, "hygiene_job_runs").unwrap());
    assert!(schema::table_exists(&conn, "hygiene_schedule_state").unwrap());
    assert_eq!(host_objects(&conn), objects);
    drop(conn);

    // Repaired once: a later open finds the versions table and leaves the version alone,
    // even if someone sets it again.
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 4")
        .unwrap();
    Storage::open(StorageOptions::new(&path)).unwrap().close();
    assert_eq!(user_version(&read_only(&path)), 4);
}

#[test]
fn a_database_0_1_created_gets_version_0_back_and_the_host_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("made-by-0.1.db");
    apply_legacy(&path, 0);
    Connection::open(&path)
        .unwrap()
        .execute_batch("INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok) VALUES ('SPEC-KIT-1', 'spec-plan', 1, 1)")
        .unwrap();
    assert_eq!(user_version(&read_only(&path)), 4);

    Storage::open(StorageOptions::new(&path)).unwrap().close();
    let conn = read_only(&path);
    assert_eq!(
        user_version(&conn),
        0,
        "the host migrates it itself and sets 2"
    );
    let names: Vec<String> = host_objects(&conn).into_iter().map(|o| o.1).collect();
    assert!(
        !names.contains(&"idx_consensus_runs_spec".to_string()),
        "0.1's duplicate index is dropped"
    );
    for index in host::HOST_INDEXES {
        assert!(
            names.contains(&index.to_string()),
            "{index} created as the host would"
        );
    }
    let branch: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('agent_executions') WHERE name = 'branch_id'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(branch, 1);
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM consensus_runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1, "rows kept");
}

#[test]
fn a_version_someone_changed_after_0_1_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_copy(dir.path());
    apply_legacy(&path, 2);
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 2")
        .unwrap();
    Storage::open(StorageOptions::new(&path)).unwrap().close();
    assert_eq!(user_version(&read_only(&path)), 2);
}

/// A database whose table b-tree has a damaged page: it opens, but quick_check fails.
fn damaged_database(dir: &Path) -> PathBuf {
    let path = dir.join("damaged.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA page_size = 4096; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);")
        .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..2000 {
        tx.execute(
            "INSERT INTO t (v) VALUES (?1)",
            [format!("row {i} {}", "x".repeat(200))],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    drop(conn);
    // Scribble over an interior page of the table (not page 1, so the file still opens).
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096 * 40;
    for b in &mut bytes[page + 8..page + 400] {
        *b = 0xA5;
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_database_failing_quick_check_is_opened_but_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = damaged_database(dir.path());
    let digest = sha256(&path);
    let storage = Storage::open(StorageOptions::new(&path)).unwrap();
    let refusal = storage.write_refusal().cloned();
    assert!(
        matches!(&refusal, Some(WriteRefusal::FailedQuickCheck { problems }) if !problems.is_empty()),
        "{refusal:?}"
    );
    let write = storage.write_blocking(|tx| {
        tx.execute_batch("CREATE TABLE x (a)")
            .map_err(speckit_engine::storage::sql_error(tx))
    });
    let err = write.unwrap_err();
    assert!(
        err.to_string().contains("quick_check") && err.to_string().contains("damaged.db"),
        "{err}"
    );
    assert!(storage.ensure_schema_blocking(&ENGINE_SCHEMA).is_ok());
    storage.close();
    assert_eq!(
        sha256(&path),
        digest,
        "not a byte written: no journal mode, no table"
    );
    assert!(!dir.path().join("damaged.db-wal").exists());
}

#[test]
fn errors_name_the_database_once_and_the_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let storage = Storage::open(StorageOptions::new(&path)).unwrap();
    let err = storage
        .write_blocking(|tx| {
            tx.execute_batch("INSERT INTO no_such_table VALUES (1)")
                .map_err(speckit_engine::storage::sql_error(tx))
        })
        .unwrap_err();
    let text = format!("{:#}", anyhow_like(&err));
    assert_eq!(text.matches("c.db").count(), 1, "{text}");
    assert_eq!(text.matches("no such table").count(), 1, "{text}");
}

/// The message as `anyhow`'s `{:#}` prints it: the error, then each source.
fn anyhow_like(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

const CHILD_ENV: &str = "SPECKIT_TEST_FIRST_OPEN_DB";
/// Without the open retry, 4 processes x 10 rounds failed with "database is locked" in
/// about one run of two on a 2-core machine.
const CHILDREN: usize = 4;
const ROUNDS: usize = 10;

#[test]
fn two_processes_creating_one_new_database_both_succeed() {
    if let Ok(db) = std::env::var(CHILD_ENV) {
        // The helper role: open at the signal, report.
        let storage = Storage::open(StorageOptions::new(&db)).unwrap();
        storage.close();
        println!("OPENED");
        return;
    }
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh.db");
        let children: Vec<_> = (0..CHILDREN)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "two_processes_creating_one_new_database_both_succeed",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CHILD_ENV, &path)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("OPENED"),
                "round {round}: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let conn = read_only(&path);
        assert_eq!(
            schema::recorded_version(&conn, "engine").unwrap(),
            speckit_engine::storage::ENGINE_SCHEMA.latest_version()
        );
        assert_eq!(
            host_objects(&conn),
            host_objects(&read_only(&fixtures::upstream_db()))
        );
    }
}
