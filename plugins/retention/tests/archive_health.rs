//! Damage is found early: every cleanup (dry runs too) checks each recorded archive's size
//! and reports a missing or damaged one with its path; a real run also re-hashes the
//! archives due under `retention.verify_archive_hashes_every_days` (a fixed clock moves
//! the runs through the days). New damage fails the run that finds it; known damage is a
//! warning; an archive put back is found intact and cleared.

mod cleanup_support;

use cleanup_support::*;
use serde_json::json;
use speckit_engine::engine::JobRun;
use speckit_engine::events::JobOutcome;
use speckit_engine::JobTrigger;
use speckit_retention::RetentionPlugin;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SPEC: &str = "SPEC-KIT-001";

async fn cleanup_at(ws: &Ws, days_later: i64, args: serde_json::Value) -> JobRun {
    let at = now() + chrono::Duration::days(days_later);
    let engine = ws.engine(at, Arc::new(RetentionPlugin::new())).await;
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, args)
        .await
        .unwrap();
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    run
}

/// A workspace with one finished SPEC whose old evidence is archived by a first cleanup;
/// returns it and the one archive written.
async fn archived_workspace(extra: &str) -> (Ws, PathBuf) {
    let ws = Ws::new(&[(SPEC, "Done")], extra);
    ws.generate(&[spec(SPEC, 6)]);
    let run = cleanup_at(&ws, 0, json!({})).await;
    assert_eq!(run.outcome, JobOutcome::Succeeded, "{:?}", run.report);
    let archives = archive_files(&ws.root);
    assert_eq!(archives.len(), 1, "{archives:?}");
    (ws, archives[0].clone())
}

fn check(run: &JobRun) -> &serde_json::Value {
    &run.report.as_ref().expect("a report").data["archive_check"]
}

fn relative(ws: &Ws, path: &Path) -> String {
    path.strip_prefix(&ws.root)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn errors(run: &JobRun) -> Vec<String> {
    run.report.as_ref().unwrap().errors.clone()
}

/// The run's error that names `name` (the test fails, listing the errors, when none does).
fn error_naming(run: &JobRun, name: &str) -> String {
    let all = errors(run);
    all.iter()
        .find(|e| e.contains(name))
        .cloned()
        .unwrap_or_else(|| panic!("no error names {name}: {all:?}"))
}

fn warnings(run: &JobRun) -> Vec<String> {
    run.report.as_ref().unwrap().warnings.clone()
}

#[tokio::test]
async fn a_truncated_archive_fails_the_first_run_that_sees_it_then_warns() {
    let (ws, archive) = archived_workspace("").await;
    let name = relative(&ws, &archive);
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();

    // A dry run finds it (read-only: nothing recorded), and fails.
    let dry = cleanup_at(&ws, 0, json!({"dry_run": true})).await;
    assert_eq!(dry.outcome, JobOutcome::Failed, "{:?}", dry.report);
    let found = &check(&dry)["damaged_archives"];
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["path"], name.as_str());
    assert_eq!(found[0]["spec"], SPEC);
    assert!(found[0]["known_since"].is_null(), "{found}");
    let error = errors(&dry)
        .into_iter()
        .find(|e| e.contains(&name))
        .unwrap();
    assert!(
        error.contains(&format!(
            "{} bytes on disk, {} recorded",
            bytes.len() / 2,
            bytes.len()
        )),
        "{error}"
    );
    let still = cleanup_at(&ws, 0, json!({"dry_run": true})).await;
    assert_eq!(
        still.outcome,
        JobOutcome::Failed,
        "a dry run records nothing"
    );

    // The real run that finds it fails and records it; the next one warns.
    let first = cleanup_at(&ws, 0, json!({})).await;
    assert_eq!(first.outcome, JobOutcome::Failed, "{:?}", first.report);
    assert!(errors(&first).iter().any(|e| e.contains(&name)));
    let second = cleanup_at(&ws, 0, json!({})).await;
    assert!(
        !errors(&second).iter().any(|e| e.contains(&name)),
        "known damage is not a new error: {:?}",
        errors(&second)
    );
    assert_ne!(second.outcome, JobOutcome::Failed, "{:?}", second.report);
    let warning = warnings(&second)
        .into_iter()
        .find(|w| w.contains(&name))
        .expect("a warning naming the archive");
    assert!(warning.contains("still damaged"), "{warning}");
    assert!(check(&second)["damaged_archives"][0]["known_since"].is_string());
    // The truncated archive is left as it is for the user to inspect.
    assert_eq!(
        std::fs::metadata(&archive).unwrap().len() as usize,
        bytes.len() / 2
    );
}

