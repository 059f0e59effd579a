//! Embedding the engine in a host application (a terminal UI): start it once at start-up
//! on the host's tokio runtime, then talk to it through a cheap, cloneable handle.
//!
//! Upstream's terminal UI reopened the consensus database and re-ran its migrations at each
//! of 18 call sites. Here one engine per process owns the database: [`EngineBuilder::start`]
//! loads the policy, opens the storage once, starts the scheduler and the config watcher as
//! tasks on the caller's runtime, and returns without waiting for any job. A second
//! `start()` for the same database in the same process is refused
//! ([`EmbedError::AlreadyRunning`]).

mod claim;
mod error;
pub use speckit_engine::history;
mod schedule;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use speckit_engine::engine::JobRun;
use speckit_engine::events::{CounterSnapshot, ReloadCause};
use speckit_engine::scheduler::{self, SchedulerHandle};
use speckit_engine::watch::WatchOptions;
use speckit_engine::{
    Engine, EngineEvent, EngineOptions, JobTrigger, Plugin, PolicySnapshot, ReloadOutcome,
};

pub use claim::database_key;
pub use error::EmbedError;
pub use history::JobRecord;
pub use schedule::ScheduledRun;
pub use speckit_retention::guard::GuardVerdict;
pub use speckit_retention::stats::StatsReport;
pub use speckit_spawn::stats::SpawnStats;
pub use speckit_spawn::{SpawnBatch, SpawnRequest};

/// Configures and starts an engine embedded in a host application.
///
/// ```
/// use speckit_hygiene::embed::EngineBuilder;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let config_path = dir.path().join("speckit.toml");
/// # std::fs::create_dir_all(dir.path().join("evidence/commands/SPEC-KIT-900"))?;
/// # std::fs::write(
/// #     &config_path,
/// #     "[storage]\ndatabase_path = \"consensus.db\"\n[evidence]\nroot = \"evidence\"\n",
/// # )?;
/// # let runtime = tokio::runtime::Runtime::new()?;
/// # runtime.block_on(async {
/// // At start-up, on the host's tokio runtime. Returns without waiting for any job; the
/// // scheduler and the config watcher run as tasks on this runtime.
/// let engine = EngineBuilder::new(&config_path).start().await?;
///
/// // Job starts and reports, reloads applied or rejected, limit warnings, spawn metrics.
/// let mut events = engine.subscribe();
///
/// // The policy in effect, and when each scheduled job runs next.
/// println!("policy generation {}", engine.policy().generation);
/// for run in engine.next_runs() {
///     println!("{} next at {:?}", run.job, run.next_at);
/// }
///
/// // Before starting automation on a SPEC: allow, warn or block, with the figures.
/// let verdict = engine.evidence_guard("SPEC-KIT-900").await?;
/// assert!(!verdict.is_blocked());
///
/// // Run a job now: its record comes back, and the same report arrives as an event.
/// let run = engine
///     .run_job("vacuum", serde_json::json!({ "dry_run": true }))
///     .await?;
/// println!("vacuum: {:?} {:?}", run.outcome, run.report.map(|r| r.summary));
/// while let Ok(event) = events.try_recv() {
///     println!("{event:?}");
/// }
///
/// // Clones share the one engine; shut it down once, at exit.
/// engine.clone().shutdown().await;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # })
/// # }
/// ```
pub struct EngineBuilder {
    options: EngineOptions,
    extra_plugins: Vec<Arc<dyn Plugin>>,
    builtin_plugins: bool,
    scheduler: bool,
    watch_config: bool,
    watch: WatchOptions,
}

impl EngineBuilder {
    /// An engine for the policy file at `config_path` (which must exist), with the
    /// compiled-in plugins, the scheduler and the config watcher.
    pub fn new(config_path: impl Into<PathBuf>) -> Self {
        Self {
            options: EngineOptions::new(config_path),
            extra_plugins: Vec::new(),
            builtin_plugins: true,
            scheduler: true,
            watch_config: true,
            watch: WatchOptions {
                // A terminal application gets SIGHUP when its terminal goes away; turning
                // that into a policy reload would keep it running headless. The host
                // decides (see `reload_on_sighup`).
                listen_sighup: false,
                ..WatchOptions::default()
            },
        }
    }

