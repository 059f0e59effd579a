//! The spawn plugin: starts a stage's agents in parallel and measures every spawn.
//! (Being built: see issue 6.)

use speckit_engine::plugin::BoxFuture;
use speckit_engine::{JobContext, JobReport, Plugin, PluginError};

#[derive(Debug, Default)]
pub struct SpawnPlugin;

impl Plugin for SpawnPlugin {
    fn name(&self) -> &str {
        "spawn"
    }
    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }
    fn jobs(&self) -> Vec<String> {
        vec!["spawn".into()]
    }
    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async move {
            Err(PluginError::Failed(format!(
                "job {} is not built yet",
                ctx.job
            )))
        })
    }
}

impl SpawnPlugin {
    pub fn new() -> Self {
        Self
    }
}
