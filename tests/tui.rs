//! Drives the embedding example's terminal UI (`examples/tui_startup.rs`) under tmux on a
//! generated demo workspace: the screen must show the policy, the per-SPEC evidence bars,
//! and, after the vacuum key, the vacuum's job report; the quit key must end it cleanly.
//!
//! A custom harness (`harness = false`): this binary is also the program under test. Run
//! normally it starts a tmux server and, in its pane, runs itself again with
//! `SPECKIT_TUI_TEST_CONFIG` set, which runs the example's code (compiled in from its
//! source file, so it is always the current code) instead of the check. Without tmux the
//! check is skipped with a note.

#[allow(dead_code)]
#[path = "../examples/tui_startup.rs"]
mod tui_startup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};
use std::time::{Duration, Instant};

const CHILD_CONFIG: &str = "SPECKIT_TUI_TEST_CONFIG";
const CHILD_LOG: &str = "SPECKIT_TUI_TEST_LOG";
const TEST_NAME: &str = "tui_shows_policy_bars_and_a_vacuum_report_then_quits";
const SCREEN_WAIT: Duration = Duration::from_secs(90);

fn main() -> ExitCode {
    if let Some(config) = std::env::var_os(CHILD_CONFIG) {
        let options = tui_startup::Options {
            config: config.into(),
            log: std::env::var_os(CHILD_LOG).map(PathBuf::from),
        };
        return match tui_startup::run(options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    // Behave like a libtest binary towards `cargo test -- --list` and name filters.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{TEST_NAME}: test");
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| TEST_NAME.contains(f.as_str())) {
        return ExitCode::SUCCESS;
    }
    match tui_check() {
        Ok(Checked::Passed) => {
            println!("test {TEST_NAME} ... ok");
            ExitCode::SUCCESS
        }
        Ok(Checked::Skipped(note)) => {
            println!("test {TEST_NAME} ... skipped: {note}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("test {TEST_NAME} ... FAILED\n{failure}");
            ExitCode::FAILURE
        }
    }
}

enum Checked {
    Passed,
    Skipped(String),
}

/// A private tmux server on a socket in the test's temporary folder (removed with it),
/// killed when dropped.
struct Tmux {
    socket: PathBuf,
    config: PathBuf,
}

impl Tmux {
    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command
            .arg("-S")
            .arg(&self.socket)
            .arg("-f")
            .arg(&self.config);
        if std::env::var_os("TERM").is_none() {
            command.env("TERM", "xterm-256color");
        }
        command
    }

    fn run(&self, args: &[&str]) -> Result<Output, String> {
        let output = self
            .command()
            .args(args)
            .output()
            .map_err(|e| format!("tmux {args:?}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "tmux {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(output)
    }

    fn screen(&self) -> Result<String, String> {
        let output = self.run(&["capture-pane", "-p", "-t", "tui"])?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

/// Polls the screen until `done` holds for it, or fails with the last screen and the log.
fn wait_for_screen(
    tmux: &Tmux,
    log: &Path,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let deadline = Instant::now() + SCREEN_WAIT;
    loop {
        let screen = tmux.screen()?;
        if done(&screen) {
            return Ok(screen);
        }
        if Instant::now() > deadline {
            return Err(failure(what, &screen, log));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn failure(what: &str, screen: &str, log: &Path) -> String {
    let log_text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = log_text.lines().rev().take(30).collect();
    format!(
        "{what}\n--- screen ---\n{screen}\n--- log (last lines, newest first) ---\n{}",
        tail.join("\n")
    )
}

fn lines_with<'a>(screen: &'a str, needle: &str) -> Vec<&'a str> {
    screen.lines().filter(|l| l.contains(needle)).collect()
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn tui_check() -> Result<Checked, String> {
    match Command::new("tmux").arg("-V").output() {
        Ok(output) if output.status.success() => {}
        _ => {
            return Ok(Checked::Skipped(
                "tmux is not installed (CI installs it: see .ci/run)".into(),
            ))
        }
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let workspace = speckit_hygiene::demo::create_workspace(&dir.path().join("ws"))
        .map_err(|e| format!("cannot create the demo workspace: {e}"))?;
    let log = dir.path().join("tui.log");
    let tmux_config = dir.path().join("tmux.conf");
    // Keep the pane after the program exits, so its exit status can be read.
    std::fs::write(&tmux_config, "set -g remain-on-exit on\n").map_err(|e| e.to_string())?;
    let tmux = Tmux {
        socket: dir.path().join("tmux.sock"),
        config: tmux_config,
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // The shell records the program's exit status in a file: tmux 3.3 sometimes marks a
    // pane dead (its terminal closed) without ever recording the status.
    let status_file = dir.path().join("exit-status");
    let program = format!(
        "env {CHILD_CONFIG}={} {CHILD_LOG}={} {}; echo $? > {}",
        shell_quote(&workspace.config_path.to_string_lossy()),
        shell_quote(&log.to_string_lossy()),
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&status_file.to_string_lossy()),
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "120",
        "-y",
        "40",
        &program,
    ])?;

    // The policy and the bars, once the first measurement is in.
    let screen = wait_for_screen(&tmux, &log, "the policy and SPEC bars did not show", |s| {
        s.contains("Policy in effect") && lines_with(s, "SPEC-KIT-90").len() >= 4
    })?;
    let expect = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(failure(what, &screen, &log))
        }
    };
    expect(
        screen.contains("warn 0.5 MiB, limit 1 MiB per SPEC"),
        "the policy's limits are not shown",
    )?;
    expect(
        screen.contains("archive after 30 d, purge after 90 d"),
        "the retention policy is not shown",
    )?;
    expect(
        screen.contains("Policy in effect (generation 1)")
            && lines_with(&screen, "loaded")
                .iter()
                .any(|l| l.contains("UTC (start-up)")),
        "when the policy was loaded is not shown",
    )?;
    for (spec, _) in speckit_hygiene::demo::DEMO_SPECS {
        let rows = lines_with(&screen, spec);
        expect(
            rows.iter()
                .any(|row| row.contains('█') || row.contains('░')),
            &format!("{spec} has no bar"),
        )?;
    }
    expect(screen.contains("vacuum"), "the next runs are not shown")?;

    // The vacuum key runs a vacuum; its report appears.
    tmux.run(&["send-keys", "-t", "tui", "v"])?;
    let screen = wait_for_screen(&tmux, &log, "no vacuum report after the v key", |s| {
        lines_with(s, " vacuum ")
            .iter()
            .any(|l| l.contains("manual") && (l.contains("succeeded") || l.contains("failed")))
    })?;
    let report = lines_with(&screen, " vacuum ")
        .into_iter()
        .find(|l| l.contains("manual"))
        .unwrap_or_default()
        .to_string();
    if !report.contains("succeeded") {
        return Err(failure(
            &format!("the vacuum did not succeed: {report}"),
            &screen,
            &log,
        ));
    }

    // The quit key ends it, with status 0, after a graceful shutdown.
    tmux.run(&["send-keys", "-t", "tui", "q"])?;
    let deadline = Instant::now() + SCREEN_WAIT;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if text.ends_with('\n') {
                break text.trim().to_string();
            }
        }
        if Instant::now() > deadline {
            let screen = tmux.screen()?;
            return Err(failure("q did not end the program", &screen, &log));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if status != "0" {
        let screen = tmux.screen()?;
        return Err(failure(
            &format!("the program exited with status {status}"),
            &screen,
            &log,
        ));
    }
    Ok(Checked::Passed)
}
