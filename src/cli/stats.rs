//! `stats` and `guard`: evidence sizes per SPEC against the limits, and whether automation
//! may start on a SPEC. Both read only the policy and the evidence tree: no database, no
//! engine start, so they are quick and safe to run at any time.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use super::stats_render::{prometheus, table, Colour};
use super::{engine_options, GlobalArgs, UsageError, EXIT_BLOCKED, EXIT_FAILED, EXIT_OK};
use speckit_engine::engine::{load_and_validate, storage_options};
use speckit_engine::{PluginRegistry, Policy, PolicySnapshot, Storage};
use speckit_retention::guard::{evidence_guard_planned, GuardVerdict};
use speckit_retention::limits::Verdict;
use speckit_retention::stats::{collect_with_trackers, Scope, StatsError, StatsReport};

/// How `stats` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsFormat {
    /// A table with one bar per SPEC, for people.
    Table,
    /// Every figure as JSON, for programs.
    Json,
    /// Prometheus text format, for node_exporter's textfile collector.
    Prometheus,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 every SPEC is within its limit (warnings are fine), \
    3 some SPEC is over its limit, 1 some entries could not be read (the totals are lower \
    bounds), 2 bad input (SPEC-ID, config, missing evidence root). With --format prometheus \
    the status is 0 whenever the metrics were written (verdicts and completeness are in \
    them), 2 on bad input.\n\
    For the textfile collector (node_exporter --collector.textfile.directory=dir), from cron:\n  \
    speckit-hygiene stats --format prometheus --output dir/evidence.prom\n\
    --output writes atomically whatever the verdict and keeps the verdict's exit status \
    (3 when a SPEC is over); --exit-zero exits 0 whatever the verdict."
)]
pub struct StatsArgs {
    /// Only this SPEC (its folders only; the root totals are not measured).
    #[arg(long, value_name = "SPEC-ID")]
    spec: Option<String>,
    /// Same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub(super) json: bool,
    #[arg(long, value_enum, default_value_t = StatsFormat::Table)]
    format: StatsFormat,
    /// Write the output to FILE (atomically: a temporary file renamed over it, whatever
    /// the verdict) instead of stdout; the exit status still gives the verdict.
    #[arg(long, value_name = "FILE")]
    output: Option<std::path::PathBuf>,
    /// Exit 0 whatever the verdict (2 on bad input still): for scripts that only want
    /// the data.
    #[arg(long)]
    exit_zero: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 allow or warn (the warning on stderr), 3 block (the \
    message, with what gets the SPEC under its limit, on stderr), 2 bad input (SPEC-ID, \
    config, missing evidence root), 1 the evidence could not be read."
)]
pub struct GuardArgs {
    /// The SPEC automation is about to start on.
    spec: String,
    /// Also print the verdict and its figures as JSON on stdout.
    #[arg(long)]
    pub(super) json: bool,
}

/// The policy, loaded and checked the way the engine would, without starting one.
pub(super) fn load_policy(global: &GlobalArgs) -> Result<PolicySnapshot> {
    let options = engine_options(global, super::Access::ReadOnly)?;
    let registry = PluginRegistry::new(speckit_hygiene::builtin_plugins())?;
    Ok(load_and_validate(&options, &registry)?)
}

/// A stats error as the command line reports it: bad input exits 2, naming where the
/// evidence root came from; anything else is a failure (exit 1).
fn stats_error(e: StatsError, snapshot: &PolicySnapshot) -> anyhow::Error {
    if !e.is_bad_input() {
        return anyhow::Error::new(e);
    }
    let message = match &e {
        StatsError::Layout(_) => {
            let origin = snapshot
                .origins
                .get("evidence.root")
                .map(|o| format!(", from {o}"))
                .unwrap_or_default();
            format!("{e} (evidence.root{origin})")
        }
        StatsError::InvalidSpec(_) => e.to_string(),
    };
    anyhow::Error::new(UsageError(message))
}

/// Measures on a blocking thread: a large tree is seconds of file-system calls.
async fn measure(snapshot: &PolicySnapshot, scope: Scope) -> Result<StatsReport> {
    let _spinner = super::progress::Spinner::new(format!(
        "measuring the evidence under {}",
        snapshot
            .policy
            .section::<speckit_retention::EvidencePolicy>()
            .root
            .display()
    ));
    let policy = snapshot.policy.clone();
    let measured = tokio::task::spawn_blocking(move || collect_with_trackers(&policy, &scope))
        .await
        .context("the evidence walk failed")?;
    measured.map_err(|e| stats_error(e, snapshot))
}

