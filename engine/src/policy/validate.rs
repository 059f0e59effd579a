//! Semantic checks of a policy that its types cannot express.

use super::load::Problem;
use super::{is_off, Policy, SectionValue};

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
    for (job, expression) in &sc.jobs {
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
    problems.extend(section_problems(policy, SectionValue::validate));
    problems
}

const MAX_PLUGIN_CALL_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
const MIN_PLUGIN_MEMORY_MIB: u64 = 32;
const MAX_PLUGIN_MEMORY_MIB: u64 = 1 << 30;

/// What a valid policy may still get wrong without meaning to: each a [`Problem`] that
/// does not reject the policy (`check` prints them).
pub fn warnings(policy: &Policy) -> Vec<Problem> {
    section_problems(policy, SectionValue::warnings)
}

/// Each section's own findings, under keys prefixed with the section's name.
fn section_problems(
    policy: &Policy,
    find: impl Fn(&SectionValue) -> Vec<(String, String)>,
) -> Vec<Problem> {
    policy
        .sections
        .iter()
        .flat_map(|(name, section)| {
            find(section)
                .into_iter()
                .map(move |(key, message)| Problem {
                    key: if key.is_empty() {
                        name.clone()
                    } else {
                        format!("{name}.{key}")
                    },
                    line: None,
                    origin: None,
                    message,
                })
        })
        .collect()
}
