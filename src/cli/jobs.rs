//! `jobs`: recent job runs from the database.

use anyhow::Result;
use clap::Args;

use super::{GlobalArgs, EXIT_OK};

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// How many runs to show, newest first.
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

#[derive(Debug, serde::Serialize)]
struct Row {
    id: i64,
    job: String,
    plugin: String,
    trigger: String,
    engine_id: String,
    started_at: i64,
    finished_at: Option<i64>,
    outcome: String,
    report: serde_json::Value,
}

pub async fn jobs(global: &GlobalArgs, args: JobsArgs) -> Result<u8> {
    let engine = super::start_engine(global).await?;
    let limit = args.limit;
    let rows: Vec<Row> = engine
        .storage()
        .read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, job, plugin, trigger, engine_id, started_at, finished_at, outcome, report_json FROM hygiene_job_runs ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt
                .query_map([limit], |r| {
                    let report: Option<String> = r.get(8)?;
                    Ok(Row {
                        id: r.get(0)?,
                        job: r.get(1)?,
                        plugin: r.get(2)?,
                        trigger: r.get(3)?,
                        engine_id: r.get(4)?,
                        started_at: r.get(5)?,
                        finished_at: r.get(6)?,
                        outcome: r.get(7)?,
                        report: report
                            .and_then(|s| serde_json::from_str(&s).ok())
                            .unwrap_or(serde_json::Value::Null),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:>6}  {:<16} {:<9} {:<10} {:<25} summary",
            "id", "job", "trigger", "outcome", "started (UTC)"
        );
        for row in &rows {
            let started = chrono::DateTime::from_timestamp_millis(row.started_at)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            let summary = row
                .report
                .pointer("/report/summary")
                .and_then(|v| v.as_str())
                .or_else(|| row.report.pointer("/error").and_then(|v| v.as_str()))
                .unwrap_or("");
            println!(
                "{:>6}  {:<16} {:<9} {:<10} {:<25} {summary}",
                row.id, row.job, row.trigger, row.outcome, started
            );
        }
    }
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(EXIT_OK)
}
