//! Folders held by descriptor: every file below the evidence root is reached from an open
//! handle of its folder, and every folder from its parent's handle, one name at a time,
//! never following a symbolic link (`openat(O_NOFOLLOW | O_DIRECTORY)`, `statat`
//! without following, `unlinkat`, `linkat`, `renameat` relative to the handle).
//!
//! Why: a path is re-resolved by the kernel at every use, so a folder swapped for a
//! symbolic link between a check and a use sends the use elsewhere. A handle is not
//! re-resolved: once a SPEC folder is open, its files are read, checked and deleted in
//! *that* folder wherever it is moved, and a symlink put in its place is never entered.
//! Names are single components (no `/`, not `.` or `..`), so nothing reached from the root
//! handle can be outside the root. The configured root itself may be a symlink (the user's
//! choice): it is opened once, following it.
//!
//! Before a source is deleted, [`Folder::remove_if_same`] checks that the name still
//! refers to the very file that was read (device, inode, size, mtime); the check and the
//! `unlinkat` are in the same held folder, so the only race left is another writer
//! renaming a different file onto that name inside the real SPEC folder between the two
//! calls, which the per-SPEC lock keeps cooperating writers out of.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// What a name in a folder is, read without following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    /// A socket, FIFO or device.
    Special,
}

/// The identity and figures of a file, from one `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub kind: NodeKind,
    pub dev: u64,
    pub ino: u64,
    /// Apparent size in bytes (`du --apparent-size`).
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Allocated bytes (`st_blocks * 512`, what `du` counts and `df` sees freed).
    pub allocated_bytes: u64,
}

impl FileStat {
    pub fn of_stat(st: &rustix::fs::Stat) -> Self {
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => NodeKind::File,
            FileType::Directory => NodeKind::Dir,
            FileType::Symlink => NodeKind::Symlink,
            _ => NodeKind::Special,
        };
        FileStat {
            kind,
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size.max(0) as u64,
            mtime_ns: st
                .st_mtime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec as i64),
            allocated_bytes: (st.st_blocks as u64).saturating_mul(512),
        }
    }

    /// Whether `other` is the same file with the same content figures.
    pub fn same_file(&self, other: &FileStat) -> bool {
        self.dev == other.dev
            && self.ino == other.ino
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
    }
}

/// What [`Folder::remove_if_same`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// Nothing has that name any more.
    Gone,
    /// The name now refers to another file, or the file changed: left alone.
    Changed(String),
}

/// An open folder.
#[derive(Debug)]
pub struct Folder {
    fd: OwnedFd,
    /// Where it was when opened, for messages only: never used to reach a file.
    path: PathBuf,
}

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

fn not_followed(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a symbolic link or not a folder; links below the evidence root are never followed",
            path.display()
        ),
    )
}

/// Checks that `name` is one plain path component.
fn component(name: &OsStr) -> io::Result<&OsStr> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} is not a plain file name", name),
        ));
    }
    Ok(name)
}

/// Splits a plain relative path into its folder and its file name.
pub fn split(relative: &Path) -> io::Result<(&Path, &OsStr)> {
    if !is_plain_relative(relative) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a plain relative path inside the evidence root",
                relative.display()
            ),
        ));
    }
    let name = relative
        .file_name()
        .expect("a plain path has a last component");
    Ok((relative.parent().unwrap_or(Path::new("")), name))
}

