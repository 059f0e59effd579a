//! File-system steps the retention plugin relies on for safety: never following a symbolic
//! link below the evidence root, fsync of files and folders, atomic replacement.
//!
//! Evidence, archives and restores go through [`crate::folder`]'s held folders; the path
//! checks here (component by component with `lstat`) remain only for our own bookkeeping
//! folders, `.locks/` and `cleanup/daily-summaries/`, where a swap race can misplace a lock
//! or summary file but never touch evidence.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::folder::is_plain_relative;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn not_plain(relative: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is not a plain relative path inside the evidence root",
            relative.display()
        ),
    )
}

/// Checks that every folder of `relative_dir` below `root` exists and is a real folder,
/// not a symbolic link.
pub fn check_real_dir(root: &Path, relative_dir: &Path) -> io::Result<()> {
    if relative_dir.as_os_str().is_empty() {
        return Ok(());
    }
    if !is_plain_relative(relative_dir) {
        return Err(not_plain(relative_dir));
    }
    let mut current = root.to_path_buf();
    for component in relative_dir.components() {
        current.push(component);
        let meta = fs::symlink_metadata(&current)?;
        if meta.file_type().is_symlink() {
            return Err(symlink_error(&current));
        }
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a folder", current.display()),
            ));
        }
    }
    Ok(())
}

/// Like [`check_real_dir`], creating missing folders.
pub fn ensure_real_dir(root: &Path, relative_dir: &Path) -> io::Result<()> {
    if relative_dir.as_os_str().is_empty() {
        return Ok(());
    }
    if !is_plain_relative(relative_dir) {
        return Err(not_plain(relative_dir));
    }
    let mut current = root.to_path_buf();
    for component in relative_dir.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(symlink_error(&current)),
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a folder", current.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&current) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Created concurrently: check what it is.
                    let meta = fs::symlink_metadata(&current)?;
                    if !meta.is_dir() {
                        return Err(symlink_error(&current));
                    }
                }
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn symlink_error(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a symbolic link; links below the evidence root are never followed",
            path.display()
        ),
    )
}

/// Opens a regular file for reading without following a symlink at its last component.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// fsyncs a folder, making the creation, rename or removal of its entries durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A modification time in nanoseconds since the epoch (negative before 1970).
pub fn system_time_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// The inverse of [`system_time_ns`].
pub fn ns_to_system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// A file's mtime in nanoseconds, straight from `stat`.
pub fn meta_mtime_ns(meta: &fs::Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync
/// of the folder. A crash leaves the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        // A bare file name is in the working folder.
        Some(dir) if dir.as_os_str().is_empty() => Path::new("."),
        Some(dir) => dir,
        None => {
            return Err(io::Error::other(format!(
                "{} has no folder",
                path.display()
            )))
        }
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".speckit-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    // tempfile creates 0600; a summary is as readable as the evidence beside it.
    temp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinked_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
        check_real_dir(root, Path::new("a/b")).unwrap();
        let err = check_real_dir(root, Path::new("link/b")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = ensure_real_dir(root, Path::new("link/c")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!root.join("a/c").exists());
        ensure_real_dir(root, Path::new("x/y")).unwrap();
        assert!(root.join("x/y").is_dir());
        assert!(check_real_dir(root, Path::new("../etc")).is_err());
    }

    #[test]
    fn nofollow_refuses_a_symlinked_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("real"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        assert!(open_nofollow(&dir.path().join("real")).is_ok());
        assert!(open_nofollow(&dir.path().join("link")).is_err());
    }

    #[test]
    fn time_round_trips() {
        for ns in [0i64, 1, 1_700_000_000_123_456_789, -5_000_000_000] {
            assert_eq!(system_time_ns(ns_to_system_time(ns)), ns);
        }
    }
}
