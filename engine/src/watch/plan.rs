//! What to watch for one config path: which folders, and which names in them matter.
//!
//! The config path may be a chain of symlinks (Kubernetes mounts a ConfigMap as
//! `speckit.toml -> ..data/speckit.toml` with `..data -> ..2024_01_01_00_00_00.123`, and
//! swaps `..data` on update; dotfile managers link the file to another folder). The plan
//! is re-resolved after every reload, so a swapped link moves the watches with it.

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Symlink hops followed before giving up (the kernel's own limit is 40).
const MAX_SYMLINK_HOPS: usize = 40;

/// Why a folder could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("config file {} has no parent folder to watch", config.display())]
    NoFolder { config: PathBuf },
    #[error("cannot watch config folder {}: {source}", folder.display())]
    FolderUnavailable {
        folder: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the file watcher for {}: {source}", folder.display())]
    Notify {
        folder: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("the file watcher failed: {message}")]
    Broken { message: String },
}

/// A watched folder and its identity, so a folder deleted and made again under the same
/// name (whose old watch is gone) is noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedFolder {
    pub path: PathBuf,
    /// (device, inode) of the folder when the plan was made.
    pub id: (u64, u64),
}

/// The folders to watch for a config path and the names whose events matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchPlan {
    pub folders: Vec<WatchedFolder>,
    /// File names of the config path, of every symlink met while resolving it, and of the
    /// file it finally resolves to.
    pub names: BTreeSet<OsString>,
}

impl WatchPlan {
    /// Resolves `config` (absolute). Fails only when the config file's own folder cannot
    /// be watched; a dangling link or a missing file still gets a plan (its folder is
    /// watched, so the file's return is seen).
    pub fn resolve(config: &Path) -> Result<Self, WatchError> {
        let folder = config.parent().ok_or_else(|| WatchError::NoFolder {
            config: config.to_path_buf(),
        })?;
        let mut folders = vec![watched_folder(folder)?];

        let (links, target) = symlink_chain(config);
        let mut names = BTreeSet::new();
        for path in std::iter::once(config)
            .chain(links.iter().map(PathBuf::as_path))
            .chain(std::iter::once(target.as_path()))
        {
            if let Some(name) = path.file_name() {
                names.insert(name.to_os_string());
            }
        }
        // The folder the file really lives in, when a link leads elsewhere: edits made
        // there in place produce no event in the config's own folder.
        if let Some(target_folder) = target.parent().and_then(|p| std::fs::canonicalize(p).ok()) {
            if let Ok(found) = watched_folder(&target_folder) {
                if !folders.iter().any(|f| f.id == found.id) {
                    folders.push(found);
                }
            }
        }
        Ok(Self { folders, names })
    }

    /// Whether a file-system event can have changed what the config path holds.
    ///
    /// Reads are not: the engine's own reload opens and reads the file, and reacting to
    /// that would reload forever. Everything else naming a relevant file, a watched folder
    /// itself, or nothing at all (a rescan after lost events) is.
    pub fn is_relevant(&self, event: &Event) -> bool {
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return false,
            _ => {}
        }
        if event.need_rescan() || event.paths.is_empty() {
            return true;
        }
        event.paths.iter().any(|path| {
            path.file_name()
                .is_some_and(|name| self.names.contains(name))
                || self.folders.iter().any(|f| f.path == *path)
        })
    }
}

fn watched_folder(path: &Path) -> Result<WatchedFolder, WatchError> {
    let unavailable = |source| WatchError::FolderUnavailable {
        folder: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(unavailable)?;
    if !meta.is_dir() {
        return Err(unavailable(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "not a folder",
        )));
    }
    Ok(WatchedFolder {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    })
}

/// Follows `path` through symlinks: every link met (at any component), and the path it
/// finally names. Stops quietly at a missing component, an unreadable link or a loop.
pub fn symlink_chain(path: &Path) -> (Vec<PathBuf>, PathBuf) {
    let mut links = Vec::new();
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINK_HOPS {
        let Some(link) = first_symlink(&current) else {
            break;
        };
        let Ok(target) = std::fs::read_link(&link) else {
            break;
        };
        let rest = current
            .strip_prefix(&link)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let base = link.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut next = base.join(target);
        if !rest.as_os_str().is_empty() {
            next.push(rest);
        }
        links.push(link);
        current = next;
    }
    (links, current)
}

