//! The limits: strict `>` at exactly 40 and 50 MiB (MiB = 1,048,576 bytes), commands and
//! consensus together, the commands-only SPEC upstream never flagged, the root and
//! single-file soft limits, and the guard's verdicts and action. Sizes come from sparse
//! files, so a 50 MiB SPEC costs no disk.

mod stats_support;

use speckit_engine::{Policy, SpecId};
use speckit_retention::guard::{
    evidence_guard, evidence_guard_with, CleanupOutlook, CleanupPreview, GuardVerdict,
};
use speckit_retention::limits::{check_all, Verdict};
use speckit_retention::stats::{collect, Scope, SpecNames};
use speckit_retention::EvidencePolicy;
use stats_support::{policy_for, sparse, MIB};
use std::path::Path;

fn verdict_of(root: &Path, spec: &str) -> Verdict {
    let report = collect(&policy_for(root), &Scope::All, &SpecNames::canonical()).unwrap();
    report
        .specs
        .iter()
        .find(|s| s.spec == spec)
        .unwrap()
        .verdict
}

#[test]
fn limits_are_crossed_only_strictly_above_40_and_50_mib() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cases: [(&str, u64, u64, Verdict); 7] = [
        ("SPEC-A-1", 40 * MIB, 0, Verdict::Ok),
        ("SPEC-A-2", 40 * MIB + 1, 0, Verdict::Warn),
        // Commands and consensus together.
        ("SPEC-A-3", 20 * MIB, 20 * MIB, Verdict::Ok),
        ("SPEC-A-4", 20 * MIB, 20 * MIB + 1, Verdict::Warn),
        ("SPEC-A-5", 50 * MIB, 0, Verdict::Warn),
        ("SPEC-A-6", 50 * MIB + 1, 0, Verdict::Block),
        ("SPEC-A-7", 25 * MIB, 25 * MIB + 1, Verdict::Block),
    ];
    for (spec, commands, consensus, _) in cases {
        if commands > 0 {
            sparse(&root.join(format!("commands/{spec}/run.log")), commands);
        }
        if consensus > 0 {
            sparse(
                &root.join(format!("consensus/{spec}/verdict.json")),
                consensus,
            );
        }
    }
    for (spec, _, _, expected) in cases {
        assert_eq!(verdict_of(root, spec), expected, "{spec}");
        let guard = evidence_guard(&policy_for(root), spec).unwrap();
        assert_eq!(guard.verdict(), expected, "guard {spec}: {guard}");
    }
}

#[test]
fn a_commands_only_spec_over_the_limit_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Upstream's script listed only SPECs with consensus evidence: this one was invisible.
    sparse(&root.join("commands/SPEC-KIT-060/telemetry.log"), 30 * MIB);
    sparse(&root.join("commands/SPEC-KIT-060/nested/run.log"), 30 * MIB);
    sparse(&root.join("consensus/SPEC-KIT-061/verdict.json"), 1024);

    let report = check_all(&policy_for(root), &SpecNames::canonical()).unwrap();
    let findings = report.findings();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].spec, "SPEC-KIT-060");
    assert_eq!(findings[0].verdict, Verdict::Block);
    assert_eq!(findings[0].total_bytes, 60 * MIB);
    assert_eq!(findings[0].crossed_bytes, 50 * MIB);
    assert_eq!(report.counts.block, 1);
    assert!(report.warnings[0].contains("SPEC-KIT-060") && report.warnings[0].contains("blocked"));
    // The 30 MiB files are also above the 5 MiB single-file soft limit.
    assert_eq!(report.large_files.len(), 2);

    match evidence_guard(&policy_for(root), "SPEC-KIT-060").unwrap() {
        GuardVerdict::Block { figures, action } => {
            assert_eq!(figures.commands.bytes, 60 * MIB);
            assert_eq!(figures.consensus.files, 0);
            assert_eq!(action.must_free_bytes, 10 * MIB);
            assert_eq!(
                action.command,
                "speckit-hygiene cleanup --spec SPEC-KIT-060"
            );
            assert!(action
                .advice
                .contains("cleanup --dry-run --spec SPEC-KIT-060"));
            assert!(action.advice.contains("10.0 MiB (10485760 bytes)"));
        }
        other => panic!("expected a block, got {other}"),
    }
}

#[test]
fn root_and_single_file_soft_limits_are_strict_too() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut policy = policy_for(root);
    policy
        .sections
        .update::<EvidencePolicy>(|s| s.root_warn_mb = 12.0);
    policy
        .sections
        .update::<EvidencePolicy>(|s| s.file_warn_mb = 5.0);
    sparse(&root.join("commands/SPEC-B-1/exact.log"), 5 * MIB);
    sparse(&root.join("consensus/SPEC-B-2/exact.json"), 5 * MIB);
    sparse(&root.join("costs/other.json"), 2 * MIB);
    let report = collect(&policy, &Scope::All, &SpecNames::canonical()).unwrap();
    assert_eq!(report.root_total.unwrap().bytes, 12 * MIB);
    assert!(report.large_files.is_empty());
    assert!(report.root_warning().is_none());
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    // One byte more of a non-SPEC file: the root warns; a file one byte over warns.
    sparse(&root.join("costs/other.json"), 2 * MIB + 1);
    sparse(&root.join("commands/SPEC-B-1/exact.log"), 5 * MIB + 1);
    let report = collect(&policy, &Scope::All, &SpecNames::canonical()).unwrap();
    assert!(report
        .root_warning()
        .unwrap()
        .contains("above its 12 MiB soft limit"));
    assert_eq!(report.large_files.len(), 1);
    assert_eq!(report.large_files[0].bytes, 5 * MIB + 1);
    assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
}

struct Preview(CleanupOutlook);

impl CleanupPreview for Preview {
    fn preview(&self, _policy: &Policy, _spec: &SpecId) -> Result<CleanupOutlook, String> {
        Ok(self.0.clone())
    }
}

#[test]
fn a_block_says_what_gets_the_spec_under_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sparse(&root.join("consensus/SPEC-C-1/a.json"), 56 * MIB);
    let policy = policy_for(root);
    let names = SpecNames::canonical();
    let block = |outlook: CleanupOutlook| {
        let verdict =
            evidence_guard_with(&policy, "SPEC-C-1", &names, Some(&Preview(outlook))).unwrap();
        assert!(verdict.is_blocked());
        verdict.to_string()
    };
    let enough = block(CleanupOutlook::Frees {
        bytes: 8 * MIB,
        files: 3,
    });
    assert!(
        enough.contains("run `speckit-hygiene cleanup --spec SPEC-C-1`"),
        "{enough}"
    );
    assert!(enough.contains("enough"), "{enough}");
    let short = block(CleanupOutlook::Frees {
        bytes: 2 * MIB,
        files: 1,
    });
    assert!(
        short.contains("then trim at least 4.0 MiB more by hand"),
        "{short}"
    );
    let active = block(CleanupOutlook::Exempt {
        reason: "active: the tracker says SPEC-C-1 is \"In Progress\"".into(),
    });
    assert!(
        active.contains("trim at least 6.0 MiB (6291456 bytes) of its evidence by hand"),
        "{active}"
    );
    assert!(
        active.contains("cleanup leaves SPEC-C-1 alone (active: the tracker says"),
        "{active}"
    );
}
