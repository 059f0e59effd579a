//! Dynamic plugins: shared libraries named in `[plugins.<name>]`, loaded through the C ABI
//! of `speckit-plugin-sdk` and run like compiled-in plugins.
//!
//! At every reload (start-up included) [`DynamicLoader::prepare`] loads each library the
//! candidate policy names and has it validate its own `[plugins.<name>.config]`; when the
//! policy is applied, [`DynamicLoader::install`] registers new plugins, unregisters
//! removed ones, and records load failures for `speckit-hygiene plugins`.
//!
//! Libraries are never unloaded. A Rust library registers thread-local destructors and
//! may have threads of its own; `dlclose` would unmap code they still run. So removing a
//! `[plugins.x]` section only unregisters the plugin (it is no longer scheduled or
//! runnable), and pointing `path` at a new file loads that file alongside the old one.
//! The dynamic loader returns the already-loaded library for a path it has seen, so a new
//! version must come from a new path; one replaced in place at the same path is reported
//! and the version loaded first keeps running.
//!
//! A plugin's own load failure (bad file, bad ABI, a panic or timeout in `validate`) does
//! not reject the policy: the rest applies and the failure is listed. A plugin that
//! rejects its config does reject the policy, like any invalid value.

mod call;
pub mod error;
pub mod library;
pub mod locate;
mod plugin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use error::{CallError, PluginLoadError};
pub use library::{LoadedLibrary, PluginFunction};
pub use locate::FileIdentity;
pub use plugin::DynamicPlugin;

use crate::error::EngineError;
use crate::policy::Policy;
use crate::registry::{LoadFailure, PluginOrigin, PluginRegistry};

/// The plugins a candidate policy names, loaded and validated, ready to install.
#[derive(Debug, Default)]
pub struct PreparedPlugins {
    pub plugins: Vec<Arc<DynamicPlugin>>,
    pub failures: Vec<LoadFailure>,
}

/// One library loaded in this process, for diagnostics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadedLibraryInfo {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub sdk_version: String,
}

/// Loads plugin libraries (each once per process) and keeps the registry's dynamic
/// entries in step with the policy.
#[derive(Debug, Default)]
pub struct DynamicLoader {
    /// By canonical path. Entries are never removed: the libraries stay loaded.
    libraries: Mutex<BTreeMap<PathBuf, Arc<LoadedLibrary>>>,
    /// What `install` last registered, by plugin name.
    installed: Mutex<BTreeMap<String, Arc<DynamicPlugin>>>,
}

