//! `speckit-digest`: an example dynamic plugin for speckit-hygiene, showing the whole
//! plugin contract: a validated config section, a scheduled job, a migration creating the
//! plugin's own table, reads of the host's tables and one-transaction writes of its own,
//! all through the SDK's storage API (the plugin never opens the database itself).
//!
//! For each SPEC under the evidence root's `consensus/` folder it writes
//! `<output_dir>/<SPEC-ID>.md`, a Markdown digest of what its consensus runs concluded:
//! per stage, the latest run's status, agents, degraded agents, agreements and conflicts,
//! and the agents' verdicts; and a `Database:` line with the SPEC's rows in the host's
//! `consensus_runs` table (how many, and the newest one's stage and time).
//!
//! ```toml
//! [plugins.digest]
//! path = "plugins/libspeckit_digest.so"
//! schedule = "0 5 * * *"
//! [plugins.digest.config]
//! output_dir = "consensus-digests"   # relative to the config file's folder
//! max_items = 10                     # agreements/conflicts listed per stage
//! specs = []                         # only these SPECs; empty: all
//! ```
//!
//! Its table, created by its migration version 1 (which the engine applies before the
//! first run and records in `hygiene_schema_versions` under the component
//! `plugin_speckit_digest`), holds one row per SPEC digested:
//!
//! ```sql
//! CREATE TABLE plugin_speckit_digest_specs (
//!     spec_id TEXT PRIMARY KEY,
//!     digest_sha256 TEXT NOT NULL,      -- of the Markdown file on disk
//!     markdown_bytes INTEGER NOT NULL,
//!     stages INTEGER NOT NULL,          -- stages with a real synthesis
//!     runs INTEGER NOT NULL,            -- synthesis files recording a run
//!     database_runs INTEGER,            -- its consensus_runs rows; NULL: no such table
//!     updated_at TEXT NOT NULL,         -- RFC 3339, the run's host clock
//!     run_id INTEGER NOT NULL           -- the run's row in hygiene_job_runs
//! )
//! ```
//!
//! The table is named after the name the library exports (`speckit-digest`), not after
//! the `[plugins.<name>]` key: the engine gives a library the prefix
//! `speckit_plugin_sdk::table_prefix(<exported name>)`, `plugin_speckit_digest_`, and
//! refuses any write elsewhere. Two sections loading this library share the table.
//!
//! A run reads `consensus_runs` with one bound-parameter query (a database without that
//! table is a warning: the digests say so), writes the Markdown files, then upserts every
//! SPEC's row (`INSERT ... ON CONFLICT(spec_id) DO UPDATE`) in one `storage.write` batch:
//! one transaction, so the table holds all of this run's rows or, on any failure, none of
//! them (and the run fails). A SPEC whose file could not be written gets no row, so each
//! row's `digest_sha256` is that of the file on disk. Rows of SPECs no longer in the
//! evidence are kept, as their digest files are.
//!
//! It only reads evidence, never follows symbolic links, and writes each digest to a
//! temporary file that it renames into place, so a reader never sees half a digest.
//! With the run option `dry_run` it writes nothing (no file, no row) and reports what it
//! would write.

pub mod database;
pub mod markdown;
pub mod scan;

