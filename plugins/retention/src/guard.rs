//! The evidence guard: whether automation may start on a SPEC. A host application calls
//! [`evidence_guard`] before it starts work on a SPEC; `speckit-hygiene guard` is the same
//! check for scripts. Allow, warn (with the figures) or block (with the figures and what
//! gets the SPEC under its limit), like upstream's check that blocked the pipeline with a
//! message telling the user what to run.

use crate::EvidencePolicy;
use chrono::{DateTime, Utc};
use serde::Serialize;
use speckit_engine::{Policy, SpecId, Storage};
use std::fmt;

use crate::plan::{self, PlanRequest};
use crate::tracker::Trackers;

use crate::limits::{files, human_bytes, human_mib, Verdict};
use crate::stats::{self, FolderUsage, Scope, SkippedEntry, SpecNames, StatsError, Usage};

/// One SPEC's evidence against its limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpecFigures {
    pub spec: String,
    /// The evidence folders counted for it, each with its own figures.
    pub folders: Vec<FolderUsage>,
    pub commands: Usage,
    pub consensus: Usage,
    /// Commands and consensus together: what the limits apply to.
    pub total: Usage,
    pub warn_mb: f64,
    pub limit_mb: f64,
    pub warn_bytes: u64,
    pub limit_bytes: u64,
    /// Entries of its folders that could not be read: `total` is a lower bound.
    pub unreadable_entries: u64,
    /// Entries of its folders not counted (symlinks, unreadable...), with the reason.
    pub skipped: Vec<SkippedEntry>,
}

/// What cleanup would do for a SPEC, from the retention plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CleanupOutlook {
    /// Cleanup never touches the SPEC: it is active (`In Progress`...), or untracked and
    /// protected by policy. The reason says which.
    Exempt { reason: String },
    /// Cleanup would take this much out of the SPEC's evidence folders (archived, or
    /// already in a verified archive).
    Frees { bytes: u64, files: u64 },
}

/// Asks what cleanup would do for one SPEC, so that a block can say whether `cleanup` is
/// enough. Without one, the guard points to `cleanup --dry-run`. [`PlanPreview`] answers
/// from the retention plan.
pub trait CleanupPreview {
    fn preview(&self, policy: &Policy, spec: &SpecId) -> Result<CleanupOutlook, String>;
}

/// The retention plan as a [`CleanupPreview`]: exactly what `cleanup --spec` would do at
/// `now` (the same plan a dry run prints). Reads the tree, the trackers and the database;
/// changes nothing.
pub struct PlanPreview<'a> {
    pub storage: &'a Storage,
    pub trackers: &'a Trackers,
    pub now: DateTime<Utc>,
}

impl CleanupPreview for PlanPreview<'_> {
    fn preview(&self, policy: &Policy, spec: &SpecId) -> Result<CleanupOutlook, String> {
        let plan = plan::build(&PlanRequest {
            root: &policy.section::<EvidencePolicy>().root,
            policy,
            trackers: self.trackers,
            now: self.now,
            only: Some(spec),
            storage: self.storage,
        })
        .map_err(|e| e.to_string())?;
        if let Some(exempt) = plan.exempt.first() {
            return Ok(CleanupOutlook::Exempt {
                reason: exempt.reason.clone(),
            });
        }
        let f = plan.figures();
        Ok(CleanupOutlook::Frees {
            bytes: f.archive_bytes + f.delete_archived_bytes,
            files: f.archive_files + f.delete_archived_files,
        })
    }
}

/// What gets a blocked SPEC under its limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockAction {
    /// At least this many bytes must go for the SPEC to be at or under its limit.
    pub must_free_bytes: u64,
    /// The command that archives the SPEC's old evidence.
    pub command: String,
    /// The command that shows exactly what `command` would do, changing nothing.
    pub preview_command: String,
    /// What cleanup would do, when a [`CleanupPreview`] answered.
    pub cleanup: Option<CleanupOutlook>,
    /// Why the preview could not answer, when it failed.
    pub preview_error: Option<String>,
    /// One sentence for people.
    pub advice: String,
}

