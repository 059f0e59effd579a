//! Why embedding the engine failed, each error naming the database, config or job at fault.

use std::path::PathBuf;

use speckit_engine::{EngineError, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// Another engine embedded in this process owns the database.
    #[error("database {} is already owned by an engine embedded in this process (started from config {}); clone that engine's handle instead of starting a second engine", database.display(), owner_config.display())]
    AlreadyRunning {
        database: PathBuf,
        owner_config: PathBuf,
    },
    /// The handle was shut down; nothing more runs through it.
    #[error("the embedded engine for database {} has shut down; {action} was not done", database.display())]
    ShutDown { database: PathBuf, action: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The evidence root could not be measured, or the SPEC-ID is not valid.
    #[error(transparent)]
    Evidence(#[from] speckit_retention::stats::StatsError),
    /// Agents could not be spawned (each failure names the agent and cause).
    #[error(transparent)]
    Spawn(#[from] speckit_spawn::SpawnError),
    /// A task of the engine ended without an answer (it panicked or the runtime stopped).
    #[error("{action} did not finish: {cause}")]
    TaskLost { action: String, cause: String },
}
