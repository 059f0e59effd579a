//! `retention.max_removal_fraction`: what a cleanup run may do without `--force`.
//!
//! Archiving is not what the guard is for. A source file is deleted only once a verified,
//! recorded archive holds it (and rows only when the archived copy is identical), so a large
//! archive run, such as the first cleanup of an old repository, can be undone with
//! `speckit-hygiene restore` and is allowed; its summary says what it did. The guard
//! refuses a plan (the whole plan: nothing is changed) when one of these signals holds:
//!
//! - **purge** (irreversible): the plan purges more than the fraction of all archives
//!   (recorded and unpurged, of every SPEC, plus unrecorded ones found on disk). A purge
//!   deletes the only copy. It is the only irreversible removal a plan can hold: sources
//!   and rows are removed only when they are in a verified archive, temporaries are never
//!   the only copy of anything.
//! - **clock**: the plan archives more than the fraction of all evidence files, yet no
//!   file in the evidence tree (of any SPEC, active ones included) was modified in the last
//!   `archive_after_days`. Modification times come from the same clock as `now`, so this is
//!   what a clock that jumped forward (or a wrong `now`) looks like; an idle repository
//!   looks the same, and `--force` says so once.
//! - **tracker**: SPECs that the previous cleanup protected (exempt: active, unknown or
//!   untracked status) and that this plan archives are more than the fraction of the SPECs
//!   that run protected: a tracker rewritten or emptied of its active statuses, a policy
//!   change. The previous run is the newest real, whole-tree, not refused `cleanup` in the
//!   engine's job-runs table (its report's `exempt_specs`), if it started within
//!   `archive_after_days`; without one, there is no such signal.
//!
//! The purge and tracker signals need at least [`MIN_GUARDED`] archives or SPECs: a
//! fraction of one or two says nothing. `max_removal_fraction = 1.0` turns every signal
//! off.

use crate::RetentionPolicy;
use chrono::{DateTime, Utc};
use serde::Serialize;
use speckit_engine::policy::Policy;
use speckit_engine::storage::table_exists;
use speckit_engine::{Storage, StorageError};
use std::collections::BTreeSet;

use crate::catalog;
use crate::plan::Plan;
use crate::schema::ARCHIVES_TABLE;

/// Fewer purged archives or flipped SPECs than this are never refused.
pub const MIN_GUARDED: u64 = 3;

/// One reason to refuse.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Signal {
    /// `purge`, `clock` or `tracker`.
    pub name: String,
    pub message: String,
}

/// The guard's view of a plan (the report's `removal_guard`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Assessment {
    pub max_removal_fraction: f64,
    /// Evidence files the plan deletes once archived, over all evidence files.
    pub removal_fraction: f64,
    /// Archives known before the run: recorded and unpurged, plus unrecorded ones found.
    pub archives_before: u64,
    pub purge_archives: u64,
    pub purge_fraction: f64,
    /// The newest modification time in the evidence tree.
    pub newest_mtime: Option<String>,
    /// The previous cleanup run compared against (tracker signal), and the SPECs it
    /// protected that this plan archives.
    pub previous_run: Option<i64>,
    pub previous_protected: u64,
    pub newly_archived_specs: Vec<String>,
    /// No archive existed before this run.
    pub first_cleanup: bool,
    /// Signals that hold: the plan is refused unless forced.
    pub signals: Vec<Signal>,
}

impl Assessment {
    /// Whether the plan archives more than the fraction (allowed, but said in the summary).
    pub fn large(&self) -> bool {
        self.removal_fraction > self.max_removal_fraction
    }

    /// The refusal, when a signal holds and the run is not forced.
    pub fn refusal(&self, force: bool, dry_run: bool) -> Option<String> {
        if force || self.signals.is_empty() {
            return None;
        }
        let reasons: Vec<String> = self
            .signals
            .iter()
            .map(|s| format!("[{}] {}", s.name, s.message))
            .collect();
        Some(format!(
            "refused by retention.max_removal_fraction = {:.1}%: {}; {} If this is intended, run `speckit-hygiene cleanup --force`",
            self.max_removal_fraction * 100.0,
            reasons.join("; "),
            if dry_run {
                "a real run would be refused."
            } else {
                "nothing was changed."
            }
        ))
    }
}

