//! Initialising one agent: take a concurrency slot; insert its `agent_executions` row
//! while writing its prompt file and starting its process; wait until it is running (and
//! ready). Every failure path kills and reaps what it started and marks the row
//! failed, so a failure leaves no orphan process and no half-written row.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::AgentPolicy;
use crate::AgentReadiness;
use crate::PromptVia;
use speckit_engine::clock::SharedClock;
use speckit_engine::events::{EngineEvent, EventBus};
use speckit_engine::{Storage, StorageError};

use crate::command::{expand, AgentProgram, PlaceholderValues};
use crate::db::{self, AgentMetric, BatchRow, SpawnPhases};
use crate::error::{AgentFailure, FailureCause};
use crate::evidence::{self, AgentPaths};
use crate::handle::AgentHandle;
use crate::logs::{spawn_log_writer, LogInput};
use crate::process::{describe_status, AgentProcess, ReadyWatch};
use crate::PLUGIN_NAME;

/// What every agent of one batch shares.
pub(crate) struct BatchContext {
    pub storage: Storage,
    pub events: EventBus,
    pub batch: Arc<BatchRow>,
    /// The stage as the request gave it: evidence file names and `{stage}` use it (the
    /// rows use the host's name, `batch.stage`).
    pub request_stage: String,
    pub phase_type: String,
    pub spec_dir: PathBuf,
    pub config_dir: PathBuf,
    pub spawn_timeout: Duration,
    pub max_response_bytes: u64,
    /// Bytes kept of each of an agent's two logs.
    pub max_log_bytes: u64,
    /// The rule for the agents' environment.
    pub environment: crate::EnvironmentPolicy,
    /// The stage only reads (each agent's `args_read_only`).
    pub read_only: bool,
    /// When the request arrived: every agent's spawn time is measured from here.
    pub request_start: Instant,
    pub cancel: CancellationToken,
    /// The engine's wall clock, for the rows' times.
    pub clock: SharedClock,
    /// The rows of every agent, when the batch inserts them in one transaction.
    pub rows: Option<BatchRows>,
    /// Agents start on their own task (a small batch) rather than on the blocking pool;
    /// see [`start_off_runtime`].
    pub start_inline: bool,
}

/// Batches of at most this many agents start each agent's process on the agent's own task.
/// Measured on 2 cores (`cargo bench -p speckit-spawn --bench spawn`, quiet machine,
/// interleaved runs): with 3 agents inline starts gave a parallel p95 of 56.7-58.1 ms
/// against 59.4-61.2 ms through the blocking pool, whose hand-off cost more than the
/// queueing it avoids; with 32 agents the pool wins by far (see [`start_off_runtime`]).
pub(crate) const INLINE_START_MAX_AGENTS: usize = 4;

/// The `agent_executions` rows of a whole batch inserted in one transaction, for a batch
/// whose agents all get a slot at once: one hand-off to the writer thread and one commit
/// instead of one per agent. If that transaction fails, each agent writes its own row as
/// before, so a fault in one row fails only its agent. With 32 agents the per-agent commits queued on the writer
/// thread, and on a busy machine an agent's row came tens of milliseconds after its
/// process, making the row, not the agent, the slowest part of its spawn.
#[derive(Clone)]
pub(crate) struct BatchRows {
    committed: tokio::sync::watch::Receiver<Option<Result<Instant, String>>>,
}

impl BatchRows {
    /// Submits the rows at once (the write runs while the agents start).
    pub fn insert(
        storage: &Storage,
        batch: Arc<BatchRow>,
        phase_type: String,
        spawned_at: String,
        agents: Vec<String>,
    ) -> Self {
        let (done, committed) = tokio::sync::watch::channel(None);
        let to_storage = sqlite_error(storage);
        let storage = storage.clone();
        tokio::spawn(async move {
            let write = storage.write(move |tx| {
                for name in &agents {
                    let id = agent_id(&batch.batch_id, name);
                    db::insert_execution(tx, &batch, &id, name, &phase_type, &spawned_at)
                        .map_err(&to_storage)?;
                }
                Ok::<_, StorageError>(())
            });
            let outcome = write.await.map(|()| Instant::now());
            let _ = done.send(Some(outcome.map_err(|e| e.to_string())));
        });
        Self { committed }
    }

