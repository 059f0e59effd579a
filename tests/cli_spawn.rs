//! `speckit-hygiene spawn` and `spawn stats` end to end with the stub agent: output,
//! stored metrics, exit statuses (0 ok, 1 an agent failed, 2 bad input), SIGTERM.

#[path = "../plugins/spawn/tests/support/stub.rs"]
mod stub;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

/// A workspace whose policy defines the given agents (TOML) after two stub agents.
fn workspace(extra_agents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("speckit.toml");
    let stub = stub::stub_agent().display().to_string();
    let agent = |name: &str, extra: &str| {
        format!(
            "[[spawn.agents]]\nname = \"{name}\"\ncommand = {stub:?}\nargs = [\"--prompt\", \"{{prompt_file}}\", \"--output\", \"{{output_file}}\"{extra}]\nreadiness = {{ line = \"READY\" }}\n"
        )
    };
    fs::write(
        &config,
        format!(
            "[storage]\ndatabase_path = \"db.sqlite\"\n[evidence]\nroot = \"evidence\"\n[spawn]\nspawn_timeout_ms = 3000\n{}{}{extra_agents}",
            agent("gemini", ", \"--ready-after-ms\", \"10\""),
            agent("claude", ""),
        ),
    )
    .unwrap();
    (dir, config)
}

