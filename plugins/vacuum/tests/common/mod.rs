//! Shared helpers for the vacuum plugin's integration tests: databases in known states,
//! an engine over them, and helper processes (this test binary started again) that write
//! to or lock the database from outside the engine's process.
#![allow(dead_code)] // each test binary uses its own subset

use rusqlite::{params, Connection};
use speckit_engine::engine::JobRun;
use speckit_engine::events::JobOutcome;
use speckit_engine::{Engine, EngineOptions, JobTrigger, Plugin};
use speckit_vacuum::{FreeDiskProbe, VacuumPlugin, VacuumReport};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Writes `speckit.toml` in `dir` for `db`, with extra TOML appended (whole sections).
pub fn write_config(dir: &Path, db: &Path, extra: &str) -> PathBuf {
    let config = dir.join("speckit.toml");
    let storage = format!(
        "[storage]\ndatabase_path = {:?}\n",
        db.to_str().expect("utf-8 temp path")
    );
    let text = if extra.contains("[storage]\n") {
        extra.replacen("[storage]\n", &storage, 1)
    } else {
        format!("{storage}{extra}")
    };
    std::fs::write(&config, text).unwrap();
    config
}

/// An engine over `db` with only the vacuum plugin, reading `extra` policy TOML.
pub async fn engine(dir: &Path, db: &Path, extra: &str) -> Engine {
    engine_with(dir, db, extra, VacuumPlugin::new()).await
}

pub async fn engine_with(dir: &Path, db: &Path, extra: &str, plugin: VacuumPlugin) -> Engine {
    let config = write_config(dir, db, extra);
    let mut options = EngineOptions::new(config);
    options.env.retain(|(k, _)| !k.starts_with("SPECKIT_"));
    let plugins: Vec<Arc<dyn Plugin>> = vec![Arc::new(plugin)];
    Engine::start(options, plugins)
        .await
        .expect("engine starts")
}

/// A probe that reports `bytes` free wherever it is asked.
pub fn fixed_free_disk(bytes: u64) -> FreeDiskProbe {
    Arc::new(move |_dir: &Path| Ok(bytes))
}

pub async fn run_job(engine: &Engine, job: &str, args: serde_json::Value) -> JobRun {
    engine
        .run_job(job, JobTrigger::Manual, args)
        .await
        .expect("the job starts")
}

/// The vacuum report of a run that produced one.
pub fn report_of(run: &JobRun) -> VacuumReport {
    let report = run
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("no report; error: {:?}", run.error));
    serde_json::from_value(report.data.clone()).expect("the data is a VacuumReport")
}

pub fn assert_succeeded(run: &JobRun) {
    assert_eq!(
        run.outcome,
        JobOutcome::Succeeded,
        "job {} failed: {:?} {:?}",
        run.job,
        run.error,
        run.report.as_ref().map(|r| &r.errors)
    );
}

/// A database in `auto_vacuum = INCREMENTAL` holding `keep` agent executions and
/// `free_rows` deleted ones' worth of free pages, rows of about `row_bytes` bytes. Made in
/// a few statements so a large one is quick even in a debug build.
pub fn incremental_db(path: &Path, keep: usize, free_rows: usize, row_bytes: usize) {
    let conn = Connection::open(path).unwrap();
    // auto_vacuum must be chosen before the first table is created.
    conn.execute_batch(
        "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;",
    )
    .unwrap();
    speckit_testkit::database::create_upstream_schema(&conn).unwrap();
    insert_executions(&conn, 0, keep + free_rows, row_bytes);
    conn.execute(
        "DELETE FROM agent_executions WHERE rowid > ?1",
        params![keep as i64],
    )
    .unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
}

/// Inserts `count` agent executions numbered from `first`, in one statement.
pub fn insert_executions(conn: &Connection, first: usize, count: usize, row_bytes: usize) {
    conn.execute(
        "WITH RECURSIVE n(x) AS (SELECT ?1 UNION ALL SELECT x + 1 FROM n WHERE x < ?2)
         INSERT INTO agent_executions (agent_id, spec_id, stage, phase_type, agent_name, run_id, spawned_at, completed_at, response_text)
         SELECT printf('agent-%08d', x), printf('SPEC-KIT-%03d', x % 50), 'plan', 'agent', 'gemini', printf('run-%d', x / 3),
                '2025-10-01T00:00:00Z', '2025-10-01T00:01:00Z', printf('%d:%.*c', x, ?3, 'r')
         FROM n",
        params![first as i64, (first + count) as i64 - 1, row_bytes as i64],
    )
    .unwrap();
}

