//! A loaded library as an engine [`Plugin`]: named after its `[plugins.<name>]` key, with
//! one job of the same name. Each run sends the job context as JSON to a host process of
//! the library ([`super::process`]), answers the plugin's storage requests
//! ([`super::bridge`]), and reads the report back, within the policy's `call_timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use speckit_plugin_sdk::{JobContext as WireContext, Report as WireReport};

use super::bridge;
use super::error::CallError;
use super::library::PluginFunction;
use super::process::{CallLimits, PluginHost};
use crate::plugin::{BoxFuture, JobContext, JobReport, Plugin, PluginError};
use crate::policy::{DynamicPluginPolicy, JobSpec, Policy};
use crate::storage::ComponentSchema;

/// One library file loaded in host processes, with what it declared about itself.
#[derive(Debug)]
pub struct LoadedPlugin {
    pub host: PluginHost,
    /// `plugin_<its own name>_`: the tables it may write.
    pub table_prefix: String,
    /// Its migrations, versioned under the prefix without the trailing `_`.
    pub schema: Option<&'static ComponentSchema>,
}

/// A dynamic plugin in the registry.
#[derive(Debug)]
pub struct DynamicPlugin {
    name: String,
    loaded: Arc<LoadedPlugin>,
}

/// The limits `section` sets for each call.
pub fn call_limits(section: &DynamicPluginPolicy) -> CallLimits {
    CallLimits {
        timeout: Duration::from_millis(section.call_timeout_ms),
        memory_limit_mib: section.memory_limit_mib,
    }
}

impl DynamicPlugin {
    pub fn new(name: impl Into<String>, loaded: Arc<LoadedPlugin>) -> Self {
        Self {
            name: name.into(),
            loaded,
        }
    }

    pub fn loaded(&self) -> &Arc<LoadedPlugin> {
        &self.loaded
    }

    /// Asks the plugin to check its `[plugins.<name>.config]` in `policy` (blocking, at
    /// most `call_timeout_ms`).
    pub fn validate_config(&self, policy: &Policy) -> Result<(), CallError> {
        let Some(section) = policy.plugins.get(&self.name) else {
            return Ok(());
        };
        let config = serde_json::to_vec(&section.config)
            .map_err(|e| CallError::BadOutput(format!("cannot encode the config: {e}")))?;
        let mut no_storage = |_: &str| {
            r#"{"result":"refused","message":"no storage while validating a config"}"#.to_string()
        };
        self.loaded
            .host
            .call(
                PluginFunction::Validate,
                &config,
                call_limits(section),
                &mut no_storage,
            )
            .map(|_| ())
    }

    /// The job context as the plugin receives it.
    pub fn wire_context(&self, ctx: &JobContext) -> Result<WireContext, PluginError> {
        let policy = &ctx.policy.policy;
        let section = self.section(policy)?;
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
            sections: policy.sections.to_json(),
            now_unix_ms: now.timestamp_millis(),
            now_rfc3339: now.to_rfc3339(),
            policy_generation: ctx.policy.generation,
            ..WireContext::default()
        })
    }

    fn section<'p>(&self, policy: &'p Policy) -> Result<&'p DynamicPluginPolicy, PluginError> {
        policy.plugins.get(&self.name).ok_or_else(|| {
            PluginError::Failed(format!(
                "the policy this job started with has no [plugins.{}]",
                self.name
            ))
        })
    }
}

impl Plugin for DynamicPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> &str {
        &self.loaded.host.info().version
    }

    fn jobs(&self) -> Vec<JobSpec> {
        // Scheduled by `[plugins.<name>] schedule`, not `[schedule]`.
        vec![JobSpec::on_request(self.name.clone())]
    }

    /// Accepts: the loader validates `[plugins.<name>.config]` with the library that will
    /// run it (which, when the path changes, is not this one) before a policy is applied.
    fn validate(&self, _policy: &Policy) -> Result<(), String> {
        Ok(())
    }

    fn schema(&self) -> Option<&'static ComponentSchema> {
        self.loaded.schema
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async move {
            let wire = self.wire_context(&ctx)?;
            let limits = call_limits(self.section(&ctx.policy.policy)?);
            let input = serde_json::to_vec(&wire)
                .map_err(|e| PluginError::Failed(format!("cannot encode the job context: {e}")))?;
            let loaded = self.loaded.clone();
            let storage = ctx.storage.clone();
            // spawn_blocking: the call waits on a pipe with a real-time deadline, which a
            // paused test clock must not skip; and it answers storage requests with the
            // storage's blocking calls.
            let joined = tokio::task::spawn_blocking(move || {
                let mut answer =
                    |request: &str| bridge::answer(&storage, &loaded.table_prefix, request);
                let output = loaded
                    .host
                    .call(PluginFunction::Run, &input, limits, &mut answer)?;
                let report: WireReport = serde_json::from_slice(&output).map_err(|e| {
                    CallError::BadOutput(format!("the report is not valid JSON: {e}"))
                })?;
                Ok::<_, CallError>(report)
            })
            .await;
            match joined {
                Ok(Ok(report)) => Ok(JobReport {
                    summary: report.summary,
                    data: report.data,
                    warnings: report.warnings,
                    errors: report.errors,
                }),
                Ok(Err(e)) => Err(PluginError::Failed(format!(
                    "plugin {} ({}): {e}",
                    self.name,
                    self.loaded.host.path().display()
                ))),
                Err(e) => Err(PluginError::Failed(format!(
                    "plugin {}: the task waiting for it failed: {e}",
                    self.name
                ))),
            }
        })
    }
}
