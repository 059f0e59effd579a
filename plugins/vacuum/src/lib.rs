//! The vacuum plugin: keeps the consensus database small without blocking writers.
//!
//! Jobs:
//! - `vacuum` switches an `auto_vacuum = NONE` database to INCREMENTAL once, with one full
//!   `VACUUM` after checking free disk, and otherwise frees free pages in chunks, each a
//!   write transaction stepping `PRAGMA incremental_vacuum(N)` to its end and sized to
//!   hold the writer about `[vacuum] step_target_ms` (at most `chunk_pages` pages), with a
//!   `wal_checkpoint(PASSIVE)` off the writer once the WAL in use outgrows
//!   `checkpoint_wal_kib`, and PASSIVE then TRUNCATE at the end.
//!   `PRAGMA quick_check` runs first; a database that fails it is not touched.
//! - `integrity_check` runs `PRAGMA integrity_check` and reports.
//!
//! Every figure in a report is measured: page counts from SQLite, file sizes from
//! `std::fs::metadata` (the database file is never opened with file APIs).

pub mod check;
pub mod disk;
pub mod error;
pub mod incremental;
pub mod integrity_job;
pub mod measure;
pub mod migrate;
pub mod plan;
pub mod render;
pub mod report;
pub mod settings;
pub mod steps;
pub mod vacuum_job;

pub use check::{CheckKind, CheckOutcome};
pub use disk::FreeDiskProbe;
pub use error::VacuumError;
pub use report::VacuumReport;
pub use steps::{CheckpointOutcome, ChunkOutcome, Maintenance, MigrationOutcome};

use speckit_engine::plugin::BoxFuture;
use speckit_engine::policy::{JobSpec, SectionSpec};
use speckit_engine::{JobContext, JobReport, Plugin, PluginError};

pub use settings::VacuumPolicy;

/// The vacuum plugin (jobs `vacuum` and `integrity_check`).
pub struct VacuumPlugin {
    free_disk: FreeDiskProbe,
}

impl std::fmt::Debug for VacuumPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VacuumPlugin").finish_non_exhaustive()
    }
}

impl Default for VacuumPlugin {
    fn default() -> Self {
        Self::new()
    }
}

impl VacuumPlugin {
    /// The plugin measuring free disk with `statvfs(2)`.
    pub fn new() -> Self {
        Self {
            free_disk: disk::statvfs_probe(),
        }
    }

    /// The plugin with another free-disk probe (tests simulate a full disk with it).
    pub fn with_free_disk_probe(free_disk: FreeDiskProbe) -> Self {
        Self { free_disk }
    }
}

impl Plugin for VacuumPlugin {
    fn name(&self) -> &str {
        "vacuum"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn jobs(&self) -> Vec<JobSpec> {
        vec![
            JobSpec::new("vacuum", "30 3 * * *"),
            JobSpec::new("integrity_check", "0 4 * * 0"),
        ]
    }

    fn sections(&self) -> Vec<SectionSpec> {
        vec![SectionSpec::of::<VacuumPolicy>()]
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async move {
            match ctx.job.as_str() {
                "vacuum" => vacuum_job::run(&ctx, &self.free_disk).await,
                "integrity_check" => integrity_job::run(&ctx).await,
                other => Err(PluginError::Failed(format!(
                    "the vacuum plugin has no job {other:?}"
                ))),
            }
        })
    }
}
