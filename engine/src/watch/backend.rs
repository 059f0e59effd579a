//! The file-system side of the watcher: an OS watch on each planned folder (notify), and
//! the inbox through which it wakes the reload task.
//!
//! The notify callback runs on notify's own thread. It only filters the event against the
//! plan and sets a flag, so a busy folder costs no memory however many events it makes.

use std::sync::{Arc, Mutex};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::Notify;

use super::plan::{WatchError, WatchPlan};

/// What the OS watch has seen since the reload task last looked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    /// A relevant event (or a sign events were lost).
    pub changed: bool,
    /// The watch reported an error: it must be set up again.
    pub broken: Option<String>,
}

/// Where a watch reports to. One per watch set-up, so a replaced watch's late callbacks
/// cannot mark its successor broken.
#[derive(Debug, Default)]
pub struct Inbox {
    wake: Notify,
    seen: Mutex<Seen>,
}

impl Inbox {
    pub fn changed(&self) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).changed = true;
        self.wake.notify_one();
    }

    pub fn broken(&self, message: String) {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.changed = true;
            seen.broken.get_or_insert(message);
        }
        self.wake.notify_one();
    }

    /// Waits until something was reported (returns at once if something already was).
    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    pub fn take(&self) -> Seen {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A live watch; dropping it stops the watch.
pub type WatchGuard = Box<dyn Send>;

/// Sets up OS watches for a plan. The engine uses [`NotifyBackend`]; tests substitute one
/// that fails on demand.
pub trait Backend: Send + 'static {
    fn watch(&mut self, plan: &WatchPlan, inbox: Arc<Inbox>) -> Result<WatchGuard, WatchError>;
}

/// notify's recommended watcher (inotify on Linux), non-recursive, one per plan folder.
#[derive(Debug, Default)]
pub struct NotifyBackend;

impl Backend for NotifyBackend {
    fn watch(&mut self, plan: &WatchPlan, inbox: Arc<Inbox>) -> Result<WatchGuard, WatchError> {
        let filter = plan.clone();
        let first_folder = plan
            .folders
            .first()
            .map(|f| f.path.clone())
            .unwrap_or_default();
        let mut watcher = notify::recommended_watcher(
            move |result: notify::Result<notify::Event>| match result {
                Ok(event) if filter.is_relevant(&event) => inbox.changed(),
                Ok(_) => {}
                Err(e) => inbox.broken(e.to_string()),
            },
        )
        .map_err(|source| WatchError::Notify {
            folder: first_folder,
            source,
        })?;
        for folder in &plan.folders {
            watcher
                .watch(&folder.path, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Notify {
                    folder: folder.path.clone(),
                    source,
                })?;
        }
        Ok(Box::new(watcher))
    }
}
