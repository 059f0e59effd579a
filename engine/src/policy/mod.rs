//! The policy: every setting `speckit.toml` can hold, with its default, unit and checks.
//!
//! The engine's own sections are `[storage]`, `[schedule]` and `[plugins.<name>]`; every
//! other section belongs to the plugin that declares it ([`Section`]), and a section no
//! registered plugin declares is refused. Field names carry their unit (`_days`, `_mb`,
//! `_ms`, `_pages`). Every struct rejects unknown keys. `config/speckit.toml` documents each field; keep the two in step (a test
//! parses that file and compares it with [`Policy::default`]).

mod env;
mod load;
mod section;
mod validate;

pub use load::{
    load_policy, resolve_path, LoadError, Origin, PolicySnapshot, PolicySource, Problem,
};
pub use section::{
    JobSpec, PolicyShape, Section, SectionProblems, SectionSpec, SectionValue, Sections,
    ShapeConflict,
};
pub use validate::{validate, warnings};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::storage::Synchronous;

/// The engine's own top-level tables; every other one is a plugin's [`Section`].
pub const ENGINE_SECTIONS: [&str; 3] = ["storage", "schedule", "plugins"];

/// The whole policy.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Policy {
    pub storage: StoragePolicy,
    pub schedule: SchedulePolicy,
    /// Dynamic plugins by name: `[plugins.<name>]`.
    pub plugins: BTreeMap<String, DynamicPluginPolicy>,
    /// The plugins' sections (`[retention]`, `[vacuum]`, ...), each read through its type.
    #[serde(flatten)]
    pub sections: Sections,
}

/// The engine's own sections as the loader extracts them (the plugins' are extracted
/// one by one through their types).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub(crate) struct EngineSections {
    pub storage: StoragePolicy,
    pub schedule: SchedulePolicy,
    pub plugins: BTreeMap<String, DynamicPluginPolicy>,
}

/// `[storage]`: the consensus database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoragePolicy {
    /// Path of the consensus database; `~` expands to the home folder, a relative path
    /// resolves against the config file's folder. Changing it needs a restart.
    pub database_path: PathBuf,
    /// `normal` (survives a crash) or `full` (survives power loss too).
    pub synchronous: Synchronous,
    /// How long one write attempt waits for another process's lock, in milliseconds.
    pub busy_timeout_ms: u64,
    /// Attempts for a write blocked by another process before it fails.
    pub write_retry_attempts: u32,
    /// Size the WAL file is truncated to after checkpoints, in bytes.
    pub journal_size_limit_bytes: i64,
}

impl Default for StoragePolicy {
    fn default() -> Self {
        Self {
            database_path: PathBuf::from("~/.code/consensus_artifacts.db"),
            synchronous: Synchronous::Normal,
            busy_timeout_ms: 5_000,
            write_retry_attempts: 8,
            journal_size_limit_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[schedule]`: when jobs run. Besides the settings below, each key is a job's name (one
/// a plugin runs: `cleanup`, `vacuum`, ...) set to a cron expression (5-field crontab, or
/// the 6-7 field form with seconds first) or `"off"`; a job not named runs on its
/// plugin's default schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulePolicy {
    /// IANA time zone the expressions are read in (`UTC`, `Europe/Berlin`, or `local`).
    pub timezone: String,
    /// Run a job missed while the engine was down once at start-up.
    pub catch_up: bool,
    /// How long a job's lease lasts before another engine may take it over, in seconds.
    pub lease_seconds: u64,
    /// How long `run` waits for running jobs at shutdown, in seconds.
    pub shutdown_grace_seconds: u64,
    /// Finished job runs older than this many days are deleted from `hygiene_job_runs`
    /// after each run (the engine's footprint in the host's database stays bounded).
    pub job_history_days: u32,
    /// At most this many job runs are kept; older finished ones are deleted after each run.
    pub job_history_max_rows: u32,
    /// Every job's schedule: the plugins' defaults with the file's `<job> = "..."` over
    /// them (the loader fills and checks this; unknown job names are refused).
    #[serde(flatten, skip_deserializing)]
    pub jobs: BTreeMap<String, String>,
}

impl Default for SchedulePolicy {
    fn default() -> Self {
        Self {
            timezone: "UTC".into(),
            catch_up: true,
            lease_seconds: 300,
            shutdown_grace_seconds: 30,
            job_history_days: 90,
            job_history_max_rows: 10_000,
            jobs: BTreeMap::new(),
        }
    }
}

impl SchedulePolicy {
    /// The settings' names: every other key of `[schedule]` names a job.
    pub const SETTINGS: [&'static str; 6] = [
        "timezone",
        "catch_up",
        "lease_seconds",
        "shutdown_grace_seconds",
        "job_history_days",
        "job_history_max_rows",
    ];

    /// Sets a job's schedule (a cron expression or `"off"`).
    pub fn set_job(&mut self, job: &str, expression: &str) {
        self.jobs.insert(job.to_string(), expression.to_string());
    }
}

/// `[plugins.<name>]`: a plugin loaded from a shared library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicPluginPolicy {
    /// The shared library, or a folder holding exactly one; relative to the config file.
    pub path: PathBuf,
    /// When its job runs (cron), or `"off"` to run it on demand only.
    #[serde(default = "off")]
    pub schedule: String,
    /// A call into the plugin that takes longer than this many milliseconds fails (its
    /// host process is killed).
    #[serde(default = "default_plugin_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Memory the plugin's host process may take (data and private writable mappings,
    /// `RLIMIT_DATA`), in MiB; beyond it an allocation fails and the call with it. 0: no
    /// limit.
    #[serde(default = "default_plugin_memory_limit_mib")]
    pub memory_limit_mib: u64,
    /// The plugin's own settings, validated by the plugin.
    #[serde(default)]
    pub config: toml::Table,
}

fn off() -> String {
    "off".into()
}

fn default_plugin_call_timeout_ms() -> u64 {
    60_000
}

fn default_plugin_memory_limit_mib() -> u64 {
    1024
}

/// Whether a schedule expression means "never".
pub fn is_off(expression: &str) -> bool {
    let e = expression.trim();
    e.is_empty() || e.eq_ignore_ascii_case("off")
}

impl Policy {
    /// Section `T` (see [`Sections::get`]).
    pub fn section<T: Section>(&self) -> std::sync::Arc<T> {
        self.sections.get::<T>()
    }

    /// Every job with a schedule: plugins' jobs (`[schedule]` over their defaults) and
    /// dynamic plugins' jobs (named after the plugin). Disabled (`"off"`) ones are left out.
    pub fn scheduled_jobs(&self) -> Vec<(String, String)> {
        let mut jobs: Vec<(String, String)> = self
            .schedule
            .jobs
            .iter()
            .filter(|(_, e)| !is_off(e))
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect();
        for (name, plugin) in &self.plugins {
            if !is_off(&plugin.schedule) {
                jobs.push((name.clone(), plugin.schedule.clone()));
            }
        }
        jobs
    }
}

/// Dotted leaf keys of a serialized policy.
pub fn leaf_keys_of(value: &serde_json::Value, out: &mut Vec<String>) {
    load::leaf_keys(value, String::new(), out);
}
