//! Restore: files back with their content (hash-checked) and mtime, database rows back;
//! `--to` leaves the tree and the database alone; an existing different file is never
//! overwritten; a tampered or hostile archive is refused before anything is written.

mod cleanup_support;

use cleanup_support::*;
use serde_json::json;
use speckit_engine::events::JobOutcome;
use speckit_engine::{Engine, JobTrigger};
use speckit_retention::restore::{RestoreReport, RestoreStatus};
use speckit_retention::RetentionPlugin;
use std::collections::BTreeMap;
use std::sync::Arc;

async fn archived_workspace() -> (Ws, Engine, BTreeMap<String, String>, Vec<String>) {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done"), ("SPEC-KIT-101", "Done")], "");
    ws.generate(&[spec("SPEC-KIT-100", 5), spec("SPEC-KIT-101", 3)]);
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    add_rows(
        engine.storage(),
        &[("SPEC-KIT-100", "plan", 90), ("SPEC-KIT-100", "tasks", 60)],
    );
    let before = tree(&ws.root);
    let runs = table_rows(engine.storage(), "consensus_runs");
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, json!({}))
        .await
        .unwrap();
    assert_eq!(run.outcome, JobOutcome::Succeeded, "{:?}", run.report);
    assert_eq!(table_rows(engine.storage(), "consensus_runs").len(), 0);
    (ws, engine, before, runs)
}

async fn restore(engine: &Engine, args: serde_json::Value) -> speckit_engine::engine::JobRun {
    engine
        .run_job("restore", JobTrigger::Manual, args)
        .await
        .unwrap()
}