    /// Adds a compiled-in plugin of the host's own. Its name and job names must not clash
    /// with another plugin's.
    pub fn plugin(mut self, plugin: Arc<dyn Plugin>) -> Self {
        self.extra_plugins.push(plugin);
        self
    }

    /// Adds several compiled-in plugins.
    pub fn plugins(mut self, plugins: impl IntoIterator<Item = Arc<dyn Plugin>>) -> Self {
        self.extra_plugins.extend(plugins);
        self
    }

    /// The program `[plugins.<name>]` libraries run in. By default the host application's
    /// own executable, which then calls `speckit_engine::dynamic::serve_if_requested()`
    /// first thing in `main`; or name any program that does (the `speckit-hygiene`
    /// binary does).
    pub fn plugin_host(mut self, program: impl Into<std::path::PathBuf>) -> Self {
        self.options.plugin_host = speckit_engine::dynamic::HostCommand::new(program);
        self
    }

    /// Leaves out speckit-hygiene's own plugins (retention, vacuum, spawn).
    pub fn without_builtin_plugins(mut self) -> Self {
        self.builtin_plugins = false;
        self
    }

    /// Whether to run the cron scheduler (default on). Off, jobs run only when asked.
    pub fn scheduler(mut self, on: bool) -> Self {
        self.scheduler = on;
        self
    }

    /// Whether to reload the policy when the config file changes (default on).
    pub fn watch_config(mut self, on: bool) -> Self {
        self.watch_config = on;
        self
    }

    /// Whether SIGHUP reloads the policy (default off: in a terminal application SIGHUP
    /// means the terminal closed). Only with the config watcher on.
    pub fn reload_on_sighup(mut self, on: bool) -> Self {
        self.watch.listen_sighup = on;
        self
    }

    /// The config watcher's timings (debounce and retry) and whether it listens for SIGHUP.
    pub fn watch_options(mut self, options: WatchOptions) -> Self {
        self.watch = options;
        self
    }

    /// Whether a missing config file is an error (default) or means the built-in defaults.
    pub fn require_config_file(mut self, required: bool) -> Self {
        self.options.require_config_file = required;
        self
    }

    /// The environment `SPECKIT_*` overrides are read from (default: the process's).
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.options.env = vars.into_iter().collect();
        self
    }

    /// The wall clock the engine reads (tests use a clock driven by tokio's paused time).
    pub fn clock(mut self, clock: speckit_engine::clock::SharedClock) -> Self {
        self.options.clock = clock;
        self
    }

    /// This engine's name in job records and schedule leases (default: random).
    pub fn engine_id(mut self, id: impl Into<String>) -> Self {
        self.options.engine_id = Some(id.into());
        self
    }

    /// Loads the policy, claims its database for this process, opens it (running
    /// migrations once), starts the scheduler and the config watcher on the current tokio
    /// runtime, and returns. Waits for no job: a catch-up run owed at start-up runs in the
    /// background.
    ///
    /// Fails, changing nothing, on a bad policy (naming the file, key and cause), on a
    /// database that cannot be opened, and when an engine embedded in this process already
    /// owns the same database.
    pub async fn start(self) -> Result<EngineHandle, EmbedError> {
        let mut plugins = if self.builtin_plugins {
            crate::builtin_plugins()
        } else {
            Vec::new()
        };
        plugins.extend(self.extra_plugins);

        // Where the database is, before anything opens it: refuse a second engine before
        // it runs a migration or starts a writer.
        let shape = speckit_engine::PluginRegistry::new(plugins.clone())?.shape();
        let first = speckit_engine::policy::load_policy(
            &self.options.config_path,
            self.options.require_config_file,
            self.options.env.clone(),
            &shape,
        )
        .map_err(speckit_engine::EngineError::from)?;
        let claim =
            claim::DatabaseClaim::acquire(&first.policy.storage.database_path, &first.source.path)?;

        let engine = Engine::start(self.options, plugins).await?;
        let grace = Duration::from_secs(engine.policy().policy.schedule.shutdown_grace_seconds);
        // The file may have changed between the two loads, or the database's folder been
        // created by the open: hold the claim under the path actually opened.
        let opened = engine.storage().path().to_path_buf();
        let claim = if database_key(&opened) == claim.key() {
            claim
        } else {
            match claim::DatabaseClaim::acquire(&opened, &engine.policy().source.path) {
                Ok(second) => second,
                Err(e) => {
                    engine.shutdown(grace).await;
                    return Err(e);
                }
            }
        };

        // The watcher first: if it cannot start, no scheduled job has been started either.
        if self.watch_config {
            if let Err(e) = speckit_engine::watch::spawn_with(&engine, self.watch) {
                engine.shutdown(grace).await;
                return Err(e.into());
            }
        }
        let scheduler = self.scheduler.then(|| scheduler::start(&engine));
        tracing::info!(database = %opened.display(), engine = engine.id(), "embedded engine started");
        Ok(EngineHandle {
            inner: Arc::new(HandleInner {
                engine,
                scheduler,
                database: opened,
                claim: Mutex::new(Some(claim)),
            }),
        })
    }
}

