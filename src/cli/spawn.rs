//! `spawn`: start a stage's agents from the policy and wait for them (through the engine's
//! `spawn` job, so the run is recorded like any other); `spawn stats`: spawn latency
//! percentiles, success rate and parallel against sequential, from the metrics tables.

use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

use speckit_engine::engine::JobRun;
use speckit_engine::events::JobOutcome;
use speckit_engine::{Engine, JobErrorKind, SpecId};
use speckit_spawn::stats::{Percentiles, SpawnStats};
use speckit_spawn::{SpawnJobReport, SpawnOptions};

use super::{
    print_job, run_job, start_engine, Access, GlobalArgs, UsageError, EXIT_FAILED, EXIT_OK,
};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SpawnArgs {
    #[command(subcommand)]
    pub(super) command: Option<SpawnCommand>,
    #[arg(long, value_name = "SPEC-ID")]
    spec: Option<String>,
    #[arg(long)]
    stage: Option<String>,
    /// The prompt file given to every agent.
    #[arg(long, value_name = "FILE")]
    prompt: Option<PathBuf>,
    /// Comma-separated agent names (default: every agent in the policy).
    #[arg(long, value_delimiter = ',')]
    agents: Vec<String>,
    /// Spawn even when the SPEC's evidence is over `evidence.limit_mb`.
    #[arg(long)]
    ignore_limits: bool,
    /// The stage only reads: agents get their `args_read_only`.
    #[arg(long)]
    read_only: bool,
    /// List the agents in effect (the host's config and speckit.toml) and where each came
    /// from, and start nothing; with --stage, which of them that stage starts.
    #[arg(long)]
    list_agents: bool,
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SpawnCommand {
    /// Spawn latency percentiles, success rate, and parallel against sequential.
    Stats {
        #[arg(long)]
        json: bool,
    },
}

fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

pub async fn spawn(global: &GlobalArgs, args: SpawnArgs) -> Result<u8> {
    if let Some(SpawnCommand::Stats { json }) = args.command {
        return stats(global, json).await;
    }
    if args.list_agents {
        return list_agents(global, args.stage.as_deref(), args.json);
    }
    let spec = args
        .spec
        .ok_or_else(|| usage("spawn needs --spec SPEC-ID and --stage STAGE (or: spawn stats)"))?;
    let spec = SpecId::parse(&spec).map_err(|e| usage(e.to_string()))?;
    let stage = args
        .stage
        .ok_or_else(|| usage("spawn needs --stage STAGE"))?;
    let prompt = match &args.prompt {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            usage(format!(
                "cannot read the prompt file {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    let engine = start_engine(global, Access::ReadWrite).await?;
    // The job checks the stage and the agents against the policy in effect; its
    // refusal comes back as an InvalidOptions error (exit 2) with the plugin's message.
    let run = run_job(
        &engine,
        "spawn",
        &SpawnOptions {
            spec,
            stage,
            prompt,
            agents: args.agents.clone(),
            ignore_limits: args.ignore_limits,
            read_only: args.read_only,
        },
    )
    .await;
    let run = run?;
    let code = if args.json {
        print_job(&run, true)
    } else {
        print_spawn_run(&run)
    };
    engine.shutdown(std::time::Duration::from_secs(30)).await;
    Ok(code)
}

/// `spawn --list-agents`: the agents in effect, where each came from, the host's stage
/// routing, and the host entries left out and the agents whose command is not on their
/// PATH (on stderr). Starts nothing, opens no database.
fn list_agents(global: &GlobalArgs, stage: Option<&str>, json: bool) -> Result<u8> {
    use speckit_spawn::host_agents::{agents_in_effect, AgentOrigin};
    let snapshot = super::stats::load_policy(global)?;
    let spawn = snapshot.policy.section::<speckit_spawn::SpawnPolicy>();
    let effect = agents_in_effect(&spawn).map_err(anyhow::Error::msg)?;
    for problem in &effect.problems {
        super::output::warn(problem);
    }
    // An agent CLI that is not installed is found here, not by a failed spawn.
    for a in &effect.agents {
        let environment = speckit_spawn::environment::agent_environment(
            &spawn.environment,
            &a.agent.env,
            std::env::vars_os(),
        );
        let start = speckit_spawn::command::AgentProgram::of(&a.agent, &snapshot.source.dir);
        if let Err(why) = start.executable(&environment) {
            super::output::warn(format!("agent {:?} would not start: {why}", a.agent.name));
        }
    }
    if json {
        super::json::print_data("spawn --list-agents", &effect);
        return Ok(EXIT_OK);
    }
    match &effect.host_file {
        Some(file) => println!("host config: {}", file.display()),
        None => println!(
            "host config: none ([spawn] host_config = {:?})",
            spawn.host_config
        ),
    }
    if effect.agents.is_empty() {
        println!("no agents");
    }
    for a in &effect.agents {
        let origin = match &a.origin {
            AgentOrigin::Policy => format!("speckit.toml {}", snapshot.source.path.display()),
            AgentOrigin::Host { file } => format!("host {}", file.display()),
            AgentOrigin::PolicyOverHost { file } => format!(
                "speckit.toml {} (over host {})",
                snapshot.source.path.display(),
                file.display()
            ),
        };
        let stages: Vec<&str> = effect
            .stage_agents
            .iter()
            .filter(|(_, name)| effect.find(name).map(|e| &e.agent.name) == Some(&a.agent.name))
            .map(|(stage, _)| stage.as_str())
            .collect();
        let routed = if stages.is_empty() {
            String::new()
        } else {
            format!("; host routes {}", stages.join(", "))
        };
        println!(
            "{:<16} {:<24} {origin}{routed}",
            a.agent.name, a.agent.command
        );
    }
    for disabled in &effect.disabled {
        println!("(disabled in the host config: {disabled})");
    }
    if let Some(stage) = stage {
        match effect.routed(stage) {
            Some(a) => println!("stage {stage}: {} (the host's routing)", a.agent.name),
            None => println!("stage {stage}: every agent above (no routing for it)"),
        }
        print_stage_prompts(&spawn, &snapshot.source.dir, stage, &effect)?;
    }
    Ok(EXIT_OK)
}

/// Where each agent's prompt for `stage` would come from: its template in the host's
/// stage prompt file, or the prompt given to spawn.
fn print_stage_prompts(
    spawn: &speckit_spawn::SpawnPolicy,
    config_dir: &std::path::Path,
    stage: &str,
    effect: &speckit_spawn::host_agents::AgentsInEffect,
) -> Result<()> {
    let templates = speckit_spawn::stage_prompts::load(&spawn.prompts, config_dir)
        .map_err(anyhow::Error::msg)?;
    let Some(templates) = templates else {
        println!(
            "stage prompts: none ([spawn] prompts = {:?}); every agent gets the prompt given",
            spawn.prompts
        );
        return Ok(());
    };
    println!("stage prompts: {}", templates.file.display());
    for a in &effect.agents {
        match templates.template(stage, a) {
            Some(t) => {
                let chained = if t.needs_previous_outputs() {
                    "; uses ${PREVIOUS_OUTPUTS}: the stage's agents run one after the other"
                } else {
                    ""
                };
                println!(
                    "  {:<16} {}.{} (version {}){chained}",
                    a.agent.name, t.stage_key, t.agent_key, t.version
                );
            }
            None => println!("  {:<16} no template: the prompt given", a.agent.name),
        }
    }
    Ok(())
}

/// The demo's spawn step: the demo policy's stub agents for one SPEC. With
/// `expect_refusal` the evidence guard must refuse it (the SPEC is over its limit). Returns
/// whether the step went otherwise than expected.
pub async fn demo_step(engine: &Engine, title: &str, expect_refusal: bool) -> Result<bool> {
    use speckit_hygiene::demo_agents::{DEMO_SPAWN_SPEC, DEMO_SPAWN_STAGE};
    println!("\n== {title}");
    let run = run_job(
        engine,
        "spawn",
        &SpawnOptions {
            spec: SpecId::parse(DEMO_SPAWN_SPEC)?,
            stage: DEMO_SPAWN_STAGE.to_string(),
            prompt: Some(format!(
                "Draft the {DEMO_SPAWN_STAGE} for {DEMO_SPAWN_SPEC} (demo prompt).\n"
            )),
            agents: Vec::new(),
            ignore_limits: false,
            read_only: false,
        },
    )
    .await?;
    if expect_refusal {
        let refused = run.error_kind == Some(JobErrorKind::Refused);
        match &run.error {
            Some(error) if refused => println!("{error}"),
            _ => {
                println!("expected the evidence guard to refuse this spawn; it did not:");
                print_spawn_run(&run);
            }
        }
        return Ok(!refused);
    }
    Ok(print_spawn_run(&run) != EXIT_OK)
}

/// One line per agent: how fast it was ready, how its run ended.
fn print_agents(figures: &SpawnJobReport) {
    for agent in &figures.batch.agents {
        let name = &agent.agent;
        let spawn_ms = agent.spawn_us as f64 / 1000.0;
        if !agent.ok {
            println!(
                "  {name:<16} failed to spawn after {spawn_ms:.1} ms: {}",
                agent.error.as_deref().unwrap_or("?")
            );
            continue;
        }
        let run_line = match figures.completions.iter().find(|c| &c.agent == name) {
            Some(c) if c.ok => format!(
                "ran {} ms, {} response bytes{} in {}",
                c.run_ms,
                c.response_bytes,
                if c.truncated {
                    format!(" ({} stored)", c.stored_bytes)
                } else {
                    String::new()
                },
                c.response_path.display()
            ),
            Some(c) => format!("run failed: {}", c.error.as_deref().unwrap_or("?")),
            None => "not recorded".to_string(),
        };
        let pid = agent.pid.map_or_else(|| "?".to_string(), |p| p.to_string());
        println!("  {name:<16} ready in {spawn_ms:>7.1} ms (pid {pid}); {run_line}");
    }
    println!("  metrics: {}", figures.metrics_file.display());
}

/// Prints a spawn job's result for people; returns the exit status.
fn print_spawn_run(run: &JobRun) -> u8 {
    let Some(report) = &run.report else {
        eprintln!(
            "error: spawn failed: {}",
            run.error.as_deref().unwrap_or("unknown error")
        );
        return super::exit_status(run);
    };
    println!("{}", report.summary);
    match report.figures::<SpawnJobReport>() {
        Ok(figures) => print_agents(&figures),
        Err(e) => super::output::warn(e),
    }
    for w in &report.warnings {
        super::output::warn(w);
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    match run.outcome {
        JobOutcome::Failed => EXIT_FAILED,
        _ => EXIT_OK,
    }
}

async fn stats(global: &GlobalArgs, json: bool) -> Result<u8> {
    let engine = start_engine(global, Access::ReadOnly).await?;
    let stats = speckit_spawn::stats::load(engine.storage()).await;
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    let stats = stats?;
    if json {
        super::json::print_data("spawn stats", &stats);
    } else {
        print_stats(&stats);
    }
    Ok(EXIT_OK)
}

fn percent(rate: Option<f64>) -> String {
    rate.map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn line(p: &Option<Percentiles>) -> String {
    match p {
        Some(p) => format!(
            "p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  (n = {})",
            p.p50_ms, p.p95_ms, p.p99_ms, p.count
        ),
        None => "no samples".into(),
    }
}

fn print_stats(s: &SpawnStats) {
    if s.batches == 0 {
        println!("No spawn metrics recorded yet (run `speckit-hygiene spawn`).");
        return;
    }
    println!(
        "spawn batches: {} ({} fully successful); agents: {} ({} spawned)",
        s.batches, s.batches_ok, s.agents, s.agents_ok
    );
    println!(
        "success rate: agents {}, batches {}",
        percent(s.agent_success_rate),
        percent(s.batch_success_rate)
    );
    println!("agent spawn time: {}", line(&s.agent_spawn));
    println!("batch total:      {}", line(&s.batch_total));
    println!("parallel batches:   {}", line(&s.parallel));
    println!("sequential batches: {}", line(&s.sequential));
    if s.comparisons.is_empty() {
        println!("parallel vs sequential: no agent count has batches of both kinds yet");
    }
    for c in &s.comparisons {
        println!(
            "parallel vs sequential, {} agents: p50 {:.1} vs {:.1} ms ({:.2}x), p95 {:.1} vs {:.1} ms ({:.2}x)",
            c.agents,
            c.parallel.p50_ms,
            c.sequential.p50_ms,
            c.speedup_p50,
            c.parallel.p95_ms,
            c.sequential.p95_ms,
            c.speedup_p95
        );
    }
}
