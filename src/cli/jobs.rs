//! `jobs`: recent job runs from the database.

use anyhow::Result;
use clap::Args;

use super::{GlobalArgs, EXIT_OK};
use speckit_engine::StorageError;
use speckit_hygiene::embed::history;

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(super) json: bool,
    /// How many runs to show, newest first.
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

pub async fn jobs(global: &GlobalArgs, args: JobsArgs) -> Result<u8> {
    let engine = super::start_engine(global, super::Access::ReadOnly).await?;
    let records = history::recent(engine.storage(), args.limit).await;
    let this_config = engine.policy().source.path.display().to_string();
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    let records = match records {
        Err(StorageError::Missing { path }) => {
            eprintln!(
                "no database at {} yet: no job has run (nothing was created)",
                path.display()
            );
            Vec::new()
        }
        other => other?,
    };
    if args.json {
        let runs: Vec<super::json::JobJson> = records.iter().map(Into::into).collect();
        super::json::print_data("jobs", &serde_json::json!({ "runs": runs }));
        return Ok(EXIT_OK);
    }
    // One database can serve several repositories: runs of another policy file say so.
    let other_config = |record: &history::JobRecord| {
        record
            .config_path
            .as_ref()
            .filter(|path| **path != this_config)
            .map(|path| format!(" [for {path}]"))
            .unwrap_or_default()
    };
    println!(
        "{:>6}  {:<16} {:<9} {:<10} {:<20} summary",
        "id", "job", "trigger", "outcome", "started (UTC)"
    );
    for record in &records {
        let started = record
            .started_at
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        println!(
            "{:>6}  {:<16} {:<9} {:<10} {:<20} {}{}",
            record.run_id,
            record.job,
            record.trigger,
            record.outcome,
            started,
            record.summary(),
            other_config(record)
        );
    }
    Ok(EXIT_OK)
}
