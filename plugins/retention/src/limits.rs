//! Evidence size limits: the per-SPEC warn and block sizes, the soft limits for the whole
//! root and a single file, and the check the scheduled `cleanup` pass runs at its end.
//!
//! Sizes in the policy are MiB (1,048,576 bytes), as upstream computed them, and a limit is
//! crossed only when a size is strictly greater than it: a SPEC of exactly 40 MiB is ok,
//! one byte more warns.

use crate::EvidencePolicy;
use serde::Serialize;
use speckit_engine::{JobContext, JobReport, Policy};
use std::fmt;

use crate::stats::{self, Scope, SpecNames, StatsError, StatsReport};

/// Bytes in one MiB, the unit of every `_mb` field.
pub const MIB: u64 = 1_048_576;

/// A policy size in MiB as the largest byte count that does not cross it.
///
/// "Strictly more than `mb` MiB" is, for whole bytes, "more than `floor(mb * MiB)` bytes":
/// 0.3 MiB is 314,572.8 bytes, so 314,572 is within it and 314,573 crosses it.
pub fn mib_to_bytes(mb: f64) -> u64 {
    // Policy validation keeps sizes finite and above 0; `as` saturates anything else.
    (mb * MIB as f64).floor() as u64
}

/// The policy's limits, in MiB as configured and in bytes as compared.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    pub warn_mb: f64,
    pub limit_mb: f64,
    pub root_warn_mb: f64,
    pub file_warn_mb: f64,
    /// A SPEC above this many bytes warns.
    pub warn_bytes: u64,
    /// A SPEC above this many bytes blocks automation.
    pub limit_bytes: u64,
    /// The whole root above this many bytes is a warning.
    pub root_warn_bytes: u64,
    /// A single file above this many bytes is a warning.
    pub file_warn_bytes: u64,
}

impl Limits {
    pub fn from_policy(policy: &Policy) -> Self {
        let e = &policy.section::<EvidencePolicy>();
        Self {
            warn_mb: e.warn_mb,
            limit_mb: e.limit_mb,
            root_warn_mb: e.root_warn_mb,
            file_warn_mb: e.file_warn_mb,
            warn_bytes: mib_to_bytes(e.warn_mb),
            limit_bytes: mib_to_bytes(e.limit_mb),
            root_warn_bytes: mib_to_bytes(e.root_warn_mb),
            file_warn_bytes: mib_to_bytes(e.file_warn_mb),
        }
    }

    /// The verdict for a SPEC holding `bytes` of evidence (commands and consensus together).
    pub fn verdict(&self, bytes: u64) -> Verdict {
        if bytes > self.limit_bytes {
            Verdict::Block
        } else if bytes > self.warn_bytes {
            Verdict::Warn
        } else {
            Verdict::Ok
        }
    }
}

/// Where a SPEC stands against its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// At or under the warning size.
    Ok,
    /// Above the warning size, at or under the limit.
    Warn,
    /// Above the limit: automation must not start on this SPEC.
    Block,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Block => "block",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sizes for people: the engine's one formatter (binary units, one decimal). Messages
/// about a crossed limit also give the exact byte count, since 40 MiB and one byte still
/// reads `40.0 MiB`.
pub use speckit_engine::units::human_bytes;

/// `1 file`, `2 files`.
pub fn files(n: u64) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

/// A policy size as people wrote it: `40 MiB`, `0.5 MiB`.
pub fn human_mib(mb: f64) -> String {
    format!("{mb} MiB")
}

/// One SPEC over its warning size or its limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitFinding {
    pub spec: String,
    /// The evidence folders counted for it (a SPEC may have several: `SPEC-KIT-025-...-wit`
    /// and `...-with`).
    pub folders: Vec<String>,
    pub verdict: Verdict,
    pub total_bytes: u64,
    /// The size it crossed: the warning size for `warn`, the limit for `block`.
    pub crossed_bytes: u64,
    /// Some entries of its folders could not be read: the total is a lower bound.
    pub incomplete: bool,
    pub message: String,
}

