//! `run`: the scheduler and config watcher until SIGINT/SIGTERM; `run --once`: every
//! enabled job once.

use anyhow::Result;
use clap::Args;
use std::time::Duration;

use super::{GlobalArgs, EXIT_FAILED, EXIT_OK};
use speckit_engine::events::JobOutcome;
use speckit_engine::policy::is_off;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run every enabled job once, then exit.
    #[arg(long)]
    once: bool,
    /// With --once: print the job reports as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

pub async fn run(global: &GlobalArgs, args: RunArgs) -> Result<u8> {
    // Listen for SIGINT/SIGTERM before anything starts, so a signal that arrives during
    // start-up still means a graceful stop rather than the default (immediate) death.
    let termination = if args.once {
        None
    } else {
        Some(Termination::listen()?)
    };
    let engine = super::start_engine(global, super::Access::ReadWrite).await?;
    if args.once {
        let policy = engine.policy();
        let mut failed = false;
        let mut runs = Vec::new();
        for (job, expression) in policy.policy.scheduled_jobs() {
            if is_off(&expression) || engine.registry().for_job(&job).is_none() {
                continue;
            }
            let run = super::run_job(&engine, &job, &serde_json::Value::Null).await?;
            failed |= run.outcome == JobOutcome::Failed;
            if !args.json {
                println!("== {job}: {:?}", run.outcome);
                super::print_job(&run, false);
            }
            runs.push(run);
        }
        if args.json {
            print_runs(&runs, failed);
        }
        let grace = Duration::from_secs(policy.policy.schedule.shutdown_grace_seconds);
        engine.shutdown(grace).await;
        return Ok(if failed { EXIT_FAILED } else { EXIT_OK });
    }
    speckit_engine::scheduler::spawn(&engine);
    speckit_engine::watch::spawn(&engine)?;
    tracing::info!("running; SIGINT or SIGTERM stops, SIGHUP reloads");
    if let Some(mut termination) = termination {
        termination.wait().await;
    }
    let grace = Duration::from_secs(engine.policy().policy.schedule.shutdown_grace_seconds);
    tracing::info!(?grace, "shutting down");
    engine.shutdown(grace).await;
    Ok(EXIT_OK)
}

/// SIGINT and SIGTERM, registered when created.
struct Termination {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Termination {
    fn listen() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
        }
    }
}

/// `run --once --json`: every job's run and its report's data, in the envelope.
fn print_runs(runs: &[speckit_engine::engine::JobRun], failed: bool) {
    use super::json::{ErrorJson, JobJson};
    #[derive(serde::Serialize)]
    struct RunData<'a> {
        #[serde(flatten)]
        job: JobJson,
        data: &'a serde_json::Value,
    }
    let null = serde_json::Value::Null;
    let runs: Vec<RunData> = runs
        .iter()
        .map(|run| RunData {
            job: JobJson::from(run),
            data: run.report.as_ref().map_or(&null, |r| &r.data),
        })
        .collect();
    let errors: Vec<ErrorJson> = runs
        .iter()
        .filter(|r| r.job.outcome == "failed")
        .map(|r| {
            ErrorJson::new(
                "failed",
                format!("job {} failed: {}", r.job.job, r.job.summary),
            )
        })
        .collect();
    let data = serde_json::json!({ "runs": runs });
    print!(
        "{}",
        super::json::render("run", !failed, None, &data, &[], &errors)
    );
}
