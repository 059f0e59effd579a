//! Safety: one file's error is reported with its path and the run goes on; a failed
//! archive keeps its sources; a file changed since the plan is not archived stale; a writer
//! holding the SPEC's lock keeps cleanup out; symbolic links are never followed and odd
//! names are handled.
//!
//! The tests run as root, so `chmod` cannot make a file unreadable: "permission denied",
//! "disk full" and "I/O error" are injected at the exact I/O step through the plugin's
//! fault hook (`speckit_retention::faults`), which returns the real OS error codes.

mod cleanup_support;

use cleanup_support::*;
use serde_json::json;
use speckit_engine::events::JobOutcome;
use speckit_engine::JobTrigger;
use speckit_retention::faults::{Faults, Step};
use speckit_retention::plan::{ActionKind, ActionStatus};
use speckit_retention::RetentionPlugin;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Fails (`errno`) at a step, optionally only for paths containing `path_part`, at most
/// `times` times.
struct FailAt {
    step: Step,
    path_part: Option<String>,
    errno: i32,
    times: AtomicUsize,
}

impl FailAt {
    fn new(step: Step, path_part: Option<&str>, errno: i32, times: usize) -> Arc<Self> {
        Arc::new(Self {
            step,
            path_part: path_part.map(str::to_string),
            errno,
            times: AtomicUsize::new(times),
        })
    }
}

impl Faults for FailAt {
    fn check(&self, step: Step, path: &Path) -> io::Result<()> {
        let matches = step == self.step
            && self
                .path_part
                .as_ref()
                .is_none_or(|p| path.to_string_lossy().contains(p.as_str()));
        if matches
            && self
                .times
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| t.checked_sub(1))
                .is_ok()
        {
            return Err(io::Error::from_raw_os_error(self.errno));
        }
        Ok(())
    }
}

fn one_old_file(ws: &Ws, spec: &str, name: &str, body: &[u8]) -> String {
    let rel = format!("commands/{spec}/{name}");
    let path = ws.root.join(&rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    let old = std::time::SystemTime::from(now() - chrono::Duration::days(60));
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    rel
}

#[tokio::test]
async fn an_unreadable_file_is_reported_and_the_rest_is_archived() {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
    ws.generate(&[spec("SPEC-KIT-100", 6)]);
    let victim = one_old_file(
        &ws,
        "SPEC-KIT-100",
        "victim_2025-12-01T00:00:00Z.json",
        b"secret",
    );
    let before = tree(&ws.root);
    let plugin = Arc::new(RetentionPlugin::with_faults(FailAt::new(
        Step::ReadSource,
        Some("victim"),
        libc::EACCES,
        1,
    )));
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
        JobOutcome::Failed,
        "any file error fails the run (exit 1)"
    );
    let report = run.report.unwrap();
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].contains(&victim), "{}", report.errors[0]);
    assert!(
        report.errors[0].contains("Permission denied"),
        "{}",
        report.errors[0]
    );
    let actions = plugin.take_actions(run.run_id).unwrap();
    let failed: Vec<_> = actions
        .iter()
        .filter(|a| a.status == Some(ActionStatus::Failed))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].path, victim);
    // The victim stays; everything else planned is archived.
    let after = tree(&ws.root);
    assert_eq!(after.get(&victim), before.get(&victim));
    assert!(report.data["archived_files"].as_u64().unwrap() > 0);
    assert!(!archived(&ws.root).contains_key(&victim));
    assert_nothing_lost(&before, &ws.root, "after a read error");
    // Next run (no fault) archives it.
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, json!({}))
        .await
        .unwrap();
    assert_eq!(run.outcome, JobOutcome::Succeeded);
    assert!(archived(&ws.root).contains_key(&victim));
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn disk_full_while_writing_an_archive_keeps_all_its_sources() {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done"), ("SPEC-KIT-101", "Done")], "");
    ws.generate(&[spec("SPEC-KIT-100", 6), spec("SPEC-KIT-101", 6)]);
    let before = tree(&ws.root);
    // The first archive write fails with ENOSPC; the second SPEC's archive goes through.
    let plugin = Arc::new(RetentionPlugin::with_faults(FailAt::new(
        Step::WriteArchive,
        Some("SPEC-KIT-100"),
        libc::ENOSPC,
        1,
    )));
    let engine = ws.engine(now(), plugin).await;
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, json!({}))
        .await
        .unwrap();
    assert_eq!(run.outcome, JobOutcome::Failed);
    let report = run.report.unwrap();
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("SPEC-KIT-100") && e.contains("No space left")),
        "{:?}",
        report.errors
    );
    let after = tree(&ws.root);
    for (path, sha) in before.iter().filter(|(p, _)| p.contains("SPEC-KIT-100")) {
        assert_eq!(
            after.get(path),
            Some(sha),
            "{path}: sources of a failed archive stay"
        );
    }
    assert!(temp_files(&ws.root).is_empty(), "the temporary is removed");
    assert_eq!(
        archive_files(&ws.root).len(),
        1,
        "SPEC-KIT-101 still archived"
    );
    assert_nothing_lost(&before, &ws.root, "after disk full");
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_failed_verification_or_record_keeps_the_sources() {
    for (step, errno) in [
        (Step::VerifyArchive, libc::EIO),
        (Step::RecordArchive, libc::EIO),
    ] {
        let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
        ws.generate(&[spec("SPEC-KIT-100", 4)]);
        let before = tree(&ws.root);
        let plugin = Arc::new(RetentionPlugin::with_faults(FailAt::new(
            step, None, errno, 1,
        )));
        let engine = ws.engine(now(), plugin).await;
        let run = engine
            .run_job("cleanup", JobTrigger::Manual, json!({}))
            .await
            .unwrap();
        assert_eq!(run.outcome, JobOutcome::Failed, "{step:?}");
        let mut after = tree(&ws.root);
        after.remove(".locks/SPEC-KIT-100.lock"); // cleanup takes the writer's lock
        assert_eq!(after, before, "{step:?}: no source deleted");
        assert_eq!(run.report.unwrap().data["deleted_files"], 0);
        engine.shutdown(std::time::Duration::from_secs(5)).await;
        // A rerun finishes the job (after a failed record, by adopting the archive).
        let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
        let run = engine
            .run_job("cleanup", JobTrigger::Manual, json!({}))
            .await
            .unwrap();
        assert_eq!(
            run.outcome,
            JobOutcome::Succeeded,
            "{step:?}: {:?}",
            run.report
        );
        assert_nothing_lost(&before, &ws.root, &format!("{step:?}"));
        assert_eq!(archive_files(&ws.root).len(), 1, "{step:?}");
        engine.shutdown(std::time::Duration::from_secs(5)).await;
    }
}

