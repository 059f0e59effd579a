//! `speckit-hygiene vacuum` end to end: the JSON report's keys and figures, the short
//! human summary, `--dry-run` changing nothing, and exit status 1 with the file named for
//! a file that is not a database and for a database that fails `quick_check`.

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

/// A folder with `speckit.toml` and an upstream-shaped `consensus_artifacts.db` of about
/// `mib` MiB, nearly all free pages, `auto_vacuum = NONE`.
fn workspace(mib: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("consensus_artifacts.db");
    speckit_testkit::database::create_bloated(
        &db,
        mib * 1024 * 1024,
        3,
        &[("SPEC-KIT-900", "plan", 2)],
        0,
    )
    .unwrap();
    let config = dir.path().join("speckit.toml");
    std::fs::write(
        &config,
        "[storage]\ndatabase_path = \"consensus_artifacts.db\"\n[vacuum]\nchunk_pages = 128\n",
    )
    .unwrap();
    (dir, config, db)
}

fn vacuum(config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(config).arg("vacuum").args(args);
    speckit_testkit::process::without_speckit_env(&mut cmd);
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn pragma(db: &Path, name: &str) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn json_report_has_every_figure_and_the_database_shrinks() {
    let (_dir, config, db) = workspace(8);
    let size_before = std::fs::metadata(&db).unwrap().len();
    let out = vacuum(&config, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let envelope = speckit_testkit::json::envelope(&out.stdout);
    let report = envelope["data"].clone();
    for key in [
        "bytes_before",
        "bytes_after",
        "wal_bytes_before",
        "wal_bytes_after",
        "pages_freed",
        "freelist_before",
        "freelist_after",
        "page_count_before",
        "page_count_after",
        "migrated",
        "check",
        "duration_ms",
        "dry_run",
    ] {
        assert!(report.get(key).is_some(), "no {key} in {report:#}");
    }
    assert_eq!(report["migrated"], true);
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["check"]["ok"], true);
    assert_eq!(report["check"]["pragma"], "quick_check");
    assert_eq!(report["freelist_after"], 0);
    assert_eq!(report["wal_bytes_after"], 0);
    assert_eq!(report["bytes_before"].as_u64(), Some(size_before));
    let bytes_after = report["bytes_after"].as_u64().unwrap();
    assert!(bytes_after < 256 * 1024, "{bytes_after}");
    assert_eq!(
        report["pages_freed"].as_i64().unwrap(),
        report["page_count_before"].as_i64().unwrap()
            - report["page_count_after"].as_i64().unwrap()
    );
    assert_eq!(envelope["errors"], serde_json::json!([]));
    assert_eq!(envelope["ok"], true);
    // After the process ended: the file is small and switched to INCREMENTAL.
    assert!(std::fs::metadata(&db).unwrap().len() < 256 * 1024);
    assert_eq!(pragma(&db, "auto_vacuum"), 2);
}

#[test]
fn human_output_is_a_short_summary_with_the_figures() {
    let (_dir, config, _db) = workspace(4);
    let out = vacuum(&config, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("vacuumed "), "{stdout}");
    assert!(
        lines[0].contains("switched to incremental auto-vacuum"),
        "{stdout}"
    );
    for label in [
        "file",
        "free pages",
        "WAL",
        "auto_vacuum",
        "free disk",
        "quick_check",
        "time",
    ] {
        assert!(
            lines.iter().any(|l| l.trim_start().starts_with(label)),
            "no {label} line in:\n{stdout}"
        );
    }
    assert!(stdout.contains("NONE -> INCREMENTAL"), "{stdout}");
    assert!(lines.len() <= 10, "short: {} lines\n{stdout}", lines.len());
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let (_dir, config, db) = workspace(4);
    let size_before = std::fs::metadata(&db).unwrap().len();
    let out = vacuum(&config, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("dry run, nothing changed"), "{stdout}");
    assert!(stdout.contains("would be switched from auto_vacuum NONE to INCREMENTAL"));
    // The engine's bookkeeping reuses free pages; the file keeps its size and mode.
    assert_eq!(std::fs::metadata(&db).unwrap().len(), size_before);
    assert_eq!(pragma(&db, "auto_vacuum"), 0);

    let out = vacuum(&config, &["--dry-run", "--json"]);
    let report = speckit_testkit::json::data(&out.stdout);
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["outcome"], "dry_run");
    assert_eq!(report["pages_freed"], 0);
    assert!(report["would_free_pages"].as_i64().unwrap() > 900);
}

