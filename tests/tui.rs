//! Drives the embedding example's terminal UI (`examples/tui_startup/`) under tmux on a
//! generated demo workspace: at 120 x 40 the screen must show the policy and the per-SPEC
//! evidence bars, the vacuum key must ask first (`n` runs nothing, `y` runs it and its
//! report appears); with 100 SPECs at 80 x 24 the blocked SPECs come first, the position
//! is shown, End scrolls to the last, `s` sorts, Enter shows a SPEC's details and `?` the
//! keys; the quit key must end each run cleanly.
//!
//! A custom harness (`harness = false`): this binary is also the program under test. Run
//! normally it starts a tmux server and, in its pane, runs itself again with
//! `SPECKIT_TUI_TEST_CONFIG` set, which runs the example's code (compiled in from its
//! source file, so it is always the current code) instead of the check. Without tmux the
//! check is skipped with a note, except in CI (`CI` set), where it fails.

#[allow(dead_code)]
#[path = "../examples/tui_startup/main.rs"]
mod tui_startup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};
use std::time::{Duration, Instant};

const CHILD_CONFIG: &str = "SPECKIT_TUI_TEST_CONFIG";
const CHILD_LOG: &str = "SPECKIT_TUI_TEST_LOG";
const TEST_NAME: &str = "tui_shows_the_policy_scrolls_100_specs_and_confirms_a_vacuum";
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

/// One run of the UI in a tmux pane of `width` x `height` on the workspace's config.
struct Session {
    tmux: Tmux,
    log: PathBuf,
    status_file: PathBuf,
}

