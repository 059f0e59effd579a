//! Migration of an `auto_vacuum = NONE` database: upstream's real case (about 150 MB,
//! over 99% free pages, three live rows), the free-disk check, and the policy switch.

mod common;

use common::*;
use rusqlite::Connection;
use speckit_engine::events::JobOutcome;
use speckit_vacuum::measure::AutoVacuum;
use speckit_vacuum::report::{Action, Outcome};
use speckit_vacuum::VacuumPlugin;
use std::time::{Duration, Instant};

/// B-trees (tables and indexes) in the schema, by name.
fn btrees(conn: &Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE rootpage > 0 ORDER BY name")
        .unwrap();
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    names
}

/// Pages SQLite's b-trees really use (the `dbstat` virtual table), pointer maps aside.
fn pages_in_use(conn: &Connection) -> i64 {
    conn.query_row("SELECT count(*) FROM dbstat", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn upstream_shaped_150mb_database_shrinks_to_its_live_pages() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus_artifacts.db");
    let made = Instant::now();
    let summary = speckit_testkit::database::create_bloated(
        &db,
        150 * 1024 * 1024,
        3,
        &[("SPEC-KIT-900", "plan", 3)],
        chrono::Utc::now().timestamp_millis(),
    )
    .unwrap();
    eprintln!("generated the 150 MB database in {:?}", made.elapsed());
    let (rows_before, btrees_before) = {
        let conn = Connection::open(&db).unwrap();
        (upstream_rows(&conn), btrees(&conn))
    };
    assert!(std::fs::metadata(&db).unwrap().len() > 145 * 1024 * 1024);
    assert!(
        summary.freelist_count * 100 > summary.page_count * 99,
        "{summary:?}"
    );
    assert_eq!(summary.live_executions, 3);

    let engine = engine(dir.path(), &db, "").await;
    let started = Instant::now();
    let run = run_job(&engine, "vacuum", serde_json::json!({})).await;
    eprintln!("vacuum took {:?}", started.elapsed());
    assert_succeeded(&run);
    let report = report_of(&run);
    assert_eq!(report.action, Action::Migrate);
    assert_eq!(report.outcome, Outcome::Done);
    assert!(report.migrated);
    assert!(report.check.ok);
    assert_eq!(report.freelist_after, 0);
    assert!(report.bytes_before > 145 * 1024 * 1024);
    assert_eq!(report.auto_vacuum_before, AutoVacuum::None);
    assert_eq!(report.auto_vacuum_after, AutoVacuum::Incremental);
    assert_eq!(
        report.pages_freed,
        report.page_count_before - report.page_count_after,
        "{report:?}"
    );
    // Every free page went, and at most one pointer-map page came.
    let live_pages = report.page_count_before - report.freelist_before;
    assert!(report.page_count_after <= live_pages + 1, "{report:?}");
    assert_eq!(report.wal_bytes_after, 0);
    assert!(report.needed_disk_bytes >= Some(2 * report.bytes_before));
    engine.shutdown(Duration::from_secs(10)).await;

    let conn = Connection::open(&db).unwrap();
    let state = db_state(&conn);
    assert_eq!(state.auto_vacuum, 2, "INCREMENTAL");
    assert_eq!(state.freelist_count, 0);
    assert_eq!(state.integrity, vec!["ok"]);
    assert_eq!(upstream_rows(&conn), rows_before, "every live row intact");
    let bytes = std::fs::metadata(&db).unwrap().len();
    assert_eq!(bytes as i64, state.page_count * state.page_size);
    // Nothing reclaimable is left: every page but the pointer map belongs to a b-tree.
    let pointer_map_pages = 1;
    assert_eq!(state.page_count, pages_in_use(&conn) + pointer_map_pages);
    // The bound is 100 KB for the three tables' content. Every other b-tree needs a
    // page at least: the host's seven indexes, its autoindexes and sqlite_sequence (the
    // host's real schema, as the generator now lays it out), and the engine's own tables.
    let all_btrees = btrees(&conn);
    let engine_btrees = all_btrees
        .iter()
        .filter(|name| !btrees_before.contains(name))
        .count() as u64;
    let other_btrees = all_btrees.len() as u64 - 3;
    let other_pages = other_btrees * state.page_size as u64;
    eprintln!(
        "after: {bytes} bytes, {} pages; {} b-trees ({engine_btrees} added by the engine)",
        state.page_count,
        all_btrees.len()
    );
    assert!(
        bytes <= 100 * 1024 + other_pages,
        "{bytes} bytes; the {other_btrees} b-trees beside the three tables account for {other_pages}"
    );
}

#[tokio::test]
async fn too_little_free_disk_refuses_the_migration_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus_artifacts.db");
    speckit_testkit::database::create_bloated(&db, 4 * 1024 * 1024, 3, &[], 0).unwrap();
    let rows_before = upstream_rows(&Connection::open(&db).unwrap());
    let plugin = VacuumPlugin::with_free_disk_probe(fixed_free_disk(1_000_000));
    let engine = engine_with(dir.path(), &db, "", plugin).await;
    let state_before = engine.storage().read(|c| Ok(db_state(c))).await.unwrap();

    let run = run_job(&engine, "vacuum", serde_json::json!({})).await;
    assert_eq!(run.outcome, JobOutcome::Failed);
    let report = report_of(&run);
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(!report.migrated);
    assert_eq!(report.free_disk_bytes, Some(1_000_000));
    let needed = report.needed_disk_bytes.unwrap();
    assert!(needed >= 2 * report.bytes_before);
    let error = &run.report.as_ref().unwrap().errors[0];
    assert!(error.contains(db.to_str().unwrap()), "{error}");
    assert!(error.contains("1000000 bytes"), "{error}");
    assert!(error.contains(&format!("{needed} bytes")), "{error}");
    assert!(error.contains("nothing was changed"), "{error}");
    let state_after = engine.storage().read(|c| Ok(db_state(c))).await.unwrap();
    assert_eq!(state_after, state_before, "nothing changed");
    assert_eq!(state_after.auto_vacuum, 0);

    // The engine keeps running: the next job works.
    let check = run_job(&engine, "integrity_check", serde_json::Value::Null).await;
    assert_succeeded(&check);
    engine.shutdown(Duration::from_secs(10)).await;
    assert_eq!(upstream_rows(&Connection::open(&db).unwrap()), rows_before);
}

