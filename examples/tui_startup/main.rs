//! A terminal UI that embeds speckit-hygiene at start-up and shows it live: the policy in
//! effect and when it was last reloaded, the next scheduled runs, the last job reports,
//! per-SPEC evidence against the limits as bars, and spawn metrics.
//!
//! ```text
//! cargo run --example tui_startup -- --config FILE [--log FILE]
//! ```
//!
//! Keys: arrows (or `j`/`k`), PgUp/PgDn, Home/End move through the SPECs, `s` changes
//! their order (state, size, name), Enter shows the selected SPEC's details, `c` runs a
//! cleanup dry run, `v` a vacuum (after `y` confirms it: it changes the database), `r`
//! reloads the policy, `?` lists the keys, `q` (or Esc, Ctrl-C) quits. Logs go to
//! `--log FILE`, or nowhere: nothing may draw over the UI.
//!
//! `main.rs` holds the state and what keys and events do; `view.rs` draws it;
//! `spec_list.rs` orders, selects and scrolls the SPECs.

#[path = "spec_list.rs"]
mod spec_list;
#[path = "view.rs"]
mod view;

use speckit_retention::EvidencePolicy;
use speckit_retention::RetentionPolicy;
use speckit_vacuum::VacuumPolicy;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Parser;
use crossterm::event::{Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, LineGauge, Paragraph, Wrap};
use ratatui::{DefaultTerminal, Frame};
use tokio::sync::{broadcast, mpsc};

use speckit_hygiene::embed::{EngineBuilder, EngineHandle, JobRecord, SpawnStats, StatsReport};
use speckit_hygiene::engine::cron_expr::{self, ScheduleTz};
use speckit_hygiene::engine::events::{JobOutcome, ReloadCause};
use speckit_hygiene::engine::{EngineEvent, PolicySnapshot, ReloadOutcome};
use speckit_retention::limits::human_bytes;

/// How many job reports the UI keeps.
const JOB_LINES: usize = 50;
/// How often evidence and spawn figures are measured again without a reason to.
const REFRESH_EVERY: Duration = Duration::from_secs(15);

/// Command line of the example.
#[derive(Debug, Parser)]
#[command(about = "A terminal UI embedding speckit-hygiene")]
pub struct Options {
    /// The policy file (speckit.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Write logs to this file (default: logs are dropped; they would draw over the UI).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
}

#[allow(dead_code)] // The tmux test includes this file and calls `run` itself.
fn main() -> ExitCode {
    // The engine runs dynamic plugins in host processes of this very program.
    speckit_engine::dynamic::serve_if_requested();
    match run(Options::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Starts the engine, then the UI, until the user quits.
pub fn run(options: Options) -> Result<()> {
    if let Some(path) = &options.log {
        init_logging(path)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async_main(options))
}

fn init_logging(path: &Path) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open log file {}", path.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

async fn async_main(options: Options) -> Result<()> {
    // The engine first, so a bad policy is reported on a normal terminal.
    let engine = EngineBuilder::new(&options.config)
        .start()
        .await
        .with_context(|| format!("cannot start the engine for {}", options.config.display()))?;
    let events = engine.subscribe();
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let (app, updates) = App::new(engine.clone());
    let outcome = app.run(&mut terminal, events, updates).await;
    ratatui::restore();
    // Normally done already in the UI (with a "shutting down" screen); idempotent.
    engine.shutdown().await;
    outcome
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    CleanupDryRun,
    /// Ask before the vacuum (it changes the database).
    AskVacuum,
    /// The answer to that question.
    ConfirmVacuum(bool),
    Reload,
    Select(spec_list::Move),
    CycleSort,
    ShowDetails,
    ShowHelp,
    /// Back from an overlay to the panels.
    Close,
    Quit,
}

/// What is drawn over the panels, and so what the keys mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overlay {
    None,
    Help,
    Details,
    ConfirmVacuum,
}

fn action_for(key: &crossterm::event::KeyEvent, overlay: Overlay) -> Option<Action> {
    use spec_list::Move;
    if key.kind != KeyEventKind::Press {
        return None;
    }
    if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
        return Some(Action::Quit);
    }
    match overlay {
        Overlay::ConfirmVacuum => match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => Some(Action::ConfirmVacuum(true)),
            KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => {
                Some(Action::ConfirmVacuum(false))
            }
            _ => None,
        },
        Overlay::Help | Overlay::Details => match key.code {
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') | KeyCode::Char('?') => {
                Some(Action::Close)
            }
            _ => None,
        },
        Overlay::None => match key.code {
            KeyCode::Char('c') => Some(Action::CleanupDryRun),
            KeyCode::Char('v') => Some(Action::AskVacuum),
            KeyCode::Char('r') => Some(Action::Reload),
            KeyCode::Char('s') => Some(Action::CycleSort),
            KeyCode::Char('?') => Some(Action::ShowHelp),
            KeyCode::Enter => Some(Action::ShowDetails),
            KeyCode::Up | KeyCode::Char('k') => Some(Action::Select(Move::Up)),
            KeyCode::Down | KeyCode::Char('j') => Some(Action::Select(Move::Down)),
            KeyCode::PageUp => Some(Action::Select(Move::PageUp)),
            KeyCode::PageDown => Some(Action::Select(Move::PageDown)),
            KeyCode::Home | KeyCode::Char('g') => Some(Action::Select(Move::First)),
            KeyCode::End | KeyCode::Char('G') => Some(Action::Select(Move::Last)),
            KeyCode::Char('q') | KeyCode::Esc => Some(Action::Quit),
            _ => None,
        },
    }
}

