//! An agent's stdout and stderr logs, written by background tasks from pipes.
//!
//! Only the prompt file has to exist before an agent starts; its two log files are created
//! by these tasks while it starts, so a spawn waits for one file creation instead of three
//! (on a busy filesystem a creation can take a millisecond, and creations in one folder
//! queue behind each other). Whatever the agent writes meanwhile waits in the pipe, or in
//! the bounded channel from the task watching for the ready line.
//!
//! A log that cannot be created or written is never silent: the task ends with the error,
//! which the agent's completion (or spawn failure) reports; the pipe's read end closes, so
//! an agent writing more gets `EPIPE`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What a log task writes: bytes already read elsewhere, then a stream to copy to its end.
pub enum LogInput {
    Bytes(Vec<u8>),
    Rest(Box<dyn AsyncRead + Send + Unpin>),
}

/// The sending side of a log task, and where its error is once it failed.
#[derive(Clone)]
pub struct LogSender {
    tx: mpsc::Sender<LogInput>,
    error: Arc<OnceLock<String>>,
    path: PathBuf,
}

/// How a log task ended, for error messages.
pub type LogResult = Result<u64, String>;

impl LogSender {
    /// Sends input to the log task; on failure, the task's own error.
    pub async fn send(&self, input: LogInput) -> Result<(), String> {
        if self.tx.send(input).await.is_err() {
            return Err(self
                .error()
                .unwrap_or_else(|| format!("the log writer for {} stopped", self.path.display())));
        }
        Ok(())
    }

    /// Sends input without waiting; for a log task just started (its channel is empty).
    /// A failure is the task's, reported by it.
    pub fn try_send(&self, input: LogInput) {
        let _ = self.tx.try_send(input);
    }

    /// The task's error, if it failed.
    pub fn error(&self) -> Option<String> {
        self.error.get().cloned()
    }
}

/// Starts a task that creates `path` (`create_new`: never through an existing file or
/// symlink) and writes what it is sent, in order, until every sender is gone and the last
/// stream ended. Returns the bytes written, or the error naming the file.
pub fn spawn_log_writer(path: PathBuf) -> (LogSender, JoinHandle<LogResult>) {
    // 64 chunks of at most 8 KiB: what an agent prints before it is ready is held in
    // memory only this far; then reading its stdout waits for the file.
    let (tx, mut rx) = mpsc::channel::<LogInput>(64);
    let error = Arc::new(OnceLock::new());
    let sender = LogSender {
        tx,
        error: error.clone(),
        path: path.clone(),
    };
    let task = tokio::spawn(async move {
        let result: std::io::Result<u64> = async {
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await?;
            let mut written = 0u64;
            while let Some(input) = rx.recv().await {
                match input {
                    LogInput::Bytes(bytes) => {
                        file.write_all(&bytes).await?;
                        written += bytes.len() as u64;
                    }
                    LogInput::Rest(mut stream) => {
                        written += tokio::io::copy(&mut stream, &mut file).await?;
                    }
                }
            }
            file.flush().await?;
            Ok(written)
        }
        .await;
        result.map_err(|e| {
            let message = format!("cannot write the log {}: {e}", path.display());
            // Set before `rx` is dropped (when this task returns), so a sender that finds
            // the channel closed finds the reason.
            let _ = error.set(message.clone());
            message
        })
    });
    (sender, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_bytes_then_the_rest_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let (sender, task) = spawn_log_writer(path.clone());
        sender
            .send(LogInput::Bytes(b"one\n".to_vec()))
            .await
            .unwrap();
        sender
            .send(LogInput::Rest(Box::new(&b"two\nthree\n"[..])))
            .await
            .unwrap();
        drop(sender);
        assert_eq!(task.await.unwrap(), Ok(14));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");
    }

    #[tokio::test]
    async fn a_log_that_cannot_be_created_reports_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken.log");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let (sender, task) = spawn_log_writer(path.clone());
        let error = task.await.unwrap().unwrap_err();
        assert!(
            error.contains("taken.log") && error.contains("exists"),
            "{error}"
        );
        let sent = sender.send(LogInput::Bytes(b"x".to_vec())).await;
        assert_eq!(sent, Err(error));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }
}
