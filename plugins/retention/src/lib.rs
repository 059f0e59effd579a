//! The retention plugin: evidence layout, archive, purge, restore, size limits and stats.
//! (Being built: see issues 4 and 5.)

pub mod layout;

use speckit_engine::plugin::BoxFuture;
use speckit_engine::{JobContext, JobReport, Plugin, PluginError};

#[derive(Debug, Default)]
pub struct RetentionPlugin;

impl Plugin for RetentionPlugin {
    fn name(&self) -> &str {
        "retention"
    }
    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }
    fn jobs(&self) -> Vec<String> {
        vec!["cleanup".into()]
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

impl RetentionPlugin {
    pub fn new() -> Self {
        Self
    }
}
