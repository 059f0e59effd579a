//! Bounded retry with exponential backoff and full jitter for writes that meet another
//! process's lock. Classified on the real `rusqlite::ErrorCode`: only `DatabaseBusy` and
//! `DatabaseLocked` are transient; every other error is returned at once.

use super::{StorageCounters, StorageError};
use rand::Rng;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Whether an error may go away if the same statement is tried again later.
pub fn is_transient(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// How often and how long to retry a write that met another process's lock. Each attempt
/// first waits inside SQLite's busy handler (`busy_timeout`).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. At least 1.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(1_000),
        }
    }
}

/// An error that says whether trying again later may succeed.
pub trait Transient {
    fn is_transient(&self) -> bool;
}

impl Transient for rusqlite::Error {
    fn is_transient(&self) -> bool {
        is_transient(self)
    }
}

impl Transient for StorageError {
    fn is_transient(&self) -> bool {
        self.sqlite().is_some_and(is_transient)
    }
}

/// Why a retried operation finally failed.
#[derive(Debug)]
pub enum RetryError<E = rusqlite::Error> {
    /// Still busy after every attempt.
    Exhausted { attempts: u32, waited: Duration },
    /// A permanent error, returned on the attempt that met it.
    Permanent(E),
}

impl<E> RetryError<E> {
    /// [`StorageError::Busy`] for an exhausted budget, else the permanent error mapped.
    pub fn into_storage_error_with(
        self,
        path: &Path,
        permanent: impl FnOnce(E) -> StorageError,
    ) -> StorageError {
        match self {
            RetryError::Exhausted { attempts, waited } => StorageError::Busy {
                path: path.to_path_buf(),
                attempts,
                waited_ms: waited.as_millis() as u64,
            },
            RetryError::Permanent(e) => permanent(e),
        }
    }
}

impl RetryError {
    pub fn into_storage_error(self, path: &Path) -> StorageError {
        self.into_storage_error_with(path, |cause| StorageError::Sqlite {
            path: path.to_path_buf(),
            cause,
        })
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1` (full jitter: uniform in `0..=cap`).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        let cap = exp.min(self.max_delay);
        let micros = rand::rng().random_range(0..=cap.as_micros() as u64);
        Duration::from_micros(micros)
    }

    /// Runs `op` until it succeeds, fails permanently, or the attempts run out.
    pub fn run<T, E: Transient + std::fmt::Display>(
        &self,
        path: &Path,
        counters: &StorageCounters,
        mut op: impl FnMut() -> Result<T, E>,
    ) -> Result<T, RetryError<E>> {
        let started = Instant::now();
        let attempts = self.max_attempts.max(1);
        for attempt in 0..attempts {
            match op() {
                Ok(value) => return Ok(value),
                Err(e) if e.is_transient() && attempt + 1 < attempts => {
                    counters.busy_retries.fetch_add(1, Ordering::Relaxed);
                    let delay = self.backoff(attempt);
                    // SQLite's busy_timeout already waited for the lock: another process
                    // holds it that long. Said at warn so a waiting command is not silent.
                    tracing::warn!(
                        database = %path.display(),
                        attempt = attempt + 1,
                        of = attempts,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "another process holds the database's lock ({e}); still waiting"
                    );
                    std::thread::sleep(delay);
                }
                Err(e) if e.is_transient() => {
                    counters.busy_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(RetryError::Exhausted {
                        attempts,
                        waited: started.elapsed(),
                    });
                }
                Err(e) => return Err(RetryError::Permanent(e)),
            }
        }
        unreachable!("the loop returns on its last attempt")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy() -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None)
    }

    #[test]
    fn retries_busy_then_succeeds() {
        let counters = StorageCounters::default();
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_micros(10),
            max_delay: Duration::from_micros(100),
        };
        let mut calls = 0;
        let out = policy.run(Path::new("x.db"), &counters, || {
            calls += 1;
            if calls < 3 {
                Err(busy())
            } else {
                Ok(7)
            }
        });
        assert_eq!(out.unwrap(), 7);
        assert_eq!(calls, 3);
        assert_eq!(counters.busy_retries.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn permanent_error_is_not_retried() {
        let counters = StorageCounters::default();
        let mut calls = 0;
        let out: Result<(), RetryError> =
            RetryPolicy::default().run(Path::new("x.db"), &counters, || {
                calls += 1;
                Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                    None,
                ))
            });
        assert!(matches!(out, Err(RetryError::Permanent(_))));
        assert_eq!(calls, 1);
        assert_eq!(counters.busy_retries.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn gives_up_after_budget() {
        let counters = StorageCounters::default();
        let policy = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_micros(1),
            max_delay: Duration::from_micros(1),
        };
        let out: Result<(), RetryError> = policy.run(Path::new("x.db"), &counters, || Err(busy()));
        assert!(matches!(
            out,
            Err(RetryError::Exhausted { attempts: 3, .. })
        ));
        assert_eq!(counters.busy_failures.load(Ordering::Relaxed), 1);
    }
}
