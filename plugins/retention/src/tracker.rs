//! SPEC trackers: which SPECs are active, read from the Markdown tables of `SPEC.md`.
//!
//! Both real shapes are read by their header row, not by position:
//! `| Order | Task ID | Title | Status | ... |` (11 columns, `**IN PROGRESS**`, `**Done**`,
//! rows whose notes hold an unescaped `|` inside a code span) and
//! `| Spec | Status | Owner | Next Action |` (4 columns). A table counts when its header has
//! an ID column (`Task ID`, `Spec`, `Spec ID`, `ID` or `Item`) and a `Status` column.
//!
//! Each status is read against the policy's two lists ([`StatusRules`]): *active*
//! (`retention.active_statuses`), *finished* (`retention.finished_statuses`), or
//! *unknown* (in neither). Statuses are compared normalised: case, `**`, punctuation,
//! spacing and emoji do not matter (`**IN PROGRESS**` = `In Progress` = `in-progress`,
//! `**Done** ✅` = `Done`), and struck-through text is not part of the status
//! (`~~Done~~ In Progress` is `In Progress`). A status that *starts with* an active one
//! (`Blocked (waiting on infra)`) is active too; a finished status must match whole
//! (`Done (but reopened)` is unknown): the prefix rule can only protect.
//!
//! A SPEC is [`Activity::Finished`] (archivable) only when every row giving it a status
//! gives a finished one, and [`Activity::Active`] when every row gives an active one. A
//! SPEC with an unknown status, or whose rows disagree (`Done` in one row, `WIP` or
//! `In Progress` in another), is [`Activity::Unclear`]: protected like an active SPEC and
//! reported ([`Trackers::protection_warning`]). A doubt always protects.
//!
//! A table with an ID column but no Status column (`| Spec | Completion Date | ... |`) names
//! SPECs without a status: such a SPEC is *untracked* unless another row gives one, and
//! untracked SPECs follow `retention.untracked_specs` (default: protected, and reported).

use crate::RetentionPolicy;
use crate::UntrackedSpecs;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("cannot read SPEC tracker {}: {source} (fix evidence.tracker_paths; nothing was archived, since without the tracker no SPEC can be known to be inactive)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One row that gave a SPEC a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusRow {
    /// The status as written, without `**`.
    pub status: String,
    pub tracker: PathBuf,
    /// 1-based line in the tracker.
    pub line: usize,
}

/// How the policy reads one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusClass {
    /// In `retention.active_statuses` (or starting with one of them).
    Active,
    /// In `retention.finished_statuses`.
    Finished,
    /// In neither list: protects the SPEC.
    Unknown,
}

impl StatusClass {
    fn label(self) -> &'static str {
        match self {
            StatusClass::Active => "active",
            StatusClass::Finished => "finished",
            StatusClass::Unknown => "unknown",
        }
    }
}

/// The policy's active and finished statuses, normalised once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusRules {
    active: Vec<String>,
    finished: Vec<String>,
}

impl StatusRules {
    pub fn new(active: &[String], finished: &[String]) -> Self {
        let norm = |list: &[String]| -> Vec<String> {
            list.iter()
                .map(|s| normalise(s))
                .filter(|s| !s.is_empty())
                .collect()
        };
        Self {
            active: norm(active),
            finished: norm(finished),
        }
    }

    /// `retention.active_statuses` and `retention.finished_statuses`.
    pub fn from_policy(retention: &RetentionPolicy) -> Self {
        Self::new(&retention.active_statuses, &retention.finished_statuses)
    }

    /// Whether no status can be finished (`finished_statuses = []`).
    pub fn finished_is_empty(&self) -> bool {
        self.finished.is_empty()
    }

