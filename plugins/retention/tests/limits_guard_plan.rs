//! The guard's block action from the real retention plan ([`PlanPreview`]): for a finished
//! SPEC, what `cleanup --spec` would free and whether that is enough; for an active one,
//! that it must be trimmed by hand.

mod stats_support;

use chrono::Utc;
use speckit_engine::storage::StorageOptions;
use speckit_engine::Storage;
use speckit_retention::guard::{evidence_guard_with, CleanupOutlook, GuardVerdict, PlanPreview};
use speckit_retention::stats::SpecNames;
use speckit_retention::tracker::Trackers;
use speckit_retention::EvidencePolicy;
use stats_support::{policy_for, sparse, MIB};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A sparse file last written `days` ago (the plan ages files without a timestamp in their
/// name by mtime).
fn aged(path: &Path, len: u64, days: u64) {
    sparse(path, len);
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
        .unwrap();
}

#[test]
fn a_block_reports_what_the_plan_would_free_or_that_the_spec_is_exempt() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("evidence");
    // Finished: 40 MiB old enough to archive, 15 MiB recent. 55 MiB, 5 over the limit.
    aged(
        &root.join("commands/SPEC-KIT-070/old-run.log"),
        40 * MIB,
        100,
    );
    aged(
        &root.join("consensus/SPEC-KIT-070/recent.json"),
        15 * MIB,
        1,
    );
    // Finished, but only 2 MiB old: cleanup is not enough.
    aged(&root.join("commands/SPEC-KIT-072/old.log"), 2 * MIB, 100);
    aged(&root.join("commands/SPEC-KIT-072/recent.log"), 51 * MIB, 1);
    // Active: never touched by cleanup.
    aged(
        &root.join("commands/SPEC-KIT-071/old-run.log"),
        60 * MIB,
        100,
    );
    let tracker = dir.path().join("SPEC.md");
    std::fs::write(
        &tracker,
        "| Spec | Status | Owner | Next Action |\n|---|---|---|---|\n\
         | SPEC-KIT-070 | Done | a | - |\n| SPEC-KIT-071 | **IN PROGRESS** | b | - |\n\
         | SPEC-KIT-072 | Done | c | - |\n",
    )
    .unwrap();
    let mut policy = policy_for(&root);
    policy
        .sections
        .update::<EvidencePolicy>(|s| s.tracker_paths = vec![tracker.clone()]);
    let storage = Storage::open(StorageOptions::new(dir.path().join("db.sqlite"))).unwrap();
    let trackers = Trackers::load(&[tracker]).unwrap();
    let names = SpecNames::with_tracker_ids(trackers.ids().map(str::to_string));
    let preview = PlanPreview {
        storage: &storage,
        trackers: &trackers,
        now: Utc::now(),
    };
    let guard = |spec: &str| evidence_guard_with(&policy, spec, &names, Some(&preview)).unwrap();

    match guard("SPEC-KIT-070") {
        GuardVerdict::Block { action, .. } => {
            assert_eq!(action.must_free_bytes, 5 * MIB);
            assert_eq!(
                action.cleanup,
                Some(CleanupOutlook::Frees {
                    bytes: 40 * MIB,
                    files: 1
                })
            );
            assert!(action.advice.contains("enough"), "{}", action.advice);
        }
        other => panic!("expected a block, got {other}"),
    }
    match guard("SPEC-KIT-072") {
        GuardVerdict::Block { action, .. } => {
            assert_eq!(
                action.cleanup,
                Some(CleanupOutlook::Frees {
                    bytes: 2 * MIB,
                    files: 1
                })
            );
            // 53 MiB: 3 MiB must go, cleanup frees 2.
            assert_eq!(action.must_free_bytes, 3 * MIB);
            assert!(
                action
                    .advice
                    .contains("then trim at least 1.0 MiB more by hand"),
                "{}",
                action.advice
            );
        }
        other => panic!("expected a block, got {other}"),
    }
    let active = guard("SPEC-KIT-071");
    match &active {
        GuardVerdict::Block { action, .. } => {
            assert!(
                matches!(&action.cleanup, Some(CleanupOutlook::Exempt { reason }) if reason.contains("IN PROGRESS")),
                "{:?}",
                action.cleanup
            );
        }
        other => panic!("expected a block, got {other}"),
    }
    assert!(active.to_string().contains("by hand"), "{active}");
    // The preview changed nothing.
    assert!(root.join("commands/SPEC-KIT-070/old-run.log").exists());
    storage.close();
}
