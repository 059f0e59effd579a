//! An agent's OS process: started in its own process group so that stopping it stops
//! everything it started, killed and reaped on every failure path, its output going to
//! log tasks ([`crate::logs`]), and (for agents that signal readiness) its stdout watched
//! for the ready line.
//!
//! No orphans: [`AgentProcess`] kills the whole group when dropped without having been
//! reaped (a dropped request, a panicking caller); tokio's `kill_on_drop` then reaps the
//! leader in the background.

use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout};
use tokio::task::JoinHandle;

use crate::logs::{LogFigures, LogInput, LogResult, LogSender};

/// What finishing an agent's logs found.
#[derive(Debug, Default)]
pub struct LogsFinished {
    pub errors: Vec<String>,
    /// Each log that was cut at `max_log_bytes`: its path and figures.
    pub cut: Vec<(std::path::PathBuf, LogFigures)>,
}

/// A running agent process, leader of its own process group.
#[derive(Debug)]
pub struct AgentProcess {
    child: Child,
    pid: u32,
    /// The tasks writing its stdout and stderr logs, with their files.
    logs: Vec<(std::path::PathBuf, JoinHandle<LogResult>)>,
    reaped: bool,
}

impl AgentProcess {
    /// Wraps a just-spawned child (started with `process_group(0)` and `kill_on_drop`).
    pub fn new(child: Child) -> Self {
        let pid = child.id().unwrap_or(0);
        Self {
            child,
            pid,
            logs: Vec::new(),
            reaped: false,
        }
    }

    /// Hands over a task writing one of its logs, so finishing the process finishes it.
    pub fn add_log(&mut self, path: std::path::PathBuf, log: JoinHandle<LogResult>) {
        self.logs.push((path, log));
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

    /// Waits for the log tasks to reach the end of their pipes (bounded: a process the
    /// agent left outside its group may hold a pipe open), so the logs are complete before
    /// they are read. Returns what went wrong with them.
    pub async fn finish_logs(&mut self) -> LogsFinished {
        let mut finished = LogsFinished::default();
        for (path, mut log) in std::mem::take(&mut self.logs) {
            match tokio::time::timeout(Duration::from_secs(5), &mut log).await {
                Ok(Ok(Ok(figures))) => {
                    if figures.total_bytes > figures.kept_bytes {
                        finished.cut.push((path, figures));
                    }
                }
                Ok(Ok(Err(e))) => finished.errors.push(e),
                Ok(Err(e)) => finished.errors.push(format!("a log task failed: {e}")),
                Err(_) => {
                    log.abort();
                    tracing::warn!(
                        pid = self.pid,
                        "agent output still open 5 s after it stopped; its log may be incomplete"
                    );
                }
            }
        }
        finished
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_group();
        }
        for (_, log) in self.logs.drain(..) {
            log.abort();
        }
    }
}

/// Watches a piped stdout for the ready line, passing everything it reads on to the
/// stdout log task. The agent's own task reads until the line (no hand-off to another
/// task on the way to "ready"); then [`ReadyWatch::finish`] hands the rest of the stream to
/// the log task. Lines are scanned each up to 4 KiB (a longer line cannot be the ready
/// line), so memory stays bounded whatever the agent prints.
pub struct ReadyWatch {
    stdout: Option<ChildStdout>,
    log: LogSender,
    target: String,
    line: Vec<u8>,
    overlong: bool,
    buffer: Box<[u8]>,
}

impl ReadyWatch {
    pub fn new(stdout: ChildStdout, log: LogSender, ready_line: &str) -> Self {
        Self {
            stdout: Some(stdout),
            log,
            target: ready_line.trim().to_string(),
            line: Vec::new(),
            overlong: false,
            buffer: vec![0u8; 8192].into_boxed_slice(),
        }
    }

    /// Reads until the ready line (`Ok(true)`) or end of file (`Ok(false)`). Cancel-safe:
    /// what was read is already with the log task and the scan state is kept, so a later
    /// call goes on where this one stopped. An error means the log cannot be written.
    pub async fn wait_ready(&mut self) -> std::io::Result<bool> {
        let Some(stdout) = self.stdout.as_mut() else {
            return Ok(false);
        };
        loop {
            let n = stdout.read(&mut self.buffer).await?;
            if n == 0 {
                return Ok(false);
            }
            let chunk = &self.buffer[..n];
            let mut ready = false;
            for &byte in chunk {
                if byte == b'\n' {
                    if !self.overlong && trimmed(&self.line) == self.target.as_bytes() {
                        ready = true;
                        break;
                    }
                    self.line.clear();
                    self.overlong = false;
                } else if self.line.len() < 4096 {
                    self.line.push(byte);
                } else {
                    self.overlong = true;
                }
            }
            self.log
                .send(LogInput::Bytes(chunk.to_vec()))
                .await
                .map_err(std::io::Error::other)?;
            if ready {
                return Ok(true);
            }
        }
    }

    /// Hands the rest of stdout to the log task, which copies it to the end.
    pub async fn finish(mut self) {
        if let Some(stdout) = self.stdout.take() {
            // A failed log task keeps its error for `finish_logs`; nothing more to do here.
            let _ = self.log.send(LogInput::Rest(Box::new(stdout))).await;
        }
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
