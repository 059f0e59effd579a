//! What the engine tells its host: a broadcast channel of [`EngineEvent`]s and counters.
//! Every reload outcome and every job start and finish goes through here (and to tracing).

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

use crate::plugin::{JobReport, JobTrigger};

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The new policy is in effect.
    Applied {
        generation: u64,
        /// Dotted keys whose values changed.
        changed_keys: Vec<String>,
    },
    /// The file is bad or the change needs a restart; the old policy stays.
    Rejected { error: String },
    /// The file's content is the same as the policy in effect; nothing was done.
    Unchanged,
}

/// What triggered a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadCause {
    Startup,
    FileChanged,
    Signal,
    Api,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    Succeeded,
    /// The job ran but reported errors, or failed outright.
    Failed,
    /// Not run (already running, or another engine holds its lease).
    Skipped,
}

/// How far a job got: the data of its `progress` plugin events, so the command line, a
/// host's UI and an embedder draw the same thing. `done` of `total` `unit`s (`SPECs`,
/// `pages`...) when the job can count its work, else only `message`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Progress {
    pub job: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// The kind of the plugin events whose data is a [`Progress`].
pub const PROGRESS_EVENT: &str = "progress";

/// One thing that happened in the engine.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EngineEvent {
    Reload {
        cause: ReloadCause,
        #[serde(flatten)]
        outcome: ReloadOutcome,
    },
    JobStarted {
        job: String,
        run_id: i64,
        trigger: JobTrigger,
    },
    JobFinished {
        job: String,
        run_id: i64,
        outcome: JobOutcome,
        report: Option<JobReport>,
        error: Option<String>,
        duration_ms: u64,
    },
    JobSkipped {
        job: String,
        reason: String,
    },
    /// A plugin's own event (limit warnings, spawn metrics, progress...).
    Plugin {
        plugin: String,
        kind: String,
        data: serde_json::Value,
    },
}

/// Monotonic counters; read with [`EventBus::counters`].
#[derive(Debug, Default)]
pub struct Counters {
    pub reloads_applied: AtomicU64,
    pub reloads_rejected: AtomicU64,
    pub reloads_unchanged: AtomicU64,
    pub jobs_started: AtomicU64,
    pub jobs_succeeded: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub jobs_skipped: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    pub reloads_unchanged: u64,
    pub jobs_started: u64,
    pub jobs_succeeded: u64,
    pub jobs_failed: u64,
    pub jobs_skipped: u64,
}

/// The engine's event channel. Cheap to clone. A slow subscriber misses old events
/// (`RecvError::Lagged`) rather than slowing the engine.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<EngineEvent>,
    counters: Arc<Counters>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        Self {
            sender,
            counters: Arc::new(Counters::default()),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.sender.subscribe()
    }

    /// Sends an event and counts it. Never blocks; having no subscriber is fine.
    pub fn emit(&self, event: EngineEvent) {
        let c = &self.counters;
        let counter = match &event {
            EngineEvent::Reload { outcome, .. } => Some(match outcome {
                ReloadOutcome::Applied { .. } => &c.reloads_applied,
                ReloadOutcome::Rejected { .. } => &c.reloads_rejected,
                ReloadOutcome::Unchanged => &c.reloads_unchanged,
            }),
            EngineEvent::JobStarted { .. } => Some(&c.jobs_started),
            EngineEvent::JobFinished { outcome, .. } => Some(match outcome {
                JobOutcome::Succeeded => &c.jobs_succeeded,
                JobOutcome::Failed => &c.jobs_failed,
                JobOutcome::Skipped => &c.jobs_skipped,
            }),
            EngineEvent::JobSkipped { .. } => Some(&c.jobs_skipped),
            EngineEvent::Plugin { .. } => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.sender.send(event);
    }

    pub fn counters(&self) -> CounterSnapshot {
        let c = &self.counters;
        CounterSnapshot {
            reloads_applied: c.reloads_applied.load(Ordering::Relaxed),
            reloads_rejected: c.reloads_rejected.load(Ordering::Relaxed),
            reloads_unchanged: c.reloads_unchanged.load(Ordering::Relaxed),
            jobs_started: c.jobs_started.load(Ordering::Relaxed),
            jobs_succeeded: c.jobs_succeeded.load(Ordering::Relaxed),
            jobs_failed: c.jobs_failed.load(Ordering::Relaxed),
            jobs_skipped: c.jobs_skipped.load(Ordering::Relaxed),
        }
    }
}