    /// When the rows were committed, or why they were not.
    pub async fn wait(&self) -> Result<Instant, String> {
        let mut committed = self.committed.clone();
        let outcome = match committed.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or_else(|| Err("the batch's row write was dropped".into()))
    }
}

impl BatchContext {
    pub fn emit(&self, kind: &str, data: serde_json::Value) {
        emit(&self.events, kind, data);
    }

    /// Now, as the host writes times.
    pub fn now_text(&self) -> String {
        db::host_time(self.clock.now())
    }
}

pub(crate) fn emit(events: &EventBus, kind: &str, data: serde_json::Value) {
    events.emit(EngineEvent::Plugin {
        plugin: PLUGIN_NAME.to_string(),
        kind: kind.to_string(),
        data,
    });
}

/// How one agent's initialisation ended.
pub(crate) enum AgentInit {
    Ready {
        handle: Box<AgentHandle>,
        metric: AgentMetric,
    },
    Failed {
        failure: AgentFailure,
        metric: AgentMetric,
    },
}

pub(crate) fn agent_id(batch_id: &str, agent: &str) -> String {
    format!("{batch_id}-{agent}")
}

fn sqlite_error(storage: &Storage) -> impl Fn(rusqlite::Error) -> StorageError {
    let path = storage.path().to_path_buf();
    move |source| StorageError::Sqlite {
        path: path.clone(),
        cause: source,
    }
}

/// Marks an agent's row failed; a failure to do so is logged (the agent's failure is
/// reported to the caller either way).
pub(crate) async fn mark_row_failed(
    storage: &Storage,
    clock: &SharedClock,
    agent_id: &str,
    cause: &str,
) {
    let (id, cause_text, completed_at) = (
        agent_id.to_string(),
        cause.to_string(),
        db::host_time(clock.now()),
    );
    let to_storage = sqlite_error(storage);
    let result = storage
        .write(move |tx| db::mark_failed(tx, &id, &completed_at, &cause_text).map_err(to_storage))
        .await;
    if let Err(e) = result {
        tracing::error!(agent_id, "cannot mark the agent's row failed: {e}");
    }
}

