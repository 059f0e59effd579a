//! The vacuum report for people: a one-line headline (the job's summary, also what
//! `demo` and `jobs` show) and a few aligned lines of figures for `speckit-hygiene vacuum`.
//! Returns strings; only the CLI prints them.

use std::fmt::Write as _;

use crate::report::{Action, Outcome, VacuumReport};

impl VacuumReport {
    /// One line for people (the job's summary).
    pub fn headline(&self) -> String {
        let db = self.database.display();
        match self.outcome {
            Outcome::DryRun => match self.action {
                Action::Migrate => format!(
                    "dry run, nothing changed: {db} would be switched from auto_vacuum NONE to INCREMENTAL by one full VACUUM, freeing about {} pages ({})",
                    thousands(self.would_free_pages.unwrap_or(0)),
                    human_bytes(self.would_free_bytes.unwrap_or(0))
                ),
                Action::Incremental => format!(
                    "dry run, nothing changed: an incremental vacuum of {db} would free {} pages ({}) in chunks of {}",
                    thousands(self.would_free_pages.unwrap_or(0)),
                    human_bytes(self.would_free_bytes.unwrap_or(0)),
                    thousands(self.chunk_pages as i64)
                ),
                Action::None => format!(
                    "dry run, nothing changed: nothing to vacuum in {db}: {}",
                    self.reason.as_deref().unwrap_or("")
                ),
            },
            Outcome::CheckFailed => format!(
                "{db} failed PRAGMA {} and was not vacuumed",
                self.check.pragma
            ),
            Outcome::Failed => format!(
                "vacuum of {db} stopped after freeing {} pages: {} -> {}",
                thousands(self.pages_freed),
                human_bytes(self.bytes_before),
                human_bytes(self.bytes_after)
            ),
            Outcome::Incomplete => format!(
                "vacuum of {db} paused after {}: {} -> {}, {} pages freed; the WAL could not be checkpointed (see the warning)",
                plural(self.chunks as i64, "chunk"),
                human_bytes(self.bytes_before),
                human_bytes(self.bytes_after),
                thousands(self.pages_freed)
            ),
            Outcome::Cancelled => format!(
                "vacuum of {db} stopped at shutdown after {} chunks: {} -> {}, {} pages freed",
                self.chunks,
                human_bytes(self.bytes_before),
                human_bytes(self.bytes_after),
                thousands(self.pages_freed)
            ),
            Outcome::Done => match self.action {
                Action::None => format!(
                    "nothing to vacuum in {db}: {}",
                    self.reason.as_deref().unwrap_or("")
                ),
                Action::Migrate => format!(
                    "vacuumed {db}: {} -> {}, {} pages freed, switched to incremental auto-vacuum (quick_check ok, {})",
                    human_bytes(self.bytes_before),
                    human_bytes(self.bytes_after),
                    thousands(self.pages_freed),
                    human_ms(self.duration_ms)
                ),
                Action::Incremental => format!(
                    "vacuumed {db}: {} -> {}, {} pages freed in {} (quick_check ok, {})",
                    human_bytes(self.bytes_before),
                    human_bytes(self.bytes_after),
                    thousands(self.pages_freed),
                    plural(self.chunks as i64, "chunk"),
                    human_ms(self.duration_ms)
                ),
            },
        }
    }

    /// The headline and a few aligned lines of figures, for `speckit-hygiene vacuum`.
    pub fn render(&self) -> String {
        let mut out = self.headline();
        let changed =
            !self.dry_run && self.outcome != Outcome::CheckFailed && self.action != Action::None;
        let page_kib = self.page_size / 1024;
        let mut line = |label: &str, text: String| {
            let _ = write!(out, "\n  {label:<12} {text}");
        };
        if changed {
            line(
                "file",
                format!(
                    "{} -> {} ({} -> {} pages of {page_kib} KiB)",
                    human_bytes(self.bytes_before),
                    human_bytes(self.bytes_after),
                    thousands(self.page_count_before),
                    thousands(self.page_count_after)
                ),
            );
            line(
                "free pages",
                format!(
                    "{} ({}) -> {}; vacuum threshold {}",
                    thousands(self.freelist_before),
                    percent_text(self.free_fraction_before),
                    thousands(self.freelist_after),
                    percent_text(self.free_fraction_threshold)
                ),
            );
            line(
                "WAL",
                format!(
                    "{} -> {} (peak {}), {}{}",
                    human_bytes(self.wal_bytes_before),
                    human_bytes(self.wal_bytes_after),
                    human_bytes(self.wal_bytes_peak),
                    plural(self.checkpoints as i64, "checkpoint"),
                    if self.checkpoints_busy > 0 {
                        format!(", {} could not finish", self.checkpoints_busy)
                    } else {
                        String::new()
                    }
                ),
            );
        } else {
            line(
                "file",
                format!(
                    "{} ({} pages of {page_kib} KiB), WAL {}",
                    human_bytes(self.bytes_before),
                    thousands(self.page_count_before),
                    human_bytes(self.wal_bytes_before)
                ),
            );
            line(
                "free pages",
                format!(
                    "{} ({}); vacuum threshold {}",
                    thousands(self.freelist_before),
                    percent_text(self.free_fraction_before),
                    percent_text(self.free_fraction_threshold)
                ),
            );
        }
        let auto_vacuum = if self.auto_vacuum_after != self.auto_vacuum_before {
            format!(
                "{} -> {}",
                self.auto_vacuum_before.label(),
                self.auto_vacuum_after.label()
            )
        } else {
            self.auto_vacuum_before.label().to_string()
        };
        line("auto_vacuum", auto_vacuum);
        if let (Some(free), Some(needed)) = (self.free_disk_bytes, self.needed_disk_bytes) {
            line(
                "free disk",
                format!(
                    "{} (the VACUUM needs {})",
                    human_bytes(free),
                    human_bytes(needed)
                ),
            );
        }
        let check = if self.check.ok {
            "ok".to_string()
        } else {
            format!("FAILED, {} problems", self.check.output.len())
        };
        line(
            &self.check.pragma,
            format!("{check} ({})", human_ms(self.check.duration_ms)),
        );
        if changed {
            line(
                "time",
                format!(
                    "{}; the longest step held other writers for {:.1} ms",
                    human_ms(self.duration_ms),
                    self.max_step_ms
                ),
            );
        }
        out
    }
}

