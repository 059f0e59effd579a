//! End-to-end tests of `check`, `plugins`, `jobs` and exit statuses.

use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_speckit-hygiene"));
    // A clean environment for policy: no SPECKIT_ variables from the caller.
    for (key, _) in std::env::vars() {
        if key.starts_with("SPECKIT_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("speckit.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_reports_values_and_origins_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[retention]\narchive_after_days = 20\n");
    // --config after the subcommand works too (a global option).
    let (code, stdout, stderr) = run(bin()
        .args(["check", "--json", "--config"])
        .arg(&config)
        .env("SPECKIT_SPAWN__MAX_CONCURRENCY", "3"));
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let find = |key: &str| {
        json["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["key"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} missing"))
    };
    assert_eq!(find("retention.archive_after_days")["value"], 20);
    assert_eq!(
        find("retention.archive_after_days")["origin"]["kind"],
        "file"
    );
    assert_eq!(find("spawn.max_concurrency")["value"], 3);
    assert_eq!(
        find("spawn.max_concurrency")["origin"]["variable"],
        "SPECKIT_SPAWN__MAX_CONCURRENCY"
    );
    assert_eq!(find("vacuum.chunk_pages")["origin"]["kind"], "default");
}

#[test]
fn an_empty_finished_status_list_is_valid_but_check_says_it_archives_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[retention]\nfinished_statuses = []\n");
    let (code, stdout, stderr) = run(bin().arg("--config").arg(&config).arg("check"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("warning: retention.finished_statuses is empty: no SPEC will be archived"),
        "{stdout}"
    );
    let (code, stdout, _) = run(bin().arg("--config").arg(&config).args(["check", "--json"]));
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["warnings"][0]["key"], "retention.finished_statuses");
    assert_eq!(json["warnings"][0]["origin"]["kind"], "file");
    // The default list: no warning.
    let config = write_config(dir.path(), "");
    let (code, stdout, _) = run(bin().arg("--config").arg(&config).arg("check"));
    assert_eq!(code, 0);
    assert!(!stdout.contains("warning:"), "{stdout}");
}

#[test]
fn bad_config_exits_2_naming_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[retention]\narchive_after_days = 30\npurge_after_days = 10\n",
    );
    let (code, stdout, stderr) = run(bin().arg("--config").arg(&config).arg("check"));
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(stderr.contains("speckit.toml"), "{stderr}");
    assert!(
        stderr.contains("retention.purge_after_days (line 3)"),
        "{stderr}"
    );
}

#[test]
fn bad_cron_and_unknown_key_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[schedule]\ncleanup = \"0 3 * *\"\n");
    let (code, _, stderr) = run(bin().arg("--config").arg(&config).arg("check"));
    assert_eq!(code, 2);
    assert!(stderr.contains("schedule.cleanup"), "{stderr}");
    let config = write_config(dir.path(), "[vacuum]\nchunk_page = 3\n");
    let (code, _, stderr) = run(bin().arg("--config").arg(&config).arg("check"));
    assert_eq!(code, 2);
    assert!(stderr.contains("vacuum.chunk_page"), "{stderr}");
}

#[test]
fn missing_named_config_is_an_error_but_default_path_is_optional() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(bin().args(["check", "--config", "/nonexistent/speckit.toml"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/speckit.toml"), "{stderr}");
    let (code, stdout, _) = run(bin().arg("check").current_dir(dir.path()));
    assert_eq!(code, 0);
    assert!(stdout.contains("defaults"), "{stdout}");
}

#[test]
fn speckit_config_variable_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[spawn]\nmax_concurrency = 5\n");
    let (code, stdout, stderr) = run(bin()
        .args(["check", "--json"])
        .env("SPECKIT_CONFIG", &config));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"max_concurrency\": 5"), "{stdout}");
}

#[test]
fn usage_error_exits_2() {
    let (code, _, _) = run(bin().arg("no-such-command"));
    assert_eq!(code, 2);
}

#[test]
fn check_json_on_a_bad_config_reports_problems_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[spawn]\nmax_concurrency = 0\n");
    let (code, stdout, stderr) = run(bin().args(["check", "--json", "-c"]).arg(&config));
    assert_eq!(code, 2, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["valid"], false);
    assert_eq!(json["problems"][0]["key"], "spawn.max_concurrency");
    assert_eq!(json["problems"][0]["line"], 2);
    assert!(stderr.contains("spawn.max_concurrency"), "{stderr}");
}

#[test]
fn jobs_lists_recorded_runs_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let ws = speckit_hygiene::demo::create_workspace(&dir.path().join("ws")).unwrap();
    let (code, _, stderr) = run(bin()
        .arg("-c")
        .arg(&ws.config_path)
        .args(["vacuum", "--dry-run"]));
    assert_eq!(code, 0, "{stderr}");
    // A dry run opens the database read-only: it records no run.
    let (code, stdout, stderr) = run(bin()
        .arg("-c")
        .arg(&ws.config_path)
        .args(["jobs", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "[]");
    for job in ["vacuum", "cleanup"] {
        let (code, _, stderr) = run(bin().arg("-c").arg(&ws.config_path).arg(job));
        assert!(code <= 1, "{job}: {stderr}");
    }
    let (code, stdout, stderr) = run(bin()
        .arg("-c")
        .arg(&ws.config_path)
        .args(["jobs", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let runs: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let jobs: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["cleanup", "vacuum"]);
    assert_eq!(runs[1]["outcome"], "succeeded");
    assert_eq!(runs[1]["trigger"], "manual");
    assert!(
        runs[1]["report"]["summary"]
            .as_str()
            .unwrap()
            .contains("vacuumed"),
        "{}",
        runs[1]
    );
    let (code, table, _) = run(bin().arg("-c").arg(&ws.config_path).arg("jobs"));
    assert_eq!(code, 0);
    assert!(table.lines().nth(1).unwrap().contains("cleanup"), "{table}");
}
