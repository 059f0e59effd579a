//! The `cleanup` and `restore` jobs: options from `ctx.args`, the blocking work on a
//! blocking thread, and the job report (stored in the job-runs table; `--json` prints it).
//!
//! Options are typed: [`CleanupOptions`] (its `list_actions` keeps every action for the
//! caller, off for scheduled runs so a million-file plan never lands in the job-runs table)
//! and [`RestoreOptions`].

use crate::plan::Exempt;
use crate::removal_guard::Assessment;
use crate::EvidencePolicy;
use crate::RetentionPolicy;
use serde_json::json;
use speckit_engine::units::{human_bytes, human_bytes_signed};
use speckit_engine::{JobContext, JobReport, PluginError, SpecId};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::error::RetentionError;
use crate::execute::{self, ExecRequest, Figures};
use crate::faults::Faults;
use crate::plan::{self, Action, Plan, PlanFigures, PlanRequest};
use crate::removal_guard;
use crate::restore::{self, RestoreRequest};
use crate::summary;
use crate::tracker::Trackers;
use crate::verify::{self, ArchiveHealth};

/// Options of one cleanup run (`ctx.args`; unknown or mistyped options are refused).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleanupOptions {
    /// Plan and report; change nothing.
    pub dry_run: bool,
    /// Run a plan `retention.max_removal_fraction` refuses.
    pub force: bool,
    /// Only this SPEC (a tracker ID or a folder name).
    pub spec: Option<SpecId>,
    /// Keep every action for the caller ([`crate::RetentionPlugin::take_actions`]).
    pub list_actions: bool,
}

/// Options of one restore run (`ctx.args`; unknown or mistyped options are refused).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreOptions {
    /// The SPEC whose archives are restored (required).
    pub spec: SpecId,
    /// Only this archive file, instead of every archive of the SPEC.
    #[serde(default)]
    pub archive: Option<PathBuf>,
    /// Restore into this folder instead of the evidence root.
    #[serde(default)]
    pub to: Option<PathBuf>,
}

/// What a cleanup run produced, before it becomes a report.
pub struct CleanupResult {
    pub plan: Plan,
    pub executed: Option<execute::Outcome>,
    pub refused: Option<String>,
    /// What `retention.max_removal_fraction` made of the plan.
    pub guard: removal_guard::Assessment,
    pub summary_file: Option<PathBuf>,
    pub extra_errors: Vec<String>,
    pub extra_warnings: Vec<String>,
    pub duration_ms: u64,
    /// The trackers' IDs (folder names map to them).
    pub tracker_ids: Vec<String>,
    /// What checking the recorded archives found (before anything was changed).
    pub archive_health: ArchiveHealth,
}

fn failed(e: RetentionError) -> PluginError {
    match e {
        RetentionError::InvalidOption(m) => PluginError::InvalidArgs(m),
        RetentionError::Cancelled => PluginError::Cancelled,
        e => PluginError::Failed(e.to_string()),
    }
}

/// How a caller steers a cleanup it runs: when to stop, and where progress goes.
pub struct Control<'a> {
    /// Polled between steps: stop at the next safe point when it returns true.
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
    /// Told `(SPECs done, SPECs in the plan)` as the run goes.
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
}

impl Control<'static> {
    /// Never stops early, reports nothing.
    pub const NONE: Control<'static> = Control {
        cancelled: &|| false,
        progress: &|_, _| {},
    };
}

