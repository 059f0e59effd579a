//! SPEC trackers: which SPECs are active, read from the Markdown tables of `SPEC.md`.
//!
//! Both real shapes are read by their header row, not by position:
//! `| Order | Task ID | Title | Status | ... |` (11 columns, `**IN PROGRESS**`, `**Done**`,
//! rows whose notes hold an unescaped `|` inside a code span) and
//! `| Spec | Status | Owner | Next Action |` (4 columns). A table counts when its header has
//! an ID column (`Task ID`, `Spec`, `Spec ID`, `ID` or `Item`) and a `Status` column.
//!
//! Statuses are compared normalised: case, `**`, punctuation and spacing do not matter
//! (`**IN PROGRESS**` = `In Progress` = `in-progress`), and a status that *starts with* an
//! active one (`Blocked (waiting on infra)`) is active too. When a SPEC appears in several
//! rows or trackers, one active row makes it active: a doubt always protects.
//!
//! A table with an ID column but no Status column (`| Spec | Completion Date | ... |`) names
//! SPECs without a status: such a SPEC is *untracked* unless another row gives one, and
//! untracked SPECs follow `retention.untracked_specs` (default: protected).

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

/// Whether a SPEC may be archived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "activity", rename_all = "snake_case")]
pub enum Activity {
    /// A row gives it an active status: never touched.
    Active { status: String },
    /// Every row gives it a finished status: archived by age.
    Inactive { status: String },
    /// No row gives it a status: `retention.untracked_specs` decides.
    Untracked,
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
            let status_col = table.header.iter().position(|h| normalise(h) == "STATUS");
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

    /// Whether `id` is active, given the policy's active statuses.
    pub fn activity(&self, id: &str, active_statuses: &[String]) -> Activity {
        let rows = self.rows(id);
        if rows.is_empty() {
            return Activity::Untracked;
        }
        let active: Vec<String> = active_statuses.iter().map(|s| normalise(s)).collect();
        if let Some(row) = rows.iter().find(|r| is_active(&r.status, &active)) {
            return Activity::Active {
                status: row.status.clone(),
            };
        }
        Activity::Inactive {
            status: rows
                .iter()
                .map(|r| r.status.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
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

fn is_active(status: &str, active: &[String]) -> bool {
    let status = normalise(status);
    active.iter().any(|a| {
        !a.is_empty()
            && (status == *a
                || (status.starts_with(a.as_str()) && status[a.len()..].starts_with(' ')))
    })
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

/// `**Done**` -> `Done`; `**Manual Consensus** (3/3)` -> `Manual Consensus`.
fn clean_status(cell: &str) -> String {
    let text = cell.trim();
    if let Some(rest) = text.strip_prefix("**") {
        if let Some(end) = rest.find("**") {
            return rest[..end].trim().to_string();
        }
    }
    text.trim_matches(|c: char| c == '*' || c == '_' || c == '`' || c.is_whitespace())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active() -> Vec<String> {
        ["Backlog", "In Progress", "In Review", "Blocked"]
            .map(String::from)
            .to_vec()
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
            t.activity("SPEC-KIT-900", &active()),
            Activity::Active { .. }
        ));
        assert_eq!(
            t.activity("SPEC-KIT-070", &active()),
            Activity::Inactive {
                status: "Done".into()
            }
        );
        assert!(matches!(
            t.activity("SPEC-KIT-901", &active()),
            Activity::Active { .. }
        ));
        assert_eq!(t.activity("SPEC-KIT-999", &active()), Activity::Untracked);
    }

    #[test]
    fn four_column_table_and_status_less_tables() {
        let mut t = Trackers::default();
        t.add(
            Path::new("SPEC.md"),
            "| Spec        | Status      | Owner | Next Action |\n| ----------- | ----------- | ----- | ----------- |\n\
             | SPEC-PM-005 | In Progress | Lead  | Implement   |\n\
             | SPEC-PM-001 | Deferred    | Lead  | -           |\n\n\
             | Spec | Completion Date | Key Deliverables |\n| --- | --- | --- |\n| SPEC-KIT-983 | 2026-02-01 | modal |\n",
        );
        assert!(matches!(
            t.activity("SPEC-PM-005", &active()),
            Activity::Active { .. }
        ));
        assert!(matches!(
            t.activity("SPEC-PM-001", &active()),
            Activity::Inactive { .. }
        ));
        assert_eq!(t.activity("SPEC-KIT-983", &active()), Activity::Untracked);
    }

    #[test]
    fn any_active_row_wins_and_prefixes_count() {
        let mut t = Trackers::default();
        t.add(
            Path::new("a.md"),
            "| ID | Status |\n|--|--|\n| X-1 | Done |\n| X-1 | blocked (waiting) |\n| X-2 | Backlogged |\n",
        );
        assert!(matches!(
            t.activity("X-1", &active()),
            Activity::Active { .. }
        ));
        // "Backlogged" is not "Backlog" followed by a word break.
        assert!(matches!(
            t.activity("X-2", &active()),
            Activity::Inactive { .. }
        ));
    }

    #[test]
    fn missing_tracker_is_an_error_naming_it() {
        let err = Trackers::load(&[PathBuf::from("/nonexistent/SPEC.md")]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/SPEC.md"));
    }
}
