//! The cleanup plan: exactly what a run will do, per SPEC, computed without changing
//! anything. `cleanup --dry-run` prints it; a real run computes it the same way and then
//! executes it (see [`crate::execute`]), so the two list the same actions.
//!
//! Per SPEC folder (the unit of locking and of archives):
//! - **exempt**: the tracker says the SPEC is active (or it is untracked and the policy
//!   protects untracked SPECs): nothing of it is touched, archives included;
//! - **discard_temp**: a temporary archive left by an interrupted run (never renamed, so
//!   never the only copy of anything);
//! - **adopt**: a verified archive on disk without a database record (a run stopped between
//!   rename and record, or the database was replaced): recorded as found;
//! - **purge**: an archive older than `purge_after_days` (its offloaded copy too);
//! - **offload**: a recorded local archive older than `offload.after_days` (when on): uploaded,
//!   read back, recorded, then deleted locally; or an offloaded archive whose local copy
//!   is still there (a run stopped after recording): deleted locally once the object is
//!   found as recorded (see [`crate::offload`]);
//! - **delete_archived**: a file old enough to archive that an unpurged, verified archive
//!   already holds with the same size and mtime (an interrupted run's sources): deleted
//!   after its hash is checked against the archive;
//! - **keep**: a file old enough to archive that a keep-rule keeps (newest synthesis);
//! - **archive**: every other file older than `archive_after_days` goes into one new archive;
//! - **archive_rows**: database rows of the SPEC older than `archive_after_days`, into
//!   the same archive.
//!
//! Folder names map to tracker IDs with [`crate::layout::tracker_id`]; database rows of a
//! tracker ID go into the archive of the folder named exactly that ID, else of the first
//! folder (by name) mapping to it, else into an archive of their own named after the ID.

mod build;

pub use build::build;

use chrono::{DateTime, Utc};
use serde::Serialize;
use speckit_engine::policy::Policy;
use speckit_engine::{SpecId, Storage};
use std::path::{Path, PathBuf};

use crate::age::AgeSource;
use crate::archive::{self, SourceFile, Verified};
use crate::catalog;
use crate::layout::{self, Skipped};
use crate::rows::{self, RowsPlan};
use crate::tracker::Trackers;

/// What a plan is built from.
pub struct PlanRequest<'a> {
    /// The evidence root, absolute.
    pub root: &'a Path,
    pub policy: &'a Policy,
    pub trackers: &'a Trackers,
    pub now: DateTime<Utc>,
    /// Only this SPEC (a folder name or a tracker ID).
    pub only: Option<&'a SpecId>,
    pub storage: &'a Storage,
}

/// A file the plan archives or deletes, as it was when planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// Relative to the evidence root.
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub made_at: DateTime<Utc>,
    pub age_source: AgeSource,
    /// Device and inode when planned (see [`SourceFile::identity`]).
    pub identity: Option<(u64, u64)>,
    /// Allocated bytes when planned (`st_blocks * 512`).
    pub allocated_bytes: u64,
}

impl PlannedFile {
    pub fn source(&self) -> SourceFile {
        SourceFile {
            path: self.path.clone(),
            size: self.size,
            mtime_ns: self.mtime_ns,
            identity: self.identity,
        }
    }
}

/// A file an archive already holds: delete it once the archive and its hash check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    pub file: PlannedFile,
    /// The archive holding it, relative to the root.
    pub archive: String,
    pub sha256: String,
}

/// An archive to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    /// Its record; `None` for an archive adopted in the same run.
    pub archive_id: Option<i64>,
    pub path: String,
    pub created_at_ms: i64,
    pub bytes: u64,
    /// The offloaded copy's URL: deleted first (see [`crate::offload`]).
    pub remote: Option<String>,
    /// Its recorded sha256.
    pub sha256: String,
    /// With `[offload]` set and no offloaded copy recorded: where its object would be. An
    /// offload a crash stopped between upload and record left an object there that no
    /// record names; it is deleted with the archive if it holds the archive's exact bytes.
    pub unrecorded_object: Option<String>,
}

/// A recorded archive to offload (or whose offload to finish).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offload {
    /// Its record; `None` for an archive adopted in the same run.
    pub archive_id: Option<i64>,
    /// Relative to the root.
    pub path: String,
    pub created_at_ms: i64,
    pub bytes: u64,
    pub sha256: String,
    /// The object's URL.
    pub target: String,
    /// Already recorded as offloaded (to `target`): only the local copy is left to delete.
    pub recorded: Option<crate::catalog::RemoteCopy>,
}

