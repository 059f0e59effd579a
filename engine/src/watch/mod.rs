//! Hot reload: watches the config file's folder and listens for SIGHUP, and sends both
//! through [`Engine::reload`], the one path that applies a policy.
//!
//! Why these choices:
//! - The folder is watched, not the file: editors save by writing a new file and renaming
//!   it over the old one, and Kubernetes swaps a `..data` symlink, so a watch on the
//!   file's inode goes stale after the first save. The path is re-resolved after every
//!   reload (see [`plan`]), and the watch moves when a link now leads elsewhere.
//! - Debounce: a reload happens [`DEFAULT_DEBOUNCE`] (300 ms) after the last relevant
//!   event, and at most [`DEFAULT_MAX_DELAY`] (2 s) after the first one of a burst. 300 ms
//!   covers an editor's save (a handful of events within a few milliseconds) and a slow
//!   in-place write, and keeps the edit-to-applied time short; Vector waits 1 s.
//! - No-op events (a `touch`, rewriting the same bytes, our own reads) cost one hash
//!   compare: [`Engine::reload`] reports `Unchanged` and applies nothing.
//! - The task never dies on a bad or missing file: that is a `Rejected` reload that keeps
//!   the policy in effect, and the next edit is picked up as usual. When the OS watch
//!   cannot be set up (the folder is missing, inotify limits) or fails later, it is logged
//!   and set up again with exponential backoff, and the file is re-checked once it is.
//! - SIGHUP reloads at once, without debounce (the user asked), and re-checks the watch.

mod backend;
mod debounce;
pub mod plan;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use crate::events::ReloadCause;
use crate::{Engine, EngineError};
use backend::{Backend, Inbox, NotifyBackend, WatchGuard};
use debounce::Debouncer;
pub use plan::{WatchError, WatchPlan};

/// Quiet period after the last relevant event before a reload.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(300);
/// Longest wait from the first event of a burst to its reload, however long it lasts.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(2);
/// First wait before setting a failed OS watch up again; doubles up to the maximum.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(250);
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(10);

/// How the reload task behaves. [`spawn`] uses the defaults.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub debounce: Duration,
    pub max_delay: Duration,
    /// Watch the config file's folder.
    pub watch_file: bool,
    /// Reload on SIGHUP.
    pub listen_sighup: bool,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            debounce: DEFAULT_DEBOUNCE,
            max_delay: DEFAULT_MAX_DELAY,
            watch_file: true,
            listen_sighup: true,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
        }
    }
}

/// Starts the config watcher and SIGHUP listener on the engine's task tracker; they stop
/// at shutdown. The OS watch is live when this returns, so any later save is seen. Fails
/// only if SIGHUP cannot be listened for; a folder that cannot be watched yet is retried
/// in the background. Call it once per engine, inside a tokio runtime.
pub fn spawn(engine: &Engine) -> Result<(), EngineError> {
    spawn_with(engine, WatchOptions::default())
}

/// [`spawn`] with chosen options. The SIGHUP handler is installed before this returns, so
/// a SIGHUP sent afterwards cannot kill the process.
pub fn spawn_with(engine: &Engine, options: WatchOptions) -> Result<(), EngineError> {
    spawn_on(engine, options, Box::new(NotifyBackend))
}

fn spawn_on(
    engine: &Engine,
    options: WatchOptions,
    backend: Box<dyn Backend>,
) -> Result<(), EngineError> {
    let hangups = if options.listen_sighup {
        Some(signal(SignalKind::hangup()).map_err(|e| {
            EngineError::Other(format!(
                "cannot listen for SIGHUP to reload the policy: {e}"
            ))
        })?)
    } else {
        None
    };
    let mut task = ReloadTask {
        config: engine.policy().source.path.clone(),
        engine: engine.clone(),
        debounce: Debouncer::new(options.debounce, options.max_delay),
        retry: Backoff::new(options.retry_initial, options.retry_max),
        options,
        backend,
        hangups,
        active: None,
        retry_at: None,
    };
    // Set up before returning, so a change made after `spawn` returns is always seen.
    task.set_up();
    engine.tasks().spawn(task.run());
    Ok(())
}

struct ActiveWatch {
    plan: WatchPlan,
    inbox: Arc<Inbox>,
    _guard: WatchGuard,
}

struct ReloadTask {
    engine: Engine,
    options: WatchOptions,
    backend: Box<dyn Backend>,
    hangups: Option<Signal>,
    /// The config file, absolute, as the engine loads it.
    config: PathBuf,
    active: Option<ActiveWatch>,
    debounce: Debouncer,
    retry: Backoff,
    /// When to try setting the watch up again, while there is none.
    retry_at: Option<Instant>,
}

enum Wake {
    Shutdown,
    Hangup,
    HangupsClosed,
    Activity,
    Due,
    Retry,
}

