//! Argument parsing and dispatch; one module per command group.

mod archives;
mod check;
mod cleanup;
mod demo;
mod docs;
mod init;
mod jobs;
pub mod json;
pub mod output;
mod progress;
mod run;
mod service;
mod spawn;
mod stats;
mod stats_render;
mod targets;
mod vacuum;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use speckit_engine::engine::JobRun;
use speckit_engine::events::JobOutcome;
use speckit_engine::{Engine, EngineError, EngineOptions, JobErrorKind, JobTrigger};

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_BLOCKED: u8 = 3;
/// Stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Keeps a spec-kit consensus database and evidence repository healthy.
#[derive(Debug, Parser)]
#[command(name = "speckit-hygiene", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// The policy file [default: $SPECKIT_CONFIG, else ./speckit.toml].
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More logging on stderr (repeat for more); RUST_LOG overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors on stderr: no warnings, no progress (data on stdout is unchanged).
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// When output and logs carry colour: auto (on a terminal, unless NO_COLOR is set),
    /// always, never.
    #[arg(long, global = true, value_enum, default_value_t = output::ColorChoice::Auto, value_name = "WHEN")]
    pub color: output::ColorChoice,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented speckit.toml for this repository: finds the evidence root and the
    /// SPEC trackers, and puts the database where you choose.
    Init(init::InitArgs),
    /// Run the scheduler and config watcher until SIGINT/SIGTERM.
    Run(run::RunArgs),
    /// Validate the policy and what it points at (evidence root, trackers, database folder,
    /// plugins), and print it with where each value came from.
    Check(check::CheckArgs),
    /// List compiled-in and loaded plugins, with versions and load errors.
    Plugins(check::PluginsArgs),
    /// Show recent job runs from the database.
    Jobs(jobs::JobsArgs),
    /// Create an example workspace in a temporary folder and run one full pass on it.
    Demo(demo::DemoArgs),
    /// Shrink the consensus database (incremental vacuum, migrating to it once if needed).
    Vacuum(vacuum::VacuumArgs),
    /// Archive old evidence of inactive SPECs and purge old archives.
    Cleanup(cleanup::CleanupArgs),
    /// Put a SPEC's archived files and database rows back (fetching offloaded archives).
    Restore(cleanup::RestoreArgs),
    /// List every recorded archive and where it is: local, remote (offloaded), both,
    /// missing or purged.
    Archives(archives::ArchivesArgs),
    /// Evidence sizes per SPEC against the limits.
    Stats(stats::StatsArgs),
    /// Whether automation may start on a SPEC (exit 0 allow/warn, 3 block).
    Guard(stats::GuardArgs),
    /// Start a stage's agents in parallel, or show spawn metrics (`spawn stats`).
    Spawn(spawn::SpawnArgs),
    /// Write a shell completion script to stdout (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Write the man page (roff) to stdout.
    Man(docs::ManArgs),
    /// Write a systemd user unit or a crontab line running the jobs for this config.
    Service(service::ServiceArgs),
}

/// Logs on stderr: `-q` errors only, default warnings, `-v` info, `-vv` debug; `RUST_LOG`
/// overrides. Colour by `--color` (auto: only on a terminal, so logs in files and pipes
/// stay plain text).
pub fn init_tracing(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    output::init(global.color, global.quiet);
    let default = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = output::stderr_colour();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

impl Command {
    /// The command's name, as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Check(_) => "check",
            Command::Plugins(_) => "plugins",
            Command::Jobs(_) => "jobs",
            Command::Demo(_) => "demo",
            Command::Vacuum(_) => "vacuum",
            Command::Cleanup(_) => "cleanup",
            Command::Restore(_) => "restore",
            Command::Stats(_) => "stats",
            Command::Guard(_) => "guard",
            Command::Spawn(_) => "spawn",
            Command::Init(_) => "init",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
            Command::Service(_) => "service",
            Command::Archives(_) => "archives",
        }
    }

    /// The command's name in a JSON envelope, when it was asked for `--json`.
    fn json_output(&self) -> Option<&'static str> {
        match self {
            Command::Check(a) if a.json => Some("check"),
            Command::Plugins(a) if a.json => Some("plugins"),
            Command::Jobs(a) if a.json => Some("jobs"),
            Command::Run(a) if a.json => Some("run"),
            Command::Vacuum(a) if a.json => Some("vacuum"),
            Command::Cleanup(a) if a.json => Some("cleanup"),
            Command::Restore(a) if a.json => Some("restore"),
            Command::Stats(a) if a.json => Some("stats"),
            Command::Guard(a) if a.json => Some("guard"),
            Command::Archives(a) if a.json => Some("archives"),
            Command::Spawn(a) => match &a.command {
                Some(spawn::SpawnCommand::Stats { json: true }) => Some("spawn stats"),
                None if a.json => Some("spawn"),
                _ => None,
            },
            _ => None,
        }
    }
}

