//! Plugin-declared policy sections and jobs: a plugin names its `[section]`, gives its
//! defaults, typed settings and checks, and the jobs it runs with their default schedules;
//! the loader layers, checks and parses each section like the engine's own, and jobs read
//! it back as its type ([`Policy::section`](super::Policy::section)).
//!
//! The engine knows no section but its own (`[storage]`, `[schedule]`, `[plugins]`): what a
//! plugin's section means is the plugin's business. Two plugins may declare the same
//! section only with the same type (the spawn plugin reads retention's `[evidence]`).

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::load::resolve_path;

/// A plugin's part of `speckit.toml`: one top-level table, read into this type.
///
/// Keep the type strict (`#[serde(deny_unknown_fields, default)]`), each field documented
/// with its unit in its name, and document it in `config/speckit.toml`.
pub trait Section:
    Serialize + DeserializeOwned + Default + Clone + fmt::Debug + Send + Sync + 'static
{
    /// The table's name in `speckit.toml` (`retention` for `[retention]`).
    const NAME: &'static str;

    /// Checks the types cannot express; each problem names its key within the section.
    fn validate(&self, _problems: &mut SectionProblems) {}

    /// Values that are valid but probably not what the user meant (`check` prints them).
    fn warnings(&self, _warnings: &mut SectionProblems) {}

    /// Resolves the section's relative paths: `resolve` expands `~` and joins a relative
    /// path to the config file's folder.
    fn resolve_paths(&mut self, _resolve: &dyn Fn(&Path) -> PathBuf) {}
}

/// Problems found in one section, each under its key relative to the section
/// (`purge_after_days`, `agents.0.name`).
#[derive(Debug, Default)]
pub struct SectionProblems {
    found: Vec<(String, String)>,
}

impl SectionProblems {
    /// Records that `key` (within the section) is wrong, and why.
    pub fn bad(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.found.push((key.into(), message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    pub(super) fn into_vec(self) -> Vec<(String, String)> {
        self.found
    }
}

/// A section's type, erased, as the loader handles it.
#[derive(Clone, Copy)]
pub struct SectionSpec {
    name: &'static str,
    type_id: fn() -> TypeId,
    type_name: fn() -> &'static str,
    defaults: fn() -> serde_json::Value,
    parse: fn(&figment::Figment) -> Result<SectionValue, Box<figment::Error>>,
}

impl fmt::Debug for SectionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ({})", self.name, (self.type_name)())
    }
}

impl SectionSpec {
    /// The spec of section type `T`.
    pub fn of<T: Section>() -> Self {
        Self {
            name: T::NAME,
            type_id: TypeId::of::<T>,
            type_name: std::any::type_name::<T>,
            defaults: || serde_json::to_value(T::default()).unwrap_or_default(),
            // The loader passes the figment focused on this section: error paths are
            // then relative to it (`Figment::extract_inner` would append the section's
            // name after the field's).
            parse: |section| Ok(SectionValue::new(section.extract::<T>().map_err(Box::new)?)),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub(super) fn defaults(&self) -> serde_json::Value {
        (self.defaults)()
    }

    pub(super) fn parse(
        &self,
        figment: &figment::Figment,
    ) -> Result<SectionValue, Box<figment::Error>> {
        (self.parse)(figment)
    }

    pub(crate) fn same_type(&self, other: &SectionSpec) -> bool {
        (self.type_id)() == (other.type_id)()
    }

    pub(crate) fn type_name(&self) -> &'static str {
        (self.type_name)()
    }
}

/// A job a plugin runs and when it runs unless `[schedule] <job>` says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub name: String,
    /// A cron expression, or `"off"`: run on request only.
    pub default_schedule: String,
}

impl JobSpec {
    pub fn new(name: impl Into<String>, default_schedule: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            default_schedule: default_schedule.into(),
        }
    }

    /// A job that runs only on request unless `[schedule]` gives it a time.
    pub fn on_request(name: impl Into<String>) -> Self {
        Self::new(name, "off")
    }
}

/// What the loader needs to know of the registered plugins: their sections and their
/// jobs' default schedules.
#[derive(Debug, Clone, Default)]
pub struct PolicyShape {
    pub(super) sections: Vec<SectionSpec>,
    pub(super) jobs: BTreeMap<String, String>,
}

impl PolicyShape {
    /// An empty shape: the engine's own sections only, no job.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a section; a second declaration of the same name must have the same type.
    pub fn section(mut self, spec: SectionSpec) -> Result<Self, ShapeConflict> {
        self.add_section(spec)?;
        Ok(self)
    }

    pub(crate) fn add_section(&mut self, spec: SectionSpec) -> Result<(), ShapeConflict> {
        if super::ENGINE_SECTIONS.contains(&spec.name) {
            return Err(ShapeConflict::EngineSection(spec.name));
        }
        match self.sections.iter().find(|s| s.name == spec.name) {
            Some(known) if known.same_type(&spec) => Ok(()),
            Some(known) => Err(ShapeConflict::SectionType {
                section: spec.name,
                first: known.type_name(),
                second: spec.type_name(),
            }),
            None => {
                self.sections.push(spec);
                Ok(())
            }
        }
    }

