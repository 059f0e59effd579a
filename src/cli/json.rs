//! The one shape of every `--json` output: an object with `schema_version`, the command,
//! whether it went well, its `data`, the job run when it ran a job (the same shape `jobs`
//! lists runs in), and its warnings and errors. A command that fails with `--json` prints
//! this too, on stdout, with `ok: false`, and exits non-zero.
//!
//! `schema_version` changes only when a field is renamed, removed or changes meaning;
//! fields may be added without it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use speckit_engine::engine::JobRun;
use speckit_engine::events::JobOutcome;
use speckit_hygiene::embed::JobRecord;

/// The envelope's version (see the module docs).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
struct Envelope<'a, T: Serialize> {
    schema_version: u32,
    command: &'a str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<&'a JobJson>,
    data: &'a T,
    warnings: &'a [String],
    errors: &'a [ErrorJson],
}

/// An error: its kind (`usage`, `failed`, `refused`, `cancelled`, `storage`...) and message.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorJson {
    pub kind: String,
    pub message: String,
}

impl ErrorJson {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// A job run, one shape wherever one is shown: times in UTC (RFC 3339), durations in
/// milliseconds, the trigger and outcome as words.
#[derive(Debug, Clone, Serialize)]
pub struct JobJson {
    pub run_id: i64,
    pub job: String,
    pub plugin: String,
    /// `manual`, `schedule` or `catch_up`.
    pub trigger: String,
    /// `succeeded`, `failed`, `skipped`, `running` or `abandoned`.
    pub outcome: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    pub summary: String,
    /// The failure's kind when the run failed without a report.
    pub error: Option<ErrorJson>,
    /// The policy file the run served (`null` for runs recorded before it was kept).
    pub config_path: Option<String>,
}

pub fn outcome_word(outcome: &JobOutcome) -> &'static str {
    match outcome {
        JobOutcome::Succeeded => "succeeded",
        JobOutcome::Failed => "failed",
        JobOutcome::Skipped => "skipped",
    }
}

impl From<&JobRun> for JobJson {
    fn from(run: &JobRun) -> Self {
        let kind = run
            .error_kind
            .map(|k| serde_json::to_value(k).ok())
            .and_then(|v| v.and_then(|v| v.as_str().map(String::from)))
            .unwrap_or_else(|| "failed".into());
        Self {
            run_id: run.run_id,
            job: run.job.clone(),
            plugin: run.plugin.clone(),
            trigger: run.trigger.label().into(),
            outcome: outcome_word(&run.outcome).into(),
            started_at: None,
            finished_at: None,
            duration_ms: Some(run.duration_ms),
            summary: run
                .report
                .as_ref()
                .map(|r| r.summary.clone())
                .or_else(|| run.error.clone())
                .unwrap_or_default(),
            error: run.error.as_ref().map(|e| ErrorJson::new(kind, e.clone())),
            config_path: Some(run.config_path.display().to_string()),
        }
    }
}

impl From<&JobRecord> for JobJson {
    fn from(record: &JobRecord) -> Self {
        Self {
            run_id: record.run_id,
            job: record.job.clone(),
            plugin: record.plugin.clone(),
            trigger: record.trigger.clone(),
            outcome: record.outcome.clone(),
            started_at: record.started_at,
            finished_at: record.finished_at,
            duration_ms: record
                .started_at
                .zip(record.finished_at)
                .map(|(s, f)| (f - s).num_milliseconds().max(0) as u64),
            summary: record.summary().to_string(),
            error: record
                .error
                .as_ref()
                .map(|e| ErrorJson::new("failed", e.clone())),
            config_path: record.config_path.clone(),
        }
    }
}

/// The envelope as text (for a file), ending in a newline.
pub fn render<T: Serialize>(
    command: &str,
    ok: bool,
    job: Option<&JobJson>,
    data: &T,
    warnings: &[String],
    errors: &[ErrorJson],
) -> String {
    let envelope = Envelope {
        schema_version: SCHEMA_VERSION,
        command,
        ok,
        job,
        data,
        warnings,
        errors,
    };
    // Serialising plain data (strings, numbers, maps with string keys) cannot fail.
    let mut text = serde_json::to_string_pretty(&envelope).unwrap_or_default();
    text.push('\n');
    text
}

/// Prints a command's data in the envelope, with no job, warnings or errors.
pub fn print_data<T: Serialize>(command: &str, data: &T) {
    print!("{}", render(command, true, None, data, &[], &[]));
}

/// Prints a job run in the envelope: its report's data (with `extra` fields added), its
/// warnings and errors.
pub fn print_job(command: &str, run: &JobRun, extra: Option<(&str, serde_json::Value)>) {
    let job = JobJson::from(run);
    let (mut data, warnings, mut errors) = match &run.report {
        Some(report) => (
            report.data.clone(),
            report.warnings.clone(),
            report
                .errors
                .iter()
                .map(|e| ErrorJson::new("failed", e.clone()))
                .collect::<Vec<_>>(),
        ),
        None => (serde_json::Value::Null, Vec::new(), Vec::new()),
    };
    if let Some(error) = &job.error {
        errors.push(error.clone());
    }
    if let (Some((key, value)), Some(obj)) = (extra, data.as_object_mut()) {
        obj.insert(key.to_string(), value);
    }
    let ok = run.outcome != JobOutcome::Failed && errors.is_empty();
    print!(
        "{}",
        render(command, ok, Some(&job), &data, &warnings, &errors)
    );
}

/// Prints a failed command's error in the envelope (`data` null).
pub fn print_error(command: &str, kind: &str, message: &str) {
    let errors = [ErrorJson::new(kind, message)];
    print!(
        "{}",
        render(command, false, None, &serde_json::Value::Null, &[], &errors)
    );
}
