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

use crate::SpawnPolicy;
use speckit_engine::events::EventBus;
use speckit_engine::{PolicySnapshot, Storage, StorageError};

use crate::db::{self, AgentMetric, BatchRow};
use crate::error::{AgentFailure, CompletionError, FailureCause, SpawnError};
use crate::evidence;
use crate::handle::{AgentCompletion, AgentHandle};
use crate::host_agents::EffectiveAgent;
use crate::launch::{
    agent_id, emit, initialize, mark_row_failed, not_started, AgentInit, BatchContext, BatchRows,
    INLINE_START_MAX_AGENTS,
};
use crate::request::{host_stage, validate_stage, SpawnRequest};
use crate::schema::SPAWN_SCHEMA;
use crate::stage_prompts::{self, PreviousOutput, PromptTemplates, PromptValues, Template};

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
    /// From the request to the batch's set-up done (configuration read, stage prompts
    /// loaded, schema checked, evidence folder ready), just before its agents' tasks start.
    #[serde(default)]
    pub setup_us: u64,
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
    /// A chained batch's agents (their prompts need the outputs before them): each ran to
    /// its end before the next started, so they are here, not in `handles`. In request
    /// order; empty for a batch that is not chained.
    pub finished: Vec<Result<AgentCompletion, CompletionError>>,
    /// Where each agent's prompt came from, in request order.
    pub prompts: Vec<PromptSource>,
}

/// Where one agent's prompt came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PromptSource {
    pub agent: String,
    /// `<file>: spec-plan.gemini (version ...)` when the host's stage prompt file had a
    /// template for it; `None`: the prompt given to spawn.
    pub template: Option<String>,
    /// It got the outputs of the agents before it (a chained batch).
    pub chained: bool,
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
    let templates = stage_prompts::load(&spawn.prompts, &policy.source.dir)
        .map_err(|message| SpawnError::StagePrompts { message })?;
    let planned = plan_prompts(templates.as_ref(), &request.stage, agents);
    let chained = planned.iter().any(PlannedAgent::needs_previous_outputs);
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
        agent_count: planned.len(),
        max_concurrency,
        started_at_ms: started_at.timestamp_millis(),
    });
    // Every agent gets a slot at once: their rows go in one transaction.
    let rows = (!chained && planned.len() <= max_concurrency).then(|| {
        BatchRows::insert(
            storage,
            batch.clone(),
            request.phase_type.clone(),
            db::host_time(request.clock.now()),
            planned.iter().map(|p| p.agent.agent.name.clone()).collect(),
        )
    });
    let ctx = Arc::new(BatchContext {
        storage: storage.clone(),
        events: events.clone(),
        batch: batch.clone(),
        request_stage: request.stage.clone(),
        phase_type: request.phase_type.clone(),
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
        rows,
        start_inline: planned.len() <= INLINE_START_MAX_AGENTS,
    });
    tracing::info!(batch_id = %batch.batch_id, spec = %batch.spec_id, stage = %batch.stage, agents = planned.len(), max_concurrency, chained, "spawning agents");

    let slots = Arc::new(Semaphore::new(max_concurrency));
    let order: HashMap<String, usize> = planned
        .iter()
        .enumerate()
        .map(|(i, p)| (p.agent.agent.name.clone(), i))
        .collect();
    let prompts: Vec<PromptSource> = planned.iter().map(|p| p.source(chained)).collect();
    let renderer = Renderer {
        spec_id: request.spec_id.as_str(),
        context: &request.prompt,
        config_dir: &policy.source.dir,
    };
    let setup_us = request_start.elapsed().as_micros() as u64;
    let Initialised {
        mut handles,
        mut agent_metrics,
        mut failures,
        finished,
    } = if chained {
        run_chained(&ctx, &renderer, planned, &slots).await
    } else {
        initialize_concurrently(&ctx, &renderer, planned, &slots).await
    };
    let total_us = request_start.elapsed().as_micros() as u64;

    let rank = |name: &str| order.get(name).copied().unwrap_or(usize::MAX);
    handles.sort_by_key(|h| rank(h.agent()));
    failures.sort_by_key(|f| rank(&f.agent));
    agent_metrics.sort_by_key(|m| rank(&m.agent));

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
        setup_us,
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
        finished,
        prompts,
    })
}

