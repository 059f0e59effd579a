//! The walk cut into pieces, so that one walk can run on several threads and still report
//! exactly what, and in exactly the order, a walk on one thread does.
//!
//! The top of the tree (the root, `commands/`, `consensus/`) is listed first, on the
//! calling thread, into a [`Plan`]: an ordered list of [`Piece`]s, each a non-SPEC file
//! found there, something skipped there, or a folder to walk whole (a SPEC folder, or a
//! non-SPEC folder such as `archive/`). Folders are walked by [`walk_folder`], the only
//! code that goes below the top, whichever thread runs it. Each piece's findings go to its
//! own [`Visit`]; [`run`] hands them on in the plan's order, so the caller merges them as if
//! one thread had walked everything from the first piece to the last.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use speckit_engine::SpecId;

use super::{EvidenceKind, LayoutError, SkipReason, Skipped};
use crate::folder::{FileStat, Folder, Listing, NodeKind};

/// A SPEC folder's name and which half it is in: whose files a piece of the walk holds.
pub type Owner = (SpecId, EvidenceKind);

/// What one piece of a walk tells, as it finds it.
pub trait Visit {
    /// A regular file: `name` in the folder `dir` (relative to the evidence root). Borrowed,
    /// so a walk builds no path per file; `dir.join(name)` is its relative path.
    fn file(&mut self, dir: &Path, name: &OsStr, stat: &FileStat);
    /// Something not counted, with the reason.
    fn skip(&mut self, skip: Skipped);
}

/// One step of the walk, in the order a walk on one thread takes them.
#[derive(Debug)]
pub(super) enum Piece {
    /// A regular file found while listing the top: a non-SPEC entry.
    File { relative: PathBuf, stat: FileStat },
    /// Something found while listing the top that is not counted.
    Skip(Skipped),
    /// A folder to walk whole: `name` in `Plan::parents[parent]`, its files `owner`'s.
    Folder {
        parent: usize,
        name: OsString,
        relative: PathBuf,
        owner: Option<Owner>,
    },
}

impl Piece {
    pub(super) fn owner(&self) -> Option<&Owner> {
        match self {
            Piece::Folder { owner, .. } => owner.as_ref(),
            _ => None,
        }
    }
}

/// The listed top of the tree: the folders the pieces are in (held open until every
/// piece is walked) and the pieces in order.
#[derive(Debug)]
pub(super) struct Plan {
    parents: Vec<Folder>,
    pub(super) pieces: Vec<Piece>,
}

impl Plan {
    /// The whole root: `commands/` and `consensus/` list SPEC folders; any other folder is
    /// one non-SPEC piece; files at the top are non-SPEC.
    pub(super) fn whole_root(root: &Path) -> Result<Plan, LayoutError> {
        let top = super::open_root(root)?;
        let mut listing = Listing::default();
        top.list(&mut listing)
            .map_err(|source| LayoutError::RootUnreadable {
                path: root.to_path_buf(),
                source,
            })?;
        let mut plan = Plan {
            parents: Vec::new(),
            pieces: Vec::new(),
        };
        let top_index = plan.hold(top);
        let mut kinds = Vec::new();
        for (name, listed) in listing.iter() {
            let name = OsStr::from_bytes(name.to_bytes());
            let relative = PathBuf::from(name);
            match node(&plan.parents[top_index], name, listed) {
                Ok(Node::Dir) => match kind_of(name) {
                    // Listed after the root's other entries are planned, in this order.
                    Some(kind) => {
                        let at = plan.pieces.len();
                        kinds.push((at, kind, name.to_os_string()));
                    }
                    None => plan.pieces.push(Piece::Folder {
                        parent: top_index,
                        name: name.to_os_string(),
                        relative,
                        owner: None,
                    }),
                },
                Ok(Node::File(stat)) => plan.pieces.push(Piece::File { relative, stat }),
                Ok(Node::Skip(reason)) => {
                    plan.pieces.push(Piece::Skip(Skipped { relative, reason }))
                }
                Err(e) => plan.pieces.push(Piece::Skip(unreadable(relative, &e))),
            }
        }
        // Each half's pieces go where the half was listed, as a one-thread walk meets them.
        for (at, kind, name) in kinds.into_iter().rev() {
            let mut half = Vec::new();
            match plan.parents[top_index].open_dir(&name) {
                Ok(folder) => {
                    let parent = plan.hold(folder);
                    plan.plan_half(parent, kind, &mut listing, &mut half, &mut |_| true, false);
                }
                Err(e) => half.push(Piece::Skip(not_entered(PathBuf::from(&name), &e))),
            }
            plan.pieces.splice(at..at, half);
        }
        Ok(plan)
    }

