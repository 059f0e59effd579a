//! Evidence trees: `commands/<SPEC>/` and `consensus/<SPEC>/` with files named the way
//! upstream names them (timestamps in several styles) and mtimes set to their age.

use chrono::{DateTime, Duration, Utc};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One SPEC's evidence to generate.
#[derive(Debug, Clone)]
pub struct SpecEvidence {
    pub spec_id: String,
    /// Files per folder (commands and consensus each).
    pub files_per_kind: usize,
    /// Bytes per file (approximate JSON padding).
    pub file_bytes: usize,
    /// Age of the oldest file; files are spread evenly from there up to `newest_age`.
    pub oldest_age: Duration,
    pub newest_age: Duration,
}

/// A file that was written.
#[derive(Debug, Clone)]
pub struct GeneratedFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub made_at: DateTime<Utc>,
}

const STAGES: [&str; 4] = ["plan", "tasks", "implement", "validate"];
const AGENTS: [&str; 3] = ["gemini", "claude", "gpt_pro"];

/// Writes the evidence of each SPEC under `root` as of `now`; returns every file.
pub fn generate(
    root: &Path,
    specs: &[SpecEvidence],
    now: DateTime<Utc>,
) -> std::io::Result<Vec<GeneratedFile>> {
    let mut out = Vec::new();
    for spec in specs {
        let commands = root.join("commands").join(&spec.spec_id);
        let consensus = root.join("consensus").join(&spec.spec_id);
        fs::create_dir_all(&commands)?;
        fs::create_dir_all(&consensus)?;
        let n = spec.files_per_kind.max(1);
        for i in 0..spec.files_per_kind {
            let span = spec.oldest_age - spec.newest_age;
            let age = spec.oldest_age - span * (i as i32) / (n as i32);
            let made_at = now - age;
            let stage = STAGES[i % STAGES.len()];
            // Telemetry file, timestamp style `YYYYMMDD_HHMMSS`.
            let name = format!(
                "{}_{}_telemetry_{}.json",
                spec.spec_id,
                stage,
                made_at.format("%Y%m%d_%H%M%S")
            );
            out.push(write_file(&commands.join(name), spec, stage, made_at, i)?);
            // Consensus file, timestamp style `YYYY-MM-DDTHH-MM-SSZ` per agent.
            let agent = AGENTS[i % AGENTS.len()];
            let name = format!(
                "{}_{}_{}_{}.json",
                spec.spec_id,
                stage,
                made_at.format("%Y-%m-%dT%H-%M-%SZ"),
                agent
            );
            out.push(write_file(&consensus.join(name), spec, stage, made_at, i)?);
        }
        // A synthesis per stage without a timestamp, overwritten in place (like
        // upstream's `plan_synthesis.json`).
        for stage in STAGES {
            let made_at = now - spec.newest_age;
            let path = consensus.join(format!("{}_{}_synthesis.json", spec.spec_id, stage));
            out.push(write_file(&path, spec, stage, made_at, 0)?);
        }
    }
    Ok(out)
}

fn write_file(
    path: &Path,
    spec: &SpecEvidence,
    stage: &str,
    made_at: DateTime<Utc>,
    i: usize,
) -> std::io::Result<GeneratedFile> {
    let header = format!(
        "{{\"spec_id\":\"{}\",\"stage\":\"{}\",\"timestamp\":\"{}\",\"seq\":{},\"payload\":\"",
        spec.spec_id,
        stage,
        made_at.to_rfc3339(),
        i
    );
    let tail = "\"}\n";
    let pad = spec.file_bytes.saturating_sub(header.len() + tail.len());
    let mut body = String::with_capacity(spec.file_bytes);
    body.push_str(&header);
    // Varied filler so archives compress realistically rather than to nothing.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (i as u64) ^ (path.as_os_str().len() as u64);
    for _ in 0..pad {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.push((b'a' + (x % 26) as u8) as char);
    }
    body.push_str(tail);
    let mut f = fs::File::create(path)?;
    f.write_all(body.as_bytes())?;
    f.set_modified(SystemTime::from(made_at))?;
    Ok(GeneratedFile {
        path: path.to_path_buf(),
        bytes: body.len() as u64,
        made_at,
    })
}

/// Two SPECs' consensus synthesis files in upstream's shapes (both of its field-name
/// styles), for the digest plugin's tests.
pub fn small_consensus_tree(root: &Path) {
    let c = root.join("consensus");
    fs::create_dir_all(c.join("SPEC-KIT-101")).unwrap();
    fs::create_dir_all(c.join("SPEC-KIT-102")).unwrap();
    fs::write(
        c.join("SPEC-KIT-101/spec-plan_synthesis.json"),
        r#"{"specId":"SPEC-KIT-101","stage":"spec-plan","timestamp":"2025-10-12T14:44:00Z","status":"ok",
            "agents":{"active":[{"model":"gemini"},{"model":"claude"}],"degraded":["gpt_pro"]},
            "consensus":{"agreements":["Vacuum in chunks"],"conflicts_resolved":["Chunk size"]}}"#,
    )
    .unwrap();
    fs::write(
        c.join("SPEC-KIT-101/spec-unlock_synthesis.json"),
        r#"{"stage":"spec-unlock","status":"hold","consensus":{"agreements":["Wait for lint"]}}"#,
    )
    .unwrap();
    fs::write(
        c.join("SPEC-KIT-102/plan_synthesis.json"),
        r#"{"spec_id":"SPEC-KIT-102","stage":"spec-plan","artifacts_count":3,"status":"ok",
            "created_at":"2025-11-11 02:33:20","run_id":"run_102"}"#,
    )
    .unwrap();
}
