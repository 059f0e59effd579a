//! speckit-hygiene as a library: the compiled-in plugins, the demo workspace, and the API a
//! host application embeds at start-up. Nothing here writes to stdout; only the binary does.

pub mod demo;
pub mod demo_agents;
pub mod embed;

use std::sync::Arc;

pub use embed::{EmbedError, EngineBuilder, EngineHandle};
pub use speckit_engine as engine;
use speckit_engine::Plugin;

/// The plugins compiled into speckit-hygiene, in the order `plugins` lists them.
pub fn builtin_plugins() -> Vec<Arc<dyn Plugin>> {
    vec![
        Arc::new(speckit_retention::RetentionPlugin::new()),
        Arc::new(speckit_vacuum::VacuumPlugin::new()),
        Arc::new(speckit_spawn::SpawnPlugin::new()),
    ]
}

/// The policy shape of the compiled-in plugins: their sections and jobs, for loading a
/// `speckit.toml` without starting an engine.
pub fn builtin_shape() -> speckit_engine::policy::PolicyShape {
    speckit_engine::PluginRegistry::new(builtin_plugins())
        .map(|registry| registry.shape())
        .unwrap_or_default()
}
