//! The manifest sidecar: a copy of an archive's `MANIFEST.json` beside it, so the plan can
//! tell which files an archive holds without reading the whole archive, and without one
//! database row per member in the host's database.
//!
//! ```text
//! <root>/cleanup/archives/<SPEC>/<name>.tar.zst                  the archive
//! <root>/cleanup/archives/<SPEC>/<name>.tar.zst.manifest.json    its sidecar
//! <root>/cleanup/archives/<SPEC>/.manifest.tmp-<pid>-<n>          a sidecar being written
//! ```
//!
//! The sidecar is derived data: the archive (with the manifest inside it) is the truth.
//! It names the archive it describes and that archive's sha256 and size, so a sidecar
//! left over from another archive of that name is told apart from a current one; a reader
//! that finds it missing, unreadable or stale reads the manifest from the verified archive
//! instead ([`manifest_of`]). A sidecar is written (short temporary name, fsync, rename,
//! fsync of the folder) after the archive is verified at its final name and before its
//! database record, and deleted before the archive when the archive is purged, so a crash
//! never leaves a sidecar without its archive from our own steps.

use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::archive::{self, ArchiveError, Manifest};
use crate::faults::{self, Faults, Step};
use crate::fsutil;

/// The sidecar format this code writes and reads.
pub const FORMAT: &str = "speckit-hygiene-archive-sidecar/1";
/// Appended to the archive's file name.
pub const SUFFIX: &str = ".manifest.json";
/// Start of a sidecar's temporary name (`.manifest.tmp-<pid>-<n>`): short, whatever the
/// archive's name.
pub const TEMP_PREFIX: &str = ".manifest.tmp-";

/// Largest sidecar read (a manifest of a few million members); anything larger is
/// ignored and the manifest is read from the archive.
const MAX_BYTES: u64 = 1 << 30;

/// What a sidecar file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    pub format: String,
    /// The archive's file name (not its path: the folder may be moved with its files).
    pub archive: String,
    /// sha256 and size of the archive file this manifest is the manifest of.
    pub archive_sha256: String,
    pub archive_bytes: u64,
    pub manifest: Manifest,
}

/// The sidecar's path for an archive path (absolute or relative).
pub fn path_for(archive_path: &Path) -> PathBuf {
    let mut name = archive_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(SUFFIX);
    archive_path.with_file_name(name)
}

/// Whether a file name in an archive folder is a sidecar (never an archive, never a
/// leftover to discard).
pub fn is_sidecar_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(SUFFIX)
}

/// Whether a file name in an archive folder is a sidecar's temporary (an interrupted
/// write: never the only copy of anything).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// Writes the sidecar of the archive at `archive_path` (verified, with this sha256 and
/// size): a temporary file in the same folder, fsync, rename over any older sidecar of
/// that name, fsync of the folder.
pub fn write(
    archive_path: &Path,
    sha256: &str,
    bytes: u64,
    manifest: &Manifest,
    faults: Option<&dyn Faults>,
) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let final_path = path_for(archive_path);
    let dir = archive_path.parent().unwrap_or(Path::new("."));
    let name = archive_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("the archive's name is not UTF-8"))?;
    let sidecar = Sidecar {
        format: FORMAT.to_string(),
        archive: name.to_string(),
        archive_sha256: sha256.to_string(),
        archive_bytes: bytes,
        manifest: manifest.clone(),
    };
    let body = serde_json::to_vec(&sidecar).map_err(io::Error::other)?;
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    faults::check(faults, Step::WriteSidecar, &temp)?;
    let result = (|| -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)?;
        file.write_all(&body)?;
        file.sync_all()?;
        fs::rename(&temp, &final_path)?;
        faults::check(faults, Step::SyncDir, dir)?;
        fsutil::fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map(|()| final_path)
}

/// Why a sidecar was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    Missing,
    /// Unreadable, not ours, or describing another archive.
    Invalid(String),
}