use database::{Database, DatabaseRuns, SpecRow};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use speckit_plugin_sdk::{export_plugin, parse_config, JobContext, Migration, Plugin, Report};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `[plugins.<name>.config]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DigestConfig {
    /// Where digests go; relative to the config file's folder.
    pub output_dir: PathBuf,
    /// Agreements and conflicts listed per stage (at least 1).
    pub max_items: usize,
    /// Only these SPEC-IDs; empty means every SPEC.
    pub specs: Vec<String>,
}

impl Default for DigestConfig {
    fn default() -> Self {
        Self {
            output_dir: PathBuf::from("consensus-digests"),
            max_items: 10,
            specs: Vec::new(),
        }
    }
}

impl DigestConfig {
    fn check(&self) -> Result<(), String> {
        if self.output_dir.as_os_str().is_empty() {
            return Err("output_dir must not be empty".into());
        }
        if self.max_items == 0 {
            return Err("max_items must be at least 1".into());
        }
        if let Some(bad) = self
            .specs
            .iter()
            .find(|s| s.is_empty() || s.contains(['/', '\\']) || s.starts_with('.'))
        {
            return Err(format!("specs: {bad:?} is not a SPEC-ID"));
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct Digest;

impl Plugin for Digest {
    fn validate(&self, config: &serde_json::Value) -> Result<(), String> {
        parse_config::<DigestConfig>(config)?.check()
    }

    fn run(&self, ctx: &JobContext) -> Result<Report, String> {
        let config: DigestConfig = ctx.config_as()?;
        config.check()?;
        let storage = ctx.storage().map_err(|e| {
            format!(
                "the digest keeps {} in the engine's database: {e}",
                database::specs_table()
            )
        })?;
        run_digest(ctx, &config, &storage)
    }

    fn migrations(&self) -> Vec<Migration> {
        database::migrations()
    }
}

export_plugin!(Digest, database::PLUGIN_NAME);

/// What happened to one SPEC's digest file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileOutcome {
    Written,
    Unchanged,
    WouldWrite,
    Failed,
}

impl FileOutcome {
    fn label(self) -> &'static str {
        match self {
            FileOutcome::Written => "written",
            FileOutcome::Unchanged => "unchanged",
            FileOutcome::WouldWrite => "would_write",
            FileOutcome::Failed => "failed",
        }
    }
}

/// Reads every SPEC's consensus evidence and its `consensus_runs` rows, writes (or, dry,
/// plans) its digest, then records every digest's row in one transaction.
pub fn run_digest(
    ctx: &JobContext,
    config: &DigestConfig,
    db: &dyn Database,
) -> Result<Report, String> {
    let consensus_dir = ctx.evidence_root.join("consensus");
    let output_dir = ctx.resolve(&config.output_dir);
    let dry_run = ctx.flag("dry_run");
    let table = database::specs_table();
    if !consensus_dir.is_dir() {
        let mut report = Report::new(format!(
            "no consensus evidence: {} is not a folder",
            consensus_dir.display()
        ))
        .with_data(json!({ "specs": 0, "consensus_dir": consensus_dir, "table": table, "rows_written": 0 }));
        report
            .warnings
            .push(format!("{} does not exist", consensus_dir.display()));
        return Ok(report);
    }
    let scan::SpecDirs {
        dirs,
        links: skipped_links,
    } = scan::spec_dirs(&consensus_dir)
        .map_err(|e| format!("cannot list {}: {e}", consensus_dir.display()))?;
    let mut report = Report::default();
    for link in &skipped_links {
        report.warnings.push(format!(
            "{}: a symbolic link, not followed",
            consensus_dir.join(link).display()
        ));
    }
    let mut counts = Counts::default();
    let mut specs = Vec::new();
    for (spec_id, dir) in dirs {
        if !config.specs.is_empty() && !config.specs.contains(&spec_id) {
            continue;
        }
        match scan::read_spec(&spec_id, &dir) {
            Ok(spec) => specs.push(spec),
            Err(e) => report
                .errors
                .push(format!("cannot read {}: {e}", dir.display())),
        }
    }

    // The database first: a failing read fails the run before any file is written.
    let spec_ids: Vec<String> = specs.iter().map(|s| s.spec_id.clone()).collect();
    let has_runs_table = database::has_consensus_runs(db)?;
    let mut runs_by_spec = if has_runs_table {
        database::consensus_runs(db, &spec_ids)?
    } else {
        report.warnings.push(format!(
            "the database has no {} table (not created by the host yet?): no database runs read",
            database::CONSENSUS_RUNS
        ));
        BTreeMap::new()
    };

    if !dry_run && !specs.is_empty() {
        fs::create_dir_all(&output_dir)
            .map_err(|e| format!("cannot create output_dir {}: {e}", output_dir.display()))?;
    }
    let mut latest_statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut rows = Vec::new();
    let mut per_spec = serde_json::Map::new();
    for spec in &specs {
        let dir = &spec.dir;
        counts.specs += 1;
        counts.synthesis_files += spec.syntheses.len();
        counts.verdict_files += spec.verdicts.len();
        counts.templates += spec.syntheses.iter().filter(|s| s.template).count();
        for (file, cause) in &spec.unreadable {
            counts.unreadable += 1;
            report
                .warnings
                .push(format!("{}: {cause}", dir.join(file).display()));
        }
        let mut spec_stages = 0;
        let mut spec_runs = 0;
        for stage in scan::stages(spec) {
            spec_runs += stage.runs;
            if let Some(latest) = stage.latest {
                spec_stages += 1;
                *latest_statuses.entry(latest.status.clone()).or_default() += 1;
            }
        }
        counts.stages += spec_stages;
        let database_runs = if has_runs_table {
            runs_by_spec
                .remove(&spec.spec_id)
                .unwrap_or(DatabaseRuns::Rows {
                    count: 0,
                    latest: None,
                })
        } else {
            DatabaseRuns::NoTable
        };
        counts.database_runs += database_runs.count().unwrap_or(0);
        let text = markdown::render(spec, config.max_items, &database_runs);
        let target = output_dir.join(format!("{}.md", spec.spec_id));
        let outcome = if fs::read(&target).is_ok_and(|old| old == text.as_bytes()) {
            FileOutcome::Unchanged
        } else if dry_run {
            FileOutcome::WouldWrite
        } else {
            match write_atomically(&target, text.as_bytes()) {
                Ok(()) => FileOutcome::Written,
                Err(e) => {
                    report
                        .errors
                        .push(format!("cannot write {}: {e}", target.display()));
                    FileOutcome::Failed
                }
            }
        };
        match outcome {
            FileOutcome::Written => counts.written += 1,
            FileOutcome::Unchanged => counts.unchanged += 1,
            FileOutcome::WouldWrite => counts.would_write += 1,
            FileOutcome::Failed => {}
        }
        let row = SpecRow {
            spec_id: spec.spec_id.clone(),
            digest_sha256: hex::encode(Sha256::digest(text.as_bytes())),
            markdown_bytes: text.len() as u64,
            stages: spec_stages as u64,
            runs: spec_runs as u64,
            database_runs: database_runs.count(),
        };
        per_spec.insert(
            spec.spec_id.clone(),
            json!({
                "digest": outcome.label(),
                "file": target,
                "digest_sha256": row.digest_sha256,
                "markdown_bytes": row.markdown_bytes,
                "stages": row.stages,
                "runs": row.runs,
                "consensus_runs": database_runs.to_json(),
            }),
        );
        // No row for a digest that is not on disk: the table says what the files hold.
        if outcome != FileOutcome::Failed {
            rows.push(row);
        }
    }

    let row_state = if dry_run {
        counts.rows_would_write = rows.len() as u64;
        "would_write"
    } else if rows.is_empty() {
        "none"
    } else {
        let statements = database::upsert_statements(&rows, &ctx.now_rfc3339, ctx.run_id);
        match db.write(statements) {
            Ok(changes) => {
                counts.rows_written = changes.iter().sum();
                "written"
            }
            Err(e) => {
                report.errors.push(format!(
                    "cannot record {} SPEC rows in {table} (one transaction, none kept): {e}",
                    rows.len()
                ));
                "not_written"
            }
        }
    };
    for entry in per_spec.values_mut() {
        let state = if entry["digest"] == FileOutcome::Failed.label() {
            "none"
        } else {
            row_state
        };
        entry["row"] = json!(state);
    }

    let not_ok: u64 = latest_statuses
        .iter()
        .filter(|(status, _)| status.as_str() != "ok")
        .map(|(_, n)| n)
        .sum();
    report.summary = format!(
        "digested {} SPECs ({} stages, {not_ok} not ok) from {} files and {} database runs; \
         {} {}, {} unchanged; {} rows {} {table}",
        counts.specs,
        counts.stages,
        counts.synthesis_files + counts.verdict_files,
        counts.database_runs,
        if dry_run {
            counts.would_write
        } else {
            counts.written
        },
        if dry_run {
            "would be written"
        } else {
            "written"
        },
        counts.unchanged,
        if dry_run {
            counts.rows_would_write
        } else {
            counts.rows_written
        },
        if dry_run {
            "would be written to"
        } else {
            "written to"
        },
    );
    report.data = json!({
        "dry_run": dry_run,
        "consensus_dir": consensus_dir,
        "output_dir": output_dir,
        "specs": counts.specs,
        "stages": counts.stages,
        "synthesis_files": counts.synthesis_files,
        "verdict_files": counts.verdict_files,
        "templates": counts.templates,
        "unreadable_files": counts.unreadable,
        "skipped_links": skipped_links.len(),
        "digests_written": counts.written,
        "digests_would_write": counts.would_write,
        "digests_unchanged": counts.unchanged,
        "latest_status_counts": latest_statuses,
        "table": table,
        "rows_written": counts.rows_written,
        "rows_would_write": counts.rows_would_write,
        "consensus_runs_table": has_runs_table,
        "consensus_runs_rows": counts.database_runs,
        "per_spec": per_spec,
    });
    Ok(report)
}

#[derive(Debug, Default)]
struct Counts {
    specs: usize,
    stages: usize,
    synthesis_files: usize,
    verdict_files: usize,
    templates: usize,
    unreadable: usize,
    written: usize,
    would_write: usize,
    unchanged: usize,
    /// Rows the engine reported changed by the batch.
    rows_written: u64,
    rows_would_write: u64,
    database_runs: u64,
}

/// Writes to a temporary file beside `target`, syncs it, and renames it into place.
fn write_atomically(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = target.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};
    use speckit_plugin_sdk::Statement;

    /// An in-memory database in place of the engine's: the same SQL, a write batch in one
    /// transaction. No sandbox: the CLI's tests run the plugin against the real engine.
    struct Sqlite(rusqlite::Connection);

    impl Sqlite {
        /// With the digest's migrations applied, and the host's `consensus_runs` when asked.
        fn new(host_tables: bool) -> Self {
            let conn = rusqlite::Connection::open_in_memory().unwrap();
            if host_tables {
                conn.execute_batch(
                    "CREATE TABLE consensus_runs (id INTEGER PRIMARY KEY AUTOINCREMENT, \
                     spec_id TEXT NOT NULL, stage TEXT NOT NULL, run_timestamp INTEGER NOT NULL, \
                     consensus_ok BOOLEAN NOT NULL, degraded BOOLEAN DEFAULT 0, synthesis_json TEXT)",
                )
                .unwrap();
            }
            for m in database::migrations() {
                conn.execute_batch(&m.sql).unwrap();
            }
            Self(conn)
        }

        fn count(&self, sql: &str) -> i64 {
            self.0.query_row(sql, [], |r| r.get(0)).unwrap()
        }
    }

    fn to_sql(v: &Value) -> rusqlite::types::Value {
        use rusqlite::types::Value as V;
        match v {
            Value::Null => V::Null,
            Value::Bool(b) => V::Integer(i64::from(*b)),
            Value::Number(n) => n
                .as_i64()
                .map(V::Integer)
                .unwrap_or(V::Real(n.as_f64().unwrap())),
            Value::String(s) => V::Text(s.clone()),
            other => V::Text(other.to_string()),
        }
    }

    impl Database for Sqlite {
        fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Map<String, Value>>, String> {
            let mut st = self.0.prepare(sql).map_err(|e| e.to_string())?;
            let names: Vec<String> = st.column_names().map(|n| n.to_string()).collect();
            let rows = st
                .query_map(
                    rusqlite::params_from_iter(params.iter().map(to_sql)),
                    |row| {
                        let mut out = Map::new();
                        for (i, name) in names.iter().enumerate() {
                            use rusqlite::types::ValueRef as R;
                            let value = match row.get_ref(i)? {
                                R::Null => Value::Null,
                                R::Integer(n) => json!(n),
                                R::Real(f) => json!(f),
                                R::Text(t) => json!(String::from_utf8_lossy(t)),
                                R::Blob(b) => json!(hex::encode(b)),
                            };
                            out.insert(name.clone(), value);
                        }
                        Ok(out)
                    },
                )
                .map_err(|e| e.to_string())?;
            rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
        }

        fn write(&self, statements: Vec<Statement>) -> Result<Vec<u64>, String> {
            let tx = self.0.unchecked_transaction().map_err(|e| e.to_string())?;
            let mut changes = Vec::new();
            for s in &statements {
                let n = tx
                    .execute(
                        &s.sql,
                        rusqlite::params_from_iter(s.params.iter().map(to_sql)),
                    )
                    .map_err(|e| format!("{e}; nothing was written"))?;
                changes.push(n as u64);
            }
            tx.commit().map_err(|e| e.to_string())?;
            Ok(changes)
        }
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn context(root: &Path, args: serde_json::Value) -> JobContext {
        JobContext {
            plugin: "digest".into(),
            job: "digest".into(),
            args,
            evidence_root: root.join("evidence"),
            config_dir: root.to_path_buf(),
            ..JobContext::default()
        }
    }

    fn tree(root: &Path) {
        let c = root.join("evidence/consensus");
        write(
            &c.join("SPEC-A/spec-plan_synthesis.json"),
            r#"{"stage":"spec-plan","status":"ok","timestamp":"2025-10-12T14:44:00Z",
                "consensus":{"agreements":["use WAL"],"conflicts":[]}}"#,
        );
        write(
            &c.join("SPEC-A/spec-unlock_synthesis.json"),
            r#"{"stage":"spec-unlock","status":"hold","consensus":{"agreements":[]}}"#,
        );
        write(&c.join("SPEC-A/broken_synthesis.json"), "{ not json");
        write(
            &c.join("SPEC-B/plan_verdict.json"),
            r#"{"stage":"plan","proposals":[{"agent_name":"gemini","content":""}]}"#,
        );
        write(&c.join("stray.json"), "{}");
    }

    #[test]
    fn writes_one_digest_per_spec_then_leaves_unchanged_ones_alone() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let db = Sqlite::new(true);
        let ctx = context(dir.path(), serde_json::Value::Null);
        let report = run_digest(&ctx, &DigestConfig::default(), &db).unwrap();
        assert_eq!(report.data["specs"], 2, "{report:?}");
        assert_eq!(report.data["digests_written"], 2);
        assert_eq!(report.data["unreadable_files"], 1);
        assert_eq!(report.data["latest_status_counts"]["hold"], 1);
        assert!(report.errors.is_empty());
        assert!(
            report.warnings[0].contains("broken_synthesis.json"),
            "{:?}",
            report.warnings
        );
        let a = fs::read_to_string(dir.path().join("consensus-digests/SPEC-A.md")).unwrap();
        assert!(a.contains("| unlock | - | hold |"), "{a}");
        assert!(a.contains("- use WAL"), "{a}");

        let again = run_digest(&ctx, &DigestConfig::default(), &db).unwrap();
        assert_eq!(again.data["digests_written"], 0);
        assert_eq!(again.data["digests_unchanged"], 2);
    }

    #[test]
    fn a_dry_run_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let db = Sqlite::new(true);
        let ctx = context(dir.path(), json!({"dry_run": true}));
        let report = run_digest(&ctx, &DigestConfig::default(), &db).unwrap();
        assert_eq!(report.data["digests_would_write"], 2);
        assert_eq!(report.data["rows_would_write"], 2);
        assert_eq!(report.data["rows_written"], 0);
        assert_eq!(report.data["per_spec"]["SPEC-A"]["row"], "would_write");
        assert!(!dir.path().join("consensus-digests").exists());
        assert_eq!(
            db.count("SELECT count(*) FROM plugin_speckit_digest_specs"),
            0
        );
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let outside = dir.path().join("outside");
        write(&outside.join("secret_synthesis.json"), r#"{"status":"ok"}"#);
        std::os::unix::fs::symlink(&outside, dir.path().join("evidence/consensus/SPEC-LINK"))
            .unwrap();
        std::os::unix::fs::symlink(
            outside.join("secret_synthesis.json"),
            dir.path()
                .join("evidence/consensus/SPEC-A/linked_synthesis.json"),
        )
        .unwrap();
        let db = Sqlite::new(true);
        let report = run_digest(
            &context(dir.path(), json!(null)),
            &DigestConfig::default(),
            &db,
        )
        .unwrap();
        assert_eq!(report.data["specs"], 2);
        assert_eq!(report.data["skipped_links"], 1);
        assert!(!dir.path().join("consensus-digests/SPEC-LINK.md").exists());
        let a = fs::read_to_string(dir.path().join("consensus-digests/SPEC-A.md")).unwrap();
        assert!(
            a.contains("`linked_synthesis.json`: a symbolic link"),
            "{a}"
        );
    }

    #[test]
    fn the_config_is_checked() {
        let plugin = Digest;
        assert!(plugin.validate(&json!({})).is_ok());
        assert!(plugin.validate(&json!(null)).is_ok());
        let err = plugin.validate(&json!({"max_items": 0})).unwrap_err();
        assert!(err.contains("max_items"), "{err}");
        let err = plugin.validate(&json!({"output": "x"})).unwrap_err();
        assert!(err.contains("unknown field `output`"), "{err}");
        let err = plugin.validate(&json!({"specs": ["../x"]})).unwrap_err();
        assert!(err.contains("not a SPEC-ID"), "{err}");
    }

    #[test]
    fn a_missing_consensus_folder_is_a_warning_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::new(true);
        let report = run_digest(
            &context(dir.path(), json!(null)),
            &DigestConfig::default(),
            &db,
        )
        .unwrap();
        assert_eq!(report.data["specs"], 0);
        assert_eq!(report.warnings.len(), 1);
    }

    fn sha256_of(path: &Path) -> String {
        hex::encode(Sha256::digest(fs::read(path).unwrap()))
    }

    #[test]
    fn the_table_is_the_libraries_own_and_versioned_from_one() {
        assert_eq!(database::specs_table(), "plugin_speckit_digest_specs");
        assert!(database::specs_table()
            .starts_with(&speckit_plugin_sdk::table_prefix(database::PLUGIN_NAME)));
        let migrations = Digest.migrations();
        assert_eq!(migrations.len(), 1);
        assert_eq!(migrations[0].version, 1);
        assert!(migrations[0]
            .sql
            .contains("CREATE TABLE plugin_speckit_digest_specs"));
    }

    #[test]
    fn rows_match_the_files_and_the_database_runs_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let db = Sqlite::new(true);
        db.0.execute_batch(
            "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok, degraded) VALUES \
               ('SPEC-A', 'plan', 1760280240000, 1, 0), \
               ('SPEC-A', 'unlock', 1760287423000, 0, 1), \
               ('SPEC-A', 'tasks', 1760280000000, 1, 0), \
               ('SPEC-OTHER', 'plan', 1, 1, 0)",
        )
        .unwrap();
        let mut ctx = context(dir.path(), json!(null));
        ctx.run_id = 7;
        ctx.now_rfc3339 = "2025-11-01T05:00:00+00:00".into();
        let report = run_digest(&ctx, &DigestConfig::default(), &db).unwrap();
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(report.data["rows_written"], 2, "{report:?}");
        assert_eq!(report.data["consensus_runs_rows"], 3);
        let a_spec = &report.data["per_spec"]["SPEC-A"];
        assert_eq!(a_spec["consensus_runs"]["rows"], 3);
        assert_eq!(a_spec["consensus_runs"]["latest"]["stage"], "unlock");
        assert_eq!(a_spec["row"], "written");
        let a = dir.path().join("consensus-digests/SPEC-A.md");
        let a_text = fs::read_to_string(&a).unwrap();
        assert!(
            a_text.contains(
                "Database: 3 `consensus_runs` rows; latest: unlock at 2025-10-12T16:43:43Z (consensus not ok, degraded)."
            ),
            "{a_text}"
        );
        let b_text = fs::read_to_string(dir.path().join("consensus-digests/SPEC-B.md")).unwrap();
        assert!(
            b_text.contains("Database: 0 `consensus_runs` rows."),
            "{b_text}"
        );

        let row: (String, i64, i64, i64, Option<i64>, String, i64) = db
            .0
            .query_row(
                "SELECT digest_sha256, markdown_bytes, stages, runs, database_runs, updated_at, run_id \
                 FROM plugin_speckit_digest_specs WHERE spec_id = 'SPEC-A'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
            )
            .unwrap();
        assert_eq!(row.0, sha256_of(&a));
        assert_eq!(row.0, a_spec["digest_sha256"]);
        assert_eq!(row.1 as usize, a_text.len());
        // plan and unlock have real runs; broken_synthesis.json was not read.
        assert_eq!((row.2, row.3, row.4), (2, 2, Some(3)));
        assert_eq!((row.5.as_str(), row.6), ("2025-11-01T05:00:00+00:00", 7));

        // A new database row changes the digest; the rerun updates both rows in place.
        db.0.execute_batch(
            "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok) \
             VALUES ('SPEC-B', 'plan', 1760280240000, 1)",
        )
        .unwrap();
        ctx.run_id = 8;
        let again = run_digest(&ctx, &DigestConfig::default(), &db).unwrap();
        assert_eq!(again.data["rows_written"], 2, "{again:?}");
        assert_eq!(again.data["digests_written"], 1);
        assert_eq!(
            db.count("SELECT count(*) FROM plugin_speckit_digest_specs"),
            2
        );
        assert_eq!(
            db.count("SELECT count(*) FROM plugin_speckit_digest_specs WHERE run_id = 8"),
            2
        );
        let b = dir.path().join("consensus-digests/SPEC-B.md");
        let b_sha: String =
            db.0.query_row(
                "SELECT digest_sha256 FROM plugin_speckit_digest_specs WHERE spec_id = 'SPEC-B'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(b_sha, sha256_of(&b));
        assert!(fs::read_to_string(&b)
            .unwrap()
            .contains("Database: 1 `consensus_runs` row;"));
    }

    #[test]
    fn without_a_consensus_runs_table_the_digests_say_so_and_the_run_warns() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let db = Sqlite::new(false);
        let report = run_digest(
            &context(dir.path(), json!(null)),
            &DigestConfig::default(),
            &db,
        )
        .unwrap();
        assert!(report.errors.is_empty(), "{report:?}");
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("no consensus_runs table")),
            "{:?}",
            report.warnings
        );
        assert_eq!(report.data["consensus_runs_table"], false);
        assert_eq!(report.data["rows_written"], 2);
        let a = fs::read_to_string(dir.path().join("consensus-digests/SPEC-A.md")).unwrap();
        assert!(a.contains("Database: no `consensus_runs` table."), "{a}");
        assert_eq!(
            db.count(
                "SELECT count(*) FROM plugin_speckit_digest_specs WHERE database_runs IS NULL"
            ),
            2
        );
    }

    #[test]
    fn a_refused_batch_fails_the_run_and_names_the_table() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let db = Sqlite::new(true);
        // The second row's insert fails: the batch, the first row included, is rolled back.
        db.0.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON plugin_speckit_digest_specs \
             WHEN NEW.spec_id = 'SPEC-B' BEGIN SELECT RAISE(ABORT, 'refused on purpose'); END",
        )
        .unwrap();
        let report = run_digest(
            &context(dir.path(), json!(null)),
            &DigestConfig::default(),
            &db,
        )
        .unwrap();
        assert_eq!(report.errors.len(), 1, "{report:?}");
        assert!(
            report.errors[0].contains("cannot record 2 SPEC rows in plugin_speckit_digest_specs"),
            "{}",
            report.errors[0]
        );
        assert!(
            report.errors[0].contains("refused on purpose"),
            "{}",
            report.errors[0]
        );
        assert_eq!(report.data["rows_written"], 0);
        assert_eq!(report.data["per_spec"]["SPEC-A"]["row"], "not_written");
        assert_eq!(
            db.count("SELECT count(*) FROM plugin_speckit_digest_specs"),
            0
        );
    }

    #[test]
    fn a_context_without_storage_fails_the_run_naming_the_table() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let err = Digest.run(&context(dir.path(), json!(null))).unwrap_err();
        assert!(err.contains("plugin_speckit_digest_specs"), "{err}");
        assert!(err.contains("no storage"), "{err}");
    }
}
