//! Where the shared upstream fixtures are (`../shared/fixtures` beside the repository, or
//! `$SPECKIT_FIXTURES`). Tests read them in place. A test that needs them fails when they
//! are missing; [`optional`] lets a test outside CI skip instead, saying why, while in CI
//! (`CI` set) a missing fixture fails the test all the same.

use std::path::{Path, PathBuf};

/// The fixtures folder (it may not exist).
pub fn root() -> PathBuf {
    std::env::var_os("SPECKIT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
}

/// `relative` under the fixtures folder; panics, naming the path, when it is missing.
pub fn require(relative: &str) -> PathBuf {
    let path = root().join(relative);
    assert!(
        path.exists(),
        "fixture {} is missing: this test reads the upstream fixtures in place (set SPECKIT_FIXTURES to their folder)",
        path.display()
    );
    path
}

/// `relative` under the fixtures folder, or `None` after printing why the test skips. In
/// CI a missing fixture panics: a green run must not hide that the real data was absent.
pub fn optional(relative: &str) -> Option<PathBuf> {
    let path = root().join(relative);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "fixture {} is missing in CI: the upstream fixtures must be beside the repository",
            path.display()
        );
    }
    eprintln!(
        "skipped: fixture {} is not on this machine (set SPECKIT_FIXTURES)",
        path.display()
    );
    None
}

/// The upstream-made consensus database (read it in place; copy it to a temporary folder
/// before opening it for writing).
pub fn upstream_db() -> PathBuf {
    require("upstream-db/consensus_artifacts.db")
}

/// Makes `dir` a repository holding upstream's real tree, by symbolic links into the
/// fixtures (which fail the test when missing): `docs` and `codex-rs/docs` (the evidence
/// roots, as upstream has both), `SPEC.md` and `codex-rs/SPEC.md` (its two trackers). What
/// a command writes in `dir` stays there; nothing is written into the fixtures.
pub fn linked_upstream_repository(dir: &Path) {
    use std::os::unix::fs::symlink;
    let link = |fixture: &str, name: &str| {
        let target = require(fixture);
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        symlink(&target, &path)
            .unwrap_or_else(|e| panic!("linking {} to {}: {e}", path.display(), target.display()));
    };
    link("upstream-evidence/docs", "docs");
    link("upstream-evidence/codex-rs/docs", "codex-rs/docs");
    link("upstream-trackers/SPEC-root-1d48be51.md", "SPEC.md");
    link(
        "upstream-trackers/SPEC-codex-rs-HEAD.md",
        "codex-rs/SPEC.md",
    );
}
