//! The vacuum plugin: migrates the consensus database to incremental auto-vacuum, frees
//! pages in chunks, checkpoints, and checks integrity. (Being built: see issue 3.)

use speckit_engine::plugin::BoxFuture;
use speckit_engine::{JobContext, JobReport, Plugin, PluginError};

#[derive(Debug, Default)]
pub struct VacuumPlugin;

impl Plugin for VacuumPlugin {
    fn name(&self) -> &str {
        "vacuum"
    }
    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }
    fn jobs(&self) -> Vec<String> {
        vec!["vacuum".into(), "integrity_check".into()]
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

impl VacuumPlugin {
    pub fn new() -> Self {
        Self
    }
}
