//! Cleanup through a real engine: the dry run's plan is exactly what the real run does,
//! active and untracked SPECs are untouched, old files and rows end up in verified
//! archives, old archives are purged, the removal fraction is enforced, and files age
//! into the archive as (paused) time passes.

mod cleanup_support;

use cleanup_support::*;
use serde_json::json;
use speckit_engine::clock::TokioClock;
use speckit_engine::events::JobOutcome;
use speckit_engine::{Engine, EngineOptions, JobTrigger};
use speckit_retention::plan::{Action, ActionKind, ActionStatus};
use speckit_retention::RetentionPlugin;
use std::sync::Arc;

fn key(
    a: &Action,
) -> (
    ActionKind,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<u64>,
) {
    (
        a.action,
        a.path.clone(),
        a.spec.clone(),
        a.archive.clone(),
        a.table.clone(),
        a.rows,
    )
}

async fn cleanup(engine: &Engine, args: serde_json::Value) -> speckit_engine::engine::JobRun {
    engine
        .run_job("cleanup", JobTrigger::Manual, args)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_dry_run_plan_is_exactly_what_the_run_does() {
    let ws = Ws::new(
        &[
            ("SPEC-KIT-100", "Done"),
            ("SPEC-KIT-200", "In Progress"),
            ("SPEC-KIT-300", "**In Review**"),
        ],
        "",
    );
    ws.generate(&[
        spec("SPEC-KIT-100", 12),
        spec("SPEC-KIT-200", 6),
        spec("SPEC-KIT-300", 4),
        spec("SPEC-KIT-999", 4), // in no tracker: protected by default
    ]);
    std::fs::write(ws.root.join("commands/top-level.json"), b"{}").unwrap();
    let plugin = Arc::new(RetentionPlugin::new());
    let engine = ws.engine(now(), plugin.clone()).await;
    add_rows(
        engine.storage(),
        &[
            ("SPEC-KIT-100", "plan", 120),
            ("SPEC-KIT-100", "tasks", 45),
            ("SPEC-KIT-100", "implement", 3),
            ("SPEC-KIT-200", "plan", 120),
        ],
    );
    let before = tree(&ws.root);
    let runs_before = table_rows(engine.storage(), "consensus_runs");

    let dry = cleanup(&engine, json!({ "dry_run": true, "list_actions": true })).await;
    assert_eq!(dry.outcome, JobOutcome::Succeeded, "{:?}", dry.report);
    let planned = plugin.take_actions(dry.run_id).expect("dry-run actions");
    assert_eq!(tree(&ws.root), before, "a dry run changes nothing");
    assert!(archive_files(&ws.root).is_empty());
    assert_eq!(table_rows(engine.storage(), "consensus_runs"), runs_before);
    let data = &dry.report.as_ref().unwrap().data;
    assert_eq!(data["dry_run"], true);
    assert_eq!(data["archived_files"], 0, "a dry run archives nothing");
    let to_archive = planned
        .iter()
        .filter(|a| a.action == ActionKind::Archive)
        .count();
    assert!(to_archive > 0);
    assert_eq!(data["planned"]["archive_files"], to_archive);

    let real = cleanup(&engine, json!({ "list_actions": true })).await;
    assert_eq!(real.outcome, JobOutcome::Succeeded, "{:?}", real.report);
    let done = plugin.take_actions(real.run_id).expect("run actions");
    assert_eq!(
        planned.iter().map(key).collect::<Vec<_>>(),
        done.iter().map(key).collect::<Vec<_>>(),
        "the run must execute exactly the plan"
    );
    for a in &done {
        match a.action {
            ActionKind::Exempt | ActionKind::Skip => assert_eq!(a.status, None),
            _ => assert_eq!(a.status, Some(ActionStatus::Done), "{a:?}"),
        }
    }

    // Active, in-review and untracked SPECs, and non-SPEC files: untouched.
    let after = tree(&ws.root);
    for (path, sha) in &before {
        if !path.contains("SPEC-KIT-100") {
            assert_eq!(after.get(path), Some(sha), "{path} must be untouched");
        }
    }
    // Every archived file is in a verified archive with its original content.
    let archived = archived(&ws.root);
    for a in done.iter().filter(|a| a.action == ActionKind::Archive) {
        assert!(
            !after.contains_key(&a.path),
            "{} was archived, so deleted",
            a.path
        );
        assert_eq!(archived.get(&a.path), before.get(&a.path), "{}", a.path);
    }
    // The newest synthesis per stage stays uncompressed even though it is old enough.
    assert_nothing_lost(&before, &ws.root, "after cleanup");

    // Database rows: SPEC-KIT-100's runs older than 30 days are archived and gone.
    let runs = table_rows(engine.storage(), "consensus_runs");
    assert_eq!(
        runs.len(),
        2,
        "the young SPEC-KIT-100 run and SPEC-KIT-200's run remain: {runs:?}"
    );
    assert!(runs.iter().any(|r| r.contains("SPEC-KIT-200")));
    let rows_actions: Vec<_> = done
        .iter()
        .filter(|a| a.action == ActionKind::ArchiveRows)
        .collect();
    assert_eq!(rows_actions.len(), 3, "{rows_actions:?}");
    let (_, db) = read_archive(&ws.root.join(&rows_actions[0].path));
    assert_eq!(db["consensus_runs"].lines().count(), 2);
    assert_eq!(db["agent_outputs"].lines().count(), 2);
    assert_eq!(db["agent_executions"].lines().count(), 2);

    // The report: figures from what was done, the keys `--json` promises.
    let report = real.report.as_ref().unwrap();
    let data = &report.data;
    for k in [
        "archived_files",
        "purged_archives",
        "bytes_reclaimed",
        "exempt_specs",
        "errors",
    ] {
        assert!(data.get(k).is_some(), "missing {k}");
    }
    assert_eq!(data["archived_files"], to_archive);
    assert_eq!(data["deleted_files"], to_archive);
    let deleted: u64 = done
        .iter()
        .filter(|a| a.action == ActionKind::Archive)
        .map(|a| a.bytes.unwrap())
        .sum();
    assert_eq!(data["deleted_bytes"], deleted);
    let written: u64 = archive_files(&ws.root)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(data["archive_bytes_written"], written);
    assert_eq!(data["bytes_reclaimed"], deleted as i64 - written as i64);
    // Allocated blocks beside apparent bytes: the archives' st_blocks as `du` counts them.
    let allocated: u64 = archive_files(&ws.root)
        .iter()
        .map(|p| std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(p).unwrap()) * 512)
        .sum();
    assert_eq!(data["archive_allocated_bytes_written"], allocated);
    let freed = data["deleted_allocated_bytes"].as_u64().unwrap()
        + data["purged_allocated_bytes"].as_u64().unwrap();
    assert!(
        freed >= deleted.min(4096),
        "{freed} allocated bytes for {deleted} deleted"
    );
    assert_eq!(
        data["allocated_bytes_reclaimed"],
        freed as i64 - allocated as i64
    );
    let exempt: Vec<String> = data["exempt_specs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["spec"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(exempt, ["SPEC-KIT-200", "SPEC-KIT-300", "SPEC-KIT-999"]);
    // The daily summary and the job-runs table.
    let summary = ws.root.join("cleanup/daily-summaries/2026-03-01.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(summary).unwrap()).unwrap();
    assert_eq!(doc["runs"][0]["archived_files"], to_archive);
    assert_eq!(doc["runs"][0]["run_id"], real.run_id);
    let stored: String = engine
        .storage()
        .read(move |c| {
            c.query_row(
                "SELECT report_json FROM hygiene_job_runs WHERE id = ?1",
                [real.run_id],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert!(stored.contains("\"archived_files\""));
    assert!(
        !stored.contains("\"actions\""),
        "actions stay out of the job-runs table"
    );

    // A second run has nothing left to do.
    let again = cleanup(&engine, json!({})).await;
    assert_eq!(again.report.unwrap().data["archived_files"], 0);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn old_archives_are_purged_and_the_purge_recorded() {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
    ws.generate(&[spec("SPEC-KIT-100", 6)]);
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let first = cleanup(&engine, json!({})).await;
    assert_eq!(first.outcome, JobOutcome::Succeeded);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    let archives = archive_files(&ws.root);
    assert_eq!(archives.len(), 1);
    let bytes = std::fs::metadata(&archives[0]).unwrap().len();

    // 91 days later the archive is past purge_after_days.
    let later = now() + chrono::Duration::days(91);
    let engine = ws.engine(later, Arc::new(RetentionPlugin::new())).await;
    let run = cleanup(&engine, json!({})).await;
    let data = &run.report.as_ref().unwrap().data;
    assert_eq!(data["purged_archives"], 1, "{data}");
    assert_eq!(data["purged_bytes"], bytes);
    assert!(!archives[0].exists());
    // The files that were young then are archived now, into a second archive.
    let records = archive_records(engine.storage());
    assert_eq!(records.len(), 2);
    let purged: Vec<_> = records.iter().filter(|r| r.3).collect();
    assert_eq!(purged.len(), 1, "the purge is recorded: {records:?}");
    assert!(archives[0].ends_with(&purged[0].0));
    // Its manifest sidecar goes with it; the live archive keeps its own. The database has
    // one row per archive and no member table.
    let sidecar = |p: &std::path::Path| {
        let mut name = p.file_name().unwrap().to_os_string();
        name.push(".manifest.json");
        p.with_file_name(name)
    };
    assert!(
        !sidecar(&archives[0]).exists(),
        "the purged archive's sidecar is deleted with it"
    );
    let live = archive_files(&ws.root);
    assert_eq!(live.len(), 1);
    assert!(sidecar(&live[0]).is_file());
    let member_tables: i64 = engine
        .storage()
        .read(|c| {
            c.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'hygiene_archive_members'",
                [],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(member_tables, 0);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_plan_removing_too_much_is_refused_unless_forced() {
    // Archiving most files is allowed (restorable); archiving them all a year after
    // anything was written (a clock jump) is what max_removal_fraction refuses.
    let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
    std::fs::write(
        &ws.config,
        BASE_CONFIG.replace("max_removal_fraction = 1.0", "max_removal_fraction = 0.2"),
    )
    .unwrap();
    ws.generate(&[spec("SPEC-KIT-100", 10)]);
    let before = tree(&ws.root);
    let later = now() + chrono::Duration::days(365);
    let engine = ws.engine(later, Arc::new(RetentionPlugin::new())).await;
    let refused = cleanup(&engine, json!({})).await;
    assert_eq!(refused.outcome, JobOutcome::Failed);
    let report = refused.report.unwrap();
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("max_removal_fraction")
                && e.contains("[clock]")
                && e.contains("--force")),
        "{:?}",
        report.errors
    );
    assert_eq!(tree(&ws.root), before, "a refused plan changes nothing");
    assert!(archive_files(&ws.root).is_empty());
    // The dry run shows the plan and warns.
    let dry = cleanup(&engine, json!({ "dry_run": true })).await;
    assert_eq!(dry.outcome, JobOutcome::Succeeded);
    assert!(dry
        .report
        .unwrap()
        .warnings
        .iter()
        .any(|w| w.contains("would be refused")));
    let forced = cleanup(&engine, json!({ "force": true })).await;
    assert_eq!(forced.outcome, JobOutcome::Succeeded, "{:?}", forced.report);
    assert!(
        forced.report.unwrap().data["archived_files"]
            .as_u64()
            .unwrap()
            > 0
    );
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn spec_option_limits_the_run_and_maps_folder_names() {
    let ws = Ws::new(&[("SPEC-KIT-025", "Done"), ("SPEC-KIT-100", "Done")], "");
    ws.generate(&[
        spec("SPEC-KIT-025-add-automated-conflict-resolution-with", 4),
        spec("SPEC-KIT-025-add-automated-conflict-resolution-wit", 4),
        spec("SPEC-KIT-100", 4),
    ]);
    let before = tree(&ws.root);
    let plugin = Arc::new(RetentionPlugin::new());
    let engine = ws.engine(now(), plugin.clone()).await;
    let run = cleanup(
        &engine,
        json!({ "spec": "SPEC-KIT-025", "list_actions": true }),
    )
    .await;
    assert_eq!(run.outcome, JobOutcome::Succeeded, "{:?}", run.report);
    let actions = plugin.take_actions(run.run_id).unwrap();
    assert!(
        actions.iter().all(|a| a.spec.starts_with("SPEC-KIT-025-")),
        "{actions:?}"
    );
    let specs: std::collections::BTreeSet<_> = actions.iter().map(|a| a.spec.as_str()).collect();
    assert_eq!(specs.len(), 2, "both folders of SPEC-KIT-025");
    let after = tree(&ws.root);
    for (path, sha) in before.iter().filter(|(p, _)| p.contains("SPEC-KIT-100")) {
        assert_eq!(after.get(path), Some(sha));
    }
    // An ID that could escape a folder is refused before anything runs.
    let bad = engine
        .run_job("cleanup", JobTrigger::Manual, json!({ "spec": "../etc" }))
        .await
        .unwrap();
    assert_eq!(bad.outcome, JobOutcome::Failed);
    assert!(bad.error.unwrap().contains("../etc"));
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn untracked_specs_follow_the_policy() {
    let ws = Ws::new(&[], "untracked_specs = \"archive\"\n");
    ws.generate(&[spec("SPEC-KIT-777", 4)]);
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let run = cleanup(&engine, json!({})).await;
    let data = &run.report.unwrap().data;
    assert!(data["archived_files"].as_u64().unwrap() > 0, "{data}");
    assert_eq!(data["exempt_specs"].as_array().unwrap().len(), 0);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn files_age_into_the_archive_as_time_passes() {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
    // Every file is 20 days old by its name and mtime.
    ws.generate(&[speckit_testkit::evidence::SpecEvidence {
        spec_id: "SPEC-KIT-100".into(),
        files_per_kind: 3,
        file_bytes: 300,
        oldest_age: chrono::Duration::days(20),
        newest_age: chrono::Duration::days(20),
    }]);
    let mut options = EngineOptions::new(&ws.config);
    options.env = Vec::new();
    options.clock = Arc::new(TokioClock::starting_at(now()));
    let engine = Engine::start(options, vec![Arc::new(RetentionPlugin::new())])
        .await
        .unwrap();
    let first = cleanup(&engine, json!({})).await;
    assert_eq!(
        first.report.unwrap().data["archived_files"],
        0,
        "20 days < 30"
    );
    tokio::time::advance(std::time::Duration::from_secs(11 * 86_400)).await;
    let second = cleanup(&engine, json!({})).await;
    // 6 files; the newest synthesis per stage (4) stays by the keep-rule.
    assert_eq!(second.report.unwrap().data["archived_files"], 6);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_missing_tracker_or_root_fails_clearly_and_changes_nothing() {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
    ws.generate(&[spec("SPEC-KIT-100", 4)]);
    let before = tree(&ws.root);
    std::fs::remove_file(&ws.tracker).unwrap();
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let run = cleanup(&engine, json!({})).await;
    assert_eq!(run.outcome, JobOutcome::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains(&ws.tracker.display().to_string()) && error.contains("tracker"),
        "{error}"
    );
    assert_eq!(tree(&ws.root), before);
    engine.shutdown(std::time::Duration::from_secs(5)).await;

    let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
    std::fs::remove_dir_all(&ws.root).unwrap();
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let run = cleanup(&engine, json!({})).await;
    assert_eq!(run.outcome, JobOutcome::Failed);
    let error = run.error.unwrap();
    assert!(
        error.contains("evidence root") && error.contains("does not exist"),
        "{error}"
    );
    assert!(!ws.root.exists(), "nothing created");
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}
