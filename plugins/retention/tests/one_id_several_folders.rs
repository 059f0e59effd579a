//! Two folders that map to one tracker ID (`SPEC-KIT-025` and `SPEC-KIT-025-add-...`, as
//! in the real tree) are one SPEC: both are processed in one run under the ID's lock, with
//! no false "locked by another process"; a writer holding that lock (another open file
//! description, or another process) keeps cleanup out of both, said once.

mod cleanup_support;

use cleanup_support::*;
use serde_json::json;
use speckit_engine::events::JobOutcome;
use speckit_engine::JobTrigger;
use speckit_retention::plan::{Action, ActionKind, ActionStatus};
use speckit_retention::RetentionPlugin;
use std::collections::BTreeSet;
use std::sync::Arc;

const ID: &str = "SPEC-KIT-025";
const LONG: &str = "SPEC-KIT-025-add-foo";

fn workspace() -> Ws {
    let ws = Ws::new(&[(ID, "Done")], "");
    ws.generate(&[spec(ID, 3), spec(LONG, 3)]);
    ws
}

async fn cleanup(ws: &Ws) -> (speckit_engine::JobReport, Vec<Action>) {
    let plugin = Arc::new(RetentionPlugin::new());
    let engine = ws.engine(now(), plugin.clone()).await;
    let run = engine
        .run_job(
            "cleanup",
            JobTrigger::Manual,
            json!({ "list_actions": true }),
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
    let actions = plugin.take_actions(run.run_id).unwrap();
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    (run.report.unwrap(), actions)
}

fn archived_folders(actions: &[Action]) -> BTreeSet<&str> {
    actions
        .iter()
        .filter(|a| a.action == ActionKind::Archive && a.status == Some(ActionStatus::Done))
        .map(|a| a.spec.as_str())
        .collect()
}

fn without_locks(
    mut t: std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    t.retain(|p, _| !p.starts_with(".locks/"));
    t
}

#[tokio::test]
async fn both_folders_of_one_id_are_archived_in_one_run_without_a_lock_warning() {
    let ws = workspace();
    let before = tree(&ws.root);
    let (report, actions) = cleanup(&ws).await;
    assert!(
        !report.warnings.iter().any(|w| w.contains("locked")),
        "no false lock warning: {:?}",
        report.warnings
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(archived_folders(&actions), BTreeSet::from([ID, LONG]));
    assert!(
        !actions
            .iter()
            .any(|a| a.status == Some(ActionStatus::Skipped)),
        "nothing skipped: {actions:?}"
    );
    // Each folder has its archive, and every old file of both is in one.
    let archives: BTreeSet<String> = archive_files(&ws.root)
        .iter()
        .map(|p| {
            p.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(archives, BTreeSet::from([ID.to_string(), LONG.to_string()]));
    let after = tree(&ws.root);
    for folder in [ID, LONG] {
        assert!(
            after.len() < before.len()
                && before
                    .keys()
                    .filter(|p| p.contains(&format!("/{folder}/")))
                    .count()
                    > after
                        .keys()
                        .filter(|p| p.contains(&format!("/{folder}/")))
                        .count(),
            "{folder} was cleaned"
        );
    }
    assert_nothing_lost(&before, &ws.root, "one id, two folders");
}

#[tokio::test]
async fn a_writer_holding_the_id_lock_keeps_cleanup_out_of_both_with_one_warning() {
    let ws = workspace();
    let before = without_locks(tree(&ws.root));
    // Another open file description of the lock file: conflicts like another process.
    let held = speckit_retention::lock::try_lock(&ws.root, ID).unwrap();
    let (report, actions) = cleanup(&ws).await;
    let lock_warnings: Vec<&String> = report
        .warnings
        .iter()
        .filter(|w| w.contains("locked by another process"))
        .collect();
    assert_eq!(lock_warnings.len(), 1, "{:?}", report.warnings);
    assert!(
        lock_warnings[0].contains(&format!("{ID} is locked")),
        "{}",
        lock_warnings[0]
    );
    assert!(archived_folders(&actions).is_empty(), "{actions:?}");
    let skipped: BTreeSet<&str> = actions
        .iter()
        .filter(|a| a.action == ActionKind::Archive && a.status == Some(ActionStatus::Skipped))
        .map(|a| a.spec.as_str())
        .collect();
    assert_eq!(skipped, BTreeSet::from([ID, LONG]));
    assert_eq!(report.data["archived_files"], 0);
    assert_eq!(without_locks(tree(&ws.root)), before);
    drop(held);

    // A writer in another process (util-linux flock(1), as upstream's writer locks).
    if let Some(mut child) = flock_holder(&ws, ID) {
        let (report, actions) = cleanup(&ws).await;
        drop(child.stdin.take());
        child.wait().unwrap(); // `read` at end of input: exits, freeing the lock
        assert_eq!(
            report
                .warnings
                .iter()
                .filter(|w| w.contains("locked by another process"))
                .count(),
            1,
            "{:?}",
            report.warnings
        );
        assert!(archived_folders(&actions).is_empty());
        assert_eq!(without_locks(tree(&ws.root)), before);
    }

    // Free again: both archived.
    let (report, actions) = cleanup(&ws).await;
    assert!(
        !report.warnings.iter().any(|w| w.contains("locked")),
        "{:?}",
        report.warnings
    );
    assert_eq!(archived_folders(&actions), BTreeSet::from([ID, LONG]));
}

#[tokio::test]
async fn a_writer_holding_the_long_folders_lock_keeps_cleanup_out_of_that_folder_only() {
    let ws = workspace();
    let held = speckit_retention::lock::try_lock(&ws.root, LONG).unwrap();
    let (report, actions) = cleanup(&ws).await;
    let lock_warnings: Vec<&String> = report
        .warnings
        .iter()
        .filter(|w| w.contains("locked by another process"))
        .collect();
    assert_eq!(lock_warnings.len(), 1, "{:?}", report.warnings);
    assert!(lock_warnings[0].contains(&format!("{LONG} is locked")));
    assert_eq!(archived_folders(&actions), BTreeSet::from([ID]));
    drop(held);
}

/// `flock <lockfile> sh` holding the lock until its stdin is closed, returned once it
/// holds it; `None` without flock(1).
fn flock_holder(ws: &Ws, spec: &str) -> Option<std::process::Child> {
    let path = speckit_retention::lock::lock_path(&ws.root, spec);
    let ready = ws.dir.path().join(format!("{spec}.held"));
    let child = std::process::Command::new("flock")
        .arg("--exclusive")
        // Only flock(1) itself holds the lock (not the command it runs): killing it frees it.
        .arg("--close")
        .arg(&path)
        .arg("sh")
        .arg("-c")
        // Holds until its stdin closes.
        .arg(format!("touch '{}' && read _", ready.display()))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "flock(1) never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Some(child)
}