/// Assesses `plan`. Reads the archive records and the job-runs table; changes nothing.
pub fn assess(
    plan: &Plan,
    policy: &Policy,
    storage: &Storage,
    now: DateTime<Utc>,
    whole_tree: bool,
) -> Result<Assessment, StorageError> {
    let r = &policy.section::<RetentionPolicy>();
    let limit = r.max_removal_fraction;
    let recorded = catalog::read(storage, count_unpurged)?;
    let adopted: u64 = plan.units.iter().map(|u| u.adopt.len() as u64).sum();
    let archives_before = recorded + adopted;
    let purge: u64 = plan.units.iter().map(|u| u.purge.len() as u64).sum();
    let purge_bytes: u64 = plan
        .units
        .iter()
        .flat_map(|u| u.purge.iter().map(|p| p.bytes))
        .sum();
    let mut a = Assessment {
        max_removal_fraction: limit,
        removal_fraction: plan.removal_fraction(),
        archives_before,
        purge_archives: purge,
        purge_fraction: fraction(purge, archives_before),
        newest_mtime: plan
            .newest_mtime
            .map(|t| DateTime::<Utc>::from(t).to_rfc3339()),
        first_cleanup: archives_before == 0,
        ..Assessment::default()
    };
    if limit >= 1.0 {
        return Ok(a);
    }

    // purge: irreversible.
    if purge >= MIN_GUARDED && a.purge_fraction > limit {
        a.signals.push(Signal {
            name: "purge".into(),
            message: format!(
                "the plan purges {purge} of {archives_before} archive(s) ({:.1}%, {}) older than retention.purge_after_days = {}; a purged archive is the only copy of its evidence and cannot be restored",
                a.purge_fraction * 100.0,
                speckit_engine::units::human_bytes(purge_bytes),
                r.purge_after_days
            ),
        });
    }

    // clock: a large plan in a tree nothing was written to for the whole archive age.
    let archive_cutoff = now - chrono::Duration::days(i64::from(r.archive_after_days));
    if let Some(newest) = plan.newest_mtime.map(DateTime::<Utc>::from) {
        if a.large() && newest < archive_cutoff {
            a.signals.push(Signal {
                name: "clock".into(),
                message: format!(
                    "the plan archives {:.1}% of all evidence files ({} of {}), yet no evidence file was modified in the last {} days (retention.archive_after_days; the newest on {}, {} days before now = {}): the clock may have jumped forward or `now` is wrong; if the repository is simply idle, this is expected",
                    a.removal_fraction * 100.0,
                    plan.removal_count(),
                    plan.total_files,
                    r.archive_after_days,
                    newest.format("%Y-%m-%d %H:%M UTC"),
                    (now - newest).num_days(),
                    now.format("%Y-%m-%d %H:%M UTC")
                ),
            });
        }
    }

    // tracker: SPECs protected by the previous run, archived now.
    if whole_tree {
        let window_ms = i64::from(r.archive_after_days) * 86_400_000;
        let now_ms = now.timestamp_millis();
        if let Some(prev) = catalog::read(storage, previous_cleanup)? {
            let age_ms = now_ms - prev.started_at_ms;
            if (-86_400_000..=window_ms).contains(&age_ms) {
                let flipped: Vec<String> = plan
                    .units
                    .iter()
                    .filter(|u| u.archive.is_some())
                    .filter(|u| {
                        prev.protected.contains(&u.key) || prev.protected.contains(&u.tracker_id)
                    })
                    .map(|u| u.key.clone())
                    .collect();
                let protected = prev.specs;
                let n = flipped.len() as u64;
                a.previous_run = Some(prev.id);
                a.previous_protected = protected;
                if n >= MIN_GUARDED && fraction(n, protected) > limit {
                    a.signals.push(Signal {
                        name: "tracker".into(),
                        message: format!(
                            "{n} of the {protected} SPEC(s) the previous cleanup (run {}, {}) protected are archived now ({}): the trackers or the statuses in the policy may have changed by accident",
                            prev.id,
                            DateTime::<Utc>::from_timestamp_millis(prev.started_at_ms)
                                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                                .unwrap_or_default(),
                            list(&flipped)
                        ),
                    });
                }
                a.newly_archived_specs = flipped;
            }
        }
    }
    Ok(a)
}

fn fraction(n: u64, of: u64) -> f64 {
    if of == 0 {
        if n == 0 {
            0.0
        } else {
            1.0
        }
    } else {
        n as f64 / of as f64
    }
}

fn list(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

fn count_unpurged(conn: &rusqlite::Connection) -> rusqlite::Result<u64> {
    if !table_exists(conn, ARCHIVES_TABLE)? {
        return Ok(0);
    }
    conn.query_row(
        &format!("SELECT count(*) FROM {ARCHIVES_TABLE} WHERE purged_at IS NULL"),
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n as u64)
}

/// The previous cleanup run the tracker signal compares against.
#[derive(Debug, Default)]
struct PreviousRun {
    id: i64,
    started_at_ms: i64,
    /// How many SPECs it left alone.
    specs: u64,
    /// Their folder names and tracker IDs.
    protected: BTreeSet<String>,
}

/// How many recent runs are looked through for a real, whole-tree, not refused cleanup.
const RUNS_SEARCHED: i64 = 50;

fn previous_cleanup(conn: &rusqlite::Connection) -> rusqlite::Result<Option<PreviousRun>> {
    if !table_exists(conn, "hygiene_job_runs")? {
        return Ok(None);
    }
    let mut stmt = conn.prepare(
        "SELECT id, started_at, report_json FROM hygiene_job_runs \
         WHERE plugin = 'retention' AND job = 'cleanup' AND finished_at IS NOT NULL \
         AND report_json IS NOT NULL ORDER BY id DESC LIMIT ?1",
    )?;
    let mut rows = stmt.query([RUNS_SEARCHED])?;
    while let Some(row) = rows.next()? {
        let (id, started_at_ms, json): (i64, Option<i64>, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?);
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&json) else {
            continue;
        };
        let data = &value["report"]["data"];
        let real = data["dry_run"] == false && data["refused"] == false && data["spec"].is_null();
        let Some(exempt) = data["exempt_specs"].as_array().filter(|_| real) else {
            continue;
        };
        let mut protected = BTreeSet::new();
        for e in exempt {
            for key in ["spec", "tracker_id"] {
                if let Some(s) = e[key].as_str() {
                    protected.insert(s.to_string());
                }
            }
        }
        return Ok(Some(PreviousRun {
            id,
            started_at_ms: started_at_ms.unwrap_or(i64::MIN / 2),
            specs: exempt.len() as u64,
            protected,
        }));
    }
    Ok(None)
}