/// An unrecorded archive found verified on disk.
#[derive(Debug, Clone)]
pub struct Adopt {
    pub path: String,
    pub verified: Verified,
}

/// A file a keep-rule keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    pub path: String,
    pub reason: String,
}

/// The new archive of a SPEC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArchive {
    /// Relative to the root.
    pub path: String,
    pub files: Vec<PlannedFile>,
    pub rows: RowsPlan,
}

/// Everything the run does for one SPEC folder, under its lock.
#[derive(Debug, Clone)]
pub struct Unit {
    /// The SPEC folder name (or a database SPEC-ID without a folder).
    pub key: String,
    pub tracker_id: String,
    /// Why it may be archived: its tracker status(es), or "untracked".
    pub status: String,
    pub discard_temps: Vec<String>,
    pub adopt: Vec<Adopt>,
    pub purge: Vec<Purge>,
    pub offload: Vec<Offload>,
    pub finish: Vec<Finish>,
    pub keep: Vec<Keep>,
    pub archive: Option<NewArchive>,
    /// Recorded archives whose manifest sidecar is missing or stale: written again, under
    /// the lock, before anything else (not an action: the evidence does not change).
    pub repair_sidecars: Vec<catalog::SidecarRepair>,
    /// Execution rows with a `spawned_at` that cannot be read (kept).
    pub undated_rows: u64,
}

impl Unit {
    fn new(key: &str, tracker_id: &str, status: &str) -> Self {
        Self {
            key: key.to_string(),
            tracker_id: tracker_id.to_string(),
            status: status.to_string(),
            discard_temps: Vec::new(),
            adopt: Vec::new(),
            purge: Vec::new(),
            offload: Vec::new(),
            finish: Vec::new(),
            keep: Vec::new(),
            archive: None,
            repair_sidecars: Vec::new(),
            undated_rows: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.discard_temps.is_empty()
            && self.adopt.is_empty()
            && self.purge.is_empty()
            && self.offload.is_empty()
            && self.finish.is_empty()
            && self.keep.is_empty()
            && self.archive.is_none()
            && self.repair_sidecars.is_empty()
    }
}

/// A SPEC left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Exempt {
    pub spec: String,
    pub tracker_id: String,
    pub reason: String,
    /// Its folders (relative to the root).
    #[serde(skip)]
    pub paths: Vec<String>,
}

/// The whole plan.
#[derive(Debug, Clone)]
pub struct Plan {
    pub root: PathBuf,
    pub now: DateTime<Utc>,
    pub units: Vec<Unit>,
    pub exempt: Vec<Exempt>,
    /// Entries below SPEC folders that are never touched (symlinks, special files...).
    pub skipped: Vec<Skipped>,
    /// Regular evidence files in the root (not counting `cleanup/`).
    pub total_files: u64,
    /// Files of inactive SPECs younger than the archive age.
    pub young_files: u64,
    /// The newest modification time of any evidence file in the root, whatever its SPEC
    /// (not counting `cleanup/`): when anything was last written there, by the same clock
    /// as `now` (see [`crate::removal_guard`]'s clock signal).
    pub newest_mtime: Option<std::time::SystemTime>,
    pub warnings: Vec<String>,
    /// Problems found while planning (an unrecorded archive that fails verification).
    pub errors: Vec<String>,
}

/// What an action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Exempt,
    Skip,
    DiscardTemp,
    Adopt,
    Purge,
    Offload,
    DeleteArchived,
    Keep,
    Archive,
    ArchiveRows,
}

/// How an executed action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    Done,
    /// Not done, on purpose (changed since the plan, lock held, cancelled).
    Skipped,
    /// Not done because of an error (reported in `errors`).
    Failed,
}

/// One line of the plan (`cleanup --dry-run --json` prints them), and of a run's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    pub action: ActionKind,
    /// The file, folder or archive, relative to the evidence root.
    pub path: String,
    pub spec: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub made_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_source: Option<AgeSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set by a real run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ActionStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Action {
    fn new(action: ActionKind, path: impl Into<String>, spec: &str) -> Self {
        Self {
            action,
            path: path.into(),
            spec: spec.to_string(),
            archive: None,
            bytes: None,
            made_at: None,
            age_source: None,
            table: None,
            rows: None,
            reason: None,
            status: None,
            detail: None,
        }
    }
}

