//! Spawning the host's own agents, configured only the way the host configures them: a
//! `~/.code/config.toml` with kebab-case `[[agents]]` and `[speckit.stage_agents]` in a
//! temporary HOME, and a `speckit.toml` that says nothing about agents. The agents are
//! stand-ins that behave like the real CLIs: the prompt after `-p` or on stdin, a response
//! on stdout, an exit; one daemonizes.

use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

/// A stand-in agent CLI: prints `agent=<STAND_IN> args=<its args> prompt=<the prompt>`,
/// taking the prompt from `-p PROMPT` when given, else from stdin (as the real CLIs do).
const STAND_IN: &str = r#"#!/bin/sh
prompt=""
args="$*"
while [ $# -gt 0 ]; do
  if [ "$1" = "-p" ]; then prompt="$2"; shift; fi
  shift
done
if [ -z "$prompt" ]; then prompt=$(cat); fi
printf 'agent=%s args=%s bytes=%s prompt=%s' "$STAND_IN" "$args" "${#prompt}" "$prompt"
"#;

/// A stand-in that floods its stdout with 3 MiB.
const FLOODING: &str = r#"#!/bin/sh
cat >/dev/null
head -c 3145728 /dev/zero | tr '\0' y
"#;

/// A stand-in that starts a daemon (own session, HUP and TERM ignored) and exits.
const DAEMONIZING: &str = r#"#!/bin/sh
setsid sh -c 'trap "" HUP TERM; echo $$ > "$0"; while :; do sleep 1; done' "$DAEMON_PID_FILE" </dev/null >/dev/null 2>&1 &
while [ ! -s "$DAEMON_PID_FILE" ]; do sleep 0.01; done
cat >/dev/null
echo daemon started
"#;

struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        let home = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        let bin = home.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        for (name, text) in [
            ("stand-in", STAND_IN),
            ("daemonizing", DAEMONIZING),
            ("flooding", FLOODING),
        ] {
            let file = bin.join(name);
            fs::write(&file, text).unwrap();
            fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::create_dir_all(home.path().join(".code")).unwrap();
        let stand_in = bin.join("stand-in").display().to_string();
        let daemonizing = bin.join("daemonizing").display().to_string();
        let flooding = bin.join("flooding").display().to_string();
        // A CLI the host knows by its name: it adds its default arguments.
        std::os::unix::fs::symlink(bin.join("stand-in"), bin.join("qwen")).unwrap();
        let qwen = bin.join("qwen").display().to_string();
        let pid_file = home.daemon_pid_file().display().to_string();
        fs::write(
            home.path().join(".code/config.toml"),
            format!(
                r#"model = "gpt-5"   # the host's own settings: not ours, ignored

[[agents]]
name = "gemini"
canonical-name = "gemini"
command = {stand_in:?}
args-read-only = ["--sandbox"]
args-write = ["--yolo"]
instructions = "You are Gemini, the planner."
model = "gemini-2.5-pro"
env = {{ STAND_IN = "gemini" }}
description = "an unknown-to-us key is fine"

[[agents]]
name = "claude"
command = {stand_in:?}
args = ["--print"]
env = {{ STAND_IN = "claude" }}

[[agents]]
name = "daemon"
command = {daemonizing:?}
env = {{ DAEMON_PID_FILE = {pid_file:?} }}

[[agents]]
name = "flood"
command = {flooding:?}

[[agents]]
name = "retired"
command = {stand_in:?}
enabled = false

[[agents]]
name = "../escape"
command = {stand_in:?}

[[agents]]
name = "qwen"
command = {qwen:?}
env = {{ STAND_IN = "qwen" }}

[speckit.stage_agents]
plan = "gemini"
"#
            ),
        )
        .unwrap();
        fs::write(
            home.path().join("speckit.toml"),
            "[storage]\ndatabase_path = \"db.sqlite\"\n[evidence]\nroot = \"evidence\"\n\
             [spawn]\nmax_log_bytes = 1048576\n",
        )
        .unwrap();
        home
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn daemon_pid_file(&self) -> PathBuf {
        self.path().join("daemon.pid")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(self.path().join("speckit.toml"))
            .args(args)
            .env("HOME", self.path())
            .env_remove("CODE_HOME")
            .env_remove("SPECKIT_CONFIG")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    /// `spawn --json` with `args`: the report data (with the envelope's `warnings` in it)
    /// and what each agent answered.
    fn spawn(&self, args: &[&str]) -> (Value, Vec<(String, String)>) {
        let mut all = vec!["spawn", "--spec", "SPEC-KIT-070", "--json"];
        all.extend(args);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let envelope = speckit_testkit::json::envelope(&out.stdout);
        let mut data = envelope["data"].clone();
        data["warnings"] = envelope["warnings"].clone();
        let answers = data["completions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let path = c["response_path"].as_str().unwrap();
                let name = c["agent"].as_str().unwrap().to_string();
                (name, fs::read_to_string(path).unwrap())
            })
            .collect();
        (data, answers)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn list_agents_shows_the_hosts_agents_their_origin_and_what_was_left_out() {
    let home = Home::new();
    let out = home.run(&["spawn", "--list-agents", "--stage", "plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let host_file = home.path().join(".code/config.toml");
    assert!(
        listed.contains(&format!("host config: {}", host_file.display())),
        "{listed}"
    );
    for agent in ["gemini", "claude", "daemon"] {
        let line = listed
            .lines()
            .find(|l| l.starts_with(agent))
            .unwrap_or_else(|| panic!("{agent} not listed:\n{listed}"));
        assert!(
            line.contains(&format!("host {}", host_file.display())),
            "{line}"
        );
    }
    assert!(listed.contains("host routes plan"), "{listed}");
    assert!(
        listed.contains("disabled in the host config: [[agents]] #5 (\"retired\")"),
        "{listed}"
    );
    assert!(
        listed.contains("stage plan: gemini (the host's routing)"),
        "{listed}"
    );
    let warnings = text(&out.stderr);
    assert!(
        warnings.contains(&format!(
            "{}: [[agents]] #6 (\"../escape\"): name:",
            host_file.display()
        )),
        "{warnings}"
    );
}

#[test]
fn the_hosts_routing_picks_the_agent_and_the_prompt_goes_as_the_host_passes_it() {
    let home = Home::new();
    // Plan: routed to gemini alone; a short prompt after -p, the write arguments, its
    // instructions first, its own env.
    let prompt_file = home.path().join("short.md");
    fs::write(&prompt_file, "Plan SPEC-KIT-070.").unwrap();
    let (_, answers) = home.spawn(&["--stage", "plan", "--prompt", prompt_file.to_str().unwrap()]);
    assert_eq!(answers.len(), 1, "{answers:?}");
    let (agent, answer) = &answers[0];
    assert_eq!(agent, "gemini");
    assert!(
        answer.starts_with(
            "agent=gemini args=--yolo -p You are Gemini, the planner.\n\nPlan SPEC-KIT-070."
        ),
        "{answer}"
    );

    // Read-only: the read-only arguments instead.
    let (_, answers) = home.spawn(&[
        "--stage",
        "plan",
        "--read-only",
        "--prompt",
        prompt_file.to_str().unwrap(),
    ]);
    assert!(
        answers[0].1.starts_with("agent=gemini args=--sandbox -p "),
        "{}",
        answers[0].1
    );

    // A 200 KB prompt to claude (named, not routed): on stdin, whole, no -p argument.
    let long = "Every figure must come from what the job did.\n".repeat(4_500);
    let long_file = home.path().join("long.md");
    fs::write(&long_file, &long).unwrap();
    let (_, answers) = home.spawn(&[
        "--stage",
        "tasks",
        "--agents",
        "claude",
        "--prompt",
        long_file.to_str().unwrap(),
    ]);
    let answer = &answers[0].1;
    let bytes = long.trim_end_matches('\n').len(); // $(cat) drops the last newline
    assert!(
        answer.starts_with(&format!("agent=claude args=--print bytes={bytes} prompt=")),
        "{}",
        &answer[..answer.len().min(200)]
    );

    // A CLI the host knows (qwen): its default arguments for the mode before the prompt.
    let (_, answers) = home.spawn(&[
        "--stage",
        "tasks",
        "--agents",
        "qwen",
        "--prompt",
        prompt_file.to_str().unwrap(),
    ]);
    assert!(
        answers[0]
            .1
            .starts_with("agent=qwen args=-y -p Plan SPEC-KIT-070."),
        "{}",
        answers[0].1
    );
}

#[test]
fn a_daemon_a_host_agent_leaves_behind_is_stopped_and_reported() {
    let home = Home::new();
    let (data, _) = home.spawn(&["--stage", "tasks", "--agents", "daemon"]);
    let daemon: u32 = fs::read_to_string(home.daemon_pid_file())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let left: Vec<u64> = data["completions"][0]["left_behind"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert!(
        left.contains(&u64::from(daemon)),
        "{left:?} misses {daemon}"
    );
    let warnings = data["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("left")),
        "{warnings:?}"
    );
    // Gone (or a zombie waiting for init): nothing of it runs on.
    let stat = fs::read_to_string(format!("/proc/{daemon}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next();
    assert!(
        stat.is_empty() || state == Some("Z"),
        "the daemon runs on: {stat}"
    );
}

#[test]
fn a_flooding_host_agents_log_is_cut_and_its_true_size_reported() {
    let home = Home::new();
    let (data, _) = home.spawn(&["--stage", "tasks", "--agents", "flood"]);
    let cut = &data["completions"][0]["logs_cut"][0];
    assert_eq!(cut["total_bytes"], 3 * 1024 * 1024, "{data}");
    assert_eq!(cut["kept_bytes"], 1024 * 1024);
    let log = fs::metadata(cut["path"].as_str().unwrap()).unwrap().len();
    assert!(log < 1024 * 1024 + 200, "the log holds {log} bytes");
    let warnings = data["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("wrote 3145728 bytes")),
        "{warnings:?}"
    );
}

#[test]
fn the_hosts_stage_prompts_build_each_agents_prompt_and_chain_earlier_outputs() {
    let home = Home::new();
    // The host's prompt file where upstream keeps it, next to speckit.toml: nothing in
    // speckit.toml names it. Claude's template asks for gemini's output.
    fs::create_dir_all(home.path().join("docs/spec-kit")).unwrap();
    fs::write(
        home.path().join("docs/spec-kit/prompts.json"),
        serde_json::json!({
            "spec-tasks": {
                "version": "20251129-tasks-a",
                "gemini": { "role": "Planner", "prompt": "Tasks for ${SPEC_ID} (${PROMPT_VERSION}, ${MODEL_ID}): ${CONTEXT}" },
                "claude": { "prompt": "Check: ${PREVIOUS_OUTPUTS.gemini}" }
            }
        })
        .to_string(),
    )
    .unwrap();
    let listed = home.run(&["spawn", "--list-agents", "--stage", "tasks"]);
    let listed = text(&listed.stdout);
    assert!(
        listed.contains("spec-tasks.gemini (version 20251129-tasks-a)"),
        "{listed}"
    );
    assert!(
        listed.contains("spec-tasks.claude (version 20251129-tasks-a); uses ${PREVIOUS_OUTPUTS}"),
        "{listed}"
    );
    assert!(
        listed.contains("daemon") && listed.contains("no template"),
        "{listed}"
    );

    let prompt_file = home.path().join("ctx.md");
    fs::write(&prompt_file, "the SPEC's context").unwrap();
    let (data, answers) = home.spawn(&[
        "--stage",
        "tasks",
        "--agents",
        "gemini,claude",
        "--prompt",
        prompt_file.to_str().unwrap(),
    ]);
    let gemini = "agent=gemini args=--yolo -p You are Gemini, the planner.\n\n\
                  Tasks for SPEC-KIT-070 (20251129-tasks-a, gemini-2.5-flash): the SPEC's context";
    assert!(answers[0].1.starts_with(gemini), "{}", answers[0].1);
    // Claude ran after gemini ended, with gemini's answer (not JSON: as it was) in its prompt.
    assert_eq!(answers[1].0, "claude");
    assert!(
        answers[1]
            .1
            .starts_with("agent=claude args=--print -p Check: agent=gemini args=--yolo"),
        "{}",
        answers[1].1
    );
    let sources = data["prompts"].as_array().unwrap();
    assert!(sources.iter().all(|s| s["chained"] == true), "{sources:?}");
}
