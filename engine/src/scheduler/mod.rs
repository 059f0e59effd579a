//! The cron scheduler: runs each scheduled job at its cron times, once per tick across every
//! engine sharing the database, and catches up a run missed while no engine ran.
//!
//! Times:
//! - Expressions are read in `schedule.timezone` (an IANA name, `UTC` or `local`; default
//!   UTC). A 5-field crontab line fires at second 0 of its minute; the 6-7 field form
//!   (seconds first) fires at the seconds it names. See [`crate::cron_expr`].
//! - Fire times are wall-clock times from [`Engine::clock`]. The scheduler sleeps on tokio
//!   timers for at most [`MAX_SLEEP`] at a time and re-reads the wall clock after every
//!   wake, because monotonic timers stop while a laptop sleeps. Several fire times missed at
//!   once (a suspend, a clock jump forwards) run the job once, for the newest of them.
//!   After the clock jumps backwards by more than a second, pending fire times are
//!   recomputed from the new time; a tick already claimed is not run again, unless its
//!   record lies more than [`FUTURE_TOLERANCE`] ahead of the clock (then the
//!   record is stale and would otherwise stop the job until the clock caught up).
//!
//! Runs:
//! - Each run is a task of its own on [`Engine::tasks`]; the scheduler never waits for a
//!   job, nor for the database. A tick that comes while the job still runs in this engine
//!   is skipped and logged (tracing and [`EngineEvent::JobSkipped`]).
//! - A job with no registered plugin (a dynamic plugin that failed to load) is skipped with
//!   one warning and one `JobSkipped` event, repeated only after its plugin was seen again.
//! - Policy changes apply live: a changed expression or time zone fires next at its first
//!   time after the change, a removed job (or `"off"`) stops being scheduled, and a job
//!   whose expression did not change keeps its pending tick.
//!
//! One owner (`lease.rs`): before running, an engine claims the tick in
//! `hygiene_schedule_state` in one write transaction, which succeeds only if no engine
//! recorded that tick (or a later one) and no other engine holds an unexpired lease. The
//! owner renews the lease (`schedule.lease_seconds`) while the job runs and releases it with
//! the outcome at the end; a crashed owner's lease expires and another engine claims the
//! later ticks.
//!
//! Catch-up (`schedule.catch_up`, default on): at start, a job whose newest fire time at or
//! before now is later than its last recorded run runs once now with
//! [`JobTrigger::CatchUp`](crate::plugin::JobTrigger::CatchUp), like anacron or systemd's
//! `Persistent=true`. A job with no recorded run at all (a new database or a new job) is not
//! owed anything; the check records the time it first saw the job instead, so downtime
//! after that point counts.

mod lease;
mod plan;
mod run;

pub use lease::{ScheduleStateError, FUTURE_TOLERANCE};

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::events::EngineEvent;
use crate::policy::PolicySnapshot;
use crate::Engine;
use lease::Claimant;
use plan::Timetable;

/// The longest the scheduler sleeps before re-reading the wall clock.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// A backwards wall-clock step larger than this recomputes every pending fire time; smaller
/// ones (NTP adjustments) are left alone.
const BACKWARD_JUMP: chrono::Duration = chrono::Duration::seconds(1);

/// The longest lease the scheduler takes, whatever `schedule.lease_seconds` says: a lease
/// is renewed while the job runs, so a longer one only delays a take-over after a crash
/// (and an unbounded one would overflow the time arithmetic).
const MAX_LEASE_SECONDS: u64 = 7 * 24 * 3600;

fn lease_length(lease_seconds: u64) -> chrono::Duration {
    chrono::Duration::seconds(lease_seconds.min(MAX_LEASE_SECONDS) as i64)
}

