//! The plugin registry: an explicit list of compiled-in plugins (no registration before
//! `main`), to which the dynamic loader adds and removes entries at reload.

use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::error::EngineError;
use crate::plugin::Plugin;
use crate::policy::{Policy, PolicyShape, PolicySnapshot};

/// How a plugin got into the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PluginOrigin {
    Builtin,
    Dynamic { path: PathBuf },
}

/// One line of `speckit-hygiene plugins`.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub jobs: Vec<String>,
    pub origin: PluginOrigin,
}

/// A plugin that could not be loaded, kept so `plugins` can show why.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFailure {
    pub name: String,
    pub path: PathBuf,
    pub error: String,
}

#[derive(Clone)]
struct Entry {
    plugin: Arc<dyn Plugin>,
    origin: PluginOrigin,
}

#[derive(Default)]
pub struct PluginRegistry {
    entries: RwLock<Vec<Entry>>,
    failures: RwLock<Vec<LoadFailure>>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.list().iter().map(|p| &p.name))
            .finish()
    }
}

impl PluginRegistry {
    /// A registry of compiled-in plugins. Names and job names must be unique.
    pub fn new(builtin: Vec<Arc<dyn Plugin>>) -> Result<Self, EngineError> {
        let registry = Self::default();
        for plugin in builtin {
            registry.add(plugin, PluginOrigin::Builtin)?;
        }
        Ok(registry)
    }

    /// Adds a plugin; refused if its name or one of its jobs is taken, or it declares a
    /// section another plugin declares with another type.
    pub fn add(&self, plugin: Arc<dyn Plugin>, origin: PluginOrigin) -> Result<(), EngineError> {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let name = plugin.name().to_string();
        let jobs = job_names(plugin.as_ref());
        for entry in entries.iter() {
            if entry.plugin.name() == name
                || job_names(entry.plugin.as_ref())
                    .iter()
                    .any(|j| jobs.contains(j))
            {
                return Err(EngineError::DuplicatePlugin(name));
            }
        }
        let mut shape = shape_of_entries(&entries)?;
        for spec in plugin.sections() {
            shape
                .add_section(spec)
                .map_err(|e| EngineError::PluginConflict {
                    plugin: name.clone(),
                    message: e.to_string(),
                })?;
        }
        entries.push(Entry { plugin, origin });
        Ok(())
    }

    /// The sections and jobs of every registered plugin, for the policy loader.
    pub fn shape(&self) -> PolicyShape {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        // `add` refused every conflict, so this cannot fail.
        shape_of_entries(&entries).unwrap_or_default()
    }

    /// Removes a dynamic plugin by name (built-ins stay). Returns whether one was removed.
    pub fn remove_dynamic(&self, name: &str) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let before = entries.len();
        entries.retain(|e| {
            !(e.plugin.name() == name && matches!(e.origin, PluginOrigin::Dynamic { .. }))
        });
        entries.len() != before
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Plugin>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|e| e.plugin.name() == name)
            .map(|e| e.plugin.clone())
    }

    /// The plugin that runs `job`.
    pub fn for_job(&self, job: &str) -> Option<Arc<dyn Plugin>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|e| e.plugin.jobs().iter().any(|j| j.name == job))
            .map(|e| e.plugin.clone())
    }

    /// Every job name any plugin runs.
    pub fn jobs(&self) -> Vec<String> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|e| job_names(e.plugin.as_ref()))
            .collect()
    }

    pub fn list(&self) -> Vec<PluginInfo> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|e| PluginInfo {
                name: e.plugin.name().to_string(),
                version: e.plugin.version().to_string(),
                jobs: job_names(e.plugin.as_ref()),
                origin: e.origin.clone(),
            })
            .collect()
    }

    pub fn set_failures(&self, failures: Vec<LoadFailure>) {
        *self.failures.write().unwrap_or_else(|e| e.into_inner()) = failures;
    }

    pub fn failures(&self) -> Vec<LoadFailure> {
        self.failures
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The plugins now registered. Callers iterate over this copy, so no plugin code runs
    /// while the registry's lock is held.
    fn plugins(&self) -> Vec<Arc<dyn Plugin>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|e| e.plugin.clone())
            .collect()
    }

    /// Asks every plugin to check a candidate policy.
    pub fn validate(&self, policy: &Policy) -> Result<(), EngineError> {
        for plugin in self.plugins() {
            plugin
                .validate(policy)
                .map_err(|message| EngineError::PluginPolicy {
                    plugin: plugin.name().to_string(),
                    message,
                })?;
        }
        Ok(())
    }

    /// Tells every plugin a policy was applied.
    pub fn apply(&self, snapshot: &PolicySnapshot) {
        for plugin in self.plugins() {
            plugin.apply(snapshot);
        }
    }
}

fn job_names(plugin: &dyn Plugin) -> Vec<String> {
    plugin.jobs().into_iter().map(|j| j.name).collect()
}

/// The policy shape of some plugins: their sections and their jobs' default schedules.
/// Dynamic plugins' jobs are scheduled by `[plugins.<name>] schedule`, not `[schedule]`.
fn shape_of_entries(entries: &[Entry]) -> Result<PolicyShape, EngineError> {
    let mut shape = PolicyShape::new();
    for Entry { plugin, origin } in entries {
        for spec in plugin.sections() {
            shape
                .add_section(spec)
                .map_err(|e| EngineError::PluginConflict {
                    plugin: plugin.name().to_string(),
                    message: e.to_string(),
                })?;
        }
        if matches!(origin, PluginOrigin::Dynamic { .. }) {
            continue;
        }
        for job in plugin.jobs() {
            shape.add_job(job);
        }
    }
    Ok(shape)
}

/// The policy shape of some compiled-in plugins (to load a policy without an engine).
pub fn policy_shape(plugins: Vec<Arc<dyn Plugin>>) -> Result<PolicyShape, EngineError> {
    Ok(PluginRegistry::new(plugins)?.shape())
}