    /// Only the SPEC folders of `commands/` and `consensus/` whose names `select` accepts;
    /// nothing else is visited. A missing half (or a plain file of that name) holds no
    /// evidence and is not a skip.
    pub(super) fn spec_folders(
        root: &Path,
        select: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Plan, LayoutError> {
        let top = super::open_root(root)?;
        let mut plan = Plan {
            parents: Vec::new(),
            pieces: Vec::new(),
        };
        let top_index = plan.hold(top);
        let mut listing = Listing::default();
        for kind in EvidenceKind::ALL {
            let kind_rel = PathBuf::from(kind.dir_name());
            let kind_name = OsStr::new(kind.dir_name());
            match node(&plan.parents[top_index], kind_name, None) {
                Ok(Node::Dir) => {}
                Ok(Node::File(..)) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Ok(Node::Skip(reason)) => {
                    plan.pieces.push(Piece::Skip(Skipped {
                        relative: kind_rel,
                        reason,
                    }));
                    continue;
                }
                Err(e) => {
                    plan.pieces.push(Piece::Skip(unreadable(kind_rel, &e)));
                    continue;
                }
            }
            match plan.parents[top_index].open_dir(kind_name) {
                Ok(folder) => {
                    let parent = plan.hold(folder);
                    let mut half = Vec::new();
                    plan.plan_half(parent, kind, &mut listing, &mut half, select, true);
                    plan.pieces.extend(half);
                }
                Err(e) => plan.pieces.push(Piece::Skip(not_entered(kind_rel, &e))),
            }
        }
        Ok(plan)
    }

    fn hold(&mut self, folder: Folder) -> usize {
        self.parents.push(folder);
        self.parents.len() - 1
    }

    /// `commands/` or `consensus/` (held at `parent`): its folders are SPEC folders, its
    /// files non-SPEC entries. With `selected_only`, only folders `select` accepts are
    /// visited and files are left out (one SPEC's measurement).
    fn plan_half(
        &self,
        parent: usize,
        kind: EvidenceKind,
        listing: &mut Listing,
        out: &mut Vec<Piece>,
        select: &mut dyn FnMut(&str) -> bool,
        selected_only: bool,
    ) {
        let kind_dir = &self.parents[parent];
        let kind_rel = Path::new(kind.dir_name());
        if let Err(e) = kind_dir.list(listing) {
            out.push(Piece::Skip(unreadable(kind_rel.to_path_buf(), &e)));
            return;
        }
        for (name, listed) in listing.iter() {
            let name = OsStr::from_bytes(name.to_bytes());
            let utf8 = name.to_str();
            if selected_only {
                // A name that is not UTF-8 can never equal or start with a valid SPEC-ID.
                match utf8 {
                    Some(n) if select(n) => {}
                    _ => continue,
                }
            }
            let relative = kind_rel.join(name);
            match node(kind_dir, name, listed) {
                Ok(Node::Dir) => {
                    let owner = utf8
                        .ok_or_else(|| "the name is not valid UTF-8".to_string())
                        .and_then(|n| SpecId::parse(n).map_err(|e| e.to_string()));
                    out.push(match owner {
                        Ok(spec) => Piece::Folder {
                            parent,
                            name: name.to_os_string(),
                            relative,
                            owner: Some((spec, kind)),
                        },
                        Err(detail) => Piece::Skip(Skipped {
                            relative,
                            reason: SkipReason::InvalidSpecFolder { detail },
                        }),
                    });
                }
                // A file directly in commands/ is non-SPEC evidence, not a SPEC's.
                Ok(Node::File(stat)) if !selected_only => out.push(Piece::File { relative, stat }),
                Ok(Node::File(..)) => {}
                Ok(Node::Skip(reason)) => out.push(Piece::Skip(Skipped { relative, reason })),
                Err(e) => out.push(Piece::Skip(unreadable(relative, &e))),
            }
        }
    }

    /// Walks one piece, telling `visit` what it finds. `listing` is the calling thread's
    /// listing memory.
    pub(super) fn walk_piece(&self, piece: &Piece, listing: &mut Listing, visit: &mut dyn Visit) {
        match piece {
            Piece::File { relative, stat } => {
                let dir = relative.parent().unwrap_or(Path::new(""));
                let name = relative.file_name().unwrap_or(relative.as_os_str());
                visit.file(dir, name, stat);
            }
            Piece::Skip(skip) => visit.skip(skip.clone()),
            Piece::Folder {
                parent,
                name,
                relative,
                ..
            } => match self.parents[*parent].open_dir(name) {
                Ok(folder) => walk_folder(folder, relative.clone(), listing, visit),
                Err(e) => visit.skip(not_entered(relative.clone(), &e)),
            },
        }
    }

    /// How many pieces are folders (the pieces worth a thread).
    fn folder_pieces(&self) -> usize {
        self.pieces
            .iter()
            .filter(|p| matches!(p, Piece::Folder { .. }))
            .count()
    }
}

fn kind_of(name: &OsStr) -> Option<EvidenceKind> {
    match name.to_str() {
        Some("commands") => Some(EvidenceKind::Commands),
        Some("consensus") => Some(EvidenceKind::Consensus),
        _ => None,
    }
}

/// Every regular file below `dir`, depth first, each folder entered through its parent's
/// handle, no symlink followed.
fn walk_folder(dir: Folder, relative: PathBuf, listing: &mut Listing, visit: &mut dyn Visit) {
    let mut stack = vec![(dir, relative)];
    while let Some((folder, current)) = stack.pop() {
        if let Err(e) = folder.list(listing) {
            visit.skip(unreadable(current, &e));
            continue;
        }
        for (name, listed) in listing.iter() {
            let os_name = OsStr::from_bytes(name.to_bytes());
            let kind = match listed {
                Some(NodeKind::Symlink) => Ok(Node::Skip(SkipReason::Symlink)),
                Some(NodeKind::Dir) => Ok(Node::Dir),
                _ => folder.stat_listed(name).map(Node::of),
            };
            match kind {
                Ok(Node::File(stat)) => visit.file(&current, os_name, &stat),
                Ok(Node::Dir) => {
                    let relative = current.join(os_name);
                    match folder.open_dir(os_name) {
                        Ok(sub) => stack.push((sub, relative)),
                        Err(e) => visit.skip(not_entered(relative, &e)),
                    }
                }
                Ok(Node::Skip(reason)) => visit.skip(Skipped {
                    relative: current.join(os_name),
                    reason,
                }),
                Err(e) => visit.skip(unreadable(current.join(os_name), &e)),
            }
        }
    }
}

/// The most threads a walk uses: walking is `getdents` and `stat` calls, which stop
/// scaling well past a few threads on one file system, and each thread holds its own
/// folders open.
pub const MAX_THREADS: usize = 8;

/// Walk threads per core. On a cold cache a walk mostly waits for the disk (folder and
/// inode blocks), so more walks in flight than cores keep it busier: on the 2-core bench
/// machine, 8 threads walked the cold 1M-file tree in about 0.75x the time of 2, and no
/// slower warm on a quieter run (BENCHMARKS.md).
/// On a warm cache the extra threads only share the cores.
const THREADS_PER_CORE: usize = 4;

/// Threads for a walk on this machine: [`THREADS_PER_CORE`] per core, at most
/// [`MAX_THREADS`].
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_mul(THREADS_PER_CORE)
        .min(MAX_THREADS)
}