/// One agent to start, with its template from the host's stage prompt file, if any.
struct PlannedAgent<'t> {
    agent: EffectiveAgent,
    template: Option<Template<'t>>,
    file: Option<&'t std::path::Path>,
}

impl PlannedAgent<'_> {
    fn needs_previous_outputs(&self) -> bool {
        self.template.is_some_and(|t| t.needs_previous_outputs())
    }

    fn source(&self, chained: bool) -> PromptSource {
        PromptSource {
            agent: self.agent.agent.name.clone(),
            template: self.template.zip(self.file).map(|(t, file)| {
                format!(
                    "{}: {}.{} (version {})",
                    file.display(),
                    t.stage_key,
                    t.agent_key,
                    t.version
                )
            }),
            chained,
        }
    }
}

fn plan_prompts<'t>(
    templates: Option<&'t PromptTemplates>,
    stage: &str,
    agents: Vec<EffectiveAgent>,
) -> Vec<PlannedAgent<'t>> {
    agents
        .into_iter()
        .map(|agent| PlannedAgent {
            template: templates.and_then(|t| t.template(stage, &agent)),
            file: templates.map(|t| t.file.as_path()),
            agent,
        })
        .collect()
}

/// What every agent's prompt is built from.
struct Renderer<'a> {
    spec_id: &'a str,
    /// The prompt given to spawn (a template's `${CONTEXT}`).
    context: &'a str,
    config_dir: &'a std::path::Path,
}

impl Renderer<'_> {
    /// The agent's whole prompt: its `instructions`, then its rendered template (else the
    /// prompt given to spawn).
    fn prompt(&self, planned: &PlannedAgent<'_>, previous: &[PreviousOutput]) -> Arc<str> {
        let agent = &planned.agent.agent;
        let stage_prompt = match &planned.template {
            Some(template) => std::borrow::Cow::Owned(stage_prompts::render(
                template,
                &PromptValues {
                    spec_id: self.spec_id,
                    context: self.context,
                    family: stage_prompts::Family::of(&planned.agent),
                    config_dir: self.config_dir,
                    previous,
                },
            )),
            None => std::borrow::Cow::Borrowed(self.context),
        };
        Arc::from(agent.prompt_for(&stage_prompt))
    }
}

/// How a batch's agents ended their initialisation (in no particular order).
#[derive(Default)]
struct Initialised {
    handles: Vec<AgentHandle>,
    agent_metrics: Vec<AgentMetric>,
    failures: Vec<AgentFailure>,
    finished: Vec<Result<AgentCompletion, CompletionError>>,
}

impl Initialised {
    fn failed(&mut self, failure: AgentFailure, metric: AgentMetric) {
        self.failures.push(failure);
        self.agent_metrics.push(metric);
    }
}

/// Every agent initialised at once, at most `max_concurrency` at a time (the slots).
async fn initialize_concurrently(
    ctx: &Arc<BatchContext>,
    renderer: &Renderer<'_>,
    planned: Vec<PlannedAgent<'_>>,
    slots: &Arc<Semaphore>,
) -> Initialised {
    let mut tasks = JoinSet::new();
    let mut task_agents = HashMap::new();
    for p in &planned {
        let prompt = renderer.prompt(p, &[]);
        let name = p.agent.agent.name.clone();
        let task = tasks.spawn(initialize(
            ctx.clone(),
            p.agent.agent.clone(),
            prompt,
            slots.clone(),
        ));
        task_agents.insert(task.id(), name);
    }
    let mut out = Initialised::default();
    while let Some(joined) = tasks.join_next_with_id().await {
        match joined {
            Ok((_, AgentInit::Ready { handle, metric })) => {
                out.handles.push(*handle);
                out.agent_metrics.push(metric);
            }
            Ok((_, AgentInit::Failed { failure, metric })) => out.failed(failure, metric),
            Err(e) => {
                let name = task_agents.get(&e.id()).cloned().unwrap_or_default();
                let (failure, metric) = initialisation_panicked(ctx, name, &e).await;
                out.failed(failure, metric);
            }
        }
    }
    out
}

