//! Evidence files of a spawn: per agent a prompt file, stdout and stderr logs and the
//! output file the agent writes, all under `<evidence root>/commands/<SPEC-ID>/`, plus the
//! SPEC's `spawn_metrics.json`.
//!
//! File names carry the batch's UTC time (`spawn_plan_20260105T101500Z-1a2b3c4d_gemini_prompt.md`),
//! the way upstream names evidence, so retention can age them by name. Files are created
//! with `O_EXCL` (`create_new`): an existing file or symlink at that name is never
//! followed or overwritten.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::SpawnError;

/// The name of the per-SPEC metrics export.
pub const METRICS_FILE: &str = "spawn_metrics.json";

/// The files of one agent in one batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentPaths {
    pub prompt: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Written by the agent (`{output_file}`); its response.
    pub output: PathBuf,
}

impl AgentPaths {
    pub fn new(spec_dir: &Path, stage: &str, batch_id: &str, agent: &str) -> Self {
        let base = format!("spawn_{stage}_{batch_id}_{agent}");
        Self {
            prompt: spec_dir.join(format!("{base}_prompt.md")),
            stdout: spec_dir.join(format!("{base}_stdout.log")),
            stderr: spec_dir.join(format!("{base}_stderr.log")),
            output: spec_dir.join(format!("{base}_output.txt")),
        }
    }
}

/// Makes sure `<root>/commands/<spec>` is a real folder (created if absent) and returns
/// it. A symlink at `commands` or at the SPEC's folder is refused: the engine writes only
/// inside the evidence root it was given.
pub fn prepare_spec_dir(root: &Path, spec: &str) -> Result<PathBuf, SpawnError> {
    let commands = root.join("commands");
    let spec_dir = commands.join(spec);
    for dir in [&commands, &spec_dir] {
        match std::fs::symlink_metadata(dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(SpawnError::EvidenceFolder {
                    path: dir.clone(),
                    cause: "is a symbolic link; refusing to write evidence through it".into(),
                })
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(SpawnError::EvidenceFolder {
                    path: dir.clone(),
                    cause: "exists and is not a folder".into(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|e| SpawnError::EvidenceFolder {
                    path: dir.clone(),
                    cause: format!("cannot create it: {e}"),
                })?;
            }
            Err(e) => {
                return Err(SpawnError::EvidenceFolder {
                    path: dir.clone(),
                    cause: e.to_string(),
                })
            }
        }
    }
    Ok(spec_dir)
}

/// Writes an agent's prompt file with `create_new`: the one file that must exist before
/// the agent starts (its logs are created by the log tasks meanwhile).
pub fn write_prompt_file(paths: &AgentPaths, prompt: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&paths.prompt)?;
    file.write_all(prompt.as_bytes())
}

/// The last non-empty line of a log file (at most 512 bytes of it), for error messages.
pub fn last_line(path: &Path) -> Option<String> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(2048);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?.trim();
    Some(truncate_utf8(line, 512).0.to_string())
}

/// At most `max` bytes of `text`, cut at a character boundary, and whether it was cut.
pub fn truncate_utf8(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// What was read of an agent's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// At most `max_bytes` bytes, cut at a character boundary (invalid UTF-8 replaced).
    pub text: String,
    /// The file the response came from.
    pub path: PathBuf,
    /// Its full size; the bytes beyond `text` stay in the file.
    pub total_bytes: u64,
    pub truncated: bool,
}

/// Reads the head of an agent's response: its output file if it wrote one, else its stdout
/// log. Reads only what will be stored, never the whole file.
pub fn read_response(paths: &AgentPaths, max_bytes: u64) -> std::io::Result<Response> {
    let path = if paths.output.exists() {
        &paths.output
    } else {
        &paths.stdout
    };
    let file = File::open(path)?;
    let total_bytes = file.metadata()?.len();
    // A few bytes more than the limit, so a character cut by the limit can be recognised.
    let mut head = Vec::new();
    file.take(max_bytes.saturating_add(4))
        .read_to_end(&mut head)?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let (kept, cut) = truncate_utf8(&text, max_bytes as usize);
    Ok(Response {
        text: kept.to_string(),
        path: path.clone(),
        total_bytes,
        truncated: cut || total_bytes > head.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_utf8("abc", 5), ("abc", false));
        assert_eq!(truncate_utf8("aé", 2), ("a", true));
        assert_eq!(truncate_utf8("aé", 3), ("aé", false));
    }

    #[test]
    fn refuses_symlinked_spec_folder() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("commands")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("commands/SPEC-1")).unwrap();
        let err = prepare_spec_dir(dir.path(), "SPEC-1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(err.contains("SPEC-1"), "{err}");
        let ok = prepare_spec_dir(dir.path(), "SPEC-2").unwrap();
        assert!(ok.is_dir());
    }

    #[test]
    fn never_follows_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "keep").unwrap();
        let paths = AgentPaths::new(dir.path(), "plan", "b1", "a");
        std::os::unix::fs::symlink(&target, &paths.prompt).unwrap();
        let err = write_prompt_file(&paths, "prompt").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn response_is_bounded_and_prefers_output_file() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AgentPaths::new(dir.path(), "plan", "b1", "a");
        std::fs::write(&paths.stdout, "READY\n").unwrap();
        let r = read_response(&paths, 100).unwrap();
        assert_eq!(r.text, "READY\n");
        assert_eq!(r.path, paths.stdout);
        std::fs::write(&paths.output, "ééééé").unwrap(); // 10 bytes
        let r = read_response(&paths, 5).unwrap();
        assert_eq!(r.text, "éé");
        assert!(r.truncated);
        assert_eq!(r.total_bytes, 10);
        assert_eq!(r.path, paths.output);
        let r = read_response(&paths, 10).unwrap();
        assert_eq!((r.text.as_str(), r.truncated), ("ééééé", false));
    }
}
