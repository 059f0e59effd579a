//! A running agent: awaiting its handle waits for the process (bounded by the agent's
//! `timeout_ms` and the request's cancellation), then records `completed_at`, the bounded
//! response (`response_text`) and the failure cause (`extraction_error`) on its
//! `agent_executions` row, as the host records a completion.
//!
//! Dropping a handle without awaiting it kills the agent's process group and marks its row
//! abandoned, so no agent outlives the code that started it.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use speckit_engine::{Storage, StorageError};

use crate::db::{self, CompletionRow};
use crate::error::{CompletionError, RunFailure};
use crate::evidence::{self, AgentPaths};
use crate::launch::{mark_row_failed, BatchContext};
use crate::process::{describe_status, AgentProcess};

/// An agent that was spawned and is running. Await it with [`AgentHandle::wait`].
pub struct AgentHandle {
    ctx: Arc<BatchContext>,
    agent: String,
    agent_id: String,
    process: AgentProcess,
    paths: AgentPaths,
    /// When its process started: `timeout_ms` counts from here.
    started: Instant,
    timeout: Duration,
    /// Set once its completion was (or was attempted to be) recorded.
    finished: bool,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle")
            .field("agent", &self.agent)
            .field("agent_id", &self.agent_id)
            .field("pid", &self.process.pid())
            .finish()
    }
}

/// How an agent's run ended, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentCompletion {
    pub agent: String,
    pub agent_id: String,
    pub pid: u32,
    /// `exit status 0`, `signal 9`...
    pub exit: String,
    /// `None` when the agent exited with status 0 in time.
    pub failure: Option<RunFailure>,
    /// The stored response: at most `max_response_bytes`, cut at a character boundary.
    pub response: String,
    /// Where the whole response is (its output file, else its stdout log).
    pub response_path: PathBuf,
    /// The whole response's size; bytes beyond `response` stay in the file.
    pub response_bytes: u64,
    pub truncated: bool,
    /// From process start to exit (or kill).
    pub run_ms: u64,
    pub paths: AgentPaths,
    /// Processes the agent left running (a daemon it started), killed when it ended.
    pub left_behind: Vec<u32>,
    /// Its logs that were cut at `spawn.max_log_bytes`.
    pub logs_cut: Vec<LogCut>,
}

/// A log cut at `spawn.max_log_bytes`: what the agent wrote, what the log kept.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogCut {
    pub path: PathBuf,
    pub total_bytes: u64,
    pub kept_bytes: u64,
}

impl AgentCompletion {
    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }
}

