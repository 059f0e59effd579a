//! The engine's error type. Library errors are enums with context; `anyhow` lives only in
//! the binary.

use crate::policy::LoadError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] LoadError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("unknown job {job:?}; known jobs: {}", known.join(", "))]
    UnknownJob { job: String, known: Vec<String> },
    #[error("plugin {plugin:?} rejected the policy: {message}")]
    PluginPolicy { plugin: String, message: String },
    #[error("two plugins are named {0:?}")]
    DuplicatePlugin(String),
    #[error("plugin {plugin:?} cannot be added: {message}")]
    PluginConflict { plugin: String, message: String },
    #[error("config change needs a restart: {0}")]
    RestartRequired(String),
    #[error("{0}")]
    Other(String),
}

impl EngineError {
    /// Whether this error is the user's input (exit status 2) rather than a failure.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            EngineError::Config(_)
                | EngineError::UnknownJob { .. }
                | EngineError::PluginPolicy { .. }
                | EngineError::RestartRequired(_)
        )
    }
}
