//! `check` and `plugins`.
//!
//! `check` loads and validates the policy exactly as a reload would, without starting an
//! engine or opening the database. A bad policy exits 2 with the file, key, line and
//! reason on stderr; with `--json` the same problems also go to stdout as a document
//! (`"valid": false`), so scripts need not parse the message.
//!
//! A valid policy is then checked against what it points at ([`super::targets`]): the
//! evidence root, the trackers, the database's folder, the plugin libraries. Each problem
//! is said once, with its fix: on stderr (`error:`, `warning:`, `note:`), or with
//! `--json` as data (`problems`, `warnings`, `notes`). An error exits 2 (`"valid":
//! false`), as a bad value does: the policy is not usable as written.

use anyhow::Result;
use clap::Args;
use std::path::Path;

use super::targets::{self, ConfigFile, Finding, Severity};
use super::{engine_options, ConfigChoice, GlobalArgs, EXIT_OK, EXIT_USAGE};
use speckit_engine::engine::{load_and_check, CheckedPolicy};
use speckit_engine::policy::LoadError;
use speckit_engine::{EngineError, PluginRegistry, PolicySnapshot};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub struct PluginsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(super) json: bool,
}

pub fn check(global: &GlobalArgs, args: CheckArgs) -> Result<u8> {
    let options = engine_options(global, super::Access::ReadOnly)?;
    let registry = PluginRegistry::new(speckit_hygiene::builtin_plugins())?;
    let checked = match load_and_check(&options, &registry) {
        Ok(checked) => checked,
        Err(e) if args.json && e.is_usage() => {
            let out = invalid_json(&options.config_path, &e);
            let errors = [super::json::ErrorJson::new("usage", e.to_string())];
            print!(
                "{}",
                super::json::render("check", false, None, &out, &[], &errors)
            );
            return Ok(EXIT_USAGE);
        }
        Err(e) => return Err(e.into()),
    };
    let snapshot = &checked.snapshot;
    let findings = findings(global, &checked);
    if args.json {
        print_json(snapshot, &findings)?;
    } else {
        print_text(snapshot, &findings);
    }
    Ok(if findings.iter().any(|f| f.severity == Severity::Error) {
        EXIT_USAGE
    } else {
        EXIT_OK
    })
}

/// The policy's own warnings (valid, but probably not what was meant: an empty
/// finished_statuses archives nothing), then what it points at, then, without a config
/// file, that these are the defaults.
fn findings(global: &GlobalArgs, checked: &CheckedPolicy) -> Vec<Finding> {
    let snapshot = &checked.snapshot;
    let found = snapshot.source.content_sha256.is_some();
    let mut findings: Vec<Finding> = speckit_engine::policy::warnings(&snapshot.policy)
        .into_iter()
        .map(|w| Finding {
            severity: Severity::Warning,
            key: w.key,
            message: w.message,
            fix: None,
        })
        .collect();
    let config = ConfigFile {
        path: &snapshot.source.path,
        found,
    };
    findings.extend(targets::inspect(
        &snapshot.policy,
        config,
        &checked.plugin_failures,
    ));
    if ConfigChoice::of(global).is_missing_default() {
        findings.push(Finding {
            severity: Severity::Note,
            key: String::new(),
            message: format!(
                "no config file: {} does not exist (and neither --config nor $SPECKIT_CONFIG names one), so these are the built-in defaults; `speckit-hygiene init` writes a speckit.toml for this repository",
                snapshot.source.path.display()
            ),
            fix: None,
        });
    }
    findings.sort_by_key(|f| f.severity);
    findings
}

/// A finding as `check --json` gives it: the key's origin beside it, like the values'.
fn finding_json(snapshot: &PolicySnapshot, f: &Finding) -> serde_json::Value {
    // `evidence.tracker_paths.0` has its origin under `evidence.tracker_paths`.
    let origin = snapshot.origins.get(&f.key).or_else(|| {
        let parent = f.key.rsplit_once('.').map(|(p, _)| p)?;
        snapshot.origins.get(parent)
    });
    serde_json::json!({
        "severity": f.severity,
        "key": (!f.key.is_empty()).then_some(&f.key),
        "line": null,
        "origin": origin,
        "message": f.message,
        "fix": f.fix,
    })
}

