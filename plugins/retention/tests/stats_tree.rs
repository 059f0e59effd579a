//! `stats` on hostile and odd trees: symlinks never followed, unreadable folders reported
//! (not silently left out), odd file names, folders that are not SPEC-IDs, one SPEC only.

mod stats_support;

use speckit_retention::guard::{evidence_guard, GuardVerdict};
use speckit_retention::layout::SkipReason;
use speckit_retention::limits::Verdict;
use speckit_retention::stats::{collect, Scope, SpecNames, StatsError, StatsReport};
use stats_support::{as_unprivileged, chmod, open_up, policy_for, sparse, write, MIB};
use std::path::Path;

fn stats_of(root: &Path) -> StatsReport {
    collect(&policy_for(root), &Scope::All, &SpecNames::canonical()).unwrap()
}

fn row<'a>(report: &'a StatsReport, spec: &str) -> &'a speckit_retention::stats::SpecStats {
    report
        .specs
        .iter()
        .find(|s| s.spec == spec)
        .unwrap_or_else(|| panic!("{spec} not in {:?}", report.specs))
}

#[test]
fn symlinks_are_never_followed_or_counted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("evidence");
    let outside = dir.path().join("outside");
    // 60 MiB outside the root, reachable only through links.
    sparse(&outside.join("huge.log"), 60 * MIB);
    write(&root.join("commands/SPEC-KIT-1/a.json"), b"abc");
    std::os::unix::fs::symlink(
        outside.join("huge.log"),
        root.join("commands/SPEC-KIT-1/l.log"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, root.join("commands/SPEC-KIT-1/dir-link")).unwrap();
    // A SPEC folder that is itself a link, and a link loop.
    std::os::unix::fs::symlink(&outside, root.join("commands/SPEC-KIT-2")).unwrap();
    std::os::unix::fs::symlink("loop", root.join("consensus-loop")).unwrap();
    std::fs::create_dir_all(root.join("consensus/SPEC-KIT-1")).unwrap();
    std::os::unix::fs::symlink(".", root.join("consensus/SPEC-KIT-1/self")).unwrap();

    let report = stats_of(&root);
    let one = row(&report, "SPEC-KIT-1");
    assert_eq!((one.total.bytes, one.total.files), (3, 1));
    assert_eq!(one.verdict, Verdict::Ok);
    assert!(report.specs.iter().all(|s| s.spec != "SPEC-KIT-2"));
    assert_eq!(report.root_total.unwrap().bytes, 3);
    assert!(report.complete, "links are skipped by rule, not unreadable");
    let mut links: Vec<String> = report
        .skipped
        .iter()
        .filter(|s| s.reason == SkipReason::Symlink)
        .map(|s| s.path.display().to_string())
        .collect();
    links.sort();
    assert_eq!(
        links,
        [
            "commands/SPEC-KIT-1/dir-link",
            "commands/SPEC-KIT-1/l.log",
            "commands/SPEC-KIT-2",
            "consensus-loop",
            "consensus/SPEC-KIT-1/self",
        ]
    );
    assert!(report
        .warnings
        .iter()
        .any(|w| w.contains("5 symbolic link(s) (never followed)")));

    // The guard of the linked SPEC sees nothing behind the link either.
    let verdict = evidence_guard(&policy_for(&root), "SPEC-KIT-2").unwrap();
    assert!(matches!(verdict, GuardVerdict::Allow { .. }), "{verdict}");
    assert_eq!(verdict.figures().total.bytes, 0);
    assert_eq!(verdict.figures().skipped.len(), 1);
}

