//! What a caller asks for: a SPEC, a stage, a prompt and a set of agents.

use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use speckit_engine::clock::{SharedClock, SystemClock};
use speckit_engine::SpecId;

use crate::error::SpawnError;

/// The `phase_type` written to `agent_executions` unless the request says otherwise
/// (upstream distinguishes regular stages from quality gates).
pub const DEFAULT_PHASE_TYPE: &str = "regular_stage";

/// A request to start a stage's agents.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    pub spec_id: SpecId,
    /// The stage: the host's name (`spec-plan`, `speckit.specify`...) or its short form
    /// (`plan`, `specify`...), which the database rows get as the host names it (see
    /// [`host_stage`]); evidence file names and `{stage}` use it as given. 1-64 characters
    /// of `[A-Za-z0-9_.-]`, not starting with `.` and without `..`, because it becomes part
    /// of evidence file names. Check it with [`validate_stage`].
    pub stage: String,
    /// The prompt every agent gets (written to one prompt file per agent).
    pub prompt: String,
    /// Agent names from `[[spawn.agents]]`; empty means every agent in the policy.
    pub agents: Vec<String>,
    /// Written to `agent_executions.phase_type`.
    pub phase_type: String,
    /// Cancelling it stops the request: agents still initialising are killed, agents
    /// already running are killed too (also after `spawn_agents` returned, while their
    /// handles are awaited).
    pub cancel: CancellationToken,
    /// Where wall-clock times come from.
    pub clock: SharedClock,
    /// The stage only reads: agents get `args_read_only` instead of `args_write` (the
    /// host's stages write; its quality gates read).
    pub read_only: bool,
}

impl SpawnRequest {
    pub fn new(spec_id: SpecId, stage: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            spec_id,
            stage: stage.into(),
            prompt: prompt.into(),
            agents: Vec::new(),
            phase_type: DEFAULT_PHASE_TYPE.to_string(),
            read_only: false,
            cancel: CancellationToken::new(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Only these agents (default: all of the policy's).
    /// Runs the stage read-only (see [`SpawnRequest::read_only`]).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    pub fn with_agents<I, S>(mut self, agents: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.agents = agents.into_iter().map(Into::into).collect();
        self
    }

    /// Take wall-clock times (`spawned_at`, `completed_at`, the batch's start) from this
    /// clock, the engine's (default: the system clock).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Use this token to cancel the request.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }
}

/// Checks a stage name: it becomes part of file names, so it must be a safe component.
pub fn validate_stage(stage: &str) -> Result<(), SpawnError> {
    let fail = |reason| {
        Err(SpawnError::InvalidStage {
            value: stage.to_string(),
            reason,
        })
    };
    if stage.is_empty() {
        return fail("it is empty");
    }
    if stage.len() > 64 {
        return fail("it is longer than 64 characters");
    }
    if !stage
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return fail("only letters, digits, '-', '_' and '.' are allowed");
    }
    if stage.starts_with('.') || stage.contains("..") {
        return fail("it must not start with '.' or hold '..'");
    }
    Ok(())
}

/// The host's short stage names and the names it records them under.
const HOST_STAGES: &[(&str, &str)] = &[
    ("plan", "spec-plan"),
    ("tasks", "spec-tasks"),
    ("implement", "spec-implement"),
    ("validate", "spec-validate"),
    ("audit", "spec-audit"),
    ("unlock", "spec-unlock"),
    ("clarify", "spec-clarify"),
    ("analyze", "spec-analyze"),
    ("checklist", "spec-checklist"),
    ("specify", "speckit.specify"),
];

/// The stage as the host names it in its tables: a short name (`plan`) becomes the host's
/// (`spec-plan`; `specify` becomes `speckit.specify`); the host's own names and any other
/// stage are kept as given.
pub fn host_stage(stage: &str) -> &str {
    HOST_STAGES
        .iter()
        .find(|(short, _)| *short == stage)
        .map(|(_, host)| *host)
        .unwrap_or(stage)
}

/// Whether an agent name can be part of a file name (checked when the policy loads).
pub(crate) fn agent_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("must not be empty");
    }
    if name.len() > 64 {
        return Some("must be at most 64 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        || name.starts_with('.')
    {
        return Some(
            "may hold only letters, digits, '-', '_' and '.', and must not start with '.' (it becomes part of evidence file names)",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages() {
        for ok in ["plan", "spec-implement", "tasks_2", "speckit.specify"] {
            assert!(validate_stage(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a b",
            "plan/x",
            ".plan",
            "a..b",
            "..",
            &"x".repeat(65),
        ] {
            let err = validate_stage(bad).unwrap_err().to_string();
            assert!(err.contains("invalid stage"), "{err}");
        }
    }

    #[test]
    fn host_stage_names() {
        assert_eq!(host_stage("plan"), "spec-plan");
        assert_eq!(host_stage("checklist"), "spec-checklist");
        assert_eq!(host_stage("specify"), "speckit.specify");
        assert_eq!(host_stage("spec-plan"), "spec-plan");
        assert_eq!(host_stage("speckit.specify"), "speckit.specify");
        assert_eq!(host_stage("my_review"), "my_review");
        assert_eq!(host_stage("Plan"), "Plan");
    }

    #[test]
    fn agent_names() {
        assert!(agent_name_problem("gpt_pro").is_none());
        assert!(agent_name_problem("claude-4.5").is_none());
        for bad in ["", ".x", "a/b", "a b", "..", "x\u{e9}"] {
            assert!(agent_name_problem(bad).is_some(), "{bad:?}");
        }
    }
}
