//! A guest in the host's database: retention keeps one row per archive there (the member
//! manifests live in the archives and in sidecar files beside them), reads the sidecars
//! or falls back to the archives, and a dry run on a database it never ran on (or on no
//! database at all) plans without writing anything.
//!
//! `SPECKIT_DB_GROWTH_FILES=100000 cargo test -p speckit-retention --test host_database
//! -- --nocapture many_files` prints the database growth for 100,000 files.

mod cleanup_support;

use cleanup_support::*;
use serde_json::json;
use speckit_engine::events::JobOutcome;
use speckit_engine::{Engine, EngineOptions, JobTrigger, Storage};
use speckit_retention::faults::{Faults, Step};
use speckit_retention::job::{cleanup_blocking, CleanupOptions, CleanupResult};
use speckit_retention::plan::ActionKind;
use speckit_retention::{sidecar, RetentionPlugin};
use speckit_testkit::bulk::{self, BulkTree};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The database's size as SQLite sees it: `page_count * page_size` (WAL frames included).
fn database_bytes(storage: &Storage) -> i64 {
    storage
        .read_blocking(|c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            Ok(pages * size)
        })
        .unwrap()
}

fn table_count(storage: &Storage, name: &'static str) -> i64 {
    storage
        .read_blocking(move |c| {
            c.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
        })
        .unwrap()
}

fn run(ws: &Ws, storage: &Storage, faults: Option<&dyn Faults>) -> CleanupResult {
    cleanup_blocking(
        &ws.policy().policy,
        storage,
        now(),
        &CleanupOptions {
            list_actions: true,
            ..CleanupOptions::default()
        },
        faults,
        &speckit_retention::job::Control::NONE,
        1,
        2,
    )
    .unwrap()
}