/// Plans and (unless a dry run) executes, blocking. The library entry point the job, the
/// benchmark and the tests share.
#[allow(clippy::too_many_arguments)]
pub fn cleanup_blocking(
    ctx_policy: &speckit_engine::Policy,
    storage: &speckit_engine::Storage,
    now: chrono::DateTime<chrono::Utc>,
    options: &CleanupOptions,
    faults: Option<&dyn Faults>,
    control: &Control<'_>,
    run_id: i64,
    workers: usize,
) -> Result<CleanupResult, RetentionError> {
    let cancelled = control.cancelled;
    let started = Instant::now();
    let root = ctx_policy.section::<EvidencePolicy>().root.clone();
    let trackers = Trackers::load(&ctx_policy.section::<EvidencePolicy>().tracker_paths)?;
    let plan = plan::build(&PlanRequest {
        root: &root,
        policy: ctx_policy,
        trackers: &trackers,
        now,
        only: options.spec.as_ref(),
        storage,
    })?;
    // Large archive runs are allowed (verified, restorable); irreversible purges and plans
    // that look like a clock or tracker accident are not, without --force.
    let guard = removal_guard::assess(&plan, ctx_policy, storage, now, options.spec.is_none())?;
    let refused = guard.refusal(options.force, options.dry_run);
    // A real run on a database that refuses writes (opened read-only, or failing its
    // integrity check) would write archives it cannot record: refuse it up front.
    let refused = refused.or_else(|| {
        (!options.dry_run)
            .then(|| storage.write_refusal())
            .flatten()
            .map(|reason| {
                format!(
                    "database {} is not written: {reason}; nothing was changed",
                    storage.path().display()
                )
            })
    });
    let archive_health = check_archives(
        &plan,
        ctx_policy,
        storage,
        now,
        options,
        !options.dry_run && refused.is_none(),
        cancelled,
    )?;
    let mut result = CleanupResult {
        plan,
        executed: None,
        refused,
        guard,
        summary_file: None,
        extra_errors: Vec::new(),
        extra_warnings: Vec::new(),
        duration_ms: 0,
        tracker_ids: trackers.ids().map(str::to_string).collect(),
        archive_health,
    };
    if options.dry_run || result.refused.is_some() {
        result.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(result);
    }
    let remote = offload_client(&result.plan, ctx_policy);
    let outcome = execute::run(&ExecRequest {
        plan: &result.plan,
        storage,
        now,
        zstd_level: ctx_policy.section::<RetentionPolicy>().zstd_level,
        faults,
        remote: match &remote {
            Ok(r) => Ok(r),
            Err(why) => Err(why.as_str()),
        },
        cancelled,
        progress: control.progress,
        workers,
        delete_threads: execute::DEFAULT_DELETE_THREADS,
        keep_actions: options.list_actions,
    });
    result.duration_ms = started.elapsed().as_millis() as u64;
    let mut run = json!({
        "run_id": run_id,
        "at": now.to_rfc3339(),
        "duration_ms": result.duration_ms,
        "spec": options.spec.as_ref().map(|s| s.as_str()),
        "exempt_specs": result.plan.exempt,
        "errors": result.plan.errors.iter().chain(result.archive_health.errors().iter()).chain(outcome.errors.iter()).cloned().collect::<Vec<_>>(),
        "damaged_archives": result.archive_health.damaged_archives.len(),
        "warnings": outcome.warnings.len() + result.plan.warnings.len(),
        "cancelled": outcome.cancelled,
    });
    merge(
        &mut run,
        serde_json::to_value(&outcome.figures).unwrap_or_default(),
    );
    match summary::append(&root, now, run, faults) {
        Ok((path, warning)) => {
            result.summary_file = Some(path);
            result.extra_warnings.extend(warning);
        }
        Err(e) => result
            .extra_errors
            .push(format!("writing the daily summary: {e}")),
    }
    result.executed = Some(outcome);
    Ok(result)
}

/// The offload store's client, when the plan offloads an archive or purges an offloaded
/// one (else, or when it cannot start, why there is none).
fn offload_client(
    plan: &Plan,
    policy: &speckit_engine::Policy,
) -> Result<crate::offload::Remote, String> {
    let needed = plan.units.iter().any(|u| {
        !u.offload.is_empty()
            || u.purge
                .iter()
                .any(|p| p.remote.is_some() || p.unrecorded_object.is_some())
    });
    if !needed {
        return Err("no offload in this plan".into());
    }
    crate::offload::Remote::new(&policy.section::<crate::OffloadPolicy>())
        .map_err(|e| e.to_string())
}