impl Session {
    fn start(
        dir: &Path,
        name: &str,
        config: &Path,
        width: u16,
        height: u16,
    ) -> Result<Self, String> {
        let log = dir.join(format!("{name}.log"));
        let tmux_config = dir.join(format!("{name}.tmux.conf"));
        // Keep the pane after the program exits, so its exit status can be read.
        std::fs::write(&tmux_config, "set -g remain-on-exit on\n").map_err(|e| e.to_string())?;
        let tmux = Tmux {
            socket: dir.join(format!("{name}.sock")),
            config: tmux_config,
        };
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // The shell records the program's exit status in a file: tmux 3.3 sometimes marks a
        // pane dead (its terminal closed) without ever recording the status.
        let status_file = dir.join(format!("{name}.exit-status"));
        let program = format!(
            "env {CHILD_CONFIG}={} {CHILD_LOG}={} {}; echo $? > {}",
            shell_quote(&config.to_string_lossy()),
            shell_quote(&log.to_string_lossy()),
            shell_quote(&exe.to_string_lossy()),
            shell_quote(&status_file.to_string_lossy()),
        );
        let (width, height) = (width.to_string(), height.to_string());
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "tui",
            "-x",
            &width,
            "-y",
            &height,
            &program,
        ])?;
        Ok(Self {
            tmux,
            log,
            status_file,
        })
    }

    fn wait(&self, what: &str, done: impl Fn(&str) -> bool) -> Result<String, String> {
        wait_for_screen(&self.tmux, &self.log, what, done)
    }

    fn keys(&self, keys: &[&str]) -> Result<(), String> {
        let mut args = vec!["send-keys", "-t", "tui"];
        args.extend(keys);
        self.tmux.run(&args).map(|_| ())
    }

    fn fail(&self, what: &str, screen: &str) -> String {
        failure(what, screen, &self.log)
    }

    /// The quit key ends it, with status 0, after a graceful shutdown.
    fn quit(&self) -> Result<(), String> {
        self.keys(&["q"])?;
        let deadline = Instant::now() + SCREEN_WAIT;
        let status = loop {
            if let Ok(text) = std::fs::read_to_string(&self.status_file) {
                if text.ends_with('\n') {
                    break text.trim().to_string();
                }
            }
            if Instant::now() > deadline {
                return Err(self.fail("q did not end the program", &self.tmux.screen()?));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if status != "0" {
            return Err(self.fail(
                &format!("the program exited with status {status}"),
                &self.tmux.screen()?,
            ));
        }
        Ok(())
    }
}

fn tui_check() -> Result<Checked, String> {
    match Command::new("tmux").arg("-V").output() {
        Ok(output) if output.status.success() => {}
        // In CI the test must run: .ci/run installs tmux, and a skip would hide that it did not.
        _ if std::env::var_os("CI").is_some() => {
            return Err("tmux is not installed in CI (.ci/run installs it)".into())
        }
        _ => {
            return Ok(Checked::Skipped(
                "tmux is not installed (CI installs it: see .ci/run)".into(),
            ))
        }
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let workspace = speckit_hygiene::demo::create_workspace(&dir.path().join("ws"))
        .map_err(|e| format!("cannot create the demo workspace: {e}"))?;
    policy_bars_and_a_confirmed_vacuum(dir.path(), &workspace.config_path)?;
    // The same workspace with 96 more SPECs, on a terminal of 80 x 24.
    for i in 0..96 {
        let spec = dir.path().join(format!(
            "ws/{}/commands/SPEC-KIT-{}",
            relative_root(&workspace),
            100 + i
        ));
        std::fs::create_dir_all(&spec).map_err(|e| e.to_string())?;
        std::fs::write(spec.join("run.json"), "{}").map_err(|e| e.to_string())?;
    }
    a_hundred_specs_on_a_small_terminal(dir.path(), &workspace.config_path)?;
    Ok(Checked::Passed)
}

/// The evidence root below the workspace folder.
fn relative_root(workspace: &speckit_hygiene::demo::DemoWorkspace) -> String {
    workspace
        .evidence_root
        .strip_prefix(&workspace.dir)
        .expect("the root is in the workspace")
        .display()
        .to_string()
}

fn policy_bars_and_a_confirmed_vacuum(dir: &Path, config: &Path) -> Result<(), String> {
    let ui = Session::start(dir, "demo", config, 120, 40)?;
    // The policy and the bars, once the first measurement is in.
    let screen = ui.wait("the policy and SPEC bars did not show", |s| {
        s.contains("Policy in effect") && lines_with(s, "SPEC-KIT-90").len() >= 4
    })?;
    let expect = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(ui.fail(what, &screen))
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

    // The vacuum key asks first; "n" changes nothing.
    ui.keys(&["v"])?;
    ui.wait("v did not ask before vacuuming", |s| {
        s.contains("Vacuum the database now?")
    })?;
    ui.keys(&["n"])?;
    let screen = ui.wait("n did not cancel the vacuum", |s| {
        s.contains("vacuum cancelled") && !s.contains("Vacuum the database now?")
    })?;
    if lines_with(&screen, " vacuum ")
        .iter()
        .any(|l| l.contains("manual"))
    {
        return Err(ui.fail("a cancelled vacuum ran", &screen));
    }
    // "y" runs it; its report appears.
    ui.keys(&["v"])?;
    ui.wait("v did not ask again", |s| {
        s.contains("Vacuum the database now?")
    })?;
    ui.keys(&["y"])?;
    let screen = ui.wait("no vacuum report after v y", |s| {
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
        return Err(ui.fail(&format!("the vacuum did not succeed: {report}"), &screen));
    }
    ui.quit()
}

/// 100 SPECs at 80 x 24: the blocked ones first, the position shown, scrolling to the last
/// one, sorting by name, the help and a SPEC's details.
fn a_hundred_specs_on_a_small_terminal(dir: &Path, config: &Path) -> Result<(), String> {
    let ui = Session::start(dir, "many", config, 80, 24)?;
    let screen = ui.wait("the SPEC list did not show 100 SPECs", |s| {
        s.contains("of 100, by state")
    })?;
    // The demo's blocked SPECs are the first rows, whatever the terminal's size.
    let first_spec_row = screen
        .lines()
        .find(|l| l.contains("SPEC-KIT-") && (l.contains('█') || l.contains('░')))
        .unwrap_or_default();
    if !first_spec_row.contains("block") {
        return Err(ui.fail("the first SPEC shown is not a blocked one", &screen));
    }
    let drawn = screen
        .lines()
        .filter(|l| l.contains("SPEC-KIT-") && (l.contains('█') || l.contains('░')))
        .count();
    if drawn < 3 || !screen.contains(&format!("1-{drawn} of 100")) {
        return Err(ui.fail(
            &format!("{drawn} SPEC rows drawn; the position does not say so"),
            &screen,
        ));
    }
    // End: the last SPEC (by state: the smallest fine one, the last by name among equals).
    ui.keys(&["End"])?;
    ui.wait("End did not scroll to the last SPEC", |s| {
        s.contains(" of 100, by state") && s.contains("-100 of 100") && s.contains("SPEC-KIT-195")
    })?;
    // Sorted by name (s twice: size, then name), Home: SPEC-KIT-100 first.
    ui.keys(&["s", "s", "Home"])?;
    ui.wait("sorting by name did not put SPEC-KIT-100 first", |s| {
        s.contains("1-") && s.contains("of 100, by name") && s.contains("›SPEC-KIT-100")
    })?;
    // Details of the selected SPEC, then the help; Esc closes each.
    ui.keys(&["Enter"])?;
    ui.wait("Enter did not show the SPEC's details", |s| {
        s.contains("SPEC-KIT-100 (Esc closes)") && s.contains("consensus")
    })?;
    // Esc alone: sent with the next key, a terminal reads the pair as Alt+key.
    ui.keys(&["Escape"])?;
    ui.wait("Esc did not close the details", |s| {
        !s.contains("(Esc closes)")
    })?;
    ui.keys(&["?"])?;
    ui.wait("? did not list the keys", |s| {
        s.contains("Keys (Esc closes)") && s.contains("vacuum the database (asks first)")
    })?;
    ui.keys(&["Escape"])?;
    ui.wait("Esc did not close the help", |s| {
        !s.contains("Keys (Esc closes)")
    })?;
    ui.quit()
}