fn print_json(snapshot: &PolicySnapshot, findings: &[Finding]) -> Result<()> {
    let values = serde_json::to_value(&snapshot.policy)?;
    let entries: Vec<_> = snapshot
        .origins
        .iter()
        .map(|(key, origin)| {
            serde_json::json!({
                "key": key,
                "value": lookup(&values, key),
                "origin": origin,
            })
        })
        .collect();
    let of = |severity| -> Vec<serde_json::Value> {
        findings
            .iter()
            .filter(|f| f.severity == severity)
            .map(|f| finding_json(snapshot, f))
            .collect()
    };
    let problems = of(Severity::Error);
    let out = serde_json::json!({
        "config_file": snapshot.source.path,
        "config_file_found": snapshot.source.content_sha256.is_some(),
        "valid": problems.is_empty(),
        "problems": problems,
        "warnings": of(Severity::Warning),
        "notes": of(Severity::Note),
        "policy": values,
        "values": entries,
    });
    super::json::print_data("check", &out);
    if !problems.is_empty() {
        // The problems themselves are in the document, once; the exit status says 2.
        eprintln!(
            "error: {} problem(s) with what the policy points at (\"problems\" in the JSON)",
            problems.len()
        );
    }
    Ok(())
}

fn print_text(snapshot: &PolicySnapshot, findings: &[Finding]) {
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let path = snapshot.source.path.display();
    let found = if snapshot.source.content_sha256.is_some() {
        ""
    } else {
        " (not found: defaults)"
    };
    if errors == 0 {
        println!("policy OK: {path}{found}");
    } else {
        println!(
            "policy NOT usable: {path}{found}: {errors} problem(s), each with its fix on stderr"
        );
    }
    for f in findings {
        eprintln!("{}", finding_line(f));
    }
    let values = serde_json::to_value(&snapshot.policy).unwrap_or_default();
    let width = snapshot.origins.keys().map(|k| k.len()).max().unwrap_or(0);
    for (key, origin) in &snapshot.origins {
        let value = lookup(&values, key)
            .map(|v| v.to_string())
            .unwrap_or_default();
        println!("{key:width$}  {value}  ({origin})");
    }
}

/// `error: evidence root /x does not exist\n  fix: set ...`.
fn finding_line(f: &Finding) -> String {
    let label = match f.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    };
    match &f.fix {
        Some(fix) => format!("{label}: {}\n  fix: {fix}", f.message),
        None => format!("{label}: {}", f.message),
    }
}

/// `check --json` for a policy that was refused: every problem with its key, line (where
/// the parser knows it), origin and reason.
fn invalid_json(config_path: &Path, error: &EngineError) -> serde_json::Value {
    let problem = |key: Option<&str>, line: Option<usize>, column: Option<usize>, message: &str| {
        serde_json::json!({
            "key": key,
            "line": line,
            "column": column,
            "origin": null,
            "message": message,
        })
    };
    let problems: Vec<serde_json::Value> = match error {
        EngineError::Config(LoadError::Invalid { problems, .. }) => problems
            .iter()
            .map(|p| {
                serde_json::json!({
                    "key": p.key,
                    "line": p.line,
                    "column": null,
                    "origin": p.origin,
                    "message": p.message,
                })
            })
            .collect(),
        EngineError::Config(LoadError::Syntax {
            line,
            column,
            message,
            ..
        }) => vec![problem(None, Some(*line), Some(*column), message)],
        EngineError::Config(LoadError::Read { message, .. }) => {
            vec![problem(None, None, None, message)]
        }
        EngineError::PluginPolicy { plugin, message } => {
            let mut p = problem(None, None, None, message);
            p["plugin"] = serde_json::json!(plugin);
            vec![p]
        }
        other => vec![problem(None, None, None, &other.to_string())],
    };
    serde_json::json!({
        "config_file": std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf()),
        "valid": false,
        "error": error.to_string(),
        "problems": problems,
    })
}