/// The shortest prefix of `path` that is a symlink, if any.
fn first_symlink(path: &Path) -> Option<PathBuf> {
    let mut prefix = PathBuf::new();
    for component in path.components() {
        prefix.push(component);
        if matches!(component, Component::RootDir | Component::Prefix(_)) {
            continue;
        }
        match std::fs::symlink_metadata(&prefix) {
            Ok(meta) if meta.file_type().is_symlink() => return Some(prefix),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, ModifyKind, RenameMode};
    use std::os::unix::fs::symlink;

    fn event(kind: EventKind, path: &Path) -> Event {
        Event::new(kind).add_path(path.to_path_buf())
    }

    #[test]
    fn plain_file_watches_its_folder_for_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("speckit.toml");
        std::fs::write(&config, "").unwrap();
        let plan = WatchPlan::resolve(&config).unwrap();
        assert_eq!(plan.folders.len(), 1);
        assert_eq!(plan.folders[0].path, dir.path());
        assert_eq!(plan.names, BTreeSet::from([OsString::from("speckit.toml")]));
    }

    #[test]
    fn reads_and_unrelated_files_are_not_relevant() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("speckit.toml");
        let plan = WatchPlan::resolve(&config).unwrap();
        let open = event(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            &config,
        );
        let close_read = event(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            &config,
        );
        let close_write = event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            &config,
        );
        let other_file = event(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            &dir.path().join("consensus.db-wal"),
        );
        let renamed_in = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path(dir.path().join(".speckit.toml.swp"))
            .add_path(config.clone());
        let folder_gone = event(
            EventKind::Remove(notify::event::RemoveKind::Folder),
            dir.path(),
        );
        let rescan = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(!plan.is_relevant(&open));
        assert!(!plan.is_relevant(&close_read));
        assert!(!plan.is_relevant(&other_file));
        assert!(plan.is_relevant(&close_write));
        assert!(plan.is_relevant(&renamed_in));
        assert!(plan.is_relevant(&folder_gone));
        assert!(plan.is_relevant(&rescan));
    }

    #[test]
    fn kubernetes_style_links_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let version = dir.path().join("..2024_01_01_00_00_00.1");
        std::fs::create_dir(&version).unwrap();
        std::fs::write(version.join("speckit.toml"), "").unwrap();
        symlink("..2024_01_01_00_00_00.1", dir.path().join("..data")).unwrap();
        let config = dir.path().join("speckit.toml");
        symlink("..data/speckit.toml", &config).unwrap();

        let (links, target) = symlink_chain(&config);
        assert_eq!(links, vec![config.clone(), dir.path().join("..data")]);
        assert_eq!(
            std::fs::canonicalize(&target).unwrap(),
            std::fs::canonicalize(version.join("speckit.toml")).unwrap()
        );
        let plan = WatchPlan::resolve(&config).unwrap();
        assert!(plan.names.contains(&OsString::from("..data")));
        assert_eq!(plan.folders.len(), 2, "{plan:?}");
        // The swap renames `..data_tmp` over `..data`: relevant.
        let swap = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path(dir.path().join("..data_tmp"))
            .add_path(dir.path().join("..data"));
        assert!(plan.is_relevant(&swap));
        let unrelated = event(EventKind::Create(CreateKind::File), &dir.path().join("x"));
        assert!(!plan.is_relevant(&unrelated));
    }

    #[test]
    fn link_loops_and_dangling_links_do_not_hang_or_fail() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        symlink(&b, &a).unwrap();
        symlink(&a, &b).unwrap();
        let (links, _) = symlink_chain(&a);
        assert_eq!(links.len(), MAX_SYMLINK_HOPS);
        assert!(WatchPlan::resolve(&a).is_ok());

        let dangling = dir.path().join("speckit.toml");
        symlink("nowhere/speckit.toml", &dangling).unwrap();
        let plan = WatchPlan::resolve(&dangling).unwrap();
        assert_eq!(plan.folders.len(), 1);
    }

    #[test]
    fn missing_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("absent").join("speckit.toml");
        let err = WatchPlan::resolve(&config).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }
}
