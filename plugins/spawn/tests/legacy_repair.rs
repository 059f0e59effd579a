//! Spawn's schema version 1 repairs what speckit-hygiene 0.1's spawn wrote into the host's
//! tables: the `consensus_runs` rows it created as carriers of its figures (with their
//! `agent_outputs`) go, and its ISO 8601 times are rewritten in the host's format. The
//! host's own rows are left exactly as they were.

mod support;

use rusqlite::{params, Connection, OptionalExtension};

use speckit_engine::storage::{host, StorageOptions};
use speckit_engine::Storage;
use speckit_spawn::{spawn_agents, SpawnRequest, SPAWN_SCHEMA};
use support::*;

/// 0.1's migration 4, as it shipped.
const OLD_SPAWN_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS hygiene_spawn_batches (
    batch_id TEXT PRIMARY KEY,
    spec_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    agent_count INTEGER NOT NULL,
    max_concurrency INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    total_us INTEGER,
    ok_count INTEGER,
    failed_count INTEGER,
    consensus_run_id INTEGER REFERENCES consensus_runs(id) ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS idx_hygiene_spawn_batches_started ON hygiene_spawn_batches(started_at);
CREATE INDEX IF NOT EXISTS idx_hygiene_spawn_batches_run ON hygiene_spawn_batches(consensus_run_id);
CREATE TABLE IF NOT EXISTS hygiene_spawn_metrics (
    batch_id TEXT NOT NULL REFERENCES hygiene_spawn_batches(batch_id) ON DELETE CASCADE,
    agent_id TEXT NOT NULL,
    agent_name TEXT NOT NULL,
    queued_us INTEGER NOT NULL,
    spawn_us INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    error TEXT,
    PRIMARY KEY (batch_id, agent_name)
);
"#;

const BATCH_A: &str = "20261202T124921Z-0000000a";
const BATCH_B: &str = "20261202T130000Z-0000000b";
const HOST_SYNTHESIS: &str = r#"{"verdict":"the host's synthesis"}"#;

/// The synthesis 0.1 wrote: `serde_json::json!` sorts keys, so `source` is not first.
fn old_synthesis(batch: &str, completed: i64) -> String {
    serde_json::json!({
        "source": "speckit-hygiene spawn",
        "batch_id": batch,
        "agents_expected": 2,
        "agents_completed": completed,
        "agents_failed": 2 - completed,
    })
    .to_string()
}

/// A database as 0.1 left it after two spawn batches of SPEC-KIT-900's plan stage, on top
/// of the host's own rows. Returns the ids of the host's consensus run and of the carriers.
fn build_old_layout(path: &std::path::Path) -> (i64, i64, i64) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    host::complete(&conn).unwrap();
    conn.execute_batch(OLD_SPAWN_TABLES).unwrap();
    conn.execute_batch("PRAGMA user_version = 4").unwrap();

    // The host's own result and rows: older than the carriers, so the host's reader
    // showed a carrier instead.
    conn.execute(
        "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, degraded, synthesis_json) VALUES ('SPEC-KIT-900', 'plan', 1000, 1, 0, ?1)",
        [HOST_SYNTHESIS],
    )
    .unwrap();
    let host_run = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO agent_outputs (run_id, agent_name, model_version, content, output_timestamp) VALUES (?1, 'gemini', 'g-2.5', 'host output', 1000)",
        [host_run],
    )
    .unwrap();
    conn.execute_batch(
        "INSERT INTO agent_executions (agent_id, spec_id, stage, phase_type, agent_name, run_id, spawned_at, completed_at, response_text)
             VALUES ('host-1', 'SPEC-KIT-900', 'plan', 'regular_stage', 'gemini', 'host-run', '2026-12-01 08:00:00', '2026-12-01 08:01:00', 'host output');
         -- someone else's row in ISO format is not ours to rewrite
         INSERT INTO agent_executions (agent_id, spec_id, stage, phase_type, agent_name, run_id, spawned_at)
             VALUES ('other-1', 'SPEC-KIT-900', 'plan', 'regular_stage', 'gemini', 'other-run', '2026-12-01T08:00:00.000Z');",
    )
    .unwrap();

    // Batch A: both agents succeeded; carrier 1 holds both outputs. The synthesis as 0.1's
    // serde_json wrote it (keys sorted).
    // Batch B: one agent failed; the other's row had been completed before its output was
    // recorded, so 0.1 wrote its response only to agent_outputs. Its carrier's synthesis
    // starts with `source` (as a hand-written or reordered one would).
    let mut carriers = Vec::new();
    for (batch, started, synthesis) in [
        (BATCH_A, 1_800_000_000_000i64, old_synthesis(BATCH_A, 2)),
        (
            BATCH_B,
            1_800_000_100_000,
            format!(
                r#"{{"source":"speckit-hygiene spawn","batch_id":"{BATCH_B}","agents_completed":1}}"#
            ),
        ),
    ] {
        conn.execute(
            "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, degraded, synthesis_json) VALUES ('SPEC-KIT-900', 'plan', ?1, 0, 0, ?2)",
            params![started, synthesis],
        )
        .unwrap();
        let run = conn.last_insert_rowid();
        carriers.push(run);
        conn.execute(
            "INSERT INTO hygiene_spawn_batches (batch_id, spec_id, stage, agent_count, max_concurrency, started_at, total_us, ok_count, failed_count, consensus_run_id) VALUES (?1, 'SPEC-KIT-900', 'plan', 2, 8, ?2, 5000, 2, 0, ?3)",
            params![batch, started, run],
        )
        .unwrap();
        for agent in ["gemini", "claude"] {
            conn.execute(
                "INSERT INTO hygiene_spawn_metrics (batch_id, agent_id, agent_name, queued_us, spawn_us, ok, error) VALUES (?1, ?2, ?3, 0, 2000, 1, NULL)",
                params![batch, format!("{batch}-{agent}"), agent],
            )
            .unwrap();
        }
    }
    /// batch, agent, spawned_at, completed_at, response_text, extraction_error
    type LegacyExecution<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let ae = "INSERT INTO agent_executions (agent_id, spec_id, stage, phase_type, agent_name, run_id, spawned_at, completed_at, response_text, extraction_error) VALUES (?1, 'SPEC-KIT-900', 'plan', 'regular_stage', ?2, ?3, ?4, ?5, ?6, ?7)";
    let ao = "INSERT INTO agent_outputs (run_id, agent_name, model_version, content, output_timestamp) VALUES (?1, ?2, NULL, ?3, 1800000000500)";
    let rows: [LegacyExecution; 4] = [
        (
            BATCH_A,
            "gemini",
            "2026-12-02T12:49:21.004Z",
            Some("2026-12-02T12:49:25.999Z"),
            Some("A gemini says"),
            None,
        ),
        (
            BATCH_A,
            "claude",
            "2026-12-02T12:49:21.010Z",
            Some("2026-12-02T12:50:01.500Z"),
            Some("A claude says"),
            None,
        ),
        (
            BATCH_B,
            "gemini",
            "2026-12-02T13:00:00.001Z",
            Some("2026-12-02T13:00:02.000Z"),
            None,
            Some("its handle was dropped before it finished; killed"),
        ),
        (
            BATCH_B,
            "claude",
            "2026-12-02T13:00:00.002Z",
            None,
            None,
            Some("exited with exit status 1"),
        ),
    ];
    for (batch, agent, spawned, completed, response, error) in rows {
        conn.execute(
            ae,
            params![
                format!("{batch}-{agent}"),
                agent,
                batch,
                spawned,
                completed,
                response,
                error
            ],
        )
        .unwrap();
    }
    // Outputs: both of A; B's gemini (whose row holds no response).
    conn.execute(ao, params![carriers[0], "gemini", "A gemini says"])
        .unwrap();
    conn.execute(ao, params![carriers[0], "claude", "A claude says"])
        .unwrap();
    conn.execute(ao, params![carriers[1], "gemini", "B gemini says"])
        .unwrap();
    (host_run, carriers[0], carriers[1])
}

