//! Dynamic plugins: shared libraries named in `[plugins.<name>]`, loaded through the C ABI
//! of `speckit-plugin-sdk` in plugin host processes of ours, and run like compiled-in
//! plugins.
//!
//! At every reload (start-up included) [`DynamicLoader::prepare`] loads each library the
//! candidate policy names (starting a host process that loads it), reads its migrations,
//! and has it validate its own `[plugins.<name>.config]`; when the policy is applied,
//! [`DynamicLoader::install`] registers new plugins, unregisters removed ones, stops the
//! hosts of libraries no plugin uses, and records load failures for
//! `speckit-hygiene plugins`.
//!
//! A library never runs in the engine's process. A crash, `exit()`, hang or runaway
//! allocation ends its host process and fails that call with the cause; the next call
//! starts a new host. A library replaced on disk is loaded afresh at the next reload (a
//! host started after that, without a reload, refuses a file other than the one checked).
//!
//! A plugin's own load failure (bad file, bad ABI, a crash, panic or timeout in
//! `validate`) does not reject the policy: the rest applies and the failure is listed. A
//! plugin that rejects its config does reject the policy, like any invalid value.

mod bridge;
pub mod error;
pub mod library;
pub mod locate;
mod plugin;
pub mod process;
mod protocol;
mod serve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use error::{CallError, PluginLoadError};
pub use library::{LoadedLibrary, PluginFunction};
pub use locate::FileIdentity;
pub use plugin::{DynamicPlugin, LoadedPlugin};
pub use process::{CallLimits, HostCommand, LibraryInfo, PluginHost};
pub use serve::serve_if_requested;

use speckit_plugin_sdk::storage::{table_prefix, Description};

use crate::error::EngineError;
use crate::policy::{DynamicPluginPolicy, Policy};
use crate::registry::{LoadFailure, PluginOrigin, PluginRegistry};
use crate::storage::sandbox::Sandbox;
use crate::storage::{ComponentSchema, Migration, MigrationStep};

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

/// Loads plugin libraries in host processes and keeps the registry's dynamic entries in
/// step with the policy.
#[derive(Debug)]
pub struct DynamicLoader {
    /// The program started as a plugin host.
    command: HostCommand,
    /// By canonical path: the library file each path held when it was last loaded.
    libraries: Mutex<BTreeMap<PathBuf, Arc<LoadedPlugin>>>,
    /// What `install` last registered, by plugin name.
    installed: Mutex<BTreeMap<String, Arc<DynamicPlugin>>>,
}

impl DynamicLoader {
    pub fn new(command: HostCommand) -> Self {
        Self {
            command,
            libraries: Mutex::default(),
            installed: Mutex::default(),
        }
    }