/// Appends to a file the moment cleanup is about to read it (a writer racing cleanup).
struct Touch(String);

impl Faults for Touch {
    fn check(&self, step: Step, path: &Path) -> io::Result<()> {
        if step == Step::ReadSource && path.to_string_lossy().contains(&self.0) {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(path)?
                .write_all(b"\nappended")?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_file_changed_since_the_plan_is_not_archived_stale() {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
    ws.generate(&[spec("SPEC-KIT-100", 4)]);
    let rel = one_old_file(
        &ws,
        "SPEC-KIT-100",
        "busy_2025-12-01T00:00:00Z.log",
        b"line 1",
    );
    let plugin = Arc::new(RetentionPlugin::with_faults(Arc::new(Touch(
        "busy_".into(),
    ))));
    let engine = ws.engine(now(), plugin.clone()).await;
    let run = engine
        .run_job(
            "cleanup",
            JobTrigger::Manual,
            json!({ "list_actions": true }),
        )
        .await
        .unwrap();
    assert_eq!(run.outcome, JobOutcome::Succeeded, "a skip is not an error");
    let report = run.report.unwrap();
    assert!(
        report.warnings.iter().any(|w| w.contains(&rel)),
        "{:?}",
        report.warnings
    );
    let actions = plugin.take_actions(run.run_id).unwrap();
    let busy = actions.iter().find(|a| a.path == rel).unwrap();
    assert_eq!(busy.status, Some(ActionStatus::Skipped));
    assert_eq!(
        std::fs::read(ws.root.join(&rel)).unwrap(),
        b"line 1\nappended",
        "the writer's data is in place"
    );
    assert!(
        !archived(&ws.root).contains_key(&rel),
        "never archived stale"
    );
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_writer_holding_the_lock_keeps_cleanup_out_of_that_spec() {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done"), ("SPEC-KIT-101", "Done")], "");
    ws.generate(&[spec("SPEC-KIT-100", 4), spec("SPEC-KIT-101", 4)]);
    let before = tree(&ws.root);
    // flock belongs to an open file description: this conflicts like another process.
    let held = speckit_retention::lock::try_lock(&ws.root, "SPEC-KIT-100").unwrap();
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, json!({}))
        .await
        .unwrap();
    assert_eq!(run.outcome, JobOutcome::Succeeded);
    let report = run.report.unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("SPEC-KIT-100") && w.contains("locked")),
        "{:?}",
        report.warnings
    );
    let after = tree(&ws.root);
    for (path, sha) in before.iter().filter(|(p, _)| p.contains("SPEC-KIT-100/")) {
        assert_eq!(after.get(path), Some(sha), "{path}");
    }
    assert!(after.len() < before.len(), "SPEC-KIT-101 was cleaned");
    drop(held);
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, json!({}))
        .await
        .unwrap();
    assert!(run.report.unwrap().data["archived_files"].as_u64().unwrap() > 0);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn symlinks_are_never_followed_and_odd_names_are_archived() {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done"), ("SPEC-LINK", "Done")], "");
    ws.generate(&[spec("SPEC-KIT-100", 2)]);
    let outside = ws.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        outside.join("precious_2025-01-01T00:00:00Z.json"),
        b"do not touch",
    )
    .unwrap();
    let spec_dir = ws.root.join("commands/SPEC-KIT-100");
    let old = std::time::SystemTime::from(now() - chrono::Duration::days(60));
    // A symlink to a file, to a folder, and a SPEC folder that is a symlink.
    std::os::unix::fs::symlink(
        outside.join("precious_2025-01-01T00:00:00Z.json"),
        spec_dir.join("link_2025-01-01T00:00:00Z.json"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, spec_dir.join("linked_dir")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.root.join("commands/SPEC-LINK")).unwrap();
    // A FIFO and odd names.
    let fifo = std::ffi::CString::new(spec_dir.join("pipe_2025-01-01T00:00:00Z").to_str().unwrap())
        .unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let odd = [
        "with space 2025-01-01T00:00:00Z.json",
        "ünïcödé_2025-01-01T00:00:00Z.json",
        "-rf_2025-01-01T00:00:00Z.json",
        "new\nline_2025-01-01T00:00:00Z.json",
        "quote\"and'_2025-01-01T00:00:00Z.json",
    ];
    for name in odd {
        let p = spec_dir.join(name);
        std::fs::write(&p, name.as_bytes()).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let long = format!("{}_2025-01-01T00:00:00Z.json", "l".repeat(200));
    std::fs::write(spec_dir.join(&long), b"long").unwrap();
    std::fs::File::options()
        .write(true)
        .open(spec_dir.join(&long))
        .unwrap()
        .set_modified(old)
        .unwrap();

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
    assert_eq!(run.outcome, JobOutcome::Succeeded, "{:?}", run.report);
    let actions = plugin.take_actions(run.run_id).unwrap();
    // Outside untouched; the links themselves still there, reported as skipped.
    assert_eq!(
        std::fs::read(outside.join("precious_2025-01-01T00:00:00Z.json")).unwrap(),
        b"do not touch"
    );
    assert!(std::fs::symlink_metadata(spec_dir.join("link_2025-01-01T00:00:00Z.json")).is_ok());
    assert!(std::fs::symlink_metadata(spec_dir.join("linked_dir")).is_ok());
    assert!(std::fs::symlink_metadata(ws.root.join("commands/SPEC-LINK")).is_ok());
    let skipped: Vec<&str> = actions
        .iter()
        .filter(|a| a.action == ActionKind::Skip)
        .map(|a| a.path.as_str())
        .collect();
    for s in [
        "commands/SPEC-KIT-100/link_2025-01-01T00:00:00Z.json",
        "commands/SPEC-KIT-100/linked_dir",
        "commands/SPEC-KIT-100/pipe_2025-01-01T00:00:00Z",
        "commands/SPEC-LINK",
    ] {
        assert!(
            skipped.contains(&s),
            "{s} not reported as skipped: {skipped:?}"
        );
    }
    // Odd names are archived with their exact names and content.
    let archived = archived(&ws.root);
    for name in odd.iter().copied().chain([long.as_str()]) {
        let rel = format!("commands/SPEC-KIT-100/{name}");
        assert!(archived.contains_key(&rel), "{name:?} not archived");
        assert!(!ws.root.join(&rel).exists());
    }
    assert!(!archived.keys().any(|k| k.contains("precious")));
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_archive_folder_that_is_a_symlink_is_refused() {
    let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
    ws.generate(&[spec("SPEC-KIT-100", 2)]);
    let outside = ws.dir.path().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(ws.root.join("cleanup")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.root.join("cleanup/archives")).unwrap();
    let before = tree(&ws.root);
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, json!({}))
        .await
        .unwrap();
    assert_eq!(run.outcome, JobOutcome::Failed);
    assert!(run.error.unwrap().contains("cleanup/archives"));
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written through the link"
    );
    assert_eq!(tree(&ws.root), before);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_writer_locking_the_tracker_id_keeps_cleanup_out_of_every_folder_of_it() {
    let ws = Ws::new(&[("SPEC-KIT-025", "Done")], "");
    ws.generate(&[
        spec("SPEC-KIT-025-add-automated-conflict-resolution-with", 3),
        spec("SPEC-KIT-025-add-automated-conflict-resolution-wit", 3),
    ]);
    let before = tree(&ws.root);
    let held = speckit_retention::lock::try_lock(&ws.root, "SPEC-KIT-025").unwrap();
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, json!({}))
        .await
        .unwrap();
    let report = run.report.unwrap();
    assert_eq!(report.data["archived_files"], 0);
    assert_eq!(
        report
            .warnings
            .iter()
            .filter(|w| w.contains("SPEC-KIT-025 is locked"))
            .count(),
        1,
        "{:?}",
        report.warnings
    );
    let mut after = tree(&ws.root);
    after.retain(|p, _| !p.starts_with(".locks/"));
    let mut expected = before.clone();
    expected.retain(|p, _| !p.starts_with(".locks/"));
    assert_eq!(after, expected);
    drop(held);
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, json!({}))
        .await
        .unwrap();
    assert!(run.report.unwrap().data["archived_files"].as_u64().unwrap() > 0);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}
