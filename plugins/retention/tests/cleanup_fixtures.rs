//! The real upstream data (read in place from ../shared/fixtures; skipped with a note when
//! absent): every timestamp style of the real file names, both real tracker shapes, and a
//! full cleanup of a working copy of the real evidence tree with the mtimes git recorded.

mod cleanup_support;

use chrono::{DateTime, Utc};
use cleanup_support::*;
use serde_json::json;
use speckit_engine::events::JobOutcome;
use speckit_engine::JobTrigger;
use speckit_retention::age::{name_timestamp, TimestampStyle};
use speckit_retention::plan::ActionKind;
use speckit_retention::tracker::{Activity, StatusRules, Trackers};
use speckit_retention::RetentionPlugin;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The fixtures folder (a missing one skips outside CI, saying why, and fails in CI).
fn fixtures() -> Option<PathBuf> {
    speckit_testkit::fixtures::optional("upstream-evidence/MANIFEST.tsv")?;
    Some(speckit_testkit::fixtures::root())
}

struct Row {
    path: String,
    first_added: DateTime<Utc>,
    last_modified: DateTime<Utc>,
}

fn manifest(dir: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join("upstream-evidence/MANIFEST.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (p, fa, lm) = (
        col("path"),
        col("first_added_date"),
        col("last_modified_date"),
    );
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            Row {
                path: cells[p].to_string(),
                first_added: DateTime::parse_from_rfc3339(cells[fa]).unwrap().into(),
                last_modified: DateTime::parse_from_rfc3339(cells[lm]).unwrap().into(),
            }
        })
        .collect()
}

#[test]
fn every_timestamp_style_of_the_real_names_is_read() {
    let Some(dir) = fixtures() else { return };
    let rows = manifest(&dir);
    assert!(rows.len() > 400);
    let mut styles = BTreeMap::new();
    let looks_dated = |name: &str| {
        let b = name.as_bytes();
        (0..b.len().saturating_sub(7)).any(|i| {
            (i == 0 || !b[i - 1].is_ascii_digit())
                && b[i..i + 2] == *b"20"
                && b[i + 2..i + 4].iter().all(u8::is_ascii_digit)
                && (b[i + 4].is_ascii_digit() || b[i + 4] == b'-')
        })
    };
    for row in &rows {
        let name = row.path.rsplit('/').next().unwrap();
        match name_timestamp(name) {
            Some((at, style)) => {
                *styles.entry(format!("{style:?}")).or_insert(0) += 1;
                // Evidence cannot be made after git first saw it (zone-less names are read
                // as UTC: allow a day), nor long before.
                assert!(
                    at <= row.first_added + chrono::Duration::days(1),
                    "{name}: {at} is after it was committed ({})",
                    row.first_added
                );
                assert!(
                    at >= row.first_added - chrono::Duration::days(60),
                    "{name}: {at} is implausibly older than its commit ({})",
                    row.first_added
                );
            }
            None => assert!(!looks_dated(name), "{name} looks dated but was not read"),
        }
    }
    for style in [
        TimestampStyle::IsoExtended,
        TimestampStyle::IsoDashedTime,
        TimestampStyle::CompactDashed,
        TimestampStyle::CompactBasic,
        TimestampStyle::CompactMinutes,
        TimestampStyle::CompactUnderscore,
    ] {
        assert!(
            styles.contains_key(&format!("{style:?}")),
            "{style:?} not seen: {styles:?}"
        );
    }
}

#[test]
fn both_real_tracker_shapes_are_read() {
    let Some(dir) = fixtures() else { return };
    let active = StatusRules::from_policy(&speckit_retention::RetentionPolicy::default());
    let trackers = Trackers::load(&[
        dir.join("upstream-trackers/SPEC-root-1d48be51.md"),
        dir.join("upstream-trackers/SPEC-codex-rs-HEAD.md"),
    ])
    .unwrap();
    let is_active = |id: &str| matches!(trackers.activity(id, &active), Activity::Active { .. });
    let is_inactive =
        |id: &str| matches!(trackers.activity(id, &active), Activity::Finished { .. });
    let is_unclear = |id: &str| matches!(trackers.activity(id, &active), Activity::Unclear { .. });
    // 11-column shape: **IN PROGRESS**, **Done**, **DONE**, **BACKLOG**, **Backlog**, plain Done.
    assert!(is_active("SPEC-KIT-900"), "**IN PROGRESS**");
    assert!(is_active("SPEC-KIT-931"));
    assert!(is_active("SPEC-KIT-901"), "**Backlog**");
    assert!(is_active("SPEC-KIT-934"), "**BACKLOG**");
    assert!(is_inactive("SPEC-KIT-070"), "**DONE**");
    assert!(is_inactive("SPEC-KIT-933"), "**Done**");
    assert!(is_inactive("T47"), "plain Done");
    assert!(is_inactive("SPEC-KIT-067"), "**REJECTED**, ID in bold");
    // In neither list of the default policy: protected.
    assert!(is_unclear("MAINT-10"), "**DEFERRED**");
    // The row with a 12th cell (a `|` inside a code span in its notes).
    assert_eq!(
        trackers
            .rows("MAINT-5")
            .iter()
            .map(|r| r.status.as_str())
            .collect::<Vec<_>>(),
        ["DONE"]
    );
    // 4-column shape.
    assert!(is_active("SPEC-PM-005"));
    assert!(is_unclear("SPEC-PM-001"), "Deferred");
    // Listed only in a table without a Status column.
    assert_eq!(
        trackers.activity("SPEC-KIT-983", &active),
        Activity::Untracked
    );
    // Not an ID column: a "Stage" table's `/speckit.tasks` row gives nothing.
    assert_eq!(
        trackers.activity("speckit.tasks", &active),
        Activity::Untracked
    );
}