/// Initialises one agent. Never panics on bad input; every error becomes a failure.
/// `prompt` is the agent's whole prompt (instructions included).
pub(crate) async fn initialize(
    ctx: Arc<BatchContext>,
    agent: AgentPolicy,
    prompt: Arc<str>,
    slots: Arc<Semaphore>,
) -> AgentInit {
    let id = agent_id(&ctx.batch.batch_id, &agent.name);
    let queue_start = Instant::now();
    let mut metric = new_metric(&agent.name, &id);
    let since_request = |at: Instant| at.duration_since(ctx.request_start).as_micros() as u64;
    metric.phases.task_started_us = since_request(queue_start);
    let _slot = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => {
            return fail(&ctx, metric, None, FailureCause::Cancelled, false).await;
        }
        slot = slots.acquire_owned() => match slot {
            Ok(slot) => slot,
            // The semaphore is never closed; treat it like a cancellation if it were.
            Err(_) => return fail(&ctx, metric, None, FailureCause::Cancelled, false).await,
        },
    };
    let init_start = Instant::now();
    metric.queued_us = init_start.duration_since(queue_start).as_micros() as u64;
    metric.phases.slot_us = since_request(init_start);
    let paths = AgentPaths::new(
        &ctx.spec_dir,
        &ctx.request_stage,
        &ctx.batch.batch_id,
        &agent.name,
    );

    // The row goes to the writer thread while this task writes the prompt file and starts
    // the process: the agent boots while its row commits, and a write queued behind a
    // vacuum chunk does not delay the start. The agent counts as spawned only once both
    // are done; if either fails, the other is undone (process killed, row marked failed).
    let row = async {
        if let Some(rows) = &ctx.rows {
            match rows.wait().await {
                Ok(at) => return (Ok(()), at),
                // One agent's row may be what failed the batch's transaction: each agent
                // writes its own, so the fault stays with the agent it belongs to.
                Err(e) => {
                    tracing::debug!(agent = %agent.name, "the batch's rows failed ({e}); writing this agent's own")
                }
            }
        }
        let (batch, id, name, phase, spawned_at) = (
            ctx.batch.clone(),
            id.clone(),
            agent.name.clone(),
            ctx.phase_type.clone(),
            ctx.now_text(),
        );
        let to_storage = sqlite_error(&ctx.storage);
        let committed = ctx
            .storage
            .write(move |tx| {
                db::insert_execution(tx, &batch, &id, &name, &phase, &spawned_at)
                    .map_err(to_storage)
            })
            .await;
        (committed.map_err(|e| e.to_string()), Instant::now())
    };
    let start = async {
        if ctx.start_inline {
            let mut phases = SpawnPhases::default();
            let started = start_process(&ctx, &agent, prompt, &paths, &id, &mut phases);
            (started, phases)
        } else {
            start_off_runtime(&ctx, &agent, prompt, &paths, &id).await
        }
    };
    let ((row, row_done), (started, start_phases)) = tokio::join!(row, start);
    metric.phases.prompt_file_us = start_phases.prompt_file_us;
    metric.phases.process_spawned_us = start_phases.process_spawned_us;
    metric.phases.row_committed_us = since_request(row_done);
    let (mut process, watch, process_started) = match (row, started) {
        (Ok(()), Ok(started)) => started,
        (Err(e), started) => {
            let pid = match started {
                Ok((mut process, _, _)) => {
                    let pid = process.pid();
                    if let Err(e) = process.kill().await {
                        tracing::warn!(pid, agent = %agent.name, "reaping the agent failed: {e}");
                    }
                    Some(pid)
                }
                Err(_) => None,
            };
            let cause = FailureCause::Database { message: e };
            return fail(&ctx, metric, pid, cause, false).await;
        }
        (Ok(()), Err(cause)) => return fail(&ctx, metric, None, cause, true).await,
    };
    let pid = process.pid();
    metric.pid = Some(pid);
    ctx.emit(
        "agent_started",
        serde_json::json!({ "batch_id": ctx.batch.batch_id, "agent": agent.name, "agent_id": id, "pid": pid }),
    );

    if let Some(mut watch) = watch {
        let line = match &agent.readiness {
            AgentReadiness::Line(line) => line.clone(),
            AgentReadiness::Started => String::new(),
        };
        let deadline = tokio::time::Instant::from_std(init_start + ctx.spawn_timeout);
        let first = tokio::select! {
            biased;
            seen = watch.wait_ready() => match seen {
                Ok(true) => {
                    metric.phases.ready_line_us = since_request(Instant::now());
                    ReadyWait::Ready
                }
                Ok(false) => ReadyWait::StdoutClosed,
                Err(e) => ReadyWait::ReadFailed(e),
            },
            status = process.wait() => ReadyWait::Exited(status),
            _ = tokio::time::sleep_until(deadline) => ReadyWait::TimedOut,
            _ = ctx.cancel.cancelled() => ReadyWait::Cancelled,
        };
        let not_ready = match first {
            ReadyWait::Ready => None,
            ReadyWait::Exited(status) => {
                // Stop anything it left in its group before the group id can be reused.
                process.kill_group();
                // A quick agent may print the line and exit before it was read: read what
                // is left in the pipe (end of file follows the exit), then decide.
                match tokio::time::timeout(Duration::from_secs(1), watch.wait_ready()).await {
                    Ok(Ok(true)) => None,
                    _ => Some(match status {
                        Ok(status) => FailureCause::ExitedBeforeReady {
                            status: describe_status(&status),
                            stderr_tail: None,
                        },
                        Err(e) => FailureCause::Start {
                            command: agent.command.clone(),
                            working_dir: String::new(),
                            message: format!("waiting for it failed: {e}"),
                        },
                    }),
                }
            }
            // Its stdout cannot be logged (or read): evidence would be lost.
            ReadyWait::ReadFailed(e) => Some(FailureCause::EvidenceFile {
                path: paths.stdout.display().to_string(),
                message: e.to_string(),
            }),
            // Stdout closed without the line: usually an exit on its way.
            ReadyWait::StdoutClosed => Some(
                match tokio::time::timeout(Duration::from_millis(500), process.wait()).await {
                    Ok(Ok(status)) => {
                        process.kill_group();
                        FailureCause::ExitedBeforeReady {
                            status: describe_status(&status),
                            stderr_tail: None,
                        }
                    }
                    _ => FailureCause::ClosedBeforeReady { line: line.clone() },
                },
            ),
            ReadyWait::TimedOut => Some(FailureCause::NotReady {
                timeout_ms: ctx.spawn_timeout.as_millis() as u64,
                line: line.clone(),
            }),
            ReadyWait::Cancelled => Some(FailureCause::Cancelled),
        };
        // From here on the log task copies the rest of stdout.
        watch.finish().await;
        if let Some(mut cause) = not_ready {
            if let Err(e) = process.kill().await {
                tracing::warn!(pid, agent = %agent.name, "reaping the failed agent failed: {e}");
            }
            for error in process.finish_logs().await.errors {
                tracing::warn!(pid, agent = %agent.name, "{error}");
            }
            if let FailureCause::ExitedBeforeReady { stderr_tail, .. } = &mut cause {
                let path = paths.stderr.clone();
                *stderr_tail = tokio::task::spawn_blocking(move || evidence::last_line(&path))
                    .await
                    .ok()
                    .flatten();
            }
            return fail(&ctx, metric, Some(pid), cause, true).await;
        }
    }

    metric.spawn_us = ctx.request_start.elapsed().as_micros() as u64;
    metric.ok = true;
    ctx.emit(
        "agent_ready",
        serde_json::json!({ "batch_id": ctx.batch.batch_id, "agent": agent.name, "agent_id": id, "pid": pid, "spawn_us": metric.spawn_us }),
    );
    tracing::debug!(agent = %agent.name, pid, spawn_us = metric.spawn_us, "agent ready");
    let handle = AgentHandle::new(
        ctx.clone(),
        agent.name.clone(),
        id,
        process,
        paths,
        process_started,
        Duration::from_millis(agent.timeout_ms),
    );
    AgentInit::Ready {
        handle: Box::new(handle),
        metric,
    }
}

