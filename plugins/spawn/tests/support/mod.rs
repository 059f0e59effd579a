//! Shared helpers of the spawn plugin's integration tests: a database and evidence root in
//! a temporary folder, policies with stub agents, process and row checks.

#![allow(dead_code)] // each test file uses a different subset

pub mod stub;

use speckit_retention::EvidencePolicy;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use speckit_engine::events::{EngineEvent, EventBus};
use speckit_engine::storage::StorageOptions;
use speckit_engine::{PolicySnapshot, SpecId, Storage};
use speckit_spawn::AgentPolicy;
use speckit_spawn::AgentReadiness;
use speckit_spawn::SpawnPolicy;

pub use stub::stub_agent;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub storage: Storage,
    pub events: EventBus,
    pub evidence_root: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Storage::open(StorageOptions::new(dir.path().join("consensus.db")))
            .expect("open storage");
        let evidence_root = dir.path().join("evidence");
        Self {
            dir,
            storage,
            events: EventBus::new(8192),
            evidence_root,
        }
    }

    /// A policy snapshot whose config folder is the fixture's folder.
    pub fn policy(
        &self,
        agents: Vec<AgentPolicy>,
        tune: impl FnOnce(&mut SpawnPolicy),
    ) -> PolicySnapshot {
        let mut snapshot = PolicySnapshot::empty(&self.dir.path().join("speckit.toml"));
        snapshot
            .policy
            .sections
            .update::<EvidencePolicy>(|s| s.root = self.evidence_root.clone());
        snapshot.policy.storage.database_path = self.storage.path().to_path_buf();
        snapshot.policy.sections.update::<SpawnPolicy>(|s| {
            // Only the test's agents, whatever this machine's ~/.code/config.toml says.
            s.host_config = "off".into();
            s.agents = agents;
            tune(s);
        });
        snapshot
    }

    /// Spawns `policy`'s agents for SPEC-KIT-900's `plan` with `prompt`, expecting every
    /// one to start, and waits for all of them: their completions, in the batch's order.
    pub async fn run_batch(
        &self,
        policy: &PolicySnapshot,
        prompt: &str,
    ) -> Vec<speckit_spawn::AgentCompletion> {
        let batch = speckit_spawn::spawn_agents(
            &self.storage,
            policy,
            &self.events,
            speckit_spawn::SpawnRequest::new(spec("SPEC-KIT-900"), "plan", prompt),
        )
        .await
        .unwrap();
        assert!(batch.failures.is_empty(), "{:?}", batch.failures);
        let mut completions = Vec::new();
        for handle in batch.handles {
            completions.push(handle.wait().await.unwrap());
        }
        completions
    }

    pub fn spec_dir(&self, spec: &str) -> PathBuf {
        self.evidence_root.join("commands").join(spec)
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let sql = sql.to_string();
        self.storage
            .read(move |c| c.query_row(&sql, [], |r| r.get::<_, i64>(0)))
            .await
            .expect("count query")
    }

    pub async fn text(&self, sql: &str) -> Option<String> {
        let sql = sql.to_string();
        self.storage
            .read(move |c| c.query_row(&sql, [], |r| r.get::<_, Option<String>>(0)))
            .await
            .expect("text query")
    }
}

pub fn spec(id: &str) -> SpecId {
    SpecId::parse(id).expect("valid SPEC-ID")
}

/// A stub agent that prints READY (after `ready_after_ms`) and writes its output file.
pub fn stub(name: &str, extra: &[&str]) -> AgentPolicy {
    let mut args: Vec<String> = ["--prompt", "{prompt_file}", "--output", "{output_file}"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    AgentPolicy {
        name: name.into(),
        command: stub_agent().display().to_string(),
        args,
        env: BTreeMap::new(),
        working_dir: None,
        timeout_ms: 60_000,
        readiness: AgentReadiness::Line("READY".into()),
        ..AgentPolicy::default()
    }
}

/// A `/bin/sh -c SCRIPT` agent; the script's `$1`.. are `args`. It gets its prompt as a
/// file only (`prompt_via = "file"`), so nothing is appended to `args`.
pub fn shell(name: &str, script: &str, args: &[&str]) -> AgentPolicy {
    let mut all = vec!["-c".to_string(), script.to_string(), name.to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    AgentPolicy {
        name: name.into(),
        command: "/bin/sh".into(),
        args: all,
        env: BTreeMap::new(),
        working_dir: None,
        timeout_ms: 60_000,
        readiness: AgentReadiness::Started,
        prompt_via: speckit_spawn::PromptVia::File,
        ..AgentPolicy::default()
    }
}

/// Whether a process is gone: no `/proc` entry, or a zombie (dead; waiting for a parent
/// that is not us to reap it).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

/// Polls `check` until it holds or `limit` passes: a SIGKILLed grandchild needs a moment
/// to be scheduled and die, and no event says when. A bounded wait on a condition.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (bounded) for a plugin event of `kind` from each of `agents` (in any order);
/// returns their data in the order of `agents`.
pub async fn wait_events(
    events: &mut tokio::sync::broadcast::Receiver<EngineEvent>,
    kind: &str,
    agents: &[&str],
) -> Vec<serde_json::Value> {
    let mut found: Vec<Option<serde_json::Value>> = vec![None; agents.len()];
    let all = tokio::time::timeout(Duration::from_secs(20), async {
        while found.iter().any(Option::is_none) {
            match events.recv().await {
                Ok(EngineEvent::Plugin { kind: k, data, .. }) if k == kind => {
                    if let Some(i) = agents.iter().position(|a| data["agent"] == *a) {
                        found[i] = Some(data);
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("event channel: {e}"),
            }
        }
    })
    .await;
    all.unwrap_or_else(|_| panic!("no {kind} event for each of {agents:?} within 20 s"));
    found.into_iter().map(|d| d.unwrap_or_default()).collect()
}

/// Every file name directly in `dir`, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}
