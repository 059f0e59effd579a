//! The cron scheduler on tokio's paused clock: fire times, weekdays, time zones, live
//! reloads, overlap, two engines on one database, lease take-over, catch-up, and wall-clock
//! jumps. Each test moves time only with `tokio::time::advance` (see the harness for why
//! the waits cannot let the paused clock run ahead).

#[path = "support/scheduler_harness.rs"]
mod harness;

use chrono::{Datelike, Weekday};
use harness::*;
use speckit_engine::events::ReloadCause;
use speckit_engine::plugin::{JobTrigger, Plugin};
use speckit_engine::scheduler;
use speckit_engine::Clock;
use speckit_engine::ReloadOutcome;
use std::sync::Arc;
use tokio::sync::Semaphore;

fn counting(name: &str, jobs: &[&str], engine: &str, log: &RunLog) -> Vec<Arc<dyn Plugin>> {
    vec![Arc::new(CountingPlugin::new(name, jobs, engine, log))]
}

#[tokio::test(start_paused = true)]
async fn fires_at_the_cron_times_and_not_between() {
    let ws = Workspace::new("cleanup = \"15 */2 * * *\"");
    let clock = TestClock::starting_at(monday(0, 0, 30));
    let log = run_log();
    let engine = ws
        .engine(
            "solo",
            &clock,
            counting("counter", &["cleanup"], "solo", &log),
        )
        .await;
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;
    assert!(
        runs_of(&log, "cleanup").is_empty(),
        "nothing is due at start on a new database"
    );
    assert_eq!(sched.status().next_fires["cleanup"], Some(monday(0, 15, 0)));

    let expected = [
        monday(0, 15, 0),
        monday(2, 15, 0),
        monday(4, 15, 0),
        monday(6, 15, 0),
        monday(8, 15, 0),
    ];
    step_until(&[&sched], &clock, minutes(10), monday(10, 0, 30), |now| {
        let due = expected.iter().filter(|t| **t <= now).count();
        let seen = runs_of(&log, "cleanup");
        assert_eq!(seen.len(), due, "at {now}: {seen:?}");
    })
    .await;

    let seen = runs_of(&log, "cleanup");
    let fired: Vec<_> = seen.iter().map(SeenRun::fire_at).collect();
    assert_eq!(fired, expected, "5-field expressions fire at second 0");
    for run in &seen {
        let late = run.started_at - run.fire_at();
        assert!(
            late >= chrono::Duration::zero() && late <= chrono::Duration::minutes(10),
            "{run:?} started {late} after its fire time"
        );
    }
    let recorded = recorded_runs(&engine, "cleanup");
    assert_eq!(recorded.len(), 5, "{recorded:?}");
    assert!(recorded
        .iter()
        .all(|(trigger, outcome, id)| trigger == "schedule"
            && outcome == "succeeded"
            && id == "solo"));
    let row = state_row(&engine, "cleanup").unwrap();
    assert_eq!(row.last_fire_at, Some(monday(8, 15, 0).timestamp_millis()));
    assert_eq!(row.last_outcome.as_deref(), Some("succeeded"));
    assert_eq!(row.lease_owner, None, "the lease is released after the run");
    assert!(row.last_finished_at >= row.last_started_at);
    stop(&engine).await;
    assert!(sched.status().stopped);
}

#[tokio::test(start_paused = true)]
async fn weekday_schedule_never_fires_on_a_weekend() {
    let ws = Workspace::new("cleanup = \"0 9 * * 1-5\"");
    // Friday 2026-03-06, 08:00:30.
    let clock = TestClock::starting_at(utc(2026, 3, 6, 8, 0, 30));
    let log = run_log();
    let engine = ws
        .engine(
            "solo",
            &clock,
            counting("counter", &["cleanup"], "solo", &log),
        )
        .await;
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;
    // Through the weekend to Tuesday noon, an hour at a time.
    step_until(
        &[&sched],
        &clock,
        hours(1),
        utc(2026, 3, 10, 12, 0, 0),
        |_| {},
    )
    .await;

    let fired: Vec<_> = runs_of(&log, "cleanup")
        .iter()
        .map(SeenRun::fire_at)
        .collect();
    assert_eq!(
        fired,
        [
            utc(2026, 3, 6, 9, 0, 0),
            utc(2026, 3, 9, 9, 0, 0),
            utc(2026, 3, 10, 9, 0, 0)
        ]
    );
    assert!(fired
        .iter()
        .all(|t| !matches!(t.weekday(), Weekday::Sat | Weekday::Sun)));
    stop(&engine).await;
}