fn new_metric(agent: &str, agent_id: &str) -> AgentMetric {
    AgentMetric {
        agent: agent.to_string(),
        agent_id: agent_id.to_string(),
        queued_us: 0,
        spawn_us: 0,
        ok: false,
        pid: None,
        error: None,
        phases: SpawnPhases::default(),
    }
}

/// An agent never started (nothing of it exists: no row, no process), reported failed.
pub(crate) async fn not_started(
    ctx: &BatchContext,
    agent: &str,
    cause: FailureCause,
) -> (AgentFailure, AgentMetric) {
    let metric = new_metric(agent, &agent_id(&ctx.batch.batch_id, agent));
    failed(ctx, metric, None, cause, false).await
}

/// [`start_process`] on the blocking pool, for a batch of more than
/// [`INLINE_START_MAX_AGENTS`]: a `posix_spawn` holds its thread for as long as the kernel
/// takes to build the process (0.2 ms on a quiet machine, milliseconds on a busy one), and
/// on the runtime's few threads those waits queue up. Measured with 32
/// agents on 2 cores: inline, agents' tasks began 15-20 ms (p50) after the batch set-up
/// and ready lines were read up to 40 ms (p95) after they were written, behind other
/// agents' spawns; here they begin within 2 ms and the batch's p99 fell by 40%
/// (`cargo bench -p speckit-spawn --bench spawn`, see BENCHMARKS.md). The hand-off costs
/// tens of microseconds.
async fn start_off_runtime(
    ctx: &Arc<BatchContext>,
    agent: &AgentPolicy,
    prompt: Arc<str>,
    paths: &AgentPaths,
    agent_id: &str,
) -> (StartResult, SpawnPhases) {
    let (ctx, agent, paths, agent_id) = (
        ctx.clone(),
        agent.clone(),
        paths.clone(),
        agent_id.to_string(),
    );
    let program = agent.command.clone();
    let started = tokio::task::spawn_blocking(move || {
        let mut phases = SpawnPhases::default();
        let started = start_process(&ctx, &agent, prompt, &paths, &agent_id, &mut phases);
        (started, phases)
    })
    .await;
    started.unwrap_or_else(|e| {
        let cause = FailureCause::Start {
            command: program,
            working_dir: String::new(),
            message: format!("internal error while starting it: {e}"),
        };
        (Err(cause), SpawnPhases::default())
    })
}