/// A bug in initialisation (a panic): its process was killed when the task unwound
/// (`AgentProcess` kills its group on drop); the agent is reported failed.
async fn initialisation_panicked(
    ctx: &BatchContext,
    name: String,
    e: &tokio::task::JoinError,
) -> (AgentFailure, AgentMetric) {
    let id = agent_id(&ctx.batch.batch_id, &name);
    let cause = FailureCause::Start {
        command: name.clone(),
        working_dir: String::new(),
        message: format!("internal error while starting it: {e}"),
    };
    mark_row_failed(&ctx.storage, &ctx.clock, &id, &cause.to_string()).await;
    let metric = AgentMetric {
        agent: name.clone(),
        agent_id: id.clone(),
        queued_us: 0,
        spawn_us: ctx.request_start.elapsed().as_micros() as u64,
        ok: false,
        pid: None,
        error: Some(cause.to_string()),
        phases: Default::default(),
    };
    let failure = AgentFailure {
        agent: name,
        agent_id: id,
        pid: None,
        cause,
    };
    (failure, metric)
}

/// A chained batch: each agent starts when the one before it has ended, with the outputs
/// (stored responses) of those before it. After an agent that did not complete, the rest
/// are not started: their prompts would lack what they ask for.
async fn run_chained(
    ctx: &Arc<BatchContext>,
    renderer: &Renderer<'_>,
    planned: Vec<PlannedAgent<'_>>,
    slots: &Arc<Semaphore>,
) -> Initialised {
    let mut out = Initialised::default();
    let mut previous: Vec<PreviousOutput> = Vec::new();
    let mut broken: Option<String> = None;
    for p in &planned {
        let name = p.agent.agent.name.clone();
        let skip = if ctx.cancel.is_cancelled() {
            Some(FailureCause::Cancelled)
        } else {
            broken
                .clone()
                .map(|agent| FailureCause::PredecessorFailed { agent })
        };
        if let Some(cause) = skip {
            let (failure, metric) = not_started(ctx, &name, cause).await;
            out.failed(failure, metric);
            continue;
        }
        let prompt = renderer.prompt(p, &previous);
        let init = initialize(ctx.clone(), p.agent.agent.clone(), prompt, slots.clone()).await;
        let handle = match init {
            AgentInit::Ready { handle, metric } => {
                out.agent_metrics.push(metric);
                handle
            }
            AgentInit::Failed { failure, metric } => {
                out.failed(failure, metric);
                broken = Some(name);
                continue;
            }
        };
        let completion = handle.wait().await;
        match &completion {
            Ok(c) if c.succeeded() => previous.push(PreviousOutput {
                names: std::iter::once(name)
                    .chain(p.agent.canonical_name.clone())
                    .collect(),
                output: c.response.clone(),
            }),
            _ => broken = Some(name),
        }
        out.finished.push(completion);
    }
    out
}

/// The agents in effect the request names, in the request's order; when it names none,
/// the agent the host routes the stage to, else all of them.
fn select_agents(
    in_effect: &crate::host_agents::AgentsInEffect,
    names: &[String],
    stage: &str,
    policy: &PolicySnapshot,
) -> Result<Vec<EffectiveAgent>, SpawnError> {
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
            return Ok(vec![routed.clone()]);
        }
        return Ok(in_effect.agents.clone());
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
            Some(agent) => selected.push(agent.clone()),
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