/// Measures every SPEC of the policy's evidence root against its limits (the whole root;
/// folder names mapped to SPEC-IDs by `names`).
pub fn check_all(policy: &Policy, names: &SpecNames) -> Result<StatsReport, StatsError> {
    stats::collect(policy, &Scope::All, names)
}

/// The limits check the scheduled `cleanup` pass runs at its end, after cleanup has freed
/// what it could: measures the whole root, adds every SPEC over its warning size or limit
/// (and the root and single-file soft limits, and anything it could not read) to the
/// report's warnings, puts the figures under `report.data["limits"]`, and emits one
/// `limit_warning` plugin event per SPEC over a size and one for the root.
///
/// A root that cannot be measured is an error of the run (`report.errors`): a pass that
/// was asked to check limits and could not must not look clean.
pub async fn check_after_cleanup(ctx: &JobContext, report: &mut JobReport, names: &SpecNames) {
    let snapshot = ctx.policy.clone();
    let names = names.clone();
    // The walk is blocking file I/O over the whole tree: keep it off the async workers.
    let measured = tokio::task::spawn_blocking(move || check_all(&snapshot.policy, &names)).await;
    let stats = match measured {
        Ok(Ok(stats)) => stats,
        Ok(Err(e)) => {
            report
                .errors
                .push(format!("evidence limits not checked: {e}"));
            return;
        }
        Err(e) => {
            report.errors.push(format!(
                "evidence limits not checked: the check panicked: {e}"
            ));
            return;
        }
    };
    for finding in stats.findings() {
        // Info, not warn: the report's warnings are what people see (the CLI prints
        // them, `run` stores them); a warn line here would say everything twice.
        tracing::info!(spec = %finding.spec, verdict = %finding.verdict, "{}", finding.message);
        ctx.emit(
            "limit_warning",
            serde_json::json!({
                "scope": "spec",
                "spec": finding.spec,
                "folders": finding.folders,
                "verdict": finding.verdict,
                "total_bytes": finding.total_bytes,
                "crossed_bytes": finding.crossed_bytes,
                "incomplete": finding.incomplete,
                "message": finding.message,
            }),
        );
    }
    if let (Some(total), Some(message)) = (stats.root_total, stats.root_warning()) {
        tracing::info!("{message}");
        ctx.emit(
            "limit_warning",
            serde_json::json!({
                "scope": "root",
                "root": stats.root,
                "total_bytes": total.bytes,
                "crossed_bytes": stats.limits.root_warn_bytes,
                "message": message,
            }),
        );
    }
    report.warnings.extend(stats.warnings.iter().cloned());
    let figures = serde_json::to_value(&stats).unwrap_or(serde_json::Value::Null);
    if report.data.is_null() {
        report.data = serde_json::json!({});
    }
    // Some other shape the job chose is left alone; the warnings carry the findings.
    if let Some(data) = report.data.as_object_mut() {
        data.insert("limits".into(), figures);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mib_is_binary_and_limits_are_strict() {
        assert_eq!(mib_to_bytes(40.0), 40 * 1_048_576);
        assert_eq!(mib_to_bytes(0.3), 314_572);
        let limits = Limits::from_policy(&Policy::default());
        assert_eq!(limits.verdict(40 * MIB), Verdict::Ok);
        assert_eq!(limits.verdict(40 * MIB + 1), Verdict::Warn);
        assert_eq!(limits.verdict(50 * MIB), Verdict::Warn);
        assert_eq!(limits.verdict(50 * MIB + 1), Verdict::Block);
    }

    #[test]
    fn human_sizes_do_not_round_a_crossing_away() {
        assert_eq!(human_bytes(812), "812 B");
        assert_eq!(human_bytes(12_215), "11.9 KiB");
        assert_eq!(human_bytes(40 * MIB), "40.0 MiB");
        assert_eq!(human_mib(0.5), "0.5 MiB");
        assert_eq!(human_mib(40.0), "40 MiB");
    }
}
