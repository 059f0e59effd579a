//! Errors of the spawn plugin: a request refused as a whole ([`SpawnError`]), one agent that
//! failed to initialise ([`AgentFailure`]), and one agent whose run failed
//! ([`CompletionError`]). Each names the agent and the cause.

use std::path::PathBuf;

use speckit_engine::StorageError;

/// Why a whole spawn request was refused or stopped. Per-agent failures are not errors of
/// the request: they are reported in [`crate::SpawnBatch::failures`].
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("invalid stage {value:?}: {reason}")]
    InvalidStage { value: String, reason: &'static str },
    #[error("no agents to spawn: the policy ({config}) has no [[spawn.agents]] and no host config with [[agents]] is in use ([spawn] host_config)")]
    NoAgents { config: PathBuf },
    /// The host's config file named by `[spawn] host_config` cannot be read.
    #[error("{message}")]
    HostConfig { message: String },
    /// The stage prompt file named by `[spawn] prompts` cannot be read or parsed.
    #[error("{message}")]
    StagePrompts { message: String },
    #[error("unknown agent(s) {}; the policy defines: {}", unknown.join(", "), if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownAgents {
        unknown: Vec<String>,
        known: Vec<String>,
    },
    #[error("agent {agent:?} is requested twice")]
    DuplicateAgent { agent: String },
    #[error("evidence folder {}: {cause}", path.display())]
    EvidenceFolder { path: PathBuf, cause: String },
    #[error("spawn batch {batch_id} was cancelled; the {started} agent process(es) it had started were stopped")]
    Cancelled { batch_id: String, started: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why one agent did not get to running (and ready).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailureCause {
    #[error("cannot write its evidence file {path}: {message}")]
    EvidenceFile { path: String, message: String },
    #[error("cannot record its agent_executions row: {message}")]
    Database { message: String },
    #[error("cannot start {command:?} (working folder {working_dir}): {message}")]
    Start {
        command: String,
        working_dir: String,
        message: String,
    },
    #[error(
        "exited with {status} before it was ready{}",
        stderr_suffix(stderr_tail)
    )]
    ExitedBeforeReady {
        status: String,
        stderr_tail: Option<String>,
    },
    #[error("closed its stdout without printing the ready line {line:?}")]
    ClosedBeforeReady { line: String },
    #[error(
        "not ready within spawn_timeout_ms = {timeout_ms} (waiting for the line {line:?}); killed"
    )]
    NotReady { timeout_ms: u64, line: String },
    #[error("cancelled before it was ready")]
    Cancelled,
    /// In a chained batch (its prompt needs the outputs before it), an earlier agent did
    /// not complete, so this one was never started.
    #[error("not started: its prompt needs the output of agent {agent:?}, which did not complete")]
    PredecessorFailed { agent: String },
}

fn stderr_suffix(tail: &Option<String>) -> String {
    match tail {
        Some(t) if !t.is_empty() => format!("; stderr: {t}"),
        _ => String::new(),
    }
}

/// One agent that failed to initialise. Its process (if one was started) has been killed
/// and reaped; its `agent_executions` row (if one was written) is marked failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("agent {agent:?} failed to spawn: {cause}")]
pub struct AgentFailure {
    pub agent: String,
    pub agent_id: String,
    /// The process id it had, if a process was started.
    pub pid: Option<u32>,
    pub cause: FailureCause,
}

/// Why an agent's run (after a successful spawn) did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunFailure {
    #[error("exited with {status}{}", stderr_suffix(stderr_tail))]
    Exited {
        status: String,
        stderr_tail: Option<String>,
    },
    #[error("ran longer than timeout_ms = {timeout_ms}; killed")]
    TimedOut { timeout_ms: u64 },
    #[error("cancelled while running; killed")]
    Cancelled,
    #[error("its handle was dropped before it finished; killed")]
    Abandoned,
    #[error("its output could not be logged: {message}")]
    Log { message: String },
}

/// Why awaiting an agent's handle failed: its completion could not be recorded, or waiting
/// for the process failed.
#[derive(Debug, thiserror::Error)]
pub enum CompletionError {
    #[error("agent {agent:?}: cannot record its completion: {source}")]
    Storage {
        agent: String,
        #[source]
        source: StorageError,
    },
    #[error("agent {agent:?}: waiting for process {pid} failed: {source}")]
    Wait {
        agent: String,
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}
