//! Shared by the cleanup tests: a workspace (policy, tracker, evidence, database), a fixed
//! clock, and checks written independently of the plugin's own code (the archive reader
//! here uses the `tar`, `zstd` and `sha2` crates directly).

#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};
use speckit_engine::clock::Clock;
use speckit_engine::engine::{storage_options, EngineOptions};
use speckit_engine::policy::{load_policy, PolicySnapshot};
use speckit_engine::{Engine, Storage};
use speckit_retention::RetentionPlugin;
use speckit_testkit::evidence::{self, SpecEvidence};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The tests' "now".
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

/// A wall clock that never moves.
#[derive(Debug)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

pub const BASE_CONFIG: &str = r#"
[storage]
database_path = "db.sqlite"
[evidence]
root = "evidence"
tracker_paths = ["SPEC.md"]
[retention]
archive_after_days = 30
purge_after_days = 90
max_removal_fraction = 1.0
"#;

pub struct Ws {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub config: PathBuf,
    pub db: PathBuf,
    pub tracker: PathBuf,
}

impl Ws {
    /// A workspace whose tracker (4-column shape) lists `statuses`; `extra` is appended to
    /// the policy (later keys of a table must not repeat earlier ones).
    pub fn new(statuses: &[(&str, &str)], extra: &str) -> Ws {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("evidence");
        std::fs::create_dir_all(&root).unwrap();
        let tracker = dir.path().join("SPEC.md");
        speckit_testkit::tracker::write_four_column(&tracker, statuses).unwrap();
        let config = dir.path().join("speckit.toml");
        std::fs::write(&config, format!("{BASE_CONFIG}{extra}")).unwrap();
        Ws {
            db: dir.path().join("db.sqlite"),
            root,
            config,
            tracker,
            dir,
        }
    }

    /// Generates evidence (testkit's naming styles) as of `now`.
    pub fn generate(&self, specs: &[SpecEvidence]) -> Vec<evidence::GeneratedFile> {
        evidence::generate(&self.root, specs, now()).unwrap()
    }

    pub fn policy(&self) -> PolicySnapshot {
        load_policy(
            &self.config,
            true,
            Vec::<(String, String)>::new(),
            &speckit_retention::RetentionPlugin::policy_shape(),
        )
        .unwrap()
    }

    /// Opens the storage through the engine crate (as the engine does).
    pub fn storage(&self) -> Storage {
        Storage::open(storage_options(&self.policy().policy)).unwrap()
    }

    pub async fn engine(&self, at: DateTime<Utc>, plugin: Arc<RetentionPlugin>) -> Engine {
        let mut options = EngineOptions::new(&self.config);
        options.env = Vec::new();
        options.clock = Arc::new(FixedClock(at));
        Engine::start(options, vec![plugin]).await.unwrap()
    }
}

/// One SPEC's evidence: `n` files per kind spread from 150 to 2 days old.
pub fn spec(id: &str, n: usize) -> SpecEvidence {
    SpecEvidence {
        spec_id: id.to_string(),
        files_per_kind: n,
        file_bytes: 700,
        oldest_age: chrono::Duration::days(150),
        newest_age: chrono::Duration::days(2),
    }
}

pub use speckit_testkit::digest::sha256_hex as sha_hex;

/// Every regular file under `root` except our own `cleanup/` folder: path -> sha256.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == "cleanup" {
                continue;
            }
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                out.insert(rel, sha_hex(&std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

/// Final archives (not temporaries) under `root/cleanup/archives/`, relative paths.
pub fn archive_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let base = root.join("cleanup/archives");
    let Ok(specs) = std::fs::read_dir(&base) else {
        return out;
    };
    for s in specs {
        let s = s.unwrap();
        for f in std::fs::read_dir(s.path()).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && name.ends_with(".tar.zst") {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

/// Temporary archives left behind.
pub fn temp_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let base = root.join("cleanup/archives");
    let Ok(specs) = std::fs::read_dir(&base) else {
        return out;
    };
    for s in specs {
        for f in std::fs::read_dir(s.unwrap().path()).unwrap() {
            let name = f.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                out.push(name);
            }
        }
    }
    out
}

/// Reads an archive independently: every member's bytes, checked against the manifest
/// inside. Returns (file members path -> sha256, db members table -> jsonl text).
pub fn read_archive(path: &Path) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let file = std::fs::File::open(path).unwrap();
    let decoder = zstd::stream::read::Decoder::new(file).unwrap();
    let mut tar = tar::Archive::new(decoder);
    let mut members = BTreeMap::new();
    let mut manifest = None;
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if name == "MANIFEST.json" {
            manifest = Some(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap());
        } else {
            members.insert(name, bytes);
        }
    }
    let manifest = manifest.unwrap_or_else(|| panic!("{}: no manifest", path.display()));
    let mut files = BTreeMap::new();
    for m in manifest["files"].as_array().unwrap() {
        let p = m["path"].as_str().unwrap();
        let bytes = members
            .get(p)
            .unwrap_or_else(|| panic!("{}: {p} missing", path.display()));
        let sha = sha_hex(bytes);
        assert_eq!(
            sha,
            m["sha256"].as_str().unwrap(),
            "{}: {p}",
            path.display()
        );
        assert_eq!(bytes.len() as u64, m["size"].as_u64().unwrap());
        files.insert(p.to_string(), sha);
    }
    let mut db = BTreeMap::new();
    for d in manifest["db"].as_array().unwrap() {
        let p = d["path"].as_str().unwrap();
        let bytes = &members[p];
        assert_eq!(sha_hex(bytes), d["sha256"].as_str().unwrap());
        db.insert(
            d["table"].as_str().unwrap().to_string(),
            String::from_utf8(bytes.clone()).unwrap(),
        );
    }
    assert_eq!(
        members.len(),
        files.len() + db.len(),
        "{}: members outside the manifest",
        path.display()
    );
    (files, db)
}

