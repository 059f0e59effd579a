//! `run`: starts the scheduler and watcher, reloads on change, and stops on SIGTERM/SIGINT
//! with exit status 0 within the shutdown grace period.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn start_run(config: &std::path::Path) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_speckit-hygiene"));
    speckit_testkit::process::without_speckit_env(&mut cmd);
    let mut child = cmd
        .arg("-c")
        .arg(config)
        .arg("run")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits (bounded) for a log line containing `needle`.
fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no log line with {needle:?}: {e}"),
        }
    }
}

fn wait_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "run did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_reloads_on_change_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ws = speckit_hygiene::demo::create_workspace(&dir.path().join("ws")).unwrap();
    let (mut child, lines) = start_run(&ws.config_path);
    wait_for_line(&lines, "policy applied");
    // An editor-style save of a new policy is applied without a restart...
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    let edited = text.replace("archive_after_days = 30", "archive_after_days = 31");
    assert_ne!(text, edited);
    let tmp = ws.config_path.with_extension("toml.tmp");
    std::fs::write(&tmp, edited).unwrap();
    std::fs::rename(&tmp, &ws.config_path).unwrap();
    let applied = wait_for_line(&lines, "policy applied");
    assert!(applied.contains("FileChanged"), "{applied}");
    // ...a broken one is rejected and the engine keeps running...
    std::fs::write(
        &ws.config_path,
        "[retention]\narchive_after_days = \"soon\"\n",
    )
    .unwrap();
    let rejected = wait_for_line(&lines, "reload rejected");
    assert!(rejected.contains("speckit.toml"), "{rejected}");
    // The error's next line names the key.
    wait_for_line(&lines, "retention.archive_after_days");
    // ...and SIGTERM stops it with status 0.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(wait_exit(&mut child), 0);
}

#[test]
fn run_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let ws = speckit_hygiene::demo::create_workspace(&dir.path().join("ws")).unwrap();
    let (mut child, lines) = start_run(&ws.config_path);
    wait_for_line(&lines, "running; SIGINT or SIGTERM stops");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    assert_eq!(wait_exit(&mut child), 0);
}
