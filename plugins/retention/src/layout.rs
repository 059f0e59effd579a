//! The evidence tree's layout: which files belong to which SPEC folder, found by walking the
//! root without ever following a symbolic link.
//!
//! ```text
//! <root>/commands/<SPEC folder>/**      per-SPEC command evidence
//! <root>/consensus/<SPEC folder>/**     per-SPEC consensus evidence
//! <root>/commands/<file>                non-SPEC (top-level command files)
//! <root>/<anything else>                non-SPEC (archive/, costs/, .locks/, cleanup/...)
//! ```
//!
//! A SPEC folder's name is not always a clean SPEC-ID (`SPEC-KIT-025-add-automated-...`);
//! [`tracker_id`] maps it to the ID a tracker uses. Symlinks, sockets and other special
//! files are never followed or counted as evidence: they are reported as skipped, with the
//! reason, so no number silently leaves files out.
//!
//! [`walk`] walks on the calling thread; [`walk_parallel`] is the same walk on several
//! threads, each taking whole folders, its findings handed back in [`walk`]'s order (see
//! `layout/pieces.rs`).

use serde::Serialize;
use speckit_engine::SpecId;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::folder::{FileStat, Folder, Listing};

mod pieces;

use pieces::Plan;
pub use pieces::{default_threads, threads_per_core, Owner, Visit, MAX_THREADS};

/// Which half of a SPEC's evidence a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    Commands,
    Consensus,
}

impl EvidenceKind {
    pub const ALL: [EvidenceKind; 2] = [EvidenceKind::Commands, EvidenceKind::Consensus];

    pub fn dir_name(self) -> &'static str {
        match self {
            EvidenceKind::Commands => "commands",
            EvidenceKind::Consensus => "consensus",
        }
    }
}

/// One regular file of the tree, as `walk` found it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the evidence root.
    pub relative: PathBuf,
    /// The SPEC folder it belongs to, and which half; `None` for non-SPEC entries.
    pub owner: Option<(SpecId, EvidenceKind)>,
    /// Apparent size in bytes (what `find -printf '%s'` reports).
    pub size: u64,
    pub mtime: SystemTime,
    /// Allocated bytes (`st_blocks * 512`: what `du` counts).
    pub allocated_bytes: u64,
    /// Device and inode: which file this was, so a later step can tell it from another
    /// file put under the same name.
    pub dev: u64,
    pub ino: u64,
}

impl Entry {
    fn new(relative: PathBuf, owner: Option<(SpecId, EvidenceKind)>, stat: &FileStat) -> Self {
        Entry {
            relative,
            owner,
            size: stat.size,
            mtime: crate::fsutil::ns_to_system_time(stat.mtime_ns),
            allocated_bytes: stat.allocated_bytes,
            dev: stat.dev,
            ino: stat.ino,
        }
    }
}

/// Why something in the tree was not counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipReason {
    /// A symbolic link: never followed, never archived or deleted.
    Symlink,
    /// A socket, FIFO or device.
    SpecialFile,
    /// A SPEC folder whose name could escape its folder or is not a valid SPEC-ID.
    InvalidSpecFolder { detail: String },
    /// Could not be read (permission denied, vanished...).
    Unreadable { detail: String },
}

/// Something `walk` did not count, with its path relative to the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub relative: PathBuf,
    #[serde(flatten)]
    pub reason: SkipReason,
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("evidence root {} does not exist", .0.display())]
    RootMissing(PathBuf),
    #[error("evidence root {} is not a folder", .0.display())]
    RootNotDir(PathBuf),
    #[error("cannot read evidence root {}: {source}", path.display())]
    RootUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks the root exists and is a folder (the configured root itself may be a symlink to
/// one: it is the user's choice; nothing below it is followed).
pub fn check_root(root: &Path) -> Result<(), LayoutError> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(LayoutError::RootNotDir(root.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(LayoutError::RootMissing(root.to_path_buf()))
        }
        Err(source) => Err(LayoutError::RootUnreadable {
            path: root.to_path_buf(),
            source,
        }),
    }
}

/// Walks the whole evidence root, calling `on_file` for every regular file and `on_skip`
/// for everything not counted. Streaming: memory grows with the number of top-level
/// folders, not with the tree. Every folder is reached through its parent's handle (see
/// [`crate::folder`]): a folder swapped for a symlink mid-walk is reported as a symlink,
/// never entered. One thread; [`walk_parallel`] is the same walk on several.
pub fn walk(
    root: &Path,
    on_file: &mut dyn FnMut(Entry),
    on_skip: &mut dyn FnMut(Skipped),
) -> Result<(), LayoutError> {
    walk_plan(&Plan::whole_root(root)?, on_file, on_skip);
    Ok(())
}

