//! Evidence usage: per SPEC the bytes and files of `commands/` and `consensus/` and their
//! sum, the root's total, files above the single-file soft limit, each SPEC's verdict
//! against the limits, and every entry not counted with the reason. The figures behind
//! `stats`, `guard` and the limits check after cleanup.
//!
//! Bytes are apparent sizes of regular files (what `find -type f -printf '%s\n'` adds up;
//! `du -sb` also counts the folders themselves). Symbolic links are never followed. Every
//! SPEC folder is counted, whichever half it has evidence in: upstream's script only looked
//! at SPECs with consensus evidence and never flagged one with 60 MB of command evidence.
//!
//! The walk runs on several threads ([`layout::walk_parallel`]): each SPEC folder is summed
//! on the thread that walks it and the sums are merged in walk order, so the figures, rows
//! and skip list are those of a walk on one thread.

use crate::{EvidencePolicy, RetentionPolicy};
use serde::{Serialize, Serializer};
use speckit_engine::spec_id::InvalidSpecId;
use speckit_engine::{Policy, SpecId};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use crate::folder::FileStat;
use crate::layout::{self, EvidenceKind, LayoutError, Reach, SkipReason, Skipped};
use crate::limits::{files, human_bytes, human_mib, LimitFinding, Limits, Verdict};
use crate::tracker::{Activity, StatusRules, Trackers};

/// Why evidence could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    InvalidSpec(#[from] InvalidSpecId),
}

impl StatsError {
    /// Whether the cause is the caller's input (a bad SPEC-ID; an evidence root that does
    /// not exist or is not a folder) rather than a failure to read.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StatsError::InvalidSpec(_)
                | StatsError::Layout(LayoutError::RootMissing(_) | LayoutError::RootNotDir(_))
        )
    }
}

/// Bytes and regular files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub bytes: u64,
    pub files: u64,
}

impl Usage {
    fn count(&mut self, bytes: u64) {
        self.bytes += bytes;
        self.files += 1;
    }

    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            bytes: self.bytes + other.bytes,
            files: self.files + other.files,
        }
    }
}

/// How evidence folder names map to SPEC-IDs: [`layout::tracker_id`] against the
/// trackers' IDs, which without any is the canonical prefix (`SPEC-KIT-025-add-...` and its
/// truncated twin `...-wit` are both `SPEC-KIT-025`; `SPEC-KIT-DEMO` is itself).
#[derive(Debug, Clone, Default)]
pub struct SpecNames {
    tracker_ids: Vec<String>,
}

impl SpecNames {
    /// Folder names mapped by their canonical prefix only.
    pub fn canonical() -> Self {
        Self::default()
    }

    /// Folder names mapped to these tracker IDs first (the longest that prefixes a name).
    pub fn with_tracker_ids<I, S>(ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            tracker_ids: ids.into_iter().map(Into::into).collect(),
        }
    }

    /// Folder names mapped as cleanup maps them: to the IDs of the policy's SPEC trackers
    /// when they can be read, else by canonical prefix (measuring needs no tracker).
    pub fn from_policy(policy: &Policy) -> Self {
        Self::from_trackers(read_trackers(policy).as_ref())
    }

    /// Folder names mapped to these trackers' IDs; canonical without trackers.
    pub fn from_trackers(trackers: Option<&Trackers>) -> Self {
        trackers
            .map(|t| Self::with_tracker_ids(t.ids().map(str::to_string)))
            .unwrap_or_default()
    }

    /// The SPEC-ID whose evidence a folder holds.
    pub fn spec_of(&self, folder: &str) -> String {
        layout::tracker_id(folder, self.tracker_ids.iter().map(String::as_str))
    }

    /// Whether folder `folder` holds evidence of `spec`: it is named `spec`, or its name
    /// maps to it.
    pub fn belongs_to(&self, folder: &str, spec: &SpecId) -> bool {
        folder == spec.as_str() || self.spec_of(folder) == spec.as_str()
    }
}

