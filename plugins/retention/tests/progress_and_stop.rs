//! Long cleanups report how far they got and stop when asked: a `progress` event after
//! each SPEC, counting up to the plan's SPECs; a stop (Ctrl-C in the command line, the
//! engine's shutdown) lets the SPECs in hand finish, leaves the rest untouched and loses
//! nothing, and a rerun does the rest.

mod cleanup_support;

use cleanup_support::*;
use speckit_engine::events::{EngineEvent, Progress, PROGRESS_EVENT};
use speckit_engine::JobTrigger;
use speckit_retention::faults::{Faults, Step};
use speckit_retention::job::CleanupReport;
use speckit_retention::RetentionPlugin;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

const SPECS: [&str; 6] = [
    "SPEC-KIT-100",
    "SPEC-KIT-101",
    "SPEC-KIT-102",
    "SPEC-KIT-103",
    "SPEC-KIT-104",
    "SPEC-KIT-105",
];

fn workspace() -> Ws {
    let statuses: Vec<(&str, &str)> = SPECS.iter().map(|s| (*s, "Done")).collect();
    let ws = Ws::new(&statuses, "");
    let specs: Vec<_> = SPECS.iter().map(|s| spec(s, 8)).collect();
    ws.generate(&specs);
    ws
}

/// The counted `progress` events of `job` received on `events` so far.
fn counts(
    events: &mut tokio::sync::broadcast::Receiver<EngineEvent>,
    job: &str,
) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EngineEvent::Plugin { kind, data, .. } = event {
            if kind != PROGRESS_EVENT {
                continue;
            }
            let progress: Progress = serde_json::from_value(data).unwrap();
            if let (true, Some(done), Some(total)) =
                (progress.job == job, progress.done, progress.total)
            {
                assert_eq!(progress.unit.as_deref(), Some("SPECs"));
                out.push((done, total));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_counts_every_spec_up_to_the_plans_total() {
    let ws = workspace();
    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let mut events = engine.events().subscribe();
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, serde_json::json!({}))
        .await
        .unwrap();
    let report: CleanupReport = run.report.unwrap().figures().unwrap();
    assert_eq!(report.figures.archives_written, SPECS.len() as u64);
    let counts = counts(&mut events, "cleanup");
    assert_eq!(counts.len(), SPECS.len(), "one event per SPEC: {counts:?}");
    let mut done: Vec<u64> = counts.iter().map(|c| c.0).collect();
    done.sort_unstable();
    assert_eq!(done, [1, 2, 3, 4, 5, 6], "each SPEC counted once");
    assert!(
        counts.iter().all(|c| c.1 == SPECS.len() as u64),
        "{counts:?}"
    );
}

/// Asks the engine to stop when the first source file is about to be deleted (a SPEC is
/// then in hand: archived, recorded, its sources going).
struct StopAtFirstDelete {
    token: OnceLock<CancellationToken>,
    fired: AtomicBool,
}

impl Faults for StopAtFirstDelete {
    fn check(&self, step: Step, _path: &Path) -> std::io::Result<()> {
        if step == Step::DeleteSource && !self.fired.swap(true, Ordering::SeqCst) {
            self.token.get().expect("token set before the run").cancel();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_finishes_the_specs_in_hand_and_a_rerun_does_the_rest() {
    let ws = workspace();
    let before = tree(&ws.root);
    let stop = Arc::new(StopAtFirstDelete {
        token: OnceLock::new(),
        fired: AtomicBool::new(false),
    });
    let engine = ws
        .engine(now(), Arc::new(RetentionPlugin::with_faults(stop.clone())))
        .await;
    stop.token.set(engine.shutdown_token().clone()).unwrap();
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, serde_json::json!({}))
        .await
        .unwrap();
    let report: CleanupReport = run.report.unwrap().figures().unwrap();
    assert!(report.cancelled, "the run says it stopped early");
    let first = report.figures.archives_written;
    assert!(
        (1..SPECS.len() as u64).contains(&first),
        "the SPECs in hand finished, the rest waited: {first} archives"
    );
    assert_nothing_lost(&before, &ws.root, "after the stop");
    assert_eq!(
        temp_files(&ws.root),
        Vec::<String>::new(),
        "no half-written file"
    );
    engine.shutdown(std::time::Duration::from_secs(10)).await;

    let engine = ws.engine(now(), Arc::new(RetentionPlugin::new())).await;
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, serde_json::json!({}))
        .await
        .unwrap();
    let report: CleanupReport = run.report.unwrap().figures().unwrap();
    assert!(!report.cancelled);
    assert_eq!(
        first + report.figures.archives_written,
        SPECS.len() as u64,
        "the rerun archived exactly the SPECs the stopped run left"
    );
    assert_nothing_lost(&before, &ws.root, "after the rerun");
}
