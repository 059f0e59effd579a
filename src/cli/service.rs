//! `service systemd` and `service cron`: running `run` as a service, written for this
//! repository's config and this binary (absolute paths, quoted for systemd or the shell),
//! so what a user pastes is what was checked.
//!
//! The systemd unit is a user unit running the scheduler (`run`): SIGHUP reloads the
//! policy, SIGTERM stops it after running jobs reach a safe point (within the policy's
//! `shutdown_grace_seconds`, which the unit's stop timeout leaves room for). The cron line
//! is for machines without systemd: the scheduled jobs once a day, quiet unless something
//! fails (cron mails what a job prints).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

use super::{ConfigChoice, GlobalArgs, UsageError, EXIT_OK};

#[derive(Debug, Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    kind: ServiceKind,
}

#[derive(Debug, Subcommand)]
enum ServiceKind {
    /// A systemd user unit running the scheduler for this config (save it, then enable it).
    Systemd,
    /// A crontab line running the scheduled jobs once a day at `--at` (HH:MM).
    Cron {
        /// When the jobs run each day, local time.
        #[arg(long, default_value = "03:15", value_name = "HH:MM")]
        at: String,
    },
}

pub fn service(global: &GlobalArgs, args: ServiceArgs) -> Result<u8> {
    let target = Target::find(global)?;
    match args.kind {
        ServiceKind::Systemd => print!("{}", systemd_unit(&target)),
        ServiceKind::Cron { at } => print!("{}", cron_line(&target, &at)?),
    }
    Ok(EXIT_OK)
}

/// What a service runs: this binary on this config, in the config's folder.
struct Target {
    exe: PathBuf,
    config: PathBuf,
    dir: PathBuf,
    grace_seconds: u64,
}

impl Target {
    fn find(global: &GlobalArgs) -> Result<Self> {
        let choice = ConfigChoice::of(global);
        if choice.is_missing_default() {
            anyhow::bail!(UsageError(format!(
                "no config file: {} does not exist; a service runs on a speckit.toml (run `speckit-hygiene init`, or pass --config FILE)",
                std::path::absolute(&choice.path)
                    .unwrap_or(choice.path.clone())
                    .display()
            )));
        }
        // The policy must load: a service on a broken file would fail at every start.
        let snapshot = super::stats::load_policy(global)?;
        let config = std::fs::canonicalize(&snapshot.source.path)
            .with_context(|| format!("cannot resolve {}", snapshot.source.path.display()))?;
        let exe = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .context("cannot find this program's own path")?;
        let dir = config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        Ok(Self {
            exe,
            config,
            dir,
            grace_seconds: snapshot.policy.schedule.shutdown_grace_seconds,
        })
    }

    /// The unit's name: `speckit-hygiene-<folder>`.
    fn unit_name(&self) -> String {
        let folder = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        let safe: String = folder
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("speckit-hygiene-{safe}")
    }
}

fn systemd_unit(t: &Target) -> String {
    let name = t.unit_name();
    format!(
        "# A systemd user unit for {config}.
# Save as ~/.config/systemd/user/{name}.service, then:
#   systemctl --user daemon-reload && systemctl --user enable --now {name}
#   journalctl --user -u {name}   (its logs)
[Unit]
Description=speckit-hygiene for {description}

[Service]
Type=exec
WorkingDirectory={dir}
ExecStart={exe} --config {config_arg} run
# SIGHUP reloads the policy; SIGTERM lets running jobs reach a safe point first.
ExecReload=/bin/kill -HUP $MAINPID
TimeoutStopSec={stop}
Restart=on-failure
RestartSec=30

[Install]
WantedBy=default.target
",
        config = t.config.display(),
        description = systemd_escape(&t.dir.display().to_string()),
        // A path setting takes the rest of the line, spaces included, unquoted.
        dir = systemd_escape(&t.dir.display().to_string()),
        exe = systemd_quote(&t.exe.display().to_string()),
        config_arg = systemd_quote(&t.config.display().to_string()),
        stop = t.grace_seconds + 15,
    )
}

fn cron_line(t: &Target, at: &str) -> Result<String> {
    let (hour, minute) = parse_time(at)?;
    Ok(format!(
        "# Runs the scheduled jobs of {config} once a day. Their reports are in
# `speckit-hygiene jobs`; only errors reach stderr, so cron mails only what fails.
# Add it with `crontab -e`.
{minute} {hour} * * * cd {dir} && {exe} --config {config_arg} -q run --once >/dev/null
",
        config = t.config.display(),
        dir = shell_quote(&t.dir.display().to_string()),
        exe = shell_quote(&t.exe.display().to_string()),
        config_arg = shell_quote(&t.config.display().to_string()),
    ))
}

fn parse_time(at: &str) -> Result<(u32, u32)> {
    let bad = || {
        UsageError(format!(
            "--at {at:?}: not a time of day HH:MM (00:00 to 23:59)"
        ))
    };
    let (h, m) = at.split_once(':').ok_or_else(bad)?;
    let (hour, minute): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if hour > 23 || minute > 59 {
        return Err(bad().into());
    }
    Ok((hour, minute))
}

/// A word for the shell: single-quoted, `'` written as `'\''`.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Text in a unit file: `%` is a specifier and `$` a variable there.
fn systemd_escape(text: &str) -> String {
    text.replace('%', "%%").replace('$', "$$")
}

/// A word of a systemd command line: double-quoted, `\` and `"` escaped.
fn systemd_quote(word: &str) -> String {
    let escaped = systemd_escape(word)
        .replace('\\', r"\\")
        .replace('"', "\\\"");
    format!("\"{escaped}\"")
}