#[tokio::test]
async fn a_missing_archive_is_named() {
    let (ws, archive) = archived_workspace("").await;
    let name = relative(&ws, &archive);
    std::fs::remove_file(&archive).unwrap();
    let run = cleanup_at(&ws, 0, json!({"dry_run": true})).await;
    assert_eq!(run.outcome, JobOutcome::Failed, "{:?}", run.report);
    let error = error_naming(&run, &name);
    assert!(error.contains("missing from disk"), "{error}");
}

#[tokio::test]
async fn a_symlink_in_place_of_an_archive_is_damage_not_followed() {
    let (ws, archive) = archived_workspace("").await;
    let name = relative(&ws, &archive);
    let elsewhere = ws.dir.path().join("look-alike.tar.zst");
    std::fs::rename(&archive, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &archive).unwrap();
    let run = cleanup_at(&ws, 0, json!({})).await;
    assert_eq!(run.outcome, JobOutcome::Failed, "{:?}", run.report);
    let error = error_naming(&run, &name);
    assert!(error.contains("not a regular file"), "{error}");
}

#[tokio::test]
async fn bit_rot_is_found_by_the_scheduled_hash_check_and_cleared_when_repaired() {
    let (ws, archive) = archived_workspace("verify_archive_hashes_every_days = 30\n").await;
    let name = relative(&ws, &archive);
    let good = std::fs::read(&archive).unwrap();
    let mut rotten = good.clone();
    let middle = rotten.len() / 2;
    rotten[middle] ^= 0x40;
    std::fs::write(&archive, &rotten).unwrap();

    // Not due yet: sizes match, nothing is hashed, nothing found.
    let early = cleanup_at(&ws, 1, json!({})).await;
    assert_eq!(check(&early)["hashed_archives"], 0, "{}", check(&early));
    assert_eq!(check(&early)["checked_archives"], 1);
    assert!(check(&early)["damaged_archives"]
        .as_array()
        .unwrap()
        .is_empty());

    // 30 days after it was written the archive is read in full: the hash differs.
    let due = cleanup_at(&ws, 30, json!({})).await;
    assert_eq!(due.outcome, JobOutcome::Failed, "{:?}", due.report);
    let error = errors(&due)
        .into_iter()
        .find(|e| e.contains(&name))
        .unwrap();
    assert!(
        error.contains(&format!("{} was recorded", sha_hex(&good))),
        "{error}"
    );

    // Put back from a backup: the next real run hashes it again, finds it intact, clears it.
    std::fs::write(&archive, &good).unwrap();
    let repaired = cleanup_at(&ws, 31, json!({})).await;
    assert_ne!(
        repaired.outcome,
        JobOutcome::Failed,
        "{:?}",
        repaired.report
    );
    assert!(check(&repaired)["damaged_archives"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(
        warnings(&repaired)
            .iter()
            .any(|w| w.contains(&name) && w.contains("intact again")),
        "{:?}",
        warnings(&repaired)
    );
    let archives_hashed = check(&repaired)["hashed_archives"].as_u64().unwrap();
    assert!(archives_hashed >= 1, "{}", check(&repaired));

    // Verified at day 31: not due again until day 61, so the next run hashes nothing of it.
    let after = cleanup_at(&ws, 32, json!({})).await;
    assert_eq!(check(&after)["hashed_archives"], 0, "{}", check(&after));
    assert!(!warnings(&after).iter().any(|w| w.contains(&name)));
}

#[tokio::test]
async fn zero_days_checks_sizes_only() {
    let (ws, archive) = archived_workspace("verify_archive_hashes_every_days = 0\n").await;
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&archive, &bytes).unwrap();
    // Past the hash interval's default (30 days), before the purge age (90).
    let run = cleanup_at(&ws, 60, json!({})).await;
    let health = check(&run);
    assert_eq!(health["checked_archives"], 1, "{health}");
    assert_eq!(health["hashed_archives"], 0, "{health}");
    assert!(health["damaged_archives"].as_array().unwrap().is_empty());
}
