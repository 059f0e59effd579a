//! The scheduler's timetable: which jobs are scheduled, when each fires next, and the
//! arithmetic that collapses many missed fire times into one.

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

use crate::cron_expr::{self, CronSchedule, ScheduleTz};
use crate::policy::Policy;

/// One scheduled job as the scheduler tracks it.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub schedule: CronSchedule,
    /// The first fire time not yet handled; `None` when the expression never fires again.
    pub next_fire: Option<DateTime<Utc>>,
}

/// Every scheduled job of one policy, keyed by job name.
#[derive(Debug, Clone)]
pub struct Timetable {
    pub timezone: ScheduleTz,
    pub jobs: BTreeMap<String, PlannedJob>,
}

impl Timetable {
    /// An empty timetable (no jobs, UTC).
    pub fn empty() -> Self {
        Self {
            timezone: ScheduleTz::Utc,
            jobs: BTreeMap::new(),
        }
    }

    /// The timetable for `policy` at wall time `now`. A job whose expression and time zone
    /// are the same as in `previous` keeps its pending fire time, so a reload that changes
    /// something else neither skips nor repeats a tick; a changed or new job fires next at
    /// its first time after `now`; a job no longer in the policy is dropped.
    pub fn build(policy: &Policy, now: DateTime<Utc>, previous: &Timetable) -> Self {
        // The policy loader has validated the time zone and every expression; a failure here
        // means a policy that bypassed validation, so it is logged and the job left out
        // rather than taking the scheduler down.
        let timezone = match cron_expr::parse_timezone(&policy.schedule.timezone) {
            Ok(tz) => tz,
            Err(message) => {
                tracing::error!("schedule.timezone: {message}; reading schedules in UTC");
                ScheduleTz::Utc
            }
        };
        let mut jobs = BTreeMap::new();
        for (job, expression) in policy.scheduled_jobs() {
            let schedule = match cron_expr::parse(&expression) {
                Ok(schedule) => schedule,
                Err(message) => {
                    tracing::error!(job, "not scheduled: {message}");
                    continue;
                }
            };
            let kept = previous.jobs.get(&job).filter(|old| {
                old.schedule.expression == schedule.expression && previous.timezone == timezone
            });
            let next_fire = match kept {
                Some(old) => old.next_fire,
                None => schedule.next_after(now, timezone),
            };
            jobs.insert(
                job,
                PlannedJob {
                    schedule,
                    next_fire,
                },
            );
        }
        Self { timezone, jobs }
    }

    /// The earliest pending fire time of any job.
    pub fn earliest(&self) -> Option<DateTime<Utc>> {
        self.jobs.values().filter_map(|j| j.next_fire).min()
    }

    /// After the wall clock went backwards (a manual change, a VM restore), pending fire
    /// times computed from the later time would wait out the whole jump: start over from
    /// `now`.
    pub fn rewind(&mut self, now: DateTime<Utc>) {
        let tz = self.timezone;
        for job in self.jobs.values_mut() {
            job.next_fire = job.schedule.next_after(now, tz);
        }
    }
}

/// The latest fire time in `[first, now]`, given that `first` is a fire time at or before
/// `now`. Used to run a job once for a whole stretch of missed ticks.
///
/// Walking forward from `first` costs one step per missed tick (a per-second schedule after
/// a week-long suspend is 600,000 steps); instead look back from `now` over a window that
/// doubles until it holds a fire time, then walk only that window.
pub fn latest_due(
    schedule: &CronSchedule,
    tz: ScheduleTz,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    debug_assert!(first <= now);
    let mut window = chrono::Duration::seconds(1);
    let mut cursor = loop {
        let from = now - window;
        if from <= first {
            break first;
        }
        match schedule.next_after(from, tz) {
            Some(t) if t <= now => break t,
            _ => window = window * 2,
        }
    };
    while let Some(next) = schedule.next_after(cursor, tz).filter(|t| *t <= now) {
        cursor = next;
    }
    cursor
}

/// The latest fire time in `(after, now]`, or `None` when the schedule did not fire in
/// that span. This decides catch-up: a job is owed a run when it was due after its last
/// recorded fire.
pub fn latest_in(
    schedule: &CronSchedule,
    tz: ScheduleTz,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let first = schedule.next_after(after, tz).filter(|t| *t <= now)?;
    Some(latest_due(schedule, tz, first, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, h, m, s).unwrap()
    }

    #[test]
    fn latest_due_collapses_missed_ticks_to_the_newest() {
        let hourly = cron_expr::parse("0 * * * *").unwrap();
        assert_eq!(
            latest_due(&hourly, ScheduleTz::Utc, at(1, 0, 0), at(7, 59, 59)),
            at(7, 0, 0)
        );
        assert_eq!(
            latest_due(&hourly, ScheduleTz::Utc, at(1, 0, 0), at(1, 0, 0)),
            at(1, 0, 0)
        );
    }

    #[test]
    fn latest_due_is_cheap_for_dense_schedules_over_long_gaps() {
        let every_second = cron_expr::parse("* * * * * *").unwrap();
        let first = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let now = at(12, 0, 0) + chrono::Duration::milliseconds(250);
        // More than a year of per-second ticks (36 million): a linear walk would take
        // minutes here, the doubling window a handful of steps.
        assert_eq!(
            latest_due(&every_second, ScheduleTz::Utc, first, now),
            at(12, 0, 0)
        );
    }

    #[test]
    fn latest_in_excludes_the_lower_bound() {
        let hourly = cron_expr::parse("0 * * * *").unwrap();
        assert_eq!(
            latest_in(&hourly, ScheduleTz::Utc, at(5, 0, 0), at(5, 59, 0)),
            None
        );
        assert_eq!(
            latest_in(&hourly, ScheduleTz::Utc, at(4, 59, 59), at(5, 59, 0)),
            Some(at(5, 0, 0))
        );
        assert_eq!(
            latest_in(&hourly, ScheduleTz::Utc, at(0, 30, 0), at(9, 15, 0)),
            Some(at(9, 0, 0))
        );
    }

    #[test]
    fn rebuild_keeps_unchanged_jobs_and_drops_removed_ones() {
        let mut policy = Policy::default();
        policy.schedule.set_job("cleanup", "0 * * * *");
        policy.schedule.set_job("vacuum", "30 * * * *");
        policy.schedule.set_job("integrity_check", "off");
        let first = Timetable::build(&policy, at(1, 10, 0), &Timetable::empty());
        assert_eq!(first.jobs["cleanup"].next_fire, Some(at(2, 0, 0)));
        assert_eq!(first.jobs["vacuum"].next_fire, Some(at(1, 30, 0)));
        assert_eq!(first.earliest(), Some(at(1, 30, 0)));

        policy.schedule.set_job("vacuum", "off");
        policy.schedule.set_job("cleanup", "0 * * * *");
        // Built later than cleanup's pending tick: the pending tick is kept, not skipped.
        let second = Timetable::build(&policy, at(2, 0, 30), &first);
        assert_eq!(second.jobs["cleanup"].next_fire, Some(at(2, 0, 0)));
        assert!(!second.jobs.contains_key("vacuum"));

        policy.schedule.set_job("cleanup", "15 * * * *");
        let third = Timetable::build(&policy, at(2, 0, 30), &second);
        assert_eq!(third.jobs["cleanup"].next_fire, Some(at(2, 15, 0)));
    }
}
