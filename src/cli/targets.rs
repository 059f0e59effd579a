//! What a policy points at, checked for `check`: the evidence root, each SPEC tracker
//! (read by retention's own parser, so `check` and `cleanup` agree on what a tracker is),
//! the database's folder, and each `[plugins.<name>]` library. A valid policy can still
//! point at nothing: a root that does not exist makes every cleanup fail, a tracker that
//! is not one protects every SPEC. Each finding names the key, the thing, the cause and
//! the fix.
//!
//! Severity decides `check`'s exit status: an error (the policy points at something no
//! job can use) exits 2 like an invalid value; a warning (something optional is missing,
//! or the result is probably not what was meant) and a note (what will happen, such as
//! the database being created) leave it at 0.

use serde::Serialize;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use speckit_engine::registry::LoadFailure;
use speckit_engine::Policy;
use speckit_retention::layout::{check_root, EvidenceKind, LayoutError};
use speckit_retention::tracker::{TrackerError, TrackerSummary};
use speckit_retention::{EvidencePolicy, RetentionPolicy, UntrackedSpecs};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// No job can use what the policy points at: `check` exits 2.
    Error,
    /// Optional and missing, or probably not what was meant.
    Warning,
    /// What will happen (the database's folder is created at the first write).
    Note,
}

/// One thing found wrong (or worth knowing) about what the policy points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The policy key that points at the thing (`evidence.root`, `plugins.digest.path`).
    pub key: String,
    pub message: String,
    /// What to do about it (none for a note).
    pub fix: Option<String>,
}

impl Finding {
    fn error(key: impl Into<String>, message: String, fix: String) -> Self {
        Self {
            severity: Severity::Error,
            key: key.into(),
            message,
            fix: Some(fix),
        }
    }

    fn warning(key: impl Into<String>, message: String, fix: String) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(key, message, fix)
        }
    }

    fn note(key: impl Into<String>, message: String) -> Self {
        Self {
            severity: Severity::Note,
            key: key.into(),
            message,
            fix: None,
        }
    }
}

/// The config file the policy came from, for the fixes to say where to change a key.
#[derive(Debug, Clone, Copy)]
pub struct ConfigFile<'a> {
    pub path: &'a Path,
    /// Whether it exists (else the policy is the defaults).
    pub found: bool,
}

impl ConfigFile<'_> {
    /// `in [evidence] of /x/speckit.toml`, or, without a file, where to get one.
    fn key_in(&self, section: &str) -> String {
        if self.found {
            format!("in [{section}] of {}", self.path.display())
        } else {
            format!(
                "in [{section}] of a speckit.toml ({} does not exist; `speckit-hygiene init` writes one)",
                self.path.display()
            )
        }
    }
}

/// Every finding about what `policy` points at, errors first.
pub fn inspect(
    policy: &Policy,
    config: ConfigFile,
    plugin_failures: &[LoadFailure],
) -> Vec<Finding> {
    let evidence = policy.section::<EvidencePolicy>();
    let retention = policy.section::<RetentionPolicy>();
    let mut findings = evidence_root(&evidence.root, config);
    findings.extend(trackers(&evidence.tracker_paths, &retention, config));
    findings.extend(database(&policy.storage.database_path, config));
    findings.extend(plugin_failures.iter().map(plugin));
    findings.sort_by_key(|f| f.severity);
    findings
}

/// The root must be a folder this user can read; one holding neither half of the layout
/// is probably not the evidence root (a warning: a repository before its first run).
fn evidence_root(root: &Path, config: ConfigFile) -> Vec<Finding> {
    let set_root = format!(
        "set `root` {} to the folder holding commands/<SPEC-ID>/ and consensus/<SPEC-ID>/ (`speckit-hygiene init` finds it)",
        config.key_in("evidence")
    );
    match check_root(root) {
        Err(e @ (LayoutError::RootMissing(_) | LayoutError::RootNotDir(_))) => {
            vec![Finding::error("evidence.root", e.to_string(), set_root)]
        }
        Err(e) => vec![Finding::error(
            "evidence.root",
            e.to_string(),
            format!("let this user read and enter it, or {set_root}"),
        )],
        Ok(()) if !holds_evidence(root) => vec![Finding::warning(
            "evidence.root",
            format!(
                "evidence root {} holds neither commands/ nor consensus/: there is no SPEC evidence under it",
                root.display()
            ),
            format!("if spec-kit writes its evidence elsewhere, {set_root}; if it has not run yet, nothing to do"),
        )],
        Ok(()) => Vec::new(),
    }
}

/// Whether `commands/` or `consensus/` is a folder under the root.
fn holds_evidence(root: &Path) -> bool {
    EvidenceKind::ALL
        .iter()
        .any(|kind| root.join(kind.dir_name()).is_dir())
}

/// Each tracker must be readable and hold a tracker table: a cleanup fails without the
/// first, and without the second every SPEC is untracked.
fn trackers(paths: &[PathBuf], retention: &RetentionPolicy, config: ConfigFile) -> Vec<Finding> {
    let set_paths = format!(
        "set `tracker_paths` {} to the Markdown files holding the SPEC table",
        config.key_in("evidence")
    );
    if paths.is_empty() {
        return vec![Finding::warning(
            "evidence.tracker_paths",
            format!(
                "no SPEC tracker (evidence.tracker_paths is empty): no SPEC can be known finished, so {}",
                untracked_consequence(retention.untracked_specs)
            ),
            format!("{set_paths} (upstream's is SPEC.md at the repository root)"),
        )];
    }
    paths
        .iter()
        .enumerate()
        .filter_map(|(i, path)| tracker(i, path, &set_paths, retention.untracked_specs))
        .collect()
}

