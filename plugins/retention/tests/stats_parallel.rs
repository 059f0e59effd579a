//! The parallel walk behind `stats` gives exactly what the one-thread walk gives: the same
//! totals, the same per-SPEC and per-folder figures, the same large files and the same skip
//! list in the same order, for every thread count, on the upstream fixture trees and on a
//! hostile generated tree (symlinks to folders and files, a symlinked SPEC folder, a FIFO,
//! unreadable folders, odd names, folders that are not SPEC-IDs). The figures are also
//! checked against an independent find-style count.

mod stats_support;

use speckit_engine::SpecId;
use speckit_retention::layout::{self, EvidenceKind, SkipReason, Skipped};
use speckit_retention::stats::{measure_with_threads, EvidenceUsage, Scope, SpecNames, Usage};
use stats_support::{as_unprivileged, chmod, find_style_sum, fixtures, open_up, sparse, MIB};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const THREADS: [usize; 5] = [1, 2, 3, 8, 64];

/// What the one-thread `layout::walk` reports, summed per (half, folder) without the code
/// under test: the reference every thread count must match.
#[derive(Debug, Default, PartialEq)]
struct Reference {
    folders: BTreeMap<(EvidenceKind, String), Usage>,
    non_spec: Usage,
    large: Vec<(PathBuf, u64)>,
    skipped: Vec<Skipped>,
}

fn reference(root: &Path, warn: u64) -> Reference {
    let mut out = Reference::default();
    let mut skipped = Vec::new();
    layout::walk(
        root,
        &mut |entry| {
            let usage = match &entry.owner {
                Some((spec, kind)) => out
                    .folders
                    .entry((*kind, spec.as_str().to_string()))
                    .or_default(),
                None => &mut out.non_spec,
            };
            usage.bytes += entry.size;
            usage.files += 1;
            if entry.size > warn {
                out.large.push((entry.relative.clone(), entry.size));
            }
        },
        &mut |skip| skipped.push(skip),
    )
    .unwrap();
    out.skipped = skipped;
    out.large.sort();
    out
}

/// Measures with every thread count, checks all agree exactly (order included) and match
/// the one-thread walk; returns the measurement.
fn measure_all_ways(root: &Path, warn: u64) -> EvidenceUsage {
    let names = SpecNames::canonical();
    let first = measure_with_threads(root, &Scope::All, &names, warn, 1).unwrap();
    for threads in THREADS {
        // Several rounds: which thread takes which folder changes from run to run.
        for _ in 0..3 {
            let again = measure_with_threads(root, &Scope::All, &names, warn, threads).unwrap();
            assert_eq!(again, first, "{threads} threads on {}", root.display());
        }
    }

    let expected = reference(root, warn);
    assert_eq!(first.skipped, expected.skipped, "skips, in walk order");
    assert_eq!(first.non_spec, expected.non_spec);
    let mut large: Vec<(PathBuf, u64)> = first
        .large_files
        .iter()
        .map(|f| (f.path.clone(), f.bytes))
        .collect();
    large.sort();
    assert_eq!(large, expected.large);
    let mut folders = BTreeMap::new();
    for spec in &first.specs {
        let (mut commands, mut consensus) = (Usage::default(), Usage::default());
        for f in &spec.folders {
            for (kind, usage) in [
                (EvidenceKind::Commands, f.commands),
                (EvidenceKind::Consensus, f.consensus),
            ] {
                if usage.files > 0 {
                    folders.insert((kind, f.folder.clone()), usage);
                }
            }
            commands = commands.plus(f.commands);
            consensus = consensus.plus(f.consensus);
        }
        assert_eq!((spec.commands, spec.consensus), (commands, consensus));
    }
    assert_eq!(folders, expected.folders);

    // One SPEC's measurement in parallel equals its row in the whole-root one.
    for spec in first.specs.iter().take(5) {
        let Ok(id) = SpecId::parse(&spec.spec) else {
            continue;
        };
        for threads in [1, 2, 8] {
            let one = measure_with_threads(root, &Scope::Spec(id.clone()), &names, warn, threads)
                .unwrap();
            assert_eq!(one.specs, vec![spec.clone()], "{} on {threads}", spec.spec);
        }
    }
    first
}

