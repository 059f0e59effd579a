//! The demo: a realistic example workspace in a temporary folder (a speckit.toml, a SPEC
//! tracker, an evidence tree with aged files, a bloated consensus database made the way
//! the host application makes it, at the host's schema version 2), and one full pass of
//! the engine's jobs over it.

use chrono::{Duration, Utc};
use std::path::{Path, PathBuf};

use speckit_testkit::{database, evidence, tracker};

/// What the demo workspace holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoWorkspace {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub database_path: PathBuf,
    pub evidence_root: PathBuf,
    pub evidence_files: usize,
    pub evidence_bytes: u64,
    pub database_bytes: u64,
    /// Archives an earlier cleanup wrote long ago (the pass purges them).
    pub old_archives: usize,
    /// Archives an earlier cleanup wrote [`OFFLOAD_AGE_DAYS`] days ago: past
    /// `offload.after_days`, before the purge age (the pass offloads them).
    pub offload_archives: usize,
    /// The demo's `file://` offload store (a folder in the workspace).
    pub offload_store: PathBuf,
}

/// The demo policy's `offload.after_days`.
pub const OFFLOAD_AFTER_DAYS: i64 = 45;
/// How old the demo's archives to offload are.
pub const OFFLOAD_AGE_DAYS: i64 = 60;

/// SPECs of the demo and their tracker statuses.
pub const DEMO_SPECS: &[(&str, &str)] = &[
    ("SPEC-KIT-900", "Done"),
    ("SPEC-KIT-901", "In Progress"),
    ("SPEC-KIT-902", "DONE"),
    ("SPEC-KIT-903", "Backlog"),
];

/// The host application's schema version of a database (`PRAGMA user_version`), read on a
/// read-only connection. The engine never changes it; the demo shows that it did not.
pub fn host_schema_version(database: &Path) -> rusqlite::Result<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        database,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Writes the demo workspace into `dir`.
pub fn create_workspace(dir: &Path) -> std::io::Result<DemoWorkspace> {
    let now = Utc::now();
    let evidence_root = dir.join("docs/SPEC-OPS-004-integrated-coder-hooks/evidence");
    std::fs::create_dir_all(&evidence_root)?;
    let specs: Vec<evidence::SpecEvidence> = DEMO_SPECS
        .iter()
        .enumerate()
        .map(|(i, (spec, _))| evidence::SpecEvidence {
            spec_id: spec.to_string(),
            files_per_kind: 24 + 8 * i,
            file_bytes: 12_000 + 4_000 * i,
            oldest_age: Duration::days(150),
            newest_age: Duration::days(2),
        })
        .collect();
    let files = evidence::generate(&evidence_root, &specs, now)?;
    let old_archives = write_old_archives(dir, &evidence_root, now, 120)?;
    let offload_archives = write_old_archives(dir, &evidence_root, now, OFFLOAD_AGE_DAYS)?;
    let offload_store = dir.join("offload-store");
    std::fs::create_dir_all(&offload_store)?;
    tracker::write_eleven_column(&dir.join("SPEC.md"), DEMO_SPECS)?;

    let database_path = dir.join("consensus_artifacts.db");
    let runs: Vec<(&str, &str, i64)> = DEMO_SPECS
        .iter()
        .flat_map(|(spec, _)| {
            [
                (*spec, "spec-plan", 120i64),
                (*spec, "spec-tasks", 45),
                (*spec, "spec-implement", 3),
            ]
        })
        .collect();
    database::create_bloated(
        &database_path,
        40 * 1024 * 1024,
        3,
        &runs,
        now.timestamp_millis(),
    )
    .map_err(std::io::Error::other)?;

    let config_path = dir.join("speckit.toml");
    std::fs::write(
        &config_path,
        format!(
            "{DEMO_CONFIG}{}{}",
            offload_section(&offload_store),
            crate::demo_agents::agents_toml()
        ),
    )?;
    Ok(DemoWorkspace {
        old_archives,
        offload_archives,
        offload_store,
        dir: dir.to_path_buf(),
        config_path,
        database_bytes: std::fs::metadata(&database_path)?.len(),
        database_path,
        evidence_root,
        evidence_files: files.len(),
        evidence_bytes: files.iter().map(|f| f.bytes).sum(),
    })
}

