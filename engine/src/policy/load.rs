//! Loading a policy: built-in defaults < the TOML file < `SPECKIT_` environment variables,
//! then semantic checks, path resolution, and a record of where each value came from.

use super::env::EnvVars;
use super::section::PolicyShape;
use super::validate::validate;
use super::{EngineSections, Policy, SchedulePolicy, ENGINE_SECTIONS};
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

/// Loads and validates the policy at `config_path`, for the plugins whose sections and
/// jobs `shape` holds (see [`crate::registry::PluginRegistry::shape`]).
///
/// `require_file`: a missing file is an error (the user named it) rather than defaults.
/// `env`: the environment to read `SPECKIT_*` variables from (pass `std::env::vars()`).
pub fn load_policy(
    config_path: &Path,
    require_file: bool,
    env: impl IntoIterator<Item = (String, String)>,
    shape: &PolicyShape,
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

    let env_provider = EnvVars::from_iter(env);
    let figment = layered(shape, text.as_deref(), &env_provider);
    let problem = |error| figment_problem(error, text.as_deref(), &path, &env_provider);
    let invalid = |problems| LoadError::Invalid {
        path: path.clone(),
        problems,
    };

    let (mut policy, unreadable) = extract(&figment, shape);
    let mut problems: Vec<Problem> = unreadable
        .into_iter()
        .map(|e| e.into_problem(&problem))
        .collect();
    if problems.is_empty() {
        problems = validate(&policy);
    }
    let origins = collect_origins(&figment, &policy, &path, &env_provider);
    for p in &mut problems {
        if p.origin.is_none() {
            // A key the policy does not hold (an unknown job or section) still has a
            // provider that gave it.
            p.origin = origins.get(&p.key).cloned().or_else(|| {
                figment
                    .find_metadata(&p.key)
                    .map(|m| origin_of(m, &p.key, &path, &env_provider))
            });
        }
        if matches!(p.origin, Some(Origin::File { .. })) && p.line.is_none() {
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

/// Defaults (the engine's, each section's, each job's schedule) < the file < environment.
fn layered(shape: &PolicyShape, text: Option<&str>, env: &EnvVars) -> Figment {
    let mut defaults = EngineSections::default();
    defaults.schedule.jobs = shape.jobs.clone();
    let mut figment = Figment::from(Serialized::defaults(DefaultsView(&defaults)));
    for spec in &shape.sections {
        figment = figment.merge(Serialized::default(spec.name(), spec.defaults()));
    }
    if let Some(text) = text {
        figment = figment.merge(Toml::string(text));
    }
    figment.merge(env.clone())
}

/// The engine's defaults as a serializable value (`EngineSections` only deserializes).
struct DefaultsView<'a>(&'a EngineSections);

impl Serialize for DefaultsView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("storage", &self.0.storage)?;
        map.serialize_entry("schedule", &self.0.schedule)?;
        map.serialize_entry("plugins", &self.0.plugins)?;
        map.end()
    }
}

/// A value the loader could not read.
enum ExtractProblem {
    Figment(figment::Error),
    Key { key: String, message: String },
}

impl ExtractProblem {
    fn into_problem(self, from_figment: &impl Fn(figment::Error) -> Problem) -> Problem {
        match self {
            ExtractProblem::Figment(e) => from_figment(e),
            ExtractProblem::Key { key, message } => Problem {
                key,
                line: None,
                origin: None,
                message,
            },
        }
    }
}

/// Reads the engine's sections, the job schedules and every declared section through its
/// type; an undeclared section or job is a problem.
fn extract(figment: &Figment, shape: &PolicyShape) -> (Policy, Vec<ExtractProblem>) {
    let mut problems = Vec::new();
    let engine: EngineSections = figment.extract().unwrap_or_else(|e| {
        problems.extend(e.into_iter().map(ExtractProblem::Figment));
        EngineSections::default()
    });
    let mut policy = Policy {
        storage: engine.storage,
        schedule: engine.schedule,
        plugins: engine.plugins,
        ..Policy::default()
    };
    policy.schedule.jobs = job_schedules(figment, shape, &policy, &mut problems);

    let top: BTreeMap<String, figment::value::Value> = figment.extract().unwrap_or_default();
    let declared: Vec<&str> = shape.section_names().collect();
    for (name, value) in &top {
        if ENGINE_SECTIONS.contains(&name.as_str()) {
            continue;
        }
        if !declared.contains(&name.as_str()) {
            let mut known: Vec<&str> = ENGINE_SECTIONS.to_vec();
            known.extend(&declared);
            problems.push(ExtractProblem::Key {
                key: name.clone(),
                message: format!(
                    "unknown section [{name}]: no registered plugin declares it (sections: {})",
                    known.join(", ")
                ),
            });
        } else if value.as_dict().is_none() {
            problems.push(ExtractProblem::Key {
                key: name.clone(),
                message: format!("[{name}] must be a table"),
            });
        }
    }
    for spec in &shape.sections {
        match spec.parse(&figment.focus(spec.name())) {
            Ok(value) => policy.sections.insert(spec.name(), value),
            Err(errors) => problems.extend((*errors).into_iter().map(|mut e| {
                e.path.insert(0, spec.name().to_string());
                ExtractProblem::Figment(e)
            })),
        }
    }
    (policy, problems)
}