/// What happens to a SPEC no tracker gives a status.
fn untracked_consequence(untracked: UntrackedSpecs) -> &'static str {
    match untracked {
        UntrackedSpecs::Protect => {
            "every SPEC is protected and nothing is archived (retention.untracked_specs = \"protect\")"
        }
        UntrackedSpecs::Archive => {
            "every SPEC is archived by age alone, active ones included (retention.untracked_specs = \"archive\")"
        }
    }
}

/// One tracker: unreadable or without a tracker table is an error, a table that gives no
/// SPEC a status a warning.
fn tracker(
    index: usize,
    path: &Path,
    set_paths: &str,
    untracked: UntrackedSpecs,
) -> Option<Finding> {
    let key = format!("evidence.tracker_paths.{index}");
    let summary = match TrackerSummary::read(path) {
        Ok(summary) => summary,
        Err(TrackerError::Read { source, .. }) => {
            return Some(Finding::error(
                key,
                format!("cannot read SPEC tracker {}: {source}", path.display()),
                format!("{set_paths}, or create it; a cleanup refuses to run without it"),
            ))
        }
    };
    if summary.status_tables == 0 {
        return Some(Finding::error(
            key,
            format!(
                "SPEC tracker {} holds no tracker table: no Markdown table with an ID column (Task ID, Spec ID, Spec, ID or Item) and a Status column, a `|---|` row under its header",
                path.display()
            ),
            format!("{set_paths}, or give its SPEC table those columns (README: \"Use it in your repository\")"),
        ));
    }
    if summary.status_rows == 0 {
        return Some(Finding::warning(
            key,
            format!(
                "SPEC tracker {} gives no SPEC a status (its tracker table has no row with one), so {}",
                path.display(),
                untracked_consequence(untracked)
            ),
            "fill in the Status column of its SPEC rows".to_string(),
        ));
    }
    None
}

/// The database's folder is created at the first write; only something in the way of the
/// file or its folder is an error.
fn database(path: &Path, config: ConfigFile) -> Option<Finding> {
    let set_path = format!("set `database_path` {} to a file", config.key_in("storage"));
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => return None,
        Ok(_) => {
            return Some(Finding::error(
                "storage.database_path",
                format!("database {} is not a file", path.display()),
                set_path,
            ))
        }
        // Not there, or a file where a folder of its path should be (the folder's check
        // below names it).
        Err(e) if !matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Some(Finding::warning(
                "storage.database_path",
                format!("cannot look at database {}: {e}", path.display()),
                format!("let this user read it and its folder, or {set_path}"),
            ))
        }
        Err(_) => {}
    }
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty())?;
    match std::fs::metadata(folder) {
        Ok(meta) if meta.is_dir() => Some(Finding::note(
            "storage.database_path",
            format!(
                "database {} does not exist yet: the first command that writes creates it",
                path.display()
            ),
        )),
        Ok(_) => Some(Finding::error(
            "storage.database_path",
            format!(
                "the database's folder {} is not a folder, so database {} cannot be created",
                folder.display(),
                path.display()
            ),
            set_path,
        )),
        Err(_) => Some(Finding::note(
            "storage.database_path",
            format!(
                "the database's folder {} does not exist yet: the first command that writes creates it, with database {} in it",
                folder.display(),
                path.display()
            ),
        )),
    }
}

/// A `[plugins.<name>]` library that did not load (its job would not exist).
fn plugin(failure: &LoadFailure) -> Finding {
    let name = &failure.name;
    Finding::error(
        format!("plugins.{name}.path"),
        format!("plugin {name} does not load: {}", failure.error),
        format!(
            "set `path` in [plugins.{name}] to the built shared library (or a folder holding one) that only you can write, or remove [plugins.{name}]; `speckit-hygiene plugins` shows the same"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ConfigFile<'static> {
        ConfigFile {
            path: Path::new("/x/speckit.toml"),
            found: true,
        }
    }

    #[test]
    fn a_missing_root_is_an_error_whose_fix_names_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let found = evidence_root(&dir.path().join("nope"), config());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].severity, Severity::Error);
        assert!(found[0].message.contains("does not exist"), "{found:?}");
        let fix = found[0].fix.as_deref().unwrap();
        assert!(
            fix.contains("`root` in [evidence] of /x/speckit.toml"),
            "{fix}"
        );
        // A folder without commands/ or consensus/: a warning only.
        let found = evidence_root(dir.path(), config());
        assert_eq!(found[0].severity, Severity::Warning, "{found:?}");
        std::fs::create_dir(dir.path().join("consensus")).unwrap();
        assert!(evidence_root(dir.path(), config()).is_empty());
    }

    #[test]
    fn the_database_folder_is_created_later_but_a_file_in_its_way_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let later = database(&dir.path().join(".speckit/c.db"), config()).unwrap();
        assert_eq!(later.severity, Severity::Note);
        assert!(later.message.contains("creates it"), "{later:?}");
        std::fs::write(dir.path().join("file"), "").unwrap();
        let blocked = database(&dir.path().join("file/c.db"), config()).unwrap();
        assert_eq!(blocked.severity, Severity::Error);
        std::fs::write(dir.path().join("c.db"), "").unwrap();
        assert_eq!(database(&dir.path().join("c.db"), config()), None);
    }

    #[test]
    fn without_a_config_file_the_fix_says_how_to_get_one() {
        let config = ConfigFile {
            path: Path::new("speckit.toml"),
            found: false,
        };
        let found = trackers(
            &[PathBuf::from("/nonexistent/SPEC.md")],
            &RetentionPolicy::default(),
            config,
        );
        let fix = found[0].fix.as_deref().unwrap();
        assert!(fix.contains("speckit-hygiene init"), "{fix}");
    }
}
