//! When git last changed each file under the evidence root, read once per run.
//!
//! `git checkout` (and clone, `reset --hard`, switching branches) gives every file it
//! writes the current time as mtime, so a file overwritten in place (`plan_synthesis.json`)
//! looks new after every checkout. When the evidence root is inside a git work tree,
//! [`age::file_time`](crate::age::file_time) ages such a file by the last commit that
//! changed it instead, through this module.
//!
//! # The rule
//!
//! A file has a commit time only when it is *clean*: it is in `HEAD` and neither the index
//! nor the work tree differs from `HEAD` for it (content compared, so a `touch` alone does
//! not make it dirty). Then its content is what that commit wrote, and the commit time is
//! when the content was last made. A file git does not know (untracked, ignored, only
//! staged) or one modified since `HEAD` has no commit time: it was made at its mtime or
//! later, so the mtime is used.
//!
//! The time is the committer date (`%ct`) of the newest commit on the first-parent history
//! of `HEAD` that changed the path (a merge counts with its diff against its first parent;
//! renames are not followed). Each of these choices can only make a file look *younger*
//! than it is (a rebase, a merge, a rename, a shallow clone's boundary commit all move
//! the time forward), never older, so they can delay an archive but not bring one early.
//!
//! # Cost
//!
//! Four `git` processes per plan, whatever the number of files: `rev-parse` (is this a work
//! tree?), `ls-tree` (the files in `HEAD`), one `log` over the root's history (parsed in one
//! pass) and one `status` (the dirty files, untracked ones not listed). All output is NUL-separated (`-z`) and read
//! as bytes, so names with spaces, newlines or bytes that are not UTF-8 are matched
//! exactly. No `git` on the `PATH`, or a root outside any work tree: `load` returns `None`
//! (logged at debug level) and mtimes are used, as without git. `GIT_OPTIONAL_LOCKS=0` keeps
//! `status` from writing its refreshed index, so a dry run still writes nothing.

use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Commit times of the clean files under one root, by path relative to that root.
#[derive(Debug, Default)]
pub struct GitTimes {
    /// Relative path (git's bytes) -> committer time, seconds since the epoch.
    times: HashMap<Vec<u8>, i64>,
}

/// Variables that would point git at another repository than the root's own (a git hook
/// running the tool sets `GIT_DIR` and `GIT_INDEX_FILE`, relative to another folder).
const REPOSITORY_VARIABLES: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
];

enum Failure {
    /// No git, or not a work tree: the ordinary case without git.
    NoRepository(String),
    /// A work tree whose history could not be read.
    Git(String),
}

impl GitTimes {
    /// The commit times under `root`, or `None` when `root` is not in a git work tree, git
    /// is not installed, or git fails (then files are aged by mtime).
    pub fn load(root: &Path) -> Option<GitTimes> {
        Self::load_with(OsStr::new("git"), root)
    }

    /// [`GitTimes::load`] with the `git` program to run.
    pub fn load_with(git: &OsStr, root: &Path) -> Option<GitTimes> {
        match Self::read(git, root) {
            Ok(times) => {
                tracing::debug!(
                    root = %root.display(),
                    files = times.times.len(),
                    "evidence in a git work tree: files without a timestamp in their name are aged by their last commit"
                );
                Some(times)
            }
            Err(Failure::NoRepository(why)) => {
                tracing::debug!(root = %root.display(), "files aged by mtime: {why}");
                None
            }
            Err(Failure::Git(why)) => {
                tracing::warn!(root = %root.display(), "files aged by mtime: {why}");
                None
            }
        }
    }

    fn read(git: &OsStr, root: &Path) -> Result<GitTimes, Failure> {
        let inside = run(
            git,
            root,
            &["rev-parse", "--is-inside-work-tree", "--show-prefix"],
        )
        .map_err(Failure::NoRepository)?;
        // `true\n<root's path from the top of the work tree, `/`-terminated, raw>\n`.
        let Some(prefix) = inside
            .strip_prefix(b"true\n")
            .map(|p| p.strip_suffix(b"\n").unwrap_or(p))
        else {
            return Err(Failure::NoRepository("not inside a git work tree".into()));
        };
        let in_head = run(
            git,
            root,
            &["ls-tree", "-r", "-z", "--name-only", "HEAD", "--", "."],
        )
        .map_err(Failure::NoRepository)?; // no commit yet
        let log = run(
            git,
            root,
            &[
                "log",
                "--first-parent",
                "-m",
                "--no-renames",
                "--relative",
                "--name-only",
                "-z",
                "--format=%x00%ct",
                "HEAD",
                "--",
                ".",
            ],
        )
        .map_err(Failure::Git)?;
        // `status` (not `diff`, which rewrites the index) compares content where the stat
        // data differs and, with `GIT_OPTIONAL_LOCKS=0`, writes nothing.
        let status = run(
            git,
            root,
            &[
                "status",
                "--porcelain=v1",
                "-z",
                "--untracked-files=no",
                "--no-renames",
                "--",
                ".",
            ],
        )
        .map_err(Failure::Git)?;
        let dirty: HashSet<&[u8]> = parse_status(&status, prefix).collect();
        let clean: HashSet<&[u8]> = split_z(&in_head).filter(|p| !dirty.contains(p)).collect();
        let mut times = HashMap::with_capacity(clean.len());
        for (time, path) in parse_log(&log).map_err(Failure::Git)? {
            if clean.contains(path) {
                let t = times.entry(path.to_vec()).or_insert(time);
                *t = (*t).max(time);
            }
        }
        Ok(GitTimes { times })
    }

