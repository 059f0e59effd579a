//! SPEC trackers in upstream's two table shapes.

use std::path::Path;

/// Writes a 4-column tracker (`| Spec | Status | Owner | Next Action |`).
pub fn write_four_column(path: &Path, rows: &[(&str, &str)]) -> std::io::Result<()> {
    let mut text = String::from("# SPEC.md - Spec-Kit Task Tracking\n\n## Active\n\n| Spec | Status | Owner | Next Action |\n| ---- | ------ | ----- | ----------- |\n");
    for (spec, status) in rows {
        text.push_str(&format!("| {spec} | {status} | agent | review |\n"));
    }
    std::fs::write(path, text)
}

/// Writes an 11-column tracker (`| Order | Task ID | Title | Status | ... |`) with bold
/// statuses as upstream writes them (`**IN PROGRESS**`, `**Done**`).
pub fn write_eleven_column(path: &Path, rows: &[(&str, &str)]) -> std::io::Result<()> {
    let mut text = String::from("# Tasks\n\n| Order | Task ID | Title | Status | Owners | PRD | Branch | PR | Last Validation | Evidence | Notes |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (i, (spec, status)) in rows.iter().enumerate() {
        text.push_str(&format!(
            "| {} | {spec} | Task {spec} | **{status}** | code | docs/{spec}/PRD.md | main | | 2025-10-01 | docs/evidence | |\n",
            i + 1
        ));
    }
    std::fs::write(path, text)
}
