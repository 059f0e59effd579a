//! How an agent gets its prompt, as the host hands it over: as an argument when short, on
//! stdin when over 1 KiB (never limited by the argument length), as a file when `args`
//! name `{prompt_file}`; each agent's `instructions` before the stage prompt; and the
//! read-only or write arguments by the stage's mode.

mod support;

use speckit_spawn::{spawn_agents, AgentPolicy, PromptVia, SpawnPolicy, SpawnRequest};
use support::*;

/// Runs one batch of `agents` with `prompt`; returns each agent's output file's text.
async fn run(agents: Vec<AgentPolicy>, prompt: &str, read_only: bool) -> Vec<(String, String)> {
    let fx = Fixture::new();
    let policy = fx.policy(agents, |_: &mut SpawnPolicy| {});
    let batch = spawn_agents(
        &fx.storage,
        &policy,
        &fx.events,
        SpawnRequest::new(spec("SPEC-KIT-900"), "plan", prompt).read_only(read_only),
    )
    .await
    .unwrap();
    assert!(batch.failures.is_empty(), "{:?}", batch.failures);
    let mut outputs = Vec::new();
    for handle in batch.handles {
        let c = handle.wait().await.unwrap();
        assert!(c.succeeded(), "{}: {:?}", c.agent, c.failure);
        let text = std::fs::read_to_string(&c.paths.output).unwrap_or_default();
        outputs.push((c.agent.clone(), text));
    }
    outputs.sort();
    outputs
}

/// An agent that writes its argument count, its arguments after the output file, and its
/// stdin to its output file: `<argc>|<args...>|<stdin>`.
fn echoing(name: &str) -> AgentPolicy {
    let mut agent = shell(
        name,
        "out=\"$1\"; shift; printf '%s|%s|' \"$#\" \"$*\" > \"$out\"; cat >> \"$out\"",
        &["{output_file}"],
    );
    agent.prompt_via = PromptVia::Auto;
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_prompt_goes_as_an_argument_and_a_long_one_on_stdin() {
    let short = "Plan SPEC-KIT-900.";
    let out = run(vec![echoing("short")], short, false).await;
    assert_eq!(
        out[0].1,
        format!("2|-p {short}|"),
        "prompt_args, stdin empty"
    );

    // 200 KB: far over the 128 KiB a single argument may hold.
    let long: String = "0123456789abcdef\n".repeat(12_000);
    assert!(long.len() > 200_000);
    let out = run(vec![echoing("long")], &long, false).await;
    assert_eq!(
        out[0].1,
        format!("0||{long}"),
        "no prompt argument, the whole prompt on stdin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agent_gets_its_instructions_first_and_its_chosen_handover() {
    let mut with_instructions = echoing("instructed");
    with_instructions.instructions = Some("  You are the reviewer.  \n".into());
    let mut on_stdin = echoing("stdin");
    on_stdin.prompt_via = PromptVia::Stdin;
    let mut as_file = shell(
        "file",
        "out=\"$1\"; shift; printf '%s|' \"$#\" > \"$out\"; cat \"$1\" >> \"$out\"; cat >> \"$out\"",
        &["{output_file}", "{prompt_file}"],
    );
    as_file.prompt_via = PromptVia::Auto;
    let out = run(vec![with_instructions, on_stdin, as_file], "Do it.", false).await;
    assert_eq!(
        out[0],
        ("file".into(), "1|Do it.".into()),
        "the file, nothing on stdin"
    );
    assert_eq!(
        out[1],
        (
            "instructed".into(),
            "2|-p You are the reviewer.\n\nDo it.|".into()
        )
    );
    assert_eq!(out[2], ("stdin".into(), "0||Do it.".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stages_mode_picks_the_read_only_or_write_arguments() {
    let mut agent = echoing("moded");
    agent.args_read_only = Some(
        [
            "-c",
            "printf 'read-only' > \"$1\"",
            "moded",
            "{output_file}",
        ]
        .map(String::from)
        .to_vec(),
    );
    agent.args_write = Some(
        ["-c", "printf 'write' > \"$1\"", "moded", "{output_file}"]
            .map(String::from)
            .to_vec(),
    );
    agent.prompt_via = PromptVia::Stdin;
    let out = run(vec![agent.clone()], "p", true).await;
    assert_eq!(out[0].1, "read-only");
    let out = run(vec![agent], "p", false).await;
    assert_eq!(out[0].1, "write");
}

#[test]
fn a_prompt_placeholder_outside_prompt_args_or_missing_from_them_is_refused() {
    let mut agent = echoing("bad");
    agent.args.push("{prompt}".into());
    let problems = speckit_spawn::command::check_agent(&agent);
    assert!(
        problems
            .iter()
            .any(|(k, m)| k == "args.4" && m.contains("belongs in prompt_args")),
        "{problems:?}"
    );

    let mut agent = echoing("bad");
    agent.prompt_args = vec!["-p".into()];
    let problems = speckit_spawn::command::check_agent(&agent);
    assert!(
        problems
            .iter()
            .any(|(k, m)| k == "prompt_args" && m.contains("must hold {prompt}")),
        "{problems:?}"
    );
    agent.prompt_via = PromptVia::Stdin;
    assert!(speckit_spawn::command::check_agent(&agent).is_empty());
}