/// Checks the recorded archives the plan keeps (see [`crate::verify`]); a real run first
/// brings the retention tables up to date, since it records what it finds.
fn check_archives(
    plan: &Plan,
    policy: &speckit_engine::Policy,
    storage: &speckit_engine::Storage,
    now: chrono::DateTime<chrono::Utc>,
    options: &CleanupOptions,
    real_run: bool,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<ArchiveHealth, RetentionError> {
    let purged_by_plan: std::collections::HashSet<i64> = plan
        .units
        .iter()
        .flat_map(|u| u.purge.iter().filter_map(|p| p.archive_id))
        .collect();
    let recorded = crate::catalog::read(storage, crate::catalog::unpurged)?;
    let records = verify::records_to_check(recorded, options.spec.as_ref(), &purged_by_plan);
    if real_run && !records.is_empty() {
        storage.ensure_schema_blocking(&crate::schema::RETENTION_SCHEMA)?;
    }
    verify::check(
        &verify::CheckRequest {
            root: &plan.root,
            records: &records,
            now,
            hash_every_days: policy
                .section::<RetentionPolicy>()
                .verify_archive_hashes_every_days,
            real_run,
            cancelled,
        },
        storage,
    )
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

/// What a run allowed past `retention.max_removal_fraction` did, said first in its
/// summary: a first or large archive run (allowed: each file is in a verified archive and
/// `restore` brings it back), and the signals `--force` overrode.
fn run_note(result: &CleanupResult, figures: &Figures, force: bool) -> String {
    let g = &result.guard;
    let mut out = String::new();
    if force && !g.signals.is_empty() {
        let names: Vec<&str> = g.signals.iter().map(|s| s.name.as_str()).collect();
        out.push_str(&format!(
            "forced past the {} guard(s) of retention.max_removal_fraction; ",
            names.join(", ")
        ));
    }
    if (g.large() || g.first_cleanup) && figures.archived_files > 0 {
        let specs: std::collections::BTreeSet<&str> = result
            .plan
            .units
            .iter()
            .filter(|u| u.archive.as_ref().is_some_and(|a| !a.files.is_empty()))
            .map(|u| u.tracker_id.as_str())
            .collect();
        out.push_str(&format!(
            "{} cleanup: archived {} file(s) of {} SPEC(s) into {} archive(s) ({:.1}% of the evidence files); all restorable with `speckit-hygiene restore <SPEC>`. ",
            if g.first_cleanup { "first" } else { "large" },
            figures.archived_files,
            specs.len(),
            figures.archives_written,
            g.removal_fraction * 100.0
        ));
    }
    out
}

/// The offload part of a real run's summary: what was offloaded, measured, and how many
/// planned offloads did not finish (their archives stay local; the errors say why).
fn offload_note(figures: &Figures, planned: &PlanFigures) -> String {
    if planned.offload_archives == 0 && figures.purged_remote_objects == 0 {
        return String::new();
    }
    let mut out = format!(
        "; offloaded {} archive(s) ({} sent, {} of local copies deleted)",
        figures.offloaded_archives,
        human_bytes(figures.uploaded_bytes),
        human_bytes(figures.offloaded_local_bytes)
    );
    let left = planned
        .offload_archives
        .saturating_sub(figures.offloaded_archives);
    if left > 0 {
        out.push_str(&format!(
            ", {left} not offloaded (kept local, retried next run)"
        ));
    }
    if figures.purged_remote_objects > 0 {
        out.push_str(&format!(
            "; deleted {} offloaded object(s)",
            figures.purged_remote_objects
        ));
    }
    out
}

/// The `cleanup` job's report data: `report.figures::<CleanupReport>()`. Each figure
/// counts what the run did (a dry run: what its plan would do).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CleanupReport {
    pub dry_run: bool,
    pub root: PathBuf,
    /// The one SPEC the run was limited to.
    pub spec: Option<String>,
    /// SPECs left alone, and why.
    pub exempt_specs: Vec<Exempt>,
    /// Entries never touched (symlinks, special files...).
    pub skipped_entries: u64,
    /// The plan's totals.
    pub planned: PlanFigures,
    pub removal_fraction: f64,
    pub removal_guard: Assessment,
    /// The removal guard refused the plan; nothing changed.
    pub refused: bool,
    /// Stopped at shutdown; a rerun finishes.
    pub cancelled: bool,
    pub duration_ms: u64,
    /// `<root>/cleanup/daily-summaries/<date>.json`, when written.
    pub summary_file: Option<PathBuf>,
    pub archive_check: ArchiveHealth,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// What the run did (all zero in a dry run).
    #[serde(flatten)]
    pub figures: Figures,
}

/// The job report of a cleanup run, and its actions.
pub fn cleanup_report(
    result: &CleanupResult,
    options: &CleanupOptions,
) -> (JobReport, Vec<Action>) {
    let plan = &result.plan;
    let planned: PlanFigures = plan.figures();
    let (figures, actions, mut errors, mut warnings, cancelled) = match &result.executed {
        Some(o) => (
            o.figures.clone(),
            o.actions.clone(),
            o.errors.clone(),
            o.warnings.clone(),
            o.cancelled,
        ),
        None => (
            Figures::default(),
            plan.actions(),
            Vec::new(),
            Vec::new(),
            false,
        ),
    };
    let health = &result.archive_health;
    errors.splice(0..0, plan.errors.iter().cloned().chain(health.errors()));
    warnings.splice(0..0, plan.warnings.iter().cloned().chain(health.warnings()));
    errors.extend(result.extra_errors.iter().cloned());
    warnings.extend(result.extra_warnings.iter().cloned());
    if let Some(refusal) = &result.refused {
        if options.dry_run {
            warnings.push(refusal.clone());
        } else {
            errors.push(refusal.clone());
        }
    }
    let exempt = plan.exempt.len();
    let summary = if result.executed.is_some() {
        format!(
            "{}archived {} file(s) ({}) and {} database row(s) into {} archive(s) ({}); deleted {} source file(s); purged {} archive(s) ({}){}{}; {} reclaimed; {} SPEC(s) exempt; {} error(s){}",
            run_note(result, &figures, options.force),
            figures.archived_files,
            human_bytes(figures.archived_bytes),
            figures.archived_rows,
            figures.archives_written,
            human_bytes(figures.archive_bytes_written),
            figures.deleted_files,
            figures.purged_archives,
            human_bytes(figures.purged_bytes),
            if figures.adopted_archives > 0 {
                format!(
                    "; adopted {} unrecorded archive(s)",
                    figures.adopted_archives
                )
            } else {
                String::new()
            },
            offload_note(&figures, &planned),
            {
                // Apparent bytes, then allocated blocks: what `du` and `df` see.
                let signed = human_bytes_signed;
                format!(
                    "{} ({} of allocated blocks, as du counts)",
                    signed(figures.bytes_reclaimed),
                    signed(figures.allocated_bytes_reclaimed)
                )
            },
            exempt,
            errors.len(),
            if cancelled { "; stopped early (shutdown)" } else { "" }
        )
    } else if result.refused.is_some() && !options.dry_run {
        format!("refused: {}", result.refused.as_deref().unwrap_or_default())
    } else {
        format!(
            "dry run, nothing changed. The plan: archive {} file(s) ({}) and {} database row(s); delete {} already archived file(s); keep {} by rule; purge {} archive(s) ({}); offload {} archive(s) ({}); adopt {}; discard {} temporary file(s); {} SPEC(s) exempt",
            planned.archive_files,
            human_bytes(planned.archive_bytes),
            planned.archive_rows,
            planned.delete_archived_files,
            planned.keep_files,
            planned.purge_archives,
            human_bytes(planned.purge_bytes),
            planned.offload_archives,
            human_bytes(planned.offload_bytes),
            planned.adopt_archives,
            planned.discard_temps,
            exempt
        ) + &if result.guard.large() && result.refused.is_none() {
            format!(
                "; {:.1}% of the evidence files would be archived, above retention.max_removal_fraction: allowed, every one is restorable",
                result.guard.removal_fraction * 100.0
            )
        } else {
            String::new()
        }
    };
    let data = CleanupReport {
        dry_run: options.dry_run,
        root: plan.root.clone(),
        spec: options.spec.as_ref().map(|s| s.as_str().to_string()),
        exempt_specs: plan.exempt.clone(),
        skipped_entries: plan.skipped.len() as u64,
        planned,
        removal_fraction: plan.removal_fraction(),
        removal_guard: result.guard.clone(),
        refused: result.refused.is_some() && !options.dry_run,
        cancelled,
        duration_ms: result.duration_ms,
        summary_file: result.summary_file.clone(),
        archive_check: health.clone(),
        errors: errors.clone(),
        warnings: warnings.clone(),
        figures,
    };
    let mut report = JobReport::typed(summary, &data);
    report.errors = errors;
    report.warnings = warnings;
    (report, actions)
}

/// The `cleanup` job.
pub async fn cleanup(
    ctx: JobContext,
    faults: Option<Arc<dyn Faults>>,
) -> Result<(JobReport, Option<Vec<Action>>), PluginError> {
    let options: CleanupOptions = ctx.options()?;
    let snapshot = ctx.policy.clone();
    let storage = ctx.storage.clone();
    let now = ctx.clock.now();
    let cancel = ctx.cancel.clone();
    let counter = ctx.counter("SPECs");
    let run_id = ctx.run_id;
    ctx.progress(if options.dry_run {
        "planning cleanup (dry run)"
    } else {
        "cleanup started"
    });
    let opts = options.clone();
    let result = tokio::task::spawn_blocking(move || {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4);
        cleanup_blocking(
            &snapshot.policy,
            &storage,
            now,
            &opts,
            faults.as_deref(),
            &Control {
                cancelled: &|| cancel.is_cancelled(),
                progress: &|done, total| {
                    counter.set(done, total, format!("{done} of {total} SPECs done"));
                },
            },
            run_id,
            workers,
        )
    })
    .await
    .map_err(|e| PluginError::Failed(format!("cleanup task failed: {e}")))?
    .map_err(failed)?;
    let (mut report, actions) = cleanup_report(&result, &options);
    // Issue 5: with old evidence archived, check every SPEC against evidence.warn_mb and
    // limit_mb (warnings and `limit_warning` events). Not for dry runs or refused runs:
    // they changed nothing, and `stats` answers that question directly.
    if !options.dry_run && result.refused.is_none() {
        let names = crate::stats::SpecNames::with_tracker_ids(result.tracker_ids.iter().cloned());
        crate::limits::check_after_cleanup(&ctx, &mut report, &names).await;
    }
    // A refused run returns a report whose errors hold the refusal: the run counts as
    // failed (exit status 1) and nothing was changed.
    Ok((report, options.list_actions.then_some(actions)))
}

