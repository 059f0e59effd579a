//! The embedding API end to end: start at host start-up without waiting for jobs, one
//! engine per database per process, jobs and events through the handle, reloads, next
//! scheduled runs, and shutdown that loses no run.

use speckit_retention::EvidencePolicy;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::json;
use tokio::sync::{broadcast, mpsc, Semaphore};

use speckit_engine::clock::TokioClock;
use speckit_engine::events::{JobOutcome, ReloadCause};
use speckit_engine::plugin::BoxFuture;
use speckit_engine::{
    EngineEvent, JobContext, JobReport, JobTrigger, Plugin, PluginError, ReloadOutcome,
};
use speckit_hygiene::embed::{EmbedError, EngineBuilder};

const WAIT: Duration = Duration::from_secs(20);

/// A plugin whose jobs report when they start, and can be held until released.
struct Probe {
    jobs: Vec<String>,
    started: mpsc::UnboundedSender<(String, JobTrigger)>,
    /// When set, a run waits for a permit (or for cancellation, unless `ignore_cancel`).
    gate: Option<Arc<Semaphore>>,
    ignore_cancel: bool,
}

impl Probe {
    fn new(jobs: &[&str]) -> (Self, mpsc::UnboundedReceiver<(String, JobTrigger)>) {
        let (started, receiver) = mpsc::unbounded_channel();
        let probe = Self {
            jobs: jobs.iter().map(|j| j.to_string()).collect(),
            started,
            gate: None,
            ignore_cancel: false,
        };
        (probe, receiver)
    }

    fn gated(mut self, gate: Arc<Semaphore>) -> Self {
        self.gate = Some(gate);
        self
    }
}

impl Plugin for Probe {
    fn name(&self) -> &str {
        "probe"
    }
    fn version(&self) -> &str {
        "0"
    }
    fn jobs(&self) -> Vec<speckit_engine::policy::JobSpec> {
        self.jobs
            .iter()
            .map(speckit_engine::policy::JobSpec::on_request)
            .collect()
    }
    /// The workspace's `[evidence]` is retention's section; the probe reads it too.
    fn sections(&self) -> Vec<speckit_engine::policy::SectionSpec> {
        vec![speckit_engine::policy::SectionSpec::of::<EvidencePolicy>()]
    }
    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async move {
            let _ = self.started.send((ctx.job.clone(), ctx.trigger.clone()));
            if let Some(gate) = &self.gate {
                if self.ignore_cancel {
                    gate.acquire().await.expect("gate").forget();
                } else {
                    tokio::select! {
                        permit = gate.acquire() => permit.expect("gate").forget(),
                        _ = ctx.cancel.cancelled() => return Err(PluginError::Cancelled),
                    }
                }
            }
            ctx.emit("probe_ran", json!({ "job": ctx.job }));
            Ok(JobReport::new(
                format!(
                    "{} ran on policy generation {}",
                    ctx.job, ctx.policy.generation
                ),
                json!({ "job": ctx.job, "args": ctx.args }),
            ))
        })
    }
}

/// A workspace: a config file (with `extra` appended), an evidence root and a tracker.
fn workspace(dir: &Path, database: &str, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("evidence/commands")).unwrap();
    std::fs::write(
        dir.join("SPEC.md"),
        "| ID | Title | Status |\n|---|---|---|\n",
    )
    .unwrap();
    let config = dir.join("speckit.toml");
    write_config(&config, database, extra);
    config
}

fn write_config(config: &Path, database: &str, extra: &str) {
    std::fs::write(
        config,
        format!(
            "[storage]\ndatabase_path = \"{database}\"\n[evidence]\nroot = \"evidence\"\ntracker_paths = [\"SPEC.md\"]\n{extra}"
        ),
    )
    .unwrap();
}

/// A builder isolated from the test process's `SPECKIT_*` variables.
fn builder(config: &Path) -> EngineBuilder {
    EngineBuilder::new(config).env(Vec::new())
}

