//! `spawn stats` reads whatever is there: a read-only open of a database spawn never wrote
//! to (no spawn tables), or of no database at all, reports no batches and creates nothing.

mod support;

use speckit_engine::storage::{table_exists, StorageOptions};
use speckit_engine::Storage;
use speckit_spawn::stats::{load, SpawnStats};
use speckit_spawn::{spawn_agents, SpawnRequest};
use support::*;

fn assert_empty(stats: &SpawnStats) {
    assert_eq!((stats.batches, stats.agents), (0, 0), "{stats:?}");
    assert!(stats.agent_success_rate.is_none() && stats.batch_total.is_none());
    assert!(stats.comparisons.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_of_a_missing_database_are_empty_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere").join("consensus.db");
    let storage = Storage::open_read_only(StorageOptions::new(&path)).unwrap();
    assert!(!storage.exists());
    assert_empty(&load(&storage).await.unwrap());
    assert!(!path.exists());
    assert!(!dir.path().join("nowhere").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_without_spawn_tables_are_empty() {
    let fx = Fixture::new();
    // A writable storage spawn never ran on: the host's and the engine's tables only.
    assert_empty(&load(&fx.storage).await.unwrap());
    fx.storage.close();

    let read_only = Storage::open_read_only(StorageOptions::new(fx.storage.path())).unwrap();
    let tables = read_only
        .read(|c| {
            Ok((
                table_exists(c, "agent_executions")?,
                table_exists(c, "hygiene_spawn_batches")?,
                table_exists(c, "hygiene_spawn_metrics")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(tables, (true, false, false));
    assert_empty(&load(&read_only).await.unwrap());
    // Reading created nothing.
    let still = read_only
        .read(|c| table_exists(c, "hygiene_spawn_batches"))
        .await
        .unwrap();
    assert!(!still);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_read_only_see_what_a_spawn_stored() {
    let fx = Fixture::new();
    let policy = fx.policy(
        vec![shell("solo", "printf hi > \"$1\"", &["{output_file}"])],
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
    for handle in batch.handles {
        assert!(handle.wait().await.unwrap().succeeded());
    }
    let read_only = Storage::open_read_only(StorageOptions::new(fx.storage.path())).unwrap();
    let stats = load(&read_only).await.unwrap();
    assert_eq!((stats.batches, stats.agents, stats.agents_ok), (1, 1, 1));
}
