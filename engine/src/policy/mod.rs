//! The policy: every setting `speckit.toml` can hold, with its default, unit and checks.
//!
//! Field names carry their unit (`_days`, `_mb`, `_ms`, `_pages`). Every struct rejects
//! unknown keys. `config/speckit.toml` documents each field; keep the two in step (a test
//! parses that file and compares it with [`Policy::default`]).

mod env;
mod load;
mod validate;

pub use load::{load_policy, LoadError, Origin, PolicySnapshot, PolicySource, Problem};
pub use validate::{validate, warnings};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::storage::Synchronous;

/// The whole policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub storage: StoragePolicy,
    pub evidence: EvidencePolicy,
    pub retention: RetentionPolicy,
    pub vacuum: VacuumPolicy,
    pub spawn: SpawnPolicy,
    pub schedule: SchedulePolicy,
    /// Dynamic plugins by name: `[plugins.<name>]`.
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

/// What to do with entries of the evidence root that belong to no SPEC (top-level files,
/// `archive/`, `costs/`, `.locks/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonSpecEntries {
    /// Leave them alone (never archived or deleted); still counted in the root's total.
    Ignore,
}

/// `[evidence]`: where evidence lives and how large it may grow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvidencePolicy {
    /// The evidence root holding `commands/<SPEC-ID>/` and `consensus/<SPEC-ID>/`; relative
    /// paths resolve against the config file's folder.
    pub root: PathBuf,
    /// SPEC trackers (Markdown tables) that say which SPECs are active.
    pub tracker_paths: Vec<PathBuf>,
    /// Per SPEC (commands and consensus together), warn above this many MiB.
    pub warn_mb: f64,
    /// Per SPEC, block automation above this many MiB.
    pub limit_mb: f64,
    /// Soft limit for the whole root, in MiB: a warning only.
    pub root_warn_mb: f64,
    /// Soft limit for a single file, in MiB: a warning only.
    pub file_warn_mb: f64,
    pub non_spec_entries: NonSpecEntries,
}

impl Default for EvidencePolicy {
    fn default() -> Self {
        Self {
            root: PathBuf::from("docs/SPEC-OPS-004-integrated-coder-hooks/evidence"),
            tracker_paths: vec![PathBuf::from("SPEC.md")],
            warn_mb: 40.0,
            limit_mb: 50.0,
            root_warn_mb: 500.0,
            file_warn_mb: 5.0,
            non_spec_entries: NonSpecEntries::Ignore,
        }
    }
}

/// What to do with a SPEC that has evidence but no row in any tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UntrackedSpecs {
    /// Treat as active: never archived.
    Protect,
    /// Treat as inactive: archived by age like a finished SPEC.
    Archive,
}

/// `[retention]`: archiving and purging evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionPolicy {
    /// Evidence of inactive SPECs older than this many days is archived.
    pub archive_after_days: u32,
    /// Archives older than this many days are deleted. Must be above `archive_after_days`.
    pub purge_after_days: u32,
    /// Tracker statuses (case and `**` insensitive) whose SPECs are never touched. A status
    /// that starts with one of them (`Blocked (waiting on infra)`) is active too.
    pub active_statuses: Vec<String>,
    /// Tracker statuses (compared like `active_statuses`, but whole: `Done (reopened)` is
    /// not `Done`) of finished SPECs. Only a SPEC every tracker row of which gives one of
    /// these is archived; a status in neither list, or rows that disagree, protect the
    /// SPEC and are reported. Empty: no SPEC is archived by status.
    pub finished_statuses: Vec<String>,
    pub untracked_specs: UntrackedSpecs,
    /// Keep the newest `*_synthesis.json` per SPEC and stage uncompressed.
    pub keep_latest_synthesis: bool,
    /// Also archive and delete database rows of inactive SPECs older than the archive age.
    pub archive_database_rows: bool,
    /// Guards what cannot be undone, or looks like an accident; without `--force` a plan
    /// is refused (nothing changed) when it purges more than this fraction (0-1] of all
    /// archives (a purge is the only irreversible removal), archives more than this
    /// fraction of all evidence files while no evidence file was modified within
    /// `archive_after_days` (clock jumped forward), or archives more than this fraction of
    /// the SPECs the previous cleanup protected (tracker accident). A large archive run
    /// alone, such as a first cleanup, is allowed: every file is in a verified archive and
    /// `restore` brings it back. `1.0` turns the guard off.
    pub max_removal_fraction: f64,
    /// zstd level for archives (1-19).
    pub zstd_level: i32,
    /// Every cleanup checks each recorded archive's size; a real run also re-reads and
    /// hashes the archives last verified more than this many days ago (at most 36500),
    /// so bit rot is found while the evidence can still be recovered from a backup.
    /// `0`: sizes only, never re-hashed.
    pub verify_archive_hashes_every_days: u32,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            archive_after_days: 30,
            purge_after_days: 90,
            active_statuses: ["Backlog", "In Progress", "In Review", "Blocked"]
                .map(String::from)
                .to_vec(),
            finished_statuses: [
                "Done",
                "Complete",
                "Completed",
                "Removed",
                "Rejected",
                "Superseded",
                "Archived",
            ]
            .map(String::from)
            .to_vec(),
            untracked_specs: UntrackedSpecs::Protect,
            keep_latest_synthesis: true,
            archive_database_rows: true,
            max_removal_fraction: 0.5,
            zstd_level: 3,
            verify_archive_hashes_every_days: 30,
        }
    }
}