/// The `restore` job.
pub async fn restore(
    ctx: JobContext,
    faults: Option<Arc<dyn Faults>>,
) -> Result<JobReport, PluginError> {
    let RestoreOptions { spec, archive, to } = ctx.options()?;
    let root = ctx.policy.policy.section::<EvidencePolicy>().root.clone();
    let offload = ctx.policy.policy.section::<crate::OffloadPolicy>();
    let storage = ctx.storage.clone();
    let report = tokio::task::spawn_blocking(move || {
        restore::restore(&RestoreRequest {
            root: &root,
            storage: &storage,
            spec: &spec,
            archive: archive.as_deref(),
            to: to.as_deref(),
            faults: faults.as_deref(),
            offload: Some(&offload),
        })
    })
    .await
    .map_err(|e| PluginError::Failed(format!("restore task failed: {e}")))?
    .map_err(failed)?;
    let summary = format!(
        "restored {} file(s) ({}) from {} archive(s); {} already in place; {} conflict(s); {} database row(s) inserted, {} already there{}",
        report.restored_files,
        human_bytes(report.restored_bytes),
        report.archives.len(),
        report.already_present,
        report.conflicts,
        report.rows_inserted,
        report.rows_identical,
        if report.rows_written_to.is_empty() {
            String::new()
        } else {
            format!("; rows written to {}", report.rows_written_to.join(", "))
        }
    );
    let mut errors = report.errors.clone();
    errors.extend(report.row_conflicts.iter().cloned());
    let mut job = JobReport::typed(summary, &report);
    job.errors = errors;
    Ok(job)
}