    /// Loads the library at `path` (a file, or a folder holding one) in a host process,
    /// or returns the one loaded from there before when the file is unchanged.
    pub fn load(
        &self,
        path: &Path,
        section: &DynamicPluginPolicy,
    ) -> Result<Arc<LoadedPlugin>, PluginLoadError> {
        let file = locate::locate(path)?;
        let identity = locate::check_permissions(&file)?;
        if let Some(loaded) = self
            .libraries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&file)
            .filter(|l| l.host.identity() == identity)
        {
            return Ok(loaded.clone());
        }
        let limits = plugin::call_limits(section);
        let host = PluginHost::start(&self.command, &file, identity, limits)?;
        let loaded = Arc::new(describe(host, limits)?);
        let info = loaded.host.info();
        tracing::info!(
            path = %file.display(),
            name = info.name,
            version = info.version,
            sdk = info.sdk_version,
            "plugin library loaded in a plugin host"
        );
        self.libraries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(file, loaded.clone());
        Ok(loaded)
    }

    /// Loads every plugin `policy` names and has each validate its config. Blocking: each
    /// validation waits up to the plugin's `call_timeout_ms`.
    ///
    /// Errors only when a plugin rejects its config (the policy is invalid); a plugin that
    /// cannot be loaded, or crashes or hangs in `validate`, becomes a failure instead
    /// (logged by `install`, or reported by whoever only prepares).
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
            let library = match self.load(&section.path, section) {
                Ok(library) => library,
                Err(e) => {
                    prepared.failures.push(fail(e.to_string()));
                    continue;
                }
            };
            // Keep the registered instance when it runs the same library, so its record
            // of a hung call survives the reload.
            let plugin = match installed.get(name) {
                Some(existing) if Arc::ptr_eq(existing.loaded(), &library) => existing.clone(),
                _ => Arc::new(DynamicPlugin::new(name.clone(), library.clone())),
            };
            match plugin.validate_config(policy) {
                Ok(()) => prepared.plugins.push(plugin),
                Err(CallError::Refused(message)) => {
                    return Err(EngineError::PluginPolicy {
                        plugin: name.clone(),
                        message: format!(
                            "[plugins.{name}.config]: {message} (checked by {})",
                            library.host.path().display()
                        ),
                    })
                }
                Err(e) => {
                    let error = format!(
                        "{}: validating [plugins.{name}.config]: {e}",
                        library.host.path().display()
                    );
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
        // Logged here, once the policy applies, not in `prepare`: `check` prepares only,
        // and reports each failure itself.
        for failure in &failures {
            tracing::warn!(plugin = %failure.name, "plugin not loaded: {}", failure.error);
        }
        let mut next = BTreeMap::new();
        for (name, old) in installed.iter() {
            let kept = prepared.plugins.iter().any(|p| Arc::ptr_eq(p, old));
            if !kept {
                registry.remove_dynamic(name);
                tracing::info!(plugin = %name, path = %old.loaded().host.path().display(), "dynamic plugin unregistered");
            }
        }
        for plugin in prepared.plugins {
            let name = crate::plugin::Plugin::name(plugin.as_ref()).to_string();
            let already = installed
                .get(&name)
                .is_some_and(|old| Arc::ptr_eq(old, &plugin));
            if !already {
                let origin = PluginOrigin::Dynamic {
                    path: plugin.loaded().host.path().to_path_buf(),
                };
                if let Err(e) = registry.add(plugin.clone(), origin) {
                    failures.push(LoadFailure {
                        name: name.clone(),
                        path: plugin.loaded().host.path().to_path_buf(),
                        error: e.to_string(),
                    });
                    continue;
                }
                tracing::info!(plugin = %name, path = %plugin.loaded().host.path().display(), version = plugin.loaded().host.info().version, "dynamic plugin registered");
            }
            next.insert(name, plugin);
        }
        // Libraries no plugin uses any more: their host processes end with them.
        self.libraries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, library| next.values().any(|p| Arc::ptr_eq(p.loaded(), library)));
        *installed = next;
        registry.set_failures(failures);
    }

    /// Every library loaded in a host now.
    pub fn loaded(&self) -> Vec<LoadedLibraryInfo> {
        self.libraries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|l| {
                let info = l.host.info();
                LoadedLibraryInfo {
                    path: l.host.path().to_path_buf(),
                    name: info.name.clone(),
                    version: info.version.clone(),
                    sdk_version: info.sdk_version.clone(),
                }
            })
            .collect()
    }
}

/// Reads what a freshly loaded library declares (its migrations) into a [`LoadedPlugin`].
/// The schema is leaked: one per library file loaded, for the rest of the process, as the
/// storage keeps schemas by `&'static`.
fn describe(host: PluginHost, limits: CallLimits) -> Result<LoadedPlugin, PluginLoadError> {
    let bad = |reason: String| PluginLoadError::BadMigrations {
        path: host.path().to_path_buf(),
        reason,
    };
    let mut no_storage =
        |_: &str| r#"{"result":"refused","message":"no storage while describing"}"#.to_string();
    let output = host
        .call(PluginFunction::Describe, b"", limits, &mut no_storage)
        .map_err(|e| bad(format!("describe: {e}")))?;
    let description: Description = serde_json::from_slice(&output)
        .map_err(|e| bad(format!("describe returned no description: {e}")))?;
    let prefix = table_prefix(&host.info().name);
    let mut last = 0;
    for m in &description.migrations {
        if m.version <= last {
            return Err(bad(format!(
                "migration {:?} has version {}, not above the one before ({last})",
                m.name, m.version
            )));
        }
        last = m.version;
    }
    let schema = (!description.migrations.is_empty()).then(|| {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let migrations: Vec<Migration> = description
            .migrations
            .into_iter()
            .map(|m| Migration {
                version: m.version,
                name: leak(m.name),
                apply: MigrationStep::Sql(leak(m.sql)),
            })
            .collect();
        let schema: &'static ComponentSchema = Box::leak(Box::new(ComponentSchema {
            component: leak(prefix.trim_end_matches('_').to_string()),
            migrations: Box::leak(migrations.into_boxed_slice()),
            sandbox: Some(Box::leak(Box::new(Sandbox {
                table_prefix: prefix.clone(),
                schema_changes: true,
            }))),
        }));
        schema
    });
    Ok(LoadedPlugin {
        host,
        table_prefix: prefix,
        schema,
    })
}
