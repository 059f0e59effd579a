//! The retention plugin: evidence layout, archive, purge, restore, size limits and stats.
//!
//! Jobs: `cleanup` (plan, then archive old evidence and database rows of inactive SPECs,
//! offload old archives to object storage, purge old archives; see [`plan`], [`execute`]
//! and [`offload`]) and `restore` (see [`restore`]).
//! Size limits and stats: issue 5 ([`stats`], [`limits`], [`guard`]).

pub mod age;
pub mod archive;
pub mod catalog;
pub mod error;
pub mod execute;
pub mod faults;
pub mod folder;
pub mod fsutil;
pub mod git_times;
pub mod guard;
pub mod job;
pub mod layout;
pub mod limits;
pub mod lock;
pub mod offload;
pub mod plan;
pub mod removal_guard;
pub mod restore;
pub mod rows;
pub mod schema;
pub mod settings;
pub mod sidecar;
pub mod stats;
pub mod summary;
pub mod tracker;
pub mod verify;

use speckit_engine::plugin::BoxFuture;
use speckit_engine::policy::{JobSpec, SectionSpec};
use speckit_engine::storage::ComponentSchema;
use speckit_engine::{JobContext, JobReport, Plugin, PluginError};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use faults::Faults;
use plan::Action;
pub use schema::RETENTION_SCHEMA;
pub use settings::{
    EvidencePolicy, NonSpecEntries, OffloadPolicy, RetentionPolicy, UntrackedSpecs,
};

/// How many runs' action lists are kept for callers that asked for them.
const KEPT_ACTION_LISTS: usize = 4;

/// The retention plugin. Cheap to create; holds the action lists of recent runs that
/// asked for them (`list_actions`), so the CLI can print every action without the job
/// report (stored in the database) carrying them.
#[derive(Default)]
pub struct RetentionPlugin {
    actions: Mutex<VecDeque<(i64, Vec<Action>)>>,
    faults: Option<Arc<dyn Faults>>,
}

impl std::fmt::Debug for RetentionPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionPlugin")
            .field("faults", &self.faults.is_some())
            .finish()
    }
}

impl Plugin for RetentionPlugin {
    fn name(&self) -> &str {
        "retention"
    }
    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }
    fn jobs(&self) -> Vec<JobSpec> {
        vec![
            JobSpec::new("cleanup", "0 3 * * *"),
            JobSpec::on_request("restore"),
        ]
    }
    fn sections(&self) -> Vec<SectionSpec> {
        vec![
            SectionSpec::of::<EvidencePolicy>(),
            SectionSpec::of::<RetentionPolicy>(),
            SectionSpec::of::<OffloadPolicy>(),
        ]
    }
    fn validate(&self, policy: &speckit_engine::Policy) -> Result<(), String> {
        settings::check_offload_ages(
            &policy.section::<OffloadPolicy>(),
            &policy.section::<RetentionPolicy>(),
        )
    }
    fn schema(&self) -> Option<&'static ComponentSchema> {
        Some(&RETENTION_SCHEMA)
    }
    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async move {
            match ctx.job.as_str() {
                "cleanup" => {
                    let run_id = ctx.run_id;
                    let (report, actions) = job::cleanup(ctx, self.faults.clone()).await?;
                    if let Some(actions) = actions {
                        let mut kept = self.actions.lock().unwrap_or_else(|e| e.into_inner());
                        if kept.len() >= KEPT_ACTION_LISTS {
                            kept.pop_front();
                        }
                        kept.push_back((run_id, actions));
                    }
                    Ok(report)
                }
                "restore" => job::restore(ctx, self.faults.clone()).await,
                other => Err(PluginError::InvalidArgs(format!(
                    "the retention plugin has no job {other:?}"
                ))),
            }
        })
    }
}

impl RetentionPlugin {
    pub fn new() -> Self {
        Self::default()
    }

    /// This plugin's sections and jobs, to load a policy without an engine (tools,
    /// tests, benches).
    pub fn policy_shape() -> speckit_engine::policy::PolicyShape {
        speckit_engine::registry::policy_shape(vec![Arc::new(Self::new())]).unwrap_or_default()
    }

    /// A plugin whose I/O steps consult `faults` (reliability tests).
    pub fn with_faults(faults: Arc<dyn Faults>) -> Self {
        Self {
            faults: Some(faults),
            ..Self::default()
        }
    }

    /// The actions of cleanup run `run_id`, if it ran with `list_actions` (taken once).
    pub fn take_actions(&self, run_id: i64) -> Option<Vec<Action>> {
        let mut kept = self.actions.lock().unwrap_or_else(|e| e.into_inner());
        let i = kept.iter().position(|(id, _)| *id == run_id)?;
        kept.remove(i).map(|(_, a)| a)
    }
}