impl ReloadTask {
    async fn run(mut self) {
        let shutdown = self.engine.shutdown_token().clone();
        loop {
            let inbox = self.active.as_ref().map(|a| a.inbox.clone());
            let due = self.debounce.deadline();
            let retry_at = self.retry_at;
            let wake = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Wake::Shutdown,
                got = next_hangup(&mut self.hangups) => {
                    if got { Wake::Hangup } else { Wake::HangupsClosed }
                }
                _ = wait_inbox(inbox.as_deref()) => Wake::Activity,
                _ = sleep_until(due) => Wake::Due,
                _ = sleep_until(retry_at) => Wake::Retry,
            };
            match wake {
                Wake::Shutdown => break,
                Wake::Hangup => {
                    tracing::info!(config = %self.config.display(), "SIGHUP: reloading the policy");
                    reload(&self.engine, ReloadCause::Signal).await;
                    self.follow_plan();
                }
                Wake::HangupsClosed => {
                    tracing::warn!("the SIGHUP listener closed; SIGHUP no longer reloads");
                    self.hangups = None;
                }
                Wake::Activity => {
                    let seen = inbox.map(|i| i.take()).unwrap_or_default();
                    if let Some(message) = seen.broken {
                        self.active = None;
                        self.schedule_retry(&WatchError::Broken { message });
                    }
                    if seen.changed {
                        self.debounce.activity(Instant::now());
                    }
                }
                Wake::Due => {
                    self.debounce.clear();
                    reload(&self.engine, ReloadCause::FileChanged).await;
                    self.follow_plan();
                }
                Wake::Retry => {
                    self.retry_at = None;
                    self.set_up();
                }
            }
        }
        tracing::debug!(config = %self.config.display(), "config watcher stopped");
    }

    /// Sets the OS watch up for the current plan, replacing any live one.
    fn set_up(&mut self) {
        if !self.options.watch_file {
            return;
        }
        let attempt = WatchPlan::resolve(&self.config).and_then(|plan| {
            let inbox = Arc::new(Inbox::default());
            let guard = self.backend.watch(&plan, inbox.clone())?;
            Ok(ActiveWatch {
                plan,
                inbox,
                _guard: guard,
            })
        });
        match attempt {
            Ok(active) => {
                let folders: Vec<_> = active
                    .plan
                    .folders
                    .iter()
                    .map(|f| f.path.display().to_string())
                    .collect();
                if self.retry.failures > 0 {
                    tracing::info!(?folders, "config watch set up again");
                } else {
                    tracing::debug!(?folders, "watching the config folder");
                }
                self.retry.reset();
                self.retry_at = None;
                self.active = Some(active);
                // Changes made while no watch was live (since start-up, or while it was
                // broken) made no event: compare the file with the policy in effect.
                if self.file_differs_from_policy() {
                    self.debounce.activity(Instant::now());
                }
            }
            Err(e) => {
                self.active = None;
                let outage_starts = self.retry.failures == 0;
                self.schedule_retry(&e);
                // A folder that went away took the file with it: say so once, with a
                // Rejected reload, rather than only when the folder comes back.
                if outage_starts && self.file_differs_from_policy() {
                    self.debounce.activity(Instant::now());
                }
            }
        }
    }

    fn schedule_retry(&mut self, error: &WatchError) {
        let first = self.retry.failures == 0;
        let delay = self.retry.next_delay();
        self.retry_at = Some(Instant::now() + delay);
        // One warning per outage; the retries after it are debug, so a folder that stays
        // missing does not flood the log.
        if first {
            tracing::warn!(config = %self.config.display(), ?delay, "config changes are not being watched: {error}; retrying");
        } else {
            tracing::debug!(config = %self.config.display(), ?delay, "config watch still failing: {error}");
        }
    }

    /// After a reload: moves the watch if the config path now resolves elsewhere (a link
    /// swapped, a folder made again) or sets it up if it was down.
    fn follow_plan(&mut self) {
        if !self.options.watch_file {
            return;
        }
        // When the watch is down and waiting, try now rather than at the next backoff step.
        let current = self.active.as_ref().is_some_and(|active| {
            WatchPlan::resolve(&self.config).is_ok_and(|plan| plan == active.plan)
        });
        if !current {
            self.set_up();
        }
    }

    fn file_differs_from_policy(&self) -> bool {
        let on_disk = std::fs::read(&self.config)
            .ok()
            .map(|bytes| hex::encode(Sha256::digest(&bytes)));
        on_disk != self.engine.policy().source.content_sha256
    }
}

/// Exponential backoff for setting a watch up again.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    failures: u32,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            next: initial,
            failures: 0,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        self.failures += 1;
        delay
    }

    fn reset(&mut self) {
        self.next = self.initial;
        self.failures = 0;
    }
}

async fn reload(engine: &Engine, cause: ReloadCause) {
    // The engine logs, emits and counts the outcome; this only ties it to the watcher.
    let outcome = engine.reload(cause).await;
    tracing::debug!(?cause, ?outcome, "config watcher: reload done");
}

async fn next_hangup(hangups: &mut Option<Signal>) -> bool {
    match hangups {
        Some(signal) => signal.recv().await.is_some(),
        None => std::future::pending().await,
    }
}

async fn wait_inbox(inbox: Option<&Inbox>) {
    match inbox {
        Some(inbox) => inbox.wait().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
