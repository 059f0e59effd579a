//! Watching the config file and SIGHUP. (Being built.)

use crate::{Engine, EngineError};

/// Starts the config watcher and SIGHUP listener.
pub fn spawn(_engine: &Engine) -> Result<(), EngineError> {
    Ok(())
}