/// `[schedule]`'s job entries over the plugins' defaults; each must be a string naming a
/// job a plugin runs.
fn job_schedules(
    figment: &Figment,
    shape: &PolicyShape,
    policy: &Policy,
    problems: &mut Vec<ExtractProblem>,
) -> BTreeMap<String, String> {
    let mut jobs = shape.jobs.clone();
    let entries: BTreeMap<String, figment::value::Value> =
        figment.extract_inner("schedule").unwrap_or_default();
    for (job, value) in entries {
        if SchedulePolicy::SETTINGS.contains(&job.as_str()) {
            continue;
        }
        let key = format!("schedule.{job}");
        if !shape.jobs.contains_key(&job) {
            let hint = if policy.plugins.contains_key(&job) {
                format!("; a dynamic plugin's schedule is [plugins.{job}] schedule")
            } else {
                let known: Vec<&str> = shape.job_names().collect();
                format!(" (jobs: {})", known.join(", "))
            };
            problems.push(ExtractProblem::Key {
                key,
                message: format!("no plugin runs a job named {job:?}{hint}"),
            });
            continue;
        }
        match value.as_str() {
            Some(expression) => {
                jobs.insert(job, expression.to_string());
            }
            None => problems.push(ExtractProblem::Key {
                key,
                message: "must be a cron expression or \"off\", as a string".into(),
            }),
        }
    }
    jobs
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
    for plugin in policy.plugins.values_mut() {
        plugin.path = resolve_path(&plugin.path, dir);
    }
    for (_, section) in policy.sections.iter_mut() {
        *section = section.resolved(dir);
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
    use crate::policy::{JobSpec, Section, SectionProblems, SectionSpec};
    use serde::Deserialize;

    /// A plugin's section as the loader sees one.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        keep_days: u32,
        drop_days: u32,
        workers: u32,
        root: PathBuf,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                keep_days: 30,
                drop_days: 90,
                workers: 8,
                root: PathBuf::from("data"),
            }
        }
    }

    impl Section for Sample {
        const NAME: &'static str = "sample";

        fn validate(&self, problems: &mut SectionProblems) {
            if self.drop_days <= self.keep_days {
                problems.bad("drop_days", "must be above keep_days");
            }
            if self.workers == 0 {
                problems.bad("workers", "must be at least 1");
            }
        }

        fn resolve_paths(&mut self, resolve: &dyn Fn(&Path) -> PathBuf) {
            self.root = resolve(&self.root);
        }
    }

    fn shape() -> PolicyShape {
        PolicyShape::new()
            .section(SectionSpec::of::<Sample>())
            .unwrap()
            .job(JobSpec::new("tidy", "0 3 * * *"))
            .job(JobSpec::on_request("undo"))
    }

    fn load(path: &Path, env: Vec<(String, String)>) -> Result<PolicySnapshot, LoadError> {
        load_policy(path, true, env, &shape())
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("speckit.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_file_env_precedence_and_origins() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[sample]\nkeep_days = 20\ndrop_days = 60\n");
        let env = vec![("SPECKIT_SAMPLE__DROP_DAYS".to_string(), "45".to_string())];
        let snap = load(&path, env).unwrap();
        let sample = snap.policy.section::<Sample>();
        assert_eq!(sample.keep_days, 20);
        assert_eq!(sample.drop_days, 45);
        assert_eq!(sample.workers, 8);
        assert!(matches!(
            snap.origins["sample.keep_days"],
            Origin::File { .. }
        ));
        assert_eq!(
            snap.origins["sample.drop_days"],
            Origin::Env {
                variable: "SPECKIT_SAMPLE__DROP_DAYS".into()
            }
        );
        assert_eq!(snap.origins["sample.workers"], Origin::Default);
        assert_eq!(snap.origins["schedule.tidy"], Origin::Default);
    }

    #[test]
    fn jobs_run_on_their_default_schedule_unless_the_file_says_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "");
        let snap = load(&path, vec![]).unwrap();
        assert_eq!(snap.policy.schedule.jobs["tidy"], "0 3 * * *");
        assert_eq!(
            snap.policy.scheduled_jobs(),
            vec![("tidy".to_string(), "0 3 * * *".to_string())]
        );

        let path = write(
            dir.path(),
            "[schedule]\ntidy = \"off\"\nundo = \"0 1 * * *\"\n",
        );
        let snap = load(&path, vec![]).unwrap();
        assert_eq!(
            snap.policy.scheduled_jobs(),
            vec![("undo".to_string(), "0 1 * * *".to_string())]
        );
        assert!(matches!(snap.origins["schedule.undo"], Origin::File { .. }));
    }

    #[test]
    fn an_unknown_job_or_section_is_refused_by_name_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[schedule]\ntidyy = \"0 3 * * *\"\n");
        let text = load(&path, vec![]).unwrap_err().to_string();
        assert!(text.contains("schedule.tidyy (line 2)"), "{text}");
        assert!(text.contains("jobs: tidy, undo"), "{text}");

        let path = write(dir.path(), "\n[retention]\narchive_after_days = 3\n");
        let text = load(&path, vec![]).unwrap_err().to_string();
        assert!(text.contains("retention (line 2)"), "{text}");
        assert!(text.contains("no registered plugin declares it"), "{text}");

        let path = write(dir.path(), "sample = 3\n");
        let text = load(&path, vec![]).unwrap_err().to_string();
        assert!(text.contains("[sample] must be a table"), "{text}");

        let path = write(dir.path(), "[schedule]\ntidy = 3\n");
        let text = load(&path, vec![]).unwrap_err().to_string();
        assert!(
            text.contains("schedule.tidy (line 2): must be a cron expression"),
            "{text}"
        );
    }

    #[test]
    fn speckit_config_variable_is_not_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "");
        let env = vec![("SPECKIT_CONFIG".to_string(), "/x".to_string())];
        assert!(load(&path, env).is_ok());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[sample]\n\nkeep_dayz = 3\n");
        let text = load(&path, vec![]).unwrap_err().to_string();
        assert!(text.contains("sample.keep_dayz"), "{text}");
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("speckit.toml"), "{text}");

        let path = write(dir.path(), "[storage]\n\nbusy_timeout = 3\n");
        let text = load(&path, vec![]).unwrap_err().to_string();
        assert!(text.contains("storage.busy_timeout (line 3)"), "{text}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[sample]\nworkers = \"many\"\n");
        let text = load(&path, vec![]).unwrap_err().to_string();
        assert!(text.contains("sample.workers (line 2)"), "{text}");

        let path = write(dir.path(), "[storage]\nbusy_timeout_ms = -5\n");
        let text = load(&path, vec![]).unwrap_err().to_string();
        assert!(text.contains("storage.busy_timeout_ms (line 2)"), "{text}");
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "[sample]\nkeep_days = 30\ndrop_days = 30\nworkers = 0\n[schedule]\ntidy = \"not cron\"\n",
        );
        let err = load(&path, vec![]).unwrap_err();
        let LoadError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"sample.drop_days"), "{keys:?}");
        assert!(keys.contains(&"sample.workers"), "{keys:?}");
        assert!(keys.contains(&"schedule.tidy"), "{keys:?}");
        let drop = problems
            .iter()
            .find(|p| p.key == "sample.drop_days")
            .unwrap();
        assert_eq!(drop.line, Some(3));
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[sample]\nkeep_days = = 3\n");
        let err = load(&path, vec![]).unwrap_err();
        assert!(matches!(err, LoadError::Syntax { line: 2, .. }), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "[storage]\ndatabase_path = \"db/c.db\"\n[sample]\nroot = \"ev\"\n",
        );
        let snap = load(&path, vec![]).unwrap();
        assert_eq!(
            snap.policy.storage.database_path,
            dir.path().join("db/c.db")
        );
        assert_eq!(snap.policy.section::<Sample>().root, dir.path().join("ev"));
        // The JSON view (`check`, reload diffs, dynamic plugins) holds the resolved path.
        assert_eq!(
            snap.policy.sections.to_json()["sample"]["root"],
            serde_json::json!(dir.path().join("ev"))
        );
    }

    #[test]
    fn missing_file_is_error_only_when_required() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        assert!(matches!(
            load_policy(&path, true, vec![], &shape()),
            Err(LoadError::Read { .. })
        ));
        let snap = load_policy(&path, false, vec![], &shape()).unwrap();
        let expected = Sample {
            root: dir.path().join("data"),
            ..Sample::default()
        };
        assert_eq!(*snap.policy.section::<Sample>(), expected);
    }
}
