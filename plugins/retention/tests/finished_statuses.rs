//! Only what the tracker says is finished is archived: a status in neither
//! `retention.finished_statuses` nor `retention.active_statuses`, rows that disagree, and
//! SPECs in no tracker are protected and reported (dry run, run report, daily summary,
//! `stats`); an empty finished list archives nothing and says so. Also the real upstream
//! trackers' statuses, read in place.

mod cleanup_support;

use cleanup_support::*;
use serde_json::json;
use speckit_engine::events::JobOutcome;
use speckit_engine::JobTrigger;
use speckit_retention::plan::{Action, ActionKind};
use speckit_retention::stats::{collect_with_trackers, Scope};
use speckit_retention::tracker::{Activity, StatusClass, StatusRules, Trackers};
use speckit_retention::RetentionPlugin;
use speckit_retention::RetentionPolicy;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// SPEC -> status, as the tracker lists them (one row each, in this order).
const PROTECTED_UNKNOWN: &[(&str, &str)] = &[
    ("SPEC-KIT-101", "WIP"),
    ("SPEC-KIT-102", "Draft"),
    ("SPEC-KIT-103", "Todo"),
    ("SPEC-KIT-104", "On Hold"),
    ("SPEC-KIT-105", "Paused"),
    ("SPEC-KIT-106", "In Progres"),
    ("SPEC-KIT-107", "InProgress"),
    ("SPEC-KIT-109", "Done (but reopened)"),
    ("SPEC-KIT-115", "~~Done~~"),
];
/// Struck-through text is not the status: this reads as `In Progress` (active).
const STRUCK_ACTIVE: (&str, &str) = ("SPEC-KIT-108", "~~Done~~ In Progress");
const FINISHED: &[(&str, &str)] = &[
    ("SPEC-KIT-110", "Done"),
    ("SPEC-KIT-112", "**Done** ✅"),
    ("SPEC-KIT-113", "✅ Complete"),
    ("SPEC-KIT-114", "DONE."),
    ("SPEC-KIT-116", "superseded"),
];
/// Listed twice: Done, then WIP.
const CONFLICT: &str = "SPEC-KIT-111";
/// Evidence, but in no tracker.
const UNTRACKED: &str = "SPEC-KIT-120";

fn tracker_rows() -> Vec<(&'static str, &'static str)> {
    let mut rows: Vec<(&str, &str)> = PROTECTED_UNKNOWN.to_vec();
    rows.push(STRUCK_ACTIVE);
    rows.extend_from_slice(FINISHED);
    rows.push((CONFLICT, "Done"));
    rows.push((CONFLICT, "WIP"));
    rows
}

/// The tracker line of row `i` (testkit's 4-column tracker: six lines before the rows).
fn line_of(spec: &str, status: &str) -> usize {
    7 + tracker_rows()
        .iter()
        .position(|r| *r == (spec, status))
        .unwrap()
}

fn workspace(extra: &str) -> Ws {
    let ws = Ws::new(&tracker_rows(), extra);
    let mut ids: Vec<&str> = tracker_rows().iter().map(|r| r.0).collect();
    ids.push(UNTRACKED);
    ids.dedup();
    let specs: Vec<_> = ids.iter().map(|id| spec(id, 3)).collect();
    ws.generate(&specs);
    ws
}

async fn run(ws: &Ws, args: serde_json::Value) -> (speckit_engine::JobReport, Vec<Action>) {
    let plugin = Arc::new(RetentionPlugin::new());
    let engine = ws.engine(now(), plugin.clone()).await;
    let mut args = args;
    args["list_actions"] = json!(true);
    let run = engine
        .run_job("cleanup", JobTrigger::Manual, args)
        .await
        .unwrap();
    assert_eq!(
        run.outcome,
        JobOutcome::Succeeded,
        "{:?} {:?}",
        run.error,
        run.report
    );
    let actions = plugin.take_actions(run.run_id).unwrap_or_default();
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    (run.report.unwrap(), actions)
}

