//! Waiting for a quiet period after file-system activity before reloading.
//!
//! One save is several events (an editor's temp file, a rename, an attribute change;
//! an in-place write is a truncate and one or more writes), and a reload in the middle of
//! them would read a half-written file. So the reload waits until no relevant event came
//! for `quiet`; `max_delay` bounds the wait when events never stop (a process rewriting
//! the file in a loop), so a reload still happens.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Debouncer {
    quiet: Duration,
    max_delay: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debouncer {
    pub fn new(quiet: Duration, max_delay: Duration) -> Self {
        Self {
            quiet,
            max_delay: max_delay.max(quiet),
            first: None,
            last: None,
        }
    }

    /// Records activity seen at `now`.
    pub fn activity(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending reload is due; `None` when nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.quiet).min(first + self.max_delay))
    }

    /// Forgets the pending activity (the reload is being done).
    pub fn clear(&mut self) {
        self.first = None;
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn each_event_restarts_the_quiet_period() {
        let mut d = Debouncer::new(300 * MS, 2000 * MS);
        assert_eq!(d.deadline(), None);
        let t0 = Instant::now();
        d.activity(t0);
        assert_eq!(d.deadline(), Some(t0 + 300 * MS));
        d.activity(t0 + 200 * MS);
        assert_eq!(d.deadline(), Some(t0 + 500 * MS));
        d.clear();
        assert_eq!(d.deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_of_events_is_capped_by_max_delay() {
        let mut d = Debouncer::new(300 * MS, 1000 * MS);
        let t0 = Instant::now();
        for i in 0..20 {
            d.activity(t0 + i * 100 * MS);
        }
        assert_eq!(d.deadline(), Some(t0 + 1000 * MS));
    }

    #[test]
    fn max_delay_is_never_below_quiet() {
        let mut d = Debouncer::new(300 * MS, Duration::ZERO);
        let t0 = Instant::now();
        d.activity(t0);
        assert_eq!(d.deadline(), Some(t0 + 300 * MS));
    }
}