fn lookup(value: &serde_json::Value, dotted: &str) -> Option<serde_json::Value> {
    dotted
        .split('.')
        .try_fold(value, |v, part| v.get(part))
        .cloned()
}

pub async fn plugins(global: &GlobalArgs, args: PluginsArgs) -> Result<u8> {
    let engine = super::start_engine(global, super::Access::ReadOnly).await?;
    let plugins = engine.registry().list();
    let failures = engine.registry().failures();
    if args.json {
        let out = serde_json::json!({
            "plugins": plugins,
            "load_errors": failures,
            // Every library this process loaded, with the name and SDK version it reports.
            "libraries": engine.dynamic_plugins().loaded(),
        });
        super::json::print_data("plugins", &out);
    } else {
        for p in &plugins {
            let origin = match &p.origin {
                speckit_engine::registry::PluginOrigin::Builtin => "built-in".to_string(),
                speckit_engine::registry::PluginOrigin::Dynamic { path } => {
                    path.display().to_string()
                }
            };
            println!(
                "{:<12} {:<8} jobs: {:<28} {origin}",
                p.name,
                p.version,
                p.jobs.join(", ")
            );
        }
        for f in &failures {
            // The error names the file (or folder) and the cause.
            println!("{:<12} FAILED   {}", f.name, f.error);
        }
    }
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(if failures.is_empty() {
        EXIT_OK
    } else {
        super::EXIT_FAILED
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use speckit_engine::engine::load_and_validate;
    use speckit_engine::EngineOptions;

    fn refused(dir: &Path, text: &str) -> (std::path::PathBuf, EngineError) {
        let path = dir.join("speckit.toml");
        std::fs::write(&path, text).unwrap();
        let mut options = EngineOptions::new(&path);
        options.env = Vec::new();
        let registry = PluginRegistry::new(speckit_hygiene::builtin_plugins()).unwrap();
        let error = load_and_validate(&options, &registry).unwrap_err();
        assert!(error.is_usage(), "a config error exits 2: {error}");
        (path, error)
    }

    #[test]
    fn invalid_values_are_listed_with_key_line_and_origin() {
        let dir = tempfile::tempdir().unwrap();
        let (path, error) = refused(
            dir.path(),
            "[retention]\narchive_after_days = 30\npurge_after_days = 10\n[spawn]\nmax_concurrency = 0\n",
        );
        let json = invalid_json(&path, &error);
        assert_eq!(json["valid"], false);
        assert_eq!(json["config_file"], path.display().to_string());
        let problems = json["problems"].as_array().unwrap();
        let purge = problems
            .iter()
            .find(|p| p["key"] == "retention.purge_after_days")
            .unwrap();
        assert_eq!(purge["line"], 3);
        assert_eq!(purge["origin"]["kind"], "file");
        assert!(purge["message"].as_str().unwrap().contains("above"));
        let concurrency = problems
            .iter()
            .find(|p| p["key"] == "spawn.max_concurrency")
            .unwrap();
        assert_eq!(concurrency["line"], 5);
    }

    #[test]
    fn syntax_and_read_errors_have_their_position_or_cause() {
        let dir = tempfile::tempdir().unwrap();
        let (path, error) = refused(dir.path(), "[retention]\narchive_after_days = = 3\n");
        let json = invalid_json(&path, &error);
        assert_eq!(json["problems"][0]["line"], 2);
        assert!(json["problems"][0]["column"].as_u64().unwrap() > 0);

        let folder = dir.path().join("as-folder.toml");
        std::fs::create_dir(&folder).unwrap();
        let mut options = EngineOptions::new(&folder);
        options.env = Vec::new();
        let registry = PluginRegistry::new(speckit_hygiene::builtin_plugins()).unwrap();
        let error = load_and_validate(&options, &registry).unwrap_err();
        let json = invalid_json(&folder, &error);
        assert!(json["error"].as_str().unwrap().contains("as-folder.toml"));
        assert!(!json["problems"][0]["message"].as_str().unwrap().is_empty());
    }
}
