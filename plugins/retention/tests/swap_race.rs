//! A hostile tree: while cleanup or restore runs, a swapper exchanges a SPEC folder with a
//! symlink to a look-alike folder outside the evidence root (`renameat2(RENAME_EXCHANGE)`,
//! in a tight loop). Whatever moment each swap lands at, nothing outside the root is read
//! into an archive, changed or deleted, and every evidence file is in place or in a
//! verified archive.
//!
//! `SWAP_RACE_ROUNDS` sets the rounds of each kind (default 100: 200 runs in CI);
//! `scripts/swap-soak.sh` runs thousands.

mod cleanup_support;

use cleanup_support::*;
use rustix::fs::{renameat_with, RenameFlags, CWD};
use speckit_engine::{SpecId, Storage};
use speckit_retention::job::{cleanup_blocking, CleanupOptions};
use speckit_retention::restore::{restore, RestoreRequest};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const SPEC: &str = "SPEC-KIT-100";

fn rounds() -> usize {
    std::env::var("SWAP_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// Every file under `dir` (symlinks as their target text): path -> (sha256, mtime).
fn snapshot(dir: &Path) -> BTreeMap<String, (String, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            use std::os::unix::fs::MetadataExt;
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(e.path()).unwrap();
                out.insert(rel, (target.to_string_lossy().into_owned(), 0));
            } else {
                let bytes = std::fs::read(e.path()).unwrap();
                out.insert(rel, (sha_hex(&bytes), meta.mtime()));
            }
        }
    }
    out
}

/// A workspace with one finished SPEC whose `commands/` and `consensus/` folders each have
/// a look-alike outside the root (same names, other content) and a symlink to it beside
/// them in the root.
struct Race {
    ws: Ws,
    storage: Storage,
    outside: PathBuf,
    /// (the SPEC folder, the symlink it is exchanged with)
    pairs: Vec<(PathBuf, PathBuf)>,
    original: BTreeMap<String, String>,
}

impl Race {
    fn new() -> Race {
        let ws = Ws::new(&[(SPEC, "Done")], "");
        ws.generate(&[spec(SPEC, 6)]);
        let storage = ws.storage();
        let outside = ws.dir.path().join("outside");
        let mut pairs = Vec::new();
        for kind in ["commands", "consensus"] {
            let real = ws.root.join(kind).join(SPEC);
            let twin = outside.join(kind).join(SPEC);
            std::fs::create_dir_all(&twin).unwrap();
            for e in std::fs::read_dir(&real).unwrap() {
                let e = e.unwrap();
                std::fs::write(twin.join(e.file_name()), b"outside: not evidence").unwrap();
            }
            let link = ws.root.join(kind).join(".swap-link");
            std::os::unix::fs::symlink(&twin, &link).unwrap();
            pairs.push((real, link));
        }
        let original = tree(&ws.root);
        Race {
            ws,
            storage,
            outside,
            pairs,
            original,
        }
    }

    /// Runs `f` while a thread exchanges each SPEC folder with its symlink, then puts the
    /// real folders back in place. Returns how many exchanges landed.
    fn with_swapper<T>(&self, f: impl FnOnce() -> T) -> (T, u64) {
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let pairs = self.pairs.clone();
        let swapper = {
            let (stop, swaps) = (stop.clone(), swaps.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let (a, b) = &pairs[i % pairs.len()];
                    if renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).is_ok() {
                        swaps.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                    if i.is_multiple_of(4) {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let out = f();
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        // Real folders back at their names.
        for (real, link) in &self.pairs {
            if std::fs::symlink_metadata(real)
                .unwrap()
                .file_type()
                .is_symlink()
            {
                renameat_with(CWD, real, CWD, link, RenameFlags::EXCHANGE).unwrap();
            }
        }
        (out, swaps.load(Ordering::Relaxed))
    }

    fn cleanup(&self) {
        let policy = self.ws.policy();
        // Errors and skips are allowed (a SPEC folder found as a symlink is skipped);
        // losing or taking anything is not.
        let _ = cleanup_blocking(
            &policy.policy,
            &self.storage,
            now(),
            &CleanupOptions {
                force: true,
                ..CleanupOptions::default()
            },
            None,
            &speckit_retention::job::Control::NONE,
            1,
            1,
        )
        .unwrap();
    }

    fn restore(&self) {
        let spec = SpecId::parse(SPEC).unwrap();
        let _ = restore(&RestoreRequest {
            root: &self.ws.root,
            storage: &self.storage,
            spec: &spec,
            archive: None,
            to: None,
            faults: None,
            offload: None,
        });
    }

    /// Nothing outside changed, nothing lost, no outside content in any archive.
    fn check(&self, outside_before: &BTreeMap<String, (String, i64)>, context: &str) {
        assert_eq!(
            &snapshot(&self.outside),
            outside_before,
            "{context}: the look-alike folder outside the root changed"
        );
        assert_nothing_lost(&self.original, &self.ws.root, context);
        for (path, sha) in archived(&self.ws.root) {
            assert_eq!(
                self.original.get(&path),
                Some(&sha),
                "{context}: {path} in an archive is not the evidence file's content"
            );
        }
        // What is in the root is evidence (or our own links), never outside content.
        for (path, sha) in tree(&self.ws.root) {
            if let Some(orig) = self.original.get(&path) {
                assert_eq!(orig, &sha, "{context}: {path} changed");
            }
        }
    }
}

#[test]
fn cleanup_racing_a_folder_swapper_takes_and_loses_nothing() {
    let (mut swaps, mut archived_runs) = (0, 0);
    for round in 0..rounds() {
        let race = Race::new();
        let before = snapshot(&race.outside);
        let ((), n) = race.with_swapper(|| race.cleanup());
        swaps += n;
        race.check(&before, &format!("cleanup round {round}"));
        if !archived(&race.ws.root).is_empty() {
            archived_runs += 1;
        }
    }
    eprintln!(
        "swap race, cleanup: {} rounds, {swaps} exchanges, {archived_runs} rounds archived something",
        rounds()
    );
    assert!(swaps > 0, "the swapper never landed an exchange");
}

#[test]
fn restore_racing_a_folder_swapper_writes_nothing_outside() {
    let mut swaps = 0;
    let mut restored_rounds = 0;
    for round in 0..rounds() {
        let race = Race::new();
        race.cleanup(); // no swapper: archives written, old sources deleted
        assert!(
            !archived(&race.ws.root).is_empty(),
            "round {round}: nothing archived to restore"
        );
        let before = snapshot(&race.outside);
        let ((), n) = race.with_swapper(|| race.restore());
        swaps += n;
        race.check(&before, &format!("restore round {round}"));
        if tree(&race.ws.root).len() == race.original.len() {
            restored_rounds += 1;
        }
    }
    eprintln!(
        "swap race, restore: {} rounds, {swaps} exchanges, {restored_rounds} rounds restored every file",
        rounds()
    );
    assert!(swaps > 0, "the swapper never landed an exchange");
}