fn run(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("SPECKIT_CONFIG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn spawn_runs_the_agents_and_stats_reads_the_metrics() {
    let (dir, config) = workspace("");
    let prompt = dir.path().join("prompt.md");
    fs::write(&prompt, "Plan SPEC-KIT-42 carefully\n").unwrap();
    let out = run(
        &config,
        &[
            "spawn",
            "--spec",
            "SPEC-KIT-42",
            "--stage",
            "plan",
            "--prompt",
            prompt.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(
        text.starts_with("SPEC-KIT-42 plan: 2/2 agents spawned in"),
        "{text}"
    );
    assert!(text.contains("2 completed, 0 failed"), "{text}");
    assert!(
        text.contains("  gemini ") && text.contains("  claude "),
        "{text}"
    );
    assert!(text.contains("spawn_metrics.json"), "{text}");
    let output = fs::read_dir(dir.path().join("evidence/commands/SPEC-KIT-42"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with("_gemini_output.txt")
        })
        .expect("gemini's output file");
    assert!(fs::read_to_string(output.path())
        .unwrap()
        .contains("Plan SPEC-KIT-42 carefully"));

    let out = run(
        &config,
        &[
            "spawn",
            "--spec",
            "SPEC-KIT-42",
            "--stage",
            "tasks",
            "--agents",
            "claude",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json = speckit_testkit::json::data(&out.stdout);
    assert_eq!(json["batch"]["agent_count"], 1);
    assert_eq!(json["completions"][0]["agent"], "claude");
    assert_eq!(json["completions"][0]["ok"], true);

    let out = run(&config, &["spawn", "stats", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats = speckit_testkit::json::data(&out.stdout);
    assert_eq!(stats["batches"], 2);
    assert_eq!(stats["agents"], 3);
    assert_eq!(stats["agent_success_rate"], 1.0);
    assert!(stats["agent_spawn"]["p95_ms"].as_f64().unwrap() > 0.0);
    let out = run(&config, &["spawn", "stats"]);
    let text = stdout(&out);
    assert!(
        text.contains("spawn batches: 2 (2 fully successful); agents: 3 (3 spawned)"),
        "{text}"
    );
    assert!(text.contains("success rate: agents 100.0%"), "{text}");
    assert!(text.contains("agent spawn time: p50"), "{text}");
}

#[test]
fn a_failing_agent_fails_the_command_and_is_named() {
    let (_dir, config) =
        workspace("[[spawn.agents]]\nname = \"broken\"\ncommand = \"/nonexistent/agent-cli\"\n");
    let out = run(&config, &["spawn", "--spec", "SPEC-1", "--stage", "plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("2/3 agents spawned"), "{text}");
    // The failure is a diagnostic: on stderr, once.
    let errors = String::from_utf8_lossy(&out.stderr).into_owned();
    let failure =
        "error: agent \"broken\" failed to spawn: cannot start \"/nonexistent/agent-cli\"";
    assert_eq!(errors.matches(failure).count(), 1, "{errors}");
    assert!(!text.contains("error: "), "{text}");
    assert!(text.contains("No such file"), "{text}");
}

#[test]
fn bad_input_is_a_usage_error_that_starts_nothing() {
    let (dir, config) = workspace("");
    let cases: &[(&[&str], &str)] = &[
        (&["spawn", "--spec", "SPEC-1"], "spawn needs --stage"),
        (&["spawn", "--stage", "plan"], "spawn needs --spec"),
        (
            &["spawn", "--spec", "../etc", "--stage", "plan"],
            "invalid SPEC-ID \"../etc\"",
        ),
        (
            &["spawn", "--spec", "SPEC-1", "--stage", "a/b"],
            "invalid stage \"a/b\"",
        ),
        (
            &[
                "spawn", "--spec", "SPEC-1", "--stage", "plan", "--agents", "codex",
            ],
            "unknown agent(s) codex",
        ),
        (
            &[
                "spawn",
                "--spec",
                "SPEC-1",
                "--stage",
                "plan",
                "--prompt",
                "/nonexistent/prompt.md",
            ],
            "cannot read the prompt file /nonexistent/prompt.md",
        ),
    ];
    for (args, message) in cases {
        let out = run(&config, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    assert!(!dir.path().join("evidence").exists(), "nothing was written");

    let empty = dir.path().join("empty.toml");
    fs::write(&empty, "[storage]\ndatabase_path = \"db2.sqlite\"\n").unwrap();
    let out = run(&empty, &["spawn", "--spec", "SPEC-1", "--stage", "plan"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no [[spawn.agents]]"),
        "{}",
        stderr(&out)
    );

    let out = run(&empty, &["spawn", "stats"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("No spawn metrics recorded yet"));
}

/// An agent that writes its pid to its output file, says READY, then runs for 300 s.
const LONG_AGENT: &str = "[[spawn.agents]]\nname = \"long\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"echo $$ > \\\"$1\\\"; echo READY; exec sleep 300\", \"sh\", \"{output_file}\"]\nreadiness = { line = \"READY\" }\n";

/// The pid the "long" agent writes into its output file once it runs (waited for, bounded).
fn long_agent_pid(workspace: &Path) -> i32 {
    let spec_dir = workspace.join("evidence/commands/SPEC-1");
    let started = std::time::Instant::now();
    loop {
        let found = fs::read_dir(&spec_dir).ok().and_then(|entries| {
            entries
                .filter_map(|e| e.ok())
                .find(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .ends_with("_long_output.txt")
                })
                .and_then(|e| fs::read_to_string(e.path()).ok())
                .and_then(|t| t.trim().parse::<i32>().ok())
        });
        if let Some(pid) = found {
            return pid;
        }
        assert!(started.elapsed().as_secs() < 30, "the agent never started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn sigterm_stops_the_agents_instead_of_orphaning_them() {
    let (dir, config) = workspace(LONG_AGENT);
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args([
            "spawn", "--spec", "SPEC-1", "--stage", "plan", "--agents", "long",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The agent writes its pid once it runs: wait for that (bounded), then SIGTERM.
    let pid = long_agent_pid(dir.path());
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    // 130, as a shell reports an interrupted command, and a word on what happened.
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(said.contains("stopping at the next safe point"), "{said}");
    assert!(
        said.contains("interrupted: spawn stopped at a safe point")
            && said.contains("run it again"),
        "{said}"
    );
    // The agent (a grandchild of this test) is gone.
    let alive = |pid: i32| {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    };
    let started = std::time::Instant::now();
    while alive(pid) {
        assert!(
            started.elapsed().as_secs() < 10,
            "agent {pid} outlived the command"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// SIGKILL leaves no trace in the process but the `running` row: the next engine to open
/// the database for writing marks that run abandoned, so `jobs` does not show it running
/// forever. Read-only commands leave the row as it is.
#[test]
fn a_killed_command_leaves_its_run_abandoned_not_running() {
    let (dir, config) = workspace(LONG_AGENT);
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args([
            "spawn", "--spec", "SPEC-1", "--stage", "plan", "--agents", "long",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let agent = long_agent_pid(dir.path());
    child.kill().unwrap();
    child.wait().unwrap();
    // SAFETY: kill(2) on the agent this test started (it outlived the killed command).
    unsafe {
        libc::kill(agent, libc::SIGKILL);
    }
    let runs = |config: &Path| -> Vec<serde_json::Value> {
        let out = run(config, &["jobs", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let runs = speckit_testkit::json::data(&out.stdout)["runs"].clone();
        runs.as_array().unwrap().clone()
    };
    let spawn_run = |runs: &[serde_json::Value]| {
        runs.iter()
            .find(|r| r["job"] == "spawn")
            .cloned()
            .expect("the spawn run is recorded")
    };
    assert_eq!(spawn_run(&runs(&config))["outcome"], "running");

    // A writing engine (a vacuum) starts: the dead engine's run is abandoned.
    let out = run(&config, &["vacuum"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let after = spawn_run(&runs(&config));
    assert_eq!(after["outcome"], "abandoned", "{after}");
    assert!(after["finished_at"].is_string(), "{after}");
    let error = after["error"]["message"].as_str().unwrap_or_default();
    assert!(error.contains("ended (killed or crashed)"), "{error}");
}

#[test]
fn list_agents_warns_of_an_agent_whose_command_is_not_on_its_path() {
    let (_dir, config) = workspace(
        "[[spawn.agents]]\nname = \"shell\"\ncommand = \"sh\"\n\
         [[spawn.agents]]\nname = \"absent\"\ncommand = \"no-such-agent-cli\"\n",
    );
    let out = run(&config, &["spawn", "--list-agents"]);
    assert!(
        out.status.success(),
        "listing is not a failure: {}",
        stderr(&out)
    );
    let warnings = stderr(&out);
    assert!(
        warnings.contains(
            "agent \"absent\" would not start: no executable file named \"no-such-agent-cli\""
        ),
        "{warnings}"
    );
    assert_eq!(warnings.matches("would not start").count(), 1, "{warnings}");
    assert!(
        stdout(&out).contains("no-such-agent-cli"),
        "{}",
        stdout(&out)
    );
    // The same warning beside the JSON listing.
    let out = run(&config, &["spawn", "--list-agents", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings = stderr(&out);
    assert_eq!(warnings.matches("would not start").count(), 1, "{warnings}");
}
