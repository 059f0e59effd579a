//! The cron scheduler. (Being built.)

use crate::Engine;

/// Starts the scheduler task on the engine's task tracker.
pub fn spawn(_engine: &Engine) {}