    /// Active when it is (or starts with, at a word break) an active status; finished when
    /// it is exactly a finished one; unknown otherwise (an empty status too).
    pub fn classify(&self, status: &str) -> StatusClass {
        let Some(status) = without_strikethrough(status) else {
            return StatusClass::Unknown;
        };
        let status = normalise(&status);
        if status.is_empty() {
            return StatusClass::Unknown;
        }
        let active = self.active.iter().any(|a| {
            status == *a || (status.starts_with(a.as_str()) && status[a.len()..].starts_with(' '))
        });
        if active {
            StatusClass::Active
        } else if self.finished.contains(&status) {
            StatusClass::Finished
        } else {
            StatusClass::Unknown
        }
    }
}

/// A status row and how the policy reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassifiedRow {
    #[serde(flatten)]
    pub row: StatusRow,
    pub class: StatusClass,
}

/// Whether a SPEC may be archived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "activity", rename_all = "snake_case")]
pub enum Activity {
    /// Every row gives it an active status: never touched.
    Active { status: String },
    /// Every row gives it a finished status: archived by age.
    Finished { status: String },
    /// A row gives it an unknown status, or its rows disagree: never touched, reported.
    Unclear { rows: Vec<ClassifiedRow> },
    /// No row gives it a status: `retention.untracked_specs` decides.
    Untracked,
}

impl Activity {
    /// Whether its rows give different classes (`Done` and `WIP`).
    pub fn is_conflicting(&self) -> bool {
        match self {
            Activity::Unclear { rows } => rows.iter().any(|r| r.class != rows[0].class),
            _ => false,
        }
    }
}

/// Every SPEC the trackers list, with the statuses their rows give.
#[derive(Debug, Clone, Default)]
pub struct Trackers {
    statuses: BTreeMap<String, Vec<StatusRow>>,
    /// IDs listed in tables without a Status column.
    listed_without_status: BTreeMap<String, PathBuf>,
    /// Trackers read, and how many status rows each gave.
    pub sources: Vec<(PathBuf, usize)>,
}

impl Trackers {
    /// Reads every tracker; a missing or unreadable one is an error (a guess here could
    /// archive active work).
    pub fn load(paths: &[PathBuf]) -> Result<Self, TrackerError> {
        let mut trackers = Trackers::default();
        for path in paths {
            let text = std::fs::read(path).map_err(|source| TrackerError::Read {
                path: path.clone(),
                source,
            })?;
            trackers.add(path, &String::from_utf8_lossy(&text));
        }
        Ok(trackers)
    }

    /// Parses one tracker's text and adds its rows.
    pub fn add(&mut self, path: &Path, text: &str) {
        let mut rows = 0;
        for table in tables(text) {
            let Some(id_col) = id_column(&table.header) else {
                continue;
            };
            let status_col = status_column(&table.header);
            for (line, cells) in &table.rows {
                let Some(id) = cells.get(id_col).and_then(|c| clean_id(c)) else {
                    continue;
                };
                match status_col
                    .and_then(|c| cells.get(c))
                    .map(|c| clean_status(c))
                {
                    Some(status) if !status.is_empty() => {
                        rows += 1;
                        self.statuses.entry(id).or_default().push(StatusRow {
                            status,
                            tracker: path.to_path_buf(),
                            line: *line,
                        });
                    }
                    _ => {
                        self.listed_without_status
                            .entry(id)
                            .or_insert_with(|| path.to_path_buf());
                    }
                }
            }
        }
        self.sources.push((path.to_path_buf(), rows));
    }

