//! The engine's footprint in the host's database: job runs are recorded and pruned to the
//! policy's bounds, a read-only engine records nothing, and a plugin's tables appear only
//! when the plugin first runs.

use rusqlite::{Connection, OpenFlags};
use speckit_engine::plugin::BoxFuture;
use speckit_engine::storage::{schema, ComponentSchema, Migration, MigrationStep};
use speckit_engine::{
    Engine, EngineOptions, JobContext, JobReport, JobTrigger, Plugin, PluginError,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

static PROBE_SCHEMA: ComponentSchema = ComponentSchema {
    component: "probe",
    migrations: &[Migration {
        version: 1,
        name: "probe table",
        apply: MigrationStep::Code(|conn| {
            conn.execute_batch("CREATE TABLE IF NOT EXISTS hygiene_probe (n INTEGER)")
        }),
    }],
    sandbox: None,
};

/// A plugin that owns one table and writes a row to it when it runs.
struct Probe;

impl Plugin for Probe {
    fn name(&self) -> &str {
        "probe"
    }
    fn version(&self) -> &str {
        "0.0.0"
    }
    fn jobs(&self) -> Vec<speckit_engine::policy::JobSpec> {
        vec![speckit_engine::policy::JobSpec::on_request("probe")]
    }
    fn schema(&self) -> Option<&'static ComponentSchema> {
        Some(&PROBE_SCHEMA)
    }
    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async move {
            if ctx.storage.is_writable() {
                ctx.storage
                    .write(|tx| {
                        tx.execute("INSERT INTO hygiene_probe (n) VALUES (1)", [])
                            .map_err(speckit_engine::storage::sql_error(tx))
                    })
                    .await?;
            }
            Ok(JobReport::new("probed", serde_json::json!({})))
        })
    }
}

fn workspace(dir: &Path, extra: &str) -> (PathBuf, PathBuf) {
    let db = dir.join("consensus.db");
    let config = dir.join("speckit.toml");
    std::fs::write(
        &config,
        format!("[storage]\ndatabase_path = \"consensus.db\"\n{extra}"),
    )
    .unwrap();
    (config, db)
}

async fn engine(config: &Path, read_only: bool) -> Engine {
    let mut options = EngineOptions::new(config);
    options.env = Vec::new();
    options.read_only = read_only;
    Engine::start(options, vec![Arc::new(Probe) as Arc<dyn Plugin>])
        .await
        .unwrap()
}

fn count(db: &Path, sql: &str) -> i64 {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_plugins_tables_appear_when_it_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = workspace(dir.path(), "");
    let engine = engine(&config, false).await;
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    assert!(
        !schema::table_exists(&conn, "hygiene_probe").unwrap(),
        "not before it runs"
    );
    let run = engine
        .run_job("probe", JobTrigger::Manual, serde_json::Value::Null)
        .await
        .unwrap();
    assert!(run.run_id > 0);
    assert!(schema::table_exists(&conn, "hygiene_probe").unwrap());
    assert_eq!(schema::recorded_version(&conn, "probe").unwrap(), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM hygiene_probe"), 1);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_read_only_engine_records_no_job_run_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = workspace(dir.path(), "");
    let engine = engine(&config, true).await;
    assert!(!engine.storage().exists());
    let run = engine
        .run_job("probe", JobTrigger::Manual, serde_json::Value::Null)
        .await
        .unwrap();
    assert_eq!(run.run_id, 0, "not recorded");
    assert_eq!(run.report.unwrap().summary, "probed");
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    assert!(!db.exists(), "no database created by a read-only engine");

    // On an existing database: still no row.
    let writer = self::engine(&config, false).await;
    writer.shutdown(std::time::Duration::from_secs(5)).await;
    let reader = self::engine(&config, true).await;
    reader
        .run_job("probe", JobTrigger::Manual, serde_json::Value::Null)
        .await
        .unwrap();
    reader.shutdown(std::time::Duration::from_secs(5)).await;
    assert_eq!(count(&db, "SELECT count(*) FROM hygiene_job_runs"), 0);
}

#[tokio::test]
async fn job_history_is_pruned_to_the_policys_row_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = workspace(dir.path(), "[schedule]\njob_history_max_rows = 3\n");
    let engine = engine(&config, false).await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        let run = engine
            .run_job("probe", JobTrigger::Manual, serde_json::Value::Null)
            .await
            .unwrap();
        ids.push(run.run_id);
    }
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    assert_eq!(count(&db, "SELECT count(*) FROM hygiene_job_runs"), 3);
    assert_eq!(
        count(&db, "SELECT min(id) FROM hygiene_job_runs"),
        ids[4],
        "the newest are kept"
    );
}

