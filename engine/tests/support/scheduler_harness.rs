//! Helpers for the scheduler tests: a counting test plugin, a wall clock the tests can
//! jump, engines on a temporary workspace, and ways to wait that tokio's paused clock
//! cannot cheat.
//!
//! Why the waiting is done this way: under `start_paused`, tokio advances time by itself
//! whenever every task is idle, including while a task waits for the storage writer (a
//! std thread). A test that awaited a DB write or a timeout could therefore see time jump
//! to the scheduler's next wake-up and fire ticks it did not ask for. The helpers here
//! instead spin on `yield_now` (bounded by real time): a task is always ready, so the
//! paused clock never moves except through the test's own `advance` calls.

#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::OptionalExtension;
use speckit_engine::clock::{Clock, TokioClock};
use speckit_engine::plugin::{BoxFuture, JobContext, JobReport, JobTrigger, Plugin, PluginError};
use speckit_engine::scheduler::{SchedulerHandle, MAX_SLEEP};
use speckit_engine::{Engine, EngineEvent, EngineOptions};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, Semaphore};

/// 2026-03-02 at `h:m:s` UTC, a Monday.
pub fn monday(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, h, m, s).unwrap()
}

pub fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

/// One run the test plugin saw.
#[derive(Debug, Clone)]
pub struct SeenRun {
    pub engine: String,
    pub job: String,
    pub trigger: JobTrigger,
    /// The wall time the plugin started, from the job context's clock.
    pub started_at: DateTime<Utc>,
}

impl SeenRun {
    /// The fire time of a scheduled run (panics for other triggers).
    pub fn fire_at(&self) -> DateTime<Utc> {
        match &self.trigger {
            JobTrigger::Schedule { fire_at } => *fire_at,
            other => panic!("expected a scheduled run, got {other:?}"),
        }
    }
}

/// Runs shared between the test and its plugins.
pub type RunLog = Arc<Mutex<Vec<SeenRun>>>;

pub fn run_log() -> RunLog {
    Arc::new(Mutex::new(Vec::new()))
}

pub fn runs_of(log: &RunLog, job: &str) -> Vec<SeenRun> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| r.job == job)
        .cloned()
        .collect()
}

/// A plugin that records each run and, when it has a gate, waits for a permit before it
/// finishes (so a test can keep a job running across ticks).
pub struct CountingPlugin {
    name: String,
    jobs: Vec<String>,
    engine: String,
    log: RunLog,
    gate: Option<Arc<Semaphore>>,
}

impl CountingPlugin {
    pub fn new(name: &str, jobs: &[&str], engine: &str, log: &RunLog) -> Self {
        Self {
            name: name.to_string(),
            jobs: jobs.iter().map(|j| j.to_string()).collect(),
            engine: engine.to_string(),
            log: log.clone(),
            gate: None,
        }
    }

    pub fn gated(mut self, gate: &Arc<Semaphore>) -> Self {
        self.gate = Some(gate.clone());
        self
    }
}

impl Plugin for CountingPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> &str {
        "0.0.0-test"
    }

    fn jobs(&self) -> Vec<speckit_engine::policy::JobSpec> {
        self.jobs
            .iter()
            .map(speckit_engine::policy::JobSpec::on_request)
            .collect()
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async move {
            self.log.lock().unwrap().push(SeenRun {
                engine: self.engine.clone(),
                job: ctx.job.clone(),
                trigger: ctx.trigger.clone(),
                started_at: ctx.clock.now(),
            });
            if let Some(gate) = &self.gate {
                gate.acquire()
                    .await
                    .map_err(|e| PluginError::Failed(e.to_string()))?
                    .forget();
            }
            Ok(JobReport::new("counted", serde_json::json!({})))
        })
    }
}

/// The wall clock of a test: tokio's paused clock plus an offset the test can jump, to act
/// out a wall clock that moves while monotonic timers do not (a suspended laptop, NTP).
#[derive(Debug)]
pub struct TestClock {
    tokio: TokioClock,
    offset: Mutex<chrono::Duration>,
}

impl TestClock {
    pub fn starting_at(wall: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self {
            tokio: TokioClock::starting_at(wall),
            offset: Mutex::new(chrono::Duration::zero()),
        })
    }

    /// Moves the wall clock without moving tokio's timers.
    pub fn jump(&self, by: chrono::Duration) {
        *self.offset.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        self.tokio.now() + *self.offset.lock().unwrap()
    }
}