#[test]
fn fixture_trees_measure_the_same_on_any_number_of_threads() {
    let Some(fixtures) = fixtures() else { return };
    for root in [
        "docs/SPEC-OPS-004-integrated-coder-hooks/evidence",
        "codex-rs/docs/SPEC-OPS-004-integrated-coder-hooks/evidence",
        "_large_variants_809b4b69/docs/SPEC-OPS-004-integrated-coder-hooks/evidence",
    ] {
        let root = fixtures.join(root);
        // 0.5 MiB: the large variants have files above it.
        let usage = measure_all_ways(&root, MIB / 2);
        assert!(!usage.specs.is_empty(), "{}", root.display());
        let spec_bytes: u64 = usage.specs.iter().map(|s| s.total().bytes).sum();
        let (bytes, files) = find_style_sum(&root);
        let spec_files: u64 = usage.specs.iter().map(|s| s.total().files).sum();
        assert_eq!(
            (
                spec_bytes + usage.non_spec.bytes,
                spec_files + usage.non_spec.files
            ),
            (bytes, files),
            "{}",
            root.display()
        );
    }
}

/// Forty SPEC folders and everything a walk must not follow, count or lose.
fn hostile_tree(base: &Path) -> PathBuf {
    let root = base.join("evidence");
    let outside = base.join("outside");
    sparse(&outside.join("huge.log"), 60 * MIB);
    for i in 0..40u64 {
        let spec = format!("SPEC-PAR-{i:03}");
        for j in 0..(i % 7 + 1) {
            sparse(&root.join(format!("commands/{spec}/f{j}.json")), i * 13 + j);
        }
        if i % 2 == 0 {
            sparse(
                &root.join(format!("consensus/{spec}/sub/deeper/g.json")),
                i + 1,
            );
            sparse(&root.join(format!("consensus/{spec}/h.json")), 2 * i + 1);
        }
    }
    let symlink = |to: &Path, at: &str| std::os::unix::fs::symlink(to, root.join(at)).unwrap();
    symlink(&outside, "commands/SPEC-PAR-005/link-to-dir");
    symlink(
        &outside.join("huge.log"),
        "commands/SPEC-PAR-006/link-to-file",
    );
    symlink(&outside, "consensus/SPEC-PAR-LINK");
    symlink(&outside, "archive-link");
    std::os::unix::fs::symlink(".", root.join("consensus/SPEC-PAR-012/sub/self")).unwrap();
    let fifo = std::ffi::CString::new(
        root.join("commands/SPEC-PAR-007/pipe")
            .as_os_str()
            .as_bytes(),
    )
    .unwrap();
    // SAFETY: a plain system call on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let spec = root.join("commands/SPEC-PAR-009");
    for name in [
        &b"with space.json"[..],
        b"new\nline.json",
        b"latin1-\xe9.json",
        b"-rf",
        &[b'x'; 255][..],
    ] {
        sparse(&spec.join(OsStr::from_bytes(name)), name.len() as u64);
    }
    sparse(&root.join("commands/SPEC-PAR-003/big.log"), 6 * MIB);
    sparse(&root.join("commands/SPEC-PAR-008/locked/a.json"), 5);
    sparse(&root.join("commands/bad name/x.json"), 9);
    sparse(&root.join("commands/.hidden/x.json"), 9);
    sparse(&root.join("commands/top.json"), 3);
    sparse(&root.join("README.md"), 4);
    for i in 0..20 {
        sparse(&root.join(format!("costs/c{i}.json")), 100 + i);
    }
    sparse(&root.join("costs/big-cost.json"), 7 * MIB);
    root
}