/// The policy's SPEC trackers, or `None` (logged) when one cannot be read.
pub fn read_trackers(policy: &Policy) -> Option<Trackers> {
    match Trackers::load(&policy.section::<EvidencePolicy>().tracker_paths) {
        Ok(trackers) => Some(trackers),
        Err(e) => {
            tracing::info!("evidence folder names mapped by their canonical prefix: {e}");
            None
        }
    }
}

/// Which evidence to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The whole root: every SPEC and the non-SPEC entries.
    All,
    /// Only the folders of one SPEC (no root totals).
    Spec(SpecId),
}

impl Scope {
    /// One SPEC, from user input; a value that could name a path outside its folder
    /// (`../x`, `a/b`) is an error.
    pub fn spec(value: &str) -> Result<Scope, StatsError> {
        Ok(Scope::Spec(SpecId::parse(value)?))
    }
}

/// One evidence folder name's figures (`commands/<name>/` and `consensus/<name>/`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FolderUsage {
    pub folder: String,
    pub commands: Usage,
    pub consensus: Usage,
    /// Entries under it that could not be read.
    pub unreadable_entries: u64,
}

/// One SPEC's evidence as found: the sum of its folders.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecUsage {
    pub spec: String,
    /// Its folders (one name may exist in both halves), sorted by name.
    pub folders: Vec<FolderUsage>,
    pub commands: Usage,
    pub consensus: Usage,
    /// Entries of its folders that could not be read: its totals are lower bounds.
    pub unreadable_entries: u64,
}

impl SpecUsage {
    fn new(spec: String) -> Self {
        Self {
            spec,
            ..Self::default()
        }
    }

    pub fn total(&self) -> Usage {
        self.commands.plus(self.consensus)
    }

    /// The index of folder `name` in `folders`, added if new.
    fn folder(&mut self, name: &str) -> usize {
        match self.folders.iter().position(|f| f.folder == name) {
            Some(i) => i,
            None => {
                self.folders.push(FolderUsage {
                    folder: name.to_string(),
                    ..FolderUsage::default()
                });
                self.folders.len() - 1
            }
        }
    }
}

/// A file above the single-file soft limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LargeFile {
    /// Relative to the evidence root.
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    pub bytes: u64,
    /// The SPEC it belongs to; `None` for a non-SPEC entry.
    pub spec: Option<String>,
}

/// What [`measure`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvidenceUsage {
    pub root: PathBuf,
    /// The whole root was walked (not one SPEC's folders), so root totals are known.
    pub whole_root: bool,
    /// Sorted by SPEC-ID.
    pub specs: Vec<SpecUsage>,
    /// Regular files belonging to no SPEC (`archive/`, `costs/`, `.locks/`, top-level files).
    pub non_spec: Usage,
    pub large_files: Vec<LargeFile>,
    pub skipped: Vec<Skipped>,
}

impl EvidenceUsage {
    /// Entries that could not be read (as opposed to skipped by rule, like symlinks).
    pub fn unreadable_count(&self) -> usize {
        self.skipped
            .iter()
            .filter(|s| matches!(s.reason, SkipReason::Unreadable { .. }))
            .count()
    }
}

/// Walks `root` (all of it, or one SPEC's folders) and adds up what it holds. Files above
/// `file_warn_bytes` are listed. Memory grows with the number of SPECs, large files and
/// skips, not with the number of files. The walk uses [`layout::default_threads`]
/// threads; [`measure_with_threads`] gives the same figures with any other count.
pub fn measure(
    root: &Path,
    scope: &Scope,
    names: &SpecNames,
    file_warn_bytes: u64,
) -> Result<EvidenceUsage, LayoutError> {
    measure_with_threads(
        root,
        scope,
        names,
        file_warn_bytes,
        layout::default_threads(),
    )
}

/// What one piece of the walk (one SPEC folder, one non-SPEC folder, or one entry at the
/// top) holds: every file of a piece has the piece's owner, so it is summed here on the
/// walking thread and only the sum is merged.
struct PieceTally {
    owner: Option<(SpecId, EvidenceKind)>,
    usage: Usage,
    file_warn_bytes: u64,
    /// Files above `file_warn_bytes`: relative path and bytes.
    large: Vec<(PathBuf, u64)>,
    skipped: Vec<Skipped>,
}

