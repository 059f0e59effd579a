//! Finding what cargo built beside a running test or bench binary.

use std::path::PathBuf;

/// The shared library `lib` (crate name, e.g. `speckit_digest`) that this workspace built
/// as a dev-dependency of the running test or bench. Panics, naming the file, if absent.
pub fn built_library(lib: &str) -> PathBuf {
    // Test and bench binaries live in `target/<profile>/deps/`; cargo puts the libraries of
    // dependencies beside them, and usually also copies them one folder up.
    let exe = std::env::current_exe().expect("the running binary's path");
    let deps = exe.parent().expect("the binary's folder");
    let name = format!(
        "{}{lib}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let candidates = [
        deps.parent().map(|p| p.join(&name)).unwrap_or_default(),
        deps.join(&name),
    ];
    // The newer of the two: the copy one folder up is not always refreshed when only the
    // test is rebuilt, and a stale library would not have the SDK this test was built with.
    candidates
        .iter()
        .filter(|file| file.is_file())
        .max_by_key(|file| file.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!("{name} is missing from {deps:?} and its parent: it is built by `cargo test` as a dev-dependency")
        })
        .clone()
}
