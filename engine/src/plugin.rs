//! The plugin boundary: a small object-safe trait, the context a job runs with, and the
//! report it returns. Compiled-in and dynamically loaded plugins both implement [`Plugin`].

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::events::{EngineEvent, EventBus};
use crate::policy::{JobSpec, Policy, PolicySnapshot, SectionSpec};
use crate::storage::{ComponentSchema, Storage, StorageError};

/// Why a job ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobTrigger {
    /// Its cron schedule fired for this time.
    Schedule { fire_at: DateTime<Utc> },
    /// It was missed while no engine ran; run once at start-up.
    CatchUp { missed_at: DateTime<Utc> },
    /// Someone asked (CLI, host application).
    Manual,
}

impl JobTrigger {
    pub fn label(&self) -> &'static str {
        match self {
            JobTrigger::Schedule { .. } => "schedule",
            JobTrigger::CatchUp { .. } => "catch_up",
            JobTrigger::Manual => "manual",
        }
    }
}

/// What a job reports. Stored as JSON in the job-runs table; every figure in it must come
/// from what the job did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    /// One line for people.
    pub summary: String,
    /// The job's figures, for programs (`--json`).
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Errors the job met but went on past (one file, one SPEC). Any error makes the run
    /// count as failed (exit status 1).
    #[serde(default)]
    pub errors: Vec<String>,
}

impl JobReport {
    pub fn new(summary: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            summary: summary.into(),
            data,
            ..Self::default()
        }
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// A report whose `data` is `figures`, the job's own report type (a plugin documents
    /// one per job, as `speckit_spawn::SpawnJobReport`), so readers get it back typed with
    /// [`JobReport::figures`].
    pub fn typed<T: Serialize>(summary: impl Into<String>, figures: &T) -> Self {
        Self::new(
            summary,
            serde_json::to_value(figures).unwrap_or(serde_json::Value::Null),
        )
    }

    /// `data` read back as the job's report type: callers (the CLI, a host's UI) read a
    /// type, never JSON by string keys. The error names the type and the cause (a report
    /// of another job, or one stored by an older release).
    pub fn figures<T: DeserializeOwned>(&self) -> Result<T, ReportTypeError> {
        T::deserialize(&self.data).map_err(|e| ReportTypeError {
            type_name: std::any::type_name::<T>(),
            cause: e.to_string(),
        })
    }
}

/// A report's data is not of the type asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the job's report is not a {type_name}: {cause}")]
pub struct ReportTypeError {
    pub type_name: &'static str,
    pub cause: String,
}

/// Why a job failed outright.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("invalid job options: {0}")]
    InvalidArgs(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cancelled")]
    Cancelled,
    /// A rule of the policy said no (a SPEC over its evidence limit); nothing ran. The
    /// message says why and what would let it run.
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// Why a run ended without a report, kept beside its message in [`crate::engine::JobRun`]
/// so a caller (the CLI's exit status, a host's UI) decides by kind, not by parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobErrorKind {
    /// The options were refused ([`PluginError::InvalidArgs`]): a caller's mistake; nothing ran.
    InvalidOptions,
    /// The database failed under the job ([`PluginError::Storage`]).
    Storage,
    /// Stopped at shutdown ([`PluginError::Cancelled`]).
    Cancelled,
    /// A policy rule refused the run ([`PluginError::Refused`]); nothing ran.
    Refused,
    /// The job failed ([`PluginError::Failed`]), or its task ended abnormally.
    Failed,
    /// The plugin panicked; the engine caught it.
    Panicked,
}

impl PluginError {
    pub fn kind(&self) -> JobErrorKind {
        match self {
            PluginError::InvalidArgs(_) => JobErrorKind::InvalidOptions,
            PluginError::Storage(_) => JobErrorKind::Storage,
            PluginError::Cancelled => JobErrorKind::Cancelled,
            PluginError::Refused(_) => JobErrorKind::Refused,
            PluginError::Failed(_) => JobErrorKind::Failed,
        }
    }
}

