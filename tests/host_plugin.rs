//! A host application's own plugin, added with `EngineBuilder::plugin`, gets what the
//! compiled-in ones get: its own `speckit.toml` section (defaults, typed settings, checks
//! that name the key and line, reloads), its own table through a versioned migration, and
//! a job with a default schedule that `[schedule]` can override.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use speckit_engine::events::JobOutcome;
use speckit_engine::plugin::BoxFuture;
use speckit_engine::policy::{JobSpec, Section, SectionProblems, SectionSpec};
use speckit_engine::storage::{ComponentSchema, Migration, MigrationStep};
use speckit_engine::{EngineEvent, JobContext, JobReport, Plugin, PluginError};
use speckit_hygiene::embed::{EmbedError, EngineBuilder};

const WAIT: Duration = Duration::from_secs(20);

/// `[notes]`: the host plugin's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct NotesSettings {
    /// Written into every row.
    greeting: String,
    /// Rows kept in the table (at least 1).
    keep_rows: u32,
}

impl Default for NotesSettings {
    fn default() -> Self {
        Self {
            greeting: "hello".into(),
            keep_rows: 3,
        }
    }
}

impl Section for NotesSettings {
    const NAME: &'static str = "notes";

    fn validate(&self, problems: &mut SectionProblems) {
        if self.keep_rows == 0 {
            problems.bad("keep_rows", "must be at least 1");
        }
    }
}

static NOTES_SCHEMA: ComponentSchema = ComponentSchema {
    component: "notes",
    migrations: &[Migration {
        version: 1,
        name: "notes_log",
        apply: MigrationStep::Sql(
            "CREATE TABLE IF NOT EXISTS notes_log (
                id INTEGER PRIMARY KEY,
                greeting TEXT NOT NULL,
                trigger TEXT NOT NULL
            )",
        ),
    }],
    sandbox: None,
};

/// Writes one row per run with its section's greeting, keeping `keep_rows` rows.
struct NotesPlugin;

impl Plugin for NotesPlugin {
    fn name(&self) -> &str {
        "notes"
    }
    fn version(&self) -> &str {
        "1.0.0"
    }
    fn jobs(&self) -> Vec<JobSpec> {
        // Every second, so the test sees the default schedule fire without waiting long.
        vec![JobSpec::new("note", "* * * * * *")]
    }
    fn sections(&self) -> Vec<SectionSpec> {
        vec![SectionSpec::of::<NotesSettings>()]
    }
    fn schema(&self) -> Option<&'static ComponentSchema> {
        Some(&NOTES_SCHEMA)
    }
    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<JobReport, PluginError>> {
        Box::pin(async move {
            let settings = ctx.policy.policy.section::<NotesSettings>();
            let greeting = settings.greeting.clone();
            let keep = i64::from(settings.keep_rows);
            let trigger = ctx.trigger.label().to_string();
            let rows: i64 = ctx
                .storage
                .write(move |tx| -> Result<i64, PluginError> {
                    let write = |sql: &str, params: &[&dyn rusqlite::ToSql]| {
                        tx.execute(sql, params)
                            .map_err(|e| PluginError::Failed(e.to_string()))
                    };
                    write(
                        "INSERT INTO notes_log (greeting, trigger) VALUES (?1, ?2)",
                        &[&greeting, &trigger],
                    )?;
                    write(
                        "DELETE FROM notes_log WHERE id NOT IN
                         (SELECT id FROM notes_log ORDER BY id DESC LIMIT ?1)",
                        &[&keep],
                    )?;
                    tx.query_row("SELECT count(*) FROM notes_log", [], |r| r.get(0))
                        .map_err(|e| PluginError::Failed(e.to_string()))
                })
                .await?;
            Ok(JobReport::new(
                format!("noted ({rows} rows)"),
                serde_json::json!({ "rows": rows }),
            ))
        })
    }
}

struct Workspace {
    _dir: tempfile::TempDir,
    config: PathBuf,
    database: PathBuf,
}

impl Workspace {
    fn new(body: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("speckit.toml");
        let database = dir.path().join("consensus.db");
        let ws = Self {
            _dir: dir,
            config,
            database,
        };
        ws.write(body);
        ws
    }

    /// The policy: the database in the workspace, the compiled-in jobs off, and `body`.
    fn write(&self, body: &str) {
        let text = format!(
            "[storage]\ndatabase_path = {:?}\n{body}",
            self.database.display().to_string()
        );
        std::fs::write(&self.config, text).unwrap();
    }

