//! `demo`: an example workspace in a new folder and one full pass over it. The workspace
//! is kept for the user to look at (the pass ends with what to try there), unless
//! `--remove` says otherwise.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

use super::{GlobalArgs, EXIT_FAILED, EXIT_OK};
use speckit_engine::events::JobOutcome;
use speckit_engine::{Engine, EngineOptions};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Create the workspace here (must be empty or absent) instead of a new folder in the
    /// temporary folder.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Delete the workspace when the pass ends.
    #[arg(long, conflicts_with = "keep")]
    remove: bool,
}

pub async fn demo(_global: &GlobalArgs, args: DemoArgs) -> Result<u8> {
    let mut temp = None;
    let dir = match &args.keep {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
                anyhow::bail!(super::UsageError(format!(
                    "{} is not empty; give an empty or new folder",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            let folder = tempfile::Builder::new().prefix("speckit-demo-").tempdir()?;
            let path = folder.path().to_path_buf();
            temp = Some(folder);
            path
        }
    };
    println!("Creating the demo workspace in {} ...", dir.display());
    let ws =
        speckit_hygiene::demo::create_workspace(&dir).context("creating the demo workspace")?;
    println!(
        "  {} evidence files ({}) under {}",
        ws.evidence_files,
        speckit_engine::units::human_bytes(ws.evidence_bytes),
        ws.evidence_root
            .strip_prefix(&dir)
            .unwrap_or(&ws.evidence_root)
            .display()
    );
    println!(
        "  {} archive(s) an earlier cleanup wrote 120 days ago (past purge_after_days)",
        ws.old_archives
    );
    println!(
        "  {} archive(s) an earlier cleanup wrote {} days ago (past offload.after_days = {}: the pass offloads them to file://{})",
        ws.offload_archives,
        speckit_hygiene::demo::OFFLOAD_AGE_DAYS,
        speckit_hygiene::demo::OFFLOAD_AFTER_DAYS,
        ws.offload_store.display()
    );
    println!(
        "  consensus database {} ({}, upstream-shaped, mostly free pages)",
        ws.database_path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy(),
        speckit_engine::units::human_bytes(ws.database_bytes)
    );
    let host_version_before = speckit_hygiene::demo::host_schema_version(&ws.database_path)?;
    let mut options = EngineOptions::new(&ws.config_path);
    options.env.retain(|(k, _)| !k.starts_with("SPECKIT_"));
    let engine = Engine::start(options, speckit_hygiene::builtin_plugins()).await?;
    let mut failed = false;
    // The evidence guard first: the SPEC is over its limit, so spawning is refused.
    failed |= super::spawn::demo_step(&engine, "spawn (before cleanup)", true).await?;
    for job in ["cleanup", "vacuum"] {
        println!("\n== {job}");
        let run = super::run_job(&engine, job, &serde_json::json!({})).await?;
        failed |= run.outcome == JobOutcome::Failed;
        super::print_job(&run, false);
    }
    failed |= super::spawn::demo_step(&engine, "spawn", false).await?;
    // The pass ends with where the evidence stands against the limits (issue 5).
    println!("\n== stats");
    let stats = super::stats::print_table_for(&engine.policy()).await;
    engine.shutdown(std::time::Duration::from_secs(10)).await;
    stats?;
    let host_version_after = speckit_hygiene::demo::host_schema_version(&ws.database_path)?;
    println!(
        "\nhost schema version (PRAGMA user_version) {host_version_before} before the pass, {host_version_after} after: {}",
        if host_version_after == host_version_before {
            "the host application still opens its database"
        } else {
            "CHANGED: the host application would refuse its database"
        }
    );
    failed |= host_version_after != host_version_before;
    if args.remove {
        println!("\nWorkspace {} removed (--remove).", dir.display());
    } else {
        // Kept: a `TempDir` deletes its folder when dropped.
        if let Some(folder) = temp.take() {
            let _ = folder.keep();
        }
        print_next_steps(&dir);
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

/// What to try in the kept workspace (its `speckit.toml` is what commands read there).
fn print_next_steps(dir: &std::path::Path) {
    println!("\nThe workspace is kept in {}. Next steps:", dir.display());
    println!("  cd {}", dir.display());
    println!("  speckit-hygiene stats                  # evidence per SPEC against the limits");
    println!("  speckit-hygiene jobs                   # the runs this pass recorded");
    println!("  speckit-hygiene cleanup --dry-run      # what a cleanup would do now");
    println!(
        "  speckit-hygiene archives               # where each archive is: local, remote, purged"
    );
    // `--to`: in place, the older archives' copies of files the SPEC still has would be
    // conflicts (restore never overwrites), which is not what a first try should show.
    println!("  speckit-hygiene restore SPEC-KIT-900 --to restored   # archived evidence back into ./restored (offloaded ones are fetched)");
    println!("Remove it with: rm -rf {}", dir.display());
}
