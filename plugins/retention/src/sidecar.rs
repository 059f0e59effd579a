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
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::archive::{self, ArchiveError, Manifest};
use crate::faults::{self, Faults, Step};
use crate::folder::{Folder, NodeKind};
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

/// Writes the sidecar of the archive `archive_name` in the held folder `dir` (verified,
/// with this sha256 and size): a short temporary name in the same folder, fsync, rename
/// over any older sidecar of that name, fsync of the folder.
pub fn write(
    dir: &Folder,
    archive_name: &OsStr,
    sha256: &str,
    bytes: u64,
    manifest: &Manifest,
    faults: Option<&dyn Faults>,
) -> io::Result<PathBuf> {
    let name = archive_name
        .to_str()
        .ok_or_else(|| io::Error::other("the archive's name is not UTF-8"))?;
    let final_name = format!("{name}{SUFFIX}");
    let final_path = dir.display(OsStr::new(&final_name));
    let sidecar = Sidecar {
        format: FORMAT.to_string(),
        archive: name.to_string(),
        archive_sha256: sha256.to_string(),
        archive_bytes: bytes,
        manifest: manifest.clone(),
    };
    let body = serde_json::to_vec(&sidecar).map_err(io::Error::other)?;
    faults::check(faults, Step::WriteSidecar, &final_path)?;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let temp = std::ffi::OsString::from(format!(
        "{TEMP_PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> io::Result<()> {
        let mut file = dir.create_new(&temp, 0o644)?;
        file.write_all(&body)?;
        file.sync_all()?;
        dir.rename(&temp, OsStr::new(&final_name))?;
        faults::check(faults, Step::SyncDir, dir.path())?;
        dir.sync()
    })();
    if result.is_err() {
        let _ = dir.remove_file(&temp);
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

/// Deletes the sidecar of the archive `archive_name` in the held folder `dir` (missing is
/// fine). Returns whether one was deleted.
pub fn remove(dir: &Folder, archive_name: &OsStr) -> io::Result<bool> {
    let mut name = archive_name.to_os_string();
    name.push(SUFFIX);
    match dir.stat(&name) {
        Ok(stat) if stat.kind == NodeKind::File => {
            dir.remove_file(&name)?;
            Ok(true)
        }
        Ok(_) => Err(io::Error::other(format!(
            "{} is not a regular file; left alone",
            dir.display(&name).display()
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
        let held = Folder::open(dir.path()).unwrap();
        let name = archive.file_name().unwrap();
        assert_eq!(read(&archive, "aa", 10), Err(Unusable::Missing));
        let written = write(&held, name, "aa", 10, &manifest(), None).unwrap();
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
        std::fs::copy(&written, path_for(&other)).unwrap();
        assert!(
            matches!(read(&other, "aa", 10), Err(Unusable::Invalid(w)) if w.contains("describes"))
        );
        std::fs::write(&written, b"{").unwrap();
        assert!(matches!(
            read(&archive, "aa", 10),
            Err(Unusable::Invalid(_))
        ));
        assert!(remove(&held, name).unwrap());
        assert!(!remove(&held, name).unwrap());
        // Nothing but the foreign sidecar is left: no temporaries.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