impl layout::Visit for PieceTally {
    fn file(&mut self, dir: &Path, name: &OsStr, stat: &FileStat) {
        self.usage.count(stat.size);
        if stat.size > self.file_warn_bytes {
            self.large.push((dir.join(name), stat.size));
        }
    }

    fn skip(&mut self, skip: Skipped) {
        self.skipped.push(skip);
    }
}

/// [`measure`] with the walk on `threads` threads (1: the calling thread only). Same
/// figures, rows and skip list, in the same order, for every count.
pub fn measure_with_threads(
    root: &Path,
    scope: &Scope,
    names: &SpecNames,
    file_warn_bytes: u64,
    threads: usize,
) -> Result<EvidenceUsage, LayoutError> {
    let mut specs: Vec<SpecUsage> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut non_spec = Usage::default();
    let mut large_files = Vec::new();
    let mut skipped = Vec::new();

    let key_of = |folder: &str| match scope {
        Scope::All => names.spec_of(folder),
        Scope::Spec(spec) => spec.as_str().to_string(),
    };
    let mut slot = |specs: &mut Vec<SpecUsage>, key: String| -> usize {
        *index.entry(key).or_insert_with_key(|key| {
            specs.push(SpecUsage::new(key.clone()));
            specs.len() - 1
        })
    };

    // Pieces arrive in walk order; a SPEC gets its row when its first file is counted,
    // as a file-by-file walk would give it.
    let mut merge = |piece: PieceTally| {
        let spec_slot = match (&piece.owner, piece.usage.files) {
            (_, 0) => None,
            (None, _) => {
                non_spec = non_spec.plus(piece.usage);
                None
            }
            (Some((folder, kind)), _) => {
                let i = slot(&mut specs, key_of(folder.as_str()));
                let f = specs[i].folder(folder.as_str());
                let spec = &mut specs[i];
                let (spec_half, folder_half) = match kind {
                    EvidenceKind::Commands => (&mut spec.commands, &mut spec.folders[f].commands),
                    EvidenceKind::Consensus => {
                        (&mut spec.consensus, &mut spec.folders[f].consensus)
                    }
                };
                *spec_half = spec_half.plus(piece.usage);
                *folder_half = folder_half.plus(piece.usage);
                Some(i)
            }
        };
        for (path, bytes) in piece.large {
            large_files.push(LargeFile {
                path,
                bytes,
                spec: spec_slot.map(|i| specs[i].spec.clone()),
            });
        }
        skipped.extend(piece.skipped);
    };
    let new = |owner: Option<&(SpecId, EvidenceKind)>| PieceTally {
        owner: owner.cloned(),
        usage: Usage::default(),
        file_warn_bytes,
        large: Vec::new(),
        skipped: Vec::new(),
    };

    let mut belongs = |folder: &str| match scope {
        Scope::Spec(spec) => names.belongs_to(folder, spec),
        Scope::All => true,
    };
    let reach = match scope {
        Scope::All => Reach::WholeRoot,
        Scope::Spec(_) => Reach::SpecFolders(&mut belongs),
    };
    layout::walk_parallel(root, reach, threads, &new, &mut merge)?;

    // A SPEC asked for is always reported, with zeros when it has no evidence yet.
    if let Scope::Spec(spec) = scope {
        slot(&mut specs, spec.as_str().to_string());
    }
    // Unreadable entries make their SPEC's totals lower bounds: say so on its row. A SPEC
    // folder that could not be listed at all still gets a row, so it is never left out.
    for skip in &skipped {
        if !matches!(skip.reason, SkipReason::Unreadable { .. }) {
            continue;
        }
        let target = match (unreadable_owner(&skip.relative), scope) {
            (SkipOwner::Folder(folder), Scope::All) => Some((names.spec_of(&folder), folder)),
            (SkipOwner::Folder(folder), Scope::Spec(spec)) => names
                .belongs_to(&folder, spec)
                .then(|| (key_of(&folder), folder)),
            // The folder list of commands/ or consensus/ could not be read: every SPEC is
            // unknown. In the whole-root scope that is the report's `complete: false`.
            (SkipOwner::Everything, Scope::Spec(spec)) => {
                let i = slot(&mut specs, spec.as_str().to_string());
                specs[i].unreadable_entries += 1;
                None
            }
            (SkipOwner::Everything | SkipOwner::None, _) => None,
        };
        if let Some((key, folder)) = target {
            let i = slot(&mut specs, key);
            let f = specs[i].folder(&folder);
            specs[i].unreadable_entries += 1;
            specs[i].folders[f].unreadable_entries += 1;
        }
    }

    specs.sort_by(|a, b| a.spec.cmp(&b.spec));
    for spec in &mut specs {
        spec.folders.sort_by(|a, b| a.folder.cmp(&b.folder));
    }
    large_files.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
    Ok(EvidenceUsage {
        root: root.to_path_buf(),
        whole_root: matches!(scope, Scope::All),
        specs,
        non_spec,
        large_files,
        skipped,
    })
}