/// Reads the sidecar of the archive at `archive_path` and checks it describes that
/// archive with this sha256 and size (the database record's).
pub fn read(archive_path: &Path, sha256: &str, bytes: u64) -> Result<Manifest, Unusable> {
    let path = path_for(archive_path);
    let invalid = |why: String| Unusable::Invalid(format!("{}: {why}", path.display()));
    let file = match fsutil::open_nofollow(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(invalid(e.to_string())),
    };
    let meta = file.metadata().map_err(|e| invalid(e.to_string()))?;
    if !meta.is_file() || meta.len() > MAX_BYTES {
        return Err(invalid("not a regular file of a sane size".into()));
    }
    let mut body = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_BYTES)
        .read_to_end(&mut body)
        .map_err(|e| invalid(e.to_string()))?;
    let sidecar: Sidecar =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("not a sidecar: {e}")))?;
    let name = archive_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if sidecar.format != FORMAT {
        return Err(invalid(format!("format {:?}", sidecar.format)));
    }
    if sidecar.archive != name {
        return Err(invalid(format!("describes {}", sidecar.archive)));
    }
    if sidecar.archive_sha256 != sha256 || sidecar.archive_bytes != bytes {
        return Err(invalid(format!(
            "describes an archive with sha256 {} ({} bytes), not this one ({sha256}, {bytes} bytes): stale",
            sidecar.archive_sha256, sidecar.archive_bytes
        )));
    }
    if sidecar.manifest.format != archive::FORMAT {
        return Err(invalid(format!(
            "manifest format {:?}",
            sidecar.manifest.format
        )));
    }
    Ok(sidecar.manifest)
}

/// Where an archive's manifest came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Sidecar,
    /// The sidecar was missing or unusable: read from the verified archive.
    Archive,
}

/// The manifest of the recorded archive at `archive_path` (sha256 and size as recorded):
/// from its sidecar, or else from the archive itself, verified in full and checked against
/// the record.
pub fn manifest_of(
    archive_path: &Path,
    sha256: &str,
    bytes: u64,
) -> Result<(Manifest, Source), ArchiveError> {
    match read(archive_path, sha256, bytes) {
        Ok(m) => return Ok((m, Source::Sidecar)),
        Err(Unusable::Missing) => {}
        Err(Unusable::Invalid(why)) => {
            tracing::warn!("{why}; reading the manifest from the archive instead");
        }
    }
    let verified = archive::verify(archive_path)?;
    if verified.sha256 != sha256 {
        return Err(ArchiveError::Corrupt {
            path: archive_path.to_path_buf(),
            detail: format!(
                "its sha256 is {} but {sha256} was recorded when it was written",
                verified.sha256
            ),
        });
    }
    Ok((verified.manifest, Source::Archive))
}

/// Deletes the sidecar of an archive (missing is fine). Returns whether one was deleted.
pub fn remove(archive_path: &Path) -> io::Result<bool> {
    let path = path_for(archive_path);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => {
            fs::remove_file(&path)?;
            Ok(true)
        }
        Ok(_) => Err(io::Error::other(format!(
            "{} is not a regular file; left alone",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: archive::FORMAT.to_string(),
            spec: "SPEC-KIT-1".into(),
            created_at_ms: 1,
            created_at: "x".into(),
            files: vec![archive::Member {
                path: "commands/SPEC-KIT-1/a.json".into(),
                size: 3,
                mtime_ns: 7,
                sha256: "ab".into(),
            }],
            db: Vec::new(),
        }
    }

    #[test]
    fn names_are_told_apart() {
        let a = "SPEC-KIT-1_20260301_0123456789ab.tar.zst";
        let side = path_for(Path::new(a));
        let side = side.to_str().unwrap();
        assert_eq!(side, format!("{a}.manifest.json"));
        assert!(is_sidecar_name(side));
        assert!(!archive::is_archive_name(side));
        assert!(!archive::is_temp_name(side));
        assert!(!is_temp_name(side));
        let temp = format!("{TEMP_PREFIX}12-0");
        assert!(is_temp_name(&temp));
        assert!(!is_sidecar_name(&temp) && !archive::is_archive_name(&temp));
        assert!(!is_sidecar_name(a) && !is_temp_name(a));
    }

    #[test]
    fn a_stale_or_foreign_sidecar_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("S_20260301_0123456789ab.tar.zst");
        assert_eq!(read(&archive, "aa", 10), Err(Unusable::Missing));
        let written = write(&archive, "aa", 10, &manifest(), None).unwrap();
        assert_eq!(written, path_for(&archive));
        assert_eq!(read(&archive, "aa", 10).unwrap(), manifest());
        assert!(
            matches!(read(&archive, "bb", 10), Err(Unusable::Invalid(w)) if w.contains("stale"))
        );
        assert!(matches!(
            read(&archive, "aa", 11),
            Err(Unusable::Invalid(_))
        ));
        // The same sidecar beside an archive of another name.
        let other = dir.path().join("S_20260301_ffffffffffff.tar.zst");
        fs::copy(&written, path_for(&other)).unwrap();
        assert!(
            matches!(read(&other, "aa", 10), Err(Unusable::Invalid(w)) if w.contains("describes"))
        );
        fs::write(&written, b"{").unwrap();
        assert!(matches!(
            read(&archive, "aa", 10),
            Err(Unusable::Invalid(_))
        ));
        assert!(remove(&archive).unwrap());
        assert!(!remove(&archive).unwrap());
        // Nothing but the foreign sidecar is left: no temporaries.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
