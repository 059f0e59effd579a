//! The `vacuum` job: measure, `quick_check`, decide, then migrate or vacuum in chunks
//! (or, for a dry run, say what would happen), and report every figure it measured.

use crate::VacuumPolicy;
use speckit_engine::{JobContext, JobReport, PluginError, Storage};
use std::time::Instant;

use crate::check::{run_check, CheckKind};
use crate::disk::FreeDiskProbe;
use crate::incremental::incremental;
use crate::measure::{measure, AutoVacuum, Measurement};
use crate::migrate::{migrate, DiskBudget};
use crate::plan::{decide, VacuumOptions};
use crate::report::{Action, Outcome, VacuumReport};
use crate::steps::Maintenance;

/// Runs the `vacuum` job.
pub async fn run(ctx: &JobContext, free_disk: &FreeDiskProbe) -> Result<JobReport, PluginError> {
    let started = Instant::now();
    let options: VacuumOptions = ctx.options()?;
    let policy = ctx.policy.policy.section::<VacuumPolicy>().clone();
    let storage = ctx.storage.clone();
    let before = measure(&storage).await?;
    let check = run_check(&storage, CheckKind::Quick).await?;
    let check_error = check.to_error(&storage, CheckKind::Quick);
    let mut report = VacuumReport::new(
        storage.path().to_path_buf(),
        &before,
        check,
        policy.free_fraction_threshold,
        policy.chunk_pages,
        options.dry_run,
        options.force,
    );
    let (action, reason) = decide(&before.pages, &policy, options.force);
    report.action = action;
    report.reason = reason;
    let mut warnings = Vec::new();
    let mut errors = Vec::new();

    if let Some(error) = check_error {
        report.outcome = Outcome::CheckFailed;
        errors.push(error.to_string());
    } else if options.dry_run {
        report.outcome = Outcome::DryRun;
        dry_run(&storage, free_disk, &before, &mut report, &mut warnings);
    } else {
        let maintenance = Maintenance::new(storage.clone());
        let done = match action {
            Action::Migrate => {
                migrate(
                    ctx,
                    &maintenance,
                    free_disk,
                    &before,
                    &mut report,
                    &mut warnings,
                )
                .await
            }
            Action::Incremental => {
                incremental(ctx, &maintenance, &before, &mut report, &mut warnings).await
            }
            Action::None => Ok(()),
        };
        report.busy_retries = maintenance.busy_retries();
        if let Err(error) = done {
            report.outcome = Outcome::Failed;
            errors.push(error.to_string());
        }
    }

    let after = measure(&storage).await?;
    report.set_after(&after);
    report.duration_ms = started.elapsed().as_millis() as u64;
    if report.outcome == Outcome::Cancelled {
        warnings.push(format!(
            "stopped at shutdown after {} chunks; the next run frees the remaining {} free pages",
            report.chunks, report.freelist_after
        ));
    }
    if report.action == Action::None
        && report.auto_vacuum_before == AutoVacuum::None
        && report.free_fraction_before >= policy.free_fraction_threshold
    {
        warnings.push(report.reason.clone().unwrap_or_default());
    }
    let mut job = JobReport::typed(report.headline(), &report);
    job.warnings = warnings;
    job.errors = errors;
    Ok(job)
}

/// A dry run: what a real run would free, and whether the disk would hold a migration.
fn dry_run(
    storage: &Storage,
    free_disk: &FreeDiskProbe,
    before: &Measurement,
    report: &mut VacuumReport,
    warnings: &mut Vec<String>,
) {
    let free_pages = match report.action {
        Action::None => 0,
        Action::Migrate | Action::Incremental => before.pages.freelist_count,
    };
    report.would_free_pages = Some(free_pages);
    report.would_free_bytes = Some((free_pages * before.pages.page_size).max(0) as u64);
    if report.action == Action::Migrate {
        let checked = DiskBudget::measure(storage, free_disk, before).and_then(|budget| {
            budget.record(report);
            budget.check(storage.path())
        });
        if let Err(error) = checked {
            warnings.push(format!("a real run would fail: {error}"));
        }
    }
}