/// A temporary folder with a `speckit.toml` whose database is `consensus.db` beside it.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Workspace {
    /// `schedule` is the body of the `[schedule]` table; jobs it does not name are off
    /// (the harness's plugins run their jobs on request unless scheduled).
    pub fn new(schedule: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("speckit.toml");
        let ws = Self { dir, config };
        ws.write_schedule(schedule);
        ws
    }

    pub fn write_schedule(&self, schedule: &str) {
        let mut body = String::from("[storage]\ndatabase_path = \"consensus.db\"\n\n[schedule]\n");
        body.push_str(schedule);
        body.push('\n');
        std::fs::write(&self.config, body).unwrap();
    }

    /// Starts an engine named `id` on this workspace (no scheduler yet).
    pub async fn engine(
        &self,
        id: &str,
        clock: &Arc<TestClock>,
        plugins: Vec<Arc<dyn Plugin>>,
    ) -> Engine {
        let mut options = EngineOptions::new(&self.config);
        options.env = Vec::new();
        options.clock = clock.clone();
        options.engine_id = Some(id.to_string());
        Engine::start(options, plugins).await.unwrap()
    }
}

/// Waits until `condition` holds, spinning on `yield_now` so the paused clock stays put.
/// Bounded by 20 s of real time.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::task::yield_now().await;
    }
}

/// Waits until each scheduler has handled every tick due by `clock.now()` and has no
/// dispatched run left (claimed, run and released).
pub async fn settle(handles: &[&SchedulerHandle], clock: &TestClock) {
    let now = clock.now();
    wait_until("the schedulers to handle every due tick", || {
        handles.iter().all(|h| {
            let s = h.status();
            // Equality, not `>=`: after the test sets the clock back, an older pass can
            // carry a later time than now.
            s.checked_at == Some(now) && s.in_flight.is_empty()
        })
    })
    .await;
}

/// Advances the paused clock by `by` and settles. A step must be at least the scheduler's
/// longest sleep, so that the scheduler is certain to wake within it.
pub async fn step(handles: &[&SchedulerHandle], clock: &TestClock, by: Duration) {
    assert!(
        by >= MAX_SLEEP,
        "a step shorter than MAX_SLEEP may not wake the scheduler"
    );
    tokio::time::advance(by).await;
    settle(handles, clock).await;
}

/// Steps `by` at a time until the wall clock reaches `until`, checking `each` after every
/// step.
pub async fn step_until(
    handles: &[&SchedulerHandle],
    clock: &TestClock,
    by: Duration,
    until: DateTime<Utc>,
    mut each: impl FnMut(DateTime<Utc>),
) {
    while clock.now() < until {
        step(handles, clock, by).await;
        each(clock.now());
    }
}

pub fn minutes(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

pub fn hours(n: u64) -> Duration {
    minutes(60 * n)
}

/// Every event received so far.
pub fn drain(events: &mut broadcast::Receiver<EngineEvent>) -> Vec<EngineEvent> {
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        out.push(event);
    }
    out
}

/// Reasons of the `JobSkipped` events for `job` among `events`.
pub fn skips_of(events: &[EngineEvent], job: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::JobSkipped { job: j, reason } if j == job => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// `(trigger, outcome, engine_id)` of each recorded run of `job`, oldest first.
pub fn recorded_runs(engine: &Engine, job: &str) -> Vec<(String, String, String)> {
    let job = job.to_string();
    engine
        .storage()
        .read_blocking(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT trigger, outcome, engine_id FROM hygiene_job_runs WHERE job = ?1 ORDER BY id",
            )?;
            let rows = stmt
                .query_map([&job], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .unwrap()
}

/// One `hygiene_schedule_state` row.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRow {
    pub last_fire_at: Option<i64>,
    pub last_started_at: Option<i64>,
    pub last_finished_at: Option<i64>,
    pub last_outcome: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
}

pub fn state_row(engine: &Engine, job: &str) -> Option<StateRow> {
    let job = job.to_string();
    engine
        .storage()
        .read_blocking(move |conn| {
            conn.query_row(
                "SELECT last_fire_at, last_started_at, last_finished_at, last_outcome, lease_owner, lease_expires_at
                 FROM hygiene_schedule_state WHERE job = ?1",
                [&job],
                |r| {
                    Ok(StateRow {
                        last_fire_at: r.get(0)?,
                        last_started_at: r.get(1)?,
                        last_finished_at: r.get(2)?,
                        last_outcome: r.get(3)?,
                        lease_owner: r.get(4)?,
                        lease_expires_at: r.get(5)?,
                    })
                },
            )
            .optional()
        })
        .unwrap()
}

/// Shuts an engine down after its runs have settled (a grace period that cannot elapse
/// early under the paused clock, since nothing is left to wait for).
pub async fn stop(engine: &Engine) {
    engine.shutdown(Duration::from_secs(30)).await;
}