enum SkipOwner {
    /// Inside (or is) this SPEC folder.
    Folder(String),
    /// `commands/` or `consensus/` itself, or the root's listing.
    Everything,
    /// A non-SPEC entry.
    None,
}

fn unreadable_owner(relative: &Path) -> SkipOwner {
    let mut parts = relative.components();
    let kind = match parts.next() {
        None => return SkipOwner::Everything,
        Some(Component::Normal(kind)) => kind,
        Some(_) => return SkipOwner::None,
    };
    if kind != "commands" && kind != "consensus" {
        return SkipOwner::None;
    }
    match parts.next() {
        None => SkipOwner::Everything,
        Some(Component::Normal(folder)) => match folder.to_str() {
            Some(folder) if SpecId::parse(folder).is_ok() => SkipOwner::Folder(folder.into()),
            _ => SkipOwner::None,
        },
        Some(_) => SkipOwner::None,
    }
}

/// One SPEC's row of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpecStats {
    pub spec: String,
    /// Its evidence folders, each with its own figures.
    pub folders: Vec<FolderUsage>,
    pub commands: Usage,
    pub consensus: Usage,
    /// Commands and consensus together: what the limits apply to.
    pub total: Usage,
    pub verdict: Verdict,
    /// `total.bytes` over the limit in bytes (1.0 is at the limit).
    pub limit_fraction: f64,
    /// Entries of its folders that could not be read: `total` is a lower bound.
    pub unreadable_entries: u64,
}

/// How many SPECs have each verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VerdictCounts {
    pub ok: usize,
    pub warn: usize,
    pub block: usize,
}

/// An entry that was not counted, for output (paths that are not UTF-8 shown lossily).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedEntry {
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    #[serde(flatten)]
    pub reason: SkipReason,
}

/// Everything `stats` reports: `stats --json` is this, serialized.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsReport {
    #[serde(serialize_with = "lossy_path")]
    pub root: PathBuf,
    pub limits: Limits,
    /// The SPEC asked for with `--spec`; the root totals are then not measured.
    pub spec_filter: Option<String>,
    /// Every regular file under the root, SPEC or not.
    pub root_total: Option<Usage>,
    /// Regular files belonging to no SPEC.
    pub non_spec: Option<Usage>,
    pub specs: Vec<SpecStats>,
    pub counts: VerdictCounts,
    pub large_files: Vec<LargeFile>,
    pub skipped: Vec<SkippedEntry>,
    /// Every entry could be read. When false, the totals are lower bounds.
    pub complete: bool,
    /// For people, one line each: SPECs over a size, the root and single-file soft
    /// limits, entries not counted, and (with [`collect_with_trackers`]) SPECs protected
    /// by an unknown or conflicting tracker status or by having none.
    pub warnings: Vec<String>,
    /// SPECs with evidence that cleanup protects although no tracker row says they are
    /// active (filled by [`collect_with_trackers`]).
    pub protected_specs: Vec<ProtectedSpec>,
}

/// A SPEC cleanup will not archive because its status is unknown, its tracker rows
/// disagree, or it has none (`retention.untracked_specs = "protect"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProtectedSpec {
    pub spec: String,
    /// `unclear` (with every row, its status, tracker, line and class) or `untracked`.
    #[serde(flatten)]
    pub activity: Activity,
    pub message: String,
}