/// Results of background work, sent back to the UI loop.
enum Update {
    Evidence(Result<StatsReport, String>),
    Spawn(Result<SpawnStats, String>),
    History(Result<Vec<JobRecord>, String>),
    Reloaded(ReloadOutcome),
    JobNotRun { job: String, error: String },
}

/// A figure being measured in the background.
enum Measured<T> {
    Pending,
    Ready(T),
    Failed(String),
}

/// One line of the job reports panel.
struct JobLine {
    run_id: i64,
    at: Option<DateTime<Utc>>,
    job: String,
    trigger: String,
    outcome: String,
    duration_ms: Option<u64>,
    summary: String,
}

/// The latest reload: what the applied policy changed, and a rejection since, if any.
struct ReloadNote {
    /// Why the policy in effect was applied, and the keys it changed.
    applied: String,
    /// A reload rejected after it: when, and why (the policy in effect stayed).
    rejected: Option<(DateTime<Utc>, String)>,
}

struct App {
    engine: EngineHandle,
    policy: Arc<PolicySnapshot>,
    reload: ReloadNote,
    jobs: VecDeque<JobLine>,
    evidence: Measured<StatsReport>,
    spawn: Measured<SpawnStats>,
    last_batch: Option<String>,
    warnings: VecDeque<String>,
    status: String,
    updates: mpsc::UnboundedSender<Update>,
    evidence_in_flight: bool,
    evidence_stale: bool,
    /// The SPEC list's order, selection and scroll (scrolled while drawing).
    specs: RefCell<spec_list::SpecList>,
    /// Rows of the SPEC list at the last draw: a page for PgUp/PgDn.
    spec_rows: std::cell::Cell<usize>,
    overlay: Overlay,
}

impl App {
    /// The app, and where its background work reports back.
    fn new(engine: EngineHandle) -> (Self, mpsc::UnboundedReceiver<Update>) {
        let policy = engine.policy();
        let (updates, updates_rx) = mpsc::unbounded_channel();
        let app = Self {
            reload: ReloadNote {
                applied: "start-up".into(),
                rejected: None,
            },
            policy,
            engine,
            jobs: VecDeque::new(),
            evidence: Measured::Pending,
            spawn: Measured::Pending,
            last_batch: None,
            warnings: VecDeque::new(),
            status: "engine started".into(),
            updates,
            evidence_in_flight: false,
            evidence_stale: false,
            specs: RefCell::new(spec_list::SpecList::default()),
            spec_rows: std::cell::Cell::new(1),
            overlay: Overlay::None,
        };
        (app, updates_rx)
    }