/// Every row of the upstream tables, as text, in rowid order: equal before and after
/// means every live row is intact.
pub fn upstream_rows(conn: &Connection) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["agent_executions", "consensus_runs", "agent_outputs"] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
            .unwrap();
        let columns = stmt.column_count();
        let rows = stmt
            .query_map([], |row| {
                let mut line = format!("{table}:");
                for i in 0..columns {
                    let value: rusqlite::types::Value = row.get(i)?;
                    line.push_str(&format!("{value:?}|"));
                }
                Ok(line)
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out
}

/// Page size, page count, freelist count, auto_vacuum and `integrity_check`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbState {
    pub page_size: i64,
    pub page_count: i64,
    pub freelist_count: i64,
    pub auto_vacuum: i64,
    pub integrity: Vec<String>,
}

pub fn db_state(conn: &Connection) -> DbState {
    let pragma = |name: &str| {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    let mut stmt = conn.prepare("PRAGMA integrity_check").unwrap();
    let integrity = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    DbState {
        page_size: pragma("page_size"),
        page_count: pragma("page_count"),
        freelist_count: pragma("freelist_count"),
        auto_vacuum: pragma("auto_vacuum"),
        integrity,
    }
}

/// The SHA-256 of a file, computed by a child process: a file descriptor opened and
/// closed by this process would drop the engine's POSIX locks on the database.
pub fn file_digest(path: &Path) -> Option<String> {
    let output = Command::new("sha256sum").arg(path).output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// Time budget for waiting on a helper process's answer.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// Set in a helper process: the name of the helper function it runs.
const HELPER_ROLE_ENV: &str = "SPECKIT_VACUUM_TEST_HELPER";

/// First statement of a test that starts helper processes. In the process [`Helper::start`]
/// started (this test binary, running this same test again), runs the named helper
/// instead of the test and exits; in the test's own process, does nothing.
pub fn serve_helper(helpers: &[(&str, fn())]) {
    let Some(role) = std::env::var_os(HELPER_ROLE_ENV) else {
        return;
    };
    let role = role.to_string_lossy().into_owned();
    let helper = helpers
        .iter()
        .find(|(name, _)| *name == role)
        .unwrap_or_else(|| panic!("this test serves no helper named {role}"))
        .1;
    // A thread of its own: the test may be inside a tokio runtime, and helpers block.
    if let Err(panic) = std::thread::spawn(helper).join() {
        std::panic::resume_unwind(panic);
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

/// This test binary started again, running the current test with [`HELPER_ROLE_ENV`] set,
/// so that the test's [`serve_helper`] runs one helper function as a separate process. It
/// talks in lines: commands on stdin, `HELPER <word> ...` answers on stdout.
pub struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    pub fn start(helper_test: &str, env: &[(&str, String)]) -> Helper {
        Self::start_as(helper_test, env, None)
    }

    /// [`Helper::start`] as another user (`uid`, with the same gid), when given.
    pub fn start_as(helper_test: &str, env: &[(&str, String)], uid: Option<u32>) -> Helper {
        let mut command = Command::new(std::env::current_exe().unwrap());
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        // libtest names each test's thread after the test.
        let current_test = std::thread::current()
            .name()
            .map(str::to_string)
            .expect("Helper::start is called on the test's own thread");
        command
            .args([
                current_test.as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER_ROLE_ENV, helper_test)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start the helper process");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest prints "test name ... " without a newline before the test's
                // own output, so an answer may start mid-line.
                if let Some(at) = line.find("HELPER ") {
                    if sender.send(line[at + 7..].to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        Helper {
            child,
            stdin,
            lines,
        }
    }

    /// Waits (bounded) for the next answer.
    pub fn expect(&self, prefix: &str) -> String {
        let line = self
            .lines
            .recv_timeout(HELPER_TIMEOUT)
            .unwrap_or_else(|e| panic!("helper gave no {prefix:?} answer: {e}"));
        assert!(
            line.starts_with(prefix),
            "helper answered {line:?}, expected {prefix:?}"
        );
        line
    }

    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin (the helper's signal to finish) and waits for it to exit.
    pub fn finish(mut self) -> std::process::ExitStatus {
        self.stdin.take();
        self.child.wait().unwrap()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Inside a helper: the database path it was given, or `None` when run as a normal test.
pub fn helper_db() -> Option<PathBuf> {
    std::env::var_os("SPECKIT_VACUUM_HELPER_DB").map(PathBuf::from)
}

/// Inside a helper: one line on stdout for the parent.
pub fn answer(text: &str) {
    println!("HELPER {text}");
    std::io::stdout().flush().unwrap();
}

/// Inside a helper: the next command from the parent, `None` once stdin is closed.
pub fn next_command() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim().to_string()),
    }
}
