//! Spawn is a guest in the host's database: its `agent_executions` rows look like the
//! host's own (times, stage names, phase type), it never writes the host's consensus
//! tables, and its figures live only in its own tables, versioned as component `spawn`.

mod support;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use std::sync::Arc;

use speckit_engine::clock::{Clock, SharedClock};
use speckit_engine::storage::{sql_error, StorageOptions};
use speckit_engine::{Plugin, Storage, StorageError};
use speckit_spawn::{spawn_agents, SpawnError, SpawnPlugin, SpawnRequest, SPAWN_SCHEMA};
use support::*;

/// A wall clock standing still.
#[derive(Debug)]
struct FixedClock(DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// Whether `text` is a time as the host writes it (`datetime('now')`):
/// `YYYY-MM-DD HH:MM:SS`, no `T`, no zone, no fraction.
fn is_host_time(text: &str) -> bool {
    text.len() == 19
        && text.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        })
        && NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").is_ok()
}

/// An agent that writes `answer from <name>` as its response and exits with `code`.
fn answering(name: &str, code: i32) -> speckit_spawn::AgentPolicy {
    shell(
        name,
        &format!("printf 'answer from %s' \"$0\" > \"$1\"; exit {code}"),
        &["{output_file}"],
    )
}

/// The host's reader of a stage's latest result (upstream's `consensus_db.rs`).
async fn host_latest_synthesis(fx: &Fixture, spec: &str, stage: &str) -> Option<Option<String>> {
    let (spec, stage) = (spec.to_string(), stage.to_string());
    fx.storage
        .read(move |c| {
            use rusqlite::OptionalExtension;
            c.query_row(
                "SELECT synthesis_json FROM consensus_runs WHERE spec_id = ?1 AND stage = ?2 ORDER BY run_timestamp DESC LIMIT 1",
                [spec, stage],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
        })
        .await
        .unwrap()
}

type ExecutionRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// (agent_name, stage, phase_type, spawned_at, completed_at, run_id, response_text,
/// extraction_error) of every execution row, by agent name.
async fn executions(fx: &Fixture) -> Vec<ExecutionRow> {
    fx.storage
        .read(|c| {
            let mut stmt = c.prepare(
                "SELECT agent_name, stage, phase_type, spawned_at, completed_at, run_id, response_text, extraction_error FROM agent_executions ORDER BY agent_name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })?;
            rows.collect()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_follow_the_hosts_formats_and_leave_its_consensus_alone() {
    let fx = Fixture::new();
    // The host's own result for the stage, and one of another stage.
    fx.storage
        .write(|tx| {
            tx.execute_batch(
                r#"INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, degraded, synthesis_json)
                       VALUES ('SPEC-KIT-900', 'spec-plan', 1767600000000, 1, 0, '{"verdict":"the host''s synthesis"}');
                   INSERT INTO agent_outputs (run_id, agent_name, model_version, content, output_timestamp)
                       VALUES (last_insert_rowid(), 'gemini', 'g-2.5', 'host output', 1767600000000);
                   INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, degraded, synthesis_json)
                       VALUES ('SPEC-KIT-900', 'spec-tasks', 1767600000001, 1, 0, NULL);"#,
            )
            .map_err(sql_error(tx))
        })
        .await
        .unwrap();
    let before = host_latest_synthesis(&fx, "SPEC-KIT-900", "spec-plan").await;
    assert_eq!(
        before,
        Some(Some(r#"{"verdict":"the host's synthesis"}"#.to_string()))
    );

    let at = Utc
        .with_ymd_and_hms(2026, 10, 3, 12, 42, 58)
        .unwrap()
        .checked_add_signed(chrono::Duration::milliseconds(750))
        .unwrap();
    let clock: SharedClock = Arc::new(FixedClock(at));
    let policy = fx.policy(vec![answering("good", 0), answering("bad", 3)], |_| {});
    let batch = spawn_agents(
        &fx.storage,
        &policy,
        &fx.events,
        SpawnRequest::new(spec("SPEC-KIT-900"), "plan", "p").with_clock(clock),
    )
    .await
    .unwrap();
    assert!(batch.failures.is_empty(), "{:?}", batch.failures);
    assert_eq!(batch.metrics.stage, "spec-plan");
    assert_eq!(batch.metrics.started_at, at);
    let batch_id = batch.metrics.batch_id.clone();
    let mut failure = None;
    for handle in batch.handles {
        let c = handle.wait().await.unwrap();
        if c.agent == "bad" {
            failure = c.failure.as_ref().map(ToString::to_string);
        }
    }
    let failure = failure.expect("bad failed");

    let rows = executions(&fx).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (name, stage, phase, spawned, completed, run_id, response, error) in &rows {
        // The engine's clock, truncated to the second like the host's datetime('now').
        assert_eq!(spawned, "2026-10-03 12:42:58", "{name}");
        assert_eq!(completed.as_deref(), Some("2026-10-03 12:42:58"), "{name}");
        assert!(is_host_time(spawned) && is_host_time(completed.as_deref().unwrap()));
        assert_eq!(stage, "spec-plan");
        assert_eq!(phase, "regular_stage");
        assert_eq!(run_id.as_deref(), Some(batch_id.as_str()));
        assert_eq!(
            response.as_deref(),
            Some(format!("answer from {name}").as_str())
        );
        match name.as_str() {
            "good" => assert_eq!(error, &None),
            _ => assert_eq!(error.as_deref(), Some(failure.as_str())),
        }
    }
    // The same check in SQL, as anyone reading the host's table would.
    assert_eq!(
        fx.count("SELECT count(*) FROM agent_executions WHERE spawned_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]' AND completed_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]'").await,
        2
    );

    // Nothing was added to the host's consensus; its latest result is what it was.
    assert_eq!(fx.count("SELECT count(*) FROM consensus_runs").await, 2);
    assert_eq!(fx.count("SELECT count(*) FROM agent_outputs").await, 1);
    assert_eq!(
        host_latest_synthesis(&fx, "SPEC-KIT-900", "spec-plan").await,
        before
    );
    assert_eq!(
        host_latest_synthesis(&fx, "SPEC-KIT-900", "plan").await,
        None
    );

    // The figures are in spawn's own tables, versioned as component `spawn`.
    assert_eq!(
        fx.count(&format!(
            "SELECT started_at FROM hygiene_spawn_batches WHERE batch_id = '{batch_id}' AND stage = 'spec-plan' AND ok_count = 2"
        ))
        .await,
        at.timestamp_millis()
    );
    assert_eq!(
        fx.count("SELECT version FROM hygiene_schema_versions WHERE component = 'spawn'")
            .await,
        1
    );
    assert_eq!(
        fx.count("SELECT count(*) FROM pragma_table_info('hygiene_spawn_batches') WHERE name = 'consensus_run_id'").await,
        0
    );
    // Evidence files keep the stage as requested.
    let files = files_in(&fx.spec_dir("SPEC-KIT-900"));
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(&format!("spawn_plan_{batch_id}_good_"))),
        "{files:?}"
    );
    assert!(files.contains(&"spawn_metrics.json".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_are_recorded_as_the_host_names_them() {
    let fx = Fixture::new();
    let policy = fx.policy(vec![answering("solo", 0)], |_| {});
    let cases = [
        ("plan", "spec-plan"),
        ("tasks", "spec-tasks"),
        ("implement", "spec-implement"),
        ("validate", "spec-validate"),
        ("audit", "spec-audit"),
        ("unlock", "spec-unlock"),
        ("clarify", "spec-clarify"),
        ("analyze", "spec-analyze"),
        ("checklist", "spec-checklist"),
        ("specify", "speckit.specify"),
        // The host's own names are taken as given...
        ("spec-validate", "spec-validate"),
        ("speckit.specify", "speckit.specify"),
        // ...and so is any other stage.
        ("my_review", "my_review"),
    ];
    let earliest = Utc::now().naive_utc() - chrono::Duration::seconds(1);
    for (requested, recorded) in cases {
        let batch = spawn_agents(
            &fx.storage,
            &policy,
            &fx.events,
            SpawnRequest::new(spec("SPEC-KIT-7"), requested, "p"),
        )
        .await
        .unwrap_or_else(|e| panic!("{requested}: {e}"));
        for handle in batch.handles {
            assert!(handle.wait().await.unwrap().succeeded());
        }
        let id = batch.metrics.batch_id;
        assert_eq!(
            fx.text(&format!(
                "SELECT stage FROM agent_executions WHERE run_id = '{id}'"
            ))
            .await
            .as_deref(),
            Some(recorded),
            "{requested}"
        );
        assert_eq!(
            fx.text(&format!(
                "SELECT stage FROM hygiene_spawn_batches WHERE batch_id = '{id}'"
            ))
            .await
            .as_deref(),
            Some(recorded),
            "{requested}"
        );
    }
    let latest = Utc::now().naive_utc() + chrono::Duration::seconds(1);
    // The system clock by default: UTC, in the host's format.
    for (name, _, _, spawned, completed, ..) in executions(&fx).await {
        for time in [spawned, completed.expect("completed")] {
            assert!(is_host_time(&time), "{name}: {time}");
            let parsed = NaiveDateTime::parse_from_str(&time, "%Y-%m-%d %H:%M:%S").unwrap();
            assert!(
                parsed >= earliest && parsed <= latest,
                "{time} is not now in UTC"
            );
        }
    }
    assert_eq!(fx.count("SELECT count(*) FROM consensus_runs").await, 0);
    assert_eq!(fx.count("SELECT count(*) FROM agent_outputs").await, 0);
}

#[test]
fn the_plugin_declares_its_schema() {
    let schema = SpawnPlugin::new().schema().expect("spawn owns tables");
    assert!(std::ptr::eq(schema, &SPAWN_SCHEMA));
    assert_eq!(schema.component, "spawn");
    assert_eq!(schema.latest_version(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_storage_is_refused_before_any_agent_starts() {
    let fx = Fixture::new();
    let read_only = Storage::open_read_only(StorageOptions::new(fx.storage.path())).unwrap();
    let policy = fx.policy(vec![answering("solo", 0)], |_| {});
    let err = spawn_agents(
        &read_only,
        &policy,
        &fx.events,
        SpawnRequest::new(spec("SPEC-1"), "plan", "p"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SpawnError::Storage(StorageError::NotWritable { .. })),
        "{err:?}"
    );
    assert!(files_in(&fx.spec_dir("SPEC-1")).is_empty());
    assert_eq!(fx.count("SELECT count(*) FROM agent_executions").await, 0);
}
