//! Dynamic plugins run out of process and reach storage only through the engine: a
//! plugin that segfaults, aborts, calls `exit(0)`, allocates without bound or prints to
//! stdout fails its own job with the cause (or, printing, succeeds) and nothing else; a
//! plugin writes its own tables in one transaction and is refused, with nothing written,
//! when it touches the host's, the engine's or another plugin's table.

#[path = "support/sample_section.rs"]
mod sample_section;
use sample_section::EvidencePlugin;
use serde_json::Value;
use speckit_engine::dynamic::HostCommand;
use speckit_engine::engine::JobRun;
use speckit_engine::events::JobOutcome;
use speckit_engine::plugin::JobTrigger;
use speckit_engine::{Engine, EngineOptions};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        speckit_testkit::artifacts::install_library(
            dir.path(),
            "speckit_test_probe",
            "libprobe.so",
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> PathBuf {
        self.path().join("speckit.toml")
    }

    /// One `[plugins.<name>]` per entry: (name, extra keys, config body).
    fn write(&self, plugins: &[(&str, &str, &str)]) {
        let mut body = String::from(
            "[storage]\ndatabase_path = \"consensus.db\"\n[evidence]\nroot = \"evidence\"\n\
             ",
        );
        for (name, extra, config) in plugins {
            body.push_str(&format!(
                "[plugins.{name}]\npath = \"plugins/libprobe.so\"\n{extra}\n[plugins.{name}.config]\n{config}\n"
            ));
        }
        fs::write(self.config(), body).unwrap();
    }

    async fn start(&self) -> Engine {
        let mut options = EngineOptions::new(self.config());
        options.env = Vec::new();
        options.plugin_host = HostCommand::new(env!("CARGO_BIN_EXE_speckit-plugin-host"));
        Engine::start(options, vec![Arc::new(EvidencePlugin)])
            .await
            .unwrap()
    }
}

async fn run(engine: &Engine, job: &str) -> JobRun {
    engine
        .run_job(job, JobTrigger::Manual, Value::Null)
        .await
        .unwrap()
}

