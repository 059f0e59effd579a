//! Long work made visible and stoppable: while a job runs, its `progress` events drawn on
//! stderr (a bar when it counts its work, a spinner with its last message otherwise;
//! `indicatif`, drawn only on a terminal and never with `-q`), and Ctrl-C or SIGTERM
//! asking the job to stop at its next safe point instead of killing it mid-step.
//!
//! What a stopped job did is in its report; [`interrupted_note`] says so and that a rerun
//! takes up the rest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use speckit_engine::events::{EngineEvent, Progress, PROGRESS_EVENT};
use speckit_engine::Engine;
use tokio::sync::broadcast;

/// Set once Ctrl-C or SIGTERM asked the running job to stop.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn was_interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// What to tell the user after an interrupted job.
pub fn interrupted_note(job: &str) -> String {
    format!(
        "interrupted: {job} stopped at a safe point (nothing is left half done); the report above says what it did; run it again to do the rest"
    )
}

/// Drawing and signal handling for one job run; stopped when dropped.
pub struct JobWatch {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts showing `job`'s progress and routing Ctrl-C/SIGTERM to the engine's cancellation.
pub fn watch(engine: &Engine, job: &str) -> JobWatch {
    let bar = new_bar();
    let draw = tokio::spawn(draw_progress(
        engine.events().subscribe(),
        job.to_string(),
        bar,
    ));
    let stop = tokio::spawn(cancel_on_signal(engine.shutdown_token().clone()));
    JobWatch {
        tasks: vec![draw, stop],
    }
}

fn new_bar() -> ProgressBar {
    let quiet = super::output::quiet();
    let bar = ProgressBar::with_draw_target(
        None,
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            // indicatif draws to a terminal only: piped stderr stays free of it.
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(spinner_style());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A spinner with `message` on stderr for work that cannot count itself (a walk of the
/// evidence tree); cleared when dropped. Drawn only on a terminal and never with `-q`.
pub struct Spinner(ProgressBar);

impl Spinner {
    pub fn new(message: impl Into<String>) -> Self {
        let bar = new_bar();
        bar.set_message(message.into());
        Self(bar)
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

async fn draw_progress(
    mut events: broadcast::Receiver<EngineEvent>,
    job: String,
    bar: ProgressBar,
) {
    loop {
        match events.recv().await {
            Ok(EngineEvent::Plugin { kind, data, .. }) if kind == PROGRESS_EVENT => {
                let Ok(progress) = serde_json::from_value::<Progress>(data) else {
                    continue;
                };
                if progress.job != job {
                    continue;
                }
                show(&bar, &progress);
            }
            Ok(EngineEvent::JobFinished { job: finished, .. }) if finished == job => break,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    bar.finish_and_clear();
}

fn show(bar: &ProgressBar, progress: &Progress) {
    match (progress.done, progress.total) {
        (Some(done), Some(total)) => {
            if bar.length() != Some(total) {
                bar.set_style(bar_style());
                bar.set_length(total);
            }
            bar.set_position(done);
            bar.set_message(progress.unit.clone().unwrap_or_default());
        }
        _ => bar.set_message(progress.message.clone()),
    }
}

async fn cancel_on_signal(token: tokio_util::sync::CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            stop(&token);
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stop(&token);
}

fn stop(token: &tokio_util::sync::CancellationToken) {
    INTERRUPTED.store(true, Ordering::Relaxed);
    eprintln!("stopping at the next safe point (Ctrl-C again does not hurry it)...");
    token.cancel();
}