#[test]
fn unreadable_folders_are_reported_and_make_totals_lower_bounds() {
    let dir = tempfile::tempdir().unwrap();
    open_up(dir.path());
    let root = dir.path().join("evidence");
    write(&root.join("commands/SPEC-KIT-1/a.json"), b"12345");
    write(&root.join("consensus/SPEC-KIT-1/sub/hidden.json"), b"123");
    write(&root.join("commands/SPEC-KIT-2/b.json"), b"1234567");
    write(&root.join("commands/SPEC-KIT-3/c.json"), b"1");
    chmod(&root.join("consensus/SPEC-KIT-1/sub"), 0o000);
    chmod(&root.join("commands/SPEC-KIT-2"), 0o000);

    let outcome = as_unprivileged(|| {
        let policy = policy_for(&root);
        let all = collect(&policy, &Scope::All, &SpecNames::canonical()).unwrap();
        let guard_two = evidence_guard(&policy, "SPEC-KIT-2").unwrap();
        let guard_three = evidence_guard(&policy, "SPEC-KIT-3").unwrap();
        (all, guard_two, guard_three)
    });
    chmod(&root.join("consensus/SPEC-KIT-1/sub"), 0o755);
    chmod(&root.join("commands/SPEC-KIT-2"), 0o755);
    let Some((report, guard_two, guard_three)) = outcome else {
        return;
    };

    assert!(!report.complete);
    let unreadable: Vec<String> = report
        .skipped
        .iter()
        .filter(|s| matches!(s.reason, SkipReason::Unreadable { .. }))
        .map(|s| s.path.display().to_string())
        .collect();
    assert_eq!(unreadable.len(), 2, "{unreadable:?}");
    assert!(unreadable.contains(&"consensus/SPEC-KIT-1/sub".to_string()));
    assert!(unreadable.contains(&"commands/SPEC-KIT-2".to_string()));
    // The readable part is counted; the row says it is a lower bound.
    let one = row(&report, "SPEC-KIT-1");
    assert_eq!((one.total.bytes, one.unreadable_entries), (5, 1));
    // A SPEC whose only folder could not be listed still has a row.
    let two = row(&report, "SPEC-KIT-2");
    assert_eq!((two.total.files, two.unreadable_entries), (0, 1));
    assert_eq!(row(&report, "SPEC-KIT-3").unreadable_entries, 0);
    assert!(report
        .warnings
        .iter()
        .any(|w| w.contains("2 entries could not be read")));

    // The guard does not call an unmeasured SPEC clean.
    match guard_two {
        GuardVerdict::Warn { reasons, .. } => {
            assert!(
                reasons.iter().any(|r| r.contains("lower bound")),
                "{reasons:?}"
            )
        }
        other => panic!("expected a warning, got {other}"),
    }
    assert!(matches!(guard_three, GuardVerdict::Allow { .. }));
}

#[test]
fn odd_names_are_counted_and_bad_folder_names_reported() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("evidence");
    let spec = root.join("consensus/SPEC-KIT-7");
    write(&spec.join("with space.json"), b"12");
    write(&spec.join("new\nline.json"), b"123");
    write(
        &spec.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9.json")),
        b"1234",
    );
    write(&spec.join("-rf"), b"1");
    sparse(&spec.join("big\x1b[2J.log"), 6 * MIB);
    // Not SPEC-IDs: reported, their contents not counted as any SPEC's.
    write(&root.join("commands/bad name/x.json"), b"123456789");
    write(&root.join("commands/.hidden/x.json"), b"123456789");

    let report = stats_of(&root);
    let seven = row(&report, "SPEC-KIT-7");
    assert_eq!(seven.total.files, 5);
    assert_eq!(seven.total.bytes, 2 + 3 + 4 + 1 + 6 * MIB);
    let invalid = report
        .skipped
        .iter()
        .filter(|s| matches!(s.reason, SkipReason::InvalidSpecFolder { .. }))
        .count();
    assert_eq!(invalid, 2);
    // The 6 MiB file is a single-file warning, its escape sequence defused for terminals.
    let warning = report
        .warnings
        .iter()
        .find(|w| w.contains("single-file"))
        .unwrap();
    assert!(warning.contains("big\\u{1b}[2J.log"), "{warning}");
    assert!(!warning.contains('\x1b'));
    // JSON output survives a name that is not UTF-8.
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("SPEC-KIT-7"));
}

