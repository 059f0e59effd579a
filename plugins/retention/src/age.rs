//! A file's age: when its evidence was made, read from the timestamp in its name where it
//! has one, else from the last commit that changed it (evidence in a git work tree), else
//! from its modification time.
//!
//! # The rule
//!
//! Upstream writes evidence once and names it after the moment it was made
//! (`spec-plan_2025-10-12T20:50:45Z-301386052.json`); that name survives `git checkout`,
//! copies and restores, which all reset mtimes. So:
//!
//! 1. If the file *name* carries a timestamp in one of the styles below, that is when the
//!    file was made. The first timestamp in the name wins.
//! 2. Otherwise (`plan_synthesis.json`, `SPEC-KIT-900.lock`, files overwritten in place),
//!    when the evidence root is inside a git work tree and the file is clean there (in
//!    `HEAD`, unchanged in the index and the work tree), the time of the last commit that
//!    changed it ([`crate::git_times`]): every checkout resets mtimes, history does not.
//! 3. Otherwise (no git, not a work tree, a file git does not know, or one modified since
//!    its last commit, which is then at least as new as its mtime) the file's mtime.
//! 4. A name timestamp or commit time more than a day in the future is not trusted (a typo,
//!    a random number that happens to parse, a skewed clock): the next rule is used.
//!
//! Timestamps without a zone (`20251109_181017`) are read as UTC, as upstream's scripts
//! write them with `date -u`; at a 30-day archive age an error of a few hours does not
//! matter. A file is archived when its time is strictly before `now - archive_after_days`.
//!
//! # Styles recognised (all seen in upstream's evidence)
//!
//! | style                 | example                      |
//! |-----------------------|------------------------------|
//! | `IsoExtended`         | `2025-10-12T20:50:45Z` (also with `.123`, `+02:00`) |
//! | `IsoDashedTime`       | `2025-10-14T16-19-16Z`       |
//! | `IsoMinutes`          | `2025-10-14T16:19Z`          |
//! | `IsoSpace`            | `2025-10-14 16:19:16` (SQLite's `datetime()`) |
//! | `CompactDashed`       | `20250926-000715Z`           |
//! | `CompactBasic`        | `20251013T195510Z`           |
//! | `CompactMinutes`      | `20250928T1800Z`             |
//! | `CompactUnderscore`   | `20251109_181017`            |
//! | `DateOnly`            | `2025-10-12` (midnight UTC)  |
//!
//! A timestamp must start at a digit boundary and end at one, so the random numbers
//! upstream appends (`-2703920966`) are never read as times, and its date and time must be
//! a real calendar moment between 1970 and 2100.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::Serialize;
use std::time::SystemTime;

/// How a timestamp in a file name is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampStyle {
    IsoExtended,
    IsoDashedTime,
    IsoMinutes,
    IsoSpace,
    CompactDashed,
    CompactBasic,
    CompactMinutes,
    CompactUnderscore,
    DateOnly,
}

/// Where a file's time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgeSource {
    /// The timestamp in the file's name.
    Name,
    /// The time of the last commit that changed the file (it is clean in git).
    GitCommit,
    /// The file's modification time.
    Mtime,
}

/// When a file's evidence was made, and how that was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileTime {
    pub at: DateTime<Utc>,
    pub source: AgeSource,
    /// The style of the name's timestamp, when one was found (even if not trusted).
    pub style: Option<TimestampStyle>,
}

/// How far in the future a name's timestamp may be before it is not trusted.
const FUTURE_TOLERANCE_SECS: i64 = 86_400;

/// The time of a file named `file_name` with modification time `mtime` and, when it is
/// clean in git, the time of the last commit that changed it (`commit`), as of `now`.
pub fn file_time(
    file_name: &str,
    mtime: SystemTime,
    commit: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> FileTime {
    let trusted = |at: DateTime<Utc>| (at - now).num_seconds() <= FUTURE_TOLERANCE_SECS;
    let found = name_timestamp(file_name);
    let style = found.map(|(_, style)| style);
    let (at, source) = match (found, commit) {
        (Some((at, _)), _) if trusted(at) => (at, AgeSource::Name),
        (_, Some(at)) if trusted(at) => (at, AgeSource::GitCommit),
        _ => (DateTime::<Utc>::from(mtime), AgeSource::Mtime),
    };
    FileTime { at, source, style }
}

/// Parses a free-standing timestamp (a database column): the same styles as in names.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    name_timestamp(text.trim()).map(|(at, _)| at)
}

/// The first timestamp in `name`, with its style.
pub fn name_timestamp(name: &str) -> Option<(DateTime<Utc>, TimestampStyle)> {
    let bytes = name.as_bytes();
    for start in 0..bytes.len() {
        if !bytes[start].is_ascii_digit() || (start > 0 && bytes[start - 1].is_ascii_digit()) {
            continue;
        }
        if let Some(found) = timestamp_at(&bytes[start..]) {
            return Some(found);
        }
    }
    None
}