fn one<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> T {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_schema_repairs_what_the_old_spawn_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("consensus.db");
    let (host_run, carrier_a, carrier_b) = build_old_layout(&path);

    let storage = Storage::open(StorageOptions::new(&path)).unwrap();
    storage.ensure_schema(&SPAWN_SCHEMA).await.unwrap();
    // Once per database: a second storage finds the version and changes nothing.
    storage.close();
    drop(storage);
    let storage = Storage::open(StorageOptions::new(&path)).unwrap();
    storage.ensure_schema(&SPAWN_SCHEMA).await.unwrap();
    storage.close();
    drop(storage);

    let conn = Connection::open(&path).unwrap();
    assert_eq!(
        one::<i64>(
            &conn,
            "SELECT version FROM hygiene_schema_versions WHERE component = 'spawn'"
        ),
        1
    );
    // Carriers gone, with their outputs; the host's run and output untouched.
    let runs: Vec<(i64, Option<String>)> = {
        let mut stmt = conn
            .prepare("SELECT id, synthesis_json FROM consensus_runs ORDER BY id")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(runs, vec![(host_run, Some(HOST_SYNTHESIS.to_string()))]);
    assert_eq!(
        one::<i64>(
            &conn,
            &format!("SELECT count(*) FROM consensus_runs WHERE id IN ({carrier_a}, {carrier_b})")
        ),
        0
    );
    let outputs: Vec<(i64, String)> = {
        let mut stmt = conn
            .prepare("SELECT run_id, content FROM agent_outputs")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(outputs, vec![(host_run, "host output".to_string())]);
    // The host's reader shows its own synthesis again.
    let latest: Option<String> = conn
        .query_row(
            "SELECT synthesis_json FROM consensus_runs WHERE spec_id = ?1 AND stage = ?2 ORDER BY run_timestamp DESC LIMIT 1",
            ["SPEC-KIT-900", "plan"],
            |r| r.get(0),
        )
        .optional()
        .unwrap()
        .flatten();
    assert_eq!(latest.as_deref(), Some(HOST_SYNTHESIS));
    assert_eq!(
        one::<i64>(
            &conn,
            "SELECT count(*) FROM hygiene_spawn_batches WHERE consensus_run_id IS NOT NULL"
        ),
        0
    );

    // Nothing was lost: every response is on its execution row (B's gemini's moved there
    // from its output).
    let responses: Vec<(String, Option<String>)> = {
        let mut stmt = conn
            .prepare("SELECT agent_id, response_text FROM agent_executions WHERE run_id LIKE '2026%' ORDER BY agent_id")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    let id = |b: &str, a: &str| format!("{b}-{a}");
    assert_eq!(
        responses,
        vec![
            (id(BATCH_A, "claude"), Some("A claude says".into())),
            (id(BATCH_A, "gemini"), Some("A gemini says".into())),
            (id(BATCH_B, "claude"), None),
            (id(BATCH_B, "gemini"), Some("B gemini says".into())),
        ]
    );

    // Times in the host's format, truncated like datetime('now'); NULL stays NULL.
    let time = |agent_id: String, column: &str| -> Option<String> {
        conn.query_row(
            &format!("SELECT {column} FROM agent_executions WHERE agent_id = ?1"),
            [agent_id],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(
        time(id(BATCH_A, "gemini"), "spawned_at").as_deref(),
        Some("2026-12-02 12:49:21")
    );
    assert_eq!(
        time(id(BATCH_A, "gemini"), "completed_at").as_deref(),
        Some("2026-12-02 12:49:25")
    );
    assert_eq!(
        time(id(BATCH_A, "claude"), "completed_at").as_deref(),
        Some("2026-12-02 12:50:01")
    );
    assert_eq!(
        time(id(BATCH_B, "claude"), "spawned_at").as_deref(),
        Some("2026-12-02 13:00:00")
    );
    assert_eq!(time(id(BATCH_B, "claude"), "completed_at"), None);
    assert_eq!(
        one::<i64>(&conn, "SELECT count(*) FROM agent_executions WHERE run_id LIKE '2026%' AND (instr(spawned_at, 'T') > 0 OR instr(completed_at, 'T') > 0)"),
        0
    );
    // Rows spawn did not write are left as they were.
    assert_eq!(
        time("host-1".into(), "spawned_at").as_deref(),
        Some("2026-12-01 08:00:00")
    );
    assert_eq!(
        time("other-1".into(), "spawned_at").as_deref(),
        Some("2026-12-01T08:00:00.000Z")
    );
    // Spawn's own figures are kept.
    assert_eq!(
        one::<i64>(&conn, "SELECT count(*) FROM hygiene_spawn_batches"),
        2
    );
    assert_eq!(
        one::<i64>(&conn, "SELECT count(*) FROM hygiene_spawn_metrics"),
        4
    );
    assert_eq!(one::<String>(&conn, "PRAGMA integrity_check"), "ok");
    assert_eq!(
        one::<i64>(&conn, "SELECT count(*) FROM pragma_foreign_key_check"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_holding_the_only_copy_of_a_response_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("consensus.db");
    let (_, carrier_a, carrier_b) = build_old_layout(&path);
    {
        // Batch A's claude row is gone (say, cleaned up): its output is the only copy.
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "DELETE FROM agent_executions WHERE agent_id = ?1",
            [format!("{BATCH_A}-claude")],
        )
        .unwrap();
    }
    let storage = Storage::open(StorageOptions::new(&path)).unwrap();
    storage.ensure_schema(&SPAWN_SCHEMA).await.unwrap();
    storage.close();
    drop(storage);
    let conn = Connection::open(&path).unwrap();
    assert_eq!(
        one::<i64>(
            &conn,
            &format!("SELECT count(*) FROM consensus_runs WHERE id = {carrier_a}")
        ),
        1
    );
    assert_eq!(
        one::<i64>(
            &conn,
            &format!("SELECT count(*) FROM agent_outputs WHERE run_id = {carrier_a}")
        ),
        2
    );
    assert_eq!(
        one::<i64>(
            &conn,
            &format!("SELECT count(*) FROM consensus_runs WHERE id = {carrier_b}")
        ),
        0
    );
    // Times are rewritten all the same.
    assert_eq!(
        one::<i64>(&conn, "SELECT count(*) FROM agent_executions WHERE run_id LIKE '2026%' AND instr(spawned_at, 'T') > 0"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_runs_and_reports_on_a_repaired_legacy_database() {
    let fx = Fixture::new();
    let path = fx.storage.path().to_path_buf();
    fx.storage.close();
    std::fs::remove_file(&path).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    build_old_layout(&path);
    let storage = Storage::open(StorageOptions::new(&path)).unwrap();

    // Read-only, before spawn's schema ran: the old tables are read as they are.
    let read_only = Storage::open_read_only(StorageOptions::new(&path)).unwrap();
    let stats = speckit_spawn::stats::load(&read_only).await.unwrap();
    assert_eq!((stats.batches, stats.agents), (2, 4));

    let policy = fx.policy(
        vec![shell("solo", "printf hi > \"$1\"", &["{output_file}"])],
        |_| {},
    );
    let batch = spawn_agents(
        &storage,
        &policy,
        &fx.events,
        SpawnRequest::new(spec("SPEC-KIT-900"), "plan", "p"),
    )
    .await
    .unwrap();
    for handle in batch.handles {
        assert!(handle.wait().await.unwrap().succeeded());
    }
    let stats = speckit_spawn::stats::load(&storage).await.unwrap();
    assert_eq!((stats.batches, stats.agents, stats.agents_ok), (3, 5, 5));
    let new_batch: Option<i64> = storage
        .read(move |c| {
            c.query_row(
                "SELECT consensus_run_id FROM hygiene_spawn_batches WHERE batch_id = ?1",
                [batch.metrics.batch_id],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(new_batch, None);
    assert_eq!(
        storage
            .read(
                |c| c.query_row("SELECT count(*) FROM consensus_runs", [], |r| r
                    .get::<_, i64>(0))
            )
            .await
            .unwrap(),
        1
    );
}
