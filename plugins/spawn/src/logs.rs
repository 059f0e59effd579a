//! An agent's stdout and stderr logs, written by background tasks from pipes.
//!
//! Only the prompt file has to exist before an agent starts; its two log files are created
//! by these tasks while it starts, so a spawn waits for one file creation instead of three
//! (on a busy filesystem a creation can take a millisecond, and creations in one folder
//! queue behind each other). Whatever the agent writes meanwhile waits in the pipe, or in
//! the bounded channel from the task watching for the ready line.
//!
//! A log keeps at most `max_bytes` (`[spawn] max_log_bytes`); the rest is read and dropped
//! (so the agent never blocks on a full pipe), and a last line says how much the agent
//! wrote in all and how much was dropped.
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

/// What a log task did: every byte the agent wrote to the stream, and how many of them the
/// log kept (fewer when it was cut at its cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogFigures {
    pub total_bytes: u64,
    pub kept_bytes: u64,
}

/// How a log task ended, for error messages.
pub type LogResult = Result<LogFigures, String>;

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
/// stream ended, keeping at most `max_bytes`. Returns its figures, or the error naming the
/// file.
pub fn spawn_log_writer(path: PathBuf, max_bytes: u64) -> (LogSender, JoinHandle<LogResult>) {
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
        let result: std::io::Result<LogFigures> = async {
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await?;
            let mut log = CappedLog {
                file,
                max_bytes,
                figures: LogFigures::default(),
            };
            while let Some(input) = rx.recv().await {
                match input {
                    LogInput::Bytes(bytes) => log.write(&bytes).await?,
                    LogInput::Rest(mut stream) => {
                        use tokio::io::AsyncReadExt;
                        let mut buffer = vec![0u8; 64 * 1024];
                        loop {
                            let n = stream.read(&mut buffer).await?;
                            if n == 0 {
                                break;
                            }
                            log.write(&buffer[..n]).await?;
                        }
                    }
                }
            }
            log.finish().await
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

/// A log file that keeps at most `max_bytes` and counts the rest.
struct CappedLog {
    file: tokio::fs::File,
    max_bytes: u64,
    figures: LogFigures,
}

impl CappedLog {
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.figures.total_bytes += bytes.len() as u64;
        let room = self.max_bytes.saturating_sub(self.figures.kept_bytes);
        let kept = &bytes[..bytes.len().min(room as usize)];
        if !kept.is_empty() {
            self.file.write_all(kept).await?;
            self.figures.kept_bytes += kept.len() as u64;
        }
        Ok(())
    }

    /// Ends the log with the marker when it was cut.
    async fn finish(mut self) -> std::io::Result<LogFigures> {
        let f = self.figures;
        if f.total_bytes > f.kept_bytes {
            let marker = format!(
                "\n[speckit-hygiene: log cut at spawn.max_log_bytes = {} bytes; the agent wrote {} bytes, {} dropped]\n",
                self.max_bytes,
                f.total_bytes,
                f.total_bytes - f.kept_bytes
            );
            self.file.write_all(marker.as_bytes()).await?;
        }
        self.file.flush().await?;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_bytes_then_the_rest_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let (sender, task) = spawn_log_writer(path.clone(), 1 << 20);
        sender
            .send(LogInput::Bytes(b"one\n".to_vec()))
            .await
            .unwrap();
        sender
            .send(LogInput::Rest(Box::new(&b"two\nthree\n"[..])))
            .await
            .unwrap();
        drop(sender);
        assert_eq!(
            task.await.unwrap(),
            Ok(LogFigures {
                total_bytes: 14,
                kept_bytes: 14
            })
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");
    }

    #[tokio::test]
    async fn a_log_that_cannot_be_created_reports_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken.log");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let (sender, task) = spawn_log_writer(path.clone(), 1 << 20);
        let error = task.await.unwrap().unwrap_err();
        assert!(
            error.contains("taken.log") && error.contains("exists"),
            "{error}"
        );
        let sent = sender.send(LogInput::Bytes(b"x".to_vec())).await;
        assert_eq!(sent, Err(error));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }

    #[tokio::test]
    async fn a_log_is_cut_at_its_cap_with_a_marker_and_the_true_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flood.log");
        let (sender, task) = spawn_log_writer(path.clone(), 10);
        sender
            .send(LogInput::Bytes(b"0123".to_vec()))
            .await
            .unwrap();
        let flood = vec![b'x'; 300_000];
        sender
            .send(LogInput::Rest(Box::new(std::io::Cursor::new(flood))))
            .await
            .unwrap();
        drop(sender);
        let figures = task.await.unwrap().unwrap();
        assert_eq!(
            figures,
            LogFigures {
                total_bytes: 300_004,
                kept_bytes: 10
            }
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("0123xxxxxx\n[speckit-hygiene: log cut at spawn.max_log_bytes = 10 bytes; the agent wrote 300004 bytes, 299994 dropped]"), "{text}");
    }
}