    /// Every ID that has a status row (the names `layout::tracker_id` maps folders to).
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.statuses.keys().map(String::as_str)
    }

    /// The rows giving `id` a status.
    pub fn rows(&self, id: &str) -> &[StatusRow] {
        self.statuses.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether `id` may be archived, given the policy's status lists.
    pub fn activity(&self, id: &str, rules: &StatusRules) -> Activity {
        let rows = self.rows(id);
        if rows.is_empty() {
            return Activity::Untracked;
        }
        let classified: Vec<ClassifiedRow> = rows
            .iter()
            .map(|r| ClassifiedRow {
                row: r.clone(),
                class: rules.classify(&r.status),
            })
            .collect();
        let all = |class| classified.iter().all(|r| r.class == class);
        if all(StatusClass::Active) {
            Activity::Active {
                status: rows[0].status.clone(),
            }
        } else if all(StatusClass::Finished) {
            let mut statuses: Vec<&str> = Vec::new();
            for r in rows {
                if !statuses.contains(&r.status.as_str()) {
                    statuses.push(&r.status);
                }
            }
            Activity::Finished {
                status: statuses.join(", "),
            }
        } else {
            Activity::Unclear { rows: classified }
        }
    }

    /// The tracker that lists `id` without a status, if one does.
    pub fn listed_without_status(&self, id: &str) -> Option<&Path> {
        self.listed_without_status.get(id).map(PathBuf::as_path)
    }

    /// Why `id` is protected although no row says it is active: a status in neither list,
    /// rows that disagree, or no status at all with `untracked_specs = "protect"`. The
    /// warning names the SPEC, the status(es) and the tracker line(s). `None` when it is
    /// active, finished, or untracked and archived by policy.
    pub fn protection_warning(
        &self,
        id: &str,
        activity: &Activity,
        untracked: UntrackedSpecs,
    ) -> Option<String> {
        match activity {
            Activity::Active { .. } | Activity::Finished { .. } => None,
            Activity::Untracked => match untracked {
                UntrackedSpecs::Archive => None,
                UntrackedSpecs::Protect => Some(match self.listed_without_status(id) {
                    Some(path) => format!(
                        "{id} is protected: {} lists it without a status, and no tracker gives it one (retention.untracked_specs = \"protect\")",
                        path.display()
                    ),
                    None => format!(
                        "{id} is protected: it is in no tracker with a status (retention.untracked_specs = \"protect\")"
                    ),
                }),
            },
            Activity::Unclear { rows } => {
                let row_text = |r: &ClassifiedRow, class: bool| {
                    let mut t = format!(
                        "{:?} ({}:{}",
                        r.row.status,
                        r.row.tracker.display(),
                        r.row.line
                    );
                    if class {
                        t.push_str(", ");
                        t.push_str(r.class.label());
                    }
                    t.push(')');
                    t
                };
                if activity.is_conflicting() {
                    let listed: Vec<String> = rows.iter().map(|r| row_text(r, true)).collect();
                    Some(format!(
                        "{id} is protected: its tracker rows disagree: {}; it is archived only when every row gives a status of retention.finished_statuses",
                        listed.join(", ")
                    ))
                } else {
                    let listed: Vec<String> = rows.iter().map(|r| row_text(r, false)).collect();
                    Some(format!(
                        "{id} is protected: status {} is in neither retention.finished_statuses nor retention.active_statuses",
                        listed.join(", ")
                    ))
                }
            }
        }
    }
}

/// What one tracker file gives, read by the same parser as [`Trackers::load`]: for
/// `check` (is this really a tracker?) and `init` (which files are trackers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackerSummary {
    pub path: PathBuf,
    /// Tables with an ID column and a Status column (tables with an ID column only name
    /// SPECs without a status and are not counted).
    pub status_tables: usize,
    /// Rows that give a SPEC a status.
    pub status_rows: usize,
    /// SPECs given a status.
    pub specs: usize,
}

impl TrackerSummary {
    /// Reads and parses one tracker; the error is the one a cleanup would meet.
    pub fn read(path: &Path) -> Result<Self, TrackerError> {
        let text = std::fs::read(path).map_err(|source| TrackerError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::of(path, &String::from_utf8_lossy(&text)))
    }

    /// Parses one tracker's text.
    pub fn of(path: &Path, text: &str) -> Self {
        let status_tables = tables(text)
            .iter()
            .filter(|t| id_column(&t.header).is_some() && status_column(&t.header).is_some())
            .count();
        let mut trackers = Trackers::default();
        trackers.add(path, text);
        Self {
            path: path.to_path_buf(),
            status_tables,
            status_rows: trackers.sources.iter().map(|(_, rows)| rows).sum(),
            specs: trackers.statuses.len(),
        }
    }
}

