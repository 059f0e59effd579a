//! Cron expressions as users write them.
//!
//! Accepted forms:
//! - 5 fields, crontab style: `min hour day-of-month month day-of-week`, where day-of-week
//!   numbers follow crontab (0 and 7 = Sunday, 1 = Monday, ..., 6 = Saturday). They are
//!   translated to day names before the `cron` crate sees them, because that crate numbers
//!   Sunday as 1: a crontab `1-5` stays Monday to Friday.
//! - 6 or 7 fields, the `cron` crate's own form (seconds first, optional year). Numeric
//!   day-of-week values are refused there, since they would silently mean a different day
//!   than a crontab user expects; write names (`MON-FRI`).
//!
//! Times are read in the policy's `schedule.timezone` (default UTC).

use chrono::{DateTime, TimeZone, Utc};
use cron::Schedule;
use std::str::FromStr;

/// The time zone schedules are read in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScheduleTz {
    Utc,
    Local,
    Named(chrono_tz::Tz),
}

pub fn parse_timezone(name: &str) -> Result<ScheduleTz, String> {
    match name.trim() {
        n if n.eq_ignore_ascii_case("utc") => Ok(ScheduleTz::Utc),
        n if n.eq_ignore_ascii_case("local") => Ok(ScheduleTz::Local),
        n => chrono_tz::Tz::from_str(n)
            .map(ScheduleTz::Named)
            .map_err(|_| format!("unknown time zone {n:?}; use an IANA name such as \"Europe/Berlin\", \"UTC\" or \"local\"")),
    }
}

/// A parsed, validated schedule.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub expression: String,
    schedule: Schedule,
}

impl CronSchedule {
    /// The first fire time strictly after `after`, in UTC.
    pub fn next_after(&self, after: DateTime<Utc>, tz: ScheduleTz) -> Option<DateTime<Utc>> {
        fn first<T: TimeZone>(s: &Schedule, after: DateTime<T>) -> Option<DateTime<Utc>> {
            s.after(&after).next().map(|t| t.with_timezone(&Utc))
        }
        match tz {
            ScheduleTz::Utc => first(&self.schedule, after),
            ScheduleTz::Local => first(&self.schedule, after.with_timezone(&chrono::Local)),
            ScheduleTz::Named(z) => first(&self.schedule, after.with_timezone(&z)),
        }
    }

    /// The last fire time at or before `at`, searching back at most `horizon`.
    pub fn last_at_or_before(
        &self,
        at: DateTime<Utc>,
        tz: ScheduleTz,
        horizon: chrono::Duration,
    ) -> Option<DateTime<Utc>> {
        let mut cursor = self.next_after(at - horizon, tz)?;
        if cursor > at {
            return None;
        }
        loop {
            match self.next_after(cursor, tz) {
                Some(next) if next <= at => cursor = next,
                _ => return Some(cursor),
            }
        }
    }
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Parses a user's cron expression (see the module docs for the accepted forms).
pub fn parse(expression: &str) -> Result<CronSchedule, String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let translated = match fields.len() {
        5 => {
            // Checked here, in the user's own fields: the `cron` crate would report its
            // errors against the 6-field rewrite ("0 61 * * * *").
            for (field, (name, low, high)) in fields[..4].iter().zip(CRONTAB_FIELDS) {
                check_crontab_field(field, name, low, high)
                    .map_err(|e| format!("cron expression {expression:?}: {e}"))?;
            }
            let dow = crontab_dow_to_names(fields[4])
                .map_err(|e| format!("cron expression {expression:?}: {e}"))?;
            format!(
                "0 {} {} {} {} {}",
                fields[0], fields[1], fields[2], fields[3], dow
            )
        }
        6 | 7 => {
            let dow = fields[5];
            if dow.chars().any(|c| c.is_ascii_digit()) && dow != "?" {
                return Err(format!(
                    "cron expression {expression:?}: in the 6-7 field form, write day-of-week as names (MON-FRI), not numbers: numbers there count Sunday as 1, unlike crontab"
                ));
            }
            fields.join(" ")
        }
        n => {
            return Err(format!(
                "cron expression {expression:?} has {n} fields; write 5 (crontab: minute hour day-of-month month day-of-week) or 6-7 (seconds first)"
            ))
        }
    };
    let schedule = Schedule::from_str(&translated)
        .map_err(|e| format!("cron expression {expression:?} does not parse: {e}"))?;
    Ok(CronSchedule {
        expression: expression.to_string(),
        schedule,
    })
}

/// The first four crontab fields: name and range.
const CRONTAB_FIELDS: [(&str, u32, u32); 4] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
];

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// Checks one crontab field (`*`, `n`, `a-b`, lists, `/step`) against its range.
fn check_crontab_field(field: &str, name: &str, low: u32, high: u32) -> Result<(), String> {
    let value = |token: &str| -> Result<u32, String> {
        let n = match token.parse::<u32>() {
            Ok(n) => n,
            Err(_) if name == "month" => MONTH_NAMES
                .iter()
                .position(|m| m.eq_ignore_ascii_case(token))
                .map(|i| i as u32 + 1)
                .ok_or_else(|| format!("unknown month {token:?}"))?,
            Err(_) => return Err(format!("{name} {token:?} is not a number")),
        };
        if (low..=high).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{name} {n} is out of range {low}-{high}"))
        }
    };
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (part, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(s) if s > 0 => {}
                _ => return Err(format!("bad step {step:?} in the {name} field")),
            }
        }
        match range.split_once('-') {
            _ if range == "*" || range == "?" => {}
            Some((a, b)) => {
                let (a, b) = (value(a)?, value(b)?);
                if a > b {
                    return Err(format!("{name} range {range:?} runs backwards"));
                }
            }
            None => {
                value(range)?;
            }
        }
    }
    Ok(())
}

