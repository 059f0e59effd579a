//! `retention.max_removal_fraction` guards the irreversible and the accidental, not the
//! size of a verified archive run: a first cleanup archiving most of an old tree runs and
//! says what it did; purging most archives, and a tracker that suddenly calls most of the
//! SPECs the previous run protected finished, are refused (nothing changed) until forced.

mod cleanup_support;

use cleanup_support::*;
use serde_json::json;
use speckit_engine::events::JobOutcome;
use speckit_engine::{Engine, JobTrigger};
use speckit_retention::RetentionPlugin;
use speckit_testkit::evidence::SpecEvidence;
use std::sync::Arc;

async fn cleanup(engine: &Engine, args: serde_json::Value) -> speckit_engine::engine::JobRun {
    engine
        .run_job("cleanup", JobTrigger::Manual, args)
        .await
        .unwrap()
}

fn guarded(statuses: &[(&str, &str)]) -> Ws {
    guarded_with(statuses, "")
}

/// A workspace with `max_removal_fraction = 0.5`, `extra` appended to `[retention]`.
fn guarded_with(statuses: &[(&str, &str)], extra: &str) -> Ws {
    let ws = Ws::new(statuses, "");
    std::fs::write(
        &ws.config,
        BASE_CONFIG.replace("max_removal_fraction = 1.0", "max_removal_fraction = 0.5") + extra,
    )
    .unwrap();
    ws
}

/// `n` files per kind, all between `oldest` and `newest` days old.
fn aged(id: &str, n: usize, oldest: i64, newest: i64) -> SpecEvidence {
    SpecEvidence {
        spec_id: id.to_string(),
        files_per_kind: n,
        file_bytes: 700,
        oldest_age: chrono::Duration::days(oldest),
        newest_age: chrono::Duration::days(newest),
    }
}

fn refusal(run: &speckit_engine::engine::JobRun) -> String {
    assert_eq!(run.outcome, JobOutcome::Failed, "{:?}", run.report);
    let report = run.report.as_ref().unwrap();
    assert_eq!(report.data["refused"], true, "{}", report.data);
    report
        .errors
        .iter()
        .find(|e| e.contains("max_removal_fraction"))
        .unwrap_or_else(|| panic!("no refusal in {:?}", report.errors))
        .clone()
}