/// Everything a job gets: the policy snapshot it started with (a reload never changes a
/// running job), storage, the clock, cancellation, and a way to report progress.
#[derive(Clone)]
pub struct JobContext {
    pub job: String,
    pub run_id: i64,
    pub trigger: JobTrigger,
    pub policy: Arc<PolicySnapshot>,
    pub storage: Storage,
    pub clock: SharedClock,
    /// Cancelled at shutdown: stop at the next safe point.
    pub cancel: CancellationToken,
    /// Options for this run (`{"dry_run": true, "force": true, "spec": "SPEC-KIT-900"}`);
    /// `null` for scheduled runs.
    pub args: serde_json::Value,
    pub events: EventBus,
    pub plugin: String,
}

impl JobContext {
    /// Reports progress (a tracing event and an engine event).
    pub fn progress(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(job = %self.job, run_id = self.run_id, "{message}");
        self.counter("").send(None, message);
    }

    /// A counter of this job's work in `unit`s (`SPECs`, `pages`): each
    /// [`ProgressCounter::set`] sends a `progress` event a host can draw as a bar. Cheap
    /// to clone; usable from blocking threads.
    pub fn counter(&self, unit: &str) -> ProgressCounter {
        ProgressCounter {
            events: self.events.clone(),
            plugin: self.plugin.clone(),
            job: self.job.clone(),
            unit: unit.to_string(),
        }
    }

    /// Sends a plugin event to the host.
    pub fn emit(&self, kind: &str, data: serde_json::Value) {
        self.events.emit(EngineEvent::Plugin {
            plugin: self.plugin.clone(),
            kind: kind.to_string(),
            data,
        });
    }

    /// This run's options as the job's own type; see [`crate::options::parse_job_options`].
    pub fn options<T: serde::de::DeserializeOwned>(&self) -> Result<T, PluginError> {
        crate::options::parse_job_options(&self.job, &self.args)
    }
}

/// See [`JobContext::counter`].
#[derive(Clone)]
pub struct ProgressCounter {
    events: EventBus,
    plugin: String,
    job: String,
    unit: String,
}

impl ProgressCounter {
    /// `done` of `total` so far, with what is being done.
    pub fn set(&self, done: u64, total: u64, message: impl Into<String>) {
        self.send(Some((done, total)), message.into());
    }

    fn send(&self, counts: Option<(u64, u64)>, message: String) {
        let progress = crate::events::Progress {
            job: self.job.clone(),
            message,
            done: counts.map(|c| c.0),
            total: counts.map(|c| c.1),
            unit: counts.map(|_| self.unit.clone()),
        };
        self.events.emit(EngineEvent::Plugin {
            plugin: self.plugin.clone(),
            kind: crate::events::PROGRESS_EVENT.to_string(),
            data: serde_json::to_value(progress).unwrap_or_default(),
        });
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A plugin: a name, the jobs it runs, checks and hooks for its part of the policy, and
/// the job itself. One required method besides the identity ones.
pub trait Plugin: Send + Sync + 'static {
    /// Unique name, shown by `speckit-hygiene plugins`.
    fn name(&self) -> &str;

    /// The plugin's version.
    fn version(&self) -> &str;

    /// The jobs this plugin runs (names used in `[schedule]` and `run_job`), each with the
    /// schedule it runs on unless `[schedule] <job>` says otherwise.
    fn jobs(&self) -> Vec<JobSpec>;

    /// The policy sections this plugin reads (`SectionSpec::of::<MySettings>()`): the
    /// loader fills in their defaults, refuses unknown keys and runs their checks, and
    /// `ctx.policy.policy.section::<MySettings>()` gives the values. Another plugin's
    /// section may be read too by declaring its type.
    fn sections(&self) -> Vec<SectionSpec> {
        Vec::new()
    }

    /// Checks what the plugin's section types cannot check alone (several sections
    /// together); an error rejects the whole policy.
    fn validate(&self, _policy: &Policy) -> Result<(), String> {
        Ok(())
    }

    /// Called after a policy is applied (start-up and every applied reload).
    fn apply(&self, _policy: &PolicySnapshot) {}

    /// The tables this plugin owns, versioned under its own component name. The engine
    /// brings them up to date before the plugin's first job on a writable database, so a
    /// plugin that never runs creates no table. Readers must expect them to be missing (a
    /// read-only open, or a database the plugin never ran on).
    fn schema(&self) -> Option<&'static ComponentSchema> {
        None
    }

    /// Runs `ctx.job`.
    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>>;
}
