//! The spawn plugin: starts a stage's agents in parallel, measures every spawn, and records
//! its agents in the host's consensus database as the host records them, without ever
//! corrupting it.
//!
//! [`spawn_agents`] takes a [`SpawnRequest`] (a validated SPEC-ID, a stage, a prompt, agent
//! names from `[[spawn.agents]]`). Per agent, initialising means: insert its
//! `agent_executions` row through the engine's [`Storage`] while writing its prompt file
//! and starting its process (tokio, in its own process group; stdout and stderr piped to
//! log tasks writing evidence files under `<evidence root>/commands/<SPEC-ID>/`), then wait
//! until it is running (and, for a `readiness = { line = "..." }` agent, until it printed
//! that line). Agents initialise concurrently under `spawn.max_concurrency`.
//!
//! A failed agent is reported by name and cause ([`AgentFailure`]); its process is killed
//! and reaped, its row marked failed; the others go on. Each [`AgentHandle`] can be awaited:
//! completion records `completed_at`, the response in `response_text` (at most
//! `spawn.max_response_bytes`; the rest stays in the output file) and the failure cause in
//! `extraction_error`. Rows follow the host's conventions: times as `YYYY-MM-DD HH:MM:SS`
//! UTC text from the engine's clock, stages as the host names them ([`host_stage`]),
//! `phase_type` `regular_stage`. Spawning yields no consensus, so spawn never writes
//! `consensus_runs` or `agent_outputs` (the host shows their newest row as a stage's
//! result). Per-agent spawn times (request to running, ready and row committed) and the
//! batch total are stored only in spawn's own tables, `hygiene_spawn_batches` and
//! `hygiene_spawn_metrics` ([`SPAWN_SCHEMA`]), exported to `spawn_metrics.json` and sent
//! as a `spawn_metrics` plugin event; [`stats`] reads them (none when the tables or the
//! database are missing).
//!
//! [`Storage`]: speckit_engine::Storage

mod batch;
pub mod command;
mod db;
mod descendants;
pub mod environment;
mod error;
pub mod evidence;
mod handle;
pub mod host_agents;
mod job;
mod launch;
mod logs;
mod process;
mod request;
pub mod schema;
pub mod settings;
pub mod stage_prompts;
pub mod stats;

pub use batch::{spawn_agents, BatchMetrics, PromptSource, SpawnBatch};
pub use db::{AgentMetric, SpawnPhases};
pub use error::{AgentFailure, CompletionError, FailureCause, RunFailure, SpawnError};
pub use handle::{AgentCompletion, AgentHandle};
pub use job::{default_prompt, CompletionFigures, SpawnJobReport, SpawnOptions};
pub use request::{host_stage, validate_stage, SpawnRequest, DEFAULT_PHASE_TYPE};
pub use schema::SPAWN_SCHEMA;
pub use settings::{
    AgentPolicy, AgentReadiness, EnvironmentPolicy, PromptVia, SpawnPolicy,
    PROMPT_ARGUMENT_MAX_BYTES,
};

use speckit_engine::plugin::BoxFuture;
use speckit_engine::policy::{JobSpec, SectionSpec};
use speckit_engine::storage::ComponentSchema;
use speckit_engine::{JobContext, JobReport, Plugin, PluginError};

/// The plugin's name, also the `plugin` of its events.
pub const PLUGIN_NAME: &str = "spawn";

/// The compiled-in spawn plugin: checks `[spawn]` at every policy load and runs the
/// `spawn` job.
#[derive(Debug, Default)]
pub struct SpawnPlugin;

impl SpawnPlugin {
    pub fn new() -> Self {
        Self
    }
}

impl Plugin for SpawnPlugin {
    fn name(&self) -> &str {
        PLUGIN_NAME
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn jobs(&self) -> Vec<JobSpec> {
        vec![JobSpec::on_request("spawn")]
    }

    fn sections(&self) -> Vec<SectionSpec> {
        // `[evidence]` is retention's: spawn writes its files under the evidence root.
        vec![
            SectionSpec::of::<SpawnPolicy>(),
            SectionSpec::of::<speckit_retention::EvidencePolicy>(),
        ]
    }

    fn schema(&self) -> Option<&'static ComponentSchema> {
        Some(&SPAWN_SCHEMA)
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(job::run(ctx))
    }
}
