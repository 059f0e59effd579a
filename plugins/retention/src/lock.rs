//! The per-SPEC lock `<root>/.locks/<SPEC>.lock`, taken with `flock(LOCK_EX)` exactly as
//! upstream's evidence writer takes it, so cleanup and a writer never work on one SPEC at
//! the same time. Cleanup never waits: a SPEC whose lock is held is skipped this run.
//!
//! The lock file is created if missing and never deleted (deleting a lock file another
//! process holds open would let a third process lock a different inode).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::fsutil;

/// The lock's folder under the evidence root.
pub const LOCKS_DIR: &str = ".locks";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("SPEC {spec} is locked by another process ({}); skipped this run", path.display())]
    Busy { spec: String, path: PathBuf },
    #[error("cannot take the lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A held SPEC lock; released when dropped (closing the descriptor releases the flock).
#[derive(Debug)]
pub struct SpecLock {
    _file: File,
    pub path: PathBuf,
}

/// The lock file of `spec` under `root`.
pub fn lock_path(root: &Path, spec: &str) -> PathBuf {
    root.join(LOCKS_DIR).join(format!("{spec}.lock"))
}

/// Takes the SPEC's lock without waiting.
pub fn try_lock(root: &Path, spec: &str) -> Result<SpecLock, LockError> {
    let path = lock_path(root, spec);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    fsutil::ensure_real_dir(root, Path::new(LOCKS_DIR)).map_err(io)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(LockError::Busy {
                spec: spec.to_string(),
                path,
            });
        }
        return Err(io(err));
    }
    Ok(SpecLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let first = try_lock(dir.path(), "SPEC-KIT-1").unwrap();
        // flock locks belong to open file descriptions: a second open in this process
        // conflicts just as another process would.
        let err = try_lock(dir.path(), "SPEC-KIT-1").unwrap_err();
        assert!(matches!(err, LockError::Busy { .. }), "{err}");
        assert!(err.to_string().contains(".locks/SPEC-KIT-1.lock"));
        drop(first);
        try_lock(dir.path(), "SPEC-KIT-1").unwrap();
        assert!(dir.path().join(".locks/SPEC-KIT-1.lock").exists());
    }
}