/// Planned totals (a dry run reports these).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PlanFigures {
    pub archive_files: u64,
    pub archive_bytes: u64,
    pub delete_archived_files: u64,
    pub delete_archived_bytes: u64,
    pub purge_archives: u64,
    pub purge_bytes: u64,
    /// Archives to upload (or whose local copy to delete after an interrupted offload).
    #[serde(default)]
    pub offload_archives: u64,
    #[serde(default)]
    pub offload_bytes: u64,
    pub adopt_archives: u64,
    pub discard_temps: u64,
    pub keep_files: u64,
    pub archive_rows: u64,
    pub young_files: u64,
    pub total_files: u64,
    pub removal_files: u64,
}

impl Plan {
    /// Files the plan deletes from the evidence tree, each only once a verified, recorded
    /// archive holds it (archived now or by an earlier run): restorable, not irreversible.
    pub fn removal_count(&self) -> u64 {
        self.units
            .iter()
            .map(|u| u.finish.len() as u64 + u.archive.as_ref().map_or(0, |a| a.files.len() as u64))
            .sum()
    }

    /// [`Plan::removal_count`] over all evidence files: how large the run is (see
    /// [`crate::removal_guard`] for what is refused).
    pub fn removal_fraction(&self) -> f64 {
        if self.total_files == 0 {
            0.0
        } else {
            self.removal_count() as f64 / self.total_files as f64
        }
    }

    pub fn figures(&self) -> PlanFigures {
        let mut f = PlanFigures {
            young_files: self.young_files,
            total_files: self.total_files,
            removal_files: self.removal_count(),
            ..PlanFigures::default()
        };
        for u in &self.units {
            if let Some(a) = &u.archive {
                f.archive_files += a.files.len() as u64;
                f.archive_bytes += a.files.iter().map(|x| x.size).sum::<u64>();
                f.archive_rows += a.rows.total() as u64;
            }
            f.delete_archived_files += u.finish.len() as u64;
            f.delete_archived_bytes += u.finish.iter().map(|x| x.file.size).sum::<u64>();
            f.purge_archives += u.purge.len() as u64;
            f.purge_bytes += u.purge.iter().map(|x| x.bytes).sum::<u64>();
            f.offload_archives += u.offload.len() as u64;
            f.offload_bytes += u.offload.iter().map(|x| x.bytes).sum::<u64>();
            f.adopt_archives += u.adopt.len() as u64;
            f.discard_temps += u.discard_temps.len() as u64;
            f.keep_files += u.keep.len() as u64;
        }
        f
    }

    /// Every action, in the order a run takes them.
    pub fn actions(&self) -> Vec<Action> {
        let mut out = self.head_actions();
        for u in &self.units {
            out.extend(unit_actions(u));
        }
        out
    }

    /// The actions that touch nothing: exempt SPECs and skipped entries.
    pub fn head_actions(&self) -> Vec<Action> {
        let mut out = Vec::new();
        for e in &self.exempt {
            let paths = if e.paths.is_empty() {
                vec![archive::spec_dir(&e.spec).to_string_lossy().into_owned()]
            } else {
                e.paths.clone()
            };
            for p in paths {
                let mut a = Action::new(ActionKind::Exempt, p, &e.spec);
                a.reason = Some(e.reason.clone());
                out.push(a);
            }
        }
        for s in &self.skipped {
            let mut a = Action::new(ActionKind::Skip, s.relative.to_string_lossy(), "");
            a.reason = Some(skip_reason(s));
            out.push(a);
        }
        out
    }
}

fn skip_reason(s: &Skipped) -> String {
    match &s.reason {
        layout::SkipReason::Symlink => "a symbolic link: never followed".into(),
        layout::SkipReason::SpecialFile => "not a regular file".into(),
        layout::SkipReason::InvalidSpecFolder { detail } => detail.clone(),
        layout::SkipReason::Unreadable { detail } => format!("unreadable: {detail}"),
    }
}

