//! The migration: an `auto_vacuum = NONE` database switched to INCREMENTAL by one full
//! `VACUUM`, after checking that the disk can hold it.

use speckit_engine::{JobContext, Storage};
use std::path::{Path, PathBuf};

use crate::disk::FreeDiskProbe;
use crate::error::VacuumError;
use crate::incremental::settle_checkpoint;
use crate::measure::{AutoVacuum, Measurement};
use crate::report::VacuumReport;
use crate::steps::Maintenance;

/// Free disk where the database lives, against what a full `VACUUM` may need.
#[derive(Debug, Clone)]
pub struct DiskBudget {
    pub dir: PathBuf,
    pub free_bytes: u64,
    /// Twice the database (file and WAL): in WAL mode the VACUUM writes a temporary copy,
    /// then the whole new database into the WAL, before the old file shrinks.
    pub needed_bytes: u64,
}

impl DiskBudget {
    pub fn measure(
        storage: &Storage,
        free_disk: &FreeDiskProbe,
        before: &Measurement,
    ) -> Result<Self, VacuumError> {
        let dir = database_dir(storage.path());
        let free_bytes = free_disk(&dir).map_err(|source| VacuumError::DiskSpace {
            path: storage.path().to_path_buf(),
            dir: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            free_bytes,
            needed_bytes: (before.bytes + before.wal_bytes).saturating_mul(2),
        })
    }

    /// An error naming the database, the free and the needed bytes, when too small.
    pub fn check(&self, database: &Path) -> Result<(), VacuumError> {
        if self.free_bytes < self.needed_bytes {
            return Err(VacuumError::InsufficientDisk {
                path: database.to_path_buf(),
                dir: self.dir.clone(),
                free_bytes: self.free_bytes,
                needed_bytes: self.needed_bytes,
            });
        }
        Ok(())
    }

    pub fn record(&self, report: &mut VacuumReport) {
        report.free_disk_bytes = Some(self.free_bytes);
        report.needed_disk_bytes = Some(self.needed_bytes);
    }
}

/// The folder whose file system holds the database (and, in WAL mode, the VACUUM's output).
fn database_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks the disk, then runs the migration `VACUUM` as one step and records its figures.
pub async fn migrate(
    ctx: &JobContext,
    maintenance: &Maintenance,
    free_disk: &FreeDiskProbe,
    before: &Measurement,
    report: &mut VacuumReport,
    warnings: &mut Vec<String>,
) -> Result<(), VacuumError> {
    let budget = DiskBudget::measure(&ctx.storage, free_disk, before)?;
    budget.record(report);
    budget.check(ctx.storage.path())?;
    ctx.progress(format!(
        "switching {} to incremental auto-vacuum with one full VACUUM",
        ctx.storage.path().display()
    ));
    let outcome = maintenance
        .migrate_to_incremental()
        .await
        .map_err(VacuumError::from_storage)?;
    // Incremental auto-vacuum keeps pointer-map pages: a small file with nothing free
    // grows by them. Freed is what the file lost, never a negative count.
    let shrunk = outcome.page_count_before - outcome.page_count_after;
    report.pages_freed = shrunk.max(0);
    if shrunk < 0 {
        warnings.push(format!(
            "{} grew by {} page(s): incremental auto-vacuum keeps pointer-map pages, and the file had no free pages to give back",
            ctx.storage.path().display(),
            -shrunk
        ));
    }
    report.wal_bytes_peak = report.wal_bytes_peak.max(outcome.wal_bytes_peak);
    report.max_step_ms = outcome.duration_us as f64 / 1000.0;
    report.checkpoints += 1;
    if outcome.auto_vacuum_after != AutoVacuum::Incremental {
        return Err(VacuumError::MigrationIneffective {
            path: ctx.storage.path().to_path_buf(),
            found: outcome.auto_vacuum_after.label(),
        });
    }
    report.migrated = true;
    if outcome.checkpoint.busy {
        // The VACUUM is committed; its pages wait in the WAL until a checkpoint copies
        // them. Try the usual budget, then leave it to SQLite's own checkpoints.
        report.checkpoints_busy += 1;
        settle_checkpoint(ctx, maintenance, report, warnings).await?;
    }
    Ok(())
}
