//! `vacuum`: shrink the consensus database now, through the engine's `vacuum` job, so the
//! run is recorded like a scheduled one. Prints the job's figures as a short table, or its
//! JSON report with `--json`.

use anyhow::Result;
use clap::Args;

use super::{engine_options, print_job, run_job, Access, GlobalArgs, EXIT_OK};
use speckit_engine::{Engine, EngineError, StorageError};
use speckit_vacuum::plan::VacuumOptions;
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
    pub(super) json: bool,
}

pub async fn vacuum(global: &GlobalArgs, args: VacuumArgs) -> Result<u8> {
    // A dry run opens read-only; neither creates a database that does not exist.
    let mut options = engine_options(
        global,
        if args.dry_run {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        },
    )?;
    options.database_must_exist = true;
    let engine = match Engine::start(options, speckit_hygiene::builtin_plugins()).await {
        Err(EngineError::Storage(StorageError::Missing { path })) => {
            let message = format!(
                "no database at {}: nothing to vacuum (nothing was created)",
                path.display()
            );
            if args.json {
                let data = serde_json::json!({ "database": path, "exists": false });
                print!(
                    "{}",
                    super::json::render("vacuum", true, None, &data, &[message], &[])
                );
            } else {
                eprintln!("{message}");
            }
            return Ok(EXIT_OK);
        }
        started => started?,
    };
    let mut run = run_job(
        &engine,
        "vacuum",
        &VacuumOptions {
            dry_run: args.dry_run,
            force: args.force,
        },
    )
    .await?;
    if !args.json {
        // The job's summary is one line; on the command line show its figures too.
        if let Some(report) = run.report.as_mut() {
            if let Ok(figures) = report.figures::<VacuumReport>() {
                report.summary = figures.render();
            }
        }
    }
    let code = print_job(&run, args.json);
    engine.shutdown(std::time::Duration::from_secs(30)).await;
    Ok(code)
}
