//! `check` and `plugins`.

use anyhow::Result;
use clap::Args;

use super::{engine_options, GlobalArgs, EXIT_OK};
use speckit_engine::engine::load_and_validate;
use speckit_engine::PluginRegistry;

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
    let options = engine_options(global);
    let registry = PluginRegistry::new(speckit_hygiene::builtin_plugins())?;
    let snapshot = load_and_validate(&options, &registry)?;
    let values = serde_json::to_value(&snapshot.policy)?;
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

fn lookup(value: &serde_json::Value, dotted: &str) -> Option<serde_json::Value> {
    dotted
        .split('.')
        .try_fold(value, |v, part| v.get(part))
        .cloned()
}

pub async fn plugins(global: &GlobalArgs, args: PluginsArgs) -> Result<u8> {
    let engine = super::start_engine(global).await?;
    let plugins = engine.registry().list();
    let failures = engine.registry().failures();
    if args.json {
        let out = serde_json::json!({ "plugins": plugins, "load_errors": failures });
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
            println!("{:<12} FAILED   {}: {}", f.name, f.path.display(), f.error);
        }
    }
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(if failures.is_empty() {
        EXIT_OK
    } else {
        super::EXIT_FAILED
    })
}
