//! `stats` on the real upstream evidence trees, read in place: every byte total equals what
//! `find -type f -printf '%s\n'` adds up, per SPEC folder and half, for the SPECs and for
//! the whole root; and the files' sizes agree with the fixtures' MANIFEST.tsv.

mod stats_support;

use speckit_retention::limits::Verdict;
use speckit_retention::stats::{collect, Scope, SpecNames, StatsReport};
use speckit_retention::EvidencePolicy;
use stats_support::{find_style_sum, fixtures, gnu_find_sum, policy_for};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The evidence roots in the fixtures (upstream kept a second, smaller tree under codex-rs,
/// and the large variants of three SPEC-KIT-900 files as a third).
fn evidence_roots(fixtures: &Path) -> Vec<PathBuf> {
    [
        "docs/SPEC-OPS-004-integrated-coder-hooks/evidence",
        "codex-rs/docs/SPEC-OPS-004-integrated-coder-hooks/evidence",
        "_large_variants_809b4b69/docs/SPEC-OPS-004-integrated-coder-hooks/evidence",
    ]
    .iter()
    .map(|r| fixtures.join(r))
    .collect()
}

fn stats_of(root: &Path) -> StatsReport {
    collect(&policy_for(root), &Scope::All, &SpecNames::canonical()).unwrap()
}

#[test]
fn totals_equal_a_find_style_sum_per_folder_half_and_root() {
    let Some(fixtures) = fixtures() else { return };
    for root in evidence_roots(&fixtures) {
        let report = stats_of(&root);
        assert!(report.complete, "{}: {:?}", root.display(), report.skipped);
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);

        let (root_bytes, root_files) = find_style_sum(&root);
        let total = report.root_total.unwrap();
        assert_eq!(
            (total.bytes, total.files),
            (root_bytes, root_files),
            "{}",
            root.display()
        );
        if let Some(find) = gnu_find_sum(&root) {
            assert_eq!((total.bytes, total.files), find, "find itself disagrees");
        }

        // Every SPEC folder on disk, in both halves, is in the report with its own figures.
        let mut seen_folders = 0;
        for half in ["commands", "consensus"] {
            let Ok(entries) = std::fs::read_dir(root.join(half)) else {
                continue;
            };
            for entry in entries {
                let entry = entry.unwrap();
                if !entry.file_type().unwrap().is_dir() {
                    continue;
                }
                seen_folders += 1;
                let name = entry.file_name().into_string().unwrap();
                let expected = find_style_sum(&entry.path());
                let folder = report
                    .specs
                    .iter()
                    .flat_map(|s| &s.folders)
                    .find(|f| f.folder == name)
                    .unwrap_or_else(|| panic!("{half}/{name} missing from the report"));
                let got = if half == "commands" {
                    folder.commands
                } else {
                    folder.consensus
                };
                assert_eq!((got.bytes, got.files), expected, "{half}/{name}");
            }
        }
        assert!(seen_folders > 0, "{} has no SPEC folder", root.display());

        // A SPEC's total is its halves; the root is the SPECs plus the non-SPEC entries.
        let mut spec_sum = 0;
        for s in &report.specs {
            assert_eq!(s.total.bytes, s.commands.bytes + s.consensus.bytes);
            let folders: u64 = s
                .folders
                .iter()
                .map(|f| f.commands.bytes + f.consensus.bytes)
                .sum();
            assert_eq!(folders, s.total.bytes, "{}", s.spec);
            spec_sum += s.total.bytes;
        }
        assert_eq!(spec_sum + report.non_spec.unwrap().bytes, total.bytes);
    }
}

#[test]
fn main_tree_matches_the_manifest_and_maps_folder_names_to_specs() {
    let Some(fixtures) = fixtures() else { return };
    let prefix = "docs/SPEC-OPS-004-integrated-coder-hooks/evidence/";
    let manifest = std::fs::read_to_string(fixtures.join("MANIFEST.tsv")).unwrap();
    // Bytes per "<half>/<folder>" and in all, from the manifest's `bytes` column.
    let mut by_folder: BTreeMap<String, u64> = BTreeMap::new();
    let mut all = 0u64;
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let Some(rel) = cols[0].strip_prefix(prefix) else {
            continue;
        };
        let bytes: u64 = cols[2].parse().unwrap();
        all += bytes;
        let parts: Vec<&str> = rel.split('/').collect();
        if parts.len() >= 3 && (parts[0] == "commands" || parts[0] == "consensus") {
            *by_folder
                .entry(format!("{}/{}", parts[0], parts[1]))
                .or_default() += bytes;
        }
    }
    let report = stats_of(&fixtures.join(prefix));
    assert_eq!(report.root_total.unwrap().bytes, all);
    for s in &report.specs {
        for f in &s.folders {
            let commands = by_folder.get(&format!("commands/{}", f.folder)).copied();
            let consensus = by_folder.get(&format!("consensus/{}", f.folder)).copied();
            assert_eq!(f.commands.bytes, commands.unwrap_or(0), "{}", f.folder);
            assert_eq!(f.consensus.bytes, consensus.unwrap_or(0), "{}", f.folder);
        }
    }

    let spec = |id: &str| report.specs.iter().find(|s| s.spec == id).unwrap();
    // The truncated twin and the full name are one SPEC.
    let folders: Vec<&str> = spec("SPEC-KIT-025")
        .folders
        .iter()
        .map(|f| f.folder.as_str())
        .collect();
    assert_eq!(
        folders,
        [
            "SPEC-KIT-025-add-automated-conflict-resolution-wit",
            "SPEC-KIT-025-add-automated-conflict-resolution-with"
        ]
    );
    assert_eq!(spec("SPEC-KIT-045").folders[0].folder, "SPEC-KIT-045-mini");
    assert_eq!(spec("SPEC-KIT-DEMO").folders[0].folder, "SPEC-KIT-DEMO");
    // SPECs with command evidence only are counted like any other (upstream skipped them).
    let commands_only = spec("SPEC-KIT-018");
    assert_eq!(commands_only.consensus.files, 0);
    assert!(commands_only.commands.files > 0);
    assert!(report.specs.iter().all(|s| s.verdict == Verdict::Ok));
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[test]
fn large_variants_are_flagged_above_the_single_file_soft_limit() {
    let Some(fixtures) = fixtures() else { return };
    let root = evidence_roots(&fixtures).pop().unwrap();
    let mut policy = policy_for(&root);
    // The real files are 1,762,314, 756,508 and 356,104 bytes.
    policy
        .sections
        .update::<EvidencePolicy>(|s| s.file_warn_mb = 0.5);
    let report = collect(&policy, &Scope::All, &SpecNames::canonical()).unwrap();
    let large: Vec<(String, u64)> = report
        .large_files
        .iter()
        .map(|f| (f.path.display().to_string(), f.bytes))
        .collect();
    assert_eq!(
        large,
        [
            (
                "consensus/SPEC-KIT-900/tasks_synthesis.json".to_string(),
                1_762_314
            ),
            (
                "consensus/SPEC-KIT-900/implement_verdict.json".to_string(),
                756_508
            ),
        ]
    );
    assert_eq!(report.large_files[0].spec.as_deref(), Some("SPEC-KIT-900"));
    assert!(report
        .warnings
        .iter()
        .any(|w| w.contains("tasks_synthesis.json") && w.contains("0.5 MiB single-file")));
}