pub async fn dispatch(cli: Cli) -> ExitCode {
    let global = cli.global;
    let json_output = cli.command.json_output();
    let command_name = cli.command.name();
    let result = match cli.command {
        Command::Init(a) => init::init(&global, a),
        Command::Run(a) => run::run(&global, a).await,
        Command::Check(a) => check::check(&global, a),
        Command::Plugins(a) => check::plugins(&global, a).await,
        Command::Jobs(a) => jobs::jobs(&global, a).await,
        Command::Demo(a) => demo::demo(&global, a).await,
        Command::Vacuum(a) => vacuum::vacuum(&global, a).await,
        Command::Cleanup(a) => cleanup::cleanup(&global, a).await,
        Command::Restore(a) => cleanup::restore(&global, a).await,
        Command::Archives(a) => archives::archives(&global, a).await,
        Command::Stats(a) => stats::stats(&global, a).await,
        Command::Guard(a) => stats::guard(&global, a).await,
        Command::Spawn(a) => spawn::spawn(&global, a).await,
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
        Command::Service(a) => service::service(&global, a),
    };
    match result {
        Ok(_) if progress::was_interrupted() => {
            eprintln!("{}", progress::interrupted_note(command_name));
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let usage = e
                .downcast_ref::<EngineError>()
                .map(EngineError::is_usage)
                .unwrap_or(false)
                || e.downcast_ref::<UsageError>().is_some();
            // Asked for JSON: the error is in the envelope on stdout, said once.
            match json_output {
                Some(command) => {
                    let kind = if usage { "usage" } else { "failed" };
                    json::print_error(command, kind, &format!("{e:#}"));
                }
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(if usage { EXIT_USAGE } else { EXIT_FAILED })
        }
    }
}

/// A mistake in the command line's input (exit status 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// How a command uses the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The command changes the database (creating it if needed): `run`, real jobs.
    ReadWrite,
    /// The command only reports or plans (dry runs, `jobs`, `plugins`, `spawn stats`): the
    /// database is opened read-only, and nothing is created when it does not exist.
    ReadOnly,
}

/// The config file a command reads, and whether the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChoice {
    pub path: PathBuf,
    /// Named by `--config` or `$SPECKIT_CONFIG` (it must exist), rather than the default
    /// `./speckit.toml` (which may be missing: defaults apply to reading commands).
    pub named: bool,
}

impl ConfigChoice {
    /// `--config`, else `$SPECKIT_CONFIG`, else `./speckit.toml`.
    pub fn of(global: &GlobalArgs) -> Self {
        let (path, named) = match (&global.config, std::env::var_os("SPECKIT_CONFIG")) {
            (Some(path), _) => (path.clone(), true),
            (None, Some(env)) if !env.is_empty() => (PathBuf::from(env), true),
            _ => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        Self { path, named }
    }

    /// The default file, not named and not there: the policy is the built-in defaults.
    /// (Anything else at that name, a folder say, is for the loader to report.)
    pub fn is_missing_default(&self) -> bool {
        !self.named
            && matches!(std::fs::symlink_metadata(&self.path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The config file read when neither `--config` nor `$SPECKIT_CONFIG` names one.
pub const DEFAULT_CONFIG: &str = "speckit.toml";

/// Engine options for a command. A command that writes refuses to run on the defaults
/// (no config file at all): they point at the host's database, shared by every repository
/// on the machine, and at an evidence root that may not be this repository's.
pub fn engine_options(global: &GlobalArgs, access: Access) -> Result<EngineOptions> {
    let choice = ConfigChoice::of(global);
    if access == Access::ReadWrite && choice.is_missing_default() {
        anyhow::bail!(UsageError(no_config_message(&choice.path)));
    }
    let mut options = EngineOptions::new(choice.path);
    options.require_config_file = choice.named;
    options.read_only = access == Access::ReadOnly;
    Ok(options)
}

/// Why a writing command did not start without a config file, and the two ways on.
fn no_config_message(path: &std::path::Path) -> String {
    format!(
        "no config file: {} does not exist, and neither --config nor $SPECKIT_CONFIG names \
         one. This command writes (the database, the evidence tree), so it does not run on \
         the defaults, which point at the host's shared ~/.code/consensus_artifacts.db; \
         nothing was done. Run `speckit-hygiene init` to write a speckit.toml for this \
         repository, or pass `--config FILE`.",
        std::path::absolute(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
    )
}

/// Starts an engine (no background tasks) with the compiled-in plugins.
pub async fn start_engine(global: &GlobalArgs, access: Access) -> Result<Engine> {
    let options = engine_options(global, access)?;
    Ok(Engine::start(options, speckit_hygiene::builtin_plugins()).await?)
}

/// Runs one job now and returns its record.
/// Runs a job by hand with its typed options (`CleanupOptions`, `VacuumOptions`, ...).
pub async fn run_job(
    engine: &Engine,
    job: &str,
    options: &impl serde::Serialize,
) -> Result<JobRun> {
    let args = serde_json::to_value(options)?;
    // On a terminal: its progress on stderr; Ctrl-C stops it at its next safe point.
    let _watch = progress::watch(engine, job);
    Ok(engine.run_job(job, JobTrigger::Manual, args).await?)
}

/// Prints a job's result (its data as JSON, or its summary, warnings and errors) and
/// returns the exit status.
pub fn print_job(run: &JobRun, json: bool) -> u8 {
    if json {
        json::print_job(&run.job, run, None);
    } else {
        // The summary is the result (stdout); warnings and errors are diagnostics (stderr).
        if let Some(report) = &run.report {
            println!("{}", report.summary);
            for w in &report.warnings {
                output::warn(w);
            }
            for e in &report.errors {
                eprintln!("error: {e}");
            }
        }
        if let Some(error) = &run.error {
            eprintln!("error: job {} failed: {error}", run.job);
        }
    }
    exit_status(run)
}

/// A run's exit status: 2 when its options were refused (a usage error, decided by the
/// error's kind from the plugin), 1 when it failed, else 0.
pub fn exit_status(run: &JobRun) -> u8 {
    match (&run.outcome, run.error_kind) {
        (JobOutcome::Failed, Some(JobErrorKind::InvalidOptions)) => EXIT_USAGE,
        (JobOutcome::Failed, Some(JobErrorKind::Refused)) => EXIT_BLOCKED,
        (JobOutcome::Failed, _) => EXIT_FAILED,
        (JobOutcome::Succeeded | JobOutcome::Skipped, _) => EXIT_OK,
    }
}
