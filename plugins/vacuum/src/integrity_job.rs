//! The `integrity_check` job: `PRAGMA integrity_check` on a read snapshot, reported.

use speckit_engine::{JobContext, JobReport, NoOptions, PluginError};
use std::path::PathBuf;
use std::time::Instant;

use crate::check::{run_check, CheckKind, CheckOutcome};
use crate::render::thousands;

/// The `integrity_check` job's report data: `report.figures::<IntegrityReport>()`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IntegrityReport {
    pub database: PathBuf,
    pub check: CheckOutcome,
    /// The whole job, in milliseconds.
    pub duration_ms: u64,
}

/// Runs the `integrity_check` job. A database with problems fails the job with SQLite's
/// own lines as the error; the report keeps them in `data.check.output`.
pub async fn run(ctx: &JobContext) -> Result<JobReport, PluginError> {
    let NoOptions {} = ctx.options()?;
    let started = Instant::now();
    let storage = &ctx.storage;
    let check = run_check(storage, CheckKind::Integrity).await?;
    let error = check.to_error(storage, CheckKind::Integrity);
    let db = storage.path().display();
    let summary = if check.ok {
        format!("integrity_check of {db}: ok ({} ms)", check.duration_ms)
    } else {
        // SQLite stops listing at 100 problems.
        let lines = check.output.iter().flat_map(|row| row.lines()).count();
        format!(
            "integrity_check of {db} FAILED: {} lines of problems ({} ms)",
            thousands(lines as i64),
            check.duration_ms
        )
    };
    let figures = IntegrityReport {
        database: storage.path().to_path_buf(),
        check,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let mut report = JobReport::typed(summary, &figures);
    report.errors = error.map(|e| e.to_string()).into_iter().collect();
    Ok(report)
}