fn specs_with(actions: &[Action], kind: ActionKind) -> BTreeSet<String> {
    actions
        .iter()
        .filter(|a| a.action == kind)
        .map(|a| a.spec.clone())
        .collect()
}

/// The warnings, the exempt SPECs and the archived SPECs are what the statuses say.
fn assert_protected_and_reported(ws: &Ws, report: &speckit_engine::JobReport, actions: &[Action]) {
    let tracker = "SPEC.md";
    let ws_tracker = ws.tracker.display();
    let warning_for = |spec: &str| -> Vec<&String> {
        report
            .warnings
            .iter()
            .filter(|w| w.starts_with(&format!("{spec} is protected")))
            .collect()
    };
    for (spec, status) in PROTECTED_UNKNOWN {
        let w = warning_for(spec);
        assert_eq!(w.len(), 1, "{spec}: one warning: {:?}", report.warnings);
        assert!(
            w[0].contains(&format!("{status:?}"))
                && w[0].contains(&format!("{tracker}:{}", line_of(spec, status)))
                && w[0]
                    .contains("neither retention.finished_statuses nor retention.active_statuses"),
            "{}",
            w[0]
        );
    }
    let w = warning_for(CONFLICT);
    assert_eq!(w.len(), 1, "{:?}", report.warnings);
    assert!(
        w[0].contains("disagree")
            && w[0].contains(&format!(
                "\"Done\" ({}:{}, finished)",
                ws_tracker,
                line_of(CONFLICT, "Done")
            ))
            && w[0].contains(&format!(
                "\"WIP\" ({}:{}, unknown)",
                ws_tracker,
                line_of(CONFLICT, "WIP")
            )),
        "{}",
        w[0]
    );
    let w = warning_for(UNTRACKED);
    assert_eq!(w.len(), 1, "{:?}", report.warnings);
    assert!(
        w[0].contains("no tracker") && w[0].contains("untracked_specs"),
        "{}",
        w[0]
    );
    // Active (struck-through Done): protected like any active SPEC, no warning.
    assert!(
        warning_for(STRUCK_ACTIVE.0).is_empty(),
        "{:?}",
        report.warnings
    );

    let exempt: BTreeMap<String, String> = report.data["exempt_specs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["spec"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut protected: BTreeSet<String> =
        PROTECTED_UNKNOWN.iter().map(|r| r.0.to_string()).collect();
    protected.extend([CONFLICT, UNTRACKED, STRUCK_ACTIVE.0].map(String::from));
    assert_eq!(exempt.keys().cloned().collect::<BTreeSet<_>>(), protected);
    assert!(
        exempt[STRUCK_ACTIVE.0].contains("active"),
        "{}",
        exempt[STRUCK_ACTIVE.0]
    );

    let finished: BTreeSet<String> = FINISHED.iter().map(|r| r.0.to_string()).collect();
    assert_eq!(specs_with(actions, ActionKind::Archive), finished);
    // Each archive action carries its reason: status, age and where the age came from.
    for a in actions.iter().filter(|a| a.action == ActionKind::Archive) {
        let status = FINISHED.iter().find(|r| r.0 == a.spec).unwrap().1;
        // Bold marks are not part of the status as read.
        let expected = format!(
            "finished: the tracker says {} is {:?}",
            a.spec,
            status.replace("**", "")
        );
        assert_eq!(a.reason.as_deref(), Some(expected.as_str()), "{a:?}");
        assert!(a.made_at.is_some() && a.age_source.is_some(), "{a:?}");
    }
}

#[tokio::test]
async fn unknown_conflicting_and_untracked_statuses_protect_and_are_reported() {
    let ws = workspace("");
    let before = tree(&ws.root);

    // The dry run says it.
    let (report, actions) = run(&ws, json!({ "dry_run": true })).await;
    assert_protected_and_reported(&ws, &report, &actions);
    assert_eq!(tree(&ws.root), before, "a dry run changes nothing");

    // The real run does what the dry run said, and says it again.
    let (report, actions) = run(&ws, json!({})).await;
    assert_protected_and_reported(&ws, &report, &actions);
    let after = tree(&ws.root);
    let finished: BTreeSet<&str> = FINISHED.iter().map(|r| r.0).collect();
    for (path, sha) in &before {
        let spec = path.split('/').nth(1).unwrap_or("");
        if !finished.contains(spec) {
            assert_eq!(after.get(path), Some(sha), "{path} must be untouched");
        }
    }
    assert!(after.len() < before.len());
    assert_nothing_lost(&before, &ws.root, "statuses");

    // The daily summary names each protected SPEC with its status and tracker line.
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ws.root.join("cleanup/daily-summaries/2026-03-01.json")).unwrap(),
    )
    .unwrap();
    let exempt = summary["runs"][0]["exempt_specs"].as_array().unwrap();
    for (spec, status) in PROTECTED_UNKNOWN {
        let e = exempt.iter().find(|e| e["spec"] == *spec).unwrap();
        let reason = e["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("{status:?}"))
                && reason.contains(&format!(":{}", line_of(spec, status))),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn an_empty_finished_list_archives_nothing_and_says_so() {
    let ws = workspace("finished_statuses = []\n");
    let policy = ws.policy().policy;
    // `check` prints these for a valid policy.
    let warnings = speckit_engine::policy::warnings(&policy);
    assert!(
        warnings
            .iter()
            .any(|w| w.key == "retention.finished_statuses"
                && w.message
                    .contains("retention.finished_statuses is empty: no SPEC will be archived")),
        "{warnings:?}"
    );
    assert!(speckit_engine::policy::warnings(&speckit_engine::Policy::default()).is_empty());

    let before = tree(&ws.root);
    let (report, actions) = run(&ws, json!({})).await;
    assert!(
        specs_with(&actions, ActionKind::Archive).is_empty(),
        "{actions:?}"
    );
    assert_eq!(report.data["archived_files"], 0);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("retention.finished_statuses is empty: no SPEC will be archived")),
        "{:?}",
        report.warnings
    );
    // Every Done SPEC is now protected and reported as such.
    for (spec, _) in FINISHED {
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.starts_with(&format!("{spec} is protected"))),
            "{spec}: {:?}",
            report.warnings
        );
    }
    let mut after = tree(&ws.root);
    after.retain(|p, _| !p.starts_with(".locks/"));
    let mut expected = before;
    expected.retain(|p, _| !p.starts_with(".locks/"));
    assert_eq!(after, expected);
}

