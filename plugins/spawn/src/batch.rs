//! `spawn_agents`: every agent of a request initialised concurrently (a `JoinSet`, at most
//! `spawn.max_concurrency` at once through a semaphore), then the batch's metrics stored,
//! exported to `spawn_metrics.json` and sent as an event.
//!
//! No lock is held across an await: agents share only the semaphore, the storage queue and
//! immutable batch data. `max_concurrency = 1` initialises them one after the other, the
//! sequential baseline the metrics compare against.

use speckit_retention::EvidencePolicy;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::AgentPolicy;
use crate::SpawnPolicy;
use speckit_engine::events::EventBus;
use speckit_engine::{PolicySnapshot, Storage, StorageError};

use crate::db::{self, AgentMetric, BatchRow};
use crate::error::{AgentFailure, FailureCause, SpawnError};
use crate::evidence;
use crate::handle::AgentHandle;
use crate::launch::{agent_id, emit, initialize, mark_row_failed, AgentInit, BatchContext};
use crate::request::{host_stage, validate_stage, SpawnRequest};
use crate::schema::SPAWN_SCHEMA;

/// The figures of one batch, as stored, exported and sent as the `spawn_metrics` event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchMetrics {
    pub batch_id: String,
    pub spec_id: String,
    /// As the host names it (`spec-plan` for a request's `plan`).
    pub stage: String,
    pub started_at: DateTime<Utc>,
    pub agent_count: usize,
    pub max_concurrency: usize,
    /// From the request to every agent initialised (ready or failed), in microseconds.
    pub total_us: u64,
    pub ok_count: usize,
    pub failed_count: usize,
    /// In the order the request named them.
    pub agents: Vec<AgentMetric>,
}

impl BatchMetrics {
    pub fn ok(&self) -> bool {
        self.failed_count == 0
    }
}

/// A spawned batch: handles of the agents that are running, and the ones that failed.
#[derive(Debug)]
pub struct SpawnBatch {
    pub metrics: BatchMetrics,
    /// Running agents, in request order. Await each to record its completion.
    pub handles: Vec<AgentHandle>,
    /// Agents that did not get to running (and ready), in request order.
    pub failures: Vec<AgentFailure>,
    /// `<evidence root>/commands/<SPEC-ID>/spawn_metrics.json`.
    pub metrics_file: PathBuf,
    /// Problems that did not stop the batch (the metrics could not be stored or exported).
    pub warnings: Vec<String>,
}