    async fn run(
        mut self,
        terminal: &mut DefaultTerminal,
        mut events: broadcast::Receiver<EngineEvent>,
        mut updates: mpsc::UnboundedReceiver<Update>,
    ) -> Result<()> {
        let (mut keys, stop_keys) = spawn_key_reader();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // The first measurement starts below; the periodic ones after that.
        let mut refresh =
            tokio::time::interval_at(tokio::time::Instant::now() + REFRESH_EVERY, REFRESH_EVERY);
        self.load_history();
        self.refresh_spawn();
        let result = loop {
            if let Err(e) = terminal.draw(|frame| self.draw(frame)) {
                break Err(e).context("cannot draw the UI");
            }
            tokio::select! {
                key = keys.recv() => match key {
                    Some(Ok(Event::Key(key))) => match action_for(&key, self.overlay) {
                        Some(Action::Quit) => break Ok(()),
                        Some(action) => self.act(action),
                        None => {}
                    },
                    Some(Ok(_)) => {} // resize and the like: redrawn above
                    Some(Err(e)) => break Err(e).context("cannot read the keyboard"),
                    None => break Ok(()),
                },
                event = events.recv() => match event {
                    Ok(event) => self.on_engine_event(event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        self.status = format!("missed {missed} engine events; reloading job history");
                        self.load_history();
                    }
                    Err(broadcast::error::RecvError::Closed) => break Ok(()),
                },
                Some(update) = updates.recv() => self.on_update(update),
                _ = refresh.tick() => {
                    self.refresh_evidence();
                    self.refresh_spawn();
                }
                _ = tick.tick() => {} // redraw: next-run countdowns move
            }
        };
        stop_keys.store(true, Ordering::Relaxed);
        self.status = "shutting down: waiting for running jobs to reach a safe point".into();
        let _ = terminal.draw(|frame| self.draw(frame));
        self.engine.shutdown().await;
        result
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::CleanupDryRun => {
                self.run_job("cleanup", serde_json::json!({ "dry_run": true }))
            }
            Action::AskVacuum => self.overlay = Overlay::ConfirmVacuum,
            Action::ConfirmVacuum(yes) => {
                self.overlay = Overlay::None;
                if yes {
                    self.run_job("vacuum", serde_json::json!({}));
                } else {
                    self.status = "vacuum cancelled: nothing changed".into();
                }
            }
            Action::Select(step) => {
                if let Measured::Ready(report) = &self.evidence {
                    let mut list = self.specs.borrow_mut();
                    let ordered = list.ordered(&report.specs);
                    list.move_selection(&ordered, step, self.spec_rows.get());
                }
            }
            Action::CycleSort => {
                let mut list = self.specs.borrow_mut();
                list.cycle_sort();
                self.status = format!("SPECs sorted by {}", list.sort.label());
            }
            Action::ShowDetails => {
                if matches!(&self.evidence, Measured::Ready(r) if !r.specs.is_empty()) {
                    self.overlay = Overlay::Details;
                }
            }
            Action::ShowHelp => self.overlay = Overlay::Help,
            Action::Close => self.overlay = Overlay::None,
            Action::Reload => {
                self.status = "reloading the policy".into();
                let (engine, updates) = (self.engine.clone(), self.updates.clone());
                tokio::spawn(async move {
                    let _ = updates.send(Update::Reloaded(engine.reload().await));
                });
            }
            Action::Quit => {}
        }
    }

    /// Runs a job in the background; its start and report arrive as engine events.
    fn run_job(&mut self, job: &'static str, args: serde_json::Value) {
        self.status = format!("{job} requested");
        let (engine, updates) = (self.engine.clone(), self.updates.clone());
        tokio::spawn(async move {
            if let Err(e) = engine.run_job(job, args).await {
                let _ = updates.send(Update::JobNotRun {
                    job: job.to_string(),
                    error: e.to_string(),
                });
            }
        });
    }

    fn on_engine_event(&mut self, event: EngineEvent) {
        match event {
            EngineEvent::Reload { cause, outcome } => self.on_reload(cause, outcome),
            EngineEvent::JobStarted {
                job,
                run_id,
                trigger,
            } => {
                self.status = format!("{job} started ({})", trigger.label());
                self.upsert_job(JobLine {
                    run_id,
                    at: Some(Utc::now()),
                    job,
                    trigger: trigger.label().into(),
                    outcome: "running".into(),
                    duration_ms: None,
                    summary: String::new(),
                });
            }
            EngineEvent::JobFinished {
                job,
                run_id,
                outcome,
                report,
                error,
                duration_ms,
            } => {
                let outcome = outcome_label(&outcome);
                self.status = format!("{job} {outcome}");
                let summary = match (&report, error) {
                    (Some(r), _) => {
                        let mut text = r.summary.clone();
                        if !r.errors.is_empty() {
                            text.push_str(&format!(" [{} errors]", r.errors.len()));
                        }
                        if !r.warnings.is_empty() {
                            text.push_str(&format!(" [{} warnings]", r.warnings.len()));
                        }
                        text
                    }
                    (None, Some(error)) => error,
                    (None, None) => String::new(),
                };
                let (at, trigger) = self
                    .jobs
                    .iter()
                    .find(|l| l.run_id == run_id)
                    .map(|l| (l.at, l.trigger.clone()))
                    .unwrap_or((Some(Utc::now()), String::new()));
                self.upsert_job(JobLine {
                    run_id,
                    at,
                    job,
                    trigger,
                    outcome: outcome.into(),
                    duration_ms: Some(duration_ms),
                    summary,
                });
                // A job may have moved evidence or spawned agents.
                self.refresh_evidence();
                self.refresh_spawn();
            }
            EngineEvent::JobSkipped { job, reason } => {
                self.status = format!("{job} skipped: {reason}");
            }
            EngineEvent::Plugin { kind, data, .. } => match kind.as_str() {
                "limit_warning" => {
                    let message = data["message"].as_str().unwrap_or("limit crossed");
                    self.warnings.push_front(message.to_string());
                    self.warnings.truncate(5);
                }
                // The spawn plugin's event carries its batch figures as their type.
                "spawn_metrics" => {
                    if let Ok(batch) =
                        <speckit_spawn::BatchMetrics as serde::Deserialize>::deserialize(&data)
                    {
                        self.last_batch = Some(format!(
                            "last batch {}/{}: {} of {} agents ok in {:.1} ms",
                            batch.spec_id,
                            batch.stage,
                            batch.ok_count,
                            batch.agent_count,
                            batch.total_us as f64 / 1000.0
                        ));
                    }
                    self.refresh_spawn();
                }
                "progress" => {
                    if let Some(message) = data["message"].as_str() {
                        self.status = format!("{}: {message}", data["job"].as_str().unwrap_or(""));
                    }
                }
                _ => {}
            },
        }
    }

    fn on_reload(&mut self, cause: ReloadCause, outcome: ReloadOutcome) {
        let cause = match cause {
            ReloadCause::Startup => "start-up",
            ReloadCause::FileChanged => "file changed",
            ReloadCause::Signal => "signal",
            ReloadCause::Api => "key r",
        };
        match outcome {
            ReloadOutcome::Applied {
                generation,
                changed_keys,
            } => {
                self.policy = self.engine.policy();
                let changed = if changed_keys.is_empty() {
                    "no value changed".to_string()
                } else {
                    format!("changed {}", changed_keys.join(", "))
                };
                self.reload = ReloadNote {
                    applied: format!("{cause}; {changed}"),
                    rejected: None,
                };
                self.status = format!("policy generation {generation} applied");
                self.refresh_evidence();
            }
            ReloadOutcome::Rejected { error } => {
                // The loader lists each bad key on a line of its own.
                let error = error.lines().map(str::trim).collect::<Vec<_>>().join("; ");
                self.reload.rejected = Some((Utc::now(), format!("({cause}) {error}")));
                self.status = "reload rejected; the policy in effect stays".into();
            }
            ReloadOutcome::Unchanged => {
                self.status = format!("policy unchanged ({cause})");
            }
        }
    }

    fn on_update(&mut self, update: Update) {
        match update {
            Update::Evidence(result) => {
                self.evidence_in_flight = false;
                self.evidence = match result {
                    Ok(report) => Measured::Ready(report),
                    Err(e) => Measured::Failed(e),
                };
                if std::mem::take(&mut self.evidence_stale) {
                    self.refresh_evidence();
                }
            }
            Update::Spawn(result) => {
                self.spawn = match result {
                    Ok(stats) => Measured::Ready(stats),
                    Err(e) => Measured::Failed(e),
                }
            }
            Update::History(Ok(records)) => {
                for record in records.into_iter().rev() {
                    self.upsert_job(JobLine {
                        run_id: record.run_id,
                        at: record.started_at,
                        job: record.job.clone(),
                        trigger: record.trigger.clone(),
                        outcome: record.outcome.clone(),
                        duration_ms: record
                            .finished_at
                            .zip(record.started_at)
                            .map(|(f, s)| (f - s).num_milliseconds().max(0) as u64),
                        summary: record.summary().to_string(),
                    });
                }
            }
            Update::History(Err(e)) => self.status = format!("job history unavailable: {e}"),
            // The engine also sends the outcome as an event; only "unchanged" is shown here.
            Update::Reloaded(ReloadOutcome::Unchanged) => {
                self.status = "policy unchanged: the file is the same".into()
            }
            Update::Reloaded(_) => {}
            Update::JobNotRun { job, error } => self.status = format!("{job} not run: {error}"),
        }
    }

    /// Adds a job line, or updates the one with the same run (events and history overlap).
    fn upsert_job(&mut self, line: JobLine) {
        if let Some(existing) = self.jobs.iter_mut().find(|l| l.run_id == line.run_id) {
            *existing = line;
        } else {
            self.jobs.push_front(line);
            self.jobs.truncate(JOB_LINES);
        }
        self.jobs
            .make_contiguous()
            .sort_by_key(|l| std::cmp::Reverse(l.run_id));
    }

    fn load_history(&mut self) {
        let (engine, updates) = (self.engine.clone(), self.updates.clone());
        tokio::spawn(async move {
            let records = engine.recent_runs(JOB_LINES as u32).await;
            let _ = updates.send(Update::History(records.map_err(|e| e.to_string())));
        });
        self.refresh_evidence();
    }

    /// Measures evidence again; one walk at a time, a request during a walk runs after it.
    fn refresh_evidence(&mut self) {
        if self.evidence_in_flight {
            self.evidence_stale = true;
            return;
        }
        self.evidence_in_flight = true;
        let (engine, updates) = (self.engine.clone(), self.updates.clone());
        tokio::spawn(async move {
            let report = engine.evidence_usage().await;
            let _ = updates.send(Update::Evidence(report.map_err(|e| e.to_string())));
        });
    }

    fn refresh_spawn(&self) {
        let (engine, updates) = (self.engine.clone(), self.updates.clone());
        tokio::spawn(async move {
            let stats = engine.spawn_stats().await;
            let _ = updates.send(Update::Spawn(stats.map_err(|e| e.to_string())));
        });
    }
}

/// Reads the keyboard on a thread of its own (crossterm's reads block) until `stop` is set
/// or the UI is gone.
fn spawn_key_reader() -> (
    mpsc::UnboundedReceiver<std::io::Result<Event>>,
    Arc<AtomicBool>,
) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            match crossterm::event::poll(Duration::from_millis(100)) {
                Ok(false) => continue,
                Ok(true) => {
                    if sender.send(crossterm::event::read()).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = sender.send(Err(e));
                    return;
                }
            }
        }
    });
    (receiver, stop)
}

fn outcome_label(outcome: &JobOutcome) -> &'static str {
    match outcome {
        JobOutcome::Succeeded => "succeeded",
        JobOutcome::Failed => "failed",
        JobOutcome::Skipped => "skipped",
    }
}
