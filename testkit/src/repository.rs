//! Repositories laid out as upstream's is, for `init` and `check`: the evidence root at
//! `docs/SPEC-OPS-004-integrated-coder-hooks/evidence` holding `commands/<SPEC>/` and
//! `consensus/<SPEC>/`, and the SPEC tracker `SPEC.md` at the top. Built in the caller's
//! (temporary) folder from nothing; [`crate::fixtures::linked_upstream_repository`] gives
//! the real tree instead.

use std::fs;
use std::path::{Path, PathBuf};

/// Where upstream keeps its evidence, relative to the repository.
pub const EVIDENCE_ROOT: &str = "docs/SPEC-OPS-004-integrated-coder-hooks/evidence";

/// A repository that was laid out.
#[derive(Debug, Clone)]
pub struct Repository {
    pub dir: PathBuf,
    /// The evidence root (absolute).
    pub root: PathBuf,
    /// `SPEC.md` (absolute).
    pub tracker: PathBuf,
}

/// Lays out `dir` as upstream's repository: per SPEC a telemetry file under `commands/`
/// and a synthesis under `consensus/`, and a 4-column `SPEC.md` giving each its status.
pub fn upstream_layout(dir: &Path, specs: &[(&str, &str)]) -> std::io::Result<Repository> {
    let root = dir.join(EVIDENCE_ROOT);
    for (spec, _) in specs {
        let commands = root.join("commands").join(spec);
        fs::create_dir_all(&commands)?;
        fs::write(
            commands.join(format!("{spec}_spec-plan_telemetry_20251109_181017.json")),
            format!("{{\"spec_id\":\"{spec}\",\"stage\":\"spec-plan\"}}\n"),
        )?;
        let consensus = root.join("consensus").join(spec);
        fs::create_dir_all(&consensus)?;
        fs::write(
            consensus.join("spec-plan_synthesis.json"),
            format!("{{\"specId\":\"{spec}\",\"status\":\"ok\"}}\n"),
        )?;
    }
    fs::create_dir_all(root.join(".locks"))?;
    let tracker = dir.join("SPEC.md");
    crate::tracker::write_four_column(&tracker, specs)?;
    Ok(Repository {
        dir: dir.to_path_buf(),
        root,
        tracker,
    })
}