/// The guard, and for a block, what the retention plan says cleanup would free. The plan
/// needs the database: it is opened only for a block, and only when it exists (the guard
/// never creates it). Without it, or when it cannot be opened, the block points to
/// `cleanup --dry-run` instead.
fn guard_blocking(policy: &Policy, spec: &str) -> Result<GuardVerdict, StatsError> {
    let now = chrono::Utc::now();
    let verdict = evidence_guard_planned(policy, spec, None, now)?;
    if !verdict.is_blocked() || !policy.storage.database_path.is_file() {
        return Ok(verdict);
    }
    let storage = match Storage::open_read_only(storage_options(policy)) {
        Ok(storage) => storage,
        Err(e) => {
            tracing::warn!("cannot preview cleanup for the guard: {e}");
            return Ok(verdict);
        }
    };
    let verdict = evidence_guard_planned(policy, spec, Some(&storage), now);
    storage.close();
    verdict
}

pub async fn stats(global: &GlobalArgs, args: StatsArgs) -> Result<u8> {
    let snapshot = load_policy(global)?;
    let scope = match &args.spec {
        Some(spec) => Scope::spec(spec).map_err(|e| stats_error(e, &snapshot))?,
        None => Scope::All,
    };
    let report = measure(&snapshot, scope).await?;
    let format = if args.json {
        StatsFormat::Json
    } else {
        args.format
    };
    let text = match format {
        StatsFormat::Table if args.output.is_some() => table(&report, Colour::Plain),
        StatsFormat::Table => table(&report, colour_for_stdout()),
        StatsFormat::Json => {
            super::json::render("stats", true, None, &report, &report.warnings, &[])
        }
        StatsFormat::Prometheus => prometheus(&report),
    };
    match &args.output {
        Some(file) => speckit_retention::fsutil::write_atomic(file, text.as_bytes())
            .with_context(|| format!("writing {}", file.display()))?,
        None => print!("{text}"),
    }
    let verdict = if report.counts.block > 0 {
        EXIT_BLOCKED
    } else if !report.complete {
        EXIT_FAILED
    } else {
        EXIT_OK
    };
    Ok(if args.exit_zero {
        EXIT_OK
    } else if args.output.is_some() {
        // The file is written whatever the verdict: the status can tell it.
        verdict
    } else if format == StatsFormat::Prometheus {
        // The metrics carry the verdicts and `speckit_evidence_complete`; a non-zero exit
        // would stop `stats > f.tmp && mv f.tmp f` from publishing exactly when an alert
        // is due.
        EXIT_OK
    } else if report.counts.block > 0 {
        EXIT_BLOCKED
    } else if !report.complete {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

pub async fn guard(global: &GlobalArgs, args: GuardArgs) -> Result<u8> {
    let snapshot = load_policy(global)?;
    let policy = snapshot.policy.clone();
    let spec = args.spec.clone();
    let verdict = tokio::task::spawn_blocking(move || guard_blocking(&policy, &spec))
        .await
        .context("the evidence walk failed")?
        .map_err(|e| stats_error(e, &snapshot))?;
    if args.json {
        super::json::print_data("guard", &verdict);
    }
    if verdict.is_blocked() {
        eprintln!("{verdict}");
        return Ok(EXIT_BLOCKED);
    }
    if verdict.verdict() == Verdict::Warn {
        eprintln!("{verdict}");
    } else if !args.json {
        println!("{verdict}");
    }
    Ok(EXIT_OK)
}

/// Prints the stats table for a policy (the end of the `demo` pass).
pub async fn print_table_for(snapshot: &PolicySnapshot) -> Result<StatsReport> {
    let report = measure(snapshot, Scope::All).await?;
    print!("{}", table(&report, colour_for_stdout()));
    Ok(report)
}

/// Colour by `--color` (auto: only when stdout is a terminal and `NO_COLOR` is not set).
fn colour_for_stdout() -> Colour {
    if super::output::stdout_colour() {
        Colour::Ansi
    } else {
        Colour::Plain
    }
}