/// Walks only the SPEC folders of `commands/` and `consensus/` whose names `select` accepts,
/// so one SPEC's figures do not need a walk of the whole root. What it meets is reported
/// exactly as [`walk`] reports it; a missing `commands/` or `consensus/` holds no evidence
/// and is not a skip. Non-SPEC entries are not visited.
pub fn walk_spec_folders(
    root: &Path,
    select: &mut dyn FnMut(&str) -> bool,
    on_file: &mut dyn FnMut(Entry),
    on_skip: &mut dyn FnMut(Skipped),
) -> Result<(), LayoutError> {
    walk_plan(&Plan::spec_folders(root, select)?, on_file, on_skip);
    Ok(())
}

/// Which part of the root [`walk_parallel`] walks.
pub enum Reach<'a> {
    /// All of it, as [`walk`].
    WholeRoot,
    /// The SPEC folders `select` accepts, as [`walk_spec_folders`].
    SpecFolders(&'a mut dyn FnMut(&str) -> bool),
}

/// [`walk`] (or [`walk_spec_folders`]) on up to `threads` threads, each walking whole
/// folders (one SPEC folder, or one non-SPEC folder such as `archive/`) by the same rules.
/// Each piece of the walk (a folder, or one entry at the top) is told to its own visitor,
/// made by `new` with the piece's SPEC folder (`None`: non-SPEC), and the visitors are
/// handed to `merge` in the order [`walk`] meets their pieces: whatever the thread count,
/// folding them in that order gives the same figures and the same skip list, in the same
/// order, as [`walk`]. Memory grows with the number of pieces and what their visitors keep.
pub fn walk_parallel<T: Visit + Send>(
    root: &Path,
    reach: Reach<'_>,
    threads: usize,
    new: &(dyn Fn(Option<&Owner>) -> T + Sync),
    merge: &mut dyn FnMut(T),
) -> Result<(), LayoutError> {
    let plan = match reach {
        Reach::WholeRoot => Plan::whole_root(root)?,
        Reach::SpecFolders(select) => Plan::spec_folders(root, select)?,
    };
    pieces::run(&plan, threads, new, merge);
    Ok(())
}

/// Every piece of `plan` on this thread, as owned [`Entry`]s.
fn walk_plan(plan: &Plan, on_file: &mut dyn FnMut(Entry), on_skip: &mut dyn FnMut(Skipped)) {
    struct Callbacks<'a> {
        owner: Option<&'a (SpecId, EvidenceKind)>,
        on_file: &'a mut dyn FnMut(Entry),
        on_skip: &'a mut dyn FnMut(Skipped),
    }
    impl Visit for Callbacks<'_> {
        fn file(&mut self, dir: &Path, name: &OsStr, stat: &FileStat) {
            (self.on_file)(Entry::new(dir.join(name), self.owner.cloned(), stat));
        }
        fn skip(&mut self, skip: Skipped) {
            (self.on_skip)(skip);
        }
    }
    let mut listing = Listing::default();
    for piece in &plan.pieces {
        let mut visit = Callbacks {
            owner: piece.owner(),
            on_file: &mut *on_file,
            on_skip: &mut *on_skip,
        };
        plan.walk_piece(piece, &mut listing, &mut visit);
    }
}

/// Opens the root after [`check_root`], so a missing root gets its own message.
fn open_root(root: &Path) -> Result<Folder, LayoutError> {
    check_root(root)?;
    Folder::open(root).map_err(|source| LayoutError::RootUnreadable {
        path: root.to_path_buf(),
        source,
    })
}

/// All of a tree, collected: per SPEC folder its files, plus non-SPEC files and skips.
#[derive(Debug, Default)]
pub struct EvidenceScan {
    pub specs: BTreeMap<SpecId, Vec<Entry>>,
    pub non_spec: Vec<Entry>,
    pub skipped: Vec<Skipped>,
}

