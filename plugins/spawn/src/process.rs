//! An agent's OS process: started in its own process group so that stopping it stops
//! everything it started, killed and reaped on every failure path, and (for agents that
//! signal readiness) its stdout copied to the evidence log while watching for the ready
//! line.
//!
//! No orphans: [`AgentProcess`] kills the whole group when dropped without having been
//! reaped (a dropped request, a panicking caller); tokio's `kill_on_drop` then reaps the
//! leader in the background.

use std::io::Write;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdout};
use tokio::task::JoinHandle;

/// A running agent process, leader of its own process group.
#[derive(Debug)]
pub struct AgentProcess {
    child: Child,
    pid: u32,
    /// Copies a piped stdout to the evidence log (agents with a ready line).
    copier: Option<JoinHandle<std::io::Result<u64>>>,
    reaped: bool,
}

impl AgentProcess {
    /// Wraps a just-spawned child (started with `process_group(0)` and `kill_on_drop`).
    pub fn new(child: Child) -> Self {
        let pid = child.id().unwrap_or(0);
        Self {
            child,
            pid,
            copier: None,
            reaped: false,
        }
    }

    /// Hands over the task copying its stdout, so waiting for the process waits for it.
    pub fn set_copier(&mut self, copier: JoinHandle<std::io::Result<u64>>) {
        self.copier = Some(copier);
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to exit (cancel-safe: may be raced in `select!`).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.reaped = true;
        Ok(status)
    }

    /// The exit status if the process has exited (reaping it), without waiting.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        if status.is_some() {
            self.reaped = true;
        }
        Ok(status)
    }

    /// Kills the whole process group and reaps the leader. Idempotent.
    pub async fn kill(&mut self) -> std::io::Result<ExitStatus> {
        self.kill_group();
        let _ = self.child.start_kill();
        let status = self.child.wait().await?;
        self.reaped = true;
        Ok(status)
    }

    /// Sends SIGKILL to the process group, which may hold processes the agent left behind
    /// after it exited. Harmless when the group is gone.
    pub fn kill_group(&self) {
        if self.pid > 0 {
            // SAFETY: kill(2) with a negative pid signals a process group; no memory is
            // involved. The group id is the leader's pid (process_group(0)); the leader is
            // ours, so the id cannot be reused before we reap it.
            unsafe {
                libc::kill(-(self.pid as libc::pid_t), libc::SIGKILL);
            }
        }
    }

    /// Waits for the stdout copier to reach end of file (bounded: a process the agent left
    /// outside its group may hold the pipe open), so the log is complete before it is read.
    pub async fn finish_copier(&mut self) {
        if let Some(mut copier) = self.copier.take() {
            match tokio::time::timeout(Duration::from_secs(5), &mut copier).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(e))) => {
                    tracing::warn!(
                        pid = self.pid,
                        "copying agent stdout to its log failed: {e}"
                    )
                }
                Ok(Err(e)) => tracing::warn!(pid = self.pid, "stdout copier task failed: {e}"),
                Err(_) => {
                    copier.abort();
                    tracing::warn!(
                        pid = self.pid,
                        "agent stdout still open 5 s after exit; log may be incomplete"
                    );
                }
            }
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_group();
        }
        if let Some(copier) = self.copier.take() {
            copier.abort();
        }
    }
}

/// Watches a piped stdout for the ready line, copying everything it reads to the agent's
/// stdout log as it goes. The agent's own task reads until the line (no hand-off to
/// another task on the way to "ready"); then [`ReadyWatch::into_copier`] copies the rest in
/// the background. Lines are scanned each up to 4 KiB (a longer line cannot be the ready
/// line), so memory stays bounded whatever the agent prints.
pub struct ReadyWatch {
    stdout: ChildStdout,
    log: std::fs::File,
    target: String,
    line: Vec<u8>,
    overlong: bool,
    buffer: Box<[u8]>,
}

impl ReadyWatch {
    pub fn new(stdout: ChildStdout, log: std::fs::File, ready_line: &str) -> Self {
        Self {
            stdout,
            log,
            target: ready_line.trim().to_string(),
            line: Vec::new(),
            overlong: false,
            buffer: vec![0u8; 8192].into_boxed_slice(),
        }
    }

    /// Reads until the ready line (`Ok(true)`) or end of file (`Ok(false)`). Cancel-safe:
    /// what was read is already in the log and the scan state is kept, so a later call
    /// goes on where this one stopped.
    pub async fn wait_ready(&mut self) -> std::io::Result<bool> {
        loop {
            let n = self.stdout.read(&mut self.buffer).await?;
            if n == 0 {
                return Ok(false);
            }
            // A small write to the page cache: done inline rather than on another thread,
            // because every hand-off adds to the agent's measured spawn time.
            self.log.write_all(&self.buffer[..n])?;
            for &byte in &self.buffer[..n] {
                if byte == b'\n' {
                    if !self.overlong && trimmed(&self.line) == self.target.as_bytes() {
                        return Ok(true);
                    }
                    self.line.clear();
                    self.overlong = false;
                } else if self.line.len() < 4096 {
                    self.line.push(byte);
                } else {
                    self.overlong = true;
                }
            }
        }
    }

    /// Copies the rest of stdout to the log in a background task, until end of file.
    pub fn into_copier(self) -> JoinHandle<std::io::Result<u64>> {
        let (mut stdout, log) = (self.stdout, self.log);
        tokio::spawn(async move {
            let mut log = tokio::fs::File::from_std(log);
            let copied = tokio::io::copy(&mut stdout, &mut log).await?;
            log.flush().await?;
            Ok(copied)
        })
    }
}

fn trimmed(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map(|i| i + 1)
        .unwrap_or(start);
    &line[start..end.max(start)]
}

/// How an exit status reads in messages: `exit status 3`, `signal 9`.
pub fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_lines() {
        assert_eq!(trimmed(b"  READY\r"), b"READY");
        assert_eq!(trimmed(b"   "), b"");
        assert_eq!(trimmed(b""), b"");
    }
}
