//! `vacuum`: shrink the consensus database now, through the engine's `vacuum` job, so the
//! run is recorded like a scheduled one. Prints the job's figures as a short table, or its
//! JSON report with `--json`.

use anyhow::Result;
use clap::Args;

use super::{print_job, run_job, start_engine, Access, GlobalArgs, EXIT_OK};
use speckit_vacuum::VacuumReport;

#[derive(Debug, Args)]
pub struct VacuumArgs {
    /// Measure, check and print what would be reclaimed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Vacuum even below the policy's free-fraction threshold.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON (bytes_before, bytes_after, pages_freed, freelist_before,
    /// freelist_after, migrated, check, ...).
    #[arg(long)]
    json: bool,
}

pub async fn vacuum(global: &GlobalArgs, args: VacuumArgs) -> Result<u8> {
    // A dry run, or a database that does not exist, opens read-only: nothing is created.
    let mut engine = start_engine(global, Access::ReadOnly).await?;
    if !engine.storage().exists() {
        let path = engine.storage().path().to_path_buf();
        engine.shutdown(std::time::Duration::from_secs(5)).await;
        eprintln!(
            "no database at {}: nothing to vacuum (nothing was created)",
            path.display()
        );
        return Ok(EXIT_OK);
    }
    if !args.dry_run {
        engine.shutdown(std::time::Duration::from_secs(5)).await;
        engine = start_engine(global, Access::ReadWrite).await?;
    }
    let mut run = run_job(
        &engine,
        "vacuum",
        serde_json::json!({ "dry_run": args.dry_run, "force": args.force }),
    )
    .await?;
    if !args.json {
        // The job's summary is one line; on the command line show its figures too.
        if let Some(report) = run.report.as_mut() {
            if let Ok(figures) = serde_json::from_value::<VacuumReport>(report.data.clone()) {
                report.summary = figures.render();
            }
        }
    }
    let code = print_job(&run, args.json);
    engine.shutdown(std::time::Duration::from_secs(30)).await;
    Ok(code)
}
