//! `cleanup` and `restore`: the retention plugin's jobs, run through the engine so each run
//! is recorded like a scheduled one.
//!
//! `cleanup --dry-run` prints the exact plan, one action per line (`--json`: the report's
//! figures plus an `actions` array); a real run prints its summary, warnings and errors
//! (`--json`: the same figures plus every action with its status). The action list comes
//! from the plugin directly, not from the job report, so a huge plan is never stored in the
//! job-runs table.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

use super::{
    engine_options, print_job, run_job, Access, GlobalArgs, UsageError, EXIT_FAILED, EXIT_OK,
};
use speckit_engine::events::JobOutcome;
use speckit_engine::{Engine, Plugin, SpecId};
use speckit_retention::age::AgeSource;
use speckit_retention::job::{CleanupOptions, RestoreOptions};
use speckit_retention::plan::{Action, ActionKind};
use speckit_retention::RetentionPlugin;

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Print the exact plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only this SPEC (a folder name or a tracker ID).
    #[arg(long, value_name = "SPEC-ID", value_parser = parse_spec_id)]
    spec: Option<SpecId>,
    /// Allow a plan that removes more than the policy's fraction of all evidence.
    #[arg(long)]
    force: bool,
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The SPEC whose archives to restore.
    #[arg(value_parser = parse_spec_id)]
    spec: SpecId,
    /// One archive file (default: every recorded archive of the SPEC).
    #[arg(long, value_name = "FILE")]
    archive: Option<PathBuf>,
    /// Restore files under this folder instead of their original places (database rows
    /// are then written there as db/<table>.jsonl, not into the database).
    #[arg(long, value_name = "DIR")]
    to: Option<PathBuf>,
    #[arg(long)]
    pub(super) json: bool,
}

/// Clap's parser for SPEC-ID arguments: an invalid one is a usage error (exit 2) naming why.
pub(super) fn parse_spec_id(value: &str) -> Result<SpecId, String> {
    SpecId::parse(value).map_err(|e| e.to_string())
}

/// An engine whose retention plugin is `retention` (so its action lists can be taken).
async fn engine_with(
    global: &GlobalArgs,
    access: Access,
    retention: Arc<RetentionPlugin>,
) -> Result<Engine> {
    let mut plugins = speckit_hygiene::builtin_plugins();
    let mine: Arc<dyn Plugin> = retention;
    match plugins.iter().position(|p| p.name() == mine.name()) {
        Some(i) => plugins[i] = mine,
        None => plugins.push(mine),
    }
    Ok(Engine::start(engine_options(global, access)?, plugins).await?)
}

pub async fn cleanup(global: &GlobalArgs, args: CleanupArgs) -> Result<u8> {
    let retention = Arc::new(RetentionPlugin::new());
    let access = if args.dry_run {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let engine = engine_with(global, access, retention.clone()).await?;
    let list_actions = args.json || args.dry_run;
    let run = run_job(
        &engine,
        "cleanup",
        &CleanupOptions {
            dry_run: args.dry_run,
            force: args.force,
            spec: args.spec.clone(),
            list_actions,
        },
    )
    .await?;
    let actions = retention.take_actions(run.run_id).unwrap_or_default();
    let code = match (&run.report, args.json) {
        (Some(_), true) => {
            let actions = serde_json::to_value(&actions)?;
            super::json::print_job("cleanup", &run, Some(("actions", actions)));
            exit_code(&run.outcome)
        }
        (Some(report), false) => {
            if args.dry_run {
                for a in &actions {
                    println!("{}", action_line(a));
                }
            }
            println!("{}", report.summary);
            for w in &report.warnings {
                super::output::warn(w);
            }
            for e in &report.errors {
                eprintln!("error: {e}");
            }
            exit_code(&run.outcome)
        }
        (None, json) => print_job(&run, json),
    };
    engine.shutdown(std::time::Duration::from_secs(30)).await;
    Ok(code)
}

fn exit_code(outcome: &JobOutcome) -> u8 {
    match outcome {
        JobOutcome::Failed => EXIT_FAILED,
        _ => EXIT_OK,
    }
}

/// One plan line: `archive  commands/X/a.json -> cleanup/archives/X/...tar.zst [made
/// 2025-10-14, from its last git commit]`.
fn action_line(a: &Action) -> String {
    let name = serde_json::to_value(a.action)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut line = format!("{name:<16} {}", a.path);
    match a.action {
        ActionKind::Archive | ActionKind::DeleteArchived => {
            if let Some(archive) = &a.archive {
                line.push_str(&format!(" -> {archive}"));
            }
            // When the file was made and how that was decided (`age::file_time`).
            if let (Some(made), Some(source)) = (&a.made_at, a.age_source) {
                let source = match source {
                    AgeSource::Name => "its name",
                    AgeSource::GitCommit => "its last git commit",
                    AgeSource::Mtime => "its mtime",
                };
                let day = made.get(..10).unwrap_or(made);
                line.push_str(&format!(" [made {day}, from {source}]"));
            }
        }
        ActionKind::Offload => {
            if let Some(url) = &a.archive {
                let size = a
                    .bytes
                    .map(speckit_engine::units::human_bytes)
                    .unwrap_or_default();
                line.push_str(&format!(" -> {url} [{size}]"));
            }
        }
        ActionKind::ArchiveRows => {
            line.push_str(&format!(
                " <- {} row(s) of {}",
                a.rows.unwrap_or(0),
                a.table.as_deref().unwrap_or("?")
            ));
        }
        _ => {}
    }
    if let Some(reason) = &a.reason {
        line.push_str(&format!(" ({reason})"));
    }
    line
}

pub async fn restore(global: &GlobalArgs, args: RestoreArgs) -> Result<u8> {
    let absolute = |p: &PathBuf| -> Result<PathBuf> { Ok(std::path::absolute(p)?) };
    if let Some(archive) = &args.archive {
        if !archive.is_file() {
            anyhow::bail!(UsageError(format!(
                "--archive {}: no such archive file",
                archive.display()
            )));
        }
    }
    let archive = args.archive.as_ref().map(absolute).transpose()?;
    let to = args.to.as_ref().map(absolute).transpose()?;
    let engine = super::start_engine(global, Access::ReadWrite).await?;
    let run = run_job(
        &engine,
        "restore",
        &RestoreOptions {
            spec: args.spec.clone(),
            archive,
            to,
        },
    )
    .await?;
    let code = print_job(&run, args.json);
    engine.shutdown(std::time::Duration::from_secs(30)).await;
    Ok(code)
}