/// Whether `relative` is a plain relative path (no `..`, no root, no `.` tricks).
pub fn is_plain_relative(relative: &Path) -> bool {
    !relative.as_os_str().is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

impl Folder {
    /// Opens a folder by path, following symlinks: only for the root a user configured
    /// (or a `--to` folder they named).
    pub fn open(path: &Path) -> io::Result<Folder> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        Ok(Folder {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Where the folder was when it was opened (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this folder, for messages.
    pub fn display(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Opens the sub-folder `name`; a symlink is refused, never followed.
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Folder> {
        let name = component(name)?;
        match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Folder {
                fd,
                path: self.display(name),
            }),
            Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::NOTDIR) => {
                Err(not_followed(&self.display(name)))
            }
            Err(e) => Err(errno(e)),
        }
    }

    /// Opens the folder at `relative` below this one, one component at a time.
    pub fn open_dirs(&self, relative: &Path) -> io::Result<Folder> {
        let mut current: Option<Folder> = None;
        for c in relative.components() {
            let Component::Normal(name) = c else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a plain relative path", relative.display()),
                ));
            };
            let next = current.as_ref().unwrap_or(self).open_dir(name)?;
            current = Some(next);
        }
        match current {
            Some(f) => Ok(f),
            None => self.try_clone(),
        }
    }

    /// Like [`Folder::open_dirs`], creating missing folders (mode 0755 before umask).
    pub fn create_dirs(&self, relative: &Path) -> io::Result<Folder> {
        let mut current: Option<Folder> = None;
        for c in relative.components() {
            let Component::Normal(name) = c else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a plain relative path", relative.display()),
                ));
            };
            let parent = current.as_ref().unwrap_or(self);
            let next = match parent.open_dir(name) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match rustix::fs::mkdirat(&parent.fd, component(name)?, Mode::from(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(errno(e)),
                    }
                    // Opened again without following: a symlink created meanwhile fails.
                    parent.open_dir(name)?
                }
                Err(e) => return Err(e),
            };
            current = Some(next);
        }
        match current {
            Some(f) => Ok(f),
            None => self.try_clone(),
        }
    }

    fn try_clone(&self) -> io::Result<Folder> {
        Ok(Folder {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// What `name` is, without following a symlink.
    pub fn stat(&self, name: &OsStr) -> io::Result<FileStat> {
        let st = rustix::fs::statat(&self.fd, component(name)?, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(errno)?;
        Ok(FileStat::of_stat(&st))
    }

    /// Opens the regular file `name` for reading; a symlink, FIFO or device is refused
    /// without blocking or following it. Returns the open file's own `fstat`.
    pub fn open_file(&self, name: &OsStr) -> io::Result<(File, FileStat)> {
        let fd = match rustix::fs::openat(
            &self.fd,
            component(name)?,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::LOOP) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is a symbolic link; not followed",
                        self.display(name).display()
                    ),
                ))
            }
            Err(e) => return Err(errno(e)),
        };
        let stat = FileStat::of_stat(&rustix::fs::fstat(&fd).map_err(errno)?);
        if stat.kind != NodeKind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", self.display(name).display()),
            ));
        }
        // Back to blocking reads: O_NONBLOCK only kept a FIFO from blocking the open.
        rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(errno)?;
        Ok((File::from(fd), stat))
    }

    /// Creates `name` for writing; fails if anything (a symlink too) has that name.
    pub fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            component(name)?,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from(mode),
        )
        .map_err(errno)?;
        Ok(File::from(fd))
    }

    /// A file with no name in this folder (`O_TMPFILE`; where the file system lacks it,
    /// a short name removed at once), for spooling.
    pub fn unnamed_file(&self) -> io::Result<File> {
        match rustix::fs::openat(
            &self.fd,
            c".",
            OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from(0o600),
        ) {
            Ok(fd) => Ok(File::from(fd)),
            Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::ISDIR) => {
                let name = temp_name("spool");
                let fd = rustix::fs::openat(
                    &self.fd,
                    name.as_os_str(),
                    OFlags::RDWR
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from(0o600),
                )
                .map_err(errno)?;
                self.remove_file(&name)?;
                Ok(File::from(fd))
            }
            Err(e) => Err(errno(e)),
        }
    }

    /// Links `from` to the new name `to` in this folder; never replaces an existing file.
    pub fn link(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        rustix::fs::linkat(
            &self.fd,
            component(from)?,
            &self.fd,
            component(to)?,
            AtFlags::empty(),
        )
        .map_err(errno)
    }

    /// Renames `from` to `to` in this folder, replacing `to`.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, component(from)?, &self.fd, component(to)?).map_err(errno)
    }

    /// Removes the file `name` (not a folder).
    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, component(name)?, AtFlags::empty()).map_err(errno)
    }

    /// Removes `name` only if it is still the very file `expected` describes.
    pub fn remove_if_same(&self, name: &OsStr, expected: &FileStat) -> io::Result<Removal> {
        let now = match self.stat(name) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removal::Gone),
            Err(e) => return Err(e),
        };
        if now.kind != NodeKind::File {
            return Ok(Removal::Changed("it is no longer a regular file".into()));
        }
        if now.dev != expected.dev || now.ino != expected.ino {
            return Ok(Removal::Changed(
                "another file has its name now (it was replaced or its folder swapped)".into(),
            ));
        }
        if now.size != expected.size || now.mtime_ns != expected.mtime_ns {
            return Ok(Removal::Changed("it was modified".into()));
        }
        self.remove_file(name)?;
        Ok(Removal::Removed)
    }

    /// fsyncs the folder: makes creations, renames and removals in it durable.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd).map_err(errno)
    }

    /// The folder's entries (without `.` and `..`), with their kind where the file system
    /// reports it in the listing (`d_type`); `None` means "stat it".
    pub fn entries(&self) -> io::Result<Vec<(OsString, Option<NodeKind>)>> {
        let mut listing = Listing::default();
        self.list(&mut listing)?;
        Ok(listing
            .iter()
            .map(|(name, kind)| (OsStr::from_bytes(name.to_bytes()).to_os_string(), kind))
            .collect())
    }

    /// Reads the folder's whole listing into `into` (replacing what it held), reusing its
    /// memory: a walk lists a million files without an allocation per name. Read in full
    /// before any entry is used, so a listing that fails part way is one error, as with
    /// [`Folder::entries`], never half a folder.
    pub fn list(&self, into: &mut Listing) -> io::Result<()> {
        into.packed.clear();
        // A description of its own: the listing's offset is not shared with another reader
        // of this handle (another thread of a parallel walk, a second listing).
        let fd = rustix::fs::openat(
            &self.fd,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        if into.raw.capacity() < Listing::READ_BYTES {
            into.raw.reserve(Listing::READ_BYTES);
        }
        let mut dir = rustix::fs::RawDir::new(&fd, into.raw.spare_capacity_mut());
        while let Some(entry) = dir.next() {
            let entry = match entry {
                Ok(entry) => entry,
                // What `rustix::fs::Dir` (behind `entries` before) takes as the end: the
                // folder was removed while listed.
                Err(rustix::io::Errno::NOENT) => break,
                Err(e) => return Err(errno(e)),
            };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match entry.file_type() {
                FileType::RegularFile => Some(NodeKind::File),
                FileType::Directory => Some(NodeKind::Dir),
                FileType::Symlink => Some(NodeKind::Symlink),
                FileType::Unknown => None,
                _ => Some(NodeKind::Special),
            };
            into.packed.push(Listing::kind_byte(kind));
            into.packed.extend_from_slice(name);
            into.packed.push(0);
        }
        Ok(())
    }

    /// What the entry `name` of this folder's listing is, without following a symlink.
    /// Takes the listing's own NUL-terminated name, so nothing is copied per file; a
    /// listed name is one component by construction (the kernel never lists `/`, and
    /// [`Listing`] leaves out `.` and `..`).
    pub fn stat_listed(&self, name: &CStr) -> io::Result<FileStat> {
        debug_assert!(component(OsStr::from_bytes(name.to_bytes())).is_ok());
        let st = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
        Ok(FileStat::of_stat(&st))
    }

    /// Writes `bytes` to `name` atomically: a short temporary name in this folder, fsync,
    /// rename over `name`, fsync of the folder. A crash leaves the old file or the new one.
    pub fn write_atomic(&self, name: &OsStr, bytes: &[u8]) -> io::Result<()> {
        component(name)?;
        let temp = temp_name("write");
        let result = (|| {
            let mut file = self.create_new(&temp, 0o644)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            self.rename(&temp, name)?;
            self.sync()
        })();
        if result.is_err() {
            let _ = self.remove_file(&temp);
        }
        result
    }
}