/// What the scheduler is doing, for a host to show (next runs) and for tests to wait on.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SchedulerStatus {
    /// Wall time of the scheduler's latest pass over its timetable: every tick due at or
    /// before it has been dispatched.
    pub checked_at: Option<DateTime<Utc>>,
    /// Each scheduled job's next fire time (`None`: its expression never fires again).
    pub next_fires: BTreeMap<String, Option<DateTime<Utc>>>,
    /// Jobs this scheduler dispatched whose task has not ended yet (claim, run, release).
    pub in_flight: BTreeSet<String>,
    /// The scheduler has stopped (engine shutdown).
    pub stopped: bool,
}

/// A view of a running scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    status: watch::Receiver<SchedulerStatus>,
}

impl SchedulerHandle {
    /// The status now.
    pub fn status(&self) -> SchedulerStatus {
        self.status.borrow().clone()
    }

    /// Follows status changes.
    pub fn subscribe(&self) -> watch::Receiver<SchedulerStatus> {
        self.status.clone()
    }
}

/// Starts the scheduler task on the engine's task tracker; it stops when the engine's
/// shutdown token is cancelled.
pub fn spawn(engine: &Engine) {
    start(engine);
}

/// [`spawn`], returning a handle to follow the scheduler's status.
pub fn start(engine: &Engine) -> SchedulerHandle {
    let (status, receiver) = watch::channel(SchedulerStatus::default());
    let scheduler = Scheduler {
        engine: engine.clone(),
        status: Arc::new(status),
        timetable: Timetable::empty(),
        warned_unregistered: HashSet::new(),
    };
    engine.tasks().spawn(scheduler.run());
    SchedulerHandle { status: receiver }
}

struct Scheduler {
    engine: Engine,
    status: Arc<watch::Sender<SchedulerStatus>>,
    timetable: Timetable,
    /// Jobs skipped for want of a plugin, warned about once.
    warned_unregistered: HashSet<String>,
}

/// What to dispatch for a job.
enum Dispatch {
    Tick(DateTime<Utc>),
    CatchUp,
}

