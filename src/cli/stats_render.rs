//! How `stats` looks: the table for people (one bar per SPEC against its limit) and the
//! Prometheus text format for node_exporter's textfile collector. Both render to a
//! `String`; the caller prints it.

use std::fmt::Write as _;

use speckit_retention::layout::SkipReason;
use speckit_retention::limits::{files, human_bytes, human_mib, Verdict};
use speckit_retention::stats::{printable_path, SpecStats, StatsReport, Usage};

/// Whether to colour the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Plain,
    /// ANSI escapes: only for a terminal.
    Ansi,
}

impl Colour {
    fn paint(self, verdict: Verdict, text: &str) -> String {
        let code = match verdict {
            Verdict::Ok => "32",
            Verdict::Warn => "33",
            Verdict::Block => "1;31",
        };
        match self {
            Colour::Plain => text.to_string(),
            Colour::Ansi => format!("\x1b[{code}m{text}\x1b[0m"),
        }
    }
}

const BAR_WIDTH: usize = 20;
/// Skipped entries listed in the table; `--json` lists all of them.
const SKIPS_SHOWN: usize = 20;

/// `[########|------]`: use against the limit, `|` where the warning size is.
fn bar(fraction: f64, warn_fraction: f64) -> String {
    let filled = ((fraction * BAR_WIDTH as f64).round() as usize).min(BAR_WIDTH);
    let warn_at = ((warn_fraction * BAR_WIDTH as f64).round() as usize).min(BAR_WIDTH);
    let mut out = String::with_capacity(BAR_WIDTH + 3);
    out.push('[');
    for i in 0..BAR_WIDTH {
        // The warning mark replaces the cell where the warning size falls, unless the
        // bar already covers it (then the fill shows it was passed).
        if i == warn_at && i >= filled && warn_at < BAR_WIDTH {
            out.push('|');
        } else if i < filled {
            out.push('#');
        } else {
            out.push('-');
        }
    }
    out.push(']');
    out
}

fn percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    if p > 0.0 && p < 10.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

fn usage_cell(u: Usage) -> String {
    format!("{} / {}", human_bytes(u.bytes), u.files)
}