/// [`collect`], with folder names mapped through the policy's trackers and each SPEC's
/// tracker status checked as cleanup checks it (`stats`). Trackers that cannot be read
/// leave names mapped by prefix and no status checked, with a warning saying so.
pub fn collect_with_trackers(policy: &Policy, scope: &Scope) -> Result<StatsReport, StatsError> {
    let trackers = Trackers::load(&policy.section::<EvidencePolicy>().tracker_paths);
    let names = SpecNames::from_trackers(trackers.as_ref().ok());
    let mut report = collect(policy, scope, &names)?;
    match &trackers {
        Ok(trackers) => report.add_protected(trackers, policy),
        Err(e) => report
            .warnings
            .push(format!("tracker statuses not checked: {e}")),
    }
    Ok(report)
}

/// Measures the policy's evidence root (all of it, or one SPEC) against its limits.
pub fn collect(
    policy: &Policy,
    scope: &Scope,
    names: &SpecNames,
) -> Result<StatsReport, StatsError> {
    let limits = Limits::from_policy(policy);
    let usage = measure(
        &policy.section::<EvidencePolicy>().root,
        scope,
        names,
        limits.file_warn_bytes,
    )?;
    let spec_filter = match scope {
        Scope::All => None,
        Scope::Spec(spec) => Some(spec.to_string()),
    };
    Ok(StatsReport::new(usage, limits, spec_filter))
}

impl StatsReport {
    /// Applies the limits to what [`measure`] found.
    pub fn new(usage: EvidenceUsage, limits: Limits, spec_filter: Option<String>) -> Self {
        let mut counts = VerdictCounts::default();
        let specs: Vec<SpecStats> = usage
            .specs
            .iter()
            .map(|s| {
                let total = s.total();
                let verdict = limits.verdict(total.bytes);
                match verdict {
                    Verdict::Ok => counts.ok += 1,
                    Verdict::Warn => counts.warn += 1,
                    Verdict::Block => counts.block += 1,
                }
                SpecStats {
                    spec: s.spec.clone(),
                    folders: s.folders.clone(),
                    commands: s.commands,
                    consensus: s.consensus,
                    total,
                    verdict,
                    limit_fraction: total.bytes as f64 / limits.limit_bytes.max(1) as f64,
                    unreadable_entries: s.unreadable_entries,
                }
            })
            .collect();
        let spec_total = specs
            .iter()
            .fold(Usage::default(), |sum, s| sum.plus(s.total));
        let root_total = usage.whole_root.then(|| spec_total.plus(usage.non_spec));
        let unreadable = usage.unreadable_count();
        let mut report = StatsReport {
            root: usage.root,
            limits,
            spec_filter,
            root_total,
            non_spec: usage.whole_root.then_some(usage.non_spec),
            specs,
            counts,
            large_files: usage.large_files,
            skipped: usage
                .skipped
                .into_iter()
                .map(|s| SkippedEntry {
                    path: s.relative,
                    reason: s.reason,
                })
                .collect(),
            complete: unreadable == 0,
            warnings: Vec::new(),
            protected_specs: Vec::new(),
        };
        report.warnings = report.build_warnings(unreadable);
        report
    }

    /// Notes each measured SPEC that cleanup protects for want of a known, agreed status.
    pub fn add_protected(&mut self, trackers: &Trackers, policy: &Policy) {
        let rules = StatusRules::from_policy(&policy.section::<RetentionPolicy>());
        for s in &self.specs {
            let activity = trackers.activity(&s.spec, &rules);
            if let Some(message) = trackers.protection_warning(
                &s.spec,
                &activity,
                policy.section::<RetentionPolicy>().untracked_specs,
            ) {
                self.warnings.push(message.clone());
                self.protected_specs.push(ProtectedSpec {
                    spec: s.spec.clone(),
                    activity,
                    message,
                });
            }
        }
    }

