//! The `spawn` job: what `speckit-hygiene spawn` and the demo run through the engine, so a
//! spawn is recorded in the job runs like any other job. It spawns the requested agents,
//! waits for all of them, and reports the figures.
//!
//! Options: [`SpawnOptions`]; report data: [`SpawnJobReport`].

use std::path::PathBuf;
use tokio::task::JoinSet;

use speckit_engine::{JobContext, JobReport, PluginError, SpecId};

use speckit_retention::guard::GuardVerdict;
use speckit_retention::layout::LayoutError;
use speckit_retention::stats::StatsError;

use crate::batch::{spawn_agents, BatchMetrics};
use crate::error::{AgentFailure, SpawnError};
use crate::handle::AgentCompletion;
use crate::request::SpawnRequest;

/// The `spawn` job's report data: `report.figures::<SpawnJobReport>()`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpawnJobReport {
    /// The batch as measured (also stored and written to `metrics_file`).
    pub batch: BatchMetrics,
    /// `<evidence root>/commands/<SPEC-ID>/spawn_metrics.json`.
    pub metrics_file: PathBuf,
    /// Agents that failed to initialise.
    pub failures: Vec<AgentFailure>,
    /// Agents that ran, in the order the request named them.
    pub completions: Vec<CompletionFigures>,
    /// Where each agent's prompt came from (the host's stage prompt file or the prompt
    /// given), in request order.
    #[serde(default)]
    pub prompts: Vec<crate::batch::PromptSource>,
}

/// How one agent's run ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompletionFigures {
    pub agent: String,
    pub agent_id: String,
    pub pid: u32,
    /// Exited with status 0 in time.
    pub ok: bool,
    /// `exit status 0`, `signal 9`...
    pub exit: String,
    pub error: Option<String>,
    pub run_ms: u64,
    /// The whole response's size.
    pub response_bytes: u64,
    /// Bytes of it stored in the database.
    pub stored_bytes: u64,
    pub truncated: bool,
    /// Where the whole response is.
    pub response_path: PathBuf,
    /// Processes it left running when it ended, killed then.
    #[serde(default)]
    pub left_behind: Vec<u32>,
    /// Its logs cut at `spawn.max_log_bytes` (with the true sizes).
    #[serde(default)]
    pub logs_cut: Vec<crate::handle::LogCut>,
}

impl From<&AgentCompletion> for CompletionFigures {
    fn from(c: &AgentCompletion) -> Self {
        Self {
            agent: c.agent.clone(),
            agent_id: c.agent_id.clone(),
            pid: c.pid,
            ok: c.succeeded(),
            exit: c.exit.clone(),
            error: c.failure.as_ref().map(ToString::to_string),
            run_ms: c.run_ms,
            response_bytes: c.response_bytes,
            stored_bytes: c.response.len() as u64,
            truncated: c.truncated,
            response_path: c.response_path.clone(),
            left_behind: c.left_behind.clone(),
            logs_cut: c.logs_cut.clone(),
        }
    }
}

/// Refuses a SPEC the evidence guard blocks, saying what cleanup would free; one whose
/// evidence cannot be measured is refused too (it is not known to be under its limit),
/// except when the evidence root does not exist yet (nothing to measure: spawn creates it).
async fn check_evidence_limit(ctx: &JobContext, spec: &SpecId) -> Result<(), PluginError> {
    let (policy, storage, now, id) = (
        ctx.policy.clone(),
        ctx.storage.clone(),
        ctx.clock.now(),
        spec.as_str().to_string(),
    );
    let verdict = tokio::task::spawn_blocking(move || {
        speckit_retention::guard::evidence_guard_planned(&policy.policy, &id, Some(&storage), now)
    })
    .await
    .map_err(|e| PluginError::Failed(format!("the evidence guard's task failed: {e}")))?;
    let advice = "or spawn with --ignore-limits (API: ignore_limits) to start anyway";
    match verdict {
        Ok(GuardVerdict::Block { figures, action }) => Err(PluginError::Refused(format!(
            "{spec}'s evidence is over its limit ({} bytes > limit_mb {} MiB = {} bytes): {}; {advice}",
            figures.total.bytes, figures.limit_mb, figures.limit_bytes, action.advice
        ))),
        Ok(GuardVerdict::Warn { reasons, .. }) => {
            ctx.progress(format!("{spec}: evidence guard warns: {}", reasons.join("; ")));
            Ok(())
        }
        Ok(GuardVerdict::Allow { .. }) => Ok(()),
        Err(StatsError::Layout(LayoutError::RootMissing(_))) => Ok(()),
        Err(e) => Err(PluginError::Refused(format!(
            "the evidence guard cannot measure {spec}: {e}; {advice}"
        ))),
    }
}

/// The prompt used when the job is given none.
pub fn default_prompt(spec: &SpecId, stage: &str) -> String {
    format!("Run the {stage} stage of {spec}.\n")
}