/// The human table.
pub fn table(report: &StatsReport, colour: Colour) -> String {
    let mut out = String::new();
    let l = &report.limits;
    let _ = writeln!(out, "Evidence root: {}", printable_path(&report.root));
    let _ = writeln!(
        out,
        "Per SPEC (commands + consensus): warn above {}, block above {} (1 MiB = 1,048,576 bytes)",
        human_mib(l.warn_mb),
        human_mib(l.limit_mb)
    );
    let _ = writeln!(out);

    let headers = [
        "SPEC",
        "COMMANDS (size / files)",
        "CONSENSUS",
        "TOTAL",
        "USE OF LIMIT",
    ];
    let rows: Vec<[String; 5]> = report
        .specs
        .iter()
        .map(|s| {
            [
                s.spec.clone(),
                usage_cell(s.commands),
                usage_cell(s.consensus),
                human_bytes(s.total.bytes),
                format!(
                    "{} {:>5}",
                    bar(
                        s.limit_fraction,
                        l.warn_bytes as f64 / l.limit_bytes.max(1) as f64
                    ),
                    percent(s.limit_fraction)
                ),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5], tail: &str| -> String {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:<w4$}  {tail}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        )
    };
    if rows.is_empty() {
        let _ = writeln!(out, "No SPEC evidence under this root.");
    } else {
        let _ = writeln!(out, "{}", line(headers, "VERDICT").trim_end());
        for (row, spec) in rows.iter().zip(&report.specs) {
            let cells = [
                row[0].as_str(),
                row[1].as_str(),
                row[2].as_str(),
                row[3].as_str(),
                row[4].as_str(),
            ];
            let mut verdict = spec.verdict.as_str().to_string();
            if spec.unreadable_entries > 0 {
                verdict.push_str(&format!(
                    " (at least; {} unreadable)",
                    spec.unreadable_entries
                ));
            }
            let text = line(cells, &verdict);
            let _ = writeln!(out, "{}", colour.paint(spec.verdict, &text));
            if let Some(folders) = other_folders(spec) {
                let _ = writeln!(out, "  folders: {folders}");
            }
        }
    }
    let _ = writeln!(out);

    match (report.root_total, report.non_spec) {
        (Some(root), Some(other)) => {
            let state = if root.bytes > l.root_warn_bytes {
                colour.paint(Verdict::Warn, "over")
            } else {
                "within".to_string()
            };
            let _ = writeln!(
                out,
                "Root total: {} ({} bytes) in {}, {state} its {} soft limit \
                 (other entries: {} in {})",
                human_bytes(root.bytes),
                root.bytes,
                files(root.files),
                human_mib(l.root_warn_mb),
                human_bytes(other.bytes),
                files(other.files)
            );
        }
        _ => {
            let _ = writeln!(out, "Root total: not measured (one SPEC only)");
        }
    }
    let c = report.counts;
    let _ = writeln!(
        out,
        "SPECs: {} ok, {} warn, {} block",
        c.ok, c.warn, c.block
    );
    if !report.complete {
        let _ = writeln!(
            out,
            "{}",
            colour.paint(
                Verdict::Warn,
                "Some entries could not be read: totals are lower bounds."
            )
        );
    }

    if !report.warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings:");
        for w in &report.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    if !report.skipped.is_empty() {
        let _ = writeln!(out, "\nNot counted:");
        for s in report.skipped.iter().take(SKIPS_SHOWN) {
            let _ = writeln!(
                out,
                "  {}  ({})",
                printable_path(&s.path),
                skip_reason(&s.reason)
            );
        }
        if report.skipped.len() > SKIPS_SHOWN {
            let _ = writeln!(
                out,
                "  ... and {} more (`--json` lists every one)",
                report.skipped.len() - SKIPS_SHOWN
            );
        }
    }
    out
}

