//! The engine: owns the policy, the storage, the registry and the event bus, and runs jobs.
//!
//! Start-up is a reload from the empty policy: [`Engine::reload`] is the one path that
//! applies every policy change, at start-up, on file change, on SIGHUP and on request.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{SharedClock, SystemClock};
use crate::dynamic::{DynamicLoader, HostCommand, PreparedPlugins};
use crate::error::EngineError;
use crate::events::{EngineEvent, EventBus, JobOutcome, ReloadCause, ReloadOutcome};
use crate::history::{HistoryBounds, JobHistory};
use crate::plugin::{JobContext, JobErrorKind, JobReport, JobTrigger, Plugin};
use crate::policy::{load_policy, Policy, PolicySnapshot};
use crate::registry::{LoadFailure, PluginRegistry};
use crate::storage::{RetryPolicy, Storage, StorageOptions};

/// How to start an engine.
#[derive(Clone)]
pub struct EngineOptions {
    pub config_path: PathBuf,
    /// A missing config file is an error (the user named it) rather than defaults.
    pub require_config_file: bool,
    /// The environment `SPECKIT_*` overrides are read from.
    pub env: Vec<(String, String)>,
    pub clock: SharedClock,
    /// This engine's name in job leases; a random one when `None`.
    pub engine_id: Option<String>,
    /// Open the database read-only (dry runs and reporting commands): nothing is created
    /// or written, not even a job-run row.
    pub read_only: bool,
    /// Refuse to create a database that does not exist (`StorageError::Missing`), for
    /// commands that only make sense on an existing one (`vacuum`).
    pub database_must_exist: bool,
    /// The program dynamic plugins run in. By default this process's own executable,
    /// which must then call [`crate::dynamic::serve_if_requested`] first thing in `main`
    /// (the `speckit-hygiene` binary does).
    pub plugin_host: HostCommand,
}

impl EngineOptions {
    pub fn new(config_path: impl Into<PathBuf>) -> Self {
        Self {
            config_path: config_path.into(),
            require_config_file: true,
            env: std::env::vars().collect(),
            clock: Arc::new(SystemClock),
            engine_id: None,
            read_only: false,
            database_must_exist: false,
            plugin_host: HostCommand::current_exe(),
        }
    }
}

/// The result of one job run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobRun {
    pub run_id: i64,
    pub job: String,
    pub plugin: String,
    pub trigger: JobTrigger,
    pub outcome: JobOutcome,
    pub report: Option<JobReport>,
    pub error: Option<String>,
    /// What kind of failure `error` is, when the run failed without a report.
    pub error_kind: Option<JobErrorKind>,
    pub duration_ms: u64,
    /// The policy file the run served (recorded with it in the job history).
    pub config_path: PathBuf,
}

/// A cheap, cloneable handle to a running engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    options: EngineOptions,
    policy: watch::Sender<Arc<PolicySnapshot>>,
    storage: Storage,
    registry: Arc<PluginRegistry>,
    /// Loads `[plugins.<name>]` libraries at every reload and keeps the registry in step.
    dynamic: Arc<DynamicLoader>,
    events: EventBus,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    running: Mutex<HashSet<String>>,
    /// Serialises reloads so two never interleave.
    reload_lock: tokio::sync::Mutex<()>,
}

/// Loads and checks a policy the way a reload would, without applying it (`check`).
/// Dynamic plugins validate their own config sections, so their libraries are loaded (for
/// the rest of this process); a library that fails to load does not fail the check.
pub fn load_and_validate(
    options: &EngineOptions,
    registry: &PluginRegistry,
) -> Result<PolicySnapshot, EngineError> {
    Ok(load_and_check(options, registry)?.snapshot)
}

/// A policy as `check` sees it: valid, and the `[plugins.<name>]` libraries that did not
/// load. A reload would apply such a policy without them (and `plugins` list them).
#[derive(Debug)]
pub struct CheckedPolicy {
    pub snapshot: PolicySnapshot,
    pub plugin_failures: Vec<LoadFailure>,
}

