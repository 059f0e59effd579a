//! Nothing outlives its batch: every agent starts with [`MARKER`] set to its agent ID in
//! its environment, which its descendants inherit, so when the agent ends (exit, timeout,
//! cancel) the processes it left behind are found by the marker, even those that left its
//! process group and session (`setsid`) and ignore SIGHUP and SIGTERM, and killed.
//!
//! Linux only (`/proc`). A descendant that clears or rewrites its own environment is not
//! found this way; a cgroup per batch would catch it (not done). A process is killed only
//! while its environment still carries the marker when read right before the signal, so a
//! reused pid is not hit.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The variable each agent (and whatever it starts) carries: its agent ID.
pub const MARKER: &str = "SPECKIT_AGENT_ID";

/// How long [`stop_left_behind`] keeps looking for processes still starting or still
/// dying.
const SETTLE: Duration = Duration::from_secs(2);

/// Kills every process carrying `agent_id`'s marker, except `leader` (the agent itself,
/// reaped by its owner), until none is left or [`SETTLE`] passed. Blocking (it reads
/// `/proc` and waits for the processes to go): run it off the async threads. Returns the
/// pids it killed.
pub fn stop_left_behind(agent_id: &str, leader: u32) -> Vec<u32> {
    let wanted = format!("{MARKER}={agent_id}");
    let me = std::process::id();
    let deadline = Instant::now() + SETTLE;
    let mut killed = BTreeSet::new();
    loop {
        let marked: Vec<u32> = marked_pids(&wanted)
            .into_iter()
            .filter(|&pid| pid != me && pid != leader)
            .collect();
        if marked.is_empty() || Instant::now() >= deadline {
            if !marked.is_empty() {
                tracing::warn!(agent_id, pids = ?marked, "processes the agent left behind are still there after SIGKILL");
            }
            break;
        }
        for pid in marked {
            // SAFETY: kill(2) with a positive pid signals one process; no memory involved.
            // The marker was read from this pid just now (see the module's note on reuse).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            killed.insert(pid);
        }
        // A killed process leaves /proc (or turns zombie, with an empty environment) once
        // the kernel has torn it down: usually within a millisecond.
        std::thread::sleep(Duration::from_millis(5));
    }
    killed.into_iter().collect()
}

/// The pids of live processes whose environment holds `wanted` (`NAME=value`) exactly.
fn marked_pids(wanted: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| carries(*pid, wanted))
        .collect()
}

/// Whether process `pid` carries `wanted` in its environment (false when it cannot be
/// read: gone, a zombie, another user's).
fn carries(pid: u32, wanted: &str) -> bool {
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(environ) => environ
            .split(|&b| b == 0)
            .any(|entry| entry == wanted.as_bytes()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_processes_with_the_exact_marker() {
        let mut marked = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER, "batch-1-agent")
            .spawn()
            .unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER, "batch-1-agent-2")
            .spawn()
            .unwrap();
        let wanted = format!("{MARKER}=batch-1-agent");
        // The exec may not have replaced the forked image yet: look until it has.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !marked_pids(&wanted).contains(&marked.id()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let found = marked_pids(&wanted);
        assert!(found.contains(&marked.id()), "{found:?}");
        assert!(!found.contains(&other.id()), "a longer ID is another agent");
        let killed = stop_left_behind("batch-1-agent", 0);
        assert_eq!(killed, vec![marked.id()]);
        assert!(
            marked.wait().unwrap().code().is_none(),
            "killed by a signal"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