/// The guard's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum GuardVerdict {
    /// At or under the warning size, and every entry was read.
    Allow { figures: SpecFigures },
    /// Above the warning size (at or under the limit), or some entries could not be read:
    /// automation may start; tell the user.
    Warn {
        figures: SpecFigures,
        reasons: Vec<String>,
    },
    /// Above the limit: automation must not start.
    Block {
        figures: SpecFigures,
        action: BlockAction,
    },
}

impl GuardVerdict {
    pub fn figures(&self) -> &SpecFigures {
        match self {
            GuardVerdict::Allow { figures }
            | GuardVerdict::Warn { figures, .. }
            | GuardVerdict::Block { figures, .. } => figures,
        }
    }

    pub fn is_blocked(&self) -> bool {
        matches!(self, GuardVerdict::Block { .. })
    }

    pub fn verdict(&self) -> Verdict {
        match self {
            GuardVerdict::Allow { .. } => Verdict::Ok,
            GuardVerdict::Warn { .. } => Verdict::Warn,
            GuardVerdict::Block { .. } => Verdict::Block,
        }
    }
}

/// Whether automation may start on `spec_id`, by the policy's evidence root and limits.
/// Folder names map to SPEC-IDs by their canonical prefix ([`SpecNames::canonical`]); a
/// blocked SPEC's action points to `cleanup --dry-run`.
///
/// Errors: a `spec_id` that could name a path outside its folder (`../x`, `a/b`), and an
/// evidence root that does not exist or cannot be read. A SPEC with no evidence yet is
/// allowed.
pub fn evidence_guard(policy: &Policy, spec_id: &str) -> Result<GuardVerdict, StatsError> {
    evidence_guard_with(policy, spec_id, &SpecNames::canonical(), None)
}

/// The guard as `speckit-hygiene guard` runs it: folder names mapped by the policy's SPEC
/// trackers (when they can be read), and for a block, what the retention plan says cleanup
/// would free at `now` ([`PlanPreview`]), when `storage` is given and the trackers were
/// read. The plan's answer is only needed for a block, so an allowed SPEC costs one walk
/// of its folders.
pub fn evidence_guard_planned(
    policy: &Policy,
    spec_id: &str,
    storage: Option<&Storage>,
    now: DateTime<Utc>,
) -> Result<GuardVerdict, StatsError> {
    let trackers = stats::read_trackers(policy);
    let names = SpecNames::from_trackers(trackers.as_ref());
    let verdict = evidence_guard_with(policy, spec_id, &names, None)?;
    match (verdict.is_blocked(), storage, &trackers) {
        (true, Some(storage), Some(trackers)) => {
            let preview = PlanPreview {
                storage,
                trackers,
                now,
            };
            evidence_guard_with(policy, spec_id, &names, Some(&preview))
        }
        _ => Ok(verdict),
    }
}

/// [`evidence_guard`] with the trackers' SPEC-IDs for mapping folder names, and a preview
/// of the retention plan so a block says whether cleanup is enough.
pub fn evidence_guard_with(
    policy: &Policy,
    spec_id: &str,
    names: &SpecNames,
    preview: Option<&dyn CleanupPreview>,
) -> Result<GuardVerdict, StatsError> {
    let spec = SpecId::parse(spec_id)?;
    let report = stats::collect(policy, &Scope::Spec(spec.clone()), names)?;
    let limits = report.limits;
    let row = report
        .specs
        .iter()
        .find(|s| s.spec == spec.as_str())
        .expect("a SPEC asked for is always reported");
    let figures = SpecFigures {
        spec: row.spec.clone(),
        folders: row.folders.clone(),
        commands: row.commands,
        consensus: row.consensus,
        total: row.total,
        warn_mb: limits.warn_mb,
        limit_mb: limits.limit_mb,
        warn_bytes: limits.warn_bytes,
        limit_bytes: limits.limit_bytes,
        unreadable_entries: row.unreadable_entries,
        skipped: report.skipped.clone(),
    };
    Ok(match row.verdict {
        Verdict::Block => {
            let action = block_action(policy, &spec, &figures, preview);
            GuardVerdict::Block { figures, action }
        }
        verdict => {
            let mut reasons = Vec::new();
            if verdict == Verdict::Warn {
                reasons.push(format!(
                    "above the {} warning size (limit {})",
                    human_mib(limits.warn_mb),
                    human_mib(limits.limit_mb)
                ));
            }
            if figures.unreadable_entries > 0 {
                reasons.push(format!(
                    "{} entries of its evidence could not be read, so its size is a lower bound",
                    figures.unreadable_entries
                ));
            }
            if reasons.is_empty() {
                GuardVerdict::Allow { figures }
            } else {
                GuardVerdict::Warn { figures, reasons }
            }
        }
    })
}