impl Scheduler {
    async fn run(mut self) {
        let shutdown = self.engine.shutdown_token().clone();
        let mut policy_updates = self.engine.subscribe_policy();
        let mut policy = policy_updates.borrow_and_update().clone();
        let mut last_seen = self.engine.clock().now();
        self.timetable = Timetable::build(&policy.policy, last_seen, &self.timetable);
        tracing::info!(jobs = ?self.timetable.jobs.keys().collect::<Vec<_>>(), timezone = %policy.policy.schedule.timezone, "scheduler started");
        if policy.policy.schedule.catch_up {
            let jobs: Vec<String> = self.timetable.jobs.keys().cloned().collect();
            for job in jobs {
                self.dispatch(&job, Dispatch::CatchUp, &policy);
            }
        }
        loop {
            let now = self.engine.clock().now();
            if now < last_seen - BACKWARD_JUMP {
                tracing::warn!(from = %last_seen, to = %now, "the wall clock went back; recomputing fire times");
                self.timetable.rewind(now);
            }
            last_seen = now;
            self.fire_due(now, &policy);
            self.publish(now);
            let wait = self
                .timetable
                .earliest()
                .and_then(|next| (next - now).to_std().ok())
                .unwrap_or(MAX_SLEEP)
                .clamp(Duration::from_millis(1), MAX_SLEEP);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                changed = policy_updates.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    policy = policy_updates.borrow_and_update().clone();
                    let now = self.engine.clock().now();
                    self.timetable = Timetable::build(&policy.policy, now, &self.timetable);
                    tracing::info!(generation = policy.generation, next = ?self.next_fires(), "schedules follow the new policy");
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.status.send_modify(|s| s.stopped = true);
        tracing::info!("scheduler stopped");
    }

    /// Dispatches every job whose pending fire time has come, once, for the newest tick it
    /// missed, and moves its pending time past `now`.
    fn fire_due(&mut self, now: DateTime<Utc>, policy: &PolicySnapshot) {
        let tz = self.timetable.timezone;
        let mut due = Vec::new();
        for (job, planned) in self.timetable.jobs.iter_mut() {
            let Some(first) = planned.next_fire.filter(|t| *t <= now) else {
                continue;
            };
            let tick = plan::latest_due(&planned.schedule, tz, first, now);
            if tick != first {
                tracing::info!(job, first_missed = %first, newest = %tick, "several fire times passed at once (suspend or clock jump); running once");
            }
            planned.next_fire = planned.schedule.next_after(now, tz);
            due.push((job.clone(), tick));
        }
        for (job, tick) in due {
            self.dispatch(&job, Dispatch::Tick(tick), policy);
        }
    }

    /// Starts a run task for `job`, unless it has no plugin or is still running.
    fn dispatch(&mut self, job: &str, what: Dispatch, policy: &PolicySnapshot) {
        if self.engine.registry().for_job(job).is_none() {
            if self.warned_unregistered.insert(job.to_string()) {
                let reason =
                    "no registered plugin runs this job (was its plugin loaded?)".to_string();
                tracing::warn!(job, "skipped: {reason}; further ticks are skipped silently until a plugin for it is registered");
                self.engine.events().emit(EngineEvent::JobSkipped {
                    job: job.to_string(),
                    reason,
                });
            } else {
                tracing::debug!(job, "skipped: no registered plugin");
            }
            return;
        }
        self.warned_unregistered.remove(job);
        if self.status.borrow().in_flight.contains(job) || self.engine.is_running(job) {
            let reason =
                "a run of this job is still going (from an earlier tick or started by hand)"
                    .to_string();
            match &what {
                Dispatch::Tick(tick) => tracing::warn!(job, %tick, "tick skipped: {reason}"),
                Dispatch::CatchUp => tracing::warn!(job, "catch-up skipped: {reason}"),
            }
            self.engine.events().emit(EngineEvent::JobSkipped {
                job: job.to_string(),
                reason,
            });
            return;
        }
        let who = Claimant {
            job: job.to_string(),
            owner: self.engine.id().to_string(),
            lease: lease_length(policy.policy.schedule.lease_seconds),
        };
        self.status.send_modify(|s| {
            s.in_flight.insert(job.to_string());
        });
        let guard = InFlight {
            status: self.status.clone(),
            job: job.to_string(),
        };
        let engine = self.engine.clone();
        match what {
            Dispatch::Tick(tick) => {
                self.engine.tasks().spawn(async move {
                    let _guard = guard;
                    run::fire_tick(engine, who, tick).await
                });
            }
            Dispatch::CatchUp => {
                let Some(planned) = self.timetable.jobs.get(job) else {
                    return;
                };
                let (schedule, tz) = (planned.schedule.clone(), self.timetable.timezone);
                self.engine.tasks().spawn(async move {
                    let _guard = guard;
                    run::catch_up(engine, who, schedule, tz).await
                });
            }
        }
    }

    fn next_fires(&self) -> BTreeMap<String, Option<DateTime<Utc>>> {
        self.timetable
            .jobs
            .iter()
            .map(|(job, planned)| (job.clone(), planned.next_fire))
            .collect()
    }

    fn publish(&self, now: DateTime<Utc>) {
        let next_fires = self.next_fires();
        self.status.send_modify(|s| {
            s.checked_at = Some(now);
            s.next_fires = next_fires;
        });
    }
}

/// Marks a job in flight until its task ends, however it ends.
struct InFlight {
    status: Arc<watch::Sender<SchedulerStatus>>,
    job: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.status.send_modify(|s| {
            s.in_flight.remove(&self.job);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_lease_is_clamped_instead_of_overflowing() {
        assert_eq!(lease_length(300), chrono::Duration::seconds(300));
        let longest = lease_length(u64::MAX);
        assert_eq!(longest, chrono::Duration::days(7));
        // The arithmetic the lease feeds must not overflow.
        let _ = Utc::now() + longest;
    }
}
