//! Semantic checks of a policy that its types cannot express.

use super::load::Problem;
use super::{is_off, Policy};

/// Semantic checks the types cannot express. Returns every problem, not just the first.
pub fn validate(policy: &Policy) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut bad = |key: &str, message: String| {
        problems.push(Problem {
            key: key.to_string(),
            line: None,
            origin: None,
            message,
        })
    };
    let s = &policy.storage;
    if s.database_path.as_os_str().is_empty() {
        bad("storage.database_path", "must not be empty".into());
    }
    if s.busy_timeout_ms == 0 {
        bad("storage.busy_timeout_ms", "must be at least 1".into());
    }
    // SQLite takes the timeout as a C int of milliseconds.
    if s.busy_timeout_ms > i32::MAX as u64 {
        bad(
            "storage.busy_timeout_ms",
            format!("must be at most {} (about 24 days)", i32::MAX),
        );
    }
    if s.write_retry_attempts == 0 {
        bad("storage.write_retry_attempts", "must be at least 1".into());
    }
    if s.journal_size_limit_bytes < 0 {
        bad(
            "storage.journal_size_limit_bytes",
            "must not be negative".into(),
        );
    }

    let e = &policy.evidence;
    for (key, value) in [
        ("evidence.warn_mb", e.warn_mb),
        ("evidence.limit_mb", e.limit_mb),
        ("evidence.root_warn_mb", e.root_warn_mb),
        ("evidence.file_warn_mb", e.file_warn_mb),
    ] {
        if !(value.is_finite() && value > 0.0) {
            bad(key, format!("must be a size above 0 MiB, got {value}"));
        }
    }
    if e.warn_mb > e.limit_mb {
        bad(
            "evidence.warn_mb",
            format!(
                "the warning size ({} MiB) must not be above limit_mb ({} MiB)",
                e.warn_mb, e.limit_mb
            ),
        );
    }
    if e.root.as_os_str().is_empty() {
        bad("evidence.root", "must not be empty".into());
    }

    let r = &policy.retention;
    if r.archive_after_days == 0 {
        bad("retention.archive_after_days", "must be at least 1".into());
    }
    if r.purge_after_days <= r.archive_after_days {
        bad(
            "retention.purge_after_days",
            format!(
                "must be above archive_after_days ({}), got {}",
                r.archive_after_days, r.purge_after_days
            ),
        );
    }
    if !(r.max_removal_fraction > 0.0 && r.max_removal_fraction <= 1.0) {
        bad(
            "retention.max_removal_fraction",
            format!("must be in (0, 1], got {}", r.max_removal_fraction),
        );
    }
    for (key, list) in [
        ("retention.active_statuses", &r.active_statuses),
        ("retention.finished_statuses", &r.finished_statuses),
    ] {
        for (i, status) in list.iter().enumerate() {
            if status_key(status).is_empty() {
                bad(
                    &format!("{key}.{i}"),
                    format!("{status:?} has no letter or digit: it cannot match a status"),
                );
            }
        }
    }
    for finished in &r.finished_statuses {
        let f = status_key(finished);
        if let Some(active) = r
            .active_statuses
            .iter()
            .find(|a| !f.is_empty() && status_key(a) == f)
        {
            bad(
                "retention.finished_statuses",
                format!("{finished:?} is also an active status ({active:?} in active_statuses): a status is one or the other"),
            );
        }
    }
    if !(1..=19).contains(&r.zstd_level) {
        bad(
            "retention.zstd_level",
            format!("must be 1 to 19, got {}", r.zstd_level),
        );
    }
    if r.verify_archive_hashes_every_days > 36_500 {
        bad(
            "retention.verify_archive_hashes_every_days",
            format!(
                "must be 0 (never) to 36500 days, got {}",
                r.verify_archive_hashes_every_days
            ),
        );
    }

    let v = &policy.vacuum;
    if !(v.free_fraction_threshold > 0.0 && v.free_fraction_threshold <= 1.0) {
        bad(
            "vacuum.free_fraction_threshold",
            format!("must be in (0, 1], got {}", v.free_fraction_threshold),
        );
    }
    if v.chunk_pages == 0 {
        bad("vacuum.chunk_pages", "must be at least 1".into());
    }
    if !(v.lock_time_fraction > 0.0 && v.lock_time_fraction <= 1.0) {
        bad(
            "vacuum.lock_time_fraction",
            format!("must be in (0, 1], got {}", v.lock_time_fraction),
        );
    }

    let sp = &policy.spawn;
    if sp.max_concurrency == 0 {
        bad("spawn.max_concurrency", "must be at least 1".into());
    }
    if sp.spawn_timeout_ms == 0 {
        bad("spawn.spawn_timeout_ms", "must be at least 1".into());
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, agent) in sp.agents.iter().enumerate() {
        let key = format!("spawn.agents.{i}");
        if agent.name.trim().is_empty() {
            bad(&format!("{key}.name"), "must not be empty".into());
        } else if !names.insert(agent.name.clone()) {
            bad(
                &format!("{key}.name"),
                format!("agent {:?} is defined twice", agent.name),
            );
        }
        if agent.command.trim().is_empty() {
            bad(&format!("{key}.command"), "must not be empty".into());
        }
        if agent.timeout_ms == 0 {
            bad(&format!("{key}.timeout_ms"), "must be at least 1".into());
        }
    }

    let sc = &policy.schedule;
    let timezone = crate::cron_expr::parse_timezone(&sc.timezone);
    if let Err(message) = &timezone {
        bad("schedule.timezone", message.clone());
    }
    if sc.lease_seconds < 5 {
        bad("schedule.lease_seconds", "must be at least 5".into());
    }
    // 100 years: the cutoff in milliseconds stays far inside i64 and chrono's range.
    if sc.job_history_days == 0 || sc.job_history_days > 36_500 {
        bad(
            "schedule.job_history_days",
            "must be between 1 and 36500 (100 years)".into(),
        );
    }
    if sc.job_history_max_rows == 0 {
        bad("schedule.job_history_max_rows", "must be at least 1".into());
    }
    for (job, expression) in sc.builtin_jobs() {
        if !is_off(expression) {
            if let Err(message) = crate::cron_expr::parse(expression) {
                bad(&format!("schedule.{job}"), message);
            }
        }
    }

    for (name, plugin) in &policy.plugins {
        let key = format!("plugins.{name}");
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            || name.is_empty()
        {
            bad(
                &key,
                "a plugin name may hold only letters, digits, '_' and '-'".into(),
            );
        }
        if ["cleanup", "vacuum", "integrity_check", "spawn"].contains(&name.as_str()) {
            bad(&key, format!("{name:?} is the name of a built-in job"));
        }
        if !is_off(&plugin.schedule) {
            if let Err(message) = crate::cron_expr::parse(&plugin.schedule) {
                bad(&format!("{key}.schedule"), message);
            }
        }
        if plugin.call_timeout_ms == 0 || plugin.call_timeout_ms > MAX_PLUGIN_CALL_TIMEOUT_MS {
            bad(
                &format!("{key}.call_timeout_ms"),
                format!("must be between 1 and {MAX_PLUGIN_CALL_TIMEOUT_MS} (7 days)"),
            );
        }
        if plugin.memory_limit_mib != 0
            && !(MIN_PLUGIN_MEMORY_MIB..=MAX_PLUGIN_MEMORY_MIB).contains(&plugin.memory_limit_mib)
        {
            bad(
                &format!("{key}.memory_limit_mib"),
                format!(
                    "must be 0 (no limit) or between {MIN_PLUGIN_MEMORY_MIB} and {MAX_PLUGIN_MEMORY_MIB} (1 PiB); a plugin host needs some memory to start"
                ),
            );
        }
    }
    problems
}

const MAX_PLUGIN_CALL_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
const MIN_PLUGIN_MEMORY_MIB: u64 = 32;
const MAX_PLUGIN_MEMORY_MIB: u64 = 1 << 30;

/// A status as the trackers compare it, roughly: letters and digits, upper case, single
/// spaces (the retention plugin's own comparison is the reference; this only spots
/// empty entries and one status in both lists).
fn status_key(status: &str) -> String {
    status
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_uppercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a valid policy may still get wrong without meaning to: each a [`Problem`] that
/// does not reject the policy (`check` prints them).
pub fn warnings(policy: &Policy) -> Vec<Problem> {
    let mut out = Vec::new();
    if policy.retention.finished_statuses.is_empty() {
        out.push(Problem {
            key: "retention.finished_statuses".into(),
            line: None,
            origin: None,
            message: "retention.finished_statuses is empty: no SPEC will be archived by its tracker status (only untracked SPECs, if retention.untracked_specs = \"archive\")".into(),
        });
    }
    out
}