/// Checks a measurement of the hostile tree against a find-style count of what the caller
/// can read, and against the skips it must report.
fn check_hostile(root: &Path, usage: &EvidenceUsage, expected_skips: &[(&str, &str)]) {
    let mut skips: Vec<(String, &str)> = usage
        .skipped
        .iter()
        .map(|s| {
            let reason = match s.reason {
                SkipReason::Symlink => "symlink",
                SkipReason::SpecialFile => "special",
                SkipReason::InvalidSpecFolder { .. } => "invalid",
                SkipReason::Unreadable { .. } => "unreadable",
            };
            (s.relative.display().to_string(), reason)
        })
        .collect();
    skips.sort();
    let mut expected: Vec<(String, &str)> = expected_skips
        .iter()
        .map(|(p, r)| (p.to_string(), *r))
        .collect();
    expected.sort();
    assert_eq!(skips, expected);

    let mut spec_sum = (0, 0);
    for spec in &usage.specs {
        for f in &spec.folders {
            for (half, got) in [("commands", f.commands), ("consensus", f.consensus)] {
                let dir = root.join(half).join(&f.folder);
                let real = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
                let want = if real { find_style_sum(&dir) } else { (0, 0) };
                assert_eq!((got.bytes, got.files), want, "{half}/{}", f.folder);
                spec_sum.0 += got.bytes;
                spec_sum.1 += got.files;
            }
        }
    }
    let specs: Vec<&str> = usage.specs.iter().map(|s| s.spec.as_str()).collect();
    assert_eq!(specs.len(), 40, "{specs:?}");
    // find-style over the root, less the contents of the folders that are not SPEC-IDs.
    let (all_bytes, all_files) = find_style_sum(root);
    let invalid_bytes = 9 + 9;
    assert_eq!(
        (
            spec_sum.0 + usage.non_spec.bytes,
            spec_sum.1 + usage.non_spec.files
        ),
        (all_bytes - invalid_bytes, all_files - 2)
    );
    let large: Vec<(String, Option<&str>)> = usage
        .large_files
        .iter()
        .map(|f| (f.path.display().to_string(), f.spec.as_deref()))
        .collect();
    assert_eq!(
        large,
        [
            ("costs/big-cost.json".to_string(), None),
            (
                "commands/SPEC-PAR-003/big.log".to_string(),
                Some("SPEC-PAR-003")
            ),
        ]
    );
}

const BY_RULE: [(&str, &str); 7] = [
    ("commands/SPEC-PAR-005/link-to-dir", "symlink"),
    ("commands/SPEC-PAR-006/link-to-file", "symlink"),
    ("consensus/SPEC-PAR-LINK", "symlink"),
    ("archive-link", "symlink"),
    ("consensus/SPEC-PAR-012/sub/self", "symlink"),
    ("commands/SPEC-PAR-007/pipe", "special"),
    ("commands/bad name", "invalid"),
];

#[test]
fn a_hostile_tree_measures_the_same_on_any_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    open_up(dir.path());
    let root = hostile_tree(dir.path());
    let mut by_rule = BY_RULE.to_vec();
    by_rule.push(("commands/.hidden", "invalid"));

    let usage = measure_all_ways(&root, 5 * MIB);
    check_hostile(&root, &usage, &by_rule);

    // Unreadable folders, one inside a SPEC folder and one a whole SPEC folder: reported
    // by every thread count (the walk's threads inherit the unprivileged credentials).
    chmod(&root.join("commands/SPEC-PAR-008/locked"), 0o000);
    chmod(&root.join("consensus/SPEC-PAR-010"), 0o000);
    let outcome = as_unprivileged(|| {
        let usage = measure_all_ways(&root, 5 * MIB);
        let mut expected = by_rule.clone();
        expected.push(("commands/SPEC-PAR-008/locked", "unreadable"));
        expected.push(("consensus/SPEC-PAR-010", "unreadable"));
        check_hostile(&root, &usage, &expected);
        usage
    });
    chmod(&root.join("commands/SPEC-PAR-008/locked"), 0o755);
    chmod(&root.join("consensus/SPEC-PAR-010"), 0o755);
    let Some(usage) = outcome else { return };
    let ten = usage
        .specs
        .iter()
        .find(|s| s.spec == "SPEC-PAR-010")
        .unwrap();
    assert_eq!(ten.unreadable_entries, 1);
    let eight = usage
        .specs
        .iter()
        .find(|s| s.spec == "SPEC-PAR-008")
        .unwrap();
    assert_eq!(eight.unreadable_entries, 1);
}
