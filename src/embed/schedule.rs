//! The next scheduled runs a host shows: the running scheduler's pending fire times where
//! it has them, else each job's next cron time computed from the policy in effect.

use chrono::{DateTime, Utc};
use serde::Serialize;

use speckit_engine::cron_expr;
use speckit_engine::policy::Policy;
use speckit_engine::registry::PluginRegistry;
use speckit_engine::scheduler::SchedulerStatus;

/// One scheduled job and when it runs next.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduledRun {
    pub job: String,
    /// The expression as the policy has it (`30 3 * * *`).
    pub expression: String,
    /// The next fire time; `None` when the expression never fires again or does not parse.
    pub next_at: Option<DateTime<Utc>>,
    /// Some plugin runs this job; a scheduled job without one is skipped when it fires.
    pub has_plugin: bool,
    /// The time came from the running scheduler rather than from the policy alone (the two
    /// differ only while a tick is being dispatched, or for a tick kept across a reload).
    pub from_scheduler: bool,
}

/// Every job the policy schedules (not `"off"`), soonest first; jobs that never fire again
/// come last.
pub fn next_runs(
    policy: &Policy,
    registry: &PluginRegistry,
    scheduler: Option<&SchedulerStatus>,
    now: DateTime<Utc>,
) -> Vec<ScheduledRun> {
    // The loader validated the time zone; UTC only for a policy that bypassed it.
    let tz =
        cron_expr::parse_timezone(&policy.schedule.timezone).unwrap_or(cron_expr::ScheduleTz::Utc);
    let live = scheduler.filter(|s| s.checked_at.is_some() && !s.stopped);
    let mut runs: Vec<ScheduledRun> = policy
        .scheduled_jobs()
        .into_iter()
        .map(|(job, expression)| {
            let pending = live.and_then(|s| s.next_fires.get(&job).copied());
            let (next_at, from_scheduler) = match pending {
                Some(at) => (at, true),
                None => (
                    cron_expr::parse(&expression)
                        .ok()
                        .and_then(|s| s.next_after(now, tz)),
                    false,
                ),
            };
            ScheduledRun {
                has_plugin: registry.for_job(&job).is_some(),
                job,
                expression,
                next_at,
                from_scheduler,
            }
        })
        .collect();
    runs.sort_by(|a, b| match (a.next_at, b.next_at) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.job.cmp(&b.job)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.job.cmp(&b.job),
    });
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn computed_from_the_policy_soonest_first() {
        let mut policy = Policy::default();
        policy.schedule.set_job("cleanup", "0 3 * * *");
        policy.schedule.set_job("vacuum", "30 2 * * *");
        policy.schedule.set_job("integrity_check", "off");
        let registry = PluginRegistry::default();
        let now = Utc.with_ymd_and_hms(2026, 3, 2, 1, 0, 0).unwrap();
        let runs = next_runs(&policy, &registry, None, now);
        let jobs: Vec<_> = runs.iter().map(|r| r.job.as_str()).collect();
        assert_eq!(jobs, ["vacuum", "cleanup"]);
        assert_eq!(
            runs[0].next_at,
            Some(Utc.with_ymd_and_hms(2026, 3, 2, 2, 30, 0).unwrap())
        );
        assert!(!runs[0].has_plugin && !runs[0].from_scheduler);
    }

    #[test]
    fn the_running_scheduler_wins_and_time_zone_applies() {
        let mut policy = Policy::default();
        policy.schedule.timezone = "Europe/Berlin".into();
        policy.schedule.set_job("cleanup", "0 3 * * *");
        let registry = PluginRegistry::default();
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap();
        let runs = next_runs(&policy, &registry, None, now);
        let cleanup = runs.iter().find(|r| r.job == "cleanup").unwrap();
        // 03:00 in Berlin in winter is 02:00 UTC.
        assert_eq!(
            cleanup.next_at,
            Some(Utc.with_ymd_and_hms(2026, 11, 29, 2, 0, 0).unwrap())
        );

        let kept = Utc.with_ymd_and_hms(2026, 11, 28, 2, 0, 0).unwrap();
        let mut status = SchedulerStatus {
            checked_at: Some(now),
            ..Default::default()
        };
        status.next_fires.insert("cleanup".into(), Some(kept));
        let runs = next_runs(&policy, &registry, Some(&status), now);
        let cleanup = runs.iter().find(|r| r.job == "cleanup").unwrap();
        assert_eq!(cleanup.next_at, Some(kept));
        assert!(cleanup.from_scheduler);

        // A stopped scheduler's times are stale: computed again.
        status.stopped = true;
        let runs = next_runs(&policy, &registry, Some(&status), now);
        assert!(!runs.iter().any(|r| r.from_scheduler));
    }
}