    fn builder(&self) -> EngineBuilder {
        EngineBuilder::new(&self.config)
            .without_builtin_plugins()
            .plugin(Arc::new(NotesPlugin))
            .watch_config(false)
            .reload_on_sighup(false)
            .env(Vec::<(String, String)>::new())
    }
}

async fn refused(builder: EngineBuilder) -> EmbedError {
    match builder.start().await {
        Ok(_) => panic!("the policy was accepted"),
        Err(e) => e,
    }
}

fn greetings(database: &Path) -> Vec<String> {
    let conn = Connection::open(database).unwrap();
    let mut stmt = conn
        .prepare("SELECT greeting FROM notes_log ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn schema_version(database: &Path, component: &str) -> Option<i64> {
    let conn = Connection::open(database).unwrap();
    conn.query_row(
        "SELECT version FROM hygiene_schema_versions WHERE component = ?1",
        [component],
        |r| r.get(0),
    )
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_plugin_has_its_own_section_table_and_schedule() {
    let ws = Workspace::new("[notes]\ngreeting = \"bonjour\"\n[schedule]\nnote = \"off\"\n");
    let handle = ws.builder().scheduler(false).start().await.unwrap();

    // Its section: the file's value over the plugin's default, with origins for `check`.
    let policy = handle.policy();
    let notes = policy.policy.section::<NotesSettings>();
    assert_eq!(notes.greeting, "bonjour");
    assert_eq!(notes.keep_rows, 3, "the plugin's default");
    assert!(policy.origins.contains_key("notes.keep_rows"));

    // Its table, created by its migration before its first job, versioned as its own.
    let run = handle
        .run_job("note", serde_json::Value::Null)
        .await
        .unwrap();
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(greetings(&ws.database), ["bonjour"]);
    assert_eq!(schema_version(&ws.database, "notes"), Some(1));

    // A reload changes what the next run reads.
    ws.write("[notes]\ngreeting = \"hola\"\nkeep_rows = 1\n[schedule]\nnote = \"off\"\n");
    let outcome = handle.reload().await;
    assert!(
        matches!(&outcome, speckit_engine::ReloadOutcome::Applied { changed_keys, .. }
            if changed_keys.contains(&"notes.greeting".to_string())),
        "{outcome:?}"
    );
    handle
        .run_job("note", serde_json::Value::Null)
        .await
        .unwrap();
    assert_eq!(greetings(&ws.database), ["hola"], "keep_rows = 1 applied");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_plugins_bad_setting_is_refused_by_key_and_line_and_changes_nothing() {
    let ws = Workspace::new("[notes]\n\nkeep_rows = 0\n");
    let err = refused(ws.builder()).await;
    let text = err.to_string();
    assert!(text.contains("notes.keep_rows (line 5)"), "{text}");
    assert!(text.contains("must be at least 1"), "{text}");
    assert!(!ws.database.exists(), "nothing was created");

    ws.write("[notes]\ngreting = \"typo\"\n");
    let err = refused(ws.builder()).await;
    assert!(matches!(err, EmbedError::Engine(_)), "{err:?}");
    assert!(err.to_string().contains("notes.greting"), "{err}");

    ws.write("[schedule]\nnotes = \"0 3 * * *\"\n");
    let err = refused(ws.builder()).await;
    let text = err.to_string();
    assert!(
        text.contains("schedule.notes") && text.contains("jobs: note"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_plugins_job_runs_on_its_default_schedule_and_schedule_overrides_it() {
    // No [schedule] entry: the plugin's default (every second) applies.
    let ws = Workspace::new("");
    let handle = ws.builder().start().await.unwrap();
    let next: Vec<_> = handle
        .next_runs()
        .into_iter()
        .filter(|r| r.job == "note")
        .collect();
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].expression, "* * * * * *");
    assert!(next[0].has_plugin);

    let mut events = handle.subscribe();
    let fired = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(EngineEvent::JobFinished {
                    job,
                    outcome,
                    report,
                    ..
                }) if job == "note" => break (outcome, report),
                Ok(_) => continue,
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("the default schedule fired");
    assert_eq!(fired.0, JobOutcome::Succeeded);
    let runs = handle.recent_runs(10).await.unwrap();
    assert!(
        runs.iter()
            .any(|r| r.job == "note" && r.trigger == "schedule"),
        "{runs:?}"
    );
    handle.shutdown().await;

    // `[schedule] note = "..."` overrides the default.
    ws.write("[schedule]\nnote = \"0 4 * * *\"\n");
    let handle = ws.builder().scheduler(false).start().await.unwrap();
    let note = handle
        .next_runs()
        .into_iter()
        .find(|r| r.job == "note")
        .unwrap();
    assert_eq!(note.expression, "0 4 * * *");
    handle.shutdown().await;
}
