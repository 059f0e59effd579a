//! A stand-in plugin for engine tests that need a plugin section: it declares
//! `[retention]` with two ages (the real retention plugin lives in another crate the
//! engine does not know) and a `cleanup` job that reports the ages it ran with; and one
//! that declares `[evidence]`, which dynamic plugins read.
#![allow(dead_code)] // each test uses what it needs

use serde::{Deserialize, Serialize};
use speckit_engine::plugin::BoxFuture;
use speckit_engine::policy::{JobSpec, Section, SectionProblems, SectionSpec};
use speckit_engine::{JobContext, JobReport, Plugin, PluginError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ages {
    pub archive_after_days: u32,
    pub purge_after_days: u32,
}

impl Default for Ages {
    fn default() -> Self {
        Self {
            archive_after_days: 30,
            purge_after_days: 90,
        }
    }
}

impl Section for Ages {
    const NAME: &'static str = "retention";

    fn validate(&self, problems: &mut SectionProblems) {
        if self.purge_after_days <= self.archive_after_days {
            problems.bad(
                "purge_after_days",
                format!(
                    "must be above archive_after_days ({}), got {}",
                    self.archive_after_days, self.purge_after_days
                ),
            );
        }
    }
}

/// Declares [`Ages`] and runs `cleanup` (scheduled at 03:00 by default), doing nothing.
pub struct AgesPlugin;

impl Plugin for AgesPlugin {
    fn name(&self) -> &str {
        "ages"
    }
    fn version(&self) -> &str {
        "0.0.0"
    }
    fn jobs(&self) -> Vec<JobSpec> {
        vec![JobSpec::new("cleanup", "0 3 * * *")]
    }
    fn sections(&self) -> Vec<SectionSpec> {
        vec![SectionSpec::of::<Ages>()]
    }
    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async move {
            let ages = ctx.policy.policy.section::<Ages>();
            Ok(JobReport::new(
                "nothing to do",
                serde_json::json!({ "archive_after_days": ages.archive_after_days }),
            ))
        })
    }
}

/// `[evidence]` as the retention plugin declares it, as far as dynamic plugins read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Evidence {
    pub root: std::path::PathBuf,
    pub tracker_paths: Vec<std::path::PathBuf>,
}

impl Default for Evidence {
    fn default() -> Self {
        Self {
            root: "evidence".into(),
            tracker_paths: vec!["SPEC.md".into()],
        }
    }
}

impl Section for Evidence {
    const NAME: &'static str = "evidence";

    fn resolve_paths(&mut self, resolve: &dyn Fn(&std::path::Path) -> std::path::PathBuf) {
        self.root = resolve(&self.root);
        for tracker in &mut self.tracker_paths {
            *tracker = resolve(tracker);
        }
    }
}

/// `[retention]`'s status lists, as far as dynamic plugins read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Statuses {
    pub active_statuses: Vec<String>,
    pub finished_statuses: Vec<String>,
}

impl Default for Statuses {
    fn default() -> Self {
        Self {
            active_statuses: vec!["Backlog".into(), "In Progress".into()],
            finished_statuses: vec!["Done".into()],
        }
    }
}

impl Section for Statuses {
    const NAME: &'static str = "retention";
}

/// Declares [`Evidence`] and [`Statuses`] and runs nothing.
pub struct EvidencePlugin;

impl Plugin for EvidencePlugin {
    fn name(&self) -> &str {
        "evidence"
    }
    fn version(&self) -> &str {
        "0.0.0"
    }
    fn jobs(&self) -> Vec<JobSpec> {
        Vec::new()
    }
    fn sections(&self) -> Vec<SectionSpec> {
        vec![SectionSpec::of::<Evidence>(), SectionSpec::of::<Statuses>()]
    }
    fn run(&self, _ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async { Err(PluginError::Failed("runs no job".into())) })
    }
}