/// A running embedded engine. Cheap to clone (one `Arc`); every clone talks to the same
/// engine. Call [`EngineHandle::shutdown`] once at exit; if every clone is dropped without
/// it, the engine shuts down in the background on the runtime it was dropped in.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    engine: Engine,
    scheduler: Option<SchedulerHandle>,
    database: PathBuf,
    /// Held until the storage is closed; `None` once shut down.
    claim: Mutex<Option<claim::DatabaseClaim>>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        let Some(claim) = self
            .claim
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let engine = self.engine.clone();
        let grace = Duration::from_secs(engine.policy().policy.schedule.shutdown_grace_seconds);
        match tokio::runtime::Handle::try_current() {
            // Keep the claim until the database is closed, so a new engine cannot start on
            // it while this one still writes.
            Ok(runtime) => {
                runtime.spawn(async move {
                    engine.shutdown(grace).await;
                    drop(claim);
                });
            }
            // No runtime left to run a graceful shutdown: stop the tasks; the storage
            // finishes its queued writes when the engine's last reference goes.
            Err(_) => engine.shutdown_token().cancel(),
        }
    }
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("engine", &self.inner.engine.id())
            .field("database", &self.inner.database)
            .finish()
    }
}

impl EngineHandle {
    /// The engine itself, for what the handle does not wrap.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The database this engine owns.
    pub fn database_path(&self) -> &Path {
        &self.inner.database
    }

    /// The policy in effect now: its values, file, generation and `loaded_at` (when it was
    /// last applied).
    pub fn policy(&self) -> Arc<PolicySnapshot> {
        self.inner.engine.policy()
    }

    /// Follows policy changes (each applied reload).
    pub fn subscribe_policy(&self) -> watch::Receiver<Arc<PolicySnapshot>> {
        self.inner.engine.subscribe_policy()
    }