impl AgentHandle {
    pub(crate) fn new(
        ctx: Arc<BatchContext>,
        agent: String,
        agent_id: String,
        process: AgentProcess,
        paths: AgentPaths,
        started: Instant,
        timeout: Duration,
    ) -> Self {
        Self {
            ctx,
            agent,
            agent_id,
            process,
            paths,
            started,
            timeout,
            finished: false,
        }
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn paths(&self) -> &AgentPaths {
        &self.paths
    }

    /// Waits for the agent to finish (killed after its `timeout_ms`, or when the request is
    /// cancelled) and records the outcome. A failed run is an `Ok` completion with
    /// `failure` set; `Err` means the outcome could not be recorded.
    pub async fn wait(self) -> Result<AgentCompletion, CompletionError> {
        self.finish(None).await
    }

    /// Stops the agent now (its whole process group) and records it as cancelled.
    pub async fn kill(self) -> Result<AgentCompletion, CompletionError> {
        self.finish(Some(RunFailure::Cancelled)).await
    }

    async fn finish(
        mut self,
        stop: Option<RunFailure>,
    ) -> Result<AgentCompletion, CompletionError> {
        let pid = self.process.pid();
        let wait_error = |agent: &str, source| CompletionError::Wait {
            agent: agent.to_string(),
            pid,
            source,
        };
        let stop = match stop {
            Some(reason) => {
                // An agent that already finished on its own is recorded as it finished.
                if let Some(status) = self
                    .process
                    .try_wait()
                    .map_err(|e| wait_error(&self.agent, e))?
                {
                    return self.record(status, None).await;
                }
                Some(reason)
            }
            None => {
                let deadline = tokio::time::Instant::from_std(self.started + self.timeout);
                let cancel = self.ctx.cancel.clone();
                tokio::select! {
                    biased;
                    status = self.process.wait() => {
                        // Stop anything it left in its group before the group id can be reused.
                        self.process.kill_group();
                        let status = status.map_err(|e| wait_error(&self.agent, e))?;
                        return self.record(status, None).await;
                    }
                    _ = tokio::time::sleep_until(deadline) => Some(RunFailure::TimedOut {
                        timeout_ms: self.timeout.as_millis() as u64,
                    }),
                    _ = cancel.cancelled() => Some(RunFailure::Cancelled),
                }
            }
        };
        let status = self
            .process
            .kill()
            .await
            .map_err(|e| wait_error(&self.agent, e))?;
        self.record(status, stop).await
    }

    async fn record(
        &mut self,
        status: ExitStatus,
        stopped: Option<RunFailure>,
    ) -> Result<AgentCompletion, CompletionError> {
        let run_ms = self.started.elapsed().as_millis() as u64;
        // What the agent left behind outside its group (daemons) goes with it, before its
        // logs are finished: such a process may hold the log pipes open.
        let (agent_id, leader) = (self.agent_id.clone(), self.process.pid());
        let left_behind = tokio::task::spawn_blocking(move || {
            crate::descendants::stop_left_behind(&agent_id, leader)
        })
        .await
        .unwrap_or_default();
        if !left_behind.is_empty() {
            tracing::warn!(agent = %self.agent, pids = ?left_behind, "killed processes the agent left running");
        }
        let logs = self.process.finish_logs().await;
        let log_errors = logs.errors;
        let logs_cut: Vec<LogCut> = logs
            .cut
            .into_iter()
            .map(|(path, f)| LogCut {
                path,
                total_bytes: f.total_bytes,
                kept_bytes: f.kept_bytes,
            })
            .collect();
        let exited_badly = stopped.is_none() && !status.success();
        let (paths, max_bytes) = (self.paths.clone(), self.ctx.max_response_bytes);
        let read = tokio::task::spawn_blocking(move || {
            let response = evidence::read_response(&paths, max_bytes);
            let tail = exited_badly
                .then(|| evidence::last_line(&paths.stderr))
                .flatten();
            (response, tail)
        })
        .await;
        let (response, stderr_tail) = match read {
            Ok((Ok(response), tail)) => (response, tail),
            Ok((Err(e), tail)) => {
                tracing::warn!(agent = %self.agent, "cannot read the agent's response: {e}");
                (empty_response(&self.paths), tail)
            }
            Err(e) => {
                tracing::warn!(agent = %self.agent, "reading the agent's response failed: {e}");
                (empty_response(&self.paths), None)
            }
        };
        let failure = stopped
            .or_else(|| {
                exited_badly.then(|| RunFailure::Exited {
                    status: describe_status(&status),
                    stderr_tail,
                })
            })
            .or_else(|| {
                // Evidence that could not be written fails the run rather than vanish.
                (!log_errors.is_empty()).then(|| RunFailure::Log {
                    message: log_errors.join("; "),
                })
            });

        self.finished = true;
        let completed_at = self.ctx.now_text();
        let error_text = failure.as_ref().map(ToString::to_string);
        let (agent_id, text) = (self.agent_id.clone(), response.text.clone());
        let path = self.ctx.storage.path().to_path_buf();
        self.ctx
            .storage
            .write(move |tx| {
                let row = CompletionRow {
                    agent_id: &agent_id,
                    completed_at: &completed_at,
                    response: &text,
                    error: error_text.as_deref(),
                };
                db::record_completion(tx, &row).map_err(|source| StorageError::Sqlite {
                    path,
                    cause: source,
                })
            })
            .await
            .map_err(|source| CompletionError::Storage {
                agent: self.agent.clone(),
                source,
            })?;
        let completion = AgentCompletion {
            agent: self.agent.clone(),
            agent_id: self.agent_id.clone(),
            pid: self.process.pid(),
            exit: describe_status(&status),
            failure,
            response: response.text,
            response_path: response.path,
            response_bytes: response.total_bytes,
            truncated: response.truncated,
            run_ms,
            paths: self.paths.clone(),
            left_behind,
            logs_cut,
        };
        match &completion.failure {
            None => tracing::info!(agent = %completion.agent, run_ms, "agent finished"),
            Some(f) => tracing::warn!(agent = %completion.agent, run_ms, "agent run failed: {f}"),
        }
        self.ctx.emit(
            "agent_completed",
            serde_json::json!({
                "batch_id": self.ctx.batch.batch_id,
                "agent": completion.agent,
                "agent_id": completion.agent_id,
                "ok": completion.succeeded(),
                "error": completion.failure.as_ref().map(ToString::to_string),
                "run_ms": run_ms,
            }),
        );
        Ok(completion)
    }
}

fn empty_response(paths: &AgentPaths) -> evidence::Response {
    evidence::Response {
        text: String::new(),
        path: paths.output.clone(),
        total_bytes: 0,
        truncated: false,
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // `AgentProcess`'s own drop kills the process group; record why.
        let storage: Storage = self.ctx.storage.clone();
        let clock = self.ctx.clock.clone();
        let agent_id = self.agent_id.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    mark_row_failed(
                        &storage,
                        &clock,
                        &agent_id,
                        &RunFailure::Abandoned.to_string(),
                    )
                    .await
                });
            }
            Err(_) => tracing::warn!(
                agent_id,
                "agent handle dropped outside a runtime; its process was killed but its row is left open"
            ),
        }
    }
}