/// One folder's listing, read by [`Folder::list`]; kept from one folder to the next so
/// its memory is reused.
#[derive(Debug, Default)]
pub struct Listing {
    /// Where `getdents64` writes.
    raw: Vec<u8>,
    /// The entries, each a kind byte, the name and a NUL.
    packed: Vec<u8>,
}

impl Listing {
    /// What one `getdents64` call may fill: about a thousand typical names, as many as a
    /// SPEC folder holds, so a folder costs a few calls (`du`'s `fts` reads 32 KiB).
    const READ_BYTES: usize = 64 * 1024;

    fn kind_byte(kind: Option<NodeKind>) -> u8 {
        match kind {
            None => 0,
            Some(NodeKind::File) => 1,
            Some(NodeKind::Dir) => 2,
            Some(NodeKind::Symlink) => 3,
            Some(NodeKind::Special) => 4,
        }
    }

    /// The entries in the order the file system listed them, with their kind where the
    /// listing gives it (`None`: stat it).
    pub fn iter(&self) -> impl Iterator<Item = (&CStr, Option<NodeKind>)> + '_ {
        let mut rest = self.packed.as_slice();
        std::iter::from_fn(move || {
            let (&kind, tail) = rest.split_first()?;
            let name = CStr::from_bytes_until_nul(tail).expect("a packed name ends in NUL");
            rest = &tail[name.to_bytes_with_nul().len()..];
            let kind = match kind {
                1 => Some(NodeKind::File),
                2 => Some(NodeKind::Dir),
                3 => Some(NodeKind::Symlink),
                4 => Some(NodeKind::Special),
                _ => None,
            };
            Some((name, kind))
        })
    }
}