/// [`load_and_validate`], keeping the dynamic plugins' load failures instead of dropping
/// them, so `check` can name each with its cause.
pub fn load_and_check(
    options: &EngineOptions,
    registry: &PluginRegistry,
) -> Result<CheckedPolicy, EngineError> {
    let snapshot = load_checked(options, registry)?;
    let prepared =
        DynamicLoader::new(options.plugin_host.clone()).prepare(&snapshot.policy, registry)?;
    Ok(CheckedPolicy {
        snapshot,
        plugin_failures: prepared.failures,
    })
}

/// Loads the policy file and has the registered plugins check it.
fn load_checked(
    options: &EngineOptions,
    registry: &PluginRegistry,
) -> Result<PolicySnapshot, EngineError> {
    let snapshot = load_policy(
        &options.config_path,
        options.require_config_file,
        options.env.clone(),
        &registry.shape(),
    )?;
    registry.validate(&snapshot.policy)?;
    Ok(snapshot)
}

/// Storage settings from a policy.
pub fn storage_options(policy: &Policy) -> StorageOptions {
    let mut options = StorageOptions::new(policy.storage.database_path.clone());
    options.synchronous = policy.storage.synchronous;
    options.busy_timeout = Duration::from_millis(policy.storage.busy_timeout_ms);
    options.journal_size_limit_bytes = policy.storage.journal_size_limit_bytes;
    options.retry = RetryPolicy {
        max_attempts: policy.storage.write_retry_attempts,
        ..RetryPolicy::default()
    };
    options
}

impl Engine {
    /// Loads the policy (a reload from the empty policy), opens the storage and returns.
    /// Starts no background task: see `scheduler` and `watch` for those.
    pub async fn start(
        options: EngineOptions,
        builtin: Vec<Arc<dyn Plugin>>,
    ) -> Result<Self, EngineError> {
        let registry = Arc::new(PluginRegistry::new(builtin)?);
        let dynamic = Arc::new(DynamicLoader::new(options.plugin_host.clone()));
        let events = EventBus::default();
        let empty = Arc::new(PolicySnapshot::empty(&options.config_path));
        let first = match prepare_off_runtime(&options, &registry, &dynamic, &empty).await {
            Ok(Some(prepared)) => prepared,
            Ok(None) => unreachable!("the empty policy has no content hash"),
            Err(e) => {
                events.emit(EngineEvent::Reload {
                    cause: ReloadCause::Startup,
                    outcome: ReloadOutcome::Rejected {
                        error: e.to_string(),
                    },
                });
                return Err(e);
            }
        };
        let mut storage_opts = storage_options(&first.0.policy);
        storage_opts.create_if_missing = !options.database_must_exist;
        let read_only = options.read_only;
        let storage = tokio::task::spawn_blocking(move || {
            if read_only {
                Storage::open_read_only(storage_opts)
            } else {
                Storage::open(storage_opts)
            }
        })
        .await
        .map_err(|e| EngineError::Other(format!("storage open task failed: {e}")))??;
        let (policy, _) = watch::channel(empty);
        let engine = Engine {
            inner: Arc::new(Inner {
                id: options
                    .engine_id
                    .clone()
                    .unwrap_or_else(crate::identity::new_engine_id),
                options,
                policy,
                storage,
                registry,
                dynamic,
                events,
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                running: Mutex::new(HashSet::new()),
                reload_lock: tokio::sync::Mutex::new(()),
            }),
        };
        engine.apply(first.0, first.1, ReloadCause::Startup);
        engine.abandon_dead_runs().await;
        Ok(engine)
    }

