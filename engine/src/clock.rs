//! Wall-clock time behind a trait, so scheduler tests can run on tokio's paused clock.

use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Where the engine reads the wall-clock time from.
///
/// Timers (tokio) are monotonic and stop while a laptop sleeps; the scheduler re-reads this
/// clock after every wake-up instead of trusting how long it slept.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A wall clock driven by tokio's (possibly paused) monotonic clock: `start` plus the tokio
/// time elapsed since creation. Under `#[tokio::test(start_paused = true)]`,
/// `tokio::time::advance` moves it.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start_wall: DateTime<Utc>,
    start_instant: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(start_wall: DateTime<Utc>) -> Self {
        Self {
            start_wall,
            start_instant: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.start_instant;
        self.start_wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

pub type SharedClock = Arc<dyn Clock>;
