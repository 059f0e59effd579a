//! `speckit-digest`: an example dynamic plugin for speckit-hygiene. For each SPEC under
//! the evidence root's `consensus/` folder it writes `<output_dir>/<SPEC-ID>.md`, a
//! Markdown digest of what its consensus runs concluded: per stage, the latest run's
//! status, agents, degraded agents, agreements and conflicts, and the agents' verdicts.
//!
//! ```toml
//! [plugins.digest]
//! path = "plugins/libspeckit_digest.so"
//! schedule = "0 5 * * *"
//! [plugins.digest.config]
//! output_dir = "consensus-digests"   # relative to the config file's folder
//! max_items = 10                     # agreements/conflicts listed per stage
//! specs = []                         # only these SPECs; empty: all
//! ```
//!
//! It only reads evidence, never follows symbolic links, and writes each digest to a
//! temporary file that it renames into place, so a reader never sees half a digest.
//! With the run option `dry_run` it writes nothing and reports what it would write.

pub mod markdown;
pub mod scan;

use serde::Deserialize;
use serde_json::json;
use speckit_plugin_sdk::{export_plugin, parse_config, JobContext, Plugin, Report};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `[plugins.<name>.config]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DigestConfig {
    /// Where digests go; relative to the config file's folder.
    pub output_dir: PathBuf,
    /// Agreements and conflicts listed per stage (at least 1).
    pub max_items: usize,
    /// Only these SPEC-IDs; empty means every SPEC.
    pub specs: Vec<String>,
}

impl Default for DigestConfig {
    fn default() -> Self {
        Self {
            output_dir: PathBuf::from("consensus-digests"),
            max_items: 10,
            specs: Vec::new(),
        }
    }
}

impl DigestConfig {
    fn check(&self) -> Result<(), String> {
        if self.output_dir.as_os_str().is_empty() {
            return Err("output_dir must not be empty".into());
        }
        if self.max_items == 0 {
            return Err("max_items must be at least 1".into());
        }
        if let Some(bad) = self
            .specs
            .iter()
            .find(|s| s.is_empty() || s.contains(['/', '\\']) || s.starts_with('.'))
        {
            return Err(format!("specs: {bad:?} is not a SPEC-ID"));
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct Digest;

impl Plugin for Digest {
    fn validate(&self, config: &serde_json::Value) -> Result<(), String> {
        parse_config::<DigestConfig>(config)?.check()
    }

    fn run(&self, ctx: &JobContext) -> Result<Report, String> {
        let config: DigestConfig = ctx.config_as()?;
        config.check()?;
        run_digest(ctx, &config)
    }
}

export_plugin!(Digest, "speckit-digest");

/// Reads every SPEC's consensus evidence and writes (or, dry, plans) its digest.
pub fn run_digest(ctx: &JobContext, config: &DigestConfig) -> Result<Report, String> {
    let consensus_dir = ctx.evidence_root.join("consensus");
    let output_dir = ctx.resolve(&config.output_dir);
    let dry_run = ctx.flag("dry_run");
    if !consensus_dir.is_dir() {
        let mut report = Report::new(format!(
            "no consensus evidence: {} is not a folder",
            consensus_dir.display()
        ))
        .with_data(json!({ "specs": 0, "consensus_dir": consensus_dir }));
        report
            .warnings
            .push(format!("{} does not exist", consensus_dir.display()));
        return Ok(report);
    }
    let scan::SpecDirs {
        dirs,
        links: skipped_links,
    } = scan::spec_dirs(&consensus_dir)
        .map_err(|e| format!("cannot list {}: {e}", consensus_dir.display()))?;
    let mut report = Report::default();
    for link in &skipped_links {
        report.warnings.push(format!(
            "{}: a symbolic link, not followed",
            consensus_dir.join(link).display()
        ));
    }
    if !dry_run {
        fs::create_dir_all(&output_dir)
            .map_err(|e| format!("cannot create output_dir {}: {e}", output_dir.display()))?;
    }
    let mut counts = Counts::default();
    let mut latest_statuses: BTreeMap<String, u64> = BTreeMap::new();
    for (spec_id, dir) in dirs {
        if !config.specs.is_empty() && !config.specs.contains(&spec_id) {
            continue;
        }
        let spec = match scan::read_spec(&spec_id, &dir) {
            Ok(spec) => spec,
            Err(e) => {
                report
                    .errors
                    .push(format!("cannot read {}: {e}", dir.display()));
                continue;
            }
        };
        counts.specs += 1;
        counts.synthesis_files += spec.syntheses.len();
        counts.verdict_files += spec.verdicts.len();
        counts.templates += spec.syntheses.iter().filter(|s| s.template).count();
        for (file, cause) in &spec.unreadable {
            counts.unreadable += 1;
            report
                .warnings
                .push(format!("{}: {cause}", dir.join(file).display()));
        }
        for stage in scan::stages(&spec) {
            if let Some(latest) = stage.latest {
                counts.stages += 1;
                *latest_statuses.entry(latest.status.clone()).or_default() += 1;
            }
        }
        let text = markdown::render(&spec, config.max_items);
        let target = output_dir.join(format!("{spec_id}.md"));
        if fs::read(&target).is_ok_and(|old| old == text.as_bytes()) {
            counts.unchanged += 1;
        } else if dry_run {
            counts.would_write += 1;
        } else {
            match write_atomically(&target, text.as_bytes()) {
                Ok(()) => counts.written += 1,
                Err(e) => report
                    .errors
                    .push(format!("cannot write {}: {e}", target.display())),
            }
        }
    }
    let not_ok: u64 = latest_statuses
        .iter()
        .filter(|(status, _)| status.as_str() != "ok")
        .map(|(_, n)| n)
        .sum();
    report.summary = format!(
        "digested {} SPECs ({} stages, {not_ok} not ok) from {} files; {} {}, {} unchanged",
        counts.specs,
        counts.stages,
        counts.synthesis_files + counts.verdict_files,
        if dry_run {
            counts.would_write
        } else {
            counts.written
        },
        if dry_run {
            "would be written"
        } else {
            "written"
        },
        counts.unchanged,
    );
    report.data = json!({
        "dry_run": dry_run,
        "consensus_dir": consensus_dir,
        "output_dir": output_dir,
        "specs": counts.specs,
        "stages": counts.stages,
        "synthesis_files": counts.synthesis_files,
        "verdict_files": counts.verdict_files,
        "templates": counts.templates,
        "unreadable_files": counts.unreadable,
        "skipped_links": skipped_links.len(),
        "digests_written": counts.written,
        "digests_would_write": counts.would_write,
        "digests_unchanged": counts.unchanged,
        "latest_status_counts": latest_statuses,
    });
    Ok(report)
}

#[derive(Debug, Default)]
struct Counts {
    specs: usize,
    stages: usize,
    synthesis_files: usize,
    verdict_files: usize,
    templates: usize,
    unreadable: usize,
    written: usize,
    would_write: usize,
    unchanged: usize,
}

/// Writes to a temporary file beside `target`, syncs it, and renames it into place.
fn write_atomically(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = target.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn context(root: &Path, args: serde_json::Value) -> JobContext {
        JobContext {
            plugin: "digest".into(),
            job: "digest".into(),
            args,
            evidence_root: root.join("evidence"),
            config_dir: root.to_path_buf(),
            ..JobContext::default()
        }
    }

    fn tree(root: &Path) {
        let c = root.join("evidence/consensus");
        write(
            &c.join("SPEC-A/spec-plan_synthesis.json"),
            r#"{"stage":"spec-plan","status":"ok","timestamp":"2025-10-12T14:44:00Z",
                "consensus":{"agreements":["use WAL"],"conflicts":[]}}"#,
        );
        write(
            &c.join("SPEC-A/spec-unlock_synthesis.json"),
            r#"{"stage":"spec-unlock","status":"hold","consensus":{"agreements":[]}}"#,
        );
        write(&c.join("SPEC-A/broken_synthesis.json"), "{ not json");
        write(
            &c.join("SPEC-B/plan_verdict.json"),
            r#"{"stage":"plan","proposals":[{"agent_name":"gemini","content":""}]}"#,
        );
        write(&c.join("stray.json"), "{}");
    }

    #[test]
    fn writes_one_digest_per_spec_then_leaves_unchanged_ones_alone() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let ctx = context(dir.path(), serde_json::Value::Null);
        let report = run_digest(&ctx, &DigestConfig::default()).unwrap();
        assert_eq!(report.data["specs"], 2, "{report:?}");
        assert_eq!(report.data["digests_written"], 2);
        assert_eq!(report.data["unreadable_files"], 1);
        assert_eq!(report.data["latest_status_counts"]["hold"], 1);
        assert!(report.errors.is_empty());
        assert!(
            report.warnings[0].contains("broken_synthesis.json"),
            "{:?}",
            report.warnings
        );
        let a = fs::read_to_string(dir.path().join("consensus-digests/SPEC-A.md")).unwrap();
        assert!(a.contains("| unlock | - | hold |"), "{a}");
        assert!(a.contains("- use WAL"), "{a}");

        let again = run_digest(&ctx, &DigestConfig::default()).unwrap();
        assert_eq!(again.data["digests_written"], 0);
        assert_eq!(again.data["digests_unchanged"], 2);
    }

    #[test]
    fn a_dry_run_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let ctx = context(dir.path(), json!({"dry_run": true}));
        let report = run_digest(&ctx, &DigestConfig::default()).unwrap();
        assert_eq!(report.data["digests_would_write"], 2);
        assert!(!dir.path().join("consensus-digests").exists());
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let outside = dir.path().join("outside");
        write(&outside.join("secret_synthesis.json"), r#"{"status":"ok"}"#);
        std::os::unix::fs::symlink(&outside, dir.path().join("evidence/consensus/SPEC-LINK"))
            .unwrap();
        std::os::unix::fs::symlink(
            outside.join("secret_synthesis.json"),
            dir.path()
                .join("evidence/consensus/SPEC-A/linked_synthesis.json"),
        )
        .unwrap();
        let report =
            run_digest(&context(dir.path(), json!(null)), &DigestConfig::default()).unwrap();
        assert_eq!(report.data["specs"], 2);
        assert_eq!(report.data["skipped_links"], 1);
        assert!(!dir.path().join("consensus-digests/SPEC-LINK.md").exists());
        let a = fs::read_to_string(dir.path().join("consensus-digests/SPEC-A.md")).unwrap();
        assert!(
            a.contains("`linked_synthesis.json`: a symbolic link"),
            "{a}"
        );
    }

    #[test]
    fn the_config_is_checked() {
        let plugin = Digest;
        assert!(plugin.validate(&json!({})).is_ok());
        assert!(plugin.validate(&json!(null)).is_ok());
        let err = plugin.validate(&json!({"max_items": 0})).unwrap_err();
        assert!(err.contains("max_items"), "{err}");
        let err = plugin.validate(&json!({"output": "x"})).unwrap_err();
        assert!(err.contains("unknown field `output`"), "{err}");
        let err = plugin.validate(&json!({"specs": ["../x"]})).unwrap_err();
        assert!(err.contains("not a SPEC-ID"), "{err}");
    }

    #[test]
    fn a_missing_consensus_folder_is_a_warning_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let report =
            run_digest(&context(dir.path(), json!(null)), &DigestConfig::default()).unwrap();
        assert_eq!(report.data["specs"], 0);
        assert_eq!(report.warnings.len(), 1);
    }
}
