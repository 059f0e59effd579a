//! The engine's footprint in the host's database: job runs are recorded and pruned to the
//! policy's bounds, a read-only engine records nothing, and a plugin's tables appear only
//! when the plugin first runs.

use rusqlite::{Connection, OpenFlags};
use speckit_engine::plugin::BoxFuture;
use speckit_engine::storage::{schema, ComponentSchema, Migration};
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
        apply: |conn| conn.execute_batch("CREATE TABLE IF NOT EXISTS hygiene_probe (n INTEGER)"),
    }],
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
    fn jobs(&self) -> Vec<String> {
        vec!["probe".into()]
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