    /// When the last commit that changed `relative` (a path relative to the root) was
    /// made, if the file is clean in git.
    pub fn commit_time(&self, relative: &Path) -> Option<DateTime<Utc>> {
        let secs = *self.times.get(relative.as_os_str().as_bytes())?;
        DateTime::from_timestamp(secs, 0)
    }

    /// How many files have a commit time.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

/// Runs `git -C root args...` with the repository found from `root` alone; its stdout, or
/// why it failed.
fn run(git: &OsStr, root: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let mut cmd = Command::new(git);
    cmd.arg("-C")
        .arg(root)
        // Settings that would change the output's shape.
        .args(["-c", "diff.relative=false", "-c", "log.showSignature=false"])
        .args(["-c", "core.quotePath=false"])
        .args(args)
        .stdin(Stdio::null())
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C");
    for v in REPOSITORY_VARIABLES {
        cmd.env_remove(v);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("could not run {}: {e}", git.to_string_lossy()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "`git {}` failed ({}): {}",
            args.first().copied().unwrap_or_default(),
            out.status,
            stderr.trim()
        ));
    }
    Ok(out.stdout)
}

/// The NUL-terminated fields of `bytes` (no empty ones).
fn split_z(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split(|b| *b == 0).filter(|p| !p.is_empty())
}

/// `git status --porcelain=v1 -z --no-renames` output: `XY <path from the top>\0` per
/// changed file. Yields the paths under `prefix` (the root), relative to it.
fn parse_status<'a>(bytes: &'a [u8], prefix: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    split_z(bytes).filter_map(move |entry| entry.get(3..)?.strip_prefix(prefix))
}

/// `git log --format=%x00%ct -z --name-only` output: per commit `\0<time>\0`, then, if it
/// changed any path, `\n` and each path followed by `\0`. A commit's paths end at the empty
/// field that starts the next commit (a path is never empty). Yields (time, path).
fn parse_log(bytes: &[u8]) -> Result<Vec<(i64, &[u8])>, String> {
    let mut out = Vec::new();
    let mut fields = bytes.split(|b| *b == 0).peekable();
    while let Some(field) = fields.next() {
        if !field.is_empty() {
            return Err(format!(
                "unexpected `git log` output: {:?}",
                String::from_utf8_lossy(field)
            ));
        }
        let Some(time) = fields.next() else { break }; // the end
        let time: i64 = std::str::from_utf8(time)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| format!("unexpected commit time {:?}", String::from_utf8_lossy(time)))?;
        let mut first = true;
        while let Some(path) = fields.next_if(|f| !f.is_empty()) {
            let path = if first {
                path.strip_prefix(b"\n").unwrap_or(path)
            } else {
                path
            };
            first = false;
            out.push((time, path));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_output_is_parsed_with_odd_names_and_merges() {
        // As git 2.47 writes it: a newline-led name, a merge without paths, a name with a
        // newline and one with a byte that is not UTF-8.
        let raw = b"\x001500\x00\n\nlead\x00\x001400\x00\x001300\x00\na\x00b\xff\x00new\nline\x00sp ace\x00";
        let got = parse_log(raw).unwrap();
        let want: Vec<(i64, &[u8])> = vec![
            (1500, b"\nlead"),
            (1300, b"a"),
            (1300, b"b\xff"),
            (1300, b"new\nline"),
            (1300, b"sp ace"),
        ];
        assert_eq!(got, want);
        assert!(parse_log(b"").unwrap().is_empty());
        assert!(parse_log(b"junk\x00").is_err());
    }

    #[test]
    fn status_paths_are_made_relative_to_the_root() {
        let raw = b" M ev/a\x00M  ev/new\nline\x00D  other/x\x00UU ev/b\xff\x00";
        let got: Vec<&[u8]> = parse_status(raw, b"ev/").collect();
        assert_eq!(got, [&b"a"[..], b"new\nline", b"b\xff"]);
        let got: Vec<&[u8]> = parse_status(raw, b"").collect();
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn no_git_or_no_work_tree_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(GitTimes::load_with(OsStr::new("/nonexistent/git"), dir.path()).is_none());
        // A fresh temporary folder is in no work tree (unless /tmp is, which it is not in CI).
        if run(OsStr::new("git"), dir.path(), &["--version"]).is_ok()
            && run(OsStr::new("git"), dir.path(), &["rev-parse"]).is_err()
        {
            assert!(GitTimes::load(dir.path()).is_none());
        }
    }
}