/// Options of one `spawn` run (`ctx.args`; unknown or mistyped options are refused).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnOptions {
    /// The SPEC the agents work on (required).
    pub spec: SpecId,
    /// The stage, one of the policy's `[spawn.stages]` (required).
    pub stage: String,
    /// The prompt every agent gets; [`default_prompt`] when absent.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Which of the stage's agents to start; all of them when empty.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Spawn even when the SPEC's evidence is over `evidence.limit_mb` (the evidence
    /// guard would block it).
    #[serde(default)]
    pub ignore_limits: bool,
    /// The stage only reads: agents get their `args_read_only` (default: they write, as
    /// the host's stages do).
    #[serde(default)]
    pub read_only: bool,
}

pub(crate) async fn run(ctx: JobContext) -> Result<JobReport, PluginError> {
    let SpawnOptions {
        spec,
        stage,
        prompt,
        agents,
        ignore_limits,
        read_only,
    } = ctx.options()?;
    if !ignore_limits {
        check_evidence_limit(&ctx, &spec).await?;
    }
    let prompt = prompt.unwrap_or_else(|| default_prompt(&spec, &stage));

    let request = SpawnRequest::new(spec.clone(), stage.clone(), prompt)
        .with_agents(agents)
        .read_only(read_only)
        .with_cancel(ctx.cancel.clone())
        .with_clock(ctx.clock.clone());
    let batch = spawn_agents(&ctx.storage, &ctx.policy, &ctx.events, request)
        .await
        .map_err(|e| match e {
            SpawnError::Storage(e) => PluginError::Storage(e),
            SpawnError::Cancelled { .. } => PluginError::Cancelled,
            e @ (SpawnError::InvalidStage { .. }
            | SpawnError::NoAgents { .. }
            | SpawnError::UnknownAgents { .. }
            | SpawnError::DuplicateAgent { .. }) => PluginError::InvalidArgs(e.to_string()),
            e => PluginError::Failed(e.to_string()),
        })?;
    let metrics = batch.metrics.clone();
    ctx.progress(format!(
        "{} of {} agents running for {spec} {stage} after {:.1} ms",
        metrics.ok_count,
        metrics.agent_count,
        metrics.total_us as f64 / 1000.0
    ));

    for source in &batch.prompts {
        if let Some(template) = &source.template {
            let chained = if source.chained { ", chained" } else { "" };
            ctx.progress(format!(
                "agent {:?}: prompt from {template}{chained}",
                source.agent
            ));
        }
    }
    let mut errors: Vec<String> = batch.failures.iter().map(ToString::to_string).collect();
    let mut completions: Vec<AgentCompletion> = Vec::new();
    // A chained batch's agents already ran to their end inside the batch.
    for finished in batch.finished {
        match finished {
            Ok(completion) => completions.push(completion),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let mut waiting = JoinSet::new();
    for handle in batch.handles {
        waiting.spawn(handle.wait());
    }
    while let Some(joined) = waiting.join_next().await {
        match joined {
            Ok(Ok(completion)) => completions.push(completion),
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(e) => errors.push(format!("waiting for an agent failed: {e}")),
        }
    }
    let rank = |name: &str| metrics.agents.iter().position(|a| a.agent == name);
    completions.sort_by_key(|c| rank(&c.agent));
    let mut warnings = batch.warnings;
    for c in &completions {
        if let Some(failure) = &c.failure {
            errors.push(format!("agent {:?} run failed: {failure}", c.agent));
        }
        for cut in &c.logs_cut {
            warnings.push(format!(
                "agent {:?} wrote {} bytes to {}; the log kept {} (spawn.max_log_bytes)",
                c.agent,
                cut.total_bytes,
                cut.path.display(),
                cut.kept_bytes
            ));
        }
        if !c.left_behind.is_empty() {
            warnings.push(format!(
                "agent {:?} left {} process(es) running when it ended (pids {:?}); they were killed",
                c.agent,
                c.left_behind.len(),
                c.left_behind
            ));
        }
    }
    let succeeded = completions.iter().filter(|c| c.succeeded()).count();
    let summary = format!(
        "{spec} {stage}: {}/{} agents spawned in {:.1} ms ({}); {succeeded} completed, {} failed",
        metrics.ok_count,
        metrics.agent_count,
        metrics.total_us as f64 / 1000.0,
        if batch.prompts.iter().any(|p| p.chained) {
            "chained: each after the one before, with its output".to_string()
        } else {
            format!("max_concurrency {}", metrics.max_concurrency)
        },
        metrics.agent_count - succeeded,
    );
    let figures = SpawnJobReport {
        batch: metrics,
        metrics_file: batch.metrics_file,
        failures: batch.failures,
        completions: completions.iter().map(CompletionFigures::from).collect(),
        prompts: batch.prompts,
    };
    let mut report = JobReport::typed(summary, &figures);
    report.warnings = warnings;
    report.errors = errors;
    Ok(report)
}
