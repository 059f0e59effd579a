//! Loading a policy: built-in defaults < the TOML file < `SPECKIT_` environment variables,
//! then semantic checks, path resolution, and a record of where each value came from.

use super::env::EnvVars;
use super::validate::validate;
use super::Policy;
use chrono::{DateTime, Utc};
use figment::providers::{Format, Serialized, Toml};
use figment::{Figment, Metadata};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a policy came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicySource {
    /// The config file, absolute.
    pub path: PathBuf,
    /// Its folder: relative paths in the policy resolve against it.
    pub dir: PathBuf,
    /// SHA-256 of the file's bytes, or `None` when there was no file.
    pub content_sha256: Option<String>,
}

/// Where one effective value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    Default,
    File { path: PathBuf },
    Env { variable: String },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path } => write!(f, "file {}", path.display()),
            Origin::Env { variable } => write!(f, "environment {variable}"),
        }
    }
}

/// A validated policy with its paths resolved, as one immutable value. Jobs hold an
/// `Arc<PolicySnapshot>` for their whole run; a reload makes a new one.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySnapshot {
    pub policy: Policy,
    pub source: PolicySource,
    /// Each leaf key (`retention.archive_after_days`) and where its value came from.
    pub origins: BTreeMap<String, Origin>,
    /// 0 for the empty start-up policy, then +1 per applied reload.
    pub generation: u64,
    pub loaded_at: DateTime<Utc>,
}

impl PolicySnapshot {
    /// The empty policy the engine starts from before its first load (defaults, no file).
    pub fn empty(config_path: &Path) -> Self {
        let path = absolute(config_path);
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self {
            policy: Policy::default(),
            source: PolicySource {
                path,
                dir,
                content_sha256: None,
            },
            origins: BTreeMap::new(),
            generation: 0,
            loaded_at: Utc::now(),
        }
    }
}

/// Why a policy was not loaded. Each names the file, the key where known, and the cause.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("config file {}: TOML syntax error at line {line}, column {column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}", format_invalid(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// One bad value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Dotted key, such as `retention.purge_after_days`.
    pub key: String,
    /// 1-based line in the config file, where the value came from the file.
    pub line: Option<usize>,
    pub origin: Option<Origin>,
    pub message: String,
}

fn format_invalid(path: &Path, problems: &[Problem]) -> String {
    let mut out = format!("config file {} is invalid:", path.display());
    for p in problems {
        out.push_str("\n  ");
        match (&p.origin, p.line) {
            (Some(Origin::Env { variable }), _) => {
                out.push_str(&format!("{} (from {variable})", p.key))
            }
            (_, Some(line)) => out.push_str(&format!("{} (line {line})", p.key)),
            _ => out.push_str(&p.key),
        }
        out.push_str(": ");
        out.push_str(&p.message);
    }
    out
}

/// Loads and validates the policy at `config_path`.
///
/// `require_file`: a missing file is an error (the user named it) rather than defaults.
/// `env`: the environment to read `SPECKIT_*` variables from (pass `std::env::vars()`).
pub fn load_policy(
    config_path: &Path,
    require_file: bool,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<PolicySnapshot, LoadError> {
    let path = absolute(config_path);
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let content = match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !require_file => None,
        Err(e) => {
            return Err(LoadError::Read {
                path,
                message: e.to_string(),
            })
        }
    };
    let text = match &content {
        Some(bytes) => Some(
            String::from_utf8(bytes.clone()).map_err(|e| LoadError::Read {
                path: path.clone(),
                message: format!("not UTF-8: {e}"),
            })?,
        ),
        None => None,
    };
    if let Some(text) = &text {
        if let Err(e) = text.parse::<toml::Table>() {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            return Err(LoadError::Syntax {
                path,
                line,
                column,
                message: e.message().to_string(),
            });
        }
    }

    let mut figment = Figment::from(Serialized::defaults(Policy::default()));
    if let Some(text) = &text {
        figment = figment.merge(Toml::string(text));
    }
    let env_provider = EnvVars::from_iter(env);
    figment = figment.merge(env_provider.clone());

    let invalid = |problems| LoadError::Invalid {
        path: path.clone(),
        problems,
    };
    let mut policy: Policy = match figment.extract() {
        Ok(policy) => policy,
        Err(errors) => {
            let problems = errors
                .into_iter()
                .map(|e| figment_problem(e, text.as_deref(), &path, &env_provider))
                .collect();
            return Err(invalid(problems));
        }
    };

    let mut problems = validate(&policy);
    let origins = collect_origins(&figment, &policy, &path, &env_provider);
    for p in &mut problems {
        p.origin = origins.get(&p.key).cloned();
        if matches!(p.origin, Some(Origin::File { .. })) {
            p.line = text.as_deref().and_then(|t| key_line(t, &p.key));
        }
    }
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    resolve_paths(&mut policy, &dir);
    Ok(PolicySnapshot {
        policy,
        source: PolicySource {
            path,
            dir,
            content_sha256: content.as_deref().map(sha256_hex),
        },
        origins,
        generation: 0,
        loaded_at: Utc::now(),
    })
}