    /// Marks the runs of engines that died mid-run as abandoned and frees their schedule
    /// leases (see [`crate::history::abandon_dead_runs`]); a failure is logged, not fatal.
    async fn abandon_dead_runs(&self) {
        let now_ms = self.inner.options.clock.now().timestamp_millis();
        match crate::history::abandon_dead_runs(&self.inner.storage, now_ms).await {
            Ok(found) => {
                for run in &found.runs {
                    tracing::warn!(
                        job = run.job,
                        run_id = run.run_id,
                        engine = run.engine_id,
                        "run abandoned: its engine ended before the run finished"
                    );
                }
                for (job, owner) in &found.leases {
                    tracing::warn!(
                        job,
                        engine = owner,
                        "released the schedule lease of an engine that ended"
                    );
                }
            }
            Err(e) => tracing::warn!("could not look for runs of engines that ended: {e}"),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    /// The policy in effect now.
    pub fn policy(&self) -> Arc<PolicySnapshot> {
        self.inner.policy.borrow().clone()
    }

    /// Follows policy changes.
    pub fn subscribe_policy(&self) -> watch::Receiver<Arc<PolicySnapshot>> {
        self.inner.policy.subscribe()
    }

    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    pub fn registry(&self) -> &Arc<PluginRegistry> {
        &self.inner.registry
    }

    /// The dynamic-plugin loader (which libraries this process has loaded).
    pub fn dynamic_plugins(&self) -> &Arc<DynamicLoader> {
        &self.inner.dynamic
    }

    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    pub fn clock(&self) -> &SharedClock {
        &self.inner.options.clock
    }

    /// Cancelled when the engine shuts down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Tracks the engine's background tasks so shutdown can wait for them.
    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    /// Re-reads the config file and applies it if it is valid and changed; otherwise keeps
    /// the policy in effect. Every outcome is logged, sent as an event and counted.
    pub async fn reload(&self, cause: ReloadCause) -> ReloadOutcome {
        let _guard = self.inner.reload_lock.lock().await;
        let current = self.policy();
        let inner = &self.inner;
        let outcome =
            match prepare_off_runtime(&inner.options, &inner.registry, &inner.dynamic, &current)
                .await
            {
                Ok(None) => ReloadOutcome::Unchanged,
                Ok(Some((candidate, plugins))) => {
                    match restart_required(&current.policy, &candidate.policy) {
                        Some(message) => ReloadOutcome::Rejected { error: message },
                        None => return self.apply(candidate, plugins, cause),
                    }
                }
                Err(e) => ReloadOutcome::Rejected {
                    error: e.to_string(),
                },
            };
        match &outcome {
            ReloadOutcome::Rejected { error } => {
                tracing::warn!(?cause, config = %current.source.path.display(), "reload rejected, keeping the policy in effect: {error}")
            }
            _ => tracing::debug!(?cause, "config unchanged; not reloaded"),
        }
        self.inner.events.emit(EngineEvent::Reload {
            cause,
            outcome: outcome.clone(),
        });
        outcome
    }

    fn apply(
        &self,
        mut candidate: PolicySnapshot,
        plugins: PreparedPlugins,
        cause: ReloadCause,
    ) -> ReloadOutcome {
        let current = self.policy();
        candidate.generation = current.generation + 1;
        let changed_keys = changed_keys(&current.policy, &candidate.policy);
        let snapshot = Arc::new(candidate);
        // Dynamic plugins first, so the policy's new [plugins.*] jobs are runnable by the
        // time anyone sees the policy.
        self.inner.dynamic.install(&self.inner.registry, plugins);
        self.inner.registry.apply(&snapshot);
        self.inner.policy.send_replace(snapshot.clone());
        let outcome = ReloadOutcome::Applied {
            generation: snapshot.generation,
            changed_keys,
        };
        tracing::info!(?cause, generation = snapshot.generation, config = %snapshot.source.path.display(), "policy applied");
        self.inner.events.emit(EngineEvent::Reload {
            cause,
            outcome: outcome.clone(),
        });
        outcome
    }

    /// Runs a job now on the current policy snapshot and records it in the job-runs table.
    /// A job already running in this engine is skipped, not run twice.
    pub async fn run_job(
        &self,
        job: &str,
        trigger: JobTrigger,
        args: serde_json::Value,
    ) -> Result<JobRun, EngineError> {
        let plugin = self
            .inner
            .registry
            .for_job(job)
            .ok_or_else(|| EngineError::UnknownJob {
                job: job.to_string(),
                known: self.inner.registry.jobs(),
            })?;
        if !self
            .inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.to_string())
        {
            let reason = "still running from an earlier start".to_string();
            tracing::warn!(job, "skipped: {reason}");
            self.inner.events.emit(EngineEvent::JobSkipped {
                job: job.to_string(),
                reason: reason.clone(),
            });
            return Ok(JobRun {
                run_id: 0,
                job: job.to_string(),
                plugin: plugin.name().to_string(),
                trigger,
                outcome: JobOutcome::Skipped,
                report: None,
                error: Some(reason),
                error_kind: None,
                duration_ms: 0,
                config_path: self.policy().source.path.clone(),
            });
        }
        let _running = RunningGuard {
            engine: self.clone(),
            job: job.to_string(),
        };
        let policy = self.policy();
        let config_path = policy.source.path.clone();
        let clock = self.inner.options.clock.clone();
        let started_at = clock.now().timestamp_millis();
        let (job_name, plugin_name, engine_id, trigger_label) = (
            job.to_string(),
            plugin.name().to_string(),
            self.inner.id.clone(),
            trigger.label(),
        );
        if let Some(schema) = plugin.schema() {
            self.inner.storage.ensure_schema(schema).await?;
        }
        let history = JobHistory::of(&self.inner.storage);
        let recorded = history
            .started(
                job_name,
                plugin_name,
                engine_id,
                trigger_label,
                started_at,
                config_path.display().to_string(),
            )
            .await?;
        // 0 when the database refuses writes (read-only open, failed quick_check).
        let run_id = recorded.unwrap_or(0);
        self.inner.events.emit(EngineEvent::JobStarted {
            job: job.to_string(),
            run_id,
            trigger: trigger.clone(),
        });
        tracing::info!(job, run_id, trigger = trigger.label(), "job started");
        let ctx = JobContext {
            job: job.to_string(),
            run_id,
            trigger: trigger.clone(),
            policy,
            storage: self.inner.storage.clone(),
            clock: clock.clone(),
            cancel: self.inner.shutdown.child_token(),
            args,
            events: self.inner.events.clone(),
            plugin: plugin.name().to_string(),
        };
        let timer = Instant::now();
        let task_plugin = plugin.clone();
        // A task of its own, so a panicking plugin fails its job and nothing else.
        let joined = tokio::spawn(async move { task_plugin.run(ctx).await }).await;
        let duration_ms = timer.elapsed().as_millis() as u64;
        let (outcome, report, failure) = match joined {
            Ok(Ok(report)) if report.has_errors() => (JobOutcome::Failed, Some(report), None),
            Ok(Ok(report)) => (JobOutcome::Succeeded, Some(report), None),
            Ok(Err(e)) => (JobOutcome::Failed, None, Some((e.kind(), e.to_string()))),
            Err(e) if e.is_panic() => (
                JobOutcome::Failed,
                None,
                Some((
                    JobErrorKind::Panicked,
                    format!("plugin {} panicked: {}", plugin.name(), panic_text(e)),
                )),
            ),
            Err(e) => (
                JobOutcome::Failed,
                None,
                Some((JobErrorKind::Failed, e.to_string())),
            ),
        };
        let (error_kind, error) = failure.unzip();
        let finished_at = clock.now().timestamp_millis();
        let outcome_label = match outcome {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed => "failed",
            JobOutcome::Skipped => "skipped",
        };
        let retention = HistoryBounds::of(&self.policy().policy.schedule, finished_at);
        if let Err(e) = history
            .finished(
                recorded,
                finished_at,
                outcome_label,
                report.as_ref(),
                error.as_deref(),
                retention,
            )
            .await
        {
            tracing::error!(job, run_id, "could not record the job's report: {e}");
        }
        match (&outcome, error_kind, &error) {
            // Nothing ran: the caller's options or a policy rule said no. The caller shows
            // the reason; a warning on top would say it a second time.
            (
                JobOutcome::Failed,
                Some(JobErrorKind::Refused | JobErrorKind::InvalidOptions),
                Some(error),
            ) => tracing::info!(job, run_id, "job refused: {error}"),
            (JobOutcome::Failed, _, Some(error)) => {
                tracing::warn!(job, run_id, duration_ms, "job failed: {error}")
            }
            (JobOutcome::Failed, _, None) => {
                tracing::warn!(
                    job,
                    run_id,
                    duration_ms,
                    "job failed: its report lists errors"
                )
            }
            _ => tracing::info!(job, run_id, duration_ms, "job finished"),
        }
        self.inner.events.emit(EngineEvent::JobFinished {
            job: job.to_string(),
            run_id,
            outcome: outcome.clone(),
            report: report.clone(),
            error: error.clone(),
            duration_ms,
        });
        Ok(JobRun {
            run_id,
            job: job.to_string(),
            plugin: plugin.name().to_string(),
            trigger,
            outcome,
            report,
            error,
            error_kind,
            duration_ms,
            config_path,
        })
    }

    /// Whether `job` is running in this engine now.
    pub fn is_running(&self, job: &str) -> bool {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(job)
    }

    /// Stops background tasks and waits up to `grace` for running jobs to reach a safe
    /// point; then closes the storage after its queued writes.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "background tasks did not stop within the grace period"
            );
        }
        let storage = self.inner.storage.clone();
        let _ = tokio::task::spawn_blocking(move || storage.close()).await;
    }
}

