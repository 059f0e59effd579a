//! Plugin commands: `vacuum`, `cleanup`, `restore`, `stats`, `guard`, `spawn`.
//! Each runs its plugin's job through the engine so the run is recorded like a scheduled one.

use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

use super::{print_job, run_job, start_engine, GlobalArgs};

#[derive(Debug, Args)]
pub struct VacuumArgs {
    /// Print what would be reclaimed and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Vacuum even below the policy's free-fraction threshold.
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Print the exact plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only this SPEC.
    #[arg(long, value_name = "SPEC-ID")]
    spec: Option<String>,
    /// Allow a plan that removes more than the policy's fraction of all evidence.
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The SPEC whose archives to restore.
    spec: String,
    /// One archive file (default: every archive of the SPEC).
    #[arg(long, value_name = "FILE")]
    archive: Option<PathBuf>,
    /// Restore files under this folder instead of their original places.
    #[arg(long, value_name = "DIR")]
    to: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this SPEC.
    #[arg(long, value_name = "SPEC-ID")]
    spec: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct GuardArgs {
    /// The SPEC automation is about to start on.
    spec: String,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SpawnArgs {
    #[command(subcommand)]
    command: Option<SpawnCommand>,
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
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SpawnCommand {
    /// Spawn latency percentiles, success rate, and parallel against sequential.
    Stats {
        #[arg(long)]
        json: bool,
    },
}

pub async fn vacuum(global: &GlobalArgs, args: VacuumArgs) -> Result<u8> {
    let engine = start_engine(global).await?;
    let run = run_job(
        &engine,
        "vacuum",
        serde_json::json!({ "dry_run": args.dry_run, "force": args.force }),
    )
    .await?;
    let code = print_job(&run, args.json);
    engine.shutdown(std::time::Duration::from_secs(30)).await;
    Ok(code)
}

pub async fn cleanup(global: &GlobalArgs, args: CleanupArgs) -> Result<u8> {
    let engine = start_engine(global).await?;
    let run = run_job(
        &engine,
        "cleanup",
        serde_json::json!({ "dry_run": args.dry_run, "force": args.force, "spec": args.spec }),
    )
    .await?;
    let code = print_job(&run, args.json);
    engine.shutdown(std::time::Duration::from_secs(30)).await;
    Ok(code)
}

pub async fn restore(_global: &GlobalArgs, _args: RestoreArgs) -> Result<u8> {
    anyhow::bail!("restore is not built yet (issue 4)")
}

pub async fn stats(_global: &GlobalArgs, _args: StatsArgs) -> Result<u8> {
    anyhow::bail!("stats is not built yet (issue 5)")
}

pub async fn guard(_global: &GlobalArgs, _args: GuardArgs) -> Result<u8> {
    anyhow::bail!("guard is not built yet (issue 5)")
}

pub async fn spawn(_global: &GlobalArgs, _args: SpawnArgs) -> Result<u8> {
    anyhow::bail!("spawn is not built yet (issue 6)")
}