/// One walk thread per core, at most [`MAX_THREADS`] (for comparison with
/// [`default_threads`]).
pub fn threads_per_core() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS)
}

/// Walks every piece of `plan` on up to `threads` threads (the calling one included), each
/// taking the next piece not yet taken, and hands each piece's [`Visit`] (made by `new`
/// for the piece's owner) to `merge` in the plan's order once all are walked. A thread
/// that cannot be started leaves its share to the others.
pub(super) fn run<T: Visit + Send>(
    plan: &Plan,
    threads: usize,
    new: &(dyn Fn(Option<&Owner>) -> T + Sync),
    merge: &mut dyn FnMut(T),
) {
    let threads = threads.clamp(1, plan.folder_pieces().max(1));
    let next = AtomicUsize::new(0);
    let work = || {
        let mut listing = Listing::default();
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(piece) = plan.pieces.get(i) else {
                break done;
            };
            let mut visit = new(piece.owner());
            plan.walk_piece(piece, &mut listing, &mut visit);
            done.push((i, visit));
        }
    };
    let mut done: Vec<(usize, T)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|n| {
                std::thread::Builder::new()
                    .name(format!("evidence-walk-{n}"))
                    .spawn_scoped(scope, work)
                    .ok()
            })
            .collect();
        let mut done = work();
        for helper in helpers {
            match helper.join() {
                Ok(theirs) => done.extend(theirs),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        done
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    for (_, visit) in done {
        merge(visit);
    }
}

pub(super) enum Node {
    Dir,
    File(FileStat),
    Skip(SkipReason),
}

impl Node {
    fn of(stat: FileStat) -> Node {
        match stat.kind {
            NodeKind::Symlink => Node::Skip(SkipReason::Symlink),
            NodeKind::Dir => Node::Dir,
            NodeKind::File => Node::File(stat),
            NodeKind::Special => Node::Skip(SkipReason::SpecialFile),
        }
    }
}

/// What `name` in `folder` is: the listing's type where it has one (a folder or a symlink
/// needs no `stat`), else `statat` relative to the folder without following.
pub(super) fn node(
    folder: &Folder,
    name: &OsStr,
    listed: Option<NodeKind>,
) -> std::io::Result<Node> {
    match listed {
        Some(NodeKind::Symlink) => Ok(Node::Skip(SkipReason::Symlink)),
        Some(NodeKind::Dir) => Ok(Node::Dir),
        _ => folder.stat(name).map(Node::of),
    }
}

/// A folder that could not be entered: swapped for a symlink after it was listed (the
/// open refuses to follow it), or unreadable.
fn not_entered(relative: PathBuf, e: &std::io::Error) -> Skipped {
    if e.kind() == std::io::ErrorKind::InvalidInput {
        Skipped {
            relative,
            reason: SkipReason::Symlink,
        }
    } else {
        unreadable(relative, e)
    }
}

fn unreadable(relative: PathBuf, e: &std::io::Error) -> Skipped {
    Skipped {
        relative,
        reason: SkipReason::Unreadable {
            detail: e.to_string(),
        },
    }
}