#[test]
fn a_status_in_both_lists_or_an_empty_entry_is_refused() {
    let ws = Ws::new(
        &[],
        "finished_statuses = [\"Done\", \"**IN PROGRESS**\", \"✅\"]\n",
    );
    let err = speckit_engine::policy::load_policy(
        &ws.config,
        true,
        Vec::<(String, String)>::new(),
        &speckit_retention::RetentionPlugin::policy_shape(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("retention.finished_statuses") && err.contains("also an active status"),
        "{err}"
    );
    assert!(err.contains("retention.finished_statuses.2"), "{err}");
}

#[test]
fn stats_reports_protected_specs_with_their_status() {
    let ws = workspace("");
    let report = collect_with_trackers(&ws.policy().policy, &Scope::All).unwrap();
    let protected: BTreeMap<&str, &speckit_retention::stats::ProtectedSpec> = report
        .protected_specs
        .iter()
        .map(|p| (p.spec.as_str(), p))
        .collect();
    for (spec, status) in PROTECTED_UNKNOWN {
        let p = protected[spec];
        assert!(matches!(p.activity, Activity::Unclear { .. }));
        assert!(p.message.contains(&format!("{status:?}")), "{}", p.message);
        assert!(report.warnings.contains(&p.message));
    }
    assert!(protected[CONFLICT].message.contains("disagree"));
    assert!(matches!(protected[UNTRACKED].activity, Activity::Untracked));
    for (spec, _) in FINISHED {
        assert!(!protected.contains_key(spec));
    }
    assert!(!protected.contains_key(STRUCK_ACTIVE.0));
    // In the JSON `stats --json` prints: each row's status, tracker, line and class.
    let json = serde_json::to_value(&report).unwrap();
    let wip = json["protected_specs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["spec"] == "SPEC-KIT-101")
        .unwrap();
    assert_eq!(wip["activity"], "unclear");
    assert_eq!(wip["rows"][0]["status"], "WIP");
    assert_eq!(wip["rows"][0]["class"], "unknown");
    assert_eq!(wip["rows"][0]["line"], line_of("SPEC-KIT-101", "WIP"));
    // With --spec, only that SPEC.
    let one =
        collect_with_trackers(&ws.policy().policy, &Scope::spec("SPEC-KIT-102").unwrap()).unwrap();
    assert_eq!(
        one.protected_specs
            .iter()
            .map(|p| p.spec.as_str())
            .collect::<Vec<_>>(),
        ["SPEC-KIT-102"]
    );
}

/// The real trackers, read in place: every status they hold, by class under the default
/// policy (printed with `--nocapture`).
#[test]
fn the_real_trackers_statuses_by_class() {
    let Some(root_tracker) =
        speckit_testkit::fixtures::optional("upstream-trackers/SPEC-root-1d48be51.md")
    else {
        return;
    };
    let codex = speckit_testkit::fixtures::require("upstream-trackers/SPEC-codex-rs-HEAD.md");
    let trackers = Trackers::load(&[root_tracker, codex]).unwrap();
    let rules = StatusRules::from_policy(&RetentionPolicy::default());
    let mut by_class: BTreeMap<StatusClass, BTreeMap<String, usize>> = BTreeMap::new();
    let mut by_activity: BTreeMap<&str, usize> = BTreeMap::new();
    for id in trackers.ids() {
        for row in trackers.rows(id) {
            *by_class
                .entry(rules.classify(&row.status))
                .or_default()
                .entry(row.status.clone())
                .or_default() += 1;
        }
        let kind = match trackers.activity(id, &rules) {
            Activity::Active { .. } => "active",
            Activity::Finished { .. } => "finished",
            a @ Activity::Unclear { .. } if a.is_conflicting() => "conflicting",
            Activity::Unclear { .. } => "unknown",
            Activity::Untracked => "untracked",
        };
        *by_activity.entry(kind).or_default() += 1;
        if kind == "unknown" || kind == "conflicting" {
            let statuses: Vec<&str> = trackers
                .rows(id)
                .iter()
                .map(|r| r.status.as_str())
                .collect();
            println!("protected, not known to be finished: {id} {statuses:?}");
        }
    }
    for (class, statuses) in &by_class {
        println!("{class:?}: {statuses:?}");
    }
    println!("SPECs: {by_activity:?}");
    let class_of = |status: &str| {
        by_class
            .iter()
            .find(|(_, s)| s.contains_key(status))
            .map(|(c, _)| *c)
            .unwrap_or_else(|| panic!("{status:?} not in the real trackers: {by_class:?}"))
    };
    for s in ["DONE", "Done", "REMOVED", "REJECTED"] {
        assert_eq!(class_of(s), StatusClass::Finished, "{s}");
    }
    for s in ["IN PROGRESS", "In Progress", "BACKLOG", "Backlog"] {
        assert_eq!(class_of(s), StatusClass::Active, "{s}");
    }
    // Not known to be finished: kept until a person says so (or lists them as finished).
    for s in [
        "DEFERRED",
        "Deferred",
        "OBSOLETE",
        "CLOSED",
        "DRAFT",
        "RESEARCH COMPLETE",
        "Historical",
    ] {
        assert_eq!(class_of(s), StatusClass::Unknown, "{s}");
    }
    assert!(by_class[&StatusClass::Finished].values().sum::<usize>() >= 60);
}
