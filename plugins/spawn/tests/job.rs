//! The `spawn` job through a real engine (policy from a file, validation at load, the run
//! recorded in the job runs), as the CLI and the demo run it.

mod support;

use std::sync::Arc;

use speckit_engine::events::JobOutcome;
use speckit_engine::{Engine, EngineError, EngineOptions, JobErrorKind, JobTrigger};
use speckit_spawn::SpawnPlugin;
use support::stub_agent;

fn options(dir: &std::path::Path, agents: &str) -> EngineOptions {
    let config = dir.join("speckit.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndatabase_path = \"db/consensus.db\"\n[evidence]\nroot = \"evidence\"\n[spawn]\nmax_concurrency = 4\n{agents}"
        ),
    )
    .unwrap();
    let mut options = EngineOptions::new(config);
    options.env = Vec::new();
    options
}

fn stub_agent_toml(name: &str, extra: &str) -> String {
    format!(
        "[[spawn.agents]]\nname = \"{name}\"\ncommand = \"{}\"\nargs = [\"--prompt\", \"{{prompt_file}}\", \"--output\", \"{{output_file}}\"{extra}]\nreadiness = {{ line = \"READY\" }}\n",
        stub_agent().display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spawn_job_runs_the_policys_agents_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let agents = [
        stub_agent_toml("gemini", ", \"--ready-after-ms\", \"5\""),
        stub_agent_toml("claude", ""),
        stub_agent_toml("unused", ""),
    ]
    .concat();
    let engine = Engine::start(
        options(dir.path(), &agents),
        vec![Arc::new(SpawnPlugin::new())],
    )
    .await
    .unwrap();
    let run = engine
        .run_job(
            "spawn",
            JobTrigger::Manual,
            serde_json::json!({ "spec": "SPEC-KIT-901", "stage": "plan", "agents": ["gemini", "claude"], "prompt": "Plan it\n" }),
        )
        .await
        .unwrap();
    assert_eq!(run.outcome, JobOutcome::Succeeded, "{run:?}");
    let report = run.report.unwrap();
    assert!(
        report
            .summary
            .starts_with("SPEC-KIT-901 plan: 2/2 agents spawned in"),
        "{}",
        report.summary
    );
    assert!(
        report.summary.ends_with("2 completed, 0 failed"),
        "{}",
        report.summary
    );
    // The report as its type, the way the CLI and hosts read it.
    let figures: speckit_spawn::SpawnJobReport = report.figures().unwrap();
    assert_eq!(figures.completions.len(), 2);
    assert_eq!(figures.completions[0].agent, "gemini");
    assert!(figures.completions.iter().all(|c| c.ok), "{figures:?}");
    assert_eq!(figures.batch.agent_count, 2);
    assert_eq!(figures.batch.ok_count, 2);
    let metrics_file = &figures.metrics_file;
    assert!(metrics_file.ends_with("evidence/commands/SPEC-KIT-901/spawn_metrics.json"));
    assert!(metrics_file.is_file());
    let recorded: i64 = engine
        .storage()
        .read(|c| {
            c.query_row(
                "SELECT count(*) FROM hygiene_job_runs WHERE job = 'spawn' AND outcome = 'succeeded'",
                [],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(recorded, 1);

    // Bad options fail the job with a clear error and start nothing.
    let run = engine
        .run_job(
            "spawn",
            JobTrigger::Manual,
            serde_json::json!({ "spec": "../etc", "stage": "plan" }),
        )
        .await
        .unwrap();
    assert_eq!(run.outcome, JobOutcome::Failed);
    assert!(run.error.unwrap().contains("invalid SPEC-ID \"../etc\""));
    let run = engine
        .run_job(
            "spawn",
            JobTrigger::Manual,
            serde_json::json!({ "spec": "SPEC-1", "stage": "plan", "agents": ["codex"] }),
        )
        .await
        .unwrap();
    let error = run.error.unwrap();
    assert!(
        error.contains("unknown agent(s) codex") && error.contains("gemini, claude, unused"),
        "{error}"
    );

    // A reload changes the agents the next spawn starts.
    let config = engine.options().config_path.clone();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text + &stub_agent_toml("codex", "")).unwrap();
    let outcome = engine
        .reload(speckit_engine::events::ReloadCause::Api)
        .await;
    assert!(
        matches!(outcome, speckit_engine::ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    let run = engine
        .run_job(
            "spawn",
            JobTrigger::Manual,
            serde_json::json!({ "spec": "SPEC-1", "stage": "plan", "agents": ["codex"] }),
        )
        .await
        .unwrap();
    assert_eq!(run.outcome, JobOutcome::Succeeded, "{run:?}");
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_policy_with_unsafe_agent_names_or_unknown_placeholders_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let agents = "[[spawn.agents]]\nname = \"../evil\"\ncommand = \"x\"\n[[spawn.agents]]\nname = \"ok\"\ncommand = \"x\"\nargs = [\"{promt}\"]\n";
    let Err(err) = Engine::start(
        options(dir.path(), agents),
        vec![Arc::new(SpawnPlugin::new())],
    )
    .await
    else {
        panic!("the policy was accepted");
    };
    // The spawn section's own checks: a refused policy naming each key, like the engine's.
    assert!(matches!(err, EngineError::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("spawn.agents.0.name: \"../evil\": "),
        "{text}"
    );
    assert!(
        text.contains("spawn.agents.1.args.0: agent \"ok\": unknown placeholder {promt}"),
        "{text}"
    );
    assert!(
        !dir.path().join("db").exists(),
        "a rejected policy opens no database"
    );
}

/// The evidence guard: a SPEC over `evidence.limit_mb` is not spawned on (nothing starts,
/// no row is written) and the refusal says what gets it under; `ignore_limits` spawns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_over_its_evidence_limit_is_refused_unless_limits_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let agents = format!(
        "[evidence]\nroot = \"evidence\"\nwarn_mb = 0.5\nlimit_mb = 1.0\n{}",
        stub_agent_toml("gemini", "")
    );
    let options = {
        let config = dir.path().join("speckit.toml");
        std::fs::write(
            &config,
            format!("[storage]\ndatabase_path = \"db/consensus.db\"\n{agents}"),
        )
        .unwrap();
        let mut options = EngineOptions::new(config);
        options.env = Vec::new();
        options
    };
    // 1.5 MiB of evidence: over the 1 MiB limit.
    let spec_dir = dir.path().join("evidence/commands/SPEC-KIT-950");
    std::fs::create_dir_all(&spec_dir).unwrap();
    std::fs::write(spec_dir.join("big.log"), vec![b'x'; 3 * 512 * 1024]).unwrap();
    let engine = Engine::start(options, vec![Arc::new(SpawnPlugin::new())])
        .await
        .unwrap();
    let spawn = |ignore_limits: bool| {
        engine.run_job(
            "spawn",
            JobTrigger::Manual,
            serde_json::json!({
                "spec": "SPEC-KIT-950", "stage": "plan", "ignore_limits": ignore_limits
            }),
        )
    };

    let refused = spawn(false).await.unwrap();
    assert_eq!(refused.outcome, JobOutcome::Failed);
    assert_eq!(refused.error_kind, Some(JobErrorKind::Refused));
    let error = refused.error.unwrap();
    assert!(
        error.contains("SPEC-KIT-950's evidence is over its limit (1572864 bytes"),
        "{error}"
    );
    assert!(error.contains("speckit-hygiene cleanup"), "{error}");
    assert!(error.contains("--ignore-limits"), "{error}");
    let executions: i64 = engine
        .storage()
        .read(|c| c.query_row("SELECT count(*) FROM agent_executions", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(executions, 0, "no agent was started");
    let files: Vec<_> = std::fs::read_dir(&spec_dir).unwrap().collect();
    assert_eq!(files.len(), 1, "nothing written beside the evidence");

    let ran = spawn(true).await.unwrap();
    assert_eq!(ran.outcome, JobOutcome::Succeeded, "{:?}", ran.error);
    let figures: speckit_spawn::SpawnJobReport = ran.report.unwrap().figures().unwrap();
    assert_eq!(figures.batch.ok_count, 1);
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}