async fn next_event(
    events: &mut broadcast::Receiver<EngineEvent>,
    mut wanted: impl FnMut(&EngineEvent) -> bool,
) -> EngineEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(event) if wanted(&event) => return event,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event channel closed: {e}"),
            }
        }
    })
    .await
    .expect("the event did not come in time")
}

async fn started(
    receiver: &mut mpsc::UnboundedReceiver<(String, JobTrigger)>,
) -> (String, JobTrigger) {
    tokio::time::timeout(WAIT, receiver.recv())
        .await
        .expect("the job did not start in time")
        .expect("probe dropped")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_loads_the_policy_and_opens_the_database_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(dir.path(), "db/consensus.db", "");
    let engine = builder(&config).start().await.unwrap();

    let policy = engine.policy();
    assert_eq!(policy.generation, 1);
    assert_eq!(
        policy.source.path,
        std::fs::canonicalize(&config).unwrap_or(config.clone())
    );
    assert!(dir.path().join("db/consensus.db").exists());
    assert_eq!(
        engine.database_path(),
        dir.path().join("db/consensus.db").as_path()
    );
    assert_eq!(engine.counters().reloads_applied, 1);
    assert!(engine.recent_runs(10).await.unwrap().is_empty());
    // The built-in jobs are there, scheduled as the policy's defaults say.
    let jobs: Vec<String> = engine.next_runs().into_iter().map(|r| r.job).collect();
    for job in ["cleanup", "vacuum", "integrity_check"] {
        assert!(jobs.contains(&job.to_string()), "{jobs:?}");
    }
    assert!(engine.next_runs().iter().all(|r| r.has_plugin));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_does_not_wait_for_an_owed_catch_up_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(
        dir.path(),
        "consensus.db",
        "[schedule]\ncleanup = \"0 3 * * *\"\n",
    );
    let day_one = Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap();

    // First run: the scheduler sees the job for the first time and records when.
    let (probe, _started) = Probe::new(&["cleanup"]);
    let first = builder(&config)
        .without_builtin_plugins()
        .plugin(Arc::new(probe))
        .clock(Arc::new(TokioClock::starting_at(day_one)))
        .start()
        .await
        .unwrap();
    let mut status = first.scheduler().unwrap().subscribe();
    tokio::time::timeout(
        WAIT,
        status.wait_for(|s| s.checked_at.is_some() && s.in_flight.is_empty()),
    )
    .await
    .expect("the scheduler's first pass did not end")
    .unwrap();
    first.shutdown().await;

    // Two days later a run is owed; start must return while it still runs.
    let gate = Arc::new(Semaphore::new(0));
    let (probe, mut started_rx) = Probe::new(&["cleanup"]);
    let second = builder(&config)
        .without_builtin_plugins()
        .plugin(Arc::new(probe.gated(gate.clone())))
        .clock(Arc::new(TokioClock::starting_at(
            day_one + chrono::Duration::days(2),
        )))
        .start()
        .await
        .unwrap();
    let (job, trigger) = started(&mut started_rx).await;
    assert_eq!(job, "cleanup");
    assert!(matches!(trigger, JobTrigger::CatchUp { .. }), "{trigger:?}");
    // The job is held; the handle answers all the same.
    assert_eq!(second.policy().generation, 1);
    let runs = second.recent_runs(5).await.unwrap();
    assert_eq!(runs[0].outcome, "running", "{runs:?}");
    assert_eq!(second.counters().jobs_succeeded, 0);

    let mut events = second.subscribe();
    gate.add_permits(1);
    let finished = next_event(
        &mut events,
        |e| matches!(e, EngineEvent::JobFinished { job, .. } if job == "cleanup"),
    )
    .await;
    let EngineEvent::JobFinished {
        outcome, report, ..
    } = finished
    else {
        unreachable!()
    };
    assert_eq!(outcome, JobOutcome::Succeeded);
    assert!(report.unwrap().summary.starts_with("cleanup ran"));
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_on_the_same_database_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(dir.path(), "data dir/consensus ü.db", "");
    let first = builder(&config).start().await.unwrap();

    // Another config file naming the same database through a symbolic link.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::os::unix::fs::symlink(dir.path().join("data dir"), other.join("linked")).unwrap();
    let other_config = workspace(&other, "linked/consensus ü.db", "");
    for attempt in [&config, &other_config] {
        let err = builder(attempt).start().await.unwrap_err();
        assert!(matches!(err, EmbedError::AlreadyRunning { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("consensus ü.db"), "{message}");
        assert!(message.contains("speckit.toml"), "{message}");
    }
    // The refused starts changed nothing: the first engine works on.
    assert_eq!(first.policy().generation, 1);
    assert!(first.recent_runs(1).await.unwrap().is_empty());

    first.shutdown().await;
    let again = builder(&other_config).start().await.unwrap();
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_on_one_database_let_exactly_one_through() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(dir.path(), "consensus.db", "");
    let starts: Vec<_> = (0..4)
        .map(|_| tokio::spawn(builder(&config).start()))
        .collect();
    let mut winners = Vec::new();
    let mut refused = 0;
    for start in starts {
        match start.await.unwrap() {
            Ok(handle) => winners.push(handle),
            Err(EmbedError::AlreadyRunning { .. }) => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((winners.len(), refused), (1, 3));
    winners[0].shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_on_different_databases_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let a = workspace(&dir.path().join("a"), "consensus.db", "");
    let b = workspace(&dir.path().join("b"), "consensus.db", "");
    let first = builder(&a).start().await.unwrap();
    let second = builder(&b).start().await.unwrap();
    assert_ne!(first.database_path(), second.database_path());
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_job_returns_its_report_and_events_carry_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(dir.path(), "consensus.db", "");
    let (probe, _rx) = Probe::new(&["probe_job"]);
    let engine = builder(&config)
        .plugin(Arc::new(probe))
        .start()
        .await
        .unwrap();
    let mut events = engine.subscribe();

    // Through a clone, as a host's widgets would.
    let clone = engine.clone();
    let run = clone
        .run_job("probe_job", json!({ "dry_run": true }))
        .await
        .unwrap();
    assert_eq!(run.outcome, JobOutcome::Succeeded);
    let report = run.report.clone().unwrap();
    assert_eq!(report.summary, "probe_job ran on policy generation 1");
    assert_eq!(report.data["args"]["dry_run"], true);

    let started = next_event(&mut events, |e| matches!(e, EngineEvent::JobStarted { .. })).await;
    assert!(
        matches!(started, EngineEvent::JobStarted { ref job, run_id, trigger: JobTrigger::Manual } if job == "probe_job" && run_id == run.run_id)
    );
    let plugin_event = next_event(&mut events, |e| matches!(e, EngineEvent::Plugin { .. })).await;
    assert!(
        matches!(plugin_event, EngineEvent::Plugin { ref plugin, ref kind, .. } if plugin == "probe" && kind == "probe_ran")
    );
    let finished = next_event(&mut events, |e| {
        matches!(e, EngineEvent::JobFinished { .. })
    })
    .await;
    assert!(
        matches!(finished, EngineEvent::JobFinished { ref report, .. } if report.as_ref() == Some(&report_of(&run)))
    );

    let recorded = engine.recent_runs(1).await.unwrap();
    assert_eq!(recorded[0].run_id, run.run_id);
    assert_eq!(recorded[0].outcome, "succeeded");
    assert_eq!(recorded[0].trigger, "manual");
    assert_eq!(
        recorded[0].summary(),
        "probe_job ran on policy generation 1"
    );
    engine.shutdown().await;
}

fn report_of(run: &speckit_engine::engine::JobRun) -> JobReport {
    run.report.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_job_is_a_clear_error_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(dir.path(), "consensus.db", "");
    let engine = builder(&config).start().await.unwrap();
    let err = engine.run_job("defrag", json!(null)).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("\"defrag\""), "{message}");
    assert!(message.contains("vacuum"), "{message}");
    assert!(engine.recent_runs(5).await.unwrap().is_empty());
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_refused_and_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(
        dir.path(),
        "consensus.db",
        "[retention]\narchive_after_days = 30\npurge_after_days = 10\n",
    );
    let err = builder(&config).start().await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("retention.purge_after_days"), "{message}");
    assert!(message.contains("speckit.toml"), "{message}");
    assert!(
        !dir.path().join("consensus.db").exists(),
        "a refused start must not create the database"
    );

    let missing = dir.path().join("nowhere.toml");
    let err = builder(&missing).start().await.unwrap_err();
    assert!(err.to_string().contains("nowhere.toml"), "{err}");

    // Fixed, it starts: the failed attempts left no claim behind.
    write_config(&config, "consensus.db", "");
    let engine = builder(&config).start().await.unwrap();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_apply_or_keep_the_old_policy_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(dir.path(), "consensus.db", "");
    let engine = builder(&config).watch_config(false).start().await.unwrap();
    let mut events = engine.subscribe();

    write_config(
        &config,
        "consensus.db",
        "[schedule]\nvacuum = \"off\"\ncleanup = \"15 1 * * *\"\n",
    );
    let outcome = engine.reload().await;
    assert!(
        matches!(&outcome, ReloadOutcome::Applied { generation: 2, changed_keys } if changed_keys.contains(&"schedule.vacuum".to_string())),
        "{outcome:?}"
    );
    let event = next_event(&mut events, |e| matches!(e, EngineEvent::Reload { .. })).await;
    assert!(matches!(
        event,
        EngineEvent::Reload {
            cause: ReloadCause::Api,
            outcome: ReloadOutcome::Applied { .. }
        }
    ));
    let runs = engine.next_runs();
    assert!(!runs.iter().any(|r| r.job == "vacuum"), "{runs:?}");
    assert_eq!(
        runs.iter().find(|r| r.job == "cleanup").unwrap().expression,
        "15 1 * * *"
    );

    std::fs::write(&config, "[storage\n").unwrap();
    let outcome = engine.reload().await;
    let ReloadOutcome::Rejected { error } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(error.contains("speckit.toml"), "{error}");
    let event = next_event(&mut events, |e| matches!(e, EngineEvent::Reload { .. })).await;
    assert!(matches!(
        event,
        EngineEvent::Reload {
            outcome: ReloadOutcome::Rejected { .. },
            ..
        }
    ));
    assert_eq!(engine.policy().generation, 2);
    assert_eq!(
        engine.policy().policy.schedule.jobs["cleanup"],
        "15 1 * * *"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_config_file_reloads_through_the_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(dir.path(), "consensus.db", "");
    let engine = builder(&config).start().await.unwrap();
    let mut events = engine.subscribe();
    // Saved the way editors save: a new file renamed over the old one.
    let staged = dir.path().join(".speckit.toml.swp");
    std::fs::write(
        &staged,
        "[storage]\ndatabase_path = \"consensus.db\"\n[evidence]\nroot = \"evidence\"\ntracker_paths = [\"SPEC.md\"]\nwarn_mb = 7.0\n",
    )
    .unwrap();
    std::fs::rename(&staged, &config).unwrap();
    let event = next_event(&mut events, |e| {
        matches!(
            e,
            EngineEvent::Reload {
                cause: ReloadCause::FileChanged,
                ..
            }
        )
    })
    .await;
    assert!(
        matches!(
            event,
            EngineEvent::Reload {
                outcome: ReloadOutcome::Applied { .. },
                ..
            }
        ),
        "{event:?}"
    );
    assert_eq!(
        engine.policy().policy.section::<EvidencePolicy>().warn_mb,
        7.0
    );
    engine.shutdown().await;
}

/// Waits for `done` by spinning on `yield_now`, bounded by real time. Under tokio's paused
/// clock a task that awaited a database write (the writer is a std thread) or a timeout
/// would let tokio advance time by itself; a task that is always ready keeps the clock
/// still except for the test's own `advance` calls.
async fn spin_until<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = done() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen in time"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn next_runs_name_the_time_the_scheduler_then_fires() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(
        dir.path(),
        "consensus.db",
        "[schedule]\ncleanup = \"0 3 * * *\"\n",
    );
    let (probe, mut started_rx) = Probe::new(&["cleanup"]);
    let engine = builder(&config)
        .without_builtin_plugins()
        .plugin(Arc::new(probe))
        .watch_config(false)
        .clock(Arc::new(TokioClock::starting_at(
            Utc.with_ymd_and_hms(2026, 3, 2, 2, 0, 0).unwrap(),
        )))
        .start()
        .await
        .unwrap();
    // Before the scheduler's first pass the time is computed from the policy.
    let computed = engine.next_runs()[0].clone();
    assert_eq!(computed.job, "cleanup");
    let next_at = computed.next_at.unwrap();
    assert_eq!(next_at, Utc.with_ymd_and_hms(2026, 3, 2, 3, 0, 0).unwrap());

    let scheduler = engine.scheduler().unwrap().clone();
    spin_until("the scheduler's first pass", || {
        let s = scheduler.status();
        (s.checked_at.is_some() && s.in_flight.is_empty()).then_some(())
    })
    .await;
    let announced = engine.next_runs()[0].clone();
    assert!(announced.from_scheduler);
    assert_eq!(announced.next_at, Some(next_at));

    tokio::time::advance(Duration::from_secs(3600)).await;
    let (job, trigger) = spin_until("the cleanup tick", || started_rx.try_recv().ok()).await;
    assert_eq!(job, "cleanup");
    assert_eq!(trigger, JobTrigger::Schedule { fire_at: next_at });
    let following = engine.next_runs()[0].next_at.unwrap();
    assert_eq!(following, next_at + chrono::Duration::days(1));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_idempotent_refuses_more_work_and_frees_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(dir.path(), "consensus.db", "");
    let engine = builder(&config).start().await.unwrap();
    let clone = engine.clone();
    clone.shutdown().await;
    assert!(engine.is_shut_down());
    engine.shutdown().await;
    let err = engine.run_job("vacuum", json!(null)).await.unwrap_err();
    assert!(matches!(err, EmbedError::ShutDown { .. }), "{err}");
    assert!(err.to_string().contains("consensus.db"), "{err}");
    assert!(engine.recent_runs(1).await.is_err());

    let again = builder(&config).start().await.unwrap();
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_shuts_down_and_frees_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(dir.path(), "consensus.db", "");
    let engine = builder(&config).start().await.unwrap();
    let clone = engine.clone();
    drop(engine);
    // One clone left: still the owner.
    assert!(matches!(
        builder(&config).start().await,
        Err(EmbedError::AlreadyRunning { .. })
    ));
    drop(clone);
    // The background shutdown releases the database once it is closed.
    let again = tokio::time::timeout(WAIT, async {
        loop {
            match builder(&config).start().await {
                Ok(handle) => return handle,
                Err(EmbedError::AlreadyRunning { .. }) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the dropped engine never released its database");
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_manual_job_so_its_record_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(dir.path(), "consensus.db", "");
    let gate = Arc::new(Semaphore::new(0));
    let (mut probe, mut started_rx) = Probe::new(&["probe_job"]);
    probe.ignore_cancel = true;
    let engine = builder(&config)
        .plugin(Arc::new(probe.gated(gate.clone())))
        .start()
        .await
        .unwrap();
    // The host fires the job and stops waiting for it (a TUI key press).
    let host = engine.clone();
    let fired = tokio::spawn(async move { host.run_job("probe_job", json!(null)).await });
    started(&mut started_rx).await;
    fired.abort();

    let closing = engine.clone();
    let shutdown =
        tokio::spawn(async move { closing.shutdown_with_grace(Duration::from_secs(30)).await });
    // Shutdown is waiting for the job; let it finish.
    tokio::task::yield_now().await;
    assert!(!shutdown.is_finished());
    gate.add_permits(1);
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown did not end")
        .unwrap();

    let reopened = builder(&config).start().await.unwrap();
    let runs = reopened.recent_runs(1).await.unwrap();
    assert_eq!(runs[0].job, "probe_job");
    assert_eq!(runs[0].outcome, "succeeded", "{runs:?}");
    reopened.shutdown().await;
}

/// Writes `bytes` of evidence for `spec` under the workspace's evidence root.
fn evidence(dir: &Path, spec: &str, bytes: usize) {
    let folder = dir.join("evidence/commands").join(spec);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("plan_20260301T000000Z.json"), vec![b'x'; bytes]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_guard_and_usage_follow_the_policy_in_effect() {
    let dir = tempfile::tempdir().unwrap();
    // Warn above 10 KiB, block above 20 KiB per SPEC.
    let limits = "warn_mb = 0.009765625\nlimit_mb = 0.01953125\n";
    let config = workspace(dir.path(), "consensus.db", "");
    write_config(&config, "consensus.db", limits);
    evidence(dir.path(), "SPEC-KIT-900", 30 * 1024);
    evidence(dir.path(), "SPEC-KIT-901", 15 * 1024);
    evidence(dir.path(), "SPEC-KIT-902", 1024);
    let engine = builder(&config).start().await.unwrap();

    let blocked = engine.evidence_guard("SPEC-KIT-900").await.unwrap();
    assert!(blocked.is_blocked(), "{blocked:?}");
    assert_eq!(blocked.figures().total.bytes, 30 * 1024);
    let warned = engine.evidence_guard("SPEC-KIT-901").await.unwrap();
    assert_eq!(warned.verdict().as_str(), "warn");
    let allowed = engine.evidence_guard("SPEC-KIT-902").await.unwrap();
    assert_eq!(allowed.verdict().as_str(), "ok");
    let err = engine.evidence_guard("../etc").await.unwrap_err();
    assert!(err.to_string().contains("../etc"), "{err}");

    let usage = engine.evidence_usage().await.unwrap();
    let specs: Vec<(&str, u64)> = usage
        .specs
        .iter()
        .map(|s| (s.spec.as_str(), s.total.bytes))
        .collect();
    assert_eq!(
        specs,
        [
            ("SPEC-KIT-900", 30 * 1024),
            ("SPEC-KIT-901", 15 * 1024),
            ("SPEC-KIT-902", 1024)
        ]
    );
    assert_eq!(
        (usage.counts.ok, usage.counts.warn, usage.counts.block),
        (1, 1, 1)
    );

    // A reload that raises the limit changes the guard's answer for later calls.
    write_config(&config, "consensus.db", "warn_mb = 1.0\nlimit_mb = 2.0\n");
    assert!(matches!(
        engine.reload().await,
        ReloadOutcome::Applied { .. }
    ));
    let after = engine.evidence_guard("SPEC-KIT-900").await.unwrap();
    assert_eq!(after.verdict().as_str(), "ok");
    engine.shutdown().await;
}

const SH_AGENT: &str = r#"
[[spawn.agents]]
name = "alpha"
command = "/bin/sh"
args = ["-c", "cat \"$0\" > \"$1\"", "{prompt_file}", "{output_file}"]

[[spawn.agents]]
name = "beta"
command = "/bin/sh"
args = ["-c", "cat \"$0\" > \"$1\"", "{prompt_file}", "{output_file}"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_agents_records_metrics_and_reports_them_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(dir.path(), "consensus.db", SH_AGENT);
    let engine = builder(&config).start().await.unwrap();
    let mut events = engine.subscribe();

    let spec = speckit_engine::SpecId::parse("SPEC-KIT-900").unwrap();
    let batch = engine
        .spawn_agents(speckit_hygiene::embed::SpawnRequest::new(
            spec,
            "plan",
            "say hello",
        ))
        .await
        .unwrap();
    assert_eq!(batch.metrics.agent_count, 2);
    assert!(batch.failures.is_empty(), "{:?}", batch.failures);
    for handle in batch.handles {
        let done = handle.wait().await.unwrap();
        assert!(done.succeeded(), "{done:?}");
        assert_eq!(done.response, "say hello");
    }
    let metrics = next_event(
        &mut events,
        |e| matches!(e, EngineEvent::Plugin { kind, .. } if kind == "spawn_metrics"),
    )
    .await;
    let EngineEvent::Plugin { plugin, data, .. } = metrics else {
        unreachable!()
    };
    assert_eq!(plugin, "spawn");
    assert_eq!(data["agent_count"], 2);

    let stats = engine.spawn_stats().await.unwrap();
    assert_eq!((stats.batches, stats.agents, stats.agents_ok), (1, 2, 2));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_agents_spawned_through_the_handle() {
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(
        dir.path(),
        "consensus.db",
        "[[spawn.agents]]\nname = \"sleeper\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"sleep 60\"]\n",
    );
    let engine = builder(&config).start().await.unwrap();
    let spec = speckit_engine::SpecId::parse("SPEC-KIT-900").unwrap();
    let mut batch = engine
        .spawn_agents(speckit_hygiene::embed::SpawnRequest::new(spec, "plan", "p"))
        .await
        .unwrap();
    let agent = batch.handles.pop().expect("the agent is running");
    let waiting = tokio::spawn(agent.wait());
    engine.shutdown().await;
    let done = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the agent outlived the engine")
        .unwrap();
    // Its completion could not be recorded (the database is closed) or was recorded as a
    // failure; either way the process is gone, well before its 60 s.
    if let Ok(done) = done {
        assert!(!done.succeeded(), "{done:?}");
    }
}

/// A typo or a mistyped value in a job's options is refused by name, with its kind, and
/// changes nothing: `{"dryrun": true}` must never be a real cleanup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistyped_job_options_are_refused_by_name_and_change_nothing() {
    use speckit_engine::JobErrorKind;
    let dir = tempfile::tempdir().unwrap();
    let config = workspace(dir.path(), "consensus.db", "");
    std::fs::write(
        dir.path().join("SPEC.md"),
        "| ID | Title | Status |\n|---|---|---|\n| SPEC-KIT-900 | old | Done |\n",
    )
    .unwrap();
    evidence(dir.path(), "SPEC-KIT-900", 1024);
    let file = dir
        .path()
        .join("evidence/commands/SPEC-KIT-900/plan_20260301T000000Z.json");
    let engine = builder(&config).start().await.unwrap();

    let refused = [
        ("cleanup", json!({ "dryrun": true }), "dryrun"),
        ("cleanup", json!({ "dry_run": "true" }), "dry_run"),
        (
            "cleanup",
            json!({ "dry_run": true, "spek": "SPEC-KIT-900" }),
            "spek",
        ),
        ("cleanup", json!({ "spec": "../etc" }), "spec"),
        ("cleanup", json!([true]), "must be an object"),
        (
            "restore",
            json!({ "spec": "SPEC-KIT-900", "too": "/tmp" }),
            "too",
        ),
        ("restore", json!(null), "spec"),
        ("vacuum", json!({ "dryrun": true }), "dryrun"),
        ("integrity_check", json!({ "quick": true }), "quick"),
        (
            "spawn",
            json!({ "spec": "SPEC-KIT-900", "stage": "plan", "agent": ["a"] }),
            "agent",
        ),
    ];
    for (job, args, named) in refused {
        let run = engine.run_job(job, args.clone()).await.unwrap();
        assert_eq!(run.outcome, JobOutcome::Failed, "{job} {args}");
        assert_eq!(
            run.error_kind,
            Some(JobErrorKind::InvalidOptions),
            "{job} {args}: {run:?}"
        );
        let error = run.error.clone().unwrap();
        assert!(
            error.contains(job) && error.contains(named),
            "{job} {args}: {error}"
        );
        assert!(file.exists(), "{job} {args} changed the evidence");
    }
    assert!(!dir.path().join("evidence/cleanup/archives").exists());

    // The correct spelling plans without touching anything; no options runs for real.
    let dry = engine
        .run_job("cleanup", json!({ "dry_run": true }))
        .await
        .unwrap();
    assert_eq!(dry.outcome, JobOutcome::Succeeded, "{dry:?}");
    assert_eq!(dry.error_kind, None);
    assert!(file.exists());
    let real = engine.run_job("cleanup", json!({})).await.unwrap();
    assert_eq!(real.outcome, JobOutcome::Succeeded, "{real:?}");
    assert!(!file.exists(), "a real cleanup archives the finished SPEC");
    engine.shutdown().await;
}

/// Every compiled-in job's report reads back as its plugin's type, and as no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_compiled_in_jobs_report_reads_back_as_its_type() {
    use speckit_retention::job::CleanupReport;
    use speckit_vacuum::integrity_job::IntegrityReport;
    use speckit_vacuum::report::VacuumReport;

    let dir = tempfile::tempdir().unwrap();
    // One finished SPEC with old evidence: the dry run plans to archive it.
    std::fs::create_dir_all(dir.path().join("evidence/commands/SPEC-KIT-001")).unwrap();
    let old = dir
        .path()
        .join("evidence/commands/SPEC-KIT-001/run_20200101T000000Z.log");
    std::fs::write(&old, vec![b'x'; 4096]).unwrap();
    let config = workspace(dir.path(), "consensus.db", "");
    std::fs::write(
        dir.path().join("SPEC.md"),
        "| ID | Title | Status |\n|---|---|---|\n| SPEC-KIT-001 | x | Done |\n",
    )
    .unwrap();
    let engine = builder(&config)
        .scheduler(false)
        .watch_config(false)
        .start()
        .await
        .unwrap();

    let cleanup = engine
        .run_job("cleanup", json!({ "dry_run": true }))
        .await
        .unwrap();
    let report = cleanup.report.expect("a report");
    let figures: CleanupReport = report.figures().unwrap();
    assert!(figures.dry_run);
    assert_eq!(figures.planned.archive_files, 1, "{figures:?}");
    assert_eq!(figures.planned.archive_bytes, 4096);
    assert_eq!(
        figures.figures.archived_files, 0,
        "a dry run archives nothing"
    );
    assert!(old.exists());
    let wrong = report.figures::<IntegrityReport>().unwrap_err();
    assert!(wrong.to_string().contains("IntegrityReport"), "{wrong}");

    let vacuum = engine
        .run_job("vacuum", json!({ "dry_run": true }))
        .await
        .unwrap();
    let figures: VacuumReport = vacuum.report.expect("a report").figures().unwrap();
    assert!(figures.page_size > 0, "{figures:?}");

    let integrity = engine
        .run_job("integrity_check", serde_json::Value::Null)
        .await
        .unwrap();
    let figures: IntegrityReport = integrity.report.expect("a report").figures().unwrap();
    assert!(figures.check.ok);
    assert_eq!(figures.check.output, ["ok"]);
    engine.shutdown().await;
}
