//! The limits check the scheduled pass runs after cleanup, through a real engine: every SPEC
//! over its warning size or limit lands in the job report's warnings and figures, and as a
//! `limit_warning` plugin event.

mod stats_support;

use speckit_engine::engine::EngineOptions;
use speckit_engine::plugin::BoxFuture;
use speckit_engine::{Engine, EngineEvent, JobContext, JobReport, JobTrigger, Plugin, PluginError};
use speckit_retention::limits::check_after_cleanup;
use speckit_retention::stats::SpecNames;
use stats_support::{sparse, MIB};
use std::sync::Arc;

/// Stands in for the end of the retention `cleanup` job: a report, then the limits check.
struct AfterCleanup;

impl Plugin for AfterCleanup {
    fn name(&self) -> &str {
        "limits-probe"
    }
    fn version(&self) -> &str {
        "0"
    }
    fn jobs(&self) -> Vec<speckit_engine::policy::JobSpec> {
        vec![speckit_engine::policy::JobSpec::on_request("probe")]
    }
    fn sections(&self) -> Vec<speckit_engine::policy::SectionSpec> {
        vec![speckit_engine::policy::SectionSpec::of::<
            speckit_retention::EvidencePolicy,
        >()]
    }
    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async move {
            let mut report = JobReport::new("cleaned", serde_json::json!({ "archived_files": 0 }));
            check_after_cleanup(&ctx, &mut report, &SpecNames::canonical()).await;
            Ok(report)
        })
    }
}

async fn engine_over(dir: &std::path::Path) -> Engine {
    let config = dir.join("speckit.toml");
    std::fs::write(
        &config,
        "[storage]\ndatabase_path = \"db.sqlite\"\n[evidence]\nroot = \"evidence\"\nroot_warn_mb = 100\n",
    )
    .unwrap();
    let mut options = EngineOptions::new(&config);
    options.env.retain(|(k, _)| !k.starts_with("SPECKIT_"));
    Engine::start(options, vec![Arc::new(AfterCleanup)])
        .await
        .unwrap()
}

#[tokio::test]
async fn specs_over_a_size_are_in_the_report_and_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("evidence");
    sparse(&root.join("commands/SPEC-KIT-060/run.log"), 51 * MIB);
    sparse(&root.join("consensus/SPEC-KIT-041/a.json"), 41 * MIB);
    sparse(&root.join("consensus/SPEC-KIT-040/a.json"), 40 * MIB);
    let engine = engine_over(dir.path()).await;
    let mut events = engine.events().subscribe();

    let run = engine
        .run_job("probe", JobTrigger::Manual, serde_json::Value::Null)
        .await
        .unwrap();
    let report = run.report.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // Blocks first, then warnings, then the root (132 MiB > 100 MiB), then large files.
    assert!(
        report.warnings[0].starts_with("SPEC-KIT-060") && report.warnings[0].contains("blocked")
    );
    assert!(
        report.warnings[1].starts_with("SPEC-KIT-041")
            && report.warnings[1].contains("warning size")
    );
    assert!(report.warnings[2].contains("above its 100 MiB soft limit"));
    assert!(!report
        .warnings
        .iter()
        .any(|w| w.starts_with("SPEC-KIT-040")));
    assert_eq!(
        report.data["archived_files"], 0,
        "the job's own figures stay"
    );
    assert_eq!(report.data["limits"]["counts"]["block"], 1);
    assert_eq!(report.data["limits"]["counts"]["warn"], 1);

    let mut limit_events = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EngineEvent::Plugin { plugin, kind, data } = event {
            if kind == "limit_warning" {
                assert_eq!(plugin, "limits-probe");
                limit_events.push(data);
            }
        }
    }
    let scopes: Vec<(String, String)> = limit_events
        .iter()
        .map(|e| {
            (
                e["scope"].as_str().unwrap().to_string(),
                e["spec"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        scopes,
        [
            ("spec".to_string(), "SPEC-KIT-060".to_string()),
            ("spec".to_string(), "SPEC-KIT-041".to_string()),
            ("root".to_string(), String::new()),
        ]
    );
    assert_eq!(limit_events[0]["verdict"], "block");
    assert_eq!(limit_events[0]["total_bytes"], 51 * MIB);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_root_that_cannot_be_measured_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_over(dir.path()).await;
    let run = engine
        .run_job("probe", JobTrigger::Manual, serde_json::Value::Null)
        .await
        .unwrap();
    let report = run.report.unwrap();
    assert_eq!(report.errors.len(), 1);
    assert!(report.errors[0].contains("evidence limits not checked"));
    assert!(report.errors[0].contains("does not exist"));
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}
