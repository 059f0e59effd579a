//! A loaded library as an engine [`Plugin`]: named after its `[plugins.<name>]` key, with
//! one job of the same name. Each run sends the job context as JSON and reads the report
//! back, on a thread of its own with the policy's `call_timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use speckit_plugin_sdk::{JobContext as WireContext, Report as WireReport};

use super::call::{call_with_timeout, HungCalls};
use super::error::CallError;
use super::library::{LoadedLibrary, PluginFunction};
use crate::plugin::{BoxFuture, JobContext, JobReport, Plugin, PluginError};
use crate::policy::Policy;

/// A dynamic plugin in the registry.
#[derive(Debug)]
pub struct DynamicPlugin {
    name: String,
    library: Arc<LoadedLibrary>,
    hung: Arc<HungCalls>,
}

impl DynamicPlugin {
    pub fn new(name: impl Into<String>, library: Arc<LoadedLibrary>) -> Self {
        Self {
            name: name.into(),
            library,
            hung: Arc::default(),
        }
    }

    pub fn library(&self) -> &Arc<LoadedLibrary> {
        &self.library
    }

    /// Asks the plugin to check its `[plugins.<name>.config]` in `policy` (blocking, at
    /// most `call_timeout_ms`).
    pub fn validate_config(&self, policy: &Policy) -> Result<(), CallError> {
        let Some(section) = policy.plugins.get(&self.name) else {
            return Ok(());
        };
        let config = serde_json::to_vec(&section.config)
            .map_err(|e| CallError::BadOutput(format!("cannot encode the config: {e}")))?;
        call_with_timeout(
            self.library.clone(),
            PluginFunction::Validate,
            config,
            Duration::from_millis(section.call_timeout_ms),
            format!("plugin-{}-validate", self.name),
            &self.hung,
        )
        .map(|_| ())
    }

    /// The job context as the plugin receives it.
    pub fn wire_context(&self, ctx: &JobContext) -> Result<WireContext, PluginError> {
        let policy = &ctx.policy.policy;
        let section = policy.plugins.get(&self.name).ok_or_else(|| {
            PluginError::Failed(format!(
                "the policy this job started with has no [plugins.{}]",
                self.name
            ))
        })?;
        let now = ctx.clock.now();
        Ok(WireContext {
            plugin: self.name.clone(),
            job: ctx.job.clone(),
            run_id: ctx.run_id,
            trigger: ctx.trigger.label().to_string(),
            args: ctx.args.clone(),
            config: serde_json::to_value(&section.config)
                .map_err(|e| PluginError::Failed(format!("cannot encode the config: {e}")))?,
            config_file: ctx.policy.source.path.clone(),
            config_dir: ctx.policy.source.dir.clone(),
            evidence_root: policy.evidence.root.clone(),
            tracker_paths: policy.evidence.tracker_paths.clone(),
            active_statuses: policy.retention.active_statuses.clone(),
            finished_statuses: policy.retention.finished_statuses.clone(),
            database_path: policy.storage.database_path.clone(),
            now_unix_ms: now.timestamp_millis(),
            now_rfc3339: now.to_rfc3339(),
            policy_generation: ctx.policy.generation,
        })
    }

    /// Runs the job: blocking, on the current thread plus the call's own.
    fn run_blocking(
        library: Arc<LoadedLibrary>,
        name: &str,
        input: Vec<u8>,
        timeout: Duration,
        hung: &HungCalls,
    ) -> Result<JobReport, CallError> {
        let output = call_with_timeout(
            library,
            PluginFunction::Run,
            input,
            timeout,
            format!("plugin-{name}"),
            hung,
        )?;
        let report: WireReport = serde_json::from_slice(&output)
            .map_err(|e| CallError::BadOutput(format!("the report is not valid JSON: {e}")))?;
        Ok(JobReport {
            summary: report.summary,
            data: report.data,
            warnings: report.warnings,
            errors: report.errors,
        })
    }
}

impl Plugin for DynamicPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> &str {
        self.library.version()
    }

    fn jobs(&self) -> Vec<String> {
        vec![self.name.clone()]
    }

    /// Accepts: the loader validates `[plugins.<name>.config]` with the library that will
    /// run it (which, when the path changes, is not this one) before a policy is applied.
    fn validate(&self, _policy: &Policy) -> Result<(), String> {
        Ok(())
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async move {
            let wire = self.wire_context(&ctx)?;
            let timeout_ms = ctx
                .policy
                .policy
                .plugins
                .get(&self.name)
                .map(|p| p.call_timeout_ms)
                .unwrap_or(60_000);
            let input = serde_json::to_vec(&wire)
                .map_err(|e| PluginError::Failed(format!("cannot encode the job context: {e}")))?;
            let library = self.library.clone();
            let name = self.name.clone();
            let hung = self.hung.clone();
            // spawn_blocking rather than block_in_place: it works on any runtime, keeps a
            // paused test clock from skipping ahead while the plugin runs, and waits at
            // most the timeout (the call itself is on a thread of its own, see `call`).
            let joined = tokio::task::spawn_blocking(move || {
                Self::run_blocking(
                    library,
                    &name,
                    input,
                    Duration::from_millis(timeout_ms),
                    &hung,
                )
            })
            .await;
            match joined {
                Ok(result) => result.map_err(|e| {
                    PluginError::Failed(format!(
                        "plugin {} ({}): {e}",
                        self.name,
                        self.library.path().display()
                    ))
                }),
                Err(e) => Err(PluginError::Failed(format!(
                    "plugin {}: the task waiting for it failed: {e}",
                    self.name
                ))),
            }
        })
    }
}
