//! Failing agents among healthy ones (missing binary, exits at once, never ready, leaves a
//! child behind), run timeouts, cancellation and dropped handles: the right error, no
//! orphan process (checked by pid), rows marked failed, healthy agents unaffected.
//!
//! Real processes, real clock (see `spawn_agents.rs`).

mod support;

use std::time::Duration;

use speckit_spawn::AgentReadiness;
use speckit_spawn::{spawn_agents, FailureCause, RunFailure, SpawnError, SpawnRequest};
use support::*;

const SPAWN_TIMEOUT_MS: u64 = 2_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_agents_are_reported_killed_and_marked_while_healthy_ones_run() {
    let fx = Fixture::new();
    let mut missing = stub("missing", &[]);
    missing.command = fx.dir.path().join("no-such-agent").display().to_string();
    let mut leaves_child = shell(
        "leaves_child",
        // Starts a grandchild, records its pid, and never prints READY.
        "sleep 300 & echo $! > \"$1\"; while :; do sleep 1; done",
        &["{output_file}"],
    );
    leaves_child.readiness = AgentReadiness::Line("READY".into());
    let policy = fx.policy(
        vec![
            stub("healthy_1", &["--ready-after-ms", "20"]),
            missing,
            stub(
                "exits_at_once",
                &[
                    "--fail-before-ready",
                    "--exit-code",
                    "7",
                    "--stderr",
                    "model quota exceeded",
                ],
            ),
            stub("never_ready", &["--never-ready"]),
            leaves_child,
            stub("healthy_2", &[]),
        ],
        |s| s.spawn_timeout_ms = SPAWN_TIMEOUT_MS,
    );
    let batch = spawn_agents(
        &fx.storage,
        &policy,
        &fx.events,
        SpawnRequest::new(spec("SPEC-KIT-9"), "plan", "p"),
    )
    .await
    .expect("the batch itself succeeds");

    let healthy: Vec<_> = batch
        .handles
        .iter()
        .map(|h| h.agent().to_string())
        .collect();
    assert_eq!(healthy, ["healthy_1", "healthy_2"]);
    let failed: Vec<_> = batch.failures.iter().map(|f| f.agent.as_str()).collect();
    assert_eq!(
        failed,
        ["missing", "exits_at_once", "never_ready", "leaves_child"]
    );

    let by_name = |name: &str| batch.failures.iter().find(|f| f.agent == name).unwrap();
    let missing = by_name("missing");
    assert!(
        matches!(&missing.cause, FailureCause::Start { message, command, .. }
        if message.contains("No such file") && command.ends_with("no-such-agent")),
        "{missing}"
    );
    assert!(missing.pid.is_none());
    assert!(missing
        .to_string()
        .starts_with("agent \"missing\" failed to spawn: cannot start"));

    let crashed = by_name("exits_at_once");
    assert_eq!(
        crashed.cause,
        FailureCause::ExitedBeforeReady {
            status: "exit status 7".into(),
            stderr_tail: Some("model quota exceeded".into())
        }
    );
    let never = by_name("never_ready");
    assert_eq!(
        never.cause,
        FailureCause::NotReady {
            timeout_ms: SPAWN_TIMEOUT_MS,
            line: "READY".into()
        }
    );
    assert!(matches!(
        by_name("leaves_child").cause,
        FailureCause::NotReady { .. }
    ));

    // No orphans: every failed agent's process is gone (reaped before spawn_agents
    // returned), and so is the grandchild one of them started (its group was killed).
    for f in &batch.failures {
        if let Some(pid) = f.pid {
            assert!(
                process_gone(pid),
                "{} (pid {pid}) is still running",
                f.agent
            );
        }
    }
    let pid_file = std::fs::read_to_string(fx.spec_dir("SPEC-KIT-9").join(format!(
        "spawn_plan_{}_leaves_child_output.txt",
        batch.metrics.batch_id
    )))
    .expect("the grandchild's pid");
    let grandchild: u32 = pid_file.trim().parse().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || process_gone(grandchild)).await,
        "grandchild {grandchild} survived its agent"
    );

    // Failed rows are complete and say why; nothing is left half-written.
    for f in &batch.failures {
        let error = fx
            .text(&format!(
                "SELECT extraction_error FROM agent_executions WHERE agent_id = '{}' AND completed_at IS NOT NULL",
                f.agent_id
            ))
            .await
            .unwrap_or_else(|| panic!("{} has no failed row", f.agent));
        assert_eq!(error, f.cause.to_string());
    }
    // Healthy agents were not held up by the failing ones (they were ready long before
    // the spawn timeout the failing ones ran into) and complete normally.
    for m in batch
        .metrics
        .agents
        .iter()
        .filter(|m| m.agent.starts_with("healthy"))
    {
        assert!(m.ok && m.spawn_us < SPAWN_TIMEOUT_MS * 1000, "{m:?}");
    }
    assert_eq!((batch.metrics.ok_count, batch.metrics.failed_count), (2, 4));
    assert_eq!(
        fx.count(&format!(
            "SELECT count(*) FROM hygiene_spawn_metrics WHERE batch_id = '{}' AND ok = 0 AND error IS NOT NULL",
            batch.metrics.batch_id
        ))
        .await,
        4
    );
    for handle in batch.handles {
        let c = handle.wait().await.unwrap();
        assert!(c.succeeded(), "{c:?}");
    }
    assert_eq!(
        fx.count("SELECT count(*) FROM agent_executions WHERE completed_at IS NOT NULL AND extraction_error IS NULL AND response_text IS NOT NULL").await,
        2
    );
    assert_eq!(fx.count("SELECT count(*) FROM agent_outputs").await, 0);
    assert_eq!(fx.count("SELECT count(*) FROM consensus_runs").await, 0);
    assert_eq!(
        fx.count("SELECT count(*) FROM agent_executions WHERE completed_at IS NULL")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_cannot_be_written_stops_the_process_it_started() {
    let fx = Fixture::new();
    // A database fault for one agent only: its INSERT aborts.
    fx.storage
        .write(|tx| {
            tx.execute_batch(
                "CREATE TRIGGER inject_fault BEFORE INSERT ON agent_executions WHEN NEW.agent_name = 'doomed' BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
            )
            .map_err(|source| speckit_engine::StorageError::Sqlite { path: Default::default(), cause: source })
        })
        .await
        .unwrap();
    let policy = fx.policy(
        vec![
            stub("doomed", &["--ready-after-ms", "5"]),
            stub("fine", &[]),
        ],
        |_| {},
    );
    let batch = spawn_agents(
        &fx.storage,
        &policy,
        &fx.events,
        SpawnRequest::new(spec("SPEC-1"), "plan", "p"),
    )
    .await
    .unwrap();
    assert_eq!(batch.failures.len(), 1);
    let doomed = &batch.failures[0];
    assert!(
        matches!(&doomed.cause, FailureCause::Database { message } if message.contains("injected fault")),
        "{doomed}"
    );
    // Its process had started alongside the write; it was killed and reaped.
    let pid = doomed.pid.expect("the process was started");
    assert!(process_gone(pid));
    assert_eq!(
        fx.count("SELECT count(*) FROM agent_executions WHERE agent_name = 'doomed'")
            .await,
        0
    );
    assert!(batch
        .handles
        .into_iter()
        .next()
        .unwrap()
        .wait()
        .await
        .unwrap()
        .succeeded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_longer_than_its_timeout_is_killed() {
    let fx = Fixture::new();
    let mut slow = stub("slow", &["--run-ms", "60000"]);
    slow.timeout_ms = 300;
    let policy = fx.policy(vec![slow, stub("quick", &[])], |_| {});
    let batch = spawn_agents(
        &fx.storage,
        &policy,
        &fx.events,
        SpawnRequest::new(spec("SPEC-1"), "plan", "p"),
    )
    .await
    .unwrap();
    let mut results = Vec::new();
    for h in batch.handles {
        results.push(h.wait().await.unwrap());
    }
    let slow = &results[0];
    assert_eq!(slow.failure, Some(RunFailure::TimedOut { timeout_ms: 300 }));
    assert_eq!(slow.exit, "signal 9");
    assert!(process_gone(slow.pid));
    assert!(results[1].succeeded());
    assert_eq!(
        fx.text("SELECT extraction_error FROM agent_executions WHERE agent_name = 'slow'")
            .await
            .unwrap(),
        "ran longer than timeout_ms = 300; killed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_during_initialisation_stops_everything_it_started() {
    let fx = Fixture::new();
    let policy = fx.policy(
        vec![
            stub("ready", &["--run-ms", "60000"]),
            stub("stuck", &["--never-ready"]),
        ],
        |s| s.spawn_timeout_ms = 120_000,
    );
    let mut events = fx.events.subscribe();
    let mut ready_events = fx.events.subscribe();
    let request = SpawnRequest::new(spec("SPEC-1"), "plan", "p");
    let cancel = request.cancel.clone();
    let (storage, events_bus) = (fx.storage.clone(), fx.events.clone());
    let spawning =
        tokio::spawn(async move { spawn_agents(&storage, &policy, &events_bus, request).await });
    // Cancel once "stuck" runs (never ready) and "ready" is ready.
    let started = wait_events(&mut events, "agent_started", &["stuck", "ready"]).await;
    wait_events(&mut ready_events, "agent_ready", &["ready"]).await;
    let (stuck, ready) = (&started[0], &started[1]);
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(20), spawning)
        .await
        .expect("cancellation is prompt")
        .unwrap();
    match result {
        Err(SpawnError::Cancelled { started, .. }) => assert_eq!(started, 2),
        other => panic!("expected Cancelled, got {other:?}"),
    }
    for data in [stuck, ready] {
        let pid = data["pid"].as_u64().unwrap() as u32;
        assert!(process_gone(pid), "{data} still running");
    }
    assert_eq!(
        fx.text("SELECT extraction_error FROM agent_executions WHERE agent_name = 'stuck'")
            .await
            .unwrap(),
        "cancelled before it was ready"
    );
    assert_eq!(
        fx.text("SELECT extraction_error FROM agent_executions WHERE agent_name = 'ready'")
            .await
            .unwrap(),
        "cancelled while running; killed"
    );
    // The cancelled batch's figures are still stored.
    assert_eq!(
        fx.count("SELECT count(*) FROM hygiene_spawn_metrics").await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_while_agents_run_kills_them() {
    let fx = Fixture::new();
    let policy = fx.policy(vec![stub("long", &["--run-ms", "60000"])], |_| {});
    let request = SpawnRequest::new(spec("SPEC-1"), "plan", "p");
    let cancel = request.cancel.clone();
    let batch = spawn_agents(&fx.storage, &policy, &fx.events, request)
        .await
        .unwrap();
    let handle = batch.handles.into_iter().next().unwrap();
    let pid = handle.pid();
    let waiting = tokio::spawn(handle.wait());
    cancel.cancel();
    let c = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("prompt")
        .unwrap()
        .unwrap();
    assert_eq!(c.failure, Some(RunFailure::Cancelled));
    assert!(process_gone(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_handle_kills_its_agent_and_marks_the_row() {
    let fx = Fixture::new();
    let policy = fx.policy(vec![stub("dropped", &["--run-ms", "60000"])], |_| {});
    let batch = spawn_agents(
        &fx.storage,
        &policy,
        &fx.events,
        SpawnRequest::new(spec("SPEC-1"), "plan", "p"),
    )
    .await
    .unwrap();
    let pid = batch.handles[0].pid();
    assert!(!process_gone(pid));
    drop(batch);
    assert!(
        eventually(Duration::from_secs(10), || process_gone(pid)).await,
        "dropped agent {pid} still running"
    );
    let storage = fx.storage.clone();
    let marked = async {
        loop {
            let error = storage
                .read(|c| {
                    c.query_row("SELECT extraction_error FROM agent_executions", [], |r| {
                        r.get::<_, Option<String>>(0)
                    })
                })
                .await
                .unwrap();
            if let Some(error) = error {
                return error;
            }
            tokio::task::yield_now().await;
        }
    };
    let error = tokio::time::timeout(Duration::from_secs(10), marked)
        .await
        .expect("row marked");
    assert_eq!(error, "its handle was dropped before it finished; killed");
}

/// An agent that starts a daemon (its own session, HUP and TERM ignored) and exits: the
/// daemon is found by the agent's marker and killed when the agent ends, and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_an_agent_leaves_behind_is_killed_when_the_agent_ends() {
    let fx = Fixture::new();
    let pid_file = fx.dir.path().join("daemon.pid");
    let daemonizing = shell(
        "daemonizing",
        "setsid sh -c 'trap \"\" HUP TERM; echo $$ > \"$0\"; while :; do sleep 1; done' \"$2\" \
         </dev/null >/dev/null 2>&1 & \
         while [ ! -s \"$2\" ]; do sleep 0.01; done; printf started > \"$1\"",
        &["{output_file}", pid_file.to_str().unwrap()],
    );
    let policy = fx.policy(vec![daemonizing], |_| {});
    let completions = fx.run_batch(&policy, "p").await;
    let daemon: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(completions[0].succeeded(), "{:?}", completions[0].failure);
    // The daemon, and the `sleep` it may be running at the time.
    let left = &completions[0].left_behind;
    assert!(
        left.contains(&daemon),
        "{left:?} misses the daemon {daemon}"
    );
    for &pid in left {
        assert!(
            eventually(Duration::from_secs(5), || process_gone(pid)).await,
            "{pid} (left by the agent; the daemon is {daemon}) outlived its agent"
        );
    }
}

/// An agent flooding its stdout: the log keeps `max_log_bytes`, ends with a line giving
/// the true size, and the completion reports both; the agent never blocks on the pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_agents_log_is_cut_at_its_cap_and_the_true_size_reported() {
    let fx = Fixture::new();
    let flood = shell("flood", "head -c 3145728 /dev/zero | tr '\\0' x", &[]);
    let policy = fx.policy(vec![flood], |s| s.max_log_bytes = 1024 * 1024);
    let completions = fx.run_batch(&policy, "p").await;
    let c = &completions[0];
    assert!(c.succeeded(), "{:?}", c.failure);
    assert_eq!(c.logs_cut.len(), 1, "{:?}", c.logs_cut);
    let cut = &c.logs_cut[0];
    assert_eq!(cut.path, c.paths.stdout);
    assert_eq!(
        (cut.total_bytes, cut.kept_bytes),
        (3 * 1024 * 1024, 1024 * 1024)
    );
    let log = std::fs::read(&c.paths.stdout).unwrap();
    let marker = "[speckit-hygiene: log cut at spawn.max_log_bytes = 1048576 bytes; the agent wrote 3145728 bytes, 2097152 dropped]\n";
    assert!(log.ends_with(marker.as_bytes()));
    assert_eq!(log.len(), 1024 * 1024 + 1 + marker.len());
}
