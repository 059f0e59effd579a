//! `check` and `plugins`.
//!
//! `check` loads and validates the policy exactly as a reload would, without starting an
//! engine or opening the database. A bad policy exits 2 with the file, key, line and
//! reason on stderr; with `--json` the same problems also go to stdout as a document
//! (`"valid": false`), so scripts need not parse the message.

use anyhow::Result;
use clap::Args;
use std::path::Path;

use super::{engine_options, GlobalArgs, EXIT_OK, EXIT_USAGE};
use speckit_engine::engine::load_and_validate;
use speckit_engine::policy::LoadError;
use speckit_engine::{EngineError, PluginRegistry};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct PluginsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn check(global: &GlobalArgs, args: CheckArgs) -> Result<u8> {
    let options = engine_options(global, super::Access::ReadOnly)?;
    let registry = PluginRegistry::new(speckit_hygiene::builtin_plugins())?;
    let snapshot = match load_and_validate(&options, &registry) {
        Ok(snapshot) => snapshot,
        Err(e) if args.json && e.is_usage() => {
            let out = invalid_json(&options.config_path, &e);
            println!("{}", serde_json::to_string_pretty(&out)?);
            eprintln!("error: {e}");
            return Ok(EXIT_USAGE);
        }
        Err(e) => return Err(e.into()),
    };
    let values = serde_json::to_value(&snapshot.policy)?;
    // Valid, but probably not what was meant (an empty finished_statuses archives nothing).
    let mut warnings = speckit_engine::policy::warnings(&snapshot.policy);
    for w in &mut warnings {
        w.origin = snapshot.origins.get(&w.key).cloned();
    }
    if args.json {
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
        let out = serde_json::json!({
            "config_file": snapshot.source.path,
            "config_file_found": snapshot.source.content_sha256.is_some(),
            "valid": true,
            "warnings": warnings,
            "policy": values,
            "values": entries,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let found = if snapshot.source.content_sha256.is_some() {
            ""
        } else {
            " (not found: defaults)"
        };
        println!("policy OK: {}{found}", snapshot.source.path.display());
        for w in &warnings {
            println!("warning: {}", w.message);
        }
        let width = snapshot.origins.keys().map(|k| k.len()).max().unwrap_or(0);
        for (key, origin) in &snapshot.origins {
            let value = lookup(&values, key)
                .map(|v| v.to_string())
                .unwrap_or_default();
            println!("{key:width$}  {value}  ({origin})");
        }
    }
    Ok(EXIT_OK)
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
        println!("{}", serde_json::to_string_pretty(&out)?);
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