/// Patterns tried at each position, longest first: `d` is a digit, anything else is literal.
const PATTERNS: &[(&str, TimestampStyle)] = &[
    ("dddd-dd-ddTdd:dd:dd", TimestampStyle::IsoExtended),
    ("dddd-dd-dd dd:dd:dd", TimestampStyle::IsoSpace),
    ("dddd-dd-ddTdd-dd-dd", TimestampStyle::IsoDashedTime),
    ("dddd-dd-ddTdd:dd", TimestampStyle::IsoMinutes),
    ("ddddddddTdddddd", TimestampStyle::CompactBasic),
    ("ddddddddTdddd", TimestampStyle::CompactMinutes),
    ("dddddddd-dddddd", TimestampStyle::CompactDashed),
    ("dddddddd_dddddd", TimestampStyle::CompactUnderscore),
    ("dddd-dd-dd", TimestampStyle::DateOnly),
];

fn timestamp_at(s: &[u8]) -> Option<(DateTime<Utc>, TimestampStyle)> {
    for (pattern, style) in PATTERNS {
        let Some(digits) = match_pattern(s, pattern.as_bytes()) else {
            continue;
        };
        let mut end = pattern.len();
        // Fractional seconds after a full time.
        let has_seconds = matches!(
            style,
            TimestampStyle::IsoExtended | TimestampStyle::IsoSpace
        );
        if has_seconds && s.get(end) == Some(&b'.') {
            let frac = s[end + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if frac > 0 {
                end += 1 + frac;
            }
        }
        let mut offset_secs = 0i64;
        match s.get(end) {
            Some(b'Z') | Some(b'z') if *style != TimestampStyle::DateOnly => end += 1,
            Some(b'+') | Some(b'-') if has_seconds || *style == TimestampStyle::IsoMinutes => {
                if let Some((secs, len)) = zone_offset(&s[end..]) {
                    offset_secs = secs;
                    end += len;
                }
            }
            _ => {}
        }
        // Must end at a digit boundary (not inside a longer number).
        if s.get(end).is_some_and(|b| b.is_ascii_digit()) {
            continue;
        }
        // A date followed by `T` is a longer form that did not match: not a date-only.
        if *style == TimestampStyle::DateOnly && s.get(end) == Some(&b'T') {
            continue;
        }
        if let Some(at) = to_datetime(&digits, offset_secs) {
            return Some((at, *style));
        }
    }
    None
}

/// Matches `pattern` at the start of `s`; returns the digits it captured, in order.
fn match_pattern(s: &[u8], pattern: &[u8]) -> Option<Vec<u32>> {
    if s.len() < pattern.len() {
        return None;
    }
    let mut digits = Vec::with_capacity(pattern.len());
    for (b, p) in s.iter().zip(pattern) {
        match p {
            b'd' if b.is_ascii_digit() => digits.push(u32::from(b - b'0')),
            b'd' => return None,
            literal if literal == b => {}
            _ => return None,
        }
    }
    Some(digits)
}

/// `+02:00`, `-0400`: offset in seconds east of UTC, and its length. Hours up to 14 and
/// minutes on a quarter hour only, so that a random `-1234` suffix is not an offset.
fn zone_offset(s: &[u8]) -> Option<(i64, usize)> {
    let sign = match s.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (digits, len) = if let Some(d) = match_pattern(&s[1..], b"dd:dd") {
        (d, 6)
    } else if let Some(d) = match_pattern(&s[1..], b"dddd") {
        (d, 5)
    } else {
        return None;
    };
    if s.get(len).is_some_and(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours = i64::from(digits[0] * 10 + digits[1]);
    let minutes = i64::from(digits[2] * 10 + digits[3]);
    if hours > 14 || minutes % 15 != 0 {
        return None;
    }
    Some((sign * (hours * 3600 + minutes * 60), len))
}

fn number(digits: &[u32]) -> u32 {
    digits.iter().fold(0, |n, d| n * 10 + d)
}

fn to_datetime(digits: &[u32], offset_secs: i64) -> Option<DateTime<Utc>> {
    let year = number(&digits[0..4]) as i32;
    let month = number(&digits[4..6]);
    let day = number(&digits[6..8]);
    if !(1970..=2100).contains(&year) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    let (hour, minute, second) = match digits.len() {
        8 => (0, 0, 0),
        12 => (number(&digits[8..10]), number(&digits[10..12]), 0),
        14 => (
            number(&digits[8..10]),
            number(&digits[10..12]),
            // A leap second reads as the second before it.
            number(&digits[12..14]).min(59),
        ),
        _ => return None,
    };
    let naive = date.and_hms_opt(hour, minute, second)?;
    let at = Utc.from_utc_datetime(&naive);
    Some(at - chrono::Duration::seconds(offset_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(name: &str) -> Option<(String, TimestampStyle)> {
        name_timestamp(name).map(|(at, style)| (at.to_rfc3339(), style))
    }

    #[test]
    fn every_style_parses() {
        use TimestampStyle::*;
        let cases = [
            (
                "spec-plan_2025-10-12T20:50:45Z-301386052.json",
                "2025-10-12T20:50:45+00:00",
                IsoExtended,
            ),
            (
                "lint_tasks_2025-10-14T16-19-16Z.txt",
                "2025-10-14T16:19:16+00:00",
                IsoDashedTime,
            ),
            (
                "x_2025-10-14T16:19Z.json",
                "2025-10-14T16:19:00+00:00",
                IsoMinutes,
            ),
            ("2025-10-14 16:19:16", "2025-10-14T16:19:16+00:00", IsoSpace),
            (
                "20250926-000715Z-code-mcp-list.json",
                "2025-09-26T00:07:15+00:00",
                CompactDashed,
            ),
            (
                "20251005T030041Z-hal-list_movies.txt",
                "2025-10-05T03:00:41+00:00",
                CompactBasic,
            ),
            (
                "migration_dry_run_20250928T1800Z.json",
                "2025-09-28T18:00:00+00:00",
                CompactMinutes,
            ),
            (
                "SPEC-KIT-900_spec-validate_telemetry_20251109_181017.json",
                "2025-11-09T18:10:17+00:00",
                CompactUnderscore,
            ),
            (
                "baseline_2025-10-12.md",
                "2025-10-12T00:00:00+00:00",
                DateOnly,
            ),
            (
                "a_2025-09-25T22:39:00-04:00.json",
                "2025-09-26T02:39:00+00:00",
                IsoExtended,
            ),
            (
                "a_2025-09-25T22:39:00.250+02:00.json",
                "2025-09-25T20:39:00+00:00",
                IsoExtended,
            ),
        ];
        for (name, want, style) in cases {
            assert_eq!(ts(name), Some((want.to_string(), style)), "{name}");
        }
    }

    #[test]
    fn random_suffixes_and_ids_are_not_times() {
        for name in [
            "plan_synthesis.json",
            "SPEC-KIT-900.lock",
            "SPEC-KIT-900_cost_summary.json",
            "guardrail-2703920966.json",
            "run-20962766.json",
            "x-99999999_123456.json",
            "2025-13-01.json",
            "20251332T101010Z.json",
            "1234567890123456.json",
        ] {
            assert_eq!(ts(name), None, "{name}");
        }
        // A random suffix that looks like an offset is not read as one.
        assert_eq!(
            ts("a_2025-10-12T20:50:45-1234.json").unwrap().0,
            "2025-10-12T20:50:45+00:00"
        );
    }

    #[test]
    fn name_wins_over_mtime_unless_in_the_future() {
        let now = Utc.with_ymd_and_hms(2025, 12, 1, 0, 0, 0).unwrap();
        let mtime = SystemTime::from(now);
        let t = file_time("spec-plan_2025-10-12T20:50:45Z-1.json", mtime, None, now);
        assert_eq!(t.source, AgeSource::Name);
        assert_eq!(
            t.at,
            Utc.with_ymd_and_hms(2025, 10, 12, 20, 50, 45).unwrap()
        );
        let t = file_time("plan_synthesis.json", mtime, None, now);
        assert_eq!((t.source, t.at), (AgeSource::Mtime, now));
        let t = file_time("x_2030-01-01T00:00:00Z.json", mtime, None, now);
        assert_eq!(
            (t.source, t.style),
            (AgeSource::Mtime, Some(TimestampStyle::IsoExtended))
        );
    }

    #[test]
    fn name_then_commit_then_mtime() {
        let now = Utc.with_ymd_and_hms(2025, 12, 1, 0, 0, 0).unwrap();
        let mtime = SystemTime::from(now);
        let commit = Utc.with_ymd_and_hms(2025, 9, 1, 0, 0, 0).unwrap();
        // A name's timestamp wins over the commit.
        let t = file_time("a_2025-10-12T20:50:45Z.json", mtime, Some(commit), now);
        assert_eq!(t.source, AgeSource::Name);
        // No name timestamp, or one in the future: the commit.
        let t = file_time("plan_synthesis.json", mtime, Some(commit), now);
        assert_eq!(
            (t.source, t.at, t.style),
            (AgeSource::GitCommit, commit, None)
        );
        let t = file_time("x_2030-01-01T00:00:00Z.json", mtime, Some(commit), now);
        assert_eq!(
            (t.source, t.at, t.style),
            (
                AgeSource::GitCommit,
                commit,
                Some(TimestampStyle::IsoExtended)
            )
        );
        // A commit in the future (a skewed clock): the mtime.
        let future = now + chrono::Duration::days(3);
        let t = file_time("plan_synthesis.json", mtime, Some(future), now);
        assert_eq!((t.source, t.at), (AgeSource::Mtime, now));
    }
}