/// The Status column, by header name.
fn status_column(header: &[String]) -> Option<usize> {
    header.iter().position(|h| normalise(h) == "STATUS")
}

/// `**IN PROGRESS**` -> `IN PROGRESS`; anything not a letter or digit is a space.
pub fn normalise(status: &str) -> String {
    let mut out = String::with_capacity(status.len());
    for c in status.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_uppercase());
        } else if !out.is_empty() && !out.ends_with(' ') {
            out.push(' ');
        }
    }
    out.trim_end().to_string()
}

/// `~~Done~~ In Progress` -> ` In Progress`: struck-through text is not the status.
/// `None` for an unclosed `~~` (`~~Done`): what is struck cannot be known.
fn without_strikethrough(status: &str) -> Option<String> {
    let mut out = String::with_capacity(status.len());
    let mut rest = status;
    while let Some(start) = rest.find("~~") {
        let len = rest[start + 2..].find("~~")?;
        out.push_str(&rest[..start]);
        out.push(' ');
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    Some(out)
}

struct Table {
    header: Vec<String>,
    /// (1-based line, cells)
    rows: Vec<(usize, Vec<String>)>,
}

/// Consecutive lines starting with `|`, with a separator row after the header.
fn tables(text: &str) -> Vec<Table> {
    let mut out = Vec::new();
    let mut current: Option<Table> = None;
    let mut saw_separator = false;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if !line.starts_with('|') {
            if let Some(t) = current.take() {
                if saw_separator {
                    out.push(t);
                }
            }
            saw_separator = false;
            continue;
        }
        let cells = split_cells(line);
        match current.as_mut() {
            None => {
                current = Some(Table {
                    header: cells,
                    rows: Vec::new(),
                });
                saw_separator = false;
            }
            Some(_) if !saw_separator => {
                if cells.iter().all(|c| is_separator_cell(c)) {
                    saw_separator = true;
                } else {
                    // Not a table after all; start again from this line.
                    current = Some(Table {
                        header: cells,
                        rows: Vec::new(),
                    });
                }
            }
            Some(t) => t.rows.push((index + 1, cells)),
        }
    }
    if let Some(t) = current {
        if saw_separator {
            out.push(t);
        }
    }
    out
}

fn is_separator_cell(cell: &str) -> bool {
    let c = cell.trim();
    !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':' | ' '))
}

/// Splits a table row on `|`, except escaped `\|` and pipes inside a code span (upstream
/// writes `` `grep ... | wc -l` `` unescaped in a notes cell).
fn split_cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut in_code = false;
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cell.push('|');
                chars.next();
            }
            '`' => {
                in_code = !in_code;
                cell.push(c);
            }
            '|' if !in_code => cells.push(std::mem::take(&mut cell).trim().to_string()),
            _ => cell.push(c),
        }
    }
    cells.push(cell.trim().to_string());
    cells
}

/// The column holding SPEC IDs, by header name.
fn id_column(header: &[String]) -> Option<usize> {
    let names: Vec<String> = header.iter().map(|h| normalise(h)).collect();
    for wanted in ["TASK ID", "SPEC ID", "SPEC", "ID", "ITEM"] {
        if let Some(i) = names.iter().position(|n| n == wanted) {
            return Some(i);
        }
    }
    None
}

/// `**SPEC-KIT-904**`, `[SPEC-KIT-900](docs/..)`, `` `SPEC-KIT-900` `` -> `SPEC-KIT-900`.
fn clean_id(cell: &str) -> Option<String> {
    let mut text = cell.trim();
    if let Some(rest) = text.strip_prefix('[') {
        text = rest.split(']').next().unwrap_or(rest);
    }
    let text = text.trim_matches(|c: char| c == '*' || c == '`' || c == '_' || c.is_whitespace());
    let id = text.split_whitespace().next()?;
    let id = id.trim_matches(|c: char| !(c.is_ascii_alphanumeric()));
    if id.is_empty() || id.chars().all(|c| c == '-') {
        return None;
    }
    Some(id.to_string())
}