#[tokio::test]
async fn files_and_rows_come_back_exactly() {
    let (ws, engine, before, runs) = archived_workspace().await;
    let mtimes: BTreeMap<String, std::time::SystemTime> = before
        .keys()
        .filter(|p| p.contains("SPEC-KIT-100"))
        .map(|p| {
            (
                p.clone(),
                std::fs::metadata(ws.root.join(p)).map(|m| m.modified().unwrap()),
            )
        })
        .filter_map(|(p, m)| m.ok().map(|m| (p, m)))
        .collect();
    let run = restore(&engine, json!({ "spec": "SPEC-KIT-100" })).await;
    assert_eq!(
        run.outcome,
        JobOutcome::Succeeded,
        "{:?} {:?}",
        run.error,
        run.report
    );
    let report: RestoreReport = run.report.unwrap().figures().unwrap();
    assert!(report.restored_files > 0);
    assert_eq!(report.rows_inserted, 6, "2 runs, 2 outputs, 2 executions");
    assert!(report
        .files
        .iter()
        .all(|f| f.status == RestoreStatus::Restored));
    let after = tree(&ws.root);
    for (path, sha) in before.iter().filter(|(p, _)| p.contains("SPEC-KIT-100/")) {
        assert_eq!(
            after.get(path),
            Some(sha),
            "{path} restored with its content"
        );
    }
    let archived = archived(&ws.root);
    for path in archived.keys().filter(|p| p.contains("SPEC-KIT-100/")) {
        let restored = std::fs::metadata(ws.root.join(path))
            .unwrap()
            .modified()
            .unwrap();
        if let Some(m) = mtimes.get(path) {
            assert_eq!(&restored, m, "{path}: original mtime");
        }
    }
    // SPEC-KIT-101 stays archived.
    assert!(!after
        .keys()
        .any(|p| p.contains("SPEC-KIT-101/") && archived.contains_key(p)));
    assert_eq!(table_rows(engine.storage(), "consensus_runs"), runs);
    // Restoring again: everything already there, nothing duplicated.
    let again = restore(&engine, json!({ "spec": "SPEC-KIT-100" })).await;
    assert_eq!(again.outcome, JobOutcome::Succeeded);
    let report: RestoreReport = again.report.unwrap().figures().unwrap();
    assert_eq!(report.restored_files, 0);
    assert_eq!(report.rows_identical, 6);
    assert!(report
        .files
        .iter()
        .all(|f| f.status == RestoreStatus::AlreadyPresent));
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn restore_to_a_folder_leaves_the_tree_and_database_alone() {
    let (ws, engine, before, _) = archived_workspace().await;
    let tree_before = tree(&ws.root);
    let out = ws.dir.path().join("restored");
    let run = restore(&engine, json!({ "spec": "SPEC-KIT-100", "to": out })).await;
    assert_eq!(run.outcome, JobOutcome::Succeeded, "{:?}", run.report);
    assert_eq!(tree(&ws.root), tree_before);
    assert_eq!(table_rows(engine.storage(), "consensus_runs").len(), 0);
    let restored = tree(&out);
    for (path, sha) in before
        .iter()
        .filter(|(p, _)| p.contains("SPEC-KIT-100/") && !tree_before.contains_key(*p))
    {
        assert_eq!(restored.get(path), Some(sha), "{path}");
    }
    let rows = std::fs::read_to_string(out.join("db/consensus_runs.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 2);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_existing_different_file_is_never_overwritten() {
    let (ws, engine, before, _) = archived_workspace().await;
    let archived = archived(&ws.root);
    let victim = archived
        .keys()
        .find(|p| p.contains("SPEC-KIT-100/"))
        .unwrap()
        .clone();
    std::fs::write(ws.root.join(&victim), b"newer work").unwrap();
    let run = restore(&engine, json!({ "spec": "SPEC-KIT-100" })).await;
    assert_eq!(run.outcome, JobOutcome::Failed, "a conflict is an error");
    let report = run.report.unwrap();
    assert!(report
        .errors
        .iter()
        .any(|e| e.contains(&victim) && e.contains("not overwritten")));
    assert_eq!(std::fs::read(ws.root.join(&victim)).unwrap(), b"newer work");
    // The others came back.
    let after = tree(&ws.root);
    let back = before
        .iter()
        .filter(|(p, s)| p.contains("SPEC-KIT-100/") && **p != victim && after.get(*p) == Some(*s))
        .count();
    assert!(back > 0);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_tampered_archive_is_refused_before_anything_is_written() {
    let (ws, engine, _, _) = archived_workspace().await;
    let tree_before = tree(&ws.root);
    let archive = archive_files(&ws.root)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("SPEC-KIT-100"))
        .unwrap();
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&archive, bytes).unwrap();
    let run = restore(&engine, json!({ "spec": "SPEC-KIT-100" })).await;
    assert_eq!(run.outcome, JobOutcome::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains(&archive.file_name().unwrap().to_string_lossy().to_string()),
        "{error}"
    );
    assert_eq!(tree(&ws.root), tree_before);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_hostile_archive_cannot_write_outside() {
    let (ws, engine, _, _) = archived_workspace().await;
    // A well-formed archive whose manifest names a path that climbs out of the root.
    let evil = ws.dir.path().join("evil.tar.zst");
    let body = b"pwned".to_vec();
    let sha = sha_hex(&body);
    let manifest = json!({
        "format": "speckit-hygiene-archive/1",
        "spec": "SPEC-KIT-100",
        "created_at_ms": 0,
        "created_at": "1970-01-01T00:00:00Z",
        "files": [{ "path": "commands/SPEC-KIT-100/../../../escaped.txt", "size": 5, "mtime_ns": 0, "sha256": sha }],
        "db": []
    });
    let encoder =
        zstd::stream::write::Encoder::new(std::fs::File::create(&evil).unwrap(), 3).unwrap();
    let mut builder = tar::Builder::new(encoder);
    for (name, data) in [
        ("commands/SPEC-KIT-100/../../../escaped.txt", body.clone()),
        ("MANIFEST.json", serde_json::to_vec(&manifest).unwrap()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        // Write the raw name into the header (the tar crate refuses `..` in set_path).
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        builder.append(&h, data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
    let run = restore(&engine, json!({ "spec": "SPEC-KIT-100", "archive": evil })).await;
    assert_eq!(run.outcome, JobOutcome::Failed);
    assert!(
        run.error.unwrap().contains("not a path under"),
        "refused by verification"
    );
    assert!(!ws.dir.path().join("escaped.txt").exists());
    assert!(!ws.root.join("escaped.txt").exists());
    // An archive of another SPEC is refused too.
    let other = archive_files(&ws.root)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("SPEC-KIT-101"))
        .unwrap();
    let run = restore(&engine, json!({ "spec": "SPEC-KIT-100", "archive": other })).await;
    assert_eq!(run.outcome, JobOutcome::Failed);
    assert!(run.error.unwrap().contains("not of SPEC-KIT-100"));
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_damaged_archive_is_named_and_the_intact_ones_are_restored() {
    let (ws, engine, before, _) = archived_workspace().await;
    // A second archive of SPEC-KIT-100: one more old file, archived by a second run.
    let late = ws
        .root
        .join("commands/SPEC-KIT-100/late_2025-10-01T00:00:00Z.json");
    std::fs::write(&late, b"late evidence").unwrap();
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, json!({}))
        .await
        .unwrap();
    assert_eq!(run.outcome, JobOutcome::Succeeded, "{:?}", run.report);
    assert!(!late.exists());
    let mine: Vec<_> = archive_files(&ws.root)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("SPEC-KIT-100"))
        .collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    let (late_archive, first): (Vec<_>, Vec<_>) = mine
        .into_iter()
        .partition(|p| read_archive(p).0.keys().any(|k| k.contains("late_")));
    let damaged = &first[0];
    let mut bytes = std::fs::read(damaged).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(damaged, bytes).unwrap();

    let spec = speckit_engine::SpecId::parse("SPEC-KIT-100").unwrap();
    let report = speckit_retention::restore::restore(&speckit_retention::restore::RestoreRequest {
        root: &ws.root,
        storage: engine.storage(),
        spec: &spec,
        archive: None,
        to: None,
        faults: None,
        offload: None,
    })
    .unwrap();
    let name = damaged.file_name().unwrap().to_string_lossy().to_string();
    assert_eq!(
        report.damaged_archives.len(),
        1,
        "{:?}",
        report.damaged_archives
    );
    assert!(
        report.damaged_archives[0].contains(&name),
        "{:?}",
        report.damaged_archives
    );
    assert!(report.errors.iter().any(|e| e.contains(&name)));
    assert_eq!(report.archives.len(), 1);
    assert!(report.archives[0].contains(
        &late_archive[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string()
    ));
    assert_eq!(std::fs::read(&late).unwrap(), b"late evidence");
    // The damaged archive's files are not made up: they stay archived (in it) only.
    let first_only: Vec<_> = before
        .keys()
        .filter(|p| p.contains("SPEC-KIT-100"))
        .collect();
    assert!(first_only.iter().any(|p| !ws.root.join(p).exists()));
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}