/// The prefix of every temporary name this plugin makes in a folder.
pub const TEMP_PREFIX: &str = ".speckit-tmp-";

/// A short temporary name, unique in this process: `.speckit-tmp-<purpose>-<pid>-<n>`.
/// Short whatever the final name is, so a 255-byte name can always be written back.
pub fn temp_name(purpose: &str) -> OsString {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    OsString::from(format!("{TEMP_PREFIX}{purpose}-{}-{n}", std::process::id()))
}

/// Whether `name` is one of [`temp_name`]'s.
pub fn is_temp_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(TEMP_PREFIX.as_bytes())
}

/// The folders below one root, each opened once (a run reaches a SPEC's files through
/// the same handles from its walk to its last deletion).
#[derive(Debug)]
pub struct Tree {
    root: Arc<Folder>,
    open: Mutex<HashMap<PathBuf, Arc<Folder>>>,
}

impl Tree {
    /// Opens the root (following it if it is a symlink: the user's choice).
    pub fn open(root: &Path) -> io::Result<Tree> {
        Ok(Tree {
            root: Arc::new(Folder::open(root)?),
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Folder {
        &self.root
    }

    /// The folder at `relative` (empty: the root), opened once.
    pub fn folder(&self, relative: &Path) -> io::Result<Arc<Folder>> {
        self.folder_with(relative, false)
    }

    /// Like [`Tree::folder`], creating missing folders.
    pub fn create_folder(&self, relative: &Path) -> io::Result<Arc<Folder>> {
        self.folder_with(relative, true)
    }

    fn folder_with(&self, relative: &Path, create: bool) -> io::Result<Arc<Folder>> {
        if relative.as_os_str().is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(f) = self.open.lock().expect("folder cache").get(relative) {
            return Ok(f.clone());
        }
        // Through the parent's handle, so a folder is reached the same way every time.
        let parent_rel = relative.parent().unwrap_or(Path::new(""));
        let Some(name) = relative.file_name() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain relative path", relative.display()),
            ));
        };
        if !is_plain_relative(relative) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain relative path", relative.display()),
            ));
        }
        let parent = self.folder_with(parent_rel, create)?;
        let folder = if create {
            parent.create_dirs(Path::new(name))?
        } else {
            parent.open_dir(name)?
        };
        let folder = Arc::new(folder);
        self.open
            .lock()
            .expect("folder cache")
            .insert(relative.to_path_buf(), folder.clone());
        Ok(folder)
    }

    /// The folder of the file at `relative`, and the file's name.
    pub fn parent_of<'p>(&self, relative: &'p Path) -> io::Result<(Arc<Folder>, &'p OsStr)> {
        let (dir, name) = split(relative)?;
        Ok((self.folder(dir)?, name))
    }

    /// Opens the regular file at `relative` for reading (see [`Folder::open_file`]).
    pub fn open_file(&self, relative: &Path) -> io::Result<(File, FileStat)> {
        let (folder, name) = self.parent_of(relative)?;
        folder.open_file(name)
    }

    /// What the file at `relative` is, without following a symlink.
    pub fn stat(&self, relative: &Path) -> io::Result<FileStat> {
        let (folder, name) = self.parent_of(relative)?;
        folder.stat(name)
    }

    /// Removes the file at `relative` only if it is still the file `expected` describes.
    pub fn remove_if_same(&self, relative: &Path, expected: &FileStat) -> io::Result<Removal> {
        let (folder, name) = match self.parent_of(relative) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removal::Gone),
            Err(e) => return Err(e),
        };
        folder.remove_if_same(name, expected)
    }

    /// The path of `relative` below the root, for messages.
    pub fn display(&self, relative: &Path) -> PathBuf {
        self.root.path.join(relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinked_folders_are_never_entered() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("outside")).unwrap();
        std::os::unix::fs::symlink(root.join("outside"), root.join("a/link")).unwrap();
        let tree = Tree::open(root).unwrap();
        tree.folder(Path::new("a/b")).unwrap();
        let err = tree.folder(Path::new("a/link")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = tree.create_folder(Path::new("a/link/c")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!root.join("outside/c").exists());
        tree.create_folder(Path::new("x/y")).unwrap();
        assert!(root.join("x/y").is_dir());
        assert!(tree.folder(Path::new("../etc")).is_err());
    }

    #[test]
    fn files_open_without_following_and_remove_only_when_the_same() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real"), b"abc").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let folder = Folder::open(dir.path()).unwrap();
        let (_, stat) = folder.open_file(OsStr::new("real")).unwrap();
        assert_eq!((stat.kind, stat.size), (NodeKind::File, 3));
        assert!(folder.open_file(OsStr::new("link")).is_err());
        // Replaced by another file under the same name: not removed.
        std::fs::remove_file(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("real"), b"xyz").unwrap();
        let outcome = folder.remove_if_same(OsStr::new("real"), &stat).unwrap();
        assert!(matches!(outcome, Removal::Changed(_)), "{outcome:?}");
        assert!(dir.path().join("real").exists());
        let (_, now) = folder.open_file(OsStr::new("real")).unwrap();
        assert_eq!(
            folder.remove_if_same(OsStr::new("real"), &now).unwrap(),
            Removal::Removed
        );
        assert_eq!(
            folder.remove_if_same(OsStr::new("real"), &now).unwrap(),
            Removal::Gone
        );
    }

    #[test]
    fn temporary_names_are_short_and_names_must_be_one_component() {
        assert!(temp_name("restore").len() < 64);
        assert!(is_temp_name(&temp_name("write")));
        let dir = tempfile::tempdir().unwrap();
        let folder = Folder::open(dir.path()).unwrap();
        for bad in ["", ".", "..", "a/b"] {
            assert!(folder.stat(OsStr::new(bad)).is_err(), "{bad:?}");
        }
        let long = "x".repeat(255);
        folder.write_atomic(OsStr::new(&long), b"1").unwrap();
        assert_eq!(std::fs::read(dir.path().join(&long)).unwrap(), b"1");
    }
}
