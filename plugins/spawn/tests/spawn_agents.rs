//! `spawn_agents` end to end with real processes (the stub agent): rows, evidence files,
//! responses, metrics, the sequential baseline, placeholders and bad requests.
//!
//! These tests run real processes, so they use the real clock: tokio's paused clock would
//! auto-advance through every spawn timeout while a process is busy starting.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use speckit_engine::events::EngineEvent;
use speckit_spawn::AgentReadiness;
use speckit_spawn::{spawn_agents, SpawnError, SpawnRequest};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_spawn_complete_and_are_recorded() {
    let fx = Fixture::new();
    let policy = fx.policy(
        vec![
            stub("gemini", &["--ready-after-ms", "5"]),
            stub("claude", &[]),
            stub("gpt_pro", &["--run-ms", "10"]),
        ],
        |_| {},
    );
    let mut events = fx.events.subscribe();
    let request = SpawnRequest::new(spec("SPEC-KIT-900"), "plan", "Plan SPEC-KIT-900\nmore");
    let batch = spawn_agents(&fx.storage, &policy, &fx.events, request)
        .await
        .expect("spawn");
    assert!(batch.failures.is_empty(), "{:?}", batch.failures);
    assert!(batch.warnings.is_empty(), "{:?}", batch.warnings);
    let names: Vec<_> = batch
        .handles
        .iter()
        .map(|h| h.agent().to_string())
        .collect();
    assert_eq!(names, ["gemini", "claude", "gpt_pro"]);
    let m = &batch.metrics;
    assert_eq!((m.agent_count, m.ok_count, m.failed_count), (3, 3, 0));
    assert_eq!(m.max_concurrency, 8);
    for a in &m.agents {
        assert!(a.ok && a.pid.is_some() && a.error.is_none(), "{a:?}");
        assert!(
            a.spawn_us > 0 && a.spawn_us <= m.total_us,
            "{a:?} total {}",
            m.total_us
        );
    }

    // Rows exist before completion: spawned, not completed.
    assert_eq!(
        fx.count("SELECT count(*) FROM agent_executions WHERE completed_at IS NULL AND spec_id = 'SPEC-KIT-900' AND stage = 'spec-plan' AND phase_type = 'regular_stage'").await,
        3
    );
    // Metrics are stored before spawn_agents returns, and exported.
    let batch_id = m.batch_id.clone();
    assert_eq!(
        fx.count(&format!(
            "SELECT count(*) FROM hygiene_spawn_metrics WHERE batch_id = '{batch_id}' AND ok = 1"
        ))
        .await,
        3
    );
    assert_eq!(
        fx.count(&format!("SELECT total_us FROM hygiene_spawn_batches WHERE batch_id = '{batch_id}' AND ok_count = 3 AND failed_count = 0")).await,
        m.total_us as i64
    );
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&batch.metrics_file).unwrap()).unwrap();
    assert_eq!(
        batch.metrics_file,
        fx.spec_dir("SPEC-KIT-900").join("spawn_metrics.json")
    );
    assert_eq!(exported["batch_id"], batch_id.as_str());
    assert_eq!(exported["agents"].as_array().unwrap().len(), 3);
    assert_eq!(exported["total_us"], m.total_us);
    // ...and sent as an event.
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(EngineEvent::Plugin { plugin, kind, data }) = events.recv().await {
                if kind == "spawn_metrics" {
                    return (plugin, data);
                }
            }
        }
    })
    .await
    .expect("spawn_metrics event");
    assert_eq!(event.0, "spawn");
    assert_eq!(event.1["batch_id"], batch_id.as_str());

    let mut completions = Vec::new();
    for handle in batch.handles {
        completions.push(handle.wait().await.expect("completion"));
    }
    for c in &completions {
        assert!(c.succeeded(), "{c:?}");
        assert_eq!(c.exit, "exit status 0");
        assert!(
            c.response
                .contains("\"prompt_first_line\":\"Plan SPEC-KIT-900\""),
            "{}",
            c.response
        );
        assert_eq!(c.response_path, c.paths.output);
        assert!(!c.truncated);
        assert!(process_gone(c.pid));
        assert_eq!(
            std::fs::read_to_string(&c.paths.prompt).unwrap(),
            "Plan SPEC-KIT-900\nmore"
        );
        assert_eq!(std::fs::read_to_string(&c.paths.stdout).unwrap(), "READY\n");
    }
    // Every response on its execution row; no consensus rows (spawning is no consensus).
    assert_eq!(fx.count("SELECT count(*) FROM agent_outputs").await, 0);
    assert_eq!(fx.count("SELECT count(*) FROM consensus_runs").await, 0);
    assert_eq!(
        fx.count("SELECT count(*) FROM agent_executions WHERE completed_at IS NOT NULL AND extraction_error IS NULL AND response_text LIKE '%prompt_bytes%'").await,
        3
    );
    assert_eq!(
        fx.text("SELECT run_id FROM agent_executions WHERE agent_name = 'claude'")
            .await,
        Some(batch_id)
    );
    // Four evidence files per agent plus the metrics export, named with the batch's time.
    let files = files_in(&fx.spec_dir("SPEC-KIT-900"));
    assert_eq!(files.len(), 3 * 4 + 1, "{files:?}");
    assert!(files
        .iter()
        .filter(|f| f.starts_with("spawn_plan_"))
        .all(|f| f.contains('T') && f.contains("Z-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_is_bounded_and_the_rest_stays_in_the_file() {
    let fx = Fixture::new();
    let policy = fx.policy(vec![stub("big", &["--output-bytes", "5000"])], |s| {
        s.max_response_bytes = 1001
    });
    let batch = spawn_agents(
        &fx.storage,
        &policy,
        &fx.events,
        SpawnRequest::new(spec("SPEC-1"), "tasks", "p"),
    )
    .await
    .unwrap();
    let c = batch
        .handles
        .into_iter()
        .next()
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(c.succeeded());
    assert!(c.truncated);
    assert!(
        c.response.len() <= 1001 && c.response.len() >= 995,
        "{}",
        c.response.len()
    );
    assert!(c.response_bytes >= 5000);
    assert_eq!(
        std::fs::metadata(&c.paths.output).unwrap().len(),
        c.response_bytes
    );
    let stored = fx
        .text("SELECT response_text FROM agent_executions")
        .await
        .unwrap();
    assert_eq!(stored, c.response);
    assert!(std::fs::read_to_string(&c.paths.output)
        .unwrap()
        .starts_with(&stored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_one_is_sequential_and_more_is_parallel() {
    // Lower bounds hold on any machine; the one upper bound (nobody queued in parallel)
    // allows a whole readiness delay of scheduling stall on a loaded 2-core CI machine.
    const READY_US: u64 = 150_000;
    let ready_ms = (READY_US / 1000).to_string();
    let fx = Fixture::new();
    let agents = || {
        vec![
            stub("a", &["--ready-after-ms", &ready_ms]),
            stub("b", &["--ready-after-ms", &ready_ms]),
            stub("c", &["--ready-after-ms", &ready_ms]),
        ]
    };
    let sequential = fx.policy(agents(), |s| s.max_concurrency = 1);
    let batch = spawn_agents(
        &fx.storage,
        &sequential,
        &fx.events,
        SpawnRequest::new(spec("SPEC-1"), "plan", "p"),
    )
    .await
    .unwrap();
    // One at a time: the k-th agent to get its slot waited for k readiness delays.
    let mut spawn: Vec<u64> = batch.metrics.agents.iter().map(|a| a.spawn_us).collect();
    spawn.sort_unstable();
    for (k, us) in spawn.iter().enumerate() {
        assert!(
            *us >= READY_US * (k as u64 + 1),
            "agent {k} ready after {us} us: {spawn:?}"
        );
    }
    // Queued time runs from each agent's own task start, which may come a few
    // milliseconds after the first agent took the slot (seen: 146 ms for a 150 ms agent on
    // a loaded machine): the second waited most of one agent, the third most of two.
    let mut queued: Vec<u64> = batch.metrics.agents.iter().map(|a| a.queued_us).collect();
    queued.sort_unstable();
    assert!(
        queued[1] >= READY_US / 2 && queued[2] >= READY_US * 3 / 2,
        "{queued:?}"
    );
    for h in batch.handles {
        assert!(h.wait().await.unwrap().succeeded());
    }

    let parallel = fx.policy(agents(), |s| s.max_concurrency = 3);
    let batch = spawn_agents(
        &fx.storage,
        &parallel,
        &fx.events,
        SpawnRequest::new(spec("SPEC-1"), "plan", "p"),
    )
    .await
    .unwrap();
    // Nobody waited for a slot: all three were starting at once.
    for a in &batch.metrics.agents {
        assert!(a.queued_us < READY_US, "{a:?}");
    }
    for h in batch.handles {
        assert!(h.wait().await.unwrap().succeeded());
    }
    let stats = speckit_spawn::stats::load(&fx.storage).await.unwrap();
    assert_eq!((stats.batches, stats.agents, stats.agents_ok), (2, 6, 6));
    assert_eq!(stats.comparisons.len(), 1);
    assert_eq!(stats.comparisons[0].agents, 3);
    assert_eq!(stats.sequential.as_ref().unwrap().count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholders_env_working_dir_and_relative_commands() {
    let fx = Fixture::new();
    let work = fx.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let bin = fx.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("agent.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '%s|%s|%s|%s|%s' \"$1\" \"$2\" \"$(pwd)\" \"$AGENT_MODEL\" \"$(head -n1 \"$3\")\" > \"$4\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = speckit_spawn::AgentPolicy {
        name: "scripted".into(),
        // Relative with a separator: resolved against the config folder, not working_dir.
        command: "bin/agent.sh".into(),
        args: ["{spec_id}", "{stage}", "{prompt_file}", "{output_file}"]
            .map(String::from)
            .to_vec(),
        env: BTreeMap::from([("AGENT_MODEL".to_string(), "m-1".to_string())]),
        working_dir: Some(work.clone()),
        timeout_ms: 30_000,
        readiness: AgentReadiness::Started,
        ..speckit_spawn::AgentPolicy::default()
    };
    let policy = fx.policy(vec![agent], |_| {});
    let batch = spawn_agents(
        &fx.storage,
        &policy,
        &fx.events,
        SpawnRequest::new(spec("SPEC-KIT-7"), "validate", "line one\n"),
    )
    .await
    .unwrap();
    assert!(batch.failures.is_empty(), "{:?}", batch.failures);
    let c = batch
        .handles
        .into_iter()
        .next()
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(c.succeeded(), "{c:?}");
    let work = work.canonicalize().unwrap();
    assert_eq!(
        c.response,
        format!("SPEC-KIT-7|validate|{}|m-1|line one", work.display())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    let fx = Fixture::new();
    let policy = fx.policy(vec![stub("gemini", &[]), stub("claude", &[])], |_| {});
    let run = |request: SpawnRequest| spawn_agents(&fx.storage, &policy, &fx.events, request);

    let err =
        run(SpawnRequest::new(spec("SPEC-1"), "plan", "p").with_agents(["gemini", "nope", "nada"]))
            .await
            .unwrap_err();
    assert!(matches!(err, SpawnError::UnknownAgents { .. }));
    let text = err.to_string();
    assert!(
        text.contains("nope, nada") && text.contains("gemini, claude"),
        "{text}"
    );

    let err = run(SpawnRequest::new(spec("SPEC-1"), "plan", "p").with_agents(["gemini", "gemini"]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("\"gemini\" is requested twice"),
        "{err}"
    );

    let err = run(SpawnRequest::new(spec("SPEC-1"), "../../etc", "p"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("invalid stage \"../../etc\""),
        "{err}"
    );

    let empty = fx.policy(vec![], |_| {});
    let err = spawn_agents(
        &fx.storage,
        &empty,
        &fx.events,
        SpawnRequest::new(spec("SPEC-1"), "plan", "p"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no [[spawn.agents]]"), "{err}");
    assert!(err.to_string().contains("speckit.toml"), "{err}");

    // A symlinked SPEC folder is refused before anything is written.
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(fx.evidence_root.join("commands")).unwrap();
    std::os::unix::fs::symlink(outside.path(), fx.spec_dir("SPEC-2")).unwrap();
    let err = run(SpawnRequest::new(spec("SPEC-2"), "plan", "p"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(files_in(outside.path()).is_empty());

    assert_eq!(fx.count("SELECT count(*) FROM agent_executions").await, 0);
    assert_eq!(
        fx.count("SELECT count(*) FROM hygiene_spawn_batches").await,
        0
    );
    assert!(files_in(&fx.spec_dir("SPEC-1")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_recorded_with_its_cause_and_partial_output() {
    let fx = Fixture::new();
    let policy = fx.policy(
        vec![
            stub("good", &[]),
            stub(
                "bad",
                &["--exit-code", "9", "--stderr", "rate limited by provider"],
            ),
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
    let mut completions = Vec::new();
    for h in batch.handles {
        completions.push(h.wait().await.unwrap());
    }
    let bad = completions.iter().find(|c| c.agent == "bad").unwrap();
    let failure = bad.failure.as_ref().expect("failed").to_string();
    assert!(
        failure.contains("exit status 9") && failure.contains("rate limited by provider"),
        "{failure}"
    );
    assert!(
        bad.response.contains("prompt_bytes"),
        "partial output is kept: {}",
        bad.response
    );
    let error = fx
        .text("SELECT extraction_error FROM agent_executions WHERE agent_name = 'bad' AND completed_at IS NOT NULL")
        .await
        .unwrap();
    assert_eq!(error, failure);
    let partial = fx
        .text("SELECT response_text FROM agent_executions WHERE agent_name = 'bad'")
        .await
        .unwrap();
    assert_eq!(partial, bad.response);
    assert_eq!(
        fx.count("SELECT count(*) FROM agent_executions WHERE agent_name = 'good' AND extraction_error IS NULL AND response_text LIKE '%prompt_bytes%'").await,
        1
    );
    assert_eq!(fx.count("SELECT count(*) FROM agent_outputs").await, 0);
    assert_eq!(fx.count("SELECT count(*) FROM consensus_runs").await, 0);
}
