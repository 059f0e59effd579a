//! Per-agent prompts from the host's stage prompt file (`docs/spec-kit/prompts.json` next
//! to the config), rendered as the host renders them; a template asking for
//! `${PREVIOUS_OUTPUTS}` chains the batch (each agent after the one before it ended, with
//! its output), and the chain stops at an agent that did not complete.

mod support;

use speckit_spawn::{
    spawn_agents, AgentPolicy, FailureCause, SpawnBatch, SpawnError, SpawnPolicy, SpawnRequest,
};
use support::*;

/// The host's prompt file, written where `prompts = "auto"` finds it.
fn write_prompts(fx: &Fixture, json: &serde_json::Value) {
    let dir = fx.dir.path().join("docs/spec-kit");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prompts.json"), json.to_string()).unwrap();
}

/// An agent writing the prompt it got (as a file) to its output file, then `extra`.
fn prompt_echo(name: &str, extra: &str) -> AgentPolicy {
    shell(
        name,
        &format!("cat \"$1\" > \"$2\"; {extra}"),
        &["{prompt_file}", "{output_file}"],
    )
}

async fn spawn(fx: &Fixture, agents: Vec<AgentPolicy>, prompt: &str) -> SpawnBatch {
    let policy = fx.policy(agents, |_: &mut SpawnPolicy| {});
    spawn_agents(
        &fx.storage,
        &policy,
        &fx.events,
        SpawnRequest::new(spec("SPEC-KIT-900"), "plan", prompt),
    )
    .await
    .unwrap()
}