/// Starts a stage's agents for a SPEC under `policy` (the snapshot the caller runs on) and
/// returns once each is running (and ready) or has failed. See the crate docs.
pub async fn spawn_agents(
    storage: &Storage,
    policy: &PolicySnapshot,
    events: &EventBus,
    request: SpawnRequest,
) -> Result<SpawnBatch, SpawnError> {
    let request_start = Instant::now();
    let started_at = request.clock.now();
    validate_stage(&request.stage)?;
    let spawn = &policy.policy.section::<SpawnPolicy>();
    let in_effect = crate::host_agents::agents_in_effect(spawn)
        .map_err(|message| SpawnError::HostConfig { message })?;
    let agents = select_agents(&in_effect, &request.agents, &request.stage, policy)?;
    // A storage that refuses writes would let every agent start only to fail on its row.
    if let Some(reason) = storage.write_refusal() {
        return Err(SpawnError::Storage(StorageError::NotWritable {
            path: storage.path().to_path_buf(),
            reason: reason.clone(),
        }));
    }
    // Called without `Engine::run_job` (the embedding API) nobody else brings spawn's
    // tables up to date; once per storage, then a no-op.
    storage.ensure_schema(&SPAWN_SCHEMA).await?;
    // Two `lstat`s when the folder exists: cheaper inline than a hand-off to the blocking
    // pool, which every agent's spawn time would include.
    let spec_dir = evidence::prepare_spec_dir(
        &policy.policy.section::<EvidencePolicy>().root,
        request.spec_id.as_str(),
    )?;
    let max_concurrency = spawn.max_concurrency.max(1) as usize;
    let batch = Arc::new(BatchRow {
        batch_id: new_batch_id(started_at),
        spec_id: request.spec_id.to_string(),
        stage: host_stage(&request.stage).to_string(),
        agent_count: agents.len(),
        max_concurrency,
        started_at_ms: started_at.timestamp_millis(),
    });
    let ctx = Arc::new(BatchContext {
        storage: storage.clone(),
        events: events.clone(),
        batch: batch.clone(),
        request_stage: request.stage.clone(),
        phase_type: request.phase_type.clone(),
        prompt: Arc::from(request.prompt.as_str()),
        spec_dir: spec_dir.clone(),
        config_dir: policy.source.dir.clone(),
        spawn_timeout: std::time::Duration::from_millis(spawn.spawn_timeout_ms),
        max_response_bytes: spawn.max_response_bytes,
        max_log_bytes: spawn.max_log_bytes,
        environment: spawn.environment.clone(),
        read_only: request.read_only,
        request_start,
        cancel: request.cancel.clone(),
        clock: request.clock.clone(),
    });
    tracing::info!(batch_id = %batch.batch_id, spec = %batch.spec_id, stage = %batch.stage, agents = agents.len(), max_concurrency, "spawning agents");

    let slots = Arc::new(Semaphore::new(max_concurrency));
    let order: HashMap<String, usize> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| (a.name.clone(), i))
        .collect();
    let mut tasks = JoinSet::new();
    let mut task_agents = HashMap::new();
    for agent in agents {
        let name = agent.name.clone();
        let task = tasks.spawn(initialize(ctx.clone(), agent, slots.clone()));
        task_agents.insert(task.id(), name);
    }
    let mut ready: Vec<(AgentHandle, AgentMetric)> = Vec::new();
    let mut failed: Vec<(AgentFailure, AgentMetric)> = Vec::new();
    while let Some(joined) = tasks.join_next_with_id().await {
        match joined {
            Ok((_, AgentInit::Ready { handle, metric })) => ready.push((*handle, metric)),
            Ok((_, AgentInit::Failed { failure, metric })) => failed.push((failure, metric)),
            Err(e) => {
                // A bug in initialisation (a panic): its process was killed when the task
                // unwound (`AgentProcess` kills its group on drop); report the agent failed.
                let name = task_agents.get(&e.id()).cloned().unwrap_or_default();
                let id = agent_id(&batch.batch_id, &name);
                let cause = FailureCause::Start {
                    command: name.clone(),
                    working_dir: String::new(),
                    message: format!("internal error while starting it: {e}"),
                };
                mark_row_failed(storage, &request.clock, &id, &cause.to_string()).await;
                let metric = AgentMetric {
                    agent: name.clone(),
                    agent_id: id.clone(),
                    queued_us: 0,
                    spawn_us: request_start.elapsed().as_micros() as u64,
                    ok: false,
                    pid: None,
                    error: Some(cause.to_string()),
                };
                failed.push((
                    AgentFailure {
                        agent: name,
                        agent_id: id,
                        pid: None,
                        cause,
                    },
                    metric,
                ));
            }
        }
    }
    let total_us = request_start.elapsed().as_micros() as u64;

    let rank = |name: &str| order.get(name).copied().unwrap_or(usize::MAX);
    ready.sort_by_key(|(h, _)| rank(h.agent()));
    failed.sort_by_key(|(f, _)| rank(&f.agent));
    let mut agent_metrics: Vec<AgentMetric> = ready
        .iter()
        .map(|(_, m)| m.clone())
        .chain(failed.iter().map(|(_, m)| m.clone()))
        .collect();
    agent_metrics.sort_by_key(|m| rank(&m.agent));
    let handles: Vec<AgentHandle> = ready.into_iter().map(|(h, _)| h).collect();
    let failures: Vec<AgentFailure> = failed.into_iter().map(|(f, _)| f).collect();

    let cancelled = request.cancel.is_cancelled();
    let started_processes = agent_metrics.iter().filter(|m| m.pid.is_some()).count();
    let handles = if cancelled {
        // Stop what this request started: agents already running are killed and recorded.
        for handle in handles {
            if let Err(e) = handle.kill().await {
                tracing::error!("stopping a cancelled agent: {e}");
            }
        }
        Vec::new()
    } else {
        handles
    };

    let metrics = BatchMetrics {
        batch_id: batch.batch_id.clone(),
        spec_id: batch.spec_id.clone(),
        stage: batch.stage.clone(),
        started_at,
        agent_count: batch.agent_count,
        max_concurrency,
        total_us,
        ok_count: agent_metrics.iter().filter(|m| m.ok).count(),
        failed_count: agent_metrics.iter().filter(|m| !m.ok).count(),
        agents: agent_metrics,
    };
    let mut warnings = Vec::new();
    let stored = {
        let (batch, metrics) = (batch.clone(), metrics.clone());
        let path = storage.path().to_path_buf();
        storage
            .write(move |tx| {
                db::record_metrics(tx, &batch, metrics.total_us, &metrics.agents).map_err(
                    |source| StorageError::Sqlite {
                        path,
                        cause: source,
                    },
                )
            })
            .await
    };
    if let Err(e) = stored {
        tracing::error!(batch_id = %batch.batch_id, "cannot store the spawn metrics: {e}");
        warnings.push(format!("spawn metrics were not stored: {e}"));
    }
    let metrics_file = spec_dir.join(evidence::METRICS_FILE);
    let exported = {
        let path = metrics_file.clone();
        let json = serde_json::to_vec_pretty(&metrics).unwrap_or_default();
        // The one atomic write of the workspace (temporary name, fsync, rename, fsync of
        // the folder): a reader sees the old metrics or the new, never a mix.
        tokio::task::spawn_blocking(move || speckit_retention::fsutil::write_atomic(&path, &json))
            .await
    };
    match exported {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warnings.push(format!("cannot write {}: {e}", metrics_file.display())),
        Err(e) => warnings.push(format!("cannot write {}: {e}", metrics_file.display())),
    }
    for w in &warnings {
        tracing::warn!(batch_id = %batch.batch_id, "{w}");
    }
    emit(
        events,
        "spawn_metrics",
        serde_json::to_value(&metrics).unwrap_or_default(),
    );
    tracing::info!(batch_id = %batch.batch_id, total_us, ok = metrics.ok_count, failed = metrics.failed_count, "spawn batch initialised");

    if cancelled {
        return Err(SpawnError::Cancelled {
            batch_id: batch.batch_id.clone(),
            started: started_processes,
        });
    }
    Ok(SpawnBatch {
        metrics,
        handles,
        failures,
        metrics_file,
        warnings,
    })
}