/// Sizes for people: the engine's one formatter.
pub use speckit_engine::units::human_bytes;

/// `39048` -> `39,048`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

pub fn percent_text(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

/// `1 chunk`, `3 chunks`.
fn plural(n: i64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", thousands(n))
    }
}

fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::CheckOutcome;
    use crate::measure::{AutoVacuum, Measurement, PageStats};

    fn upstream_report() -> VacuumReport {
        let before = Measurement {
            pages: PageStats {
                page_size: 4096,
                page_count: 39_061,
                freelist_count: 39_048,
                auto_vacuum: AutoVacuum::None,
            },
            bytes: 39_061 * 4096,
            wal_bytes: 0,
        };
        let check = CheckOutcome {
            pragma: "quick_check".into(),
            ok: true,
            output: vec!["ok".into()],
            duration_ms: 3,
        };
        let mut report = VacuumReport::new(
            "/db/consensus.db".into(),
            &before,
            check,
            0.1,
            256,
            false,
            false,
        );
        report.action = Action::Migrate;
        report
    }

    #[test]
    fn a_migration_reads_as_one_headline_and_a_few_lines() {
        let mut report = upstream_report();
        let after = Measurement {
            pages: PageStats {
                page_size: 4096,
                page_count: 14,
                freelist_count: 0,
                auto_vacuum: AutoVacuum::Incremental,
            },
            bytes: 14 * 4096,
            wal_bytes: 0,
        };
        report.migrated = true;
        report.pages_freed = 39_047;
        report.checkpoints = 1;
        report.duration_ms = 1_234;
        report.set_after(&after);
        assert_eq!(
            report.headline(),
            "vacuumed /db/consensus.db: 152.6 MiB -> 56.0 KiB, 39,047 pages freed, switched to incremental auto-vacuum (quick_check ok, 1.2 s)"
        );
        let text = report.render();
        assert!(
            text.contains("\n  file         152.6 MiB -> 56.0 KiB (39,061 -> 14 pages of 4 KiB)"),
            "{text}"
        );
        assert!(
            text.contains("\n  free pages   39,048 (99.97%) -> 0; vacuum threshold 10.00%"),
            "{text}"
        );
        assert!(
            text.contains("\n  WAL          0 B -> 0 B (peak 0 B), 1 checkpoint"),
            "{text}"
        );
        assert!(
            text.contains("\n  auto_vacuum  NONE -> INCREMENTAL"),
            "{text}"
        );
        assert!(text.lines().count() <= 8, "{text}");
    }

    #[test]
    fn a_dry_run_says_nothing_changed_and_what_would_be_freed() {
        let mut report = upstream_report();
        report.dry_run = true;
        report.outcome = Outcome::DryRun;
        report.would_free_pages = Some(39_048);
        report.would_free_bytes = Some(39_048 * 4096);
        assert_eq!(
            report.headline(),
            "dry run, nothing changed: /db/consensus.db would be switched from auto_vacuum NONE to INCREMENTAL by one full VACUUM, freeing about 39,048 pages (152.5 MiB)"
        );
        let text = report.render();
        assert!(!text.contains("->"), "no before/after in a dry run: {text}");
    }

    #[test]
    fn formats_sizes_and_counts() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(thousands(39_048), "39,048");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(percent_text(0.99967), "99.97%");
        assert_eq!(human_ms(1234), "1.2 s");
    }
}
