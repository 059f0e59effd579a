//! Running a command with a deadline: tests never hang on a child that does not finish.

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `command` without this process's `SPECKIT_*` variables: a CLI under test reads only
/// the policy the test wrote, whatever the developer's shell exports.
pub fn without_speckit_env(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SPECKIT_") {
            command.env_remove(key);
        }
    }
    command
}

/// Runs `command` with stdout and stderr captured; SIGKILLs it and panics, naming
/// `label`, when it takes longer than `limit`.
pub fn output_within(command: &mut Command, limit: Duration, label: &str) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(limit) {
        Ok(output) => output.unwrap_or_else(|e| panic!("waiting for {label}: {e}")),
        Err(_) => {
            // SAFETY: plain kill(2) of the child this function started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{label} did not finish within {limit:?}");
        }
    }
}
