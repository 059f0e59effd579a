//! Helpers for the stats and limits tests: cheap sparse files, a policy over a test root,
//! an independent find-style byte count, and running code without root's privileges.

#![allow(dead_code)] // each test crate uses a different subset

use speckit_engine::Policy;
use speckit_retention::EvidencePolicy;
use std::fs;
use std::path::{Path, PathBuf};

pub const MIB: u64 = 1_048_576;

/// A file of `len` apparent bytes that takes no disk blocks (`File::set_len`), so tests can
/// put 50 MiB SPECs on disk for free.
pub fn sparse(path: &Path, len: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = fs::File::create(path).unwrap();
    file.set_len(len).unwrap();
}

/// A small real file.
pub fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// The default policy (40/50 MiB, 500 MiB root, 5 MiB file) over `root`.
pub fn policy_for(root: &Path) -> Policy {
    let mut policy = Policy::default();
    policy
        .sections
        .update::<EvidencePolicy>(|s| s.root = root.to_path_buf());
    policy
}

/// What `find DIR -type f -printf '%s\n'` adds up, written independently of the code under
/// test: regular files by lstat, symlinks neither followed nor counted.
pub fn find_style_sum(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                bytes += meta.len();
                files += 1;
            }
        }
    }
    (bytes, files)
}

/// `find DIR -type f -printf '%s\n'` itself, summed; `None` when `find` is not installed.
pub fn gnu_find_sum(dir: &Path) -> Option<(u64, u64)> {
    let out = std::process::Command::new("find")
        .arg(dir)
        .args(["-type", "f", "-printf", "%s\\n"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let sizes: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    Some((sizes.iter().sum(), sizes.len() as u64))
}

/// The real upstream fixtures, read in place; `None` (and a note) when they are absent
/// outside CI; in CI a missing fixture fails the test.
pub fn fixtures() -> Option<PathBuf> {
    speckit_testkit::fixtures::optional("upstream-evidence")
}

/// Runs `f` without root's power to ignore permission bits, so that a `chmod 000` folder
/// is really unreadable to it (the tests run as root).
///
/// As root, `f` runs on its own thread whose user and group become 65534 (`nobody`) through
/// the raw `setresgid`/`setresuid` system calls. Linux keeps credentials per thread; only
/// glibc's wrappers spread a change to every thread, the raw calls change just this one,
/// and it ends when `f` returns. Returns `None` (with a note) when the kernel refuses, as
/// in a user namespace without that ID mapped. As another user, `f` simply runs.
pub fn as_unprivileged<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: plain system calls on this thread's own credentials.
                unsafe {
                    if libc::geteuid() == 0 {
                        let gid = libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534);
                        let uid = libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534);
                        if gid != 0 || uid != 0 {
                            eprintln!("note: skipped: cannot drop root on this thread");
                            return None;
                        }
                    }
                }
                Some(f())
            })
            .join()
            .unwrap()
    })
}

/// Lets the unprivileged thread reach everything under `dir` (tempdirs are 0700).
pub fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Sets a path's permission bits.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}
