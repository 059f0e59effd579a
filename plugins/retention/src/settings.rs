//! Retention's policy: the `[evidence]` section (where evidence lives, its size limits),
//! the `[retention]` section (archiving and purging) and the `[offload]` section (moving
//! old archives to object storage), with their checks. All three are declared by this
//! plugin ([`speckit_engine::policy::Section`]); the spawn plugin reads
//! `[evidence]` too.

use serde::{Deserialize, Serialize};
use speckit_engine::policy::{Section, SectionProblems};
use std::path::{Path, PathBuf};

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

impl Section for EvidencePolicy {
    const NAME: &'static str = "evidence";

    fn validate(&self, problems: &mut SectionProblems) {
        for (key, value) in [
            ("warn_mb", self.warn_mb),
            ("limit_mb", self.limit_mb),
            ("root_warn_mb", self.root_warn_mb),
            ("file_warn_mb", self.file_warn_mb),
        ] {
            if !(value.is_finite() && value > 0.0) {
                problems.bad(key, format!("must be a size above 0 MiB, got {value}"));
            }
        }
        if self.warn_mb > self.limit_mb {
            problems.bad(
                "warn_mb",
                format!(
                    "the warning size ({} MiB) must not be above limit_mb ({} MiB)",
                    self.warn_mb, self.limit_mb
                ),
            );
        }
        if self.root.as_os_str().is_empty() {
            problems.bad("root", "must not be empty");
        }
    }

    fn resolve_paths(&mut self, resolve: &dyn Fn(&Path) -> PathBuf) {
        self.root = resolve(&self.root);
        for tracker in &mut self.tracker_paths {
            *tracker = resolve(tracker);
        }
    }
}

impl Section for RetentionPolicy {
    const NAME: &'static str = "retention";

    fn validate(&self, problems: &mut SectionProblems) {
        if self.archive_after_days == 0 {
            problems.bad("archive_after_days", "must be at least 1");
        }
        // 100 years: ages stay far inside chrono's date range.
        if self.archive_after_days > MAX_AGE_DAYS {
            problems.bad(
                "archive_after_days",
                format!(
                    "must be at most {MAX_AGE_DAYS} (100 years), got {}",
                    self.archive_after_days
                ),
            );
        }
        if self.purge_after_days <= self.archive_after_days {
            problems.bad(
                "purge_after_days",
                format!(
                    "must be above archive_after_days ({}), got {}",
                    self.archive_after_days, self.purge_after_days
                ),
            );
        } else if self.purge_after_days > MAX_AGE_DAYS {
            problems.bad(
                "purge_after_days",
                format!(
                    "must be at most {MAX_AGE_DAYS} (100 years), got {}",
                    self.purge_after_days
                ),
            );
        }
        if !(self.max_removal_fraction > 0.0 && self.max_removal_fraction <= 1.0) {
            problems.bad(
                "max_removal_fraction",
                format!("must be in (0, 1], got {}", self.max_removal_fraction),
            );
        }
        for (key, list) in [
            ("active_statuses", &self.active_statuses),
            ("finished_statuses", &self.finished_statuses),
        ] {
            for (i, status) in list.iter().enumerate() {
                if status_key(status).is_empty() {
                    problems.bad(
                        format!("{key}.{i}"),
                        format!("{status:?} has no letter or digit: it cannot match a status"),
                    );
                }
            }
        }
        for finished in &self.finished_statuses {
            let f = status_key(finished);
            if let Some(active) = self
                .active_statuses
                .iter()
                .find(|a| !f.is_empty() && status_key(a) == f)
            {
                problems.bad(
                    "finished_statuses",
                    format!("{finished:?} is also an active status ({active:?} in active_statuses): a status is one or the other"),
                );
            }
        }
        if !(1..=19).contains(&self.zstd_level) {
            problems.bad(
                "zstd_level",
                format!("must be 1 to 19, got {}", self.zstd_level),
            );
        }
        if self.verify_archive_hashes_every_days > MAX_AGE_DAYS {
            problems.bad(
                "verify_archive_hashes_every_days",
                format!(
                    "must be 0 (never) to {MAX_AGE_DAYS} days, got {}",
                    self.verify_archive_hashes_every_days
                ),
            );
        }
    }

    fn warnings(&self, warnings: &mut SectionProblems) {
        if self.finished_statuses.is_empty() {
            warnings.bad(
                "finished_statuses",
                "retention.finished_statuses is empty: no SPEC will be archived by its tracker status (only untracked SPECs, if retention.untracked_specs = \"archive\")",
            );
        }
    }
}

/// `[offload]`: old archives moved to object storage (S3 or an S3-compatible server, or a
/// local or network folder), then deleted locally; their manifest sidecars stay. Off by
/// default. Credentials come from the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or a profile of the shared credentials
/// file (`AWS_PROFILE`, `~/.aws/credentials`), never from this file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OffloadPolicy {
    /// Archives older than this many days are uploaded to `url`, checked, recorded and
    /// then deleted locally. `0` (the default): off. Otherwise it must be above
    /// `retention.archive_after_days` and below `retention.purge_after_days`.
    pub after_days: u32,
    /// Where archives go: `s3://bucket/prefix` or `file:///absolute/folder`. An archive
    /// `cleanup/archives/<SPEC>/<name>` becomes the object `<prefix>/<SPEC>/<name>`.
    pub url: String,
    /// The S3 region; empty: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: String,
    /// An S3-compatible server's endpoint (`https://minio.example:9000`); empty: AWS.
    pub endpoint: String,
    /// Allow a plain `http://` endpoint (a server on loopback); off: HTTPS only.
    pub allow_http: bool,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible servers want;
    /// off: virtual-hosted style (`bucket.endpoint/key`), as AWS wants.
    pub path_style: bool,
    /// Archives larger than this many MiB are uploaded in parts of this size (5-5000,
    /// S3's limits); smaller ones in one request.
    pub part_size_mib: u32,
    /// A request to the store that takes longer than this many seconds fails (1-3600);
    /// that archive stays local and the next run tries again.
    pub timeout_seconds: u32,
}