/// Union of every verified archive's file members.
pub fn archived(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for a in archive_files(root) {
        out.extend(read_archive(&a).0);
    }
    out
}

/// The invariant: each original file is either in place unchanged or in a verified archive.
pub fn assert_nothing_lost(original: &BTreeMap<String, String>, root: &Path, context: &str) {
    let now = tree(root);
    let archived = archived(root);
    for (path, sha) in original {
        let in_place = now.get(path) == Some(sha);
        let in_archive = archived.get(path) == Some(sha);
        assert!(
            in_place || in_archive,
            "{context}: {path} is neither in place nor in a verified archive"
        );
    }
}

/// Rows of a table, as (key, json) sorted, read through the engine's storage.
pub fn table_rows(storage: &Storage, table: &'static str) -> Vec<String> {
    storage
        .read_blocking(move |conn| {
            let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1"))?;
            let n = stmt.column_count();
            let rows = stmt.query_map([], |row| {
                let mut cells = Vec::new();
                for i in 0..n {
                    let v: rusqlite::types::Value = row.get(i)?;
                    cells.push(format!("{v:?}"));
                }
                Ok(cells.join("|"))
            })?;
            rows.collect()
        })
        .unwrap()
}

/// The archive records, without their ids and origin: (path, members, db rows, purged?).
pub fn archive_records(storage: &Storage) -> Vec<(String, i64, i64, bool)> {
    storage
        .read_blocking(|conn| {
            let mut stmt = conn.prepare(
                "SELECT path, member_count, db_rows, purged_at IS NOT NULL FROM hygiene_archives ORDER BY path",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect()
        })
        .unwrap()
}

/// A time as the host writes it: `datetime('now')` text, or (`old`) RFC 3339.
pub fn host_time(at: DateTime<Utc>, old: bool) -> String {
    if old {
        at.to_rfc3339()
    } else {
        at.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

/// Adds upstream-shaped rows to the database: per (spec, stage, age days) a run with one
/// output, and an agent execution spawned then. In the host's formats: stage names
/// `spec-<stage>`, ms timestamps for runs and outputs, and `spawned_at`/`completed_at` as
/// SQLite's `datetime('now')` text (`2026-03-01 12:00:00`, UTC); every second execution
/// carries the RFC 3339 text of the host's older releases instead.
pub fn add_rows(storage: &Storage, rows: &[(&str, &str, i64)]) {
    let rows: Vec<(String, String, i64)> = rows
        .iter()
        .map(|(a, b, c)| {
            let stage = if b.starts_with("spec-") {
                b.to_string()
            } else {
                format!("spec-{b}")
            };
            (a.to_string(), stage, *c)
        })
        .collect();
    let at = now();
    storage
        .write_blocking(move |tx| {
            for (i, (spec, stage, age)) in rows.iter().enumerate() {
                let ts = at - chrono::Duration::days(*age);
                tx.execute(
                    "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, degraded, synthesis_json) VALUES (?1, ?2, ?3, 1, 0, ?4)",
                    rusqlite::params![spec, stage, ts.timestamp_millis() + i as i64, format!("{{\"stage\":\"{stage}\"}}")],
                )
                .map_err(|e| speckit_engine::StorageError::Other(e.to_string()))?;
                let run_id = tx.last_insert_rowid();
                tx.execute(
                    "INSERT INTO agent_outputs (run_id, agent_name, model_version, content, output_timestamp) VALUES (?1, 'gemini', 'g', ?2, ?3)",
                    rusqlite::params![run_id, format!("out {spec} {stage} {i}"), ts.timestamp_millis()],
                )
                .map_err(|e| speckit_engine::StorageError::Other(e.to_string()))?;
                tx.execute(
                    "INSERT INTO agent_executions (agent_id, spec_id, stage, phase_type, agent_name, run_id, spawned_at, completed_at, response_text) VALUES (?1, ?2, ?3, 'agent', 'gemini', ?4, ?5, ?5, ?6)",
                    rusqlite::params![format!("agent-{spec}-{i}"), spec, stage, run_id.to_string(), host_time(ts, i % 2 == 1), "x".repeat(200)],
                )
                .map_err(|e| speckit_engine::StorageError::Other(e.to_string()))?;
            }
            Ok::<_, speckit_engine::StorageError>(())
        })
        .unwrap();
}