async fn count(engine: &Engine, sql: &'static str) -> i64 {
    engine
        .storage()
        .read(move |conn| conn.query_row(sql, [], |r| r.get(0)))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_plugin_that_crashes_exits_or_runs_out_of_memory_fails_its_job_with_the_cause() {
    let ws = Workspace::new();
    ws.write(&[
        ("segv", "", "mode = \"segfault\""),
        ("aborts", "", "mode = \"abort\""),
        ("exits", "", "mode = \"exit\""),
        ("hog", "memory_limit_mib = 256", "mode = \"allocate\""),
        ("chatty", "", "mode = \"print\""),
        ("fine", "", "mode = \"ok\""),
    ]);
    let engine = ws.start().await;
    assert!(
        engine.registry().failures().is_empty(),
        "{:?}",
        engine.registry().failures()
    );
    let expected = [
        ("segv", "crashed: its host process was killed by SIGSEGV"),
        ("aborts", "crashed: its host process was killed by SIGABRT"),
        (
            "exits",
            "crashed: its host process exited with status 0 in the middle of a call",
        ),
        (
            "hog",
            "after reaching its memory limit (memory_limit_mib = 256)",
        ),
    ];
    // Twice each: a crashed host is replaced for the next call.
    for _ in 0..2 {
        for (job, cause) in expected {
            let run = run(&engine, job).await;
            assert_eq!(run.outcome, JobOutcome::Failed, "{job}");
            let error = run.error.unwrap();
            assert!(error.contains(&format!("plugin {job} (")), "{error}");
            assert!(error.contains(cause), "{job}: {error}");
        }
        // A plugin printing to stdout does not corrupt the engine's pipe.
        let chatty = run(&engine, "chatty").await;
        assert_eq!(chatty.outcome, JobOutcome::Succeeded, "{:?}", chatty.error);
        assert_eq!(run(&engine, "fine").await.outcome, JobOutcome::Succeeded);
    }
    // Every run finished in the history: none left at `running`.
    let running = count(
        &engine,
        "SELECT count(*) FROM hygiene_job_runs WHERE outcome = 'running'",
    )
    .await;
    let failed = count(
        &engine,
        "SELECT count(*) FROM hygiene_job_runs WHERE outcome = 'failed'",
    )
    .await;
    assert_eq!((running, failed), (0, 8));
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_crash_in_validate_is_a_load_failure_and_the_rest_loads() {
    let ws = Workspace::new();
    ws.write(&[("vsegv", "", "validate = \"segfault\""), ("fine", "", "")]);
    let engine = ws.start().await;
    let failures = engine.registry().failures();
    let failure = failures.iter().find(|f| f.name == "vsegv").unwrap();
    assert!(
        failure.error.contains(
            "validating [plugins.vsegv.config]: crashed: its host process was killed by SIGSEGV"
        ),
        "{}",
        failure.error
    );
    assert!(engine.registry().get("vsegv").is_none());
    assert_eq!(run(&engine, "fine").await.outcome, JobOutcome::Succeeded);
    engine.shutdown(Duration::from_secs(5)).await;
}

fn storage_config(writes: &[&str], inserts: u64, query: &str) -> String {
    let writes: Vec<String> = writes.iter().map(|w| format!("{w:?}")).collect();
    format!(
        "mode = \"storage\"\nwrites = [{}]\ninserts = {inserts}\nquery = {query:?}\n",
        writes.join(", ")
    )
}

#[tokio::test]
async fn a_plugin_writes_its_own_tables_in_one_transaction_and_reads_the_hosts() {
    let ws = Workspace::new();
    ws.write(&[(
        "notes",
        "",
        &storage_config(
            &["INSERT INTO plugin_probe_notes (note) VALUES ('first')"],
            3,
            "SELECT count(*) AS runs FROM consensus_runs",
        ),
    )]);
    let engine = ws.start().await;
    let run = run(&engine, "notes").await;
    assert_eq!(run.outcome, JobOutcome::Succeeded, "{:?}", run.error);
    let data = run.report.unwrap().data;
    assert_eq!(data["writes"]["changes"], serde_json::json!([1]), "{data}");
    assert_eq!(
        data["inserts"]["changes"],
        serde_json::json!([1, 1, 1]),
        "{data}"
    );
    assert_eq!(
        data["query"]["rows"],
        serde_json::json!([{"runs": 0}]),
        "{data}"
    );
    assert_eq!(
        count(&engine, "SELECT count(*) FROM plugin_probe_notes").await,
        4
    );
    // The table came from the plugin's migration, versioned in the engine's table.
    assert_eq!(
        count(
            &engine,
            "SELECT version FROM hygiene_schema_versions WHERE component = 'plugin_probe'"
        )
        .await,
        1
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn writes_to_any_table_but_its_own_are_refused_and_nothing_is_written() {
    let ws = Workspace::new();
    let own = "INSERT INTO plugin_probe_notes (note) VALUES ('kept only if all succeed')";
    let attempts = [
        ("upstream", "INSERT INTO consensus_runs (spec_id, stage, run_timestamp, consensus_ok) VALUES ('SPEC-X', 'plan', 0, 1)", "insert into table consensus_runs"),
        ("engine", "DELETE FROM hygiene_job_runs", "delete from table hygiene_job_runs"),
        ("other", "INSERT INTO plugin_digest_notes VALUES (1)", "plugin_digest_notes"),
        ("schema", "CREATE TABLE plugin_probe_extra (x)", "schema changes belong in the plugin's migrations"),
        ("pragma", "PRAGMA user_version = 99", "pragma user_version is not allowed"),
        ("commit", "COMMIT", "BEGIN, COMMIT"),
    ];
    let configs: Vec<(String, String)> = attempts
        .iter()
        .map(|(name, sql, _)| (format!("bad_{name}"), storage_config(&[own, sql], 0, "")))
        .collect();
    let sections: Vec<(&str, &str, &str)> = configs
        .iter()
        .map(|(name, config)| (name.as_str(), "", config.as_str()))
        .collect();
    ws.write(&sections);
    let engine = ws.start().await;
    let user_version_before = count(&engine, "PRAGMA user_version").await;
    let runs_before = count(&engine, "SELECT count(*) FROM hygiene_job_runs").await;
    for (name, _, reason) in attempts {
        let run = run(&engine, &format!("bad_{name}")).await;
        let data = run.report.unwrap().data;
        let error = data["writes"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains("statement 2 of 2"), "{name}: {data}");
        assert!(error.contains(reason), "{name}: {error}");
        assert!(error.contains("nothing was written"), "{name}: {error}");
    }
    // The plugin's own insert, first in each batch, was rolled back with the batch.
    assert_eq!(
        count(&engine, "SELECT count(*) FROM plugin_probe_notes").await,
        0
    );
    assert_eq!(
        count(&engine, "SELECT count(*) FROM consensus_runs").await,
        0
    );
    assert_eq!(
        count(&engine, "PRAGMA user_version").await,
        user_version_before
    );
    // Only the six runs' own history rows were added.
    assert_eq!(
        count(&engine, "SELECT count(*) FROM hygiene_job_runs").await,
        runs_before + 6
    );
    engine.shutdown(Duration::from_secs(5)).await;
}
