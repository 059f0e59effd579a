//! The reload task's timing (debounce, retry backoff) on tokio's paused clock, with a
//! stand-in OS watch the test pokes and can make fail.

use super::*;
use crate::events::{EngineEvent, ReloadOutcome};
use crate::EngineOptions;
use std::sync::Mutex;
use tokio::sync::{broadcast, mpsc};

const MS: Duration = Duration::from_millis(1);

/// A watch backend whose first `fail_first` set-ups fail; each attempt is reported with
/// its (virtual) time, and the live inbox is kept for the test to poke.
struct FakeBackend {
    fail_first: usize,
    attempts: usize,
    attempt_times: mpsc::UnboundedSender<Instant>,
    inbox: Arc<Mutex<Option<Arc<Inbox>>>>,
}

impl Backend for FakeBackend {
    fn watch(&mut self, _plan: &WatchPlan, inbox: Arc<Inbox>) -> Result<WatchGuard, WatchError> {
        self.attempts += 1;
        let _ = self.attempt_times.send(Instant::now());
        if self.attempts <= self.fail_first {
            return Err(WatchError::Broken {
                message: format!("injected failure {}", self.attempts),
            });
        }
        *self.inbox.lock().unwrap() = Some(inbox);
        Ok(Box::new(()))
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    engine: Engine,
    events: broadcast::Receiver<EngineEvent>,
    attempts: mpsc::UnboundedReceiver<Instant>,
    inbox: Arc<Mutex<Option<Arc<Inbox>>>>,
}

fn policy_text(archive_after_days: u32) -> String {
    format!("[storage]\ndatabase_path = \"consensus.db\"\n[schedule]\njob_history_days = {archive_after_days}\n")
}

async fn setup(fail_first: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("speckit.toml");
    std::fs::write(&config, policy_text(30)).unwrap();
    let mut options = EngineOptions::new(&config);
    options.env = Vec::new();
    let engine = Engine::start(options, Vec::new()).await.unwrap();
    let events = engine.events().subscribe();
    let (tx, attempts) = mpsc::unbounded_channel();
    let inbox = Arc::new(Mutex::new(None));
    let backend = FakeBackend {
        fail_first,
        attempts: 0,
        attempt_times: tx,
        inbox: inbox.clone(),
    };
    let options = WatchOptions {
        listen_sighup: false,
        ..WatchOptions::default()
    };
    spawn_on(&engine, options, Box::new(backend)).unwrap();
    Setup {
        _dir: dir,
        config,
        engine,
        events,
        attempts,
        inbox,
    }
}

impl Setup {
    fn poke(&self) {
        self.inbox
            .lock()
            .unwrap()
            .as_ref()
            .expect("a live watch")
            .changed();
    }

    async fn next_attempt(&mut self) -> Instant {
        tokio::time::timeout(Duration::from_secs(60), self.attempts.recv())
            .await
            .expect("a watch set-up attempt")
            .expect("backend alive")
    }

    async fn next_reload(&mut self) -> (ReloadCause, ReloadOutcome) {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(60), self.events.recv())
                .await
                .expect("a reload event")
                .expect("event bus open");
            if let EngineEvent::Reload { cause, outcome } = event {
                return (cause, outcome);
            }
        }
    }
}

/// Lets the reload task run everything it can without time moving.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn reload_waits_for_the_quiet_period_after_the_last_event() {
    let mut s = setup(0).await;
    s.next_attempt().await;
    settle().await;
    std::fs::write(&s.config, policy_text(45)).unwrap();
    let t0 = Instant::now();
    for step in 0..3 {
        if step > 0 {
            tokio::time::advance(200 * MS).await;
        }
        s.poke();
        settle().await;
    }
    // Last event at t0 + 400 ms: nothing may happen before t0 + 700 ms.
    tokio::time::advance(299 * MS).await;
    settle().await;
    assert_eq!(
        s.engine.events().counters().reloads_applied,
        1,
        "only start-up so far"
    );
    assert_eq!(s.engine.policy().policy.schedule.job_history_days, 30);

    let (cause, outcome) = s.next_reload().await;
    let waited = Instant::now() - t0;
    assert_eq!(cause, ReloadCause::FileChanged);
    assert!(
        matches!(outcome, ReloadOutcome::Applied { generation: 2, .. }),
        "{outcome:?}"
    );
    assert!(waited >= 700 * MS && waited < 710 * MS, "{waited:?}");
    assert_eq!(s.engine.policy().policy.schedule.job_history_days, 45);
    s.engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn endless_events_still_reload_after_max_delay() {
    let mut s = setup(0).await;
    s.next_attempt().await;
    settle().await;
    std::fs::write(&s.config, policy_text(50)).unwrap();
    let t0 = Instant::now();
    // An event every 100 ms, never quiet for 300 ms.
    while Instant::now() - t0 < DEFAULT_MAX_DELAY - 100 * MS {
        s.poke();
        settle().await;
        tokio::time::advance(100 * MS).await;
    }
    s.poke();
    settle().await;
    let (_, outcome) = s.next_reload().await;
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    assert_eq!(Instant::now() - t0, DEFAULT_MAX_DELAY);
    s.engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_watch_is_retried_with_backoff_then_the_file_rechecked() {
    let mut s = setup(3).await;
    let first = s.next_attempt().await;
    // The file changes while no watch is live: no event will ever say so.
    std::fs::write(&s.config, policy_text(60)).unwrap();
    let mut gaps = Vec::new();
    let mut previous = first;
    for _ in 0..3 {
        let at = s.next_attempt().await;
        gaps.push(at - previous);
        previous = at;
    }
    assert_eq!(gaps, vec![250 * MS, 500 * MS, 1000 * MS]);
    // Set up on the 4th attempt; the file differs from the policy, so it is reloaded.
    let (cause, outcome) = s.next_reload().await;
    assert_eq!(cause, ReloadCause::FileChanged);
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    assert_eq!(Instant::now() - previous, DEFAULT_DEBOUNCE);
    assert_eq!(s.engine.policy().policy.schedule.job_history_days, 60);
    s.engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_broken_watch_is_replaced_and_pending_changes_reloaded() {
    let mut s = setup(0).await;
    let first = s.next_attempt().await;
    settle().await;
    std::fs::write(&s.config, policy_text(70)).unwrap();
    let broken = s.inbox.lock().unwrap().clone().unwrap();
    broken.broken("inotify queue overflow".into());
    let again = s.next_attempt().await;
    assert_eq!(again - first, DEFAULT_RETRY_INITIAL);
    let (_, outcome) = s.next_reload().await;
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    assert_eq!(s.engine.policy().policy.schedule.job_history_days, 70);
    // The new watch is live: a later edit is seen through it.
    assert!(!Arc::ptr_eq(
        &broken,
        s.inbox.lock().unwrap().as_ref().unwrap()
    ));
    std::fs::write(&s.config, policy_text(80)).unwrap();
    s.poke();
    let (_, outcome) = s.next_reload().await;
    assert!(
        matches!(outcome, ReloadOutcome::Applied { generation: 3, .. }),
        "{outcome:?}"
    );
    s.engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_task() {
    let mut s = setup(0).await;
    s.next_attempt().await;
    s.engine.shutdown_token().cancel();
    s.engine.tasks().close();
    tokio::time::timeout(Duration::from_secs(5), s.engine.tasks().wait())
        .await
        .expect("the reload task ends at shutdown");
    s.engine.shutdown(Duration::from_secs(5)).await;
}