impl Default for OffloadPolicy {
    fn default() -> Self {
        Self {
            after_days: 0,
            url: String::new(),
            region: String::new(),
            endpoint: String::new(),
            allow_http: false,
            path_style: false,
            part_size_mib: 16,
            timeout_seconds: 60,
        }
    }
}

impl OffloadPolicy {
    /// Whether offloading is on.
    pub fn enabled(&self) -> bool {
        self.after_days > 0
    }
}

impl Section for OffloadPolicy {
    const NAME: &'static str = "offload";

    fn validate(&self, problems: &mut SectionProblems) {
        if self.after_days > MAX_AGE_DAYS {
            problems.bad(
                "after_days",
                format!(
                    "must be 0 (off) to {MAX_AGE_DAYS} days, got {}",
                    self.after_days
                ),
            );
        }
        if self.enabled() || !self.url.is_empty() {
            if let Err(why) = crate::offload::StoreUrl::parse(&self.url) {
                problems.bad("url", why);
            }
        }
        if !self.endpoint.is_empty() {
            // Shown without any user:password part (rejected below, never echoed).
            let shown = crate::offload::redacted(&self.endpoint);
            let http = self.endpoint.starts_with("http://");
            if !(http || self.endpoint.starts_with("https://")) {
                problems.bad(
                    "endpoint",
                    format!("must start with https:// (or http:// with allow_http), got {shown:?}"),
                );
            } else if http && !self.allow_http {
                problems.bad(
                    "endpoint",
                    format!(
                        "{shown:?} is plain HTTP: set allow_http = true (for a server on loopback) or use https://"
                    ),
                );
            }
            if self.endpoint.contains('@') {
                problems.bad(
                    "endpoint",
                    "must not carry credentials; they are read from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                );
            }
        }
        if !(5..=5000).contains(&self.part_size_mib) {
            problems.bad(
                "part_size_mib",
                format!("must be 5 to 5000 MiB, got {}", self.part_size_mib),
            );
        }
        if !(1..=3600).contains(&self.timeout_seconds) {
            problems.bad(
                "timeout_seconds",
                format!("must be 1 to 3600 seconds, got {}", self.timeout_seconds),
            );
        }
    }
}

/// The check across `[offload]` and `[retention]`: an offload age, when on, lies between
/// the archive and purge ages (an archive is offloaded after it is written and before it
/// is purged). The message names the key.
pub fn check_offload_ages(
    offload: &OffloadPolicy,
    retention: &RetentionPolicy,
) -> Result<(), String> {
    if !offload.enabled() {
        return Ok(());
    }
    if offload.after_days <= retention.archive_after_days
        || offload.after_days >= retention.purge_after_days
    {
        return Err(format!(
            "offload.after_days: must be 0 (off) or above retention.archive_after_days ({}) and below retention.purge_after_days ({}), got {}",
            retention.archive_after_days, retention.purge_after_days, offload.after_days
        ));
    }
    Ok(())
}

/// The largest age in days a policy may give (100 years).
const MAX_AGE_DAYS: u32 = 36_500;

/// A status as the trackers compare it, roughly: letters and digits, upper case, single
/// spaces (`tracker::StatusRules` is the reference; this only spots empty entries and
/// one status in both lists).
fn status_key(status: &str) -> String {
    status
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_uppercase)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(p: &OffloadPolicy) -> String {
        let mut problems = SectionProblems::default();
        p.validate(&mut problems);
        format!("{problems:?}")
    }

    #[test]
    fn offload_is_off_by_default_and_valid() {
        let p = OffloadPolicy::default();
        assert!(!p.enabled());
        let mut problems = SectionProblems::default();
        p.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(check_offload_ages(&p, &RetentionPolicy::default()).is_ok());
    }

    #[test]
    fn offload_checks_name_the_key() {
        let on = OffloadPolicy {
            after_days: 60,
            ..OffloadPolicy::default()
        };
        assert!(problems_of(&on).contains("url"), "{}", problems_of(&on));
        let http = OffloadPolicy {
            url: "s3://b/p".into(),
            endpoint: "http://127.0.0.1:9000".into(),
            ..on.clone()
        };
        let shown = problems_of(&http);
        assert!(
            shown.contains("endpoint") && shown.contains("allow_http"),
            "{shown}"
        );
        let secret = OffloadPolicy {
            url: "s3://b/p".into(),
            endpoint: "http://AKIAEXAMPLE:SeCrEt@127.0.0.1:9000".into(),
            ..on.clone()
        };
        let shown = problems_of(&secret);
        assert!(shown.contains("must not carry credentials"), "{shown}");
        assert!(
            !shown.contains("SeCrEt") && !shown.contains("AKIAEXAMPLE"),
            "{shown}"
        );
        let parts = OffloadPolicy {
            url: "s3://b/p".into(),
            part_size_mib: 4,
            ..on.clone()
        };
        assert!(problems_of(&parts).contains("part_size_mib"));
        let r = RetentionPolicy::default();
        for days in [30, 90, 120] {
            let p = OffloadPolicy {
                after_days: days,
                ..on.clone()
            };
            let e = check_offload_ages(&p, &r).unwrap_err();
            assert!(e.starts_with("offload.after_days"), "{e}");
        }
        assert!(check_offload_ages(&on, &r).is_ok());
    }
}
