//! Job options and policy: `dry_run` changes nothing, the free-fraction threshold holds
//! unless `force`, and a malformed option is refused before anything happens.

mod common;

use common::*;
use rusqlite::Connection;
use speckit_engine::events::JobOutcome;
use speckit_engine::Engine;
use speckit_vacuum::report::{Action, Outcome};
use std::path::Path;
use std::time::Duration;

/// Checkpoints everything into the database file, so the file alone holds the database.
async fn checkpoint(engine: &Engine) {
    engine
        .storage()
        .maintain(|conn| {
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .map_err(|e| speckit_engine::StorageError::Other(e.to_string()))
        })
        .await
        .unwrap();
}

async fn state(engine: &Engine) -> DbState {
    engine.storage().read(|c| Ok(db_state(c))).await.unwrap()
}

async fn dry_run_changes_nothing(db: &Path, expected: Action) {
    let dir = db.parent().unwrap();
    let engine = engine(dir, db, "").await;
    checkpoint(&engine).await;
    let digest_before = file_digest(db);
    let state_before = state(&engine).await;

    let run = run_job(&engine, "vacuum", serde_json::json!({"dry_run": true})).await;
    assert_succeeded(&run);
    let report = report_of(&run);
    assert_eq!(report.outcome, Outcome::DryRun);
    assert_eq!(report.action, expected);
    assert!(report.dry_run);
    assert_eq!(report.would_free_pages, Some(state_before.freelist_count));
    assert_eq!(
        report.would_free_bytes,
        Some(state_before.freelist_count as u64 * 4096)
    );
    assert_eq!(report.pages_freed, 0);
    assert_eq!(report.chunks, 0);
    assert!(!report.migrated);
    assert_eq!(report.bytes_after, report.bytes_before);
    let summary = &run.report.as_ref().unwrap().summary;
    assert!(summary.starts_with("dry run, nothing changed"), "{summary}");

    // The job's own bookkeeping row went to the WAL; the database file is byte for byte
    // what it was, and SQLite's view of it too.
    match (digest_before, file_digest(db)) {
        (Some(before), Some(after)) => assert_eq!(before, after, "database file changed"),
        _ => eprintln!("note: no sha256sum(1); compared SQLite's view only"),
    }
    assert_eq!(state(&engine).await, state_before);
    engine.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn dry_run_changes_nothing_on_a_none_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    speckit_testkit::database::create_bloated(&db, 4 * 1024 * 1024, 3, &[], 0).unwrap();
    dry_run_changes_nothing(&db, Action::Migrate).await;
    let conn = Connection::open(&db).unwrap();
    assert_eq!(db_state(&conn).auto_vacuum, 0, "still NONE");
}

#[tokio::test]
async fn dry_run_changes_nothing_on_an_incremental_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    incremental_db(&db, 3, 200, 8 * 1024);
    dry_run_changes_nothing(&db, Action::Incremental).await;
}

#[tokio::test]
async fn below_the_threshold_nothing_is_vacuumed_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    // About 5% of the pages free, under a 10% threshold.
    incremental_db(&db, 380, 20, 8 * 1024);
    let engine = engine(dir.path(), &db, "[vacuum]\nfree_fraction_threshold = 0.1\n").await;
    let before = state(&engine).await;
    let fraction = before.freelist_count as f64 / before.page_count as f64;
    assert!(
        fraction > 0.02 && fraction < 0.1,
        "free fraction {fraction}"
    );

    // A scheduled run passes no options.
    let run = run_job(&engine, "vacuum", serde_json::Value::Null).await;
    assert_succeeded(&run);
    let report = report_of(&run);
    assert_eq!(report.action, Action::None);
    assert_eq!(report.pages_freed, 0);
    let reason = report.reason.as_deref().unwrap();
    assert!(reason.contains("below the threshold of 10.00%"), "{reason}");
    assert!(reason.contains("--force"), "{reason}");
    assert_eq!(state(&engine).await, before, "nothing changed");

    let run = run_job(&engine, "vacuum", serde_json::json!({"force": true})).await;
    assert_succeeded(&run);
    let report = report_of(&run);
    assert_eq!(report.action, Action::Incremental);
    assert!(report.forced);
    assert_eq!(report.pages_freed, before.freelist_count);
    assert_eq!(state(&engine).await.freelist_count, 0);

    // With no free page left, even --force has nothing to do.
    let run = run_job(&engine, "vacuum", serde_json::json!({"force": true})).await;
    assert_succeeded(&run);
    assert_eq!(report_of(&run).action, Action::None);
    engine.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn malformed_options_are_refused_before_anything_happens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus.db");
    incremental_db(&db, 3, 100, 8 * 1024);
    let engine = engine(dir.path(), &db, "").await;
    let before = state(&engine).await;
    for (args, expected) in [
        (
            serde_json::json!({"dryrun": true}),
            "option dryrun: unknown field `dryrun`",
        ),
        (
            serde_json::json!({"force": "yes"}),
            "option force: invalid type: string \"yes\", expected a boolean",
        ),
        (serde_json::json!([true]), "must be an object"),
    ] {
        let run = run_job(&engine, "vacuum", args.clone()).await;
        assert_eq!(run.outcome, JobOutcome::Failed, "{args}");
        assert_eq!(
            run.error_kind,
            Some(speckit_engine::JobErrorKind::InvalidOptions)
        );
        let error = run.error.unwrap_or_default();
        assert!(error.contains(expected), "{args}: {error}");
    }
    let run = run_job(&engine, "integrity_check", serde_json::json!({"x": 1})).await;
    assert_eq!(run.outcome, JobOutcome::Failed);
    assert_eq!(state(&engine).await, before, "nothing changed");
    engine.shutdown(Duration::from_secs(10)).await;
}
