//! Calling a plugin off the async runtime, with a time limit.
//!
//! Each call runs on a fresh thread of its own, and the caller waits for its result with a
//! timeout. A call that never returns cannot be stopped (Rust has no way to kill a thread):
//! its thread is left running, blocked in the plugin, until the process exits. The thread
//! is deliberately not one of tokio's blocking-pool threads, because dropping a runtime
//! waits for every blocking-pool thread, so one hung plugin would hang shutdown forever.
//! A plugin whose call is still hung is not called again until it returns (see
//! [`HungCalls`]), so a plugin that always hangs leaks one thread, not one per run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::CallError;
use super::library::{LoadedLibrary, PluginFunction};

/// The call that timed out last, if it still has not returned.
#[derive(Debug, Default)]
pub struct HungCalls {
    last: Mutex<Option<HungCall>>,
}

#[derive(Debug)]
struct HungCall {
    since: Instant,
    finished: Arc<AtomicBool>,
}

impl HungCalls {
    /// Refuses while an earlier call that timed out is still running.
    pub fn check(&self) -> Result<(), CallError> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some(hung) if !hung.finished.load(Ordering::Acquire) => Err(CallError::StillRunning {
                elapsed_ms: hung.since.elapsed().as_millis() as u64,
            }),
            _ => {
                *last = None;
                Ok(())
            }
        }
    }

    fn record(&self, finished: Arc<AtomicBool>) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(HungCall {
            since: Instant::now(),
            finished,
        });
    }
}

/// Calls `function` on a new thread named `thread_name` and waits at most `timeout` for
/// it. Blocks the calling thread: async callers wrap this in `spawn_blocking` (which then
/// waits at most `timeout`, so runtime shutdown is never held up for longer).
pub fn call_with_timeout(
    library: Arc<LoadedLibrary>,
    function: PluginFunction,
    input: Vec<u8>,
    timeout: Duration,
    thread_name: String,
    hung: &HungCalls,
) -> Result<Vec<u8>, CallError> {
    hung.check()?;
    let (sender, receiver) = mpsc::sync_channel(1);
    let finished = Arc::new(AtomicBool::new(false));
    let thread_finished = finished.clone();
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let result = library.call(function, &input);
            thread_finished.store(true, Ordering::Release);
            // The caller may have given up waiting; then nobody needs the result.
            let _ = sender.send(result);
        })
        .map_err(CallError::Thread)?;
    match receiver.recv_timeout(timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            hung.record(finished);
            Err(CallError::TimedOut {
                timeout_ms: timeout.as_millis() as u64,
            })
        }
        // The thread ended without sending: only if `library.call` itself unwound, which
        // the SDK's catch_unwind rules out for well-formed plugins.
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(CallError::BadOutput(
            "the call's thread ended without a result".into(),
        )),
    }
}