    /// The SPECs over their warning size or limit, blocks first.
    pub fn findings(&self) -> Vec<LimitFinding> {
        let mut over: Vec<&SpecStats> = self
            .specs
            .iter()
            .filter(|s| s.verdict != Verdict::Ok)
            .collect();
        over.sort_by(|a, b| b.verdict.cmp(&a.verdict).then_with(|| a.spec.cmp(&b.spec)));
        over.into_iter()
            .map(|s| LimitFinding {
                spec: s.spec.clone(),
                folders: s.folders.iter().map(|f| f.folder.clone()).collect(),
                verdict: s.verdict,
                total_bytes: s.total.bytes,
                crossed_bytes: match s.verdict {
                    Verdict::Block => self.limits.limit_bytes,
                    _ => self.limits.warn_bytes,
                },
                incomplete: s.unreadable_entries > 0,
                message: spec_message(s, &self.limits),
            })
            .collect()
    }

    /// The warning for the whole root above its soft limit, if it is.
    pub fn root_warning(&self) -> Option<String> {
        let total = self.root_total?;
        (total.bytes > self.limits.root_warn_bytes).then(|| {
            format!(
                "evidence root {} holds {} ({} bytes) in {}, above its {} soft limit",
                self.root.display(),
                human_bytes(total.bytes),
                total.bytes,
                files(total.files),
                human_mib(self.limits.root_warn_mb)
            )
        })
    }

    fn build_warnings(&self, unreadable: usize) -> Vec<String> {
        let mut out: Vec<String> = self.findings().into_iter().map(|f| f.message).collect();
        out.extend(self.root_warning());
        for file in &self.large_files {
            out.push(format!(
                "{} is {} ({} bytes), above the {} single-file soft limit",
                printable_path(&file.path),
                human_bytes(file.bytes),
                file.bytes,
                human_mib(self.limits.file_warn_mb)
            ));
        }
        if unreadable > 0 {
            out.push(format!(
                "{unreadable} entr{} could not be read: the totals are lower bounds (see skipped)",
                if unreadable == 1 { "y" } else { "ies" }
            ));
        }
        let by_rule = skip_summary(&self.skipped);
        if !by_rule.is_empty() {
            out.push(format!("not counted: {by_rule}"));
        }
        out
    }
}

/// The line for one SPEC over a size.
fn spec_message(s: &SpecStats, limits: &Limits) -> String {
    let size = format!(
        "{}: evidence is {} ({} bytes) in {}",
        s.spec,
        human_bytes(s.total.bytes),
        s.total.bytes,
        files(s.total.files)
    );
    let lower_bound = if s.unreadable_entries > 0 {
        format!(
            " (at least: {} entries could not be read)",
            s.unreadable_entries
        )
    } else {
        String::new()
    };
    match s.verdict {
        Verdict::Block => format!(
            "{size}{lower_bound}, above the {} limit: automation on it is blocked",
            human_mib(limits.limit_mb)
        ),
        _ => format!(
            "{size}{lower_bound}, above the {} warning size (limit {})",
            human_mib(limits.warn_mb),
            human_mib(limits.limit_mb)
        ),
    }
}

/// `2 symbolic links (never followed), 1 invalid SPEC folder`; empty when nothing was
/// skipped by rule (unreadable entries have their own warning).
fn skip_summary(skipped: &[SkippedEntry]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in skipped {
        let label = match s.reason {
            SkipReason::Symlink => "symbolic link(s) (never followed)",
            SkipReason::SpecialFile => "special file(s) (sockets, FIFOs, devices)",
            SkipReason::InvalidSpecFolder { .. } => {
                "folder(s) whose name is not a valid SPEC-ID (contents not counted)"
            }
            SkipReason::Unreadable { .. } => continue,
        };
        *counts.entry(label).or_default() += 1;
    }
    counts
        .iter()
        .map(|(label, n)| format!("{n} {label}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A path for a terminal or a log line: control characters escaped, so a hostile file name
/// cannot rewrite the screen.
pub fn printable_path(path: &Path) -> String {
    let lossy = path.to_string_lossy();
    if !lossy.chars().any(char::is_control) {
        return lossy.into_owned();
    }
    lossy
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Paths in JSON: a name that is not UTF-8 is shown lossily rather than failing the output.
fn lossy_path<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}
