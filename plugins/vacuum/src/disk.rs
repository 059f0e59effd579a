//! Free disk space, for the check before a full `VACUUM` (which needs up to twice the
//! database's size while it runs).

use std::path::Path;
use std::sync::Arc;

/// Returns the bytes an unprivileged process may still write in the file system holding
/// the given folder. Replaceable so tests can simulate a full disk.
pub type FreeDiskProbe = Arc<dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync>;

/// The real probe: `statvfs(2)`, available blocks times the fragment size.
pub fn statvfs_probe() -> FreeDiskProbe {
    Arc::new(free_disk_bytes)
}

/// Bytes available to unprivileged users in the file system holding `dir` (`f_bavail`,
/// not `f_bfree`: the blocks reserved for root are not ours to plan with).
#[cfg(unix)]
pub fn free_disk_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path contains a NUL byte",
        )
    })?;
    // SAFETY: `c_path` is a valid NUL-terminated string and `stats` is a plain C struct
    // that statvfs fills in; it is read only after statvfs reported success.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fragment = if stats.f_frsize > 0 {
        stats.f_frsize as u64
    } else {
        stats.f_bsize as u64
    };
    Ok((stats.f_bavail as u64).saturating_mul(fragment))
}

#[cfg(not(unix))]
pub fn free_disk_bytes(_dir: &Path) -> std::io::Result<u64> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "free disk space is only measured on Unix",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_agrees_with_df() {
        let dir = tempfile::tempdir().unwrap();
        let ours = free_disk_bytes(dir.path()).unwrap();
        let Ok(output) = std::process::Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(dir.path())
            .output()
        else {
            eprintln!("skipped: no df(1) to compare with");
            return;
        };
        let text = String::from_utf8_lossy(&output.stdout);
        let Some(df) = text
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse::<u64>().ok())
        else {
            eprintln!("skipped: df printed no figure: {text}");
            return;
        };
        // Other processes write meanwhile: allow 64 MiB of drift between the two reads.
        assert!(
            ours.abs_diff(df) <= 64 << 20,
            "statvfs {ours} bytes, df {df} bytes"
        );
    }

    #[test]
    fn missing_folder_is_an_error() {
        let err = free_disk_bytes(Path::new("/nonexistent/speckit/folder")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
