//! Rendering one SPEC's digest as Markdown. The output depends only on the evidence (no
//! clock), so an unchanged SPEC gives a byte-identical file and is not rewritten.

use std::fmt::Write;

use crate::database::{DatabaseRuns, CONSENSUS_RUNS};
use crate::scan::{stages, SpecEvidence};

/// Renders the digest of `spec`, listing at most `max_items` agreements and conflicts per
/// stage, with what the host's `consensus_runs` table holds for it (`database`).
pub fn render(spec: &SpecEvidence, max_items: usize, database: &DatabaseRuns) -> String {
    let mut md = String::new();
    let stages = stages(spec);
    let templates: usize = stages.iter().map(|s| s.templates).sum();
    let _ = writeln!(md, "# Consensus digest: {}\n", spec.spec_id);
    let _ = writeln!(
        md,
        "From `{}`: {} synthesis files ({} unrendered templates), {} verdicts. \
         Written by the speckit-hygiene `speckit-digest` plugin; rewritten when the evidence changes.\n",
        spec.dir.display(),
        spec.syntheses.len(),
        templates,
        spec.verdicts.len(),
    );
    database_line(&mut md, database);
    if stages.is_empty() {
        md.push_str("No consensus runs recorded.\n");
    } else {
        md.push_str("| Stage | Latest run | Status | Runs | Agents | Degraded agents |\n");
        md.push_str("|---|---|---|---|---|---|\n");
        for s in &stages {
            let latest = s.latest;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                cell(&s.stage),
                cell(latest.and_then(|l| l.timestamp.as_deref()).unwrap_or("-")),
                cell(latest.map(|l| l.status.as_str()).unwrap_or("no run")),
                s.runs,
                latest
                    .and_then(|l| l.agents)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                cell(
                    &latest
                        .map(|l| l.degraded_agents.join(", "))
                        .filter(|d| !d.is_empty())
                        .unwrap_or_else(|| "-".into())
                ),
            );
        }
    }
    for s in &stages {
        let _ = writeln!(md, "\n## {}\n", s.stage);
        match s.latest {
            Some(l) => {
                let _ = write!(
                    md,
                    "Latest run {}: **{}**",
                    l.timestamp.as_deref().unwrap_or("(undated)"),
                    l.status
                );
                if let Some(run_id) = &l.run_id {
                    let _ = write!(md, ", run `{run_id}`");
                }
                if let Some(path) = &l.output_path {
                    let _ = write!(md, ", full output `{path}`");
                }
                let _ = writeln!(md, " (`{}`).", l.file);
                list(&mut md, "Agreements", &l.agreements, max_items);
                list(&mut md, "Conflicts", &l.conflicts, max_items);
            }
            None if s.templates > 0 => {
                let _ = writeln!(
                    md,
                    "Only unrendered templates ({}): no run data.",
                    s.templates
                );
            }
            None => md.push_str("No synthesis.\n"),
        }
        if let Some(v) = s.verdict {
            let _ = writeln!(
                md,
                "\nVerdict{}: {} proposals{}{} (`{}`).",
                v.exported_at
                    .as_deref()
                    .map(|t| format!(" exported {t}"))
                    .unwrap_or_default(),
                v.agents.len(),
                if v.agents.is_empty() {
                    String::new()
                } else {
                    format!(" from {}", v.agents.join(", "))
                },
                if v.empty_proposals > 0 {
                    format!(", {} empty", v.empty_proposals)
                } else {
                    String::new()
                },
                v.file,
            );
        }
    }
    if !spec.unreadable.is_empty() || !spec.skipped_links.is_empty() {
        md.push_str("\n## Files not read\n\n");
        for (file, cause) in &spec.unreadable {
            let _ = writeln!(md, "- `{file}`: {}", one_line(cause));
        }
        for file in &spec.skipped_links {
            let _ = writeln!(md, "- `{file}`: a symbolic link (never followed)");
        }
    }
    md
}

/// `Database: ...`, one paragraph: the SPEC's row count in `consensus_runs` and its newest
/// row. No clock in it either: it changes only when the table does.
fn database_line(md: &mut String, database: &DatabaseRuns) {
    match database {
        DatabaseRuns::NoTable => {
            let _ = writeln!(md, "Database: no `{CONSENSUS_RUNS}` table.\n");
        }
        DatabaseRuns::Rows { count, latest } => {
            let _ = write!(
                md,
                "Database: {count} `{CONSENSUS_RUNS}` row{}",
                if *count == 1 { "" } else { "s" }
            );
            if let Some(l) = latest {
                let time = l
                    .time
                    .clone()
                    .unwrap_or_else(|| format!("run_timestamp {}", l.timestamp_ms));
                let _ = write!(
                    md,
                    "; latest: {} at {time} (consensus {}{})",
                    one_line(&l.stage),
                    if l.consensus_ok { "ok" } else { "not ok" },
                    if l.degraded { ", degraded" } else { "" }
                );
            }
            md.push_str(".\n\n");
        }
    }
}

fn list(md: &mut String, title: &str, items: &[String], max_items: usize) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(md, "\n{title}:\n");
    for item in items.iter().take(max_items) {
        let _ = writeln!(md, "- {}", one_line(item));
    }
    if items.len() > max_items {
        let _ = writeln!(md, "- ... and {} more", items.len() - max_items);
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cell(s: &str) -> String {
    one_line(s).replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::parse_synthesis;
    use serde_json::json;

    #[test]
    fn renders_a_table_row_per_stage_and_caps_long_lists() {
        let spec = SpecEvidence {
            spec_id: "SPEC-X".into(),
            syntheses: vec![parse_synthesis(
                "spec-plan_synthesis.json",
                &json!({"stage": "spec-plan", "status": "ok", "timestamp": "2025-10-12T14:44:00Z",
                        "consensus": {"agreements": ["a | b", "two\nlines", "c"], "conflicts": []}}),
            )],
            unreadable: vec![("bad_synthesis.json".into(), "not JSON: eof".into())],
            ..SpecEvidence::default()
        };
        let md = render(
            &spec,
            2,
            &DatabaseRuns::Rows {
                count: 2,
                latest: Some(crate::database::LatestRun {
                    stage: "spec-plan".into(),
                    timestamp_ms: 1_760_280_240_000,
                    time: Some("2025-10-12T14:44:00Z".into()),
                    consensus_ok: false,
                    degraded: true,
                }),
            },
        );
        assert!(md.starts_with("# Consensus digest: SPEC-X\n"), "{md}");
        assert!(
            md.contains("| plan | 2025-10-12T14:44:00Z | ok | 1 | - | - |"),
            "{md}"
        );
        assert!(
            md.contains("- a | b\n- two lines\n- ... and 1 more\n"),
            "{md}"
        );
        assert!(md.contains("- `bad_synthesis.json`: not JSON: eof"), "{md}");
        assert!(!md.contains("Conflicts"), "{md}");
        assert!(
            md.contains(
                "Database: 2 `consensus_runs` rows; latest: spec-plan at 2025-10-12T14:44:00Z (consensus not ok, degraded).\n"
            ),
            "{md}"
        );
        let none = render(&spec, 2, &DatabaseRuns::NoTable);
        assert!(
            none.contains("Database: no `consensus_runs` table."),
            "{none}"
        );
        let empty = render(
            &spec,
            2,
            &DatabaseRuns::Rows {
                count: 0,
                latest: None,
            },
        );
        assert!(
            empty.contains("Database: 0 `consensus_runs` rows.\n"),
            "{empty}"
        );
    }
}