/// The folders of a SPEC when they are not just the SPEC-ID itself.
fn other_folders(spec: &SpecStats) -> Option<String> {
    let only_itself = spec.folders.len() == 1 && spec.folders[0].folder == spec.spec;
    (!spec.folders.is_empty() && !only_itself).then(|| {
        spec.folders
            .iter()
            .map(|f| {
                format!(
                    "{} ({})",
                    f.folder,
                    human_bytes(f.commands.bytes + f.consensus.bytes)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    })
}

fn skip_reason(reason: &SkipReason) -> String {
    match reason {
        SkipReason::Symlink => "symbolic link, never followed".into(),
        SkipReason::SpecialFile => "socket, FIFO or device".into(),
        SkipReason::InvalidSpecFolder { detail } => {
            format!("not a valid SPEC folder, contents not counted: {detail}")
        }
        SkipReason::Unreadable { detail } => format!("could not be read: {detail}"),
    }
}

/// A label value in the text format: backslash, double quote and line feed escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn metric_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// One sample line: `name{root="...",<labels>} value`. Every sample carries the evidence
/// root, so two repositories measured on one node are two series, not one.
struct Samples<'r> {
    out: String,
    root: &'r str,
}

impl Samples<'_> {
    fn header(&mut self, name: &str, help: &str) {
        metric_header(&mut self.out, name, help);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{name}{{root=\"{}\"", self.root);
        for (key, val) in labels {
            let _ = write!(self.out, ",{key}=\"{}\"", label(val));
        }
        let _ = writeln!(self.out, "}} {value}");
    }
}

/// The same figures in the Prometheus text exposition format (every metric a gauge; label
/// `root` on every sample, `spec` and `kind` for per-SPEC figures).
pub fn prometheus(report: &StatsReport) -> String {
    let root = label(&report.root.display().to_string());
    let mut m = Samples {
        out: String::new(),
        root: &root,
    };
    for (name, help, value) in [
        (
            "speckit_evidence_bytes",
            "Apparent size of a SPEC's evidence files in bytes, by half (commands, consensus).",
            (|u: Usage| u.bytes) as fn(Usage) -> u64,
        ),
        (
            "speckit_evidence_files",
            "Regular files of a SPEC's evidence, by half (commands, consensus).",
            |u: Usage| u.files,
        ),
    ] {
        m.header(name, help);
        for s in &report.specs {
            for (kind, usage) in [("commands", s.commands), ("consensus", s.consensus)] {
                m.sample(name, &[("spec", &s.spec), ("kind", kind)], value(usage));
            }
        }
    }
    m.header(
        "speckit_evidence_verdict",
        "A SPEC's evidence against its limits: 0 ok, 1 above the warning size, 2 above the limit.",
    );
    for s in &report.specs {
        let code = match s.verdict {
            Verdict::Ok => 0,
            Verdict::Warn => 1,
            Verdict::Block => 2,
        };
        m.sample("speckit_evidence_verdict", &[("spec", &s.spec)], code);
    }
    m.header(
        "speckit_evidence_unreadable_entries",
        "Entries of a SPEC's evidence that could not be read (its size is then a lower bound).",
    );
    for s in &report.specs {
        m.sample(
            "speckit_evidence_unreadable_entries",
            &[("spec", &s.spec)],
            s.unreadable_entries,
        );
    }
    m.header(
        "speckit_evidence_limit_bytes",
        "Per-SPEC sizes from the policy in bytes: level warn (warn_mb) and block (limit_mb).",
    );
    let l = &report.limits;
    m.sample(
        "speckit_evidence_limit_bytes",
        &[("level", "warn")],
        l.warn_bytes,
    );
    m.sample(
        "speckit_evidence_limit_bytes",
        &[("level", "block")],
        l.limit_bytes,
    );
    if let (Some(root), Some(other)) = (report.root_total, report.non_spec) {
        for (name, help, value) in [
            (
                "speckit_evidence_root_bytes",
                "Apparent size of every regular file under the evidence root, in bytes.",
                root.bytes,
            ),
            (
                "speckit_evidence_root_files",
                "Regular files under the evidence root.",
                root.files,
            ),
            (
                "speckit_evidence_non_spec_bytes",
                "Bytes under the evidence root that belong to no SPEC.",
                other.bytes,
            ),
            (
                "speckit_evidence_root_warn_bytes",
                "The policy's soft limit for the whole root (root_warn_mb), in bytes.",
                l.root_warn_bytes,
            ),
            (
                "speckit_evidence_large_files",
                "Files above the policy's single-file soft limit (file_warn_mb).",
                report.large_files.len() as u64,
            ),
        ] {
            m.header(name, help);
            m.sample(name, &[], value);
        }
    }
    m.header(
        "speckit_evidence_skipped_entries",
        "Entries not counted, by reason (symlinks are never followed).",
    );
    let mut counts = [0u64; 4];
    for s in &report.skipped {
        counts[match s.reason {
            SkipReason::Symlink => 0,
            SkipReason::SpecialFile => 1,
            SkipReason::InvalidSpecFolder { .. } => 2,
            SkipReason::Unreadable { .. } => 3,
        }] += 1;
    }
    for (reason, n) in [
        "symlink",
        "special_file",
        "invalid_spec_folder",
        "unreadable",
    ]
    .iter()
    .zip(counts)
    {
        m.sample("speckit_evidence_skipped_entries", &[("reason", reason)], n);
    }
    m.header(
        "speckit_evidence_complete",
        "1 when every entry could be read, 0 when totals are lower bounds.",
    );
    m.sample("speckit_evidence_complete", &[], u8::from(report.complete));
    m.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_marks_the_warning_size_and_fills_to_use() {
        assert_eq!(bar(0.0, 0.8), "[----------------|---]");
        assert_eq!(bar(0.5, 0.8), "[##########------|---]");
        assert_eq!(bar(0.9, 0.8), "[##################--]");
        assert_eq!(bar(1.7, 0.8), "[####################]");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