type StartResult = Result<(AgentProcess, Option<ReadyWatch>, Instant), FailureCause>;

/// Writes the agent's prompt file and starts its process with stdout and stderr piped to
/// log tasks (which create the log files meanwhile). Blocking: see [`start_off_runtime`].
fn start_process(
    ctx: &BatchContext,
    agent: &AgentPolicy,
    prompt: Arc<str>,
    paths: &AgentPaths,
    agent_id: &str,
    phases: &mut SpawnPhases,
) -> StartResult {
    let since_request = |at: Instant| at.duration_since(ctx.request_start).as_micros() as u64;
    // The agent's own prompt is kept as evidence whichever way it is handed over.
    evidence::write_prompt_file(paths, &prompt).map_err(|e| FailureCause::EvidenceFile {
        path: paths.prompt.display().to_string(),
        message: e.to_string(),
    })?;
    phases.prompt_file_us = since_request(Instant::now());
    let start = AgentProgram::of(agent, &ctx.config_dir);
    let cannot_start = |message: String| FailureCause::Start {
        command: start.program.display().to_string(),
        working_dir: start
            .working_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "unknown".into()),
        message,
    };
    let environment =
        crate::environment::agent_environment(&ctx.environment, &agent.env, std::env::vars_os());
    let executable = start.executable(&environment).map_err(&cannot_start)?;
    let mut values = PlaceholderValues {
        prompt_file: &paths.prompt,
        spec_id: &ctx.batch.spec_id,
        stage: &ctx.request_stage,
        output_file: &paths.output,
        prompt: None,
    };
    let via = agent.handover(ctx.read_only, prompt.len());
    let mut args: Vec<String> = agent
        .mode_args(ctx.read_only)
        .iter()
        .map(|a| expand(a, &values))
        .collect();
    if via == PromptVia::Argument {
        values.prompt = Some(&*prompt);
        args.extend(agent.prompt_args.iter().map(|a| expand(a, &values)));
    }
    let mut command = tokio::process::Command::new(&executable);
    if executable != start.program {
        // Found on PATH: the agent still sees the name it was given as its argv[0].
        command.arg0(&start.program);
    }
    command
        .args(args)
        .env_clear()
        .envs(environment)
        // Inherited by everything the agent starts: how what it leaves behind is found.
        .env(crate::descendants::MARKER, agent_id)
        .stdin(if via == PromptVia::Stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: killing the group stops whatever the agent started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &agent.working_dir {
        command.current_dir(dir);
    }
    let mut child = command.spawn().map_err(|e| cannot_start(e.to_string()))?;
    let started = Instant::now();
    phases.process_spawned_us = since_request(started);
    if let Some(stdin) = child.stdin.take() {
        hand_over_on_stdin(stdin, prompt, agent.name.clone());
    }
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let mut process = AgentProcess::new(child);
    let (stderr_log, stderr_task) = spawn_log_writer(paths.stderr.clone(), ctx.max_log_bytes);
    let (stdout_log, stdout_task) = spawn_log_writer(paths.stdout.clone(), ctx.max_log_bytes);
    process.add_log(paths.stderr.clone(), stderr_task);
    process.add_log(paths.stdout.clone(), stdout_task);
    if let Some(stderr) = stderr {
        stderr_log.try_send(LogInput::Rest(Box::new(stderr)));
    }
    let watch = match (&agent.readiness, stdout) {
        (AgentReadiness::Line(line), Some(stdout)) => {
            Some(ReadyWatch::new(stdout, stdout_log, line))
        }
        (_, Some(stdout)) => {
            stdout_log.try_send(LogInput::Rest(Box::new(stdout)));
            None
        }
        (_, None) => None,
    };
    Ok((process, watch, started))
}

