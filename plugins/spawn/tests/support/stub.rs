//! Finds the stub agent (`examples/stub_agent.rs` of the root package) for tests and the
//! bench: the copy cargo built beside this binary when it is up to date, else one compiled
//! here with `rustc` (the stub uses only the standard library), cached under the target
//! folder. `cargo test -p speckit-spawn` does not build the root package's examples.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The stub agent's source (this file is also included by the root package's tests).
pub fn stub_source() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        manifest.join("examples/stub_agent.rs"),
        manifest.join("../../examples/stub_agent.rs"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .expect("examples/stub_agent.rs")
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `target/<profile>` for the running test or bench binary (it lives in `deps/`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("binary folder");
    if dir.ends_with("deps") {
        dir.parent().expect("profile folder").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The path of an up-to-date stub agent binary, compiling it once if needed.
pub fn stub_agent() -> &'static Path {
    static STUB: OnceLock<PathBuf> = OnceLock::new();
    STUB.get_or_init(|| {
        let source = stub_source();
        let source_time = modified(&source).expect("examples/stub_agent.rs is missing");
        let fresh = |p: &Path| modified(p).is_some_and(|t| t >= source_time);
        let built = profile_dir().join("examples/stub_agent");
        if fresh(&built) {
            return built;
        }
        let cache = profile_dir().join("spawn-test-stub");
        let target = cache.join("stub_agent");
        if fresh(&target) {
            return target;
        }
        std::fs::create_dir_all(&cache).expect("create the stub cache folder");
        // Another test binary may compile it at the same time: build under a unique name,
        // then rename (atomic) into place.
        let temp = cache.join(format!("stub_agent.{}.tmp", std::process::id()));
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let status = std::process::Command::new(rustc)
            .args(["--edition", "2021", "-C", "opt-level=2", "-o"])
            .arg(&temp)
            .arg(&source)
            .status()
            .expect("run rustc to build the stub agent");
        assert!(status.success(), "compiling {} failed", source.display());
        std::fs::rename(&temp, &target).expect("move the stub agent into place");
        target
    })
}
