//! The daily summary: every real cleanup run of a day appended to
//! `<root>/cleanup/daily-summaries/<YYYY-MM-DD>.json` (UTC date), written atomically:
//!
//! ```json
//! { "date": "2025-12-01", "runs": [ { "run_id": 7, "archived_files": 120, ... } ] }
//! ```
//!
//! A file that is not valid JSON is renamed aside (`<date>.json.corrupt-<ms>`), never
//! overwritten, and a fresh one started.

use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

use crate::error::RetentionError;
use crate::faults::{self, Faults, Step};
use crate::fsutil;

/// The summaries' folder, relative to the evidence root.
pub const SUMMARIES_DIR: &str = "cleanup/daily-summaries";

/// Appends `run` to the day's summary; returns the file and a warning if an unreadable
/// file had to be set aside.
pub fn append(
    root: &Path,
    at: DateTime<Utc>,
    run: serde_json::Value,
    faults: Option<&dyn Faults>,
) -> Result<(PathBuf, Option<String>), RetentionError> {
    let dir_rel = Path::new(SUMMARIES_DIR);
    fsutil::ensure_real_dir(root, dir_rel).map_err(RetentionError::io(root.join(dir_rel)))?;
    let date = at.format("%Y-%m-%d").to_string();
    let path = root.join(dir_rel).join(format!("{date}.json"));
    // Two runs appending at once would each rewrite the file from what they read: the
    // folder's own lock file serialises them.
    let _lock = lock_summaries(&root.join(dir_rel))?;
    let mut warning = None;
    let mut runs = Vec::new();
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(RetentionError::Io {
                path,
                source: std::io::Error::other("is a symbolic link; not followed"),
            })
        }
        Ok(_) => {
            let text = std::fs::read(&path).map_err(RetentionError::io(&path))?;
            match serde_json::from_slice::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Object(mut obj)) => {
                    if let Some(serde_json::Value::Array(existing)) = obj.remove("runs") {
                        runs = existing;
                    }
                }
                _ => {
                    let aside =
                        path.with_extension(format!("json.corrupt-{}", at.timestamp_millis()));
                    std::fs::rename(&path, &aside).map_err(RetentionError::io(&path))?;
                    warning = Some(format!(
                        "{} was not a valid summary; moved to {} and started afresh",
                        path.display(),
                        aside.display()
                    ));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(RetentionError::io(&path)(e)),
    }
    runs.push(run);
    let doc = serde_json::json!({ "date": date, "runs": runs });
    let bytes = serde_json::to_vec_pretty(&doc)
        .map_err(|e| RetentionError::io(&path)(std::io::Error::other(e)))?;
    faults::check(faults, Step::WriteSummary, &path).map_err(RetentionError::io(&path))?;
    fsutil::write_atomic(&path, &bytes).map_err(RetentionError::io(&path))?;
    Ok((path, warning))
}

/// Takes `<summaries>/.lock` (flock, waiting: appends are short).
fn lock_summaries(dir: &Path) -> Result<std::fs::File, RetentionError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(RetentionError::io(&path))?;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(RetentionError::io(&path)(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn runs_of_a_day_accumulate_and_a_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let at = Utc.with_ymd_and_hms(2025, 12, 1, 3, 0, 0).unwrap();
        let (path, w) = append(dir.path(), at, serde_json::json!({"run_id": 1}), None).unwrap();
        assert!(w.is_none());
        append(dir.path(), at, serde_json::json!({"run_id": 2}), None).unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["date"], "2025-12-01");
        assert_eq!(doc["runs"].as_array().unwrap().len(), 2);
        assert!(path.ends_with("cleanup/daily-summaries/2025-12-01.json"));
        std::fs::write(&path, b"{not json").unwrap();
        let (_, w) = append(dir.path(), at, serde_json::json!({"run_id": 3}), None).unwrap();
        assert!(w.unwrap().contains("corrupt"));
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["runs"].as_array().unwrap().len(), 1);
        let aside = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("corrupt")
            })
            .count();
        assert_eq!(aside, 1);
    }
}