/// Walks the tree and collects it (memory grows with the tree; prefer [`walk`] for sums).
pub fn scan(root: &Path) -> Result<EvidenceScan, LayoutError> {
    let mut out = EvidenceScan::default();
    let mut skipped = Vec::new();
    walk(
        root,
        &mut |entry| match &entry.owner {
            Some((spec, _)) => out.specs.entry(spec.clone()).or_default().push(entry),
            None => out.non_spec.push(entry),
        },
        &mut |skip| skipped.push(skip),
    )?;
    out.skipped = skipped;
    Ok(out)
}

/// The SPEC-ID a tracker would use for an evidence folder name.
///
/// Rule: an exact tracker ID wins; else the longest tracker ID that the folder name starts
/// with, followed by `-` (`SPEC-KIT-025-add-automated-conflict-resolution-with` and its
/// truncated twin `...-wit` both map to `SPEC-KIT-025`); else the canonical prefix: upper-case
/// word segments up to and including the first all-digit segment (`SPEC-KIT-045-mini` ->
/// `SPEC-KIT-045`); else the folder name itself (`SPEC-KIT-DEMO`).
pub fn tracker_id<'a>(folder: &'a str, tracker_ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut best: Option<&str> = None;
    for id in tracker_ids {
        if id == folder {
            return id.to_string();
        }
        let prefixed = folder.len() > id.len()
            && folder.starts_with(id)
            && folder.as_bytes()[id.len()] == b'-';
        if prefixed && best.is_none_or(|b| id.len() > b.len()) {
            best = Some(id);
        }
    }
    if let Some(id) = best {
        return id.to_string();
    }
    canonical_id(folder).to_string()
}

/// `SPEC-KIT-045-mini` -> `SPEC-KIT-045`; a name without such a prefix is returned whole.
pub fn canonical_id(folder: &str) -> &str {
    let mut end = 0;
    for (i, segment) in folder.split('-').enumerate() {
        let start = if i == 0 { 0 } else { end + 1 };
        let seg_end = start + segment.len();
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            if i == 0 {
                return folder;
            }
            return &folder[..seg_end];
        }
        if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_uppercase()) {
            return folder;
        }
        end = seg_end;
    }
    folder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_map_to_tracker_ids() {
        let ids = ["SPEC-KIT-025", "SPEC-KIT-900", "SPEC-KIT-02"];
        assert_eq!(tracker_id("SPEC-KIT-900", ids), "SPEC-KIT-900");
        assert_eq!(
            tracker_id("SPEC-KIT-025-add-automated-conflict-resolution-with", ids),
            "SPEC-KIT-025"
        );
        assert_eq!(
            tracker_id("SPEC-KIT-025-add-automated-conflict-resolution-wit", ids),
            "SPEC-KIT-025"
        );
        assert_eq!(tracker_id("SPEC-KIT-045-mini", ids), "SPEC-KIT-045");
        assert_eq!(tracker_id("SPEC-KIT-DEMO", ids), "SPEC-KIT-DEMO");
        assert_eq!(tracker_id("SPEC-DOGFOOD-001", ids), "SPEC-DOGFOOD-001");
        assert_eq!(canonical_id("notes-2024"), "notes-2024");
    }

    #[cfg(unix)]
    #[test]
    fn walk_never_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("evidence");
        let outside = dir.path().join("outside");
        fs::create_dir_all(root.join("commands/SPEC-KIT-1")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret.json"), b"12345").unwrap();
        fs::write(root.join("commands/SPEC-KIT-1/a.json"), b"abc").unwrap();
        fs::write(root.join("commands/top.json"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("commands/SPEC-KIT-1/link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("consensus")).unwrap();
        let scan = scan(&root).unwrap();
        let files = &scan.specs[&SpecId::parse("SPEC-KIT-1").unwrap()];
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].size, 3);
        assert_eq!(scan.non_spec.len(), 1);
        assert_eq!(scan.skipped.len(), 2);
        assert!(scan.skipped.iter().all(|s| s.reason == SkipReason::Symlink));
    }

    #[test]
    fn bad_spec_folder_is_skipped_with_reason() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("consensus/bad name")).unwrap();
        fs::write(dir.path().join("consensus/bad name/x.json"), b"1").unwrap();
        let scan = scan(dir.path()).unwrap();
        assert!(scan.specs.is_empty());
        assert!(matches!(
            scan.skipped[0].reason,
            SkipReason::InvalidSpecFolder { .. }
        ));
    }

    #[test]
    fn missing_root_is_an_error() {
        let err = scan(Path::new("/nonexistent/evidence")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/evidence"));
    }
}
