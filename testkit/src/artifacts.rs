//! Finding what cargo built beside a running test or bench binary.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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

/// Creates `<dir>/plugins/` with mode 0755 (the engine refuses a plugin folder writable by
/// group or others) and returns it.
pub fn plugins_folder(dir: &Path) -> PathBuf {
    let plugins = dir.join("plugins");
    fs::create_dir_all(&plugins).expect("create the plugins folder");
    fs::set_permissions(&plugins, fs::Permissions::from_mode(0o755))
        .expect("make the plugins folder 0755");
    plugins
}

/// Installs the built library `lib` (see [`built_library`]) as `<dir>/plugins/<file>`, mode
/// 0755, the way a user drops a plugin in: written under a temporary name and renamed, so
/// the final name is always a new, complete file (a new inode). Returns its path.
pub fn install_library(dir: &Path, lib: &str, file: &str) -> PathBuf {
    let target = plugins_folder(dir).join(file);
    let temporary = target.with_extension("installing");
    fs::copy(built_library(lib), &temporary).expect("copy the built plugin library");
    fs::set_permissions(&temporary, fs::Permissions::from_mode(0o755))
        .expect("make the plugin library 0755");
    fs::rename(&temporary, &target).expect("rename the plugin library into place");
    target
}