/// The agents in effect the request names, in the request's order; when it names none,
/// the agent the host routes the stage to, else all of them.
fn select_agents(
    in_effect: &crate::host_agents::AgentsInEffect,
    names: &[String],
    stage: &str,
    policy: &PolicySnapshot,
) -> Result<Vec<AgentPolicy>, SpawnError> {
    for problem in &in_effect.problems {
        tracing::warn!("{problem}");
    }
    if in_effect.agents.is_empty() {
        return Err(SpawnError::NoAgents {
            config: policy.source.path.clone(),
        });
    }
    if names.is_empty() {
        if let Some(routed) = in_effect.routed(stage) {
            return Ok(vec![routed.agent.clone()]);
        }
        return Ok(in_effect.agents.iter().map(|a| a.agent.clone()).collect());
    }
    let mut seen = std::collections::HashSet::new();
    let mut unknown = Vec::new();
    let mut selected = Vec::new();
    for name in names {
        if !seen.insert(name.as_str()) {
            return Err(SpawnError::DuplicateAgent {
                agent: name.clone(),
            });
        }
        match in_effect.find(name) {
            Some(agent) => selected.push(agent.agent.clone()),
            None => unknown.push(name.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(SpawnError::UnknownAgents {
            unknown,
            known: in_effect
                .agents
                .iter()
                .map(|a| a.agent.name.clone())
                .collect(),
        });
    }
    Ok(selected)
}

/// A batch id: the start time in upstream's `20260105T101500Z` style and 32 random bits,
/// so concurrent batches (also from other engines) never share files or rows.
fn new_batch_id(started_at: DateTime<Utc>) -> String {
    format!(
        "{}-{:08x}",
        started_at.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>()
    )
}