/// `**Done**` -> `Done`; `**Done** (but reopened)` -> `Done (but reopened)`: bold marks go,
/// every word stays (what follows the bold can change what the status means).
fn clean_status(cell: &str) -> String {
    let text = cell.trim().replace("**", "");
    text.trim_matches(|c: char| c == '*' || c == '_' || c == '`' || c.is_whitespace())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> StatusRules {
        StatusRules::from_policy(&RetentionPolicy::default())
    }

    #[test]
    fn eleven_column_table_with_bold_statuses() {
        let mut t = Trackers::default();
        t.add(
            Path::new("SPEC.md"),
            "# T\n\n| Order | Task ID | Title | Status | Owners | PRD | Branch | PR | Last Validation | Evidence | Notes |\n|---|---|---|---|---|---|---|---|---|---|---|\n\
             | 1 | SPEC-KIT-900 | E2E | **IN PROGRESS** | Code | x | main | | 2025 | e | n |\n\
             | 2 | SPEC-KIT-070 | Cost | **Done** | Code | x | main | | 2025 | e | uses `a | b` in code |\n\
             | 3 | SPEC-KIT-901 | MCP | **Backlog** | Code | x | | | 2025 | e | n |\n",
        );
        assert!(matches!(
            t.activity("SPEC-KIT-900", &rules()),
            Activity::Active { .. }
        ));
        assert_eq!(
            t.activity("SPEC-KIT-070", &rules()),
            Activity::Finished {
                status: "Done".into()
            }
        );
        assert!(matches!(
            t.activity("SPEC-KIT-901", &rules()),
            Activity::Active { .. }
        ));
        assert_eq!(t.activity("SPEC-KIT-999", &rules()), Activity::Untracked);
    }

    #[test]
    fn four_column_table_and_status_less_tables() {
        let mut t = Trackers::default();
        t.add(
            Path::new("SPEC.md"),
            "| Spec        | Status      | Owner | Next Action |\n| ----------- | ----------- | ----- | ----------- |\n\
             | SPEC-PM-005 | In Progress | Lead  | Implement   |\n\
             | SPEC-PM-002 | Complete    | Lead  | -           |\n\
             | SPEC-PM-001 | Deferred    | Lead  | -           |\n\n\
             | Spec | Completion Date | Key Deliverables |\n| --- | --- | --- |\n| SPEC-KIT-983 | 2026-02-01 | modal |\n",
        );
        assert!(matches!(
            t.activity("SPEC-PM-005", &rules()),
            Activity::Active { .. }
        ));
        assert!(matches!(
            t.activity("SPEC-PM-002", &rules()),
            Activity::Finished { .. }
        ));
        // In neither list: protected, and the warning names SPEC, status and line.
        let deferred = t.activity("SPEC-PM-001", &rules());
        assert!(matches!(deferred, Activity::Unclear { .. }));
        let w = t
            .protection_warning("SPEC-PM-001", &deferred, UntrackedSpecs::Protect)
            .unwrap();
        assert!(
            w.contains("SPEC-PM-001") && w.contains("\"Deferred\"") && w.contains("SPEC.md:5"),
            "{w}"
        );
        assert_eq!(t.activity("SPEC-KIT-983", &rules()), Activity::Untracked);
        let w = t
            .protection_warning(
                "SPEC-KIT-983",
                &Activity::Untracked,
                UntrackedSpecs::Protect,
            )
            .unwrap();
        assert!(
            w.contains("SPEC-KIT-983") && w.contains("without a status"),
            "{w}"
        );
        assert_eq!(
            t.protection_warning(
                "SPEC-KIT-983",
                &Activity::Untracked,
                UntrackedSpecs::Archive
            ),
            None
        );
    }

    #[test]
    fn only_whole_finished_statuses_finish_and_rows_must_agree() {
        let r = rules();
        for finished in [
            "Done",
            "**Done**",
            "DONE",
            "done",
            "Done ✅",
            "✅ Done",
            "**Done** ✅",
            "done.",
            "Completed",
            "complete",
            "Removed",
            "REJECTED",
            "Superseded",
            "archived",
        ] {
            assert_eq!(r.classify(finished), StatusClass::Finished, "{finished}");
        }
        for unknown in [
            "WIP",
            "Draft",
            "Todo",
            "On Hold",
            "Paused",
            "In Progres",
            "InProgress",
            "Done (but reopened)",
            "Not Done",
            "Done?? no",
            "~~Done~~",
            "",
            "✅",
            "Deferred",
            "~~Done",
        ] {
            assert_eq!(r.classify(unknown), StatusClass::Unknown, "{unknown:?}");
        }
        for active in [
            "In Progress",
            "**IN PROGRESS**",
            "in-progress",
            "~~Done~~ In Progress",
            "Blocked (waiting on infra)",
            "In Review 🔍",
            "backlog",
        ] {
            assert_eq!(r.classify(active), StatusClass::Active, "{active}");
        }
        // "Backlogged" is not "Backlog" followed by a word break.
        assert_eq!(r.classify("Backlogged"), StatusClass::Unknown);
        // Nothing is finished when the list is empty.
        let none = StatusRules::new(&RetentionPolicy::default().active_statuses, &[]);
        assert!(none.finished_is_empty());
        assert_eq!(none.classify("Done"), StatusClass::Unknown);

        let mut t = Trackers::default();
        t.add(
            Path::new("a.md"),
            "| ID | Status |\n|--|--|\n| X-1 | Done |\n| X-1 | WIP |\n| X-2 | Done |\n| X-2 | blocked (waiting) |\n| X-3 | Done |\n| X-3 | **DONE** |\n",
        );
        for (id, lines) in [("X-1", ["a.md:3", "a.md:4"]), ("X-2", ["a.md:5", "a.md:6"])] {
            let a = t.activity(id, &r);
            assert!(a.is_conflicting(), "{id}: {a:?}");
            let w = t
                .protection_warning(id, &a, UntrackedSpecs::Protect)
                .unwrap();
            assert!(
                w.contains("disagree") && lines.iter().all(|l| w.contains(l)),
                "{w}"
            );
        }
        assert_eq!(
            t.activity("X-3", &r),
            Activity::Finished {
                status: "Done, DONE".into()
            }
        );
    }

    #[test]
    fn a_summary_counts_status_tables_rows_and_specs() {
        let s = TrackerSummary::of(
            Path::new("SPEC.md"),
            "# T\n\n| Spec | Status |\n|--|--|\n| A-1 | Done |\n| A-2 | WIP |\n| A-1 | Done |\n\n| Spec | Completion Date |\n|--|--|\n| A-3 | 2025 |\n",
        );
        assert_eq!((s.status_tables, s.status_rows, s.specs), (1, 3, 2));
        // Prose, a table without an ID column, a header without its separator row.
        let none = TrackerSummary::of(
            Path::new("README.md"),
            "# Notes\n| Name | Status |\n|--|--|\n| x | y |\n\n| Spec | Status |\n| A-1 | Done |\n",
        );
        assert_eq!(
            (none.status_tables, none.status_rows, none.specs),
            (0, 0, 0)
        );
        let header_only = TrackerSummary::of(Path::new("SPEC.md"), "| Spec | Status |\n|--|--|\n");
        assert_eq!((header_only.status_tables, header_only.status_rows), (1, 0));
    }

    #[test]
    fn missing_tracker_is_an_error_naming_it() {
        let err = Trackers::load(&[PathBuf::from("/nonexistent/SPEC.md")]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/SPEC.md"));
    }
}