#[tokio::test(start_paused = true)]
async fn schedules_are_read_in_the_policy_time_zone() {
    let ws = Workspace::new("timezone = \"Europe/Berlin\"\ncleanup = \"0 3 * * *\"");
    let clock = TestClock::starting_at(monday(0, 0, 30));
    let log = run_log();
    let engine = ws
        .engine(
            "solo",
            &clock,
            counting("counter", &["cleanup"], "solo", &log),
        )
        .await;
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;
    step_until(&[&sched], &clock, minutes(10), monday(4, 0, 0), |_| {}).await;
    let fired: Vec<_> = runs_of(&log, "cleanup")
        .iter()
        .map(SeenRun::fire_at)
        .collect();
    // 03:00 in Berlin in March (UTC+1) is 02:00 UTC.
    assert_eq!(fired, [monday(2, 0, 0)]);
    stop(&engine).await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_changes_the_schedule_takes_effect() {
    let ws = Workspace::new("cleanup = \"0 * * * *\"");
    let clock = TestClock::starting_at(monday(10, 0, 30));
    let log = run_log();
    let engine = ws
        .engine(
            "solo",
            &clock,
            counting("counter", &["cleanup"], "solo", &log),
        )
        .await;
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;
    step_until(&[&sched], &clock, minutes(5), monday(11, 10, 0), |_| {}).await;
    assert_eq!(runs_of(&log, "cleanup").len(), 1);

    ws.write_schedule("cleanup = \"30 * * * *\"");
    let outcome = engine.reload(ReloadCause::Api).await;
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    wait_until("the scheduler to follow the new schedule", || {
        sched.status().next_fires.get("cleanup") == Some(&Some(monday(11, 30, 0)))
    })
    .await;
    step_until(&[&sched], &clock, minutes(5), monday(12, 50, 0), |_| {}).await;
    let fired: Vec<_> = runs_of(&log, "cleanup")
        .iter()
        .map(SeenRun::fire_at)
        .collect();
    assert_eq!(
        fired,
        [monday(11, 0, 0), monday(11, 30, 0), monday(12, 30, 0)],
        "the old 12:00 tick must not fire after the change"
    );

    ws.write_schedule("cleanup = \"off\"");
    let outcome = engine.reload(ReloadCause::Api).await;
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    wait_until("the scheduler to drop the removed job", || {
        !sched.status().next_fires.contains_key("cleanup")
    })
    .await;
    step_until(&[&sched], &clock, minutes(30), monday(16, 0, 0), |_| {}).await;
    assert_eq!(
        runs_of(&log, "cleanup").len(),
        3,
        "a removed job is no longer scheduled"
    );
    stop(&engine).await;
}

#[tokio::test(start_paused = true)]
async fn a_tick_while_the_job_still_runs_is_skipped_and_the_scheduler_goes_on() {
    let ws = Workspace::new("lease_seconds = 60\ncleanup = \"0 * * * *\"\nvacuum = \"0 * * * *\"");
    let clock = TestClock::starting_at(monday(9, 59, 30));
    let log = run_log();
    let gate = Arc::new(Semaphore::new(0));
    let plugins: Vec<Arc<dyn Plugin>> = vec![
        Arc::new(CountingPlugin::new("slow", &["cleanup"], "solo", &log).gated(&gate)),
        Arc::new(CountingPlugin::new("quick", &["vacuum"], "solo", &log)),
    ];
    let engine = ws.engine("solo", &clock, plugins).await;
    let mut events = engine.events().subscribe();
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;

    tokio::time::advance(minutes(1)).await;
    wait_until("the 10:00 runs to start", || {
        runs_of(&log, "cleanup").len() == 1 && runs_of(&log, "vacuum").len() == 1
    })
    .await;
    wait_until("vacuum to finish while cleanup still runs", || {
        let s = sched.status();
        s.checked_at >= Some(monday(10, 0, 30))
            && s.in_flight.iter().eq(["cleanup".to_string()].iter())
    })
    .await;

    tokio::time::advance(hours(1)).await;
    wait_until("the 11:00 vacuum run", || {
        runs_of(&log, "vacuum").len() == 2 && !sched.status().in_flight.contains("vacuum")
    })
    .await;
    let skips = skips_of(&drain(&mut events), "cleanup");
    assert_eq!(
        skips.len(),
        1,
        "the 11:00 cleanup tick is skipped: {skips:?}"
    );
    assert_eq!(
        runs_of(&log, "cleanup").len(),
        1,
        "no second, overlapping run"
    );
    // A 60-second lease taken at 10:00:30 would have run out at 10:01:30; the running job
    // keeps renewing it, so no other engine could take the job over.
    let now_ms = clock.now().timestamp_millis();
    wait_until("the lease to be renewed past now", || {
        state_row(&engine, "cleanup")
            .and_then(|r| r.lease_expires_at)
            .is_some_and(|t| t > now_ms)
    })
    .await;
    assert_eq!(
        state_row(&engine, "cleanup")
            .unwrap()
            .lease_owner
            .as_deref(),
        Some("solo")
    );

    gate.add_permits(1);
    settle(&[&sched], &clock).await;
    let row = state_row(&engine, "cleanup").unwrap();
    assert_eq!(row.lease_owner, None);
    assert_eq!(row.last_outcome.as_deref(), Some("succeeded"));

    gate.add_permits(1);
    step_until(&[&sched], &clock, minutes(10), monday(12, 0, 30), |_| {}).await;
    let fired: Vec<_> = runs_of(&log, "cleanup")
        .iter()
        .map(SeenRun::fire_at)
        .collect();
    assert_eq!(fired, [monday(10, 0, 0), monday(12, 0, 0)]);
    assert_eq!(runs_of(&log, "vacuum").len(), 3);
    stop(&engine).await;
}

#[tokio::test(start_paused = true)]
async fn two_engines_on_one_database_run_each_tick_exactly_once() {
    let ws = Workspace::new("cleanup = \"*/10 * * * *\"");
    let clock = TestClock::starting_at(monday(10, 0, 30));
    let log = run_log();
    let a = ws
        .engine(
            "engine-a",
            &clock,
            counting("counter", &["cleanup"], "engine-a", &log),
        )
        .await;
    let b = ws
        .engine(
            "engine-b",
            &clock,
            counting("counter", &["cleanup"], "engine-b", &log),
        )
        .await;
    let (sa, sb) = (scheduler::start(&a), scheduler::start(&b));
    settle(&[&sa, &sb], &clock).await;
    step_until(&[&sa, &sb], &clock, minutes(1), monday(12, 0, 30), |_| {}).await;

    let expected: Vec<_> = (0..12)
        .map(|i| monday(10, 10, 0) + chrono::Duration::minutes(10 * i))
        .collect();
    let seen = runs_of(&log, "cleanup");
    let mut fired: Vec<_> = seen.iter().map(SeenRun::fire_at).collect();
    fired.sort();
    assert_eq!(
        fired, expected,
        "each tick once between both engines: {seen:?}"
    );
    let recorded = recorded_runs(&a, "cleanup");
    assert_eq!(recorded.len(), 12, "{recorded:?}");
    for who in ["engine-a", "engine-b"] {
        let in_plugin = seen.iter().filter(|r| r.engine == who).count();
        let in_db = recorded.iter().filter(|(_, _, id)| id == who).count();
        assert_eq!(
            in_db, in_plugin,
            "the database and the plugin agree on {who}'s runs"
        );
    }

    // With one engine gone, the other runs every tick on its own.
    stop(&a).await;
    let before = runs_of(&log, "cleanup").len();
    step_until(&[&sb], &clock, minutes(1), monday(12, 30, 30), |_| {}).await;
    let after = runs_of(&log, "cleanup");
    assert_eq!(after.len(), before + 3);
    assert!(after[before..].iter().all(|r| r.engine == "engine-b"));
    assert_eq!(recorded_runs(&b, "cleanup").len(), 15);
    stop(&b).await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_owners_lease_blocks_until_it_expires_then_is_taken_over() {
    let ws = Workspace::new("lease_seconds = 60\ncleanup = \"0 * * * *\"");
    let clock = TestClock::starting_at(monday(9, 59, 30));
    let log = run_log();
    let engine = ws
        .engine(
            "survivor",
            &clock,
            counting("counter", &["cleanup"], "survivor", &log),
        )
        .await;
    // An engine claimed the 09:00 tick, renewed its lease until 10:30, and crashed.
    let (fired, expires) = (
        monday(9, 0, 0).timestamp_millis(),
        monday(10, 30, 0).timestamp_millis(),
    );
    engine
        .storage()
        .write_blocking(move |tx| {
            tx.execute(
                "INSERT INTO hygiene_schedule_state (job, last_fire_at, last_started_at, lease_owner, lease_expires_at)
                 VALUES ('cleanup', ?1, ?1, 'crashed-engine', ?2)",
                rusqlite::params![fired, expires],
            )
            .map_err(|source| speckit_engine::StorageError::Sqlite {
                path: Default::default(),
                cause: source,
            })
        })
        .unwrap();
    let mut events = engine.events().subscribe();
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;
    assert!(
        runs_of(&log, "cleanup").is_empty(),
        "09:00 was run; no catch-up"
    );

    step(&[&sched], &clock, minutes(1)).await;
    let skips = skips_of(&drain(&mut events), "cleanup");
    assert_eq!(skips.len(), 1, "{skips:?}");
    assert!(skips[0].contains("crashed-engine"), "{}", skips[0]);
    assert!(
        runs_of(&log, "cleanup").is_empty(),
        "the unexpired lease is respected"
    );

    step_until(&[&sched], &clock, minutes(10), monday(11, 0, 30), |_| {}).await;
    let fired: Vec<_> = runs_of(&log, "cleanup")
        .iter()
        .map(SeenRun::fire_at)
        .collect();
    assert_eq!(
        fired,
        [monday(11, 0, 0)],
        "taken over after the lease expired"
    );
    let row = state_row(&engine, "cleanup").unwrap();
    assert_eq!(row.last_fire_at, Some(monday(11, 0, 0).timestamp_millis()));
    assert_eq!(row.lease_owner, None);
    assert_eq!(row.last_outcome.as_deref(), Some("succeeded"));
    stop(&engine).await;
}

#[tokio::test(start_paused = true)]
async fn catch_up_runs_once_after_a_long_downtime() {
    let ws = Workspace::new("cleanup = \"0 3 * * *\"");
    let log = run_log();

    // First life: a new database, started at noon; nothing is owed, 03:00 runs normally.
    let clock = TestClock::starting_at(monday(12, 0, 30));
    let engine = ws
        .engine(
            "first",
            &clock,
            counting("counter", &["cleanup"], "first", &log),
        )
        .await;
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;
    assert!(
        runs_of(&log, "cleanup").is_empty(),
        "a new database owes nothing"
    );
    step_until(
        &[&sched],
        &clock,
        hours(1),
        utc(2026, 3, 3, 4, 0, 0),
        |_| {},
    )
    .await;
    assert_eq!(runs_of(&log, "cleanup").len(), 1);
    stop(&engine).await;

    // Down for almost a week: six 03:00 ticks are missed. One run at start, not six.
    let clock = TestClock::starting_at(utc(2026, 3, 9, 12, 0, 30));
    let engine = ws
        .engine(
            "second",
            &clock,
            counting("counter", &["cleanup"], "second", &log),
        )
        .await;
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;
    let seen = runs_of(&log, "cleanup");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[1].trigger,
        JobTrigger::CatchUp {
            missed_at: utc(2026, 3, 9, 3, 0, 0)
        }
    );
    step_until(
        &[&sched],
        &clock,
        minutes(30),
        utc(2026, 3, 9, 15, 0, 0),
        |_| {},
    )
    .await;
    assert_eq!(runs_of(&log, "cleanup").len(), 2, "never more than once");
    stop(&engine).await;

    // A restart with nothing missed since: no catch-up.
    let clock = TestClock::starting_at(utc(2026, 3, 9, 16, 0, 0));
    let engine = ws
        .engine(
            "third",
            &clock,
            counting("counter", &["cleanup"], "third", &log),
        )
        .await;
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;
    assert_eq!(runs_of(&log, "cleanup").len(), 2);
    let triggers: Vec<_> = recorded_runs(&engine, "cleanup")
        .into_iter()
        .map(|(trigger, _, _)| trigger)
        .collect();
    assert_eq!(triggers, ["schedule", "catch_up"]);
    stop(&engine).await;
}

#[tokio::test(start_paused = true)]
async fn catch_up_off_skips_the_missed_run() {
    let ws = Workspace::new("catch_up = false\ncleanup = \"0 3 * * *\"");
    let log = run_log();
    let clock = TestClock::starting_at(monday(2, 59, 30));
    let engine = ws
        .engine(
            "first",
            &clock,
            counting("counter", &["cleanup"], "first", &log),
        )
        .await;
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;
    step(&[&sched], &clock, minutes(1)).await;
    assert_eq!(runs_of(&log, "cleanup").len(), 1);
    stop(&engine).await;

    let clock = TestClock::starting_at(utc(2026, 3, 9, 12, 0, 30));
    let engine = ws
        .engine(
            "second",
            &clock,
            counting("counter", &["cleanup"], "second", &log),
        )
        .await;
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;
    step(&[&sched], &clock, minutes(5)).await;
    assert_eq!(runs_of(&log, "cleanup").len(), 1, "catch_up = false");
    stop(&engine).await;
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_jump_of_days_runs_once() {
    let ws = Workspace::new("cleanup = \"0 * * * *\"");
    let clock = TestClock::starting_at(monday(10, 0, 30));
    let log = run_log();
    let engine = ws
        .engine(
            "solo",
            &clock,
            counting("counter", &["cleanup"], "solo", &log),
        )
        .await;
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;

    // The wall clock leaps three days while monotonic time moves one minute (a laptop
    // resumed from suspend): 72 hourly ticks passed, one run follows.
    clock.jump(chrono::Duration::days(3));
    step(&[&sched], &clock, minutes(1)).await;
    let fired: Vec<_> = runs_of(&log, "cleanup")
        .iter()
        .map(SeenRun::fire_at)
        .collect();
    assert_eq!(fired, [utc(2026, 3, 5, 10, 0, 0)]);

    step_until(
        &[&sched],
        &clock,
        minutes(10),
        utc(2026, 3, 5, 11, 0, 30),
        |_| {},
    )
    .await;
    let fired: Vec<_> = runs_of(&log, "cleanup")
        .iter()
        .map(SeenRun::fire_at)
        .collect();
    assert_eq!(
        fired,
        [utc(2026, 3, 5, 10, 0, 0), utc(2026, 3, 5, 11, 0, 0)],
        "normal service after the jump"
    );
    stop(&engine).await;
}

#[tokio::test(start_paused = true)]
async fn timers_overdue_by_days_run_once() {
    let ws = Workspace::new("cleanup = \"*/5 * * * *\"");
    let clock = TestClock::starting_at(monday(10, 1, 0));
    let log = run_log();
    let engine = ws
        .engine(
            "solo",
            &clock,
            counting("counter", &["cleanup"], "solo", &log),
        )
        .await;
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;
    // Time moves two days in one go: every timer is overdue at once.
    step(&[&sched], &clock, hours(48)).await;
    let fired: Vec<_> = runs_of(&log, "cleanup")
        .iter()
        .map(SeenRun::fire_at)
        .collect();
    assert_eq!(fired, [utc(2026, 3, 4, 10, 0, 0)]);
    stop(&engine).await;
}

#[tokio::test(start_paused = true)]
async fn a_job_without_a_plugin_is_skipped_with_one_warning() {
    let ws = Workspace::new(
        "cleanup = \"0 * * * *\"\n\
         [plugins.ghost]\npath = \"plugins/absent.so\"\nschedule = \"0 * * * *\"",
    );
    let clock = TestClock::starting_at(monday(10, 0, 30));
    let log = run_log();
    // Only cleanup has a plugin; ghost's library fails to load (a load failure, not a
    // rejected policy), so its scheduled job has none.
    let engine = ws
        .engine(
            "solo",
            &clock,
            counting("counter", &["cleanup"], "solo", &log),
        )
        .await;
    let mut events = engine.events().subscribe();
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;
    step_until(&[&sched], &clock, minutes(30), monday(15, 0, 30), |_| {}).await;

    assert_eq!(runs_of(&log, "cleanup").len(), 5);
    let skips = skips_of(&drain(&mut events), "ghost");
    assert_eq!(skips.len(), 1, "one warning, not one per tick: {skips:?}");
    assert!(skips[0].contains("plugin"), "{}", skips[0]);
    assert_eq!(
        state_row(&engine, "ghost"),
        None,
        "an unrunnable tick is not recorded as fired"
    );
    assert!(recorded_runs(&engine, "ghost").is_empty());
    stop(&engine).await;
}

#[tokio::test(start_paused = true)]
async fn a_clock_set_back_by_days_keeps_the_job_running() {
    let ws = Workspace::new("cleanup = \"0 * * * *\"");
    let clock = TestClock::starting_at(monday(9, 59, 30));
    let log = run_log();
    let engine = ws
        .engine(
            "solo",
            &clock,
            counting("counter", &["cleanup"], "solo", &log),
        )
        .await;
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;
    step(&[&sched], &clock, minutes(1)).await;
    assert_eq!(runs_of(&log, "cleanup").len(), 1);

    // The clock was two days ahead and gets corrected: the 10:00 Monday record now lies in
    // the future, and must not hold the job back until Monday comes round again.
    clock.jump(-chrono::Duration::days(2));
    step(&[&sched], &clock, minutes(1)).await;
    assert_eq!(
        sched.status().next_fires["cleanup"],
        Some(utc(2026, 2, 28, 11, 0, 0)),
        "fire times follow the corrected clock"
    );
    step_until(
        &[&sched],
        &clock,
        minutes(10),
        utc(2026, 2, 28, 12, 0, 30),
        |_| {},
    )
    .await;
    let fired: Vec<_> = runs_of(&log, "cleanup")
        .iter()
        .map(SeenRun::fire_at)
        .collect();
    assert_eq!(
        fired,
        [
            monday(10, 0, 0),
            utc(2026, 2, 28, 11, 0, 0),
            utc(2026, 2, 28, 12, 0, 0)
        ]
    );
    stop(&engine).await;
}

#[tokio::test(start_paused = true)]
async fn a_database_fault_skips_the_tick_and_the_scheduler_recovers() {
    let ws = Workspace::new("cleanup = \"0 * * * *\"");
    let clock = TestClock::starting_at(monday(9, 59, 30));
    let log = run_log();
    let engine = ws
        .engine(
            "solo",
            &clock,
            counting("counter", &["cleanup"], "solo", &log),
        )
        .await;
    let sql = |statements: &'static str| {
        engine
            .storage()
            .write_blocking(move |tx| {
                tx.execute_batch(statements).map_err(|source| {
                    speckit_engine::StorageError::Sqlite {
                        path: Default::default(),
                        cause: source,
                    }
                })
            })
            .unwrap()
    };
    // Every write to the schedule state fails, as a full disk or a corrupt page would.
    sql(
        "CREATE TRIGGER fault_insert BEFORE INSERT ON hygiene_schedule_state
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END;
         CREATE TRIGGER fault_update BEFORE UPDATE ON hygiene_schedule_state
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
    );
    let sched = scheduler::start(&engine);
    settle(&[&sched], &clock).await;
    step(&[&sched], &clock, minutes(1)).await;
    assert!(
        runs_of(&log, "cleanup").is_empty(),
        "a tick that cannot be claimed is not run"
    );
    assert_eq!(state_row(&engine, "cleanup"), None, "nothing half-written");
    assert!(!sched.status().stopped, "the scheduler survives the fault");

    sql("DROP TRIGGER fault_insert; DROP TRIGGER fault_update;");
    step_until(&[&sched], &clock, minutes(10), monday(11, 0, 30), |_| {}).await;
    let fired: Vec<_> = runs_of(&log, "cleanup")
        .iter()
        .map(SeenRun::fire_at)
        .collect();
    assert_eq!(fired, [monday(11, 0, 0)]);
    stop(&engine).await;
}
