//! Bad input: a file that is not a SQLite database, a corrupt database (fails the checks,
//! is not vacuumed), and a read-only database. Each gets an error naming the file and the
//! cause, and nothing is lost.

mod common;

use common::*;
use rusqlite::Connection;
use speckit_engine::events::JobOutcome;
use speckit_engine::{Engine, EngineOptions, Plugin};
use speckit_vacuum::report::Outcome;
use speckit_vacuum::VacuumPlugin;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

async fn start(dir: &Path, db: &Path) -> Result<Engine, speckit_engine::EngineError> {
    let config = write_config(dir, db, "");
    let mut options = EngineOptions::new(config);
    options.env.retain(|(k, _)| !k.starts_with("SPECKIT_"));
    let plugins: Vec<Arc<dyn Plugin>> = vec![Arc::new(VacuumPlugin::new())];
    Engine::start(options, plugins).await
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus_artifacts.db");
    let content = "{\"this\": \"is a JSON file, not SQLite\"}\n".repeat(200);
    std::fs::write(&db, &content).unwrap();

    let Err(error) = start(dir.path(), &db).await else {
        panic!("the engine started on a JSON file")
    };
    let error = error.to_string();
    assert!(error.contains(db.to_str().unwrap()), "{error}");
    assert!(error.contains("is not a SQLite database"), "{error}");
    assert_eq!(
        std::fs::read_to_string(&db).unwrap(),
        content,
        "file untouched"
    );
    assert!(!dir.path().join("consensus_artifacts.db-wal").exists());
}

/// Overwrites the header of the b-tree page `page` (1-based) with garbage cell counts.
fn corrupt_page_header(db: &Path, page: i64) {
    let mut file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    // Byte 0 is the page type (kept); bytes 3-4 are the cell count.
    file.seek(SeekFrom::Start(((page - 1) * 4096 + 3) as u64))
        .unwrap();
    file.write_all(&[0xFF, 0xFF]).unwrap();
    file.sync_all().unwrap();
}

#[tokio::test]
async fn a_corrupt_database_fails_the_checks_and_is_not_vacuumed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus_artifacts.db");
    speckit_testkit::database::create_bloated(&db, 2 * 1024 * 1024, 3, &[], 0).unwrap();
    // Let the engine create its tables first, so its start-up later reads nothing broken.
    start(dir.path(), &db)
        .await
        .unwrap()
        .shutdown(Duration::from_secs(10))
        .await;
    let root: i64 = Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'agent_executions'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    corrupt_page_header(&db, root);

    let engine = start(dir.path(), &db)
        .await
        .expect("the engine still starts");
    let before = engine
        .storage()
        .read(|c| {
            Ok((
                c.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))?,
                c.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))?,
            ))
        })
        .await
        .unwrap();
    assert!(before.1 > 400, "plenty of free pages to vacuum");

    let run = run_job(&engine, "vacuum", serde_json::json!({"force": true})).await;
    assert_eq!(run.outcome, JobOutcome::Failed);
    let report = report_of(&run);
    assert_eq!(report.outcome, Outcome::CheckFailed);
    assert!(!report.check.ok);
    assert!(!report.migrated);
    assert_eq!(report.pages_freed, 0);
    assert_eq!(
        (report.page_count_after, report.freelist_after),
        before,
        "not vacuumed"
    );
    let error = &run.report.as_ref().unwrap().errors[0];
    assert!(error.contains(db.to_str().unwrap()), "{error}");
    assert!(error.contains("failed PRAGMA quick_check"), "{error}");
    assert!(
        report.check.output[0].contains("btreeInitPage") && error.contains("btreeInitPage"),
        "the check's own output is in the report and the error: {error}"
    );
    eprintln!("{error}");

    let run = run_job(&engine, "integrity_check", serde_json::Value::Null).await;
    assert_eq!(run.outcome, JobOutcome::Failed);
    let job_report = run.report.as_ref().unwrap();
    assert!(
        job_report.summary.contains("FAILED"),
        "{}",
        job_report.summary
    );
    assert!(job_report.errors[0].contains("failed PRAGMA integrity_check"));
    let output = job_report.data["check"]["output"].as_array().unwrap();
    assert!(!output.is_empty() && output[0] != "ok", "{output:?}");
    engine.shutdown(Duration::from_secs(10)).await;
    let conn = Connection::open(&db).unwrap();
    let auto_vacuum: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(auto_vacuum, 0, "not migrated");
}

/// Helper process: starts an engine on `SPECKIT_VACUUM_HELPER_DB` and runs `vacuum`,
/// answering `started` and the job's outcome, or `error <message>`.
fn helper_engine_on_read_only_database() {
    let Some(db) = helper_db() else { return };
    let dir = db.parent().unwrap().to_path_buf();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut options = EngineOptions::new(dir.join("speckit.toml"));
        options.env.retain(|(k, _)| !k.starts_with("SPECKIT_"));
        let plugins: Vec<Arc<dyn Plugin>> = vec![Arc::new(VacuumPlugin::new())];
        match Engine::start(options, plugins).await {
            Err(e) => answer(&format!("error {}", e.to_string().replace('\n', " "))),
            Ok(engine) => {
                let run = run_job(&engine, "vacuum", serde_json::json!({})).await;
                answer(&format!("started {:?} {:?}", run.outcome, run.error));
                engine.shutdown(Duration::from_secs(10)).await;
            }
        }
    });
}

#[test]
fn a_read_only_database_is_refused_with_its_name() {
    serve_helper(&[(
        "helper_engine_on_read_only_database",
        helper_engine_on_read_only_database,
    )]);
    use std::os::unix::fs::PermissionsExt;
    // Root ignores permission bits, so as root the engine runs as `nobody` in a helper
    // process; the folder stays root's and closed to writing.
    let as_root = unsafe { libc::geteuid() } == 0;
    let nobody = 65534;
    // Two ways to be read-only: the file itself, or its folder (no -wal or -shm file can
    // be created beside a writable file).
    for file_writable in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("consensus_artifacts.db");
        speckit_testkit::database::create_bloated(&db, 1024 * 1024, 3, &[], 0).unwrap();
        write_config(dir.path(), &db, "");
        let original = std::fs::read(&db).unwrap();
        if file_writable {
            // Writable file, but no -wal or -shm file can be made beside it.
            if as_root {
                std::os::unix::fs::chown(&db, Some(nobody), Some(nobody)).unwrap();
            }
        } else {
            std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        let helper = Helper::start_as(
            "helper_engine_on_read_only_database",
            &[("SPECKIT_VACUUM_HELPER_DB", db.display().to_string())],
            as_root.then_some(nobody),
        );
        let line = helper.expect("");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            line.starts_with("error "),
            "file writable {file_writable}: {line}"
        );
        assert!(line.contains(db.to_str().unwrap()), "{line}");
        assert!(line.contains("is read-only"), "{line}");
        assert!(line.contains("and to its folder"), "{line}");
        assert!(helper.finish().success());
        assert_eq!(std::fs::read(&db).unwrap(), original, "file untouched");
        assert!(!dir.path().join("consensus_artifacts.db-wal").exists());
    }
}