    pub(crate) fn add_job(&mut self, job: JobSpec) {
        self.jobs.insert(job.name, job.default_schedule);
    }

    /// Adds a job and its default schedule.
    pub fn job(mut self, job: JobSpec) -> Self {
        self.add_job(job);
        self
    }

    pub fn section_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.sections.iter().map(|s| s.name)
    }

    pub fn job_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.jobs.keys().map(String::as_str)
    }
}

/// Two declarations that cannot both hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeConflict {
    #[error("section [{0}] is the engine's own; a plugin cannot declare it")]
    EngineSection(&'static str),
    #[error("section [{section}] is declared twice with different types ({first} and {second})")]
    SectionType {
        section: &'static str,
        first: &'static str,
        second: &'static str,
    },
}

/// One parsed section: its typed value and, for `check` and reload diffs, its JSON.
#[derive(Clone)]
pub struct SectionValue {
    typed: Arc<dyn Any + Send + Sync>,
    json: serde_json::Value,
    /// The type's functions, kept so the loader can check and resolve the erased value.
    ops: &'static SectionOps,
}

/// The per-type operations on an erased section value.
pub(super) struct SectionOps {
    validate: fn(&(dyn Any + Send + Sync)) -> Vec<(String, String)>,
    warnings: fn(&(dyn Any + Send + Sync)) -> Vec<(String, String)>,
    resolve: fn(&(dyn Any + Send + Sync), &Path) -> SectionValue,
}

trait HasOps {
    const OPS: SectionOps;
}

impl<T: Section> HasOps for T {
    const OPS: SectionOps = SectionOps {
        validate: |any| {
            let mut problems = SectionProblems::default();
            if let Some(value) = any.downcast_ref::<T>() {
                value.validate(&mut problems);
            }
            problems.into_vec()
        },
        warnings: |any| {
            let mut warnings = SectionProblems::default();
            if let Some(value) = any.downcast_ref::<T>() {
                value.warnings(&mut warnings);
            }
            warnings.into_vec()
        },
        resolve: |any, dir| {
            let mut value = any.downcast_ref::<T>().cloned().unwrap_or_default();
            value.resolve_paths(&|path| resolve_path(path, dir));
            SectionValue::new(value)
        },
    };
}

impl fmt::Debug for SectionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.json.fmt(f)
    }
}

impl PartialEq for SectionValue {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl SectionValue {
    pub fn new<T: Section>(value: T) -> Self {
        let json = serde_json::to_value(&value).unwrap_or_default();
        Self {
            typed: Arc::new(value),
            json,
            ops: &<T as HasOps>::OPS,
        }
    }

    pub(super) fn validate(&self) -> Vec<(String, String)> {
        (self.ops.validate)(self.typed.as_ref())
    }

    pub(super) fn warnings(&self) -> Vec<(String, String)> {
        (self.ops.warnings)(self.typed.as_ref())
    }

    pub(super) fn resolved(&self, dir: &Path) -> SectionValue {
        (self.ops.resolve)(self.typed.as_ref(), dir)
    }

    pub fn json(&self) -> &serde_json::Value {
        &self.json
    }

    fn get<T: Section>(&self) -> Option<Arc<T>> {
        Arc::downcast::<T>(self.typed.clone()).ok()
    }
}

/// The plugin sections of a policy, by name. Serialized as top-level tables, so keys read
/// as they are written (`retention.archive_after_days`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sections {
    by_name: BTreeMap<String, SectionValue>,
}

impl Serialize for Sections {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.by_name.iter().map(|(k, v)| (k, &v.json)))
    }
}

impl Sections {
    /// Section `T` as loaded; its defaults when the policy has no such section (a policy
    /// built by hand, or loaded without the plugin that declares it).
    pub fn get<T: Section>(&self) -> Arc<T> {
        self.by_name
            .get(T::NAME)
            .and_then(SectionValue::get::<T>)
            .unwrap_or_else(|| Arc::new(T::default()))
    }

    /// Replaces section `T` (tests and hosts building a policy by hand).
    pub fn set<T: Section>(&mut self, value: T) {
        self.by_name
            .insert(T::NAME.to_string(), SectionValue::new(value));
    }

    /// Changes section `T` in place, starting from its defaults when it is missing.
    pub fn update<T: Section>(&mut self, change: impl FnOnce(&mut T)) {
        let mut value = (*self.get::<T>()).clone();
        change(&mut value);
        self.set(value);
    }

    pub(super) fn insert(&mut self, name: &str, value: SectionValue) {
        self.by_name.insert(name.to_string(), value);
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &SectionValue)> {
        self.by_name.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut SectionValue)> {
        self.by_name.iter_mut()
    }

    /// Each section's values as JSON (the dynamic plugins' read-only view of the policy).
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.by_name
            .iter()
            .map(|(k, v)| (k.clone(), v.json.clone()))
            .collect()
    }
}