#[tokio::test]
async fn job_history_is_pruned_to_the_policys_age_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = workspace(dir.path(), "[schedule]\njob_history_days = 30\n");
    let writer = engine(&config, false).await;
    writer
        .run_job("probe", JobTrigger::Manual, serde_json::Value::Null)
        .await
        .unwrap();
    writer.shutdown(std::time::Duration::from_secs(5)).await;
    // Age the first run by 31 days, leave one running row as old: it is never pruned.
    let conn = Connection::open(&db).unwrap();
    let old = chrono::Utc::now().timestamp_millis() - 31 * 86_400_000;
    conn.execute(
        "UPDATE hygiene_job_runs SET started_at = ?1, finished_at = ?1",
        [old],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO hygiene_job_runs (job, plugin, engine_id, trigger, started_at, outcome) VALUES ('probe', 'probe', 'x', 'manual', ?1, 'running')",
        [old],
    )
    .unwrap();
    drop(conn);
    let engine = engine(&config, false).await;
    engine
        .run_job("probe", JobTrigger::Manual, serde_json::Value::Null)
        .await
        .unwrap();
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    assert_eq!(count(&db, "SELECT count(*) FROM hygiene_job_runs WHERE started_at = 0 + (SELECT min(started_at) FROM hygiene_job_runs) AND outcome = 'running'"), 1);
    assert_eq!(
        count(&db, "SELECT count(*) FROM hygiene_job_runs"),
        2,
        "the old finished run is gone"
    );
}

/// An ID in the form `identity::new_engine_id` makes, for a process that has ended.
fn dead_engine_id() -> String {
    let live = speckit_engine::identity::new_engine_id();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    // Same start ticks, boot and host as this process, another (ended) pid.
    let (_, rest) = live.split_once('-').unwrap();
    let (_, rest) = rest.split_once('-').unwrap();
    format!("engine-{pid}-{rest}")
}

#[tokio::test]
async fn runs_and_leases_of_an_engine_that_died_are_abandoned_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = workspace(dir.path(), "");
    engine(&config, false)
        .await
        .shutdown(std::time::Duration::from_secs(5))
        .await;
    let dead = dead_engine_id();
    let live = speckit_engine::identity::new_engine_id();
    assert_eq!(
        speckit_engine::identity::liveness(&dead),
        speckit_engine::identity::Liveness::Dead,
        "{dead}"
    );
    {
        let conn = Connection::open(&db).unwrap();
        for (job, owner) in [
            ("vacuum", &dead),
            ("cleanup", &live),
            ("other", &"engine-1-abc".to_string()),
        ] {
            conn.execute(
                "INSERT INTO hygiene_job_runs (job, plugin, engine_id, trigger, started_at, outcome) VALUES (?1, 'x', ?2, 'schedule', 1000, 'running')",
                rusqlite::params![job, owner],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO hygiene_schedule_state (job, last_fire_at, lease_owner, lease_expires_at) VALUES (?1, 1000, ?2, 99999999999999)",
                rusqlite::params![job, owner],
            )
            .unwrap();
        }
    }
    // A read-only engine judges nothing.
    engine(&config, true)
        .await
        .shutdown(std::time::Duration::from_secs(5))
        .await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM hygiene_job_runs WHERE outcome = 'running'"
        ),
        3
    );

    let writer = engine(&config, false).await;
    let outcome = |job: &str| -> (String, Option<String>) {
        Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap()
            .query_row(
                "SELECT r.outcome, s.lease_owner FROM hygiene_job_runs r JOIN hygiene_schedule_state s USING (job) WHERE job = ?1",
                [job],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    assert_eq!(
        outcome("vacuum"),
        ("abandoned".to_string(), None),
        "the dead engine's run and lease"
    );
    assert_eq!(
        outcome("cleanup"),
        ("running".to_string(), Some(live.clone())),
        "a live engine is left alone"
    );
    assert_eq!(
        outcome("other"),
        ("running".to_string(), Some("engine-1-abc".to_string())),
        "an ID it cannot judge is left alone"
    );
    let runs = speckit_engine::history::recent(writer.storage(), 10)
        .await
        .unwrap();
    let vacuum = runs.iter().find(|r| r.job == "vacuum").unwrap();
    assert!(vacuum.finished_at.is_some());
    assert!(
        vacuum.error.as_deref().unwrap_or_default().contains(&dead),
        "{vacuum:?}"
    );
    writer.shutdown(std::time::Duration::from_secs(5)).await;
}