const DEMO_CONFIG: &str = r#"# speckit-hygiene demo policy (see config/speckit.toml for every field).
[storage]
database_path = "consensus_artifacts.db"

[evidence]
root = "docs/SPEC-OPS-004-integrated-coder-hooks/evidence"
tracker_paths = ["SPEC.md"]
warn_mb = 0.5
limit_mb = 1.0

[retention]
archive_after_days = 30
purge_after_days = 90

[vacuum]
free_fraction_threshold = 0.1
chunk_pages = 512
"#;

/// The demo's `[offload]`: a `file://` store in the workspace (a folder on this machine
/// stands in for a bucket), with an age the demo's 60-day-old archives are past.
fn offload_section(store: &Path) -> String {
    format!(
        "\n# Old archives go to object storage (here a folder of the workspace; s3://bucket/prefix\n# for S3), and only then leave the evidence tree.\n[offload]\nafter_days = {OFFLOAD_AFTER_DAYS}\nurl = \"file://{}\"\n",
        store.display()
    )
}

/// Archives of the finished SPECs as an earlier cleanup wrote them `age_days` ago (their
/// sources long deleted): at 120 days the demo pass has old archives to purge, at 60 days
/// archives to offload. The fresh demo database has no record of them: the pass adopts
/// them (verified) and then purges or offloads them.
fn write_old_archives(
    dir: &Path,
    evidence_root: &Path,
    now: chrono::DateTime<Utc>,
    age_days: i64,
) -> std::io::Result<usize> {
    use speckit_retention::archive;
    let staging = dir.join(".demo-staging");
    let mut written = 0;
    for (spec, status) in DEMO_SPECS {
        if !status.eq_ignore_ascii_case("done") {
            continue;
        }
        let created_at = now - Duration::days(age_days);
        let generated = evidence::generate(
            &staging,
            &[evidence::SpecEvidence {
                spec_id: spec.to_string(),
                files_per_kind: 4,
                file_bytes: 8_000,
                oldest_age: Duration::days(age_days + 80),
                newest_age: Duration::days(age_days + 40),
            }],
            now,
        )?;
        let sources: Vec<archive::SourceFile> = generated
            .iter()
            .map(|f| {
                let meta = std::fs::metadata(&f.path)?;
                Ok(archive::SourceFile {
                    path: f
                        .path
                        .strip_prefix(&staging)
                        .map_err(std::io::Error::other)?
                        .to_string_lossy()
                        .into_owned(),
                    size: meta.len(),
                    mtime_ns: speckit_retention::fsutil::meta_mtime_ns(&meta),
                    identity: None,
                })
            })
            .collect::<std::io::Result<_>>()?;
        let name = archive::archive_name(spec, created_at.date_naive(), &sources, &[]);
        let relative = archive::spec_dir(spec).join(name);
        let staging_tree = speckit_retention::folder::Tree::open(&staging)?;
        let out = archive::write(archive::WriteRequest {
            tree: &staging_tree,
            relative: &relative,
            spec,
            created_at,
            files: &sources,
            db: &[],
            zstd_level: 3,
            faults: None,
            cancelled: &|| false,
        })
        .map_err(std::io::Error::other)?;
        if out.written.is_some() {
            std::fs::create_dir_all(evidence_root.join(archive::spec_dir(spec)))?;
            std::fs::rename(staging.join(&relative), evidence_root.join(&relative))?;
            written += 1;
        }
    }
    std::fs::remove_dir_all(&staging)?;
    Ok(written)
}