/// Writes the prompt to the agent's stdin and closes it, off the spawn's path: a prompt
/// larger than the pipe's buffer is written as the agent reads it. An agent that exits
/// (or closes stdin) without reading it all is not an error here; its exit says how it
/// went.
fn hand_over_on_stdin(mut stdin: tokio::process::ChildStdin, prompt: Arc<str>, agent: String) {
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        if let Err(e) = stdin.write_all(prompt.as_bytes()).await {
            tracing::debug!(agent, "the agent did not read all of its prompt: {e}");
        }
        drop(stdin);
    });
}

/// What ended the wait for an agent's ready line.
enum ReadyWait {
    Ready,
    StdoutClosed,
    ReadFailed(std::io::Error),
    Exited(std::io::Result<std::process::ExitStatus>),
    TimedOut,
    Cancelled,
}

/// Reports an agent's failure: its row marked failed (when it has one), a tracing line, an
/// event, and the metric.
async fn fail(
    ctx: &BatchContext,
    metric: AgentMetric,
    pid: Option<u32>,
    cause: FailureCause,
    has_row: bool,
) -> AgentInit {
    let (failure, metric) = failed(ctx, metric, pid, cause, has_row).await;
    AgentInit::Failed { failure, metric }
}

/// Undoes what a failed agent left (its processes, its row) and reports it.
async fn failed(
    ctx: &BatchContext,
    mut metric: AgentMetric,
    pid: Option<u32>,
    cause: FailureCause,
    has_row: bool,
) -> (AgentFailure, AgentMetric) {
    let message = cause.to_string();
    if let Some(leader) = pid {
        // Its process group is killed; what it started in a session of its own is not.
        let agent_id = metric.agent_id.clone();
        let left = tokio::task::spawn_blocking(move || {
            crate::descendants::stop_left_behind(&agent_id, leader)
        })
        .await
        .unwrap_or_default();
        if !left.is_empty() {
            tracing::warn!(agent = %metric.agent, pids = ?left, "killed processes the failed agent left running");
        }
    }
    // A batch's shared rows may include this agent's even where it failed before its own
    // part began: wait for them, so no row is left looking like a running agent.
    let row_exists = match &ctx.rows {
        Some(rows) => has_row || rows.wait().await.is_ok(),
        None => has_row,
    };
    if row_exists {
        mark_row_failed(&ctx.storage, &ctx.clock, &metric.agent_id, &message).await;
    }
    metric.spawn_us = ctx.request_start.elapsed().as_micros() as u64;
    metric.ok = false;
    metric.pid = pid;
    metric.error = Some(message.clone());
    tracing::warn!(agent = %metric.agent, batch_id = %ctx.batch.batch_id, "agent failed to spawn: {message}");
    ctx.emit(
        "agent_failed",
        serde_json::json!({ "batch_id": ctx.batch.batch_id, "agent": metric.agent, "agent_id": metric.agent_id, "pid": pid, "error": message }),
    );
    let failure = AgentFailure {
        agent: metric.agent.clone(),
        agent_id: metric.agent_id.clone(),
        pid,
        cause,
    };
    (failure, metric)
}