/// `[vacuum]`: keeping the database small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VacuumPolicy {
    /// Run an incremental vacuum when `freelist_count / page_count` reaches this (0-1].
    pub free_fraction_threshold: f64,
    /// Pages freed per step; writers wait at most one step.
    pub chunk_pages: u32,
    /// Switch an `auto_vacuum = NONE` database to INCREMENTAL with one full VACUUM.
    pub migrate_to_incremental: bool,
    /// The largest share (0-1] of the time the vacuum holds the write lock: after a chunk
    /// that took T it pauses T * (1 - share) / share, so writers in other processes (which
    /// poll for the lock) get in between chunks. 1 means no pause.
    pub lock_time_fraction: f64,
}

impl Default for VacuumPolicy {
    fn default() -> Self {
        Self {
            free_fraction_threshold: 0.1,
            chunk_pages: 256,
            migrate_to_incremental: true,
            lock_time_fraction: 0.5,
        }
    }
}

/// How the engine knows an agent process is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgentReadiness {
    /// Ready once the process has started.
    #[default]
    Started,
    /// Ready once the process prints this line on stdout.
    Line(String),
}

/// `[[spawn.agents]]`: one agent a stage can start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPolicy {
    pub name: String,
    pub command: String,
    /// Placeholders: `{prompt_file}`, `{spec_id}`, `{stage}`, `{output_file}`.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working folder; relative paths resolve against the config file's folder.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// The agent is killed if it runs longer than this many milliseconds.
    #[serde(default = "default_agent_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub readiness: AgentReadiness,
}

fn default_agent_timeout_ms() -> u64 {
    600_000
}

/// `[spawn]`: starting a stage's agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpawnPolicy {
    /// Agents initialised at once; 1 gives the sequential baseline.
    pub max_concurrency: u32,
    /// An agent not running (and ready) within this many milliseconds has failed to spawn.
    pub spawn_timeout_ms: u64,
    /// Bytes of an agent's response stored in the database; the rest stays in its file.
    pub max_response_bytes: u64,
    pub agents: Vec<AgentPolicy>,
}

impl Default for SpawnPolicy {
    fn default() -> Self {
        Self {
            max_concurrency: 8,
            spawn_timeout_ms: 10_000,
            max_response_bytes: 64 * 1024,
            agents: Vec::new(),
        }
    }
}

/// `[schedule]`: when jobs run. Each job is a cron expression (5-field crontab, or the
/// 6-7 field form with seconds first), or `"off"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
    pub cleanup: String,
    pub vacuum: String,
    pub integrity_check: String,
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
            cleanup: "0 3 * * *".into(),
            vacuum: "30 3 * * *".into(),
            integrity_check: "0 4 * * 0".into(),
        }
    }
}

impl SchedulePolicy {
    /// The built-in jobs and their expressions.
    pub fn builtin_jobs(&self) -> [(&'static str, &str); 3] {
        [
            ("cleanup", self.cleanup.as_str()),
            ("vacuum", self.vacuum.as_str()),
            ("integrity_check", self.integrity_check.as_str()),
        ]
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
    /// Every job with a schedule: built-in jobs and dynamic plugins' jobs (named after the
    /// plugin). Disabled (`"off"`) ones are left out.
    pub fn scheduled_jobs(&self) -> Vec<(String, String)> {
        let mut jobs: Vec<(String, String)> = self
            .schedule
            .builtin_jobs()
            .iter()
            .filter(|(_, e)| !is_off(e))
            .map(|(n, e)| (n.to_string(), e.to_string()))
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
