//! The example plugin's storage contract end to end (`examples/custom-plugin`, built by
//! `cargo test` as a dev-dependency): its migration creates its own table, versioned in
//! the engine's `hygiene_schema_versions`; a run reads the host's `consensus_runs` into each
//! Markdown digest and upserts one row per SPEC whose `digest_sha256` is that of the file
//! written; a rerun updates the rows in place; a dry run writes no row and no file.
//!
//! Real runs go through the command line (`run --once`); the dry run, which the command
//! line offers only for built-in jobs, through the embedding API with the same binary as
//! plugin host.

use rusqlite::{Connection, OpenFlags};
use speckit_hygiene::embed::EngineBuilder;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

/// The digest's table and schema component: the library's exported name is
/// `speckit-digest`, and the engine prefixes its tables with
/// `speckit_plugin_sdk::table_prefix` of that name (not of the `[plugins.digest]` key).
const TABLE: &str = "plugin_speckit_digest_specs";
const COMPONENT: &str = "plugin_speckit_digest";

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    /// A workspace with the digest library in a 0755 `plugins/`, a small evidence tree, a
    /// database laid out by "the host" with some consensus runs, and `speckit.toml`.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ws = Self { dir };
        speckit_testkit::artifacts::install_library(
            ws.path(),
            "speckit_digest",
            "libspeckit_digest.so",
        );
        speckit_testkit::evidence::small_consensus_tree(&ws.path().join("evidence"));
        let conn = Connection::open(ws.database()).unwrap();
        speckit_testkit::database::create_upstream_schema(&conn).unwrap();
        conn.execute_batch(
            "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, degraded) VALUES \
               ('SPEC-KIT-101', 'spec-plan', 1760280240000, 1, 0), \
               ('SPEC-KIT-101', 'spec-unlock', 1760287423000, 0, 1), \
               ('SPEC-KIT-101', 'spec-tasks', 1760200000000, 1, 0), \
               ('SPEC-KIT-102', 'spec-plan', 1762828400000, 1, 0), \
               ('SPEC-KIT-999', 'spec-plan', 1762828400000, 1, 0)",
        )
        .unwrap();
        drop(conn);
        fs::write(
            ws.config(),
            "[storage]\ndatabase_path = \"consensus.db\"\n\n[evidence]\nroot = \"evidence\"\n\n\
             [schedule]\ncleanup = \"off\"\nvacuum = \"off\"\nintegrity_check = \"off\"\n\n\
             [plugins.digest]\npath = \"plugins/libspeckit_digest.so\"\nschedule = \"0 5 * * *\"\n\
             [plugins.digest.config]\noutput_dir = \"digests\"\n",
        )
        .unwrap();
        ws
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> PathBuf {
        self.path().join("speckit.toml")
    }

    fn database(&self) -> PathBuf {
        self.path().join("consensus.db")
    }

    fn digest(&self, spec: &str) -> PathBuf {
        self.path().join("digests").join(format!("{spec}.md"))
    }

    /// `run --once --json`: the digest's run record. Fails the test on a non-zero exit or
    /// after a minute.
    fn run_once(&self) -> serde_json::Value {
        let output = self.cli(&["run", "--once", "--json"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        let runs = speckit_testkit::json::data(&output.stdout)["runs"].clone();
        let run = runs
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["job"] == "digest")
            .unwrap_or_else(|| panic!("no digest run: {runs}"))
            .clone();
        assert_eq!(run["outcome"], "succeeded", "{run}");
        run
    }

    /// The host records one successful consensus run of `spec` at `stage`.
    fn host_records_run(&self, spec: &str, stage: &str, at_ms: i64) {
        Connection::open(self.database())
            .unwrap()
            .execute(
                "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, degraded) \
                 VALUES (?1, ?2, ?3, 1, 0)",
                rusqlite::params![spec, stage, at_ms],
            )
            .unwrap();
    }

    fn cli(&self, args: &[&str]) -> Output {
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("SPECKIT_CONFIG")
            .env("RUST_LOG", "warn");
        speckit_testkit::process::output_within(
            &mut command,
            Duration::from_secs(60),
            &format!("speckit-hygiene {args:?}"),
        )
    }

    /// The digest job with `{"dry_run": true}`, through the embedding API (the same engine,
    /// the same binary as plugin host); its record as JSON.
    fn dry_run(&self) -> serde_json::Value {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let engine = EngineBuilder::new(self.config())
                .plugin_host(BIN)
                .scheduler(false)
                .watch_config(false)
                .env(Vec::<(String, String)>::new())
                .start()
                .await
                .unwrap();
            let run = engine
                .run_job("digest", serde_json::json!({ "dry_run": true }))
                .await
                .unwrap();
            engine.shutdown().await;
            let run = serde_json::to_value(&run).unwrap();
            assert_eq!(run["outcome"], "succeeded", "{run}");
            run
        })
    }

    fn read(&self) -> Connection {
        Connection::open_with_flags(self.database(), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
    }

    /// Every row of the digest's table: spec_id -> (sha256, bytes, database_runs, run_id).
    fn rows(&self) -> Vec<(String, String, i64, Option<i64>, i64)> {
        let conn = self.read();
        let mut statement = conn
            .prepare(&format!(
                "SELECT spec_id, digest_sha256, markdown_bytes, database_runs, run_id \
                 FROM {TABLE} ORDER BY spec_id"
            ))
            .unwrap();
        statement
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}

fn sha256_of(path: &Path) -> String {
    speckit_testkit::digest::sha256_file(path).unwrap()
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Each row's digest is the file on disk, byte for byte; returns the rows' run ids.
fn assert_rows_match_files(ws: &Workspace, database_runs: &[(&str, i64)]) -> Vec<i64> {
    let rows = ws.rows();
    let specs: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(specs, ["SPEC-KIT-101", "SPEC-KIT-102"], "one row per SPEC");
    for ((spec, sha, bytes, runs, _), (expected_spec, expected_runs)) in
        rows.iter().zip(database_runs)
    {
        assert_eq!(spec, expected_spec);
        let file = ws.digest(spec);
        assert_eq!(*sha, sha256_of(&file), "{spec}: digest_sha256 of {file:?}");
        assert_eq!(*bytes as u64, fs::metadata(&file).unwrap().len(), "{spec}");
        assert_eq!(*runs, Some(*expected_runs), "{spec}: database_runs");
    }
    rows.iter().map(|r| r.4).collect()
}

#[test]
fn the_digest_keeps_one_row_per_spec_in_its_own_table_matching_the_files() {
    let ws = Workspace::new();

    // A dry run first: nothing on disk, no row, but the report says what would be written.
    let dry = ws.dry_run();
    let data = &dry["report"]["data"];
    assert_eq!(data["dry_run"], true, "{data}");
    assert_eq!(data["digests_would_write"], 2, "{data}");
    assert_eq!(data["rows_would_write"], 2, "{data}");
    assert_eq!(data["rows_written"], 0, "{data}");
    assert_eq!(
        data["per_spec"]["SPEC-KIT-101"]["consensus_runs"]["rows"],
        3
    );
    assert!(
        !ws.path().join("digests").exists(),
        "a dry run created the output folder"
    );
    {
        let conn = ws.read();
        // The engine applies the migration before any run of the plugin, dry or not.
        assert_eq!(
            count(&conn, &format!("SELECT count(*) FROM {TABLE}")),
            0,
            "a dry run wrote rows"
        );
    }

    // The first real run: the migration is recorded, the files and rows agree.
    let first = ws.run_once();
    let data = &first["data"];
    assert_eq!(data["table"], TABLE, "{data}");
    assert_eq!(data["digests_written"], 2, "{data}");
    assert_eq!(data["rows_written"], 2, "{data}");
    assert_eq!(data["consensus_runs_table"], true, "{data}");
    // SPEC-KIT-999 has rows but no evidence: not digested, not counted.
    assert_eq!(data["consensus_runs_rows"], 4, "{data}");
    assert_eq!(
        data["per_spec"]["SPEC-KIT-101"]["consensus_runs"]["rows"],
        3
    );
    assert_eq!(
        data["per_spec"]["SPEC-KIT-102"]["consensus_runs"]["rows"],
        1
    );
    assert_eq!(
        data["per_spec"]["SPEC-KIT-101"]["digest_sha256"],
        sha256_of(&ws.digest("SPEC-KIT-101")),
        "the report's figure is the file's"
    );
    {
        let conn = ws.read();
        assert_eq!(
            count(
                &conn,
                &format!(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '{TABLE}'"
                )
            ),
            1,
            "{TABLE} exists"
        );
        assert_eq!(
            count(
                &conn,
                &format!(
                    "SELECT version FROM hygiene_schema_versions WHERE component = '{COMPONENT}'"
                )
            ),
            1
        );
    }
    let run_ids = assert_rows_match_files(&ws, &[("SPEC-KIT-101", 3), ("SPEC-KIT-102", 1)]);
    let first_id = first["run_id"].as_i64().unwrap();
    assert_eq!(run_ids, [first_id, first_id], "rows carry the run's id");
    let spec_101 = fs::read_to_string(ws.digest("SPEC-KIT-101")).unwrap();
    assert!(
        spec_101.contains(
            "Database: 3 `consensus_runs` rows; latest: spec-unlock at 2025-10-12T16:43:43Z (consensus not ok, degraded)."
        ),
        "{spec_101}"
    );
    let spec_102 = fs::read_to_string(ws.digest("SPEC-KIT-102")).unwrap();
    assert!(
        spec_102.contains(
            "Database: 1 `consensus_runs` row; latest: spec-plan at 2025-11-11T02:33:20Z (consensus ok)."
        ),
        "{spec_102}"
    );

    // The host records another run: the second run rewrites that digest and updates both
    // rows in place (same keys, this run's id), with no duplicate.
    ws.host_records_run("SPEC-KIT-102", "spec-tasks", 1762900000000);
    let second = ws.run_once();
    let data = &second["data"];
    assert_eq!(data["digests_written"], 1, "{data}");
    assert_eq!(data["digests_unchanged"], 1, "{data}");
    assert_eq!(data["rows_written"], 2, "{data}");
    let second_id = second["run_id"].as_i64().unwrap();
    assert_ne!(second_id, first_id);
    let run_ids = assert_rows_match_files(&ws, &[("SPEC-KIT-101", 3), ("SPEC-KIT-102", 2)]);
    assert_eq!(run_ids, [second_id, second_id], "rows updated by the rerun");
    let spec_102 = fs::read_to_string(ws.digest("SPEC-KIT-102")).unwrap();
    assert!(
        spec_102.contains("Database: 2 `consensus_runs` rows; latest: spec-tasks at"),
        "{spec_102}"
    );

    // A dry run after a further host run: it would rewrite SPEC-KIT-102, but neither the
    // file nor any row changes.
    ws.host_records_run("SPEC-KIT-102", "spec-unlock", 1762990000000);
    let rows_before = ws.rows();
    let file_before = fs::read(ws.digest("SPEC-KIT-102")).unwrap();
    let dry = ws.dry_run();
    let data = &dry["report"]["data"];
    assert_eq!(data["digests_would_write"], 1, "{data}");
    assert_eq!(data["rows_would_write"], 2, "{data}");
    assert_eq!(data["rows_written"], 0, "{data}");
    assert_eq!(
        data["per_spec"]["SPEC-KIT-102"]["consensus_runs"]["rows"],
        3
    );
    assert_eq!(ws.rows(), rows_before, "a dry run changed rows");
    assert_eq!(
        fs::read(ws.digest("SPEC-KIT-102")).unwrap(),
        file_before,
        "a dry run changed a digest"
    );
}