fn block_action(
    policy: &Policy,
    spec: &SpecId,
    figures: &SpecFigures,
    preview: Option<&dyn CleanupPreview>,
) -> BlockAction {
    let must_free = figures.total.bytes - figures.limit_bytes;
    let command = format!("speckit-hygiene cleanup --spec {spec}");
    let preview_command = format!("speckit-hygiene cleanup --dry-run --spec {spec}");
    let (cleanup, preview_error) = match preview.map(|p| p.preview(policy, spec)) {
        None => (None, None),
        Some(Ok(outlook)) => (Some(outlook), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let need = format!("{} ({must_free} bytes)", human_bytes(must_free));
    let advice = match &cleanup {
        Some(CleanupOutlook::Exempt { reason }) => format!(
            "trim at least {need} of its evidence by hand: cleanup leaves {spec} alone ({reason})"
        ),
        Some(CleanupOutlook::Frees { bytes, files: n }) if *bytes >= must_free => format!(
            "run `{command}`: it would archive {} in {}, enough to free the {need} needed",
            human_bytes(*bytes),
            files(*n)
        ),
        Some(CleanupOutlook::Frees { bytes, files: n }) => format!(
            "run `{command}` (it would archive {} in {}), then trim at least {} more by \
             hand: {need} must go",
            human_bytes(*bytes),
            files(*n),
            human_bytes(must_free - bytes)
        ),
        None => format!(
            "free at least {need}: `{preview_command}` shows what cleanup would archive and \
             `{command}` does it; if {spec} is active, cleanup leaves it alone and its \
             evidence must be trimmed by hand"
        ),
    };
    BlockAction {
        must_free_bytes: must_free,
        command,
        preview_command,
        cleanup,
        preview_error,
        advice,
    }
}

/// `SPEC-KIT-900: evidence is 41.00 MiB (42991616 bytes) in 120 files (commands 30.00 MiB
/// in 80 files, consensus 11.00 MiB in 40 files)`.
fn describe(f: &SpecFigures) -> String {
    let mut out = format!(
        "{}: evidence is {} ({} bytes) in {} (commands {} in {}, consensus {} in {})",
        f.spec,
        human_bytes(f.total.bytes),
        f.total.bytes,
        files(f.total.files),
        human_bytes(f.commands.bytes),
        files(f.commands.files),
        human_bytes(f.consensus.bytes),
        files(f.consensus.files)
    );
    if f.folders.is_empty() {
        out.push_str(", no evidence folder yet");
    }
    out
}

/// One message for people: what stderr shows for warn and block, stdout for allow.
impl fmt::Display for GuardVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardVerdict::Allow { figures } => write!(
                f,
                "allow: {}, within the {} warning size (limit {})",
                describe(figures),
                human_mib(figures.warn_mb),
                human_mib(figures.limit_mb)
            ),
            GuardVerdict::Warn { figures, reasons } => write!(
                f,
                "warning: {}: {}; automation may start",
                describe(figures),
                reasons.join("; ")
            ),
            GuardVerdict::Block { figures, action } => {
                let lower_bound = if figures.unreadable_entries > 0 {
                    format!(
                        " (at least: {} entries could not be read)",
                        figures.unreadable_entries
                    )
                } else {
                    String::new()
                };
                write!(
                    f,
                    "blocked: {}{lower_bound}, above the {} limit: automation must not start \
                     on it. To get under the limit, {}",
                    describe(figures),
                    human_mib(figures.limit_mb),
                    action.advice
                )
            }
        }
    }
}