impl DynamicLoader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads the library at `path` (a file, or a folder holding one), or returns the one
    /// already loaded from there. The second value is a problem to report alongside a
    /// library that is still usable (replaced on disk since it was loaded).
    pub fn load(
        &self,
        path: &Path,
    ) -> Result<(Arc<LoadedLibrary>, Option<PluginLoadError>), PluginLoadError> {
        let file = locate::locate(path)?;
        let identity = locate::check_permissions(&file)?;
        let mut libraries = self.libraries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(loaded) = libraries.get(&file) {
            let warning =
                (loaded.identity() != identity).then(|| PluginLoadError::ReplacedOnDisk {
                    path: file.clone(),
                    version: loaded.version().to_string(),
                });
            return Ok((loaded.clone(), warning));
        }
        let loaded = Arc::new(library::open(&file, identity)?);
        tracing::info!(
            path = %file.display(),
            name = loaded.name(),
            version = loaded.version(),
            sdk = loaded.sdk_version(),
            "plugin library loaded"
        );
        libraries.insert(file, loaded.clone());
        Ok((loaded, None))
    }

    /// Loads every plugin `policy` names and has each validate its config. Blocking: each
    /// validation waits up to the plugin's `call_timeout_ms`.
    ///
    /// Errors only when a plugin rejects its config (the policy is invalid); a plugin that
    /// cannot be loaded, or crashes or hangs in `validate`, becomes a failure instead.
    pub fn prepare(
        &self,
        policy: &Policy,
        registry: &PluginRegistry,
    ) -> Result<PreparedPlugins, EngineError> {
        let mut prepared = PreparedPlugins::default();
        let installed = self
            .installed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (name, section) in &policy.plugins {
            let fail = |error: String| LoadFailure {
                name: name.clone(),
                path: section.path.clone(),
                error,
            };
            if !installed.contains_key(name)
                && (registry.get(name).is_some() || registry.jobs().contains(name))
            {
                prepared.failures.push(fail(format!(
                    "the name {name:?} is taken by a compiled-in plugin or job; rename [plugins.{name}]"
                )));
                continue;
            }
            let library = match self.load(&section.path) {
                Ok((library, warning)) => {
                    if let Some(warning) = warning {
                        tracing::warn!(plugin = %name, "{warning}");
                        prepared.failures.push(fail(warning.to_string()));
                    }
                    library
                }
                Err(e) => {
                    tracing::warn!(plugin = %name, "plugin not loaded: {e}");
                    prepared.failures.push(fail(e.to_string()));
                    continue;
                }
            };
            // Keep the registered instance when it runs the same library, so its record
            // of a hung call survives the reload.
            let plugin = match installed.get(name) {
                Some(existing) if Arc::ptr_eq(existing.library(), &library) => existing.clone(),
                _ => Arc::new(DynamicPlugin::new(name.clone(), library.clone())),
            };
            match plugin.validate_config(policy) {
                Ok(()) => prepared.plugins.push(plugin),
                Err(CallError::Refused(message)) => {
                    return Err(EngineError::PluginPolicy {
                        plugin: name.clone(),
                        message: format!(
                            "[plugins.{name}.config]: {message} (checked by {})",
                            library.path().display()
                        ),
                    })
                }
                Err(e) => {
                    let error = format!(
                        "{}: validating [plugins.{name}.config]: {e}",
                        library.path().display()
                    );
                    tracing::warn!(plugin = %name, "plugin not loaded: {error}");
                    prepared.failures.push(fail(error));
                }
            }
        }
        Ok(prepared)
    }

    /// Makes the registry's dynamic plugins those of `prepared`: unregisters plugins no
    /// longer named (or now from another library), registers new ones, and records the
    /// failures. Their libraries stay loaded.
    pub fn install(&self, registry: &PluginRegistry, prepared: PreparedPlugins) {
        let mut installed = self.installed.lock().unwrap_or_else(|e| e.into_inner());
        let mut failures = prepared.failures;
        let mut next = BTreeMap::new();
        for (name, old) in installed.iter() {
            let kept = prepared.plugins.iter().any(|p| Arc::ptr_eq(p, old));
            if !kept {
                registry.remove_dynamic(name);
                tracing::info!(plugin = %name, path = %old.library().path().display(), "dynamic plugin unregistered (its library stays loaded)");
            }
        }
        for plugin in prepared.plugins {
            let name = crate::plugin::Plugin::name(plugin.as_ref()).to_string();
            let already = installed
                .get(&name)
                .is_some_and(|old| Arc::ptr_eq(old, &plugin));
            if !already {
                let origin = PluginOrigin::Dynamic {
                    path: plugin.library().path().to_path_buf(),
                };
                if let Err(e) = registry.add(plugin.clone(), origin) {
                    failures.push(LoadFailure {
                        name: name.clone(),
                        path: plugin.library().path().to_path_buf(),
                        error: e.to_string(),
                    });
                    continue;
                }
                tracing::info!(plugin = %name, path = %plugin.library().path().display(), version = plugin.library().version(), "dynamic plugin registered");
            }
            next.insert(name, plugin);
        }
        *installed = next;
        registry.set_failures(failures);
    }

    /// Every library loaded so far (including ones no plugin uses any more).
    pub fn loaded(&self) -> Vec<LoadedLibraryInfo> {
        self.libraries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|l| LoadedLibraryInfo {
                path: l.path().to_path_buf(),
                name: l.name().to_string(),
                version: l.version().to_string(),
                sdk_version: l.sdk_version().to_string(),
            })
            .collect()
    }
}