#[test]
fn a_file_that_is_not_a_database_exits_1_naming_it() {
    let (_dir, config, db) = workspace(1);
    std::fs::write(&db, "not a database\n".repeat(400)).unwrap();
    let out = vacuum(&config, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(db.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("is not a SQLite database"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&db).unwrap(),
        "not a database\n".repeat(400)
    );
}

#[test]
fn a_database_failing_quick_check_is_not_vacuumed_and_exits_1() {
    use std::io::{Seek, SeekFrom, Write};
    let (_dir, config, db) = workspace(2);
    // A first run creates the engine's tables (and migrates); then break a table's page.
    assert_eq!(vacuum(&config, &[]).status.code(), Some(0));
    let (root, page_count) = {
        let conn = Connection::open(&db).unwrap();
        let root: i64 = conn
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'agent_executions'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (root, pragma(&db, "page_count"))
    };
    let mut file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    file.seek(SeekFrom::Start(((root - 1) * 4096 + 3) as u64))
        .unwrap();
    file.write_all(&[0xFF, 0xFF]).unwrap();
    drop(file);

    let out = vacuum(&config, &["--force"]);
    assert_eq!(out.status.code(), Some(1));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert!(
        errors
            .iter()
            .any(|l| l.contains("failed PRAGMA quick_check") && l.contains(db.to_str().unwrap())),
        "{stderr}"
    );
    assert!(!stdout.contains("error: "), "{stdout}");
    assert!(
        stdout.contains("btreeInitPage") || stderr.contains("btreeInitPage"),
        "the check's output: {stdout}{stderr}"
    );
    assert_eq!(pragma(&db, "page_count"), page_count, "not vacuumed");
}

#[test]
fn the_demo_vacuums_its_bloated_database() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("demo");
    let out = Command::new(BIN)
        .arg("demo")
        .arg("--keep")
        .arg(&keep)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    let section = stdout
        .split("== vacuum\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no vacuum section:\n{stdout}"));
    let line = section.lines().next().unwrap();
    assert!(line.starts_with("vacuumed "), "{line}");
    assert!(
        line.contains("switched to incremental auto-vacuum"),
        "{line}"
    );
    assert!(line.contains("quick_check ok"), "{line}");
    let db = keep.join("consensus_artifacts.db");
    assert_eq!(pragma(&db, "auto_vacuum"), 2);
    assert_eq!(pragma(&db, "freelist_count"), 0);
    assert!(std::fs::metadata(&db).unwrap().len() < 1024 * 1024);
}

/// Another process holding the database's write lock: the command says it is waiting (on
/// stderr, once per retry after SQLite's busy timeout) instead of sitting silent, and
/// finishes once the lock is released.
#[test]
fn a_vacuum_waiting_for_another_processs_lock_says_so() {
    use std::io::{BufRead, BufReader};
    let (dir, _, db) = workspace(2);
    let config = dir.path().join("waiting.toml");
    std::fs::write(
        &config,
        "[storage]\ndatabase_path = \"consensus_artifacts.db\"\nbusy_timeout_ms = 100\nwrite_retry_attempts = 200\n[vacuum]\nchunk_pages = 128\n",
    )
    .unwrap();
    // The holder: this test's own connection, in an exclusive transaction.
    let holder = Connection::open(&db).unwrap();
    holder
        .execute_batch("PRAGMA journal_mode = WAL; BEGIN EXCLUSIVE;")
        .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["vacuum", "--force"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    let waited = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break false;
        }
        said.push_str(&line);
        if line.contains("another process holds the database's lock")
            && line.contains("still waiting")
        {
            break true;
        }
    };
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(waited, "no word while waiting for the lock:\n{said}{rest}");
    assert!(status.success(), "{said}{rest}");
    assert!(said.contains(db.to_str().unwrap()), "{said}");
}
