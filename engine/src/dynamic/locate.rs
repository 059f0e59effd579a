//! Finding a plugin's library file (a file, or a folder holding exactly one) and refusing
//! it before it is opened: when someone other than this user or root could have written
//! it, or when it is not an object file at all.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::PluginLoadError;

/// What a file was when it was checked, to notice it being replaced later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    pub modified_ns: i128,
}

/// The library file `path` names: the file itself, or the single shared library in a
/// folder. Returned canonical (symbolic links resolved).
pub fn locate(path: &Path) -> Result<PathBuf, PluginLoadError> {
    let read = |source| PluginLoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let canonical = fs::canonicalize(path).map_err(read)?;
    let meta = fs::metadata(&canonical).map_err(read)?;
    if !meta.is_dir() {
        return Ok(canonical);
    }
    let suffix = std::env::consts::DLL_SUFFIX;
    let mut candidates: Vec<String> = fs::read_dir(&canonical)
        .map_err(read)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix) && !n.starts_with('.'))
        .collect();
    candidates.sort();
    match candidates.len() {
        0 => Err(PluginLoadError::EmptyFolder {
            dir: canonical,
            suffix,
        }),
        1 => {
            let file = canonical.join(&candidates[0]);
            fs::canonicalize(&file).map_err(|source| PluginLoadError::Read { path: file, source })
        }
        _ => Err(PluginLoadError::AmbiguousFolder {
            dir: canonical,
            candidates,
        }),
    }
}