/// What 0.1 would have added for these archives: its member table, one row per member,
/// in a scratch database (the same rows it inserted).
fn old_layout_bytes(archives: &[PathBuf], scratch: &Path) -> i64 {
    let conn = rusqlite::Connection::open(scratch).unwrap();
    conn.execute_batch(
        "CREATE TABLE hygiene_archive_members (
            archive_id INTEGER NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            PRIMARY KEY (archive_id, path)
        );",
    )
    .unwrap();
    let empty: i64 = conn
        .query_row(
            "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for (id, a) in archives.iter().enumerate() {
        let text = std::fs::read(sidecar::path_for(a)).unwrap();
        let side: sidecar::Sidecar = serde_json::from_slice(&text).unwrap();
        for m in &side.manifest.files {
            tx.execute(
                "INSERT INTO hygiene_archive_members VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![id as i64, m.path, m.size as i64, m.mtime_ns, m.sha256],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
    let full: i64 = conn
        .query_row(
            "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
            [],
            |r| r.get(0),
        )
        .unwrap();
    full - empty
}

#[test]
fn many_files_add_one_row_per_archive_and_almost_nothing_to_the_database() {
    let files: usize = std::env::var("SPECKIT_DB_GROWTH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let specs = 4;
    let ids: Vec<String> = (0..specs).map(bulk::spec_id).collect();
    let statuses: Vec<(&str, &str)> = ids.iter().map(|s| (s.as_str(), "Done")).collect();
    let ws = Ws::new(&statuses, "");
    let generated = bulk::generate(
        &ws.root,
        &BulkTree {
            specs,
            files_per_spec: files / specs,
            file_bytes: 300,
            now: now(),
            min_age_days: 40,
            max_age_days: 400,
        },
        2,
    )
    .unwrap();
    let storage = ws.storage();
    let before = database_bytes(&storage);
    assert_eq!(
        table_count(&storage, "hygiene_archives"),
        0,
        "not before retention runs"
    );

    let outcome = run(&ws, &storage, None).executed.unwrap();
    assert!(
        outcome.errors.is_empty(),
        "{:?}",
        &outcome.errors[..outcome.errors.len().min(3)]
    );
    assert_eq!(outcome.figures.archived_files, generated.files);
    assert_eq!(outcome.figures.deleted_files, generated.files);
    let after = database_bytes(&storage);

    let records = archive_records(&storage);
    let archives = archive_files(&ws.root);
    assert_eq!(records.len(), specs, "one row per archive: {records:?}");
    assert_eq!(archives.len(), specs);
    assert_eq!(
        records.iter().map(|r| r.1 as u64).sum::<u64>(),
        generated.files,
        "the member counts are in the archive rows"
    );
    assert_eq!(
        table_count(&storage, "hygiene_archive_members"),
        0,
        "no per-member rows"
    );
    for a in &archives {
        assert!(
            sidecar::path_for(a).is_file(),
            "{}: no sidecar",
            a.display()
        );
    }
    let old = old_layout_bytes(&archives, &ws.dir.path().join("old-layout.sqlite"));
    let growth = after - before;
    println!(
        "database after archiving {} files into {} archives: {:.1} KiB before, {:.1} KiB after (+{:.1} KiB); \
         0.1's member table would have added {:.1} KiB ({:.0} bytes per file)",
        generated.files,
        archives.len(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        growth as f64 / 1024.0,
        old as f64 / 1024.0,
        old as f64 / generated.files as f64
    );
    assert!(growth < 1 << 20, "the database grew by {growth} bytes");
    assert!(
        old > 1 << 20,
        "the bound would not have caught one row per file ({old} bytes)"
    );
    // Nothing left to do, and the plan found every file's archive from the sidecars.
    let again = run(&ws, &storage, None).executed.unwrap();
    assert_eq!(again.figures.archived_files, 0);
    assert!(again.errors.is_empty(), "{:?}", again.errors);
}

/// Fails every source deletion: the archive is recorded, its sources stay (an
/// interrupted run, without a crash).
struct FailDeletes;

impl Faults for FailDeletes {
    fn check(&self, step: Step, _path: &Path) -> std::io::Result<()> {
        if step == Step::DeleteSource {
            return Err(std::io::Error::other("simulated failure"));
        }
        Ok(())
    }
}

/// A workspace where one recorded archive holds files that are still in place.
fn interrupted() -> (Ws, Storage, PathBuf, usize) {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
    ws.generate(&[spec("SPEC-KIT-100", 6)]);
    let storage = ws.storage();
    let first = run(&ws, &storage, Some(&FailDeletes)).executed.unwrap();
    assert_eq!(first.figures.archives_written, 1);
    assert_eq!(first.figures.deleted_files, 0);
    let archives = archive_files(&ws.root);
    assert_eq!(archives.len(), 1);
    let held = first.figures.archived_files as usize;
    assert!(held > 0);
    (ws, storage, archives[0].clone(), held)
}

fn assert_finishes(ws: &Ws, storage: &Storage, archive: &Path, held: usize, context: &str) {
    let original = tree(&ws.root);
    let result = run(ws, storage, None);
    let planned = result
        .plan
        .actions()
        .iter()
        .filter(|a| a.action == ActionKind::DeleteArchived)
        .count();
    assert_eq!(
        planned, held,
        "{context}: the plan finds the archived files"
    );
    let outcome = result.executed.unwrap();
    assert!(outcome.errors.is_empty(), "{context}: {:?}", outcome.errors);
    assert_eq!(outcome.figures.archives_written, 0, "{context}");
    assert_eq!(outcome.figures.deleted_files as usize, held, "{context}");
    assert_nothing_lost(&original, &ws.root, context);
    // The sidecar is there again, and describes this archive.
    let (sha, _) = speckit_retention::archive::sha256_file(archive).unwrap();
    let bytes = std::fs::metadata(archive).unwrap().len();
    let manifest = sidecar::read(archive, &sha, bytes)
        .unwrap_or_else(|e| panic!("{context}: sidecar not repaired: {e:?}"));
    assert_eq!(manifest.files.len(), held, "{context}");
    assert!(
        temp_files(&ws.root).is_empty(),
        "{context}: {:?}",
        temp_files(&ws.root)
    );
}

#[test]
fn a_rerun_finishes_from_the_sidecar_or_without_it() {
    // With its sidecar, as the interrupted run left it.
    let (ws, storage, archive, held) = interrupted();
    assert!(sidecar::path_for(&archive).is_file());
    assert_finishes(&ws, &storage, &archive, held, "sidecar present");

    // Sidecar deleted: the manifest is read from the verified archive.
    let (ws, storage, archive, held) = interrupted();
    std::fs::remove_file(sidecar::path_for(&archive)).unwrap();
    assert_finishes(&ws, &storage, &archive, held, "sidecar deleted");

    // A stale sidecar (of another archive of that name) is not believed.
    let (ws, storage, archive, held) = interrupted();
    let path = sidecar::path_for(&archive);
    let mut side: sidecar::Sidecar =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    side.archive_sha256 = "0".repeat(64);
    side.manifest.files.clear();
    std::fs::write(&path, serde_json::to_vec(&side).unwrap()).unwrap();
    assert_finishes(&ws, &storage, &archive, held, "stale sidecar");

    // A leftover sidecar temporary is discarded; the sidecar is neither adopted nor
    // discarded.
    let (ws, storage, archive, held) = interrupted();
    let leftover = archive.with_file_name(format!("{}999-0", sidecar::TEMP_PREFIX));
    std::fs::write(&leftover, b"{\"partial").unwrap();
    let plan = run_dry(&ws, &storage);
    let kinds: Vec<(ActionKind, String)> = plan
        .plan
        .actions()
        .into_iter()
        .filter(|a| matches!(a.action, ActionKind::DiscardTemp | ActionKind::Adopt))
        .map(|a| (a.action, a.path))
        .collect();
    assert_eq!(kinds.len(), 1, "{kinds:?}");
    assert_eq!(kinds[0].0, ActionKind::DiscardTemp);
    assert!(kinds[0].1.ends_with("999-0"), "{kinds:?}");
    assert_finishes(&ws, &storage, &archive, held, "leftover temporary");
    assert!(!leftover.exists());
}

fn run_dry(ws: &Ws, storage: &Storage) -> CleanupResult {
    cleanup_blocking(
        &ws.policy().policy,
        storage,
        now(),
        &CleanupOptions {
            dry_run: true,
            list_actions: true,
            ..CleanupOptions::default()
        },
        None,
        &speckit_retention::job::Control::NONE,
        1,
        1,
    )
    .unwrap()
}

#[tokio::test]
async fn a_purge_deletes_the_sidecar_with_its_archive() {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
    ws.generate(&[spec("SPEC-KIT-100", 4)]);
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let first = engine
        .run_job("cleanup", JobTrigger::Manual, json!({}))
        .await
        .unwrap();
    assert_eq!(first.outcome, JobOutcome::Succeeded);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    let archive = archive_files(&ws.root).remove(0);
    assert!(sidecar::path_for(&archive).is_file());
    let later = now() + chrono::Duration::days(200);
    let engine = ws.engine(later, Arc::new(RetentionPlugin::new())).await;
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, json!({}))
        .await
        .unwrap();
    assert_eq!(run.report.as_ref().unwrap().data["purged_archives"], 1);
    assert!(!archive.exists());
    assert!(!sidecar::path_for(&archive).exists());
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn restore_works_from_the_sidecar_and_without_it() {
    for delete_sidecar in [false, true] {
        let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
        ws.generate(&[spec("SPEC-KIT-100", 5)]);
        let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
        add_rows(engine.storage(), &[("SPEC-KIT-100", "plan", 90)]);
        let before = tree(&ws.root);
        let runs = table_rows(engine.storage(), "consensus_runs");
        let executions = table_rows(engine.storage(), "agent_executions");
        let cleaned = engine
            .run_job("cleanup", JobTrigger::Manual, json!({}))
            .await
            .unwrap();
        assert_eq!(cleaned.outcome, JobOutcome::Succeeded);
        assert_ne!(tree(&ws.root), before);
        let archive = archive_files(&ws.root).remove(0);
        if delete_sidecar {
            std::fs::remove_file(sidecar::path_for(&archive)).unwrap();
        }
        let restored = engine
            .run_job(
                "restore",
                JobTrigger::Manual,
                json!({ "spec": "SPEC-KIT-100" }),
            )
            .await
            .unwrap();
        assert_eq!(
            restored.outcome,
            JobOutcome::Succeeded,
            "sidecar deleted: {delete_sidecar}: {:?}",
            restored.report
        );
        let mut after = tree(&ws.root);
        after.retain(|p, _| !p.starts_with(".locks/")); // cleanup's lock files stay
        assert_eq!(after, before, "sidecar deleted: {delete_sidecar}");
        assert_eq!(table_rows(engine.storage(), "consensus_runs"), runs);
        assert_eq!(table_rows(engine.storage(), "agent_executions"), executions);
        engine.shutdown(std::time::Duration::from_secs(5)).await;
    }
}

/// Every file and folder under `dir`, with file contents hashed.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                out.insert(rel, "dir".into());
                stack.push(path);
            } else {
                out.insert(rel, sha_hex(&std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

async fn read_only_engine(ws: &Ws) -> Engine {
    let mut options = EngineOptions::new(&ws.config);
    options.env = Vec::new();
    options.clock = Arc::new(FixedClock(now()));
    options.read_only = true;
    Engine::start(options, vec![Arc::new(RetentionPlugin::new())])
        .await
        .unwrap()
}

async fn dry_run(engine: &Engine) -> serde_json::Value {
    let run = engine
        .run_job(
            "cleanup",
            JobTrigger::Manual,
            json!({ "dry_run": true, "list_actions": true }),
        )
        .await
        .unwrap();
    assert_eq!(
        run.outcome,
        JobOutcome::Succeeded,
        "{:?} {:?}",
        run.error,
        run.report
    );
    run.report.unwrap().data
}

#[tokio::test]
async fn a_dry_run_on_a_host_database_retention_never_ran_on_writes_nothing() {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
    ws.generate(&[spec("SPEC-KIT-100", 5)]);
    // The host's database as the host lays it out, with old rows in the host's formats;
    // no table of ours, not even the schema versions.
    {
        let conn = rusqlite::Connection::open(&ws.db).unwrap();
        speckit_testkit::database::create_upstream_schema(&conn).unwrap();
        let old = now() - chrono::Duration::days(60);
        conn.execute(
            "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, degraded, synthesis_json) VALUES ('SPEC-KIT-100', 'spec-plan', ?1, 1, 0, '{}')",
            [old.timestamp_millis()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO agent_outputs (run_id, agent_name, model_version, content, output_timestamp) VALUES (1, 'gemini', 'g', 'x', ?1)",
            [old.timestamp_millis()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO agent_executions (agent_id, spec_id, stage, phase_type, agent_name, spawned_at, completed_at) VALUES ('a1', 'SPEC-KIT-100', 'spec-plan', 'regular_stage', 'gemini', ?1, ?1)",
            [host_time(old, false)],
        )
        .unwrap();
    }
    let before = snapshot(ws.dir.path());
    let db_before = std::fs::read(&ws.db).unwrap();

    let engine = read_only_engine(&ws).await;
    let data = dry_run(&engine).await;
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    let planned = &data["planned"];
    assert!(planned["archive_files"].as_u64().unwrap() > 0, "{data}");
    assert_eq!(planned["archive_rows"], 3, "{data}");
    assert_eq!(
        std::fs::read(&ws.db).unwrap(),
        db_before,
        "the database is byte-identical"
    );
    assert_eq!(
        snapshot(ws.dir.path()),
        before,
        "no file was created or changed"
    );

    // A real run plans the same and does it (the engine creates retention's table first).
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, json!({}))
        .await
        .unwrap();
    assert_eq!(run.outcome, JobOutcome::Succeeded, "{:?}", run.report);
    let done = &run.report.as_ref().unwrap().data;
    assert_eq!(done["archived_files"], planned["archive_files"]);
    assert_eq!(done["archived_rows"], 3);
    assert_eq!(archive_records(engine.storage()).len(), 1);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_dry_run_without_a_database_plans_and_creates_none() {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
    ws.generate(&[spec("SPEC-KIT-100", 5)]);
    assert!(!ws.db.exists());
    let before = snapshot(ws.dir.path());
    let engine = read_only_engine(&ws).await;
    let data = dry_run(&engine).await;
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    assert!(
        data["planned"]["archive_files"].as_u64().unwrap() > 0,
        "{data}"
    );
    assert_eq!(data["planned"]["archive_rows"], 0);
    assert!(!ws.db.exists(), "no database is created");
    assert_eq!(
        snapshot(ws.dir.path()),
        before,
        "no file was created or changed"
    );
}

#[test]
fn a_real_run_on_a_read_only_storage_is_refused_before_writing_anything() {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
    ws.generate(&[spec("SPEC-KIT-100", 3)]);
    ws.storage().close();
    // A WAL database: SQLite creates `-wal` and `-shm` for a read-only connection when
    // they are missing (the engine's read-only open, not retention; reported). The
    // database file itself and the evidence tree must not change.
    let without_wal = |mut s: BTreeMap<String, String>| {
        s.retain(|p, _| !p.ends_with("-wal") && !p.ends_with("-shm"));
        s
    };
    let before = without_wal(snapshot(ws.dir.path()));
    let storage =
        Storage::open_read_only(speckit_engine::engine::storage_options(&ws.policy().policy))
            .unwrap();
    let result = cleanup_blocking(
        &ws.policy().policy,
        &storage,
        now(),
        &CleanupOptions::default(),
        None,
        &speckit_retention::job::Control::NONE,
        1,
        1,
    )
    .unwrap();
    assert!(result.executed.is_none());
    let refusal = result.refused.unwrap();
    assert!(refusal.contains("read-only"), "{refusal}");
    drop(storage);
    assert_eq!(without_wal(snapshot(ws.dir.path())), before);
}