#[test]
fn one_spec_scope_walks_only_its_folders() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("evidence");
    write(&root.join("commands/SPEC-KIT-025-add-x-wit/a"), b"12");
    write(&root.join("consensus/SPEC-KIT-025-add-x-with/b"), b"123");
    write(&root.join("commands/SPEC-KIT-0250/c"), b"1234");
    write(&root.join("commands/SPEC-KIT-900/d"), b"12345");
    write(&root.join("costs/e.json"), b"123456");

    let policy = policy_for(&root);
    let scope = Scope::spec("SPEC-KIT-025").unwrap();
    let report = collect(&policy, &scope, &SpecNames::canonical()).unwrap();
    assert_eq!(report.specs.len(), 1);
    assert_eq!(report.specs[0].total.bytes, 5);
    assert_eq!(report.specs[0].folders.len(), 2);
    assert_eq!(report.root_total, None);
    assert_eq!(report.spec_filter.as_deref(), Some("SPEC-KIT-025"));

    // A SPEC with no evidence yet is reported with zeros.
    let scope = Scope::spec("SPEC-KIT-404").unwrap();
    let report = collect(&policy, &scope, &SpecNames::canonical()).unwrap();
    assert_eq!(report.specs.len(), 1);
    assert_eq!(report.specs[0].total.files, 0);

    // Tracker IDs, when known, decide over the canonical prefix.
    let names = SpecNames::with_tracker_ids(["SPEC-KIT-025-add-x-with"]);
    let report = collect(&policy, &Scope::All, &names).unwrap();
    let specs: Vec<&str> = report.specs.iter().map(|s| s.spec.as_str()).collect();
    assert_eq!(
        specs,
        [
            "SPEC-KIT-025",
            "SPEC-KIT-025-add-x-with",
            "SPEC-KIT-0250",
            "SPEC-KIT-900"
        ]
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    for bad in ["../x", "a/b", "", ".hidden", "a b", "..", "x\\y"] {
        let err = Scope::spec(bad).unwrap_err();
        assert!(err.is_bad_input());
        assert!(err.to_string().contains("invalid SPEC-ID"), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_for(&dir.path().join("nope"));
    let err = evidence_guard(&policy, "SPEC-KIT-1").unwrap_err();
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("nope") && err.to_string().contains("does not exist"));
    let err = collect(&policy, &Scope::All, &SpecNames::canonical()).unwrap_err();
    assert!(matches!(err, StatsError::Layout(_)));
    // A root that is a file.
    write(&dir.path().join("file"), b"x");
    let err = evidence_guard(&policy_for(&dir.path().join("file")), "SPEC-KIT-1").unwrap_err();
    assert!(err.to_string().contains("not a folder"), "{err}");
}

#[test]
fn a_tree_changing_under_the_walk_never_fails_or_overcounts() {
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Stops the writer however the test ends, so a failed assertion cannot leave the
    /// scope waiting on it forever.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let folders = 40;
    let per_folder = 25u64;
    for s in 0..folders {
        for i in 0..per_folder {
            write(
                &root.join(format!("commands/SPEC-CHURN-{s}/f{i}.json")),
                b"0123456789",
            );
        }
    }
    let stop = AtomicBool::new(false);
    let rounds = std::thread::scope(|scope| {
        // A writer removing and re-creating SPEC folders while stats runs (as a cleanup or
        // an agent run would, in another process).
        let writer = scope.spawn(|| {
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let folder = root.join(format!("commands/SPEC-CHURN-{}", round % folders));
                std::fs::remove_dir_all(&folder).unwrap();
                for i in 0..per_folder {
                    write(&folder.join(format!("f{i}.json")), b"0123456789");
                }
                round += 1;
            }
            round
        });
        let _stop = StopOnDrop(&stop);
        let policy = policy_for(&root);
        for _ in 0..30 {
            let report = collect(&policy, &Scope::All, &SpecNames::canonical()).unwrap();
            let total = report.root_total.unwrap();
            // Each folder is listed once per walk: never more files than exist at once.
            assert!(total.files <= folders as u64 * per_folder, "{total:?}");
            // A file caught between create and write is empty, never larger.
            assert!(total.bytes <= total.files * 10, "{total:?}");
            // Anything that vanished mid-walk is reported, never silently dropped.
            for skip in &report.skipped {
                assert!(
                    matches!(skip.reason, SkipReason::Unreadable { .. }),
                    "{skip:?}"
                );
            }
            assert_eq!(report.complete, report.skipped.is_empty());
        }
        drop(_stop);
        writer.join().unwrap()
    });
    assert!(rounds > 0, "the tree never changed during the walks");
}