/// A unit's actions, in execution order: discard_temp, adopt, purge, offload,
/// delete_archived, keep, archive, archive_rows.
pub fn unit_actions(u: &Unit) -> Vec<Action> {
    let mut out = Vec::new();
    let why = archive_reason(u);
    for t in &u.discard_temps {
        let mut a = Action::new(ActionKind::DiscardTemp, t.clone(), &u.key);
        a.reason = Some("temporary archive of an interrupted run".into());
        out.push(a);
    }
    for ad in &u.adopt {
        let mut a = Action::new(ActionKind::Adopt, ad.path.clone(), &u.key);
        a.bytes = Some(ad.verified.bytes);
        a.reason = Some("verified archive without a database record".into());
        out.push(a);
    }
    for p in &u.purge {
        let mut a = Action::new(ActionKind::Purge, p.path.clone(), &u.key);
        a.bytes = Some(p.bytes);
        a.made_at = DateTime::<Utc>::from_timestamp_millis(p.created_at_ms).map(|t| t.to_rfc3339());
        if let Some(url) = &p.remote {
            a.archive = Some(url.clone());
            a.reason = Some(format!(
                "older than retention.purge_after_days; its offloaded copy {url} is deleted first"
            ));
        }
        out.push(a);
    }
    for o in &u.offload {
        let mut a = Action::new(ActionKind::Offload, o.path.clone(), &u.key);
        a.archive = Some(o.target.clone());
        a.bytes = Some(o.bytes);
        a.made_at = DateTime::<Utc>::from_timestamp_millis(o.created_at_ms).map(|t| t.to_rfc3339());
        a.reason = Some(match &o.recorded {
            None => "older than offload.after_days: upload, read back, record, then delete the local copy".into(),
            Some(_) => "offloaded by an interrupted run: delete the local copy once the object is found as recorded".into(),
        });
        out.push(a);
    }
    for f in &u.finish {
        let mut a = Action::new(ActionKind::DeleteArchived, f.file.path.clone(), &u.key);
        a.archive = Some(f.archive.clone());
        a.bytes = Some(f.file.size);
        a.made_at = Some(f.file.made_at.to_rfc3339());
        a.age_source = Some(f.file.age_source);
        a.reason = Some(why.clone());
        out.push(a);
    }
    for k in &u.keep {
        let mut a = Action::new(ActionKind::Keep, k.path.clone(), &u.key);
        a.reason = Some(k.reason.clone());
        out.push(a);
    }
    if let Some(arch) = &u.archive {
        for f in &arch.files {
            let mut a = Action::new(ActionKind::Archive, f.path.clone(), &u.key);
            a.archive = Some(arch.path.clone());
            a.bytes = Some(f.size);
            a.made_at = Some(f.made_at.to_rfc3339());
            a.age_source = Some(f.age_source);
            a.reason = Some(why.clone());
            out.push(a);
        }
        for table in rows::TABLES {
            let n = arch.rows.count(table);
            if n > 0 {
                let mut a = Action::new(ActionKind::ArchiveRows, arch.path.clone(), &u.key);
                a.table = Some(table.to_string());
                a.rows = Some(n as u64);
                a.reason = Some(why.clone());
                out.push(a);
            }
        }
    }
    out
}

/// Why a unit's evidence may be archived: its finished status (its age and the age's
/// source are the action's `made_at` and `age_source`).
fn archive_reason(u: &Unit) -> String {
    if u.status == "untracked" {
        format!(
            "untracked: {} is in no tracker with a status (retention.untracked_specs = \"archive\")",
            u.tracker_id
        )
    } else {
        format!(
            "finished: the tracker says {} is {:?}",
            u.tracker_id, u.status
        )
    }
}

/// The stage of a synthesis file (`spec-plan_2025-..Z_synthesis.json`, `plan_synthesis.json`,
/// `SPEC-KIT-900_plan_synthesis.json` are all `plan`), or `None` if it is not one.
pub fn synthesis_stage(file_name: &str, folder: &str) -> Option<String> {
    let stem = file_name.strip_suffix("synthesis.json")?;
    let stem = stem.trim_end_matches(['_', '-', '.']);
    let stem = stem
        .strip_prefix(folder)
        .map(|s| s.trim_start_matches(['_', '-']))
        .unwrap_or(stem);
    let stage = stem.split('_').next().unwrap_or("");
    let stage = stage.strip_prefix("spec-").unwrap_or(stage);
    Some(stage.to_ascii_lowercase())
}
/// Our own folder in the evidence root (archives, daily summaries).
pub const CLEANUP_DIR: &str = "cleanup";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthesis_stages() {
        assert_eq!(
            synthesis_stage("plan_synthesis.json", "S").as_deref(),
            Some("plan")
        );
        assert_eq!(
            synthesis_stage("spec-plan_synthesis.json", "S").as_deref(),
            Some("plan")
        );
        assert_eq!(
            synthesis_stage("spec-tasks_2025-10-06T00:27:16Z_synthesis.json", "S").as_deref(),
            Some("tasks")
        );
        assert_eq!(
            synthesis_stage("SPEC-KIT-900_implement_synthesis.json", "SPEC-KIT-900").as_deref(),
            Some("implement")
        );
        assert_eq!(synthesis_stage("plan_verdict.json", "S"), None);
    }
}
