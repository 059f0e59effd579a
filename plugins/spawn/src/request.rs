//! What a caller asks for: a SPEC, a stage, a prompt and a set of agents.

use tokio_util::sync::CancellationToken;

use speckit_engine::SpecId;

use crate::error::SpawnError;

/// The `phase_type` written to `agent_executions` unless the request says otherwise
/// (upstream distinguishes regular stages from quality gates).
pub const DEFAULT_PHASE_TYPE: &str = "regular_stage";

/// A request to start a stage's agents.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    pub spec_id: SpecId,
    /// The stage (`plan`, `tasks`, `implement`...): 1-64 characters of `[A-Za-z0-9_-]`,
    /// because it becomes part of evidence file names. Check it with [`validate_stage`].
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
}

impl SpawnRequest {
    pub fn new(spec_id: SpecId, stage: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            spec_id,
            stage: stage.into(),
            prompt: prompt.into(),
            agents: Vec::new(),
            phase_type: DEFAULT_PHASE_TYPE.to_string(),
            cancel: CancellationToken::new(),
        }
    }

    /// Only these agents (default: all of the policy's).
    pub fn with_agents<I, S>(mut self, agents: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.agents = agents.into_iter().map(Into::into).collect();
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
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return fail("only letters, digits, '-' and '_' are allowed");
    }
    Ok(())
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
        for ok in ["plan", "spec-implement", "tasks_2"] {
            assert!(validate_stage(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a b", "plan/x", &"x".repeat(65)] {
            let err = validate_stage(bad).unwrap_err().to_string();
            assert!(err.contains("invalid stage"), "{err}");
        }
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