#[tokio::test]
async fn a_first_run_archiving_most_of_an_old_tree_is_allowed_and_reported() {
    let done: Vec<String> = (0..9).map(|i| format!("SPEC-KIT-{}", 100 + i)).collect();
    let mut statuses: Vec<(&str, &str)> = done.iter().map(|s| (s.as_str(), "Done")).collect();
    statuses.push(("SPEC-KIT-900", "In Progress"));
    // Every old file is archived (no synthesis kept): 9 SPECs of 10, 90% of the tree.
    let ws = guarded_with(&statuses, "keep_latest_synthesis = false\n");
    let mut specs: Vec<SpecEvidence> = done.iter().map(|s| aged(s, 10, 400, 40)).collect();
    specs.push(aged("SPEC-KIT-900", 10, 20, 1));
    ws.generate(&specs);
    let original = tree(&ws.root);
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let run = cleanup(&engine, json!({})).await;
    assert_eq!(run.outcome, JobOutcome::Succeeded, "{:?}", run.report);
    let report = run.report.unwrap();
    let fraction = report.data["removal_fraction"].as_f64().unwrap();
    assert!(fraction >= 0.89, "90% of the tree: {fraction}");
    let guard = &report.data["removal_guard"];
    assert_eq!(guard["first_cleanup"], true, "{guard}");
    assert_eq!(guard["signals"].as_array().unwrap().len(), 0, "{guard}");
    let archived = report.data["archived_files"].as_u64().unwrap();
    assert!(
        report.summary.starts_with(&format!(
            "first cleanup: archived {archived} file(s) of 9 SPEC(s) into 9 archive(s)"
        )) && report.summary.contains("speckit-hygiene restore"),
        "{}",
        report.summary
    );
    assert_eq!(archive_files(&ws.root).len(), 9);
    assert_nothing_lost(&original, &ws.root, "first run");
    // And it is restorable.
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
        "{:?}",
        restored.report
    );
    let back = tree(&ws.root);
    for (path, sha) in original.iter().filter(|(p, _)| p.contains("SPEC-KIT-100/")) {
        assert_eq!(back.get(path), Some(sha), "{path} restored");
    }
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn purging_most_archives_is_refused_changes_nothing_and_passes_with_force() {
    let done = [
        "SPEC-KIT-100",
        "SPEC-KIT-101",
        "SPEC-KIT-102",
        "SPEC-KIT-103",
    ];
    let mut statuses: Vec<(&str, &str)> = done.iter().map(|s| (*s, "Done")).collect();
    statuses.push(("SPEC-KIT-900", "In Progress"));
    let ws = guarded(&statuses);
    let mut specs: Vec<SpecEvidence> = done.iter().map(|s| aged(s, 6, 200, 40)).collect();
    specs.push(aged("SPEC-KIT-900", 6, 20, 1));
    ws.generate(&specs);
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let first = cleanup(&engine, json!({})).await;
    assert_eq!(first.outcome, JobOutcome::Succeeded, "{:?}", first.report);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    let archives = archive_files(&ws.root);
    assert_eq!(archives.len(), 4);

    // 91 days later all four archives are past purge_after_days: irreversible, refused.
    let later = now() + chrono::Duration::days(91);
    let engine = ws.engine(later, Arc::new(RetentionPlugin::new())).await;
    let before = tree(&ws.root);
    let records = archive_records(engine.storage());
    let dry = cleanup(&engine, json!({ "dry_run": true })).await;
    assert_eq!(dry.outcome, JobOutcome::Succeeded);
    let dry = dry.report.unwrap();
    assert_eq!(dry.data["planned"]["purge_archives"], 4);
    assert!(
        dry.warnings
            .iter()
            .any(|w| w.contains("[purge]") && w.contains("would be refused")),
        "{:?}",
        dry.warnings
    );
    let refused = cleanup(&engine, json!({})).await;
    let message = refusal(&refused);
    assert!(
        message.contains("[purge]")
            && message.contains("4 of 4 archive(s)")
            && message.contains("purge_after_days")
            && message.contains("--force"),
        "{message}"
    );
    assert!(
        !message.contains("[clock]") && !message.contains("[tracker]"),
        "{message}"
    );
    assert_eq!(tree(&ws.root), before, "a refused run changes nothing");
    assert_eq!(archive_files(&ws.root), archives);
    assert_eq!(archive_records(engine.storage()), records);
    // The next run is refused the same way (not only the first).
    let again = cleanup(&engine, json!({})).await;
    assert!(refusal(&again).contains("[purge]"));

    let forced = cleanup(&engine, json!({ "force": true })).await;
    assert_eq!(forced.outcome, JobOutcome::Succeeded, "{:?}", forced.report);
    let forced = forced.report.unwrap();
    assert_eq!(forced.data["purged_archives"], 4, "{}", forced.data);
    assert!(
        forced.summary.starts_with("forced past the purge guard(s)"),
        "{}",
        forced.summary
    );
    assert!(archives.iter().all(|a| !a.exists()));
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn most_protected_specs_suddenly_finished_is_refused_as_a_tracker_accident() {
    let active = [
        "SPEC-KIT-100",
        "SPEC-KIT-101",
        "SPEC-KIT-102",
        "SPEC-KIT-103",
        "SPEC-KIT-104",
    ];
    let ws = guarded(&[]);
    let write_tracker = |done: &[&str]| {
        let mut statuses: Vec<(&str, &str)> = active
            .iter()
            .map(|s| {
                (
                    *s,
                    if done.contains(s) {
                        "Done"
                    } else {
                        "In Progress"
                    },
                )
            })
            .collect();
        statuses.push(("SPEC-KIT-200", "Done"));
        speckit_testkit::tracker::write_four_column(&ws.tracker, &statuses).unwrap();
    };
    write_tracker(&[]);
    let mut specs: Vec<SpecEvidence> = active.iter().map(|s| spec(s, 6)).collect();
    specs.push(spec("SPEC-KIT-200", 6));
    ws.generate(&specs);
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let first = cleanup(&engine, json!({})).await;
    assert_eq!(first.outcome, JobOutcome::Succeeded, "{:?}", first.report);
    assert_eq!(
        first.report.unwrap().data["exempt_specs"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    // Two SPECs finishing between runs is ordinary (fewer than 3 are never refused).
    write_tracker(&["SPEC-KIT-100", "SPEC-KIT-101"]);
    let two = cleanup(&engine, json!({})).await;
    assert_eq!(two.outcome, JobOutcome::Succeeded, "{:?}", two.report);
    assert_eq!(
        two.report.unwrap().data["removal_guard"]["newly_archived_specs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // All three still protected, finished at once: refused, naming the signal.
    write_tracker(&active);
    let before = tree(&ws.root);
    let archives = archive_files(&ws.root);
    let refused = cleanup(&engine, json!({})).await;
    let message = refusal(&refused);
    assert!(
        message.contains("[tracker]")
            && message.contains("3 of the 3 SPEC(s) the previous cleanup")
            && message.contains("SPEC-KIT-102")
            && message.contains("--force"),
        "{message}"
    );
    assert_eq!(tree(&ws.root), before, "a refused run changes nothing");
    assert_eq!(archive_files(&ws.root), archives);
    // The refused run is not the baseline: the next run is refused too.
    let again = cleanup(&engine, json!({})).await;
    assert!(refusal(&again).contains("[tracker]"));
    // Nor is a dry run, which only warns.
    let dry = cleanup(&engine, json!({ "dry_run": true })).await;
    assert_eq!(dry.outcome, JobOutcome::Succeeded);
    assert!(cleanup(&engine, json!({})).await.outcome == JobOutcome::Failed);

    let forced = cleanup(&engine, json!({ "force": true })).await;
    assert_eq!(forced.outcome, JobOutcome::Succeeded, "{:?}", forced.report);
    assert!(forced
        .report
        .unwrap()
        .summary
        .starts_with("forced past the tracker guard(s)"));
    // The forced run is the new baseline.
    let after = cleanup(&engine, json!({})).await;
    assert_eq!(after.outcome, JobOutcome::Succeeded, "{:?}", after.report);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}
