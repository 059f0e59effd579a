//! Where a spawn's time goes, as the metrics report it (issue 17): every step of every
//! agent is measured and the steps come in the order they happen; the rows of a batch
//! whose agents all start at once are committed in one transaction (one writer hand-off,
//! not one per agent), and a batch whose agents queue for slots writes each agent's row
//! when it starts.

mod support;

use speckit_spawn::{spawn_agents, SpawnRequest};
use support::*;

/// Spawns `policy`'s agents, waits for them, and returns the batch's metrics with the
/// number of write transactions the spawn itself committed (until `spawn_agents` returned).
async fn spawn_counting_commits(
    fx: &Fixture,
    policy: &speckit_engine::PolicySnapshot,
) -> (speckit_spawn::BatchMetrics, u64) {
    // The schema's own writes happen once per storage: get them out of the count.
    fx.storage
        .ensure_schema(&speckit_spawn::SPAWN_SCHEMA)
        .await
        .unwrap();
    let before = fx.storage.stats().writes_committed;
    let batch = spawn_agents(
        &fx.storage,
        policy,
        &fx.events,
        SpawnRequest::new(spec("SPEC-KIT-900"), "plan", "p"),
    )
    .await
    .expect("spawn");
    let commits = fx.storage.stats().writes_committed - before;
    assert!(batch.failures.is_empty(), "{:?}", batch.failures);
    for handle in batch.handles {
        assert!(handle.wait().await.unwrap().succeeded());
    }
    (batch.metrics, commits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_is_measured_in_order() {
    let fx = Fixture::new();
    let agents = (0..4)
        .map(|i| stub(&format!("agent{i}"), &["--ready-after-ms", "5"]))
        .collect();
    let policy = fx.policy(agents, |_| {});
    let (m, _) = spawn_counting_commits(&fx, &policy).await;
    assert!(m.setup_us <= m.total_us, "{m:?}");
    for a in &m.agents {
        let p = a.phases;
        assert!(m.setup_us <= p.task_started_us, "{a:?}");
        assert!(p.task_started_us <= p.slot_us, "{a:?}");
        assert!(p.slot_us < p.prompt_file_us, "{a:?}");
        assert!(p.prompt_file_us < p.process_spawned_us, "{a:?}");
        // The batch's rows were submitted before its agents' tasks began.
        assert!(p.row_committed_us > 0, "{a:?}");
        // Ready 5 ms after its main() began, which was after the spawn call began (the
        // call may return later than the child starts: the parent is scheduled after it).
        assert!(p.ready_line_us >= p.prompt_file_us + 5_000, "{a:?}");
        let last = p.row_committed_us.max(p.ready_line_us);
        assert!(last <= a.spawn_us && a.spawn_us <= m.total_us, "{a:?}");
    }
    // The export carries them too.
    let exported: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fx.spec_dir("SPEC-KIT-900").join("spawn_metrics.json")).unwrap(),
    )
    .unwrap();
    assert!(exported["setup_us"].as_u64().is_some(), "{exported}");
    assert!(
        exported["agents"][0]["phases"]["ready_line_us"]
            .as_u64()
            .is_some_and(|v| v > 0),
        "{exported}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_starts_at_once_commits_its_rows_together() {
    let fx = Fixture::new();
    let agents = (0..6).map(|i| stub(&format!("agent{i}"), &[])).collect();
    let policy = fx.policy(agents, |s| s.max_concurrency = 8);
    let (m, commits) = spawn_counting_commits(&fx, &policy).await;
    assert_eq!(m.ok_count, 6);
    // One transaction for the six rows, one for the batch's metrics.
    assert_eq!(commits, 2);
    // All six rows were there when each agent counted as spawned, with one time.
    assert_eq!(
        fx.count("SELECT count(DISTINCT spawned_at) FROM agent_executions")
            .await,
        1
    );
    assert_eq!(
        fx.count("SELECT count(*) FROM agent_executions WHERE completed_at IS NOT NULL AND extraction_error IS NULL")
            .await,
        6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_queue_for_slots_write_their_rows_when_they_start() {
    let fx = Fixture::new();
    let agents = (0..3).map(|i| stub(&format!("agent{i}"), &[])).collect();
    let policy = fx.policy(agents, |s| s.max_concurrency = 1);
    let (m, commits) = spawn_counting_commits(&fx, &policy).await;
    assert_eq!(m.ok_count, 3);
    // A row per agent, as each got its slot, then the metrics.
    assert_eq!(commits, 4);
    for a in &m.agents[1..] {
        assert!(a.queued_us > 0, "{a:?}");
    }
}