struct RunningGuard {
    engine: Engine,
    job: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.engine
            .inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.job);
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    let panic = e.into_panic();
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

/// [`prepare`] on a blocking thread: it reads the config file, and may load libraries and
/// wait for plugins' `validate` calls (each at most its `call_timeout_ms`).
async fn prepare_off_runtime(
    options: &EngineOptions,
    registry: &Arc<PluginRegistry>,
    dynamic: &Arc<DynamicLoader>,
    current: &Arc<PolicySnapshot>,
) -> Result<Option<(PolicySnapshot, PreparedPlugins)>, EngineError> {
    let (options, registry, dynamic, current) = (
        options.clone(),
        registry.clone(),
        dynamic.clone(),
        current.clone(),
    );
    tokio::task::spawn_blocking(move || prepare(&options, &registry, &dynamic, &current))
        .await
        .map_err(|e| EngineError::Other(format!("policy load task failed: {e}")))?
}

/// Loads the file, then the dynamic plugins it names; `Ok(None)` when its content is the
/// same as the current policy's.
fn prepare(
    options: &EngineOptions,
    registry: &PluginRegistry,
    dynamic: &DynamicLoader,
    current: &PolicySnapshot,
) -> Result<Option<(PolicySnapshot, PreparedPlugins)>, EngineError> {
    let candidate = load_checked(options, registry)?;
    // A file that was there and is gone (deleted, or renamed away mid-save) keeps the
    // policy in effect instead of falling back to the defaults (which may be a different
    // database, or a cleanup schedule the user turned off).
    if current.source.content_sha256.is_some() && candidate.source.content_sha256.is_none() {
        return Err(crate::policy::LoadError::Read {
            path: candidate.source.path,
            message: "the file is gone (deleted or renamed away)".into(),
        }
        .into());
    }
    if current.generation > 0 && candidate.source.content_sha256 == current.source.content_sha256 {
        return Ok(None);
    }
    let plugins = dynamic.prepare(&candidate.policy, registry)?;
    Ok(Some((candidate, plugins)))
}

/// A change the running engine cannot apply.
fn restart_required(current: &Policy, candidate: &Policy) -> Option<String> {
    if current.storage != candidate.storage {
        return Some(format!(
            "[storage] changed ({} -> {}); the database settings apply at start-up only: restart speckit-hygiene to use them",
            current.storage.database_path.display(),
            candidate.storage.database_path.display()
        ));
    }
    None
}

/// Dotted keys whose values differ between two policies.
pub fn changed_keys(old: &Policy, new: &Policy) -> Vec<String> {
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    crate::policy::leaf_keys_of(&new, &mut keys);
    let mut old_keys = Vec::new();
    crate::policy::leaf_keys_of(&old, &mut old_keys);
    for k in old_keys {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.retain(|k| lookup(&old, k) != lookup(&new, k));
    keys.sort();
    keys
}

fn lookup<'a>(value: &'a serde_json::Value, dotted: &str) -> Option<&'a serde_json::Value> {
    dotted.split('.').try_fold(value, |v, part| v.get(part))
}