/// Every agent's completion: the chained ones the batch already waited for, then the rest.
async fn completions(batch: SpawnBatch) -> Vec<speckit_spawn::AgentCompletion> {
    let mut all: Vec<_> = batch.finished.into_iter().map(Result::unwrap).collect();
    for handle in batch.handles {
        all.push(handle.wait().await.unwrap());
    }
    all
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agent_gets_its_template_rendered_as_the_host_renders_it() {
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.dir.path().join("templates")).unwrap();
    std::fs::write(fx.dir.path().join("templates/plan-template.md"), "# Plan").unwrap();
    write_prompts(
        &fx,
        &serde_json::json!({
            "template_context": { "version": "x", "templates": { "plan": "${TEMPLATE:plan}" } },
            "spec-plan": {
                "version": "20251129-plan-a",
                "gemini": { "role": "r", "prompt": "G ${SPEC_ID} v=${PROMPT_VERSION} m=${MODEL_ID}/${MODEL_RELEASE}/${REASONING_MODE} t=${TEMPLATE:plan} e=${TEMPLATE:tasks} c=${CONTEXT} u=${UNKNOWN}" },
                "reviewer": { "prompt": "R ${CONTEXT}" }
            }
        }),
    );
    let mut gemini = prompt_echo("gemini-25", "");
    gemini.instructions = Some("You plan.".into());
    let agents = vec![
        gemini,
        prompt_echo("reviewer", ""),
        prompt_echo("plain", ""),
    ];
    // A `${...}` in the user's prompt is text, never expanded again.
    let batch = spawn(&fx, agents, "ctx ${SPEC_ID}").await;
    assert!(batch.failures.is_empty(), "{:?}", batch.failures);
    assert!(batch.finished.is_empty(), "no template chains: not chained");
    let sources: Vec<_> = batch.prompts.iter().map(|p| p.template.clone()).collect();
    let file = fx.dir.path().join("docs/spec-kit/prompts.json");
    assert_eq!(
        sources,
        vec![
            Some(format!(
                "{}: spec-plan.gemini (version 20251129-plan-a)",
                file.display()
            )),
            Some(format!(
                "{}: spec-plan.reviewer (version 20251129-plan-a)",
                file.display()
            )),
            None,
        ]
    );
    let outputs: Vec<(String, String)> = completions(batch)
        .await
        .iter()
        .map(|c| (c.agent.clone(), read(&c.paths.output)))
        .collect();
    assert_eq!(
        outputs,
        vec![
            (
                "gemini-25".into(),
                "You plan.\n\nG SPEC-KIT-900 v=20251129-plan-a m=gemini-2.5-pro/2025-05-14/thinking \
                 t=templates/plan-template.md e=[embedded:tasks] c=ctx ${SPEC_ID} u=${UNKNOWN}"
                    .into()
            ),
            ("reviewer".into(), "R ctx ${SPEC_ID}".into()),
            ("plain".into(), "ctx ${SPEC_ID}".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_asking_for_previous_outputs_runs_each_agent_after_the_one_before() {
    let fx = Fixture::new();
    write_prompts(
        &fx,
        &serde_json::json!({
            "spec-plan": {
                "first": { "prompt": "P1" },
                "second": { "prompt": "P2 ${PREVIOUS_OUTPUTS.first} | ${PREVIOUS_OUTPUTS}" }
            }
        }),
    );
    let (marker, seen) = (
        fx.dir.path().join("first-ended"),
        fx.dir.path().join("second-saw-the-end"),
    );
    // The first answers (its output file) with noise around a stage JSON, after a pause,
    // and marks its end; the second records whether the first had ended when it started.
    let first = shell(
        "first",
        &format!(
            "sleep 0.2; printf 'noise {{\"stage\": \"spec-plan\", \"n\": 1}} tail' > \"$1\"; touch {}",
            marker.display()
        ),
        &["{output_file}"],
    );
    let second = prompt_echo(
        "second",
        &format!("test -f {} && touch {}", marker.display(), seen.display()),
    );
    let batch = spawn(&fx, vec![first, second], "ctx").await;
    assert!(batch.failures.is_empty(), "{:?}", batch.failures);
    assert!(
        batch.handles.is_empty(),
        "a chained batch waits for each agent"
    );
    assert!(
        batch.prompts.iter().all(|p| p.chained),
        "{:?}",
        batch.prompts
    );
    let done = completions(batch).await;
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|c| c.succeeded()), "{done:?}");
    assert!(seen.exists(), "the second started before the first ended");
    let json = serde_json::json!({"stage": "spec-plan", "n": 1}).to_string();
    assert_eq!(
        read(&done[1].paths.output),
        format!("P2 {json} | ## first\n{json}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_stops_at_an_agent_that_did_not_complete() {
    let fx = Fixture::new();
    write_prompts(
        &fx,
        &serde_json::json!({
            "spec-plan": { "second": { "prompt": "after ${PREVIOUS_OUTPUTS}" } }
        }),
    );
    let batch = spawn(
        &fx,
        vec![prompt_echo("first", "exit 3"), prompt_echo("second", "")],
        "ctx",
    )
    .await;
    assert_eq!(batch.finished.len(), 1);
    assert_eq!(batch.failures.len(), 1, "{:?}", batch.failures);
    assert_eq!(batch.failures[0].agent, "second");
    assert_eq!(
        batch.failures[0].cause,
        FailureCause::PredecessorFailed {
            agent: "first".into()
        }
    );
    assert_eq!(batch.failures[0].pid, None, "never started");
    assert_eq!(
        fx.count("SELECT COUNT(*) FROM agent_executions WHERE agent_name = 'second'")
            .await,
        0,
        "no row for an agent never started"
    );
    assert_eq!(batch.metrics.failed_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_prompt_file_refuses_the_spawn_and_starts_nothing() {
    let fx = Fixture::new();
    let dir = fx.dir.path().join("docs/spec-kit");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prompts.json"), "{ not json").unwrap();
    let policy = fx.policy(vec![prompt_echo("a", "")], |_: &mut SpawnPolicy| {});
    let request = || SpawnRequest::new(spec("SPEC-KIT-900"), "plan", "p");
    let err = spawn_agents(&fx.storage, &policy, &fx.events, request())
        .await
        .unwrap_err();
    let SpawnError::StagePrompts { message } = &err else {
        panic!("{err}")
    };
    assert!(
        message.contains("prompts.json is not valid JSON"),
        "{message}"
    );
    assert!(message.contains("prompts = \"off\""), "{message}");
    assert_eq!(
        fx.count("SELECT COUNT(*) FROM agent_executions").await,
        0,
        "nothing started"
    );

    // A path that names no file is refused too; "off" reads nothing.
    let missing = fx.policy(vec![prompt_echo("a", "")], |s: &mut SpawnPolicy| {
        s.prompts = fx.dir.path().join("nope.json").display().to_string();
    });
    let err = spawn_agents(&fx.storage, &missing, &fx.events, request())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope.json"), "{err}");
    let off = fx.policy(vec![prompt_echo("a", "")], |s: &mut SpawnPolicy| {
        s.prompts = "off".into();
    });
    let batch = spawn_agents(&fx.storage, &off, &fx.events, request())
        .await
        .unwrap();
    let done = completions(batch).await;
    assert_eq!(read(&done[0].paths.output), "p");
}