fn copy_tree(from: &Path, to: &Path, mtimes: &BTreeMap<String, DateTime<Utc>>, prefix: &str) {
    let mut stack = vec![from.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(from).unwrap().to_path_buf();
            let dest = to.join(&rel);
            if e.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(&dest).unwrap();
                stack.push(e.path());
            } else {
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                std::fs::copy(e.path(), &dest).unwrap();
                // The copy must be writable (the fixtures are read-only).
                std::fs::set_permissions(
                    &dest,
                    std::os::unix::fs::PermissionsExt::from_mode(0o644),
                )
                .unwrap();
                let key = format!("{prefix}/{}", rel.to_string_lossy());
                let at = mtimes[&key];
                std::fs::File::options()
                    .write(true)
                    .open(&dest)
                    .unwrap()
                    .set_modified(at.into())
                    .unwrap();
            }
        }
    }
}

#[tokio::test]
async fn cleanup_of_the_real_evidence_tree() {
    let Some(dir) = fixtures() else { return };
    let prefix = "docs/SPEC-OPS-004-integrated-coder-hooks/evidence";
    let mtimes: BTreeMap<String, DateTime<Utc>> = manifest(&dir)
        .into_iter()
        .map(|r| (r.path, r.last_modified))
        .collect();
    // The real tracker, read in place, plus a local one finishing some SPECs.
    let ws = Ws::new(
        &[
            ("SPEC-KIT-025", "Done"),
            ("SPEC-KIT-045", "**DONE**"),
            ("SPEC-KIT-DEMO", "Done"),
            ("SPEC-KIT-018", "Done"),
            ("SPEC-DOGFOOD-001", "In Progress"),
        ],
        "",
    );
    let real_tracker = dir.join("upstream-trackers/SPEC-root-1d48be51.md");
    std::fs::write(
        &ws.config,
        BASE_CONFIG.replace(
            "tracker_paths = [\"SPEC.md\"]",
            &format!(
                "tracker_paths = [{:?}, \"SPEC.md\"]",
                real_tracker.to_str().unwrap()
            ),
        ),
    )
    .unwrap();
    let source = dir.join("upstream-evidence").join(prefix);
    copy_tree(&source, &ws.root, &mtimes, prefix);
    let before = tree(&ws.root);
    assert!(before.len() > 300);

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
    let report = run.report.unwrap();

    let exempt: BTreeSet<String> = report.data["exempt_specs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["spec"].as_str().unwrap().to_string())
        .collect();
    for s in [
        "SPEC-KIT-900",
        "SPEC-DOGFOOD-001",
        "SPEC-KIT-010",
        "SPEC-KIT-013",
        "SPEC-KIT-015",
    ] {
        assert!(exempt.contains(s), "{s} must be exempt: {exempt:?}");
    }
    let archived_specs: BTreeSet<&str> = actions
        .iter()
        .filter(|a| a.action == ActionKind::Archive)
        .map(|a| a.spec.as_str())
        .collect();
    assert_eq!(
        archived_specs,
        BTreeSet::from([
            "SPEC-KIT-018",
            "SPEC-KIT-025-add-automated-conflict-resolution-wit",
            "SPEC-KIT-025-add-automated-conflict-resolution-with",
            "SPEC-KIT-045-mini",
            "SPEC-KIT-067",
            "SPEC-KIT-DEMO",
        ])
    );
    // Kept by rule: the newest synthesis per stage. SPEC-KIT-DEMO has five plan syntheses:
    // four named by time (2025-10-05) and `spec-plan_synthesis.json`, rewritten in place
    // and last committed on 2025-10-15: that one is the newest and stays.
    let kept: Vec<&str> = actions
        .iter()
        .filter(|a| a.action == ActionKind::Keep)
        .map(|a| a.path.as_str())
        .collect();
    assert!(
        kept.contains(&"consensus/SPEC-KIT-DEMO/spec-plan_synthesis.json"),
        "{kept:?}"
    );
    assert!(
        kept.contains(&"consensus/SPEC-KIT-DEMO/spec-implement_synthesis.json"),
        "{kept:?}"
    );
    let demo_plan: Vec<&str> = actions
        .iter()
        .filter(|a| a.action == ActionKind::Archive)
        .map(|a| a.path.as_str())
        .filter(|p| {
            p.starts_with("consensus/SPEC-KIT-DEMO/spec-plan_2025")
                && p.ends_with("_synthesis.json")
        })
        .collect();
    assert_eq!(demo_plan.len(), 4, "{demo_plan:?}");
    assert_eq!(kept.len(), 15, "one per stage and folder: {kept:?}");

    // Untouched: exempt SPECs, non-SPEC entries (top-level command files, archive/,
    // costs/, .locks/).
    let after = tree(&ws.root);
    for (path, sha) in &before {
        let spec_folder = path.split('/').nth(1).unwrap_or("");
        let touched = archived_specs.contains(spec_folder)
            && (path.starts_with("commands/") || path.starts_with("consensus/"))
            && path.matches('/').count() >= 2;
        if !touched {
            assert_eq!(after.get(path), Some(sha), "{path} must be untouched");
        }
    }
    // Every archived file is in a verified archive byte for byte as in the fixtures.
    let archived = archived(&ws.root);
    let mut count = 0;
    for a in actions.iter().filter(|a| a.action == ActionKind::Archive) {
        let original = std::fs::read(source.join(&a.path)).unwrap();
        assert_eq!(
            archived.get(&a.path),
            Some(&sha_hex(&original)),
            "{}",
            a.path
        );
        assert!(!after.contains_key(&a.path));
        count += 1;
    }
    assert_eq!(report.data["archived_files"], count);
    assert_nothing_lost(&before, &ws.root, "real tree");
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}