/// Turns a crontab day-of-week field (0-7, names, ranges, lists, steps) into an explicit
/// list of day names, so no numbering convention is left to interpret.
fn crontab_dow_to_names(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let mut days = [false; 7];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("bad step {s:?} in day-of-week"))?,
            ),
            None => (part, 1),
        };
        let (start, end) = if range == "*" {
            (0, 6)
        } else if let Some((a, b)) = range.split_once('-') {
            (day_number(a)?, day_number(b)?)
        } else {
            let d = day_number(range)?;
            (d, if step > 1 { 6 } else { d })
        };
        // crontab allows 7 for Sunday at the end of a range (`5-7` = Fri, Sat, Sun).
        let end = if end == 0 && start > 0 { 7 } else { end };
        if start > end {
            return Err(format!(
                "day-of-week range {range:?} runs backwards; list the days instead (e.g. FRI,SAT,SUN)"
            ));
        }
        for d in (start..=end).step_by(step) {
            days[d % 7] = true;
        }
    }
    let names: Vec<&str> = (0..7).filter(|d| days[*d]).map(|d| DAY_NAMES[d]).collect();
    Ok(names.join(","))
}

fn day_number(token: &str) -> Result<usize, String> {
    if let Ok(n) = token.parse::<usize>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!("day-of-week {n} is out of range 0-7"))
        };
    }
    DAY_NAMES
        .iter()
        .position(|d| d.eq_ignore_ascii_case(token))
        .ok_or_else(|| format!("unknown day-of-week {token:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_speak_of_the_users_own_five_fields() {
        for (expression, wanted) in [
            ("61 * * * *", "minute 61 is out of range 0-59"),
            ("0 24 * * *", "hour 24 is out of range 0-23"),
            ("0 3 0 * *", "day-of-month 0 is out of range 1-31"),
            ("0 3 * 13 *", "month 13 is out of range 1-12"),
            ("0 3 * FOO *", "unknown month \"FOO\""),
            ("*/0 * * * *", "bad step \"0\" in the minute field"),
            ("30-10 * * * *", "minute range \"30-10\" runs backwards"),
            ("x * * * *", "minute \"x\" is not a number"),
        ] {
            let error = parse(expression).unwrap_err();
            assert!(error.contains(wanted), "{expression}: {error}");
            assert!(!error.contains("0 61"), "{error}");
        }
        assert!(parse("*/15 0-6,22,23 1-7 JAN-MAR,12 1-5").is_ok());
    }
    use chrono::{Datelike, Weekday};

    fn fires(expr: &str, n: usize) -> Vec<DateTime<Utc>> {
        let s = parse(expr).unwrap();
        // 2026-11-29 is a Sunday.
        let mut t = Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t, ScheduleTz::Utc).unwrap();
            out.push(t);
        }
        out
    }

    #[test]
    fn crontab_one_to_five_means_monday_to_friday() {
        let days: Vec<Weekday> = fires("0 9 * * 1-5", 10)
            .iter()
            .map(|t| t.weekday())
            .collect();
        assert!(
            !days.contains(&Weekday::Sat) && !days.contains(&Weekday::Sun),
            "{days:?}"
        );
        assert_eq!(days[0], Weekday::Mon);
        assert_eq!(days[4], Weekday::Fri);
    }

    #[test]
    fn crontab_sunday_is_zero_or_seven() {
        for expr in ["0 9 * * 0", "0 9 * * 7", "0 9 * * SUN"] {
            assert!(
                fires(expr, 3).iter().all(|t| t.weekday() == Weekday::Sun),
                "{expr}"
            );
        }
        let days: Vec<Weekday> = fires("0 9 * * 5-7", 6)
            .iter()
            .map(|t| t.weekday())
            .collect();
        assert!(days
            .iter()
            .all(|d| matches!(d, Weekday::Fri | Weekday::Sat | Weekday::Sun)));
    }

    #[test]
    fn five_fields_fire_at_second_zero() {
        let t = fires("30 3 * * *", 1)[0];
        assert_eq!(t.to_rfc3339(), "2026-11-29T03:30:00+00:00");
    }

    #[test]
    fn six_fields_accept_names_refuse_numbers() {
        assert!(parse("0 0 9 * * MON-FRI").is_ok());
        let err = parse("0 0 9 * * 1-5").unwrap_err();
        assert!(err.contains("names"), "{err}");
    }

    #[test]
    fn bad_expressions_are_refused() {
        for bad in ["", "* * *", "61 * * * *", "0 9 * * 8", "0 9 * * 5-1"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timezone_is_applied() {
        let s = parse("0 3 * * *").unwrap();
        let tz = parse_timezone("Europe/Berlin").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap();
        // 03:00 in Berlin (UTC+1 in winter) is 02:00 UTC.
        assert_eq!(
            s.next_after(t, tz).unwrap().to_rfc3339(),
            "2026-11-29T02:00:00+00:00"
        );
        assert!(parse_timezone("Mars/Olympus").is_err());
    }

    #[test]
    fn last_fire_before() {
        let s = parse("0 3 * * *").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap();
        let last = s
            .last_at_or_before(at, ScheduleTz::Utc, chrono::Duration::days(2))
            .unwrap();
        assert_eq!(last.to_rfc3339(), "2026-11-29T03:00:00+00:00");
    }
}