#[tokio::test]
async fn migration_switched_off_leaves_a_none_database_alone_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus_artifacts.db");
    speckit_testkit::database::create_bloated(&db, 2 * 1024 * 1024, 3, &[], 0).unwrap();
    let engine = engine(
        dir.path(),
        &db,
        "[vacuum]\nmigrate_to_incremental = false\n",
    )
    .await;
    let run = run_job(&engine, "vacuum", serde_json::json!({"force": true})).await;
    assert_succeeded(&run);
    let report = report_of(&run);
    assert_eq!(report.action, Action::None);
    assert!(!report.migrated);
    assert_eq!(report.pages_freed, 0);
    assert_eq!(report.freelist_after, report.freelist_before);
    let reason = report.reason.unwrap();
    assert!(
        reason.contains("migrate_to_incremental is false"),
        "{reason}"
    );
    let warnings = &run.report.as_ref().unwrap().warnings;
    assert!(
        warnings.iter().any(|w| w.contains("full VACUUM")),
        "{warnings:?}"
    );
    engine.shutdown(Duration::from_secs(10)).await;
    assert_eq!(db_state(&Connection::open(&db).unwrap()).auto_vacuum, 0);
}

/// A new, tiny database has nothing free; switching it to incremental auto-vacuum adds
/// pointer-map pages. The report says the file grew, and never "-1 pages freed".
#[tokio::test]
async fn migrating_a_tiny_database_reports_no_negative_freed_pages() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus_artifacts.db");
    let engine = engine(dir.path(), &db, "").await;
    let run = run_job(&engine, "vacuum", serde_json::json!({"force": true})).await;
    assert_succeeded(&run);
    let report = report_of(&run);
    assert!(report.migrated);
    assert!(report.pages_freed >= 0, "{}", report.pages_freed);
    let text = report.render();
    assert!(
        text.contains(" 0 pages freed") && !text.contains("-1"),
        "{text}"
    );
    if report.page_count_after > report.page_count_before {
        let warnings = &run.report.as_ref().unwrap().warnings;
        assert!(
            warnings.iter().any(|w| w.contains("grew by")),
            "{warnings:?}"
        );
    }
    engine.shutdown(Duration::from_secs(10)).await;
}