/// Refuses a library that someone other than this user or root could have written: the
/// file and its folder must be writable by their owner only and owned by this user or
/// root; every folder above must not be writable by group or others unless sticky (like
/// `/tmp`, where others cannot rename or remove what is not theirs).
#[cfg(unix)]
pub fn check_permissions(file: &Path) -> Result<FileIdentity, PluginLoadError> {
    use std::os::unix::fs::MetadataExt;

    let read = |path: &Path, source| PluginLoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(file).map_err(|e| read(file, e))?;
    if !meta.is_file() {
        return Err(PluginLoadError::NotAFile {
            path: file.to_path_buf(),
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let user = unsafe { libc::geteuid() };
    let strict = |what: &'static str, path: &Path, meta: &fs::Metadata| {
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(PluginLoadError::Writable {
                what,
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.uid() != user && meta.uid() != 0 {
            return Err(PluginLoadError::ForeignOwner {
                what,
                path: path.to_path_buf(),
                owner: meta.uid(),
                user,
            });
        }
        Ok(())
    };
    strict("file", file, &meta)?;
    let mut ancestors = file.ancestors().skip(1);
    if let Some(dir) = ancestors.next() {
        let dir_meta = fs::metadata(dir).map_err(|e| read(dir, e))?;
        strict("folder", dir, &dir_meta)?;
    }
    for dir in ancestors {
        let dir_meta = fs::metadata(dir).map_err(|e| read(dir, e))?;
        let mode = dir_meta.mode() & 0o7777;
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky {
            return Err(PluginLoadError::Writable {
                what: "folder",
                path: dir.to_path_buf(),
                mode,
            });
        }
    }
    Ok(FileIdentity::of(&meta))
}

impl FileIdentity {
    /// The identity in `meta` (from `stat` or `fstat`).
    #[cfg(unix)]
    pub fn of(meta: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// Without Unix permissions there is nothing to check beyond the file being a file.
#[cfg(not(unix))]
pub fn check_permissions(file: &Path) -> Result<FileIdentity, PluginLoadError> {
    let meta = fs::metadata(file).map_err(|source| PluginLoadError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(PluginLoadError::NotAFile {
            path: file.to_path_buf(),
        });
    }
    Ok(FileIdentity {
        device: 0,
        inode: 0,
        size: meta.len(),
        modified_ns: 0,
    })
}

/// Refuses files that are not object files by their first bytes, so a script or a text
/// file gets a clear message instead of the loader's.
pub fn check_object_format(file: &Path) -> Result<(), PluginLoadError> {
    let mut head = [0u8; 4];
    let mut f = fs::File::open(file).map_err(|source| PluginLoadError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let mut filled = 0;
    while filled < head.len() {
        match f.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(PluginLoadError::Read {
                    path: file.to_path_buf(),
                    source,
                })
            }
        }
    }
    if filled < head.len() {
        return Err(PluginLoadError::NotASharedLibrary {
            path: file.to_path_buf(),
            detail: format!("it is only {filled} bytes long"),
        });
    }
    const ELF: [u8; 4] = [0x7f, b'E', b'L', b'F'];
    const MACH_O: [[u8; 4]; 5] = [
        [0xfe, 0xed, 0xfa, 0xce],
        [0xfe, 0xed, 0xfa, 0xcf],
        [0xce, 0xfa, 0xed, 0xfe],
        [0xcf, 0xfa, 0xed, 0xfe],
        [0xca, 0xfe, 0xba, 0xbe],
    ];
    if head == ELF || MACH_O.contains(&head) || head[..2] == *b"MZ" {
        return Ok(());
    }
    let printable: String = head
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    Err(PluginLoadError::NotASharedLibrary {
        path: file.to_path_buf(),
        detail: format!(
            "it starts with bytes {:02x} {:02x} {:02x} {:02x} ({printable:?}), not an ELF, Mach-O or PE header",
            head[0], head[1], head[2], head[3]
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_is_not_a_shared_library() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("libfake.so");
        fs::write(&file, "#!/bin/sh\necho hi\n").unwrap();
        let err = check_object_format(&file).unwrap_err().to_string();
        assert!(err.contains("libfake.so is not a shared library"), "{err}");
        assert!(err.contains("23 21 2f 62 (\"#!/b\")"), "{err}");
    }

    #[test]
    fn a_tiny_file_is_not_a_shared_library() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("libtiny.so");
        fs::write(&file, "ab").unwrap();
        let err = check_object_format(&file).unwrap_err().to_string();
        assert!(err.contains("only 2 bytes long"), "{err}");
    }

    #[test]
    fn a_folder_must_hold_exactly_one_library() {
        let dir = tempfile::tempdir().unwrap();
        let suffix = std::env::consts::DLL_SUFFIX;
        let err = locate(dir.path()).unwrap_err().to_string();
        assert!(err.contains("holds no shared library"), "{err}");
        fs::write(dir.path().join(format!("liba{suffix}")), "x").unwrap();
        fs::write(dir.path().join("README.md"), "x").unwrap();
        assert_eq!(
            locate(dir.path()).unwrap(),
            fs::canonicalize(dir.path().join(format!("liba{suffix}"))).unwrap()
        );
        fs::write(dir.path().join(format!("libb{suffix}")), "x").unwrap();
        let err = locate(dir.path()).unwrap_err().to_string();
        assert!(err.contains("holds 2 shared libraries"), "{err}");
    }

    #[test]
    fn a_missing_path_names_the_path() {
        let err = locate(Path::new("/nonexistent/libnope.so"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/libnope.so"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_writable_files_and_folders_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plugin_dir = dir.path().join("plugins");
        fs::create_dir(&plugin_dir).unwrap();
        fs::set_permissions(&plugin_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let file = plugin_dir.join("libx.so");
        fs::write(&file, "x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        check_permissions(&file).unwrap();

        fs::set_permissions(&file, fs::Permissions::from_mode(0o664)).unwrap();
        let err = check_permissions(&file).unwrap_err().to_string();
        assert!(err.contains("plugin file"), "{err}");
        assert!(err.contains("mode 0664"), "{err}");

        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&plugin_dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_permissions(&file).unwrap_err().to_string();
        assert!(
            err.contains(&format!("plugin folder {}", plugin_dir.display())),
            "{err}"
        );

        // A world-writable folder further up is refused unless it is sticky like /tmp.
        fs::set_permissions(&plugin_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let inner = plugin_dir.join("inner");
        fs::create_dir(&inner).unwrap();
        let file = inner.join("liby.so");
        fs::write(&file, "x").unwrap();
        fs::set_permissions(&plugin_dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_permissions(&file).is_err());
        fs::set_permissions(&plugin_dir, fs::Permissions::from_mode(0o1777)).unwrap();
        check_permissions(&file).unwrap();
    }

    /// Root can give a file away; others cannot, so this runs only as root.
    #[cfg(unix)]
    #[test]
    fn a_file_owned_by_another_user_is_refused() {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: changing a file's owner needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("libz.so");
        fs::write(&file, "x").unwrap();
        std::os::unix::fs::chown(&file, Some(4242), None).unwrap();
        let err = check_permissions(&file).unwrap_err().to_string();
        assert!(err.contains("owned by uid 4242"), "{err}");
    }
}