    /// Everything the engine reports from now on: job started, job finished with its
    /// report, reload applied / rejected / unchanged, and plugin events (limit warnings,
    /// spawn metrics, progress). A subscriber that falls behind loses the oldest events
    /// (`RecvError::Lagged`) rather than slowing the engine.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.engine.events().subscribe()
    }

    /// Totals since start: reloads and job runs by outcome.
    pub fn counters(&self) -> CounterSnapshot {
        self.inner.engine.events().counters()
    }

    /// Each scheduled job and its next run, soonest first: the scheduler's own pending
    /// times once it has run its first pass, else computed from the policy.
    pub fn next_runs(&self) -> Vec<ScheduledRun> {
        let status = self.inner.scheduler.as_ref().map(|s| s.status());
        schedule::next_runs(
            &self.policy().policy,
            self.inner.engine.registry(),
            status.as_ref(),
            self.inner.engine.clock().now(),
        )
    }

    /// The scheduler's status, when the scheduler runs.
    pub fn scheduler(&self) -> Option<&SchedulerHandle> {
        self.inner.scheduler.as_ref()
    }

    /// Runs `job` now on the policy in effect (`args` as the CLI passes them:
    /// `{"dry_run": true}`, `{"spec": "SPEC-KIT-900"}`), and returns its record. The run is
    /// a task of the engine: it finishes even if the caller stops waiting, and shutdown
    /// waits for it (within the grace period) before closing the database. A job already
    /// running comes back as `Skipped`.
    ///
    /// Each compiled-in job reads `args` into its own type (`speckit_retention::job::CleanupOptions`,
    /// `RestoreOptions`, `speckit_vacuum::plan::VacuumOptions`, `speckit_spawn::SpawnOptions`;
    /// `serde_json::to_value` of one is always accepted). An unknown or mistyped option
    /// (`{"dryrun": true}`, `{"dry_run": "true"}`) runs nothing: the run fails with
    /// `error_kind: Some(JobErrorKind::InvalidOptions)` and an error naming the option.
    pub async fn run_job(&self, job: &str, args: serde_json::Value) -> Result<JobRun, EmbedError> {
        self.ensure_running(|| format!("running job {job}"))?;
        let engine = self.inner.engine.clone();
        let name = job.to_string();
        let task = self
            .inner
            .engine
            .tasks()
            .spawn(async move { engine.run_job(&name, JobTrigger::Manual, args).await });
        match task.await {
            Ok(run) => Ok(run?),
            Err(e) => Err(EmbedError::TaskLost {
                action: format!("job {job}"),
                cause: e.to_string(),
            }),
        }
    }

    /// Re-reads the config file now (as a file change would); the old policy stays when
    /// the new one is invalid.
    pub async fn reload(&self) -> ReloadOutcome {
        self.inner.engine.reload(ReloadCause::Api).await
    }

    /// The newest `limit` job runs recorded in the database, newest first (also runs from
    /// before this start and from other engines on the same database).
    pub async fn recent_runs(&self, limit: u32) -> Result<Vec<JobRecord>, EmbedError> {
        self.ensure_running(|| "reading job runs".to_string())?;
        Ok(history::recent(self.inner.engine.storage(), limit).await?)
    }

    /// Whether automation may start on `spec_id` (allow, warn or block, with the figures),
    /// by the evidence root and limits of the policy in effect. Walks that SPEC's evidence
    /// folders off the async runtime.
    pub async fn evidence_guard(&self, spec_id: &str) -> Result<GuardVerdict, EmbedError> {
        self.ensure_running(|| format!("the evidence guard for {spec_id}"))?;
        let policy = self.policy();
        let spec = spec_id.to_string();
        let storage = self.inner.engine.storage().clone();
        let now = self.inner.engine.clock().now();
        // The same answer as `speckit-hygiene guard`: folders mapped by the trackers, and
        // for a block, what the retention plan says cleanup would free.
        let verdict = tokio::task::spawn_blocking(move || {
            speckit_retention::guard::evidence_guard_planned(
                &policy.policy,
                &spec,
                Some(&storage),
                now,
            )
        })
        .await
        .map_err(|e| EmbedError::TaskLost {
            action: format!("the evidence guard for {spec_id}"),
            cause: e.to_string(),
        })??;
        Ok(verdict)
    }

    /// Every SPEC's evidence against the limits, the root's total and what was not counted,
    /// as `speckit-hygiene stats` reports it. Walks the whole evidence root off the async
    /// runtime.
    pub async fn evidence_usage(&self) -> Result<StatsReport, EmbedError> {
        use speckit_retention::stats::{collect, Scope, SpecNames};
        self.ensure_running(|| "measuring evidence".to_string())?;
        let policy = self.policy();
        let report = tokio::task::spawn_blocking(move || {
            collect(
                &policy.policy,
                &Scope::All,
                &SpecNames::from_policy(&policy.policy),
            )
        })
        .await
        .map_err(|e| EmbedError::TaskLost {
            action: "measuring evidence".into(),
            cause: e.to_string(),
        })??;
        Ok(report)
    }

    /// Starts a stage's agents in parallel on the policy in effect, and returns once each
    /// is running or has failed; per-agent spawn times are stored and sent as a
    /// `spawn_metrics` event. The engine's shutdown cancels the request (its agents are
    /// killed), and waits for the spawning itself to finish before closing the database.
    pub async fn spawn_agents(&self, request: SpawnRequest) -> Result<SpawnBatch, EmbedError> {
        let action = || {
            format!(
                "spawning agents for {} stage {}",
                request.spec_id, request.stage
            )
        };
        self.ensure_running(action)?;
        let described = action();
        let (cancel, shutdown) = (
            request.cancel.clone(),
            self.inner.engine.shutdown_token().clone(),
        );
        // Not tracked: it ends at shutdown by design, or when the request is cancelled.
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => cancel.cancel(),
                _ = cancel.cancelled() => {}
            }
        });
        let engine = self.inner.engine.clone();
        let policy = self.policy();
        let request = request.with_clock(engine.clock().clone());
        let task = self.inner.engine.tasks().spawn(async move {
            speckit_spawn::spawn_agents(engine.storage(), &policy, engine.events(), request).await
        });
        match task.await {
            Ok(batch) => Ok(batch?),
            Err(e) => Err(EmbedError::TaskLost {
                action: described,
                cause: e.to_string(),
            }),
        }
    }

    /// Spawn latency percentiles, success rates and parallel against sequential, from the
    /// stored metrics (as `speckit-hygiene spawn stats` reports them).
    pub async fn spawn_stats(&self) -> Result<SpawnStats, EmbedError> {
        self.ensure_running(|| "reading spawn metrics".to_string())?;
        Ok(speckit_spawn::stats::load(self.inner.engine.storage()).await?)
    }

    /// Whether [`EngineHandle::shutdown`] has been called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.engine.shutdown_token().is_cancelled()
    }

    /// Stops the scheduler and the watcher, lets running jobs reach a safe point (up to the
    /// policy's `schedule.shutdown_grace_seconds`), finishes queued writes and closes the
    /// database; then this process may start an engine on it again. Idempotent.
    pub async fn shutdown(&self) {
        let grace = Duration::from_secs(self.policy().policy.schedule.shutdown_grace_seconds);
        self.shutdown_with_grace(grace).await;
    }

    /// [`EngineHandle::shutdown`] with a chosen grace period for running jobs.
    pub async fn shutdown_with_grace(&self, grace: Duration) {
        self.inner.engine.shutdown(grace).await;
        let released = self
            .inner
            .claim
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if released.is_some() {
            tracing::info!(database = %self.inner.database.display(), "embedded engine shut down");
        }
    }

    fn ensure_running(&self, action: impl FnOnce() -> String) -> Result<(), EmbedError> {
        if self.is_shut_down() {
            return Err(EmbedError::ShutDown {
                database: self.inner.database.clone(),
                action: action(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// The visible lines of the first Rust example after `marker` in `text`: doc comment
    /// prefixes and rustdoc's hidden (`# `) lines removed.
    fn example_after(text: &str, marker: &str) -> Vec<String> {
        let start = text.find(marker).expect("marker");
        let mut lines = Vec::new();
        let mut inside = false;
        for line in text[start..].lines() {
            let line = match line.trim_start().strip_prefix("///") {
                Some(doc) => doc.strip_prefix(' ').unwrap_or(doc),
                None => line,
            };
            if line.starts_with("```") {
                if inside {
                    return lines;
                }
                inside = true;
                continue;
            }
            if inside && !(line == "#" || line.starts_with("# ")) {
                lines.push(line.to_string());
            }
        }
        panic!("no closed example after {marker:?}");
    }

    #[test]
    fn readme_shows_the_compiled_builder_example() {
        let source = example_after(include_str!("mod.rs"), "/// Configures and starts");
        let readme = example_after(include_str!("../../README.md"), "## Embedding");
        assert!(source.len() > 10, "{source:?}");
        assert_eq!(
            readme, source,
            "README's Embedding example must be the builder's doc test (src/embed/mod.rs)"
        );
    }
}