/// SHA-256 of bytes, as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Expands `~` and resolves a relative path against `base`.
pub fn resolve_path(path: &Path, base: &Path) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn resolve_paths(policy: &mut Policy, dir: &Path) {
    policy.storage.database_path = resolve_path(&policy.storage.database_path, dir);
    policy.evidence.root = resolve_path(&policy.evidence.root, dir);
    for tracker in &mut policy.evidence.tracker_paths {
        *tracker = resolve_path(tracker, dir);
    }
    for agent in &mut policy.spawn.agents {
        if let Some(wd) = &mut agent.working_dir {
            *wd = resolve_path(wd, dir);
        }
    }
    for plugin in policy.plugins.values_mut() {
        plugin.path = resolve_path(&plugin.path, dir);
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

/// The 1-based line where a dotted key is written in the file, using toml_edit's spans.
fn key_line(text: &str, dotted: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text.to_string()).ok()?;
    let mut item: &toml_edit::Item = doc.as_item();
    let mut last_span = None;
    for part in dotted.split('.') {
        if let Ok(index) = part.parse::<usize>() {
            item = match item {
                toml_edit::Item::ArrayOfTables(a) => {
                    let t = a.get(index)?;
                    last_span = t.span().or(last_span);
                    return_table_item(t)?
                }
                toml_edit::Item::Value(toml_edit::Value::Array(a)) => {
                    let v = a.get(index)?;
                    last_span = v.span().or(last_span);
                    break;
                }
                _ => return None,
            };
            continue;
        }
        let table = item.as_table_like()?;
        let (key, child) = table.get_key_value(part)?;
        last_span = key.span().or(last_span);
        item = child;
    }
    last_span.map(|s| line_col(text, s.start).0)
}

fn return_table_item(_t: &toml_edit::Table) -> Option<&toml_edit::Item> {
    // Entries inside an array of tables are looked up no further: the table's line is close
    // enough for an error message.
    None
}

fn figment_problem(
    error: figment::Error,
    text: Option<&str>,
    path: &Path,
    env: &EnvVars,
) -> Problem {
    let mut key_parts = error.path.clone();
    if let figment::error::Kind::UnknownField(field, _) = &error.kind {
        if key_parts.last() != Some(field) {
            key_parts.push(field.clone());
        }
    }
    let key = key_parts.join(".");
    let origin = error
        .metadata
        .as_ref()
        .map(|m| origin_of(m, &key, path, env));
    let line = match origin {
        Some(Origin::Env { .. }) => None,
        _ => text.and_then(|t| key_line(t, &key)),
    };
    let origin = match (origin, line) {
        (Some(Origin::Default) | None, Some(_)) => Some(Origin::File {
            path: path.to_path_buf(),
        }),
        (origin, _) => origin,
    };
    Problem {
        key: if key.is_empty() {
            "(top level)".into()
        } else {
            key
        },
        line,
        origin,
        message: error.kind.to_string(),
    }
}

fn origin_of(metadata: &Metadata, key: &str, path: &Path, env: &EnvVars) -> Origin {
    if metadata.name == EnvVars::NAME {
        Origin::Env {
            variable: env.variable_for(key),
        }
    } else if metadata.name.starts_with("TOML") {
        Origin::File {
            path: path.to_path_buf(),
        }
    } else {
        Origin::Default
    }
}

fn collect_origins(
    figment: &Figment,
    policy: &Policy,
    path: &Path,
    env: &EnvVars,
) -> BTreeMap<String, Origin> {
    let mut keys = Vec::new();
    if let Ok(value) = serde_json::to_value(policy) {
        leaf_keys(&value, String::new(), &mut keys);
    }
    keys.into_iter()
        .map(|key| {
            let origin = figment
                .find_metadata(&key)
                .map(|m| origin_of(m, &key, path, env))
                .unwrap_or(Origin::Default);
            (key, origin)
        })
        .collect()
}

/// Dotted keys of a JSON value's leaves; arrays count as one leaf.
pub fn leaf_keys(value: &serde_json::Value, prefix: String, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_keys(v, key, out);
            }
        }
        _ if !prefix.is_empty() => out.push(prefix),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("speckit.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_file_env_precedence_and_origins() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "[retention]\narchive_after_days = 20\npurge_after_days = 60\n",
        );
        let env = vec![(
            "SPECKIT_RETENTION__PURGE_AFTER_DAYS".to_string(),
            "45".to_string(),
        )];
        let snap = load_policy(&path, true, env).unwrap();
        assert_eq!(snap.policy.retention.archive_after_days, 20);
        assert_eq!(snap.policy.retention.purge_after_days, 45);
        assert_eq!(snap.policy.spawn.max_concurrency, 8);
        assert!(matches!(
            snap.origins["retention.archive_after_days"],
            Origin::File { .. }
        ));
        assert_eq!(
            snap.origins["retention.purge_after_days"],
            Origin::Env {
                variable: "SPECKIT_RETENTION__PURGE_AFTER_DAYS".into()
            }
        );
        assert_eq!(snap.origins["spawn.max_concurrency"], Origin::Default);
    }

    #[test]
    fn speckit_config_variable_is_not_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "");
        let env = vec![("SPECKIT_CONFIG".to_string(), "/x".to_string())];
        assert!(load_policy(&path, true, env).is_ok());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[retention]\n\narchive_after_dayz = 3\n");
        let err = load_policy(&path, true, vec![]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("retention.archive_after_dayz"), "{text}");
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("speckit.toml"), "{text}");
    }

    #[test]
    fn wrong_type_and_negative_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[spawn]\nmax_concurrency = \"many\"\n");
        let text = load_policy(&path, true, vec![]).unwrap_err().to_string();
        assert!(text.contains("spawn.max_concurrency"), "{text}");
        assert!(text.contains("line 2"), "{text}");

        let path = write(dir.path(), "[evidence]\nlimit_mb = -5\n");
        let text = load_policy(&path, true, vec![]).unwrap_err().to_string();
        assert!(text.contains("evidence.limit_mb (line 2)"), "{text}");
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "[retention]\narchive_after_days = 30\npurge_after_days = 30\n[spawn]\nmax_concurrency = 0\n[schedule]\ncleanup = \"not cron\"\n",
        );
        let err = load_policy(&path, true, vec![]).unwrap_err();
        let LoadError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"retention.purge_after_days"), "{keys:?}");
        assert!(keys.contains(&"spawn.max_concurrency"), "{keys:?}");
        assert!(keys.contains(&"schedule.cleanup"), "{keys:?}");
        let purge = problems
            .iter()
            .find(|p| p.key == "retention.purge_after_days")
            .unwrap();
        assert_eq!(purge.line, Some(3));
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[retention]\narchive_after_days = = 3\n");
        let err = load_policy(&path, true, vec![]).unwrap_err();
        assert!(matches!(err, LoadError::Syntax { line: 2, .. }), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "[storage]\ndatabase_path = \"db/c.db\"\n[evidence]\nroot = \"ev\"\n",
        );
        let snap = load_policy(&path, true, vec![]).unwrap();
        assert_eq!(
            snap.policy.storage.database_path,
            dir.path().join("db/c.db")
        );
        assert_eq!(snap.policy.evidence.root, dir.path().join("ev"));
        assert_eq!(
            snap.policy.evidence.tracker_paths,
            vec![dir.path().join("SPEC.md")]
        );
    }

    #[test]
    fn missing_file_is_error_only_when_required() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        assert!(matches!(
            load_policy(&path, true, vec![]),
            Err(LoadError::Read { .. })
        ));
        assert!(load_policy(&path, false, vec![]).is_ok());
    }
}

#[cfg(test)]
mod documented_defaults {
    use super::*;

    /// `config/speckit.toml` documents every field with its default: loading it must give
    /// exactly the built-in defaults.
    #[test]
    fn documented_file_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/speckit.toml");
        let snapshot = load_policy(&path, true, vec![]).unwrap();
        let mut expected = Policy::default();
        resolve_paths(&mut expected, &snapshot.source.dir);
        assert_eq!(snapshot.policy, expected);
        // Every default leaf key is written in the file.
        let missing: Vec<_> = snapshot
            .origins
            .iter()
            .filter(|(k, o)| {
                **o == Origin::Default
                    && !k.starts_with("spawn.agents")
                    && !k.starts_with("plugins")
            })
            .map(|(k, _)| k.clone())
            .collect();
        assert!(missing.is_empty(), "undocumented keys: {missing:?}");
    }
}
