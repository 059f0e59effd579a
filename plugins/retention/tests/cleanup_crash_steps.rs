//! Crash at every step: for every N, a cleanup is stopped dead at its N-th I/O step (a
//! panic that runs none of the error-handling code, like a crash), and then:
//! - each original file is in place unchanged or in a verified archive, and each original
//!   database row is in the database or in a verified archive;
//! - a rerun reaches exactly the end state of an uninterrupted run.
//!
//! The workspace has an archive old enough to purge, so purge steps crash too.

mod cleanup_support;

use cleanup_support::*;
use speckit_engine::Storage;
use speckit_retention::faults::{Faults, Step};
use speckit_retention::job::{cleanup_blocking, CleanupOptions};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Panics at the `target`-th step (never when 0); counts steps.
struct CrashAt {
    target: usize,
    seen: AtomicUsize,
    steps: Mutex<Vec<(Step, String)>>,
}

impl CrashAt {
    fn new(target: usize) -> Self {
        Self {
            target,
            seen: AtomicUsize::new(0),
            steps: Mutex::new(Vec::new()),
        }
    }
}

impl Faults for CrashAt {
    fn check(&self, step: Step, path: &Path) -> std::io::Result<()> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        self.steps.lock().unwrap().push((
            step,
            path.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        ));
        if n == self.target {
            panic!("simulated crash at step {n}: {step:?} {}", path.display());
        }
        Ok(())
    }
}

/// A workspace with an old archive (written by a cleanup 100 days ago) and old rows.
fn fresh() -> (Ws, Storage) {
    let ws = Ws::new(
        &[
            ("SPEC-KIT-100", "Done"),
            ("SPEC-KIT-101", "Done"),
            ("SPEC-KIT-200", "In Progress"),
        ],
        "",
    );
    ws.generate(&[
        spec("SPEC-KIT-100", 3),
        spec("SPEC-KIT-101", 3),
        spec("SPEC-KIT-200", 2),
    ]);
    let storage = ws.storage();
    add_rows(
        &storage,
        &[("SPEC-KIT-100", "plan", 60), ("SPEC-KIT-101", "plan", 10)],
    );
    let policy = ws.policy();
    let earlier = now() - chrono::Duration::days(100);
    let setup = cleanup_blocking(
        &policy.policy,
        &storage,
        earlier,
        &CleanupOptions::default(),
        None,
        &speckit_retention::job::Control::NONE,
        0,
        1,
    )
    .unwrap();
    assert!(setup.executed.unwrap().figures.archives_written > 0);
    (ws, storage)
}

fn run(
    ws: &Ws,
    storage: &Storage,
    faults: Option<&dyn Faults>,
) -> speckit_retention::job::CleanupResult {
    let policy = ws.policy();
    cleanup_blocking(
        &policy.policy,
        storage,
        now(),
        &CleanupOptions::default(),
        faults,
        &speckit_retention::job::Control::NONE,
        1,
        1,
    )
    .unwrap()
}

#[derive(Debug, PartialEq)]
struct EndState {
    tree: BTreeMap<String, String>,
    archived: BTreeMap<String, String>,
    archives: Vec<String>,
    records: Vec<(String, i64, i64, bool)>,
    runs: Vec<String>,
    outputs: Vec<String>,
    executions: Vec<String>,
}

fn end_state(ws: &Ws, storage: &Storage) -> EndState {
    assert!(
        temp_files(&ws.root).is_empty(),
        "temporaries left: {:?}",
        temp_files(&ws.root)
    );
    EndState {
        tree: tree(&ws.root),
        archived: archived(&ws.root),
        archives: archive_files(&ws.root)
            .iter()
            .map(|p| {
                p.strip_prefix(&ws.root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        records: archive_records(storage),
        runs: table_rows(storage, "consensus_runs"),
        outputs: table_rows(storage, "agent_outputs"),
        executions: table_rows(storage, "agent_executions"),
    }
}

/// Each original database row is still in the database or in a verified archive's rows.
fn assert_rows_kept(storage: &Storage, ws: &Ws, original_runs: &[i64], context: &str) {
    let present: Vec<i64> = storage
        .read_blocking(|c| {
            let mut s = c.prepare("SELECT id FROM consensus_runs")?;
            let r = s.query_map([], |r| r.get(0))?;
            r.collect()
        })
        .unwrap();
    let mut archived_ids = Vec::new();
    for a in archive_files(&ws.root) {
        if let Some(text) = read_archive(&a).1.get("consensus_runs") {
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                archived_ids.push(v["id"].as_i64().unwrap());
            }
        }
    }
    for id in original_runs {
        assert!(
            present.contains(id) || archived_ids.contains(id),
            "{context}: consensus_runs row {id} is neither in the database nor in an archive"
        );
    }
}

#[test]
fn a_crash_at_any_step_loses_nothing_and_a_rerun_finishes_the_job() {
    // Reference: an uninterrupted run, and how many steps it takes.
    let (ws, storage) = fresh();
    let counter = CrashAt::new(0);
    let result = run(&ws, &storage, Some(&counter));
    let outcome = result.executed.unwrap();
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(
        outcome.figures.purged_archives, 2,
        "the old archives are purged"
    );
    assert!(outcome.figures.archived_rows > 0);
    let reference = end_state(&ws, &storage);
    let total = counter.seen.load(Ordering::SeqCst);
    let steps = counter.steps.lock().unwrap().clone();
    for step in [
        Step::ReadSource,
        Step::WriteArchive,
        Step::SyncArchive,
        Step::VerifyArchive,
        Step::RenameArchive,
        Step::SyncDir,
        Step::WriteSidecar,
        Step::RecordArchive,
        Step::DeleteSource,
        Step::PurgeArchive,
        Step::WriteSummary,
    ] {
        assert!(
            steps.iter().any(|(s, _)| *s == step),
            "{step:?} never happens: {steps:?}"
        );
    }
    assert!(total > 30, "{total} steps");
    eprintln!("{total} steps to crash at");
    // Simulated crashes are expected: keep their panic messages (and backtraces) quiet.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        if !info.to_string().contains("simulated crash") {
            eprintln!("{info}");
        }
    }));

    for n in 1..=total {
        let (ws, storage) = fresh();
        let original = tree(&ws.root);
        let original_runs: Vec<i64> = storage
            .read_blocking(|c| {
                let mut s = c.prepare("SELECT id FROM consensus_runs")?;
                let r = s.query_map([], |r| r.get(0))?;
                r.collect()
            })
            .unwrap();
        let crash = CrashAt::new(n);
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(&ws, &storage, Some(&crash));
        }));
        assert!(crashed.is_err(), "step {n} of {total} did not crash");
        let (step, file) = steps[n - 1].clone();
        let context = format!("crash at step {n}/{total} ({step:?} {file})");
        assert_nothing_lost(&original, &ws.root, &context);
        assert_rows_kept(&storage, &ws, &original_runs, &context);

        let rerun = run(&ws, &storage, None).executed.unwrap();
        assert!(
            rerun.errors.is_empty(),
            "{context}: rerun errors {:?}",
            rerun.errors
        );
        assert_eq!(
            end_state(&ws, &storage),
            reference,
            "{context}: the rerun's end state differs"
        );
    }
    std::panic::set_hook(default_hook);
}
