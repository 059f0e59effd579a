//! End-to-end tests of `check`, `plugins`, `jobs` and exit statuses.

use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_speckit-hygiene"));
    // A clean environment for policy: no SPECKIT_ variables from the caller.
    speckit_testkit::process::without_speckit_env(&mut cmd);
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

/// Upstream's layout in `dir` (the default evidence root and `SPEC.md`), so that the
/// policy's defaults point at something real.
fn lay_out(dir: &Path) {
    speckit_testkit::repository::upstream_layout(dir, &[("SPEC-KIT-900", "Done")]).unwrap();
}

#[test]
fn check_reports_values_and_origins_as_json() {
    let dir = tempfile::tempdir().unwrap();
    lay_out(dir.path());
    let config = write_config(dir.path(), "[retention]\narchive_after_days = 20\n");
    // --config after the subcommand works too (a global option).
    let (code, stdout, stderr) = run(bin()
        .args(["check", "--json", "--config"])
        .arg(&config)
        .env("SPECKIT_SPAWN__MAX_CONCURRENCY", "3"));
    assert_eq!(code, 0, "{stderr}");
    let json = speckit_testkit::json::data(stdout.as_bytes());
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
    lay_out(dir.path());
    let config = write_config(dir.path(), "[retention]\nfinished_statuses = []\n");
    let (code, stdout, stderr) = run(bin().arg("--config").arg(&config).arg("check"));
    assert_eq!(code, 0, "{stderr}");
    // A diagnostic: on stderr, once; stdout is the policy.
    assert_eq!(
        stderr
            .matches("warning: retention.finished_statuses is empty: no SPEC will be archived")
            .count(),
        1,
        "{stderr}"
    );
    assert!(!stdout.contains("warning:"), "{stdout}");
    let (code, stdout, _) = run(bin().arg("--config").arg(&config).args(["check", "--json"]));
    assert_eq!(code, 0);
    let json = speckit_testkit::json::data(stdout.as_bytes());
    assert_eq!(json["warnings"][0]["key"], "retention.finished_statuses");
    assert_eq!(json["warnings"][0]["origin"]["kind"], "file");
    // The default list: no warning.
    let config = write_config(dir.path(), "");
    let (code, stdout, stderr) = run(bin().arg("--config").arg(&config).arg("check"));
    assert_eq!(code, 0);
    assert!(!stdout.contains("warning:"), "{stdout}");
    assert!(!stderr.contains("warning:"), "{stderr}");
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
    lay_out(dir.path());
    let (code, stdout, stderr) = run(bin().arg("check").current_dir(dir.path()));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("defaults"), "{stdout}");
    // Said once, on stderr, with the way to a file of one's own.
    assert_eq!(
        stderr.matches("note: no config file:").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "so these are the built-in defaults; `speckit-hygiene init` writes a speckit.toml"
        ),
        "{stderr}"
    );
}

#[test]
fn speckit_config_variable_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    lay_out(dir.path());
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
    let envelope = speckit_testkit::json::envelope(stdout.as_bytes());
    assert_eq!(envelope["ok"], false);
    assert_eq!(envelope["errors"][0]["kind"], "usage");
    let json = &envelope["data"];
    assert_eq!(json["valid"], false);
    assert_eq!(json["problems"][0]["key"], "spawn.max_concurrency");
    assert_eq!(json["problems"][0]["line"], 2);
    // Asked for JSON, the error is said once, in it: not again on stderr.
    assert!(!stderr.contains("spawn.max_concurrency"), "{stderr}");
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
    let runs = speckit_testkit::json::data(stdout.as_bytes())["runs"].clone();
    assert_eq!(runs, serde_json::json!([]));
    for job in ["vacuum", "cleanup"] {
        let (code, _, stderr) = run(bin().arg("-c").arg(&ws.config_path).arg(job));
        assert!(code <= 1, "{job}: {stderr}");
    }
    let (code, stdout, stderr) = run(bin()
        .arg("-c")
        .arg(&ws.config_path)
        .args(["jobs", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let runs = speckit_testkit::json::data(stdout.as_bytes())["runs"].clone();
    let jobs: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["cleanup", "vacuum"]);
    assert_eq!(runs[1]["outcome"], "succeeded");
    assert_eq!(runs[1]["trigger"], "manual");
    assert!(runs[1]["duration_ms"].is_u64(), "{}", runs[1]);
    assert!(
        runs[1]["summary"].as_str().unwrap().contains("vacuumed"),
        "{}",
        runs[1]
    );
    let (code, table, _) = run(bin().arg("-c").arg(&ws.config_path).arg("jobs"));
    assert_eq!(code, 0);
    assert!(table.lines().nth(1).unwrap().contains("cleanup"), "{table}");
}

/// `check` on `config`, with a deadline: (exit status, stdout, stderr).
fn check_within(config: &Path, json: bool) -> (i32, String, String) {
    let mut cmd = bin();
    cmd.arg("--config").arg(config).arg("check");
    if json {
        cmd.arg("--json");
    }
    let out = speckit_testkit::process::output_within(
        &mut cmd,
        std::time::Duration::from_secs(60),
        "speckit-hygiene check",
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one problem `check --json` gives as an error, checked for its key, message and fix.
fn only_problem(stdout: &str) -> serde_json::Value {
    let json = speckit_testkit::json::data(stdout.as_bytes());
    assert_eq!(json["valid"], false, "{json}");
    let problems = json["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["severity"], "error");
    assert!(
        !problems[0]["fix"].as_str().unwrap().is_empty(),
        "{problems:?}"
    );
    problems[0].clone()
}

#[test]
fn check_reports_a_missing_evidence_root_with_its_fix_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    lay_out(dir.path());
    let config = write_config(dir.path(), "[evidence]\nroot = \"no-such-evidence\"\n");
    let (code, stdout, stderr) = check_within(&config, false);
    assert_eq!(code, 2, "{stderr}");
    let missing = format!(
        "error: evidence root {} does not exist\n  fix: set `root` in [evidence] of {} to the folder holding commands/<SPEC-ID>/ and consensus/<SPEC-ID>/ (`speckit-hygiene init` finds it)",
        dir.path().join("no-such-evidence").display(),
        config.display()
    );
    assert_eq!(stderr.matches(&missing).count(), 1, "{stderr}");
    assert_eq!(stderr.matches("error:").count(), 1, "said once: {stderr}");
    assert!(
        stdout.starts_with(&format!(
            "policy NOT usable: {}: 1 problem(s), each with its fix on stderr\n",
            config.display()
        )),
        "{stdout}"
    );

    let (code, stdout, stderr) = check_within(&config, true);
    assert_eq!(code, 2);
    let problem = only_problem(&stdout);
    assert_eq!(problem["key"], "evidence.root");
    assert_eq!(problem["origin"]["kind"], "file");
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .ends_with("no-such-evidence does not exist"),
        "{problem}"
    );
    // In JSON the problem is data; stderr only says where it is.
    assert!(!stderr.contains("does not exist"), "{stderr}");
    assert!(stderr.contains("\"problems\" in the JSON"), "{stderr}");
}

#[test]
fn check_reports_a_tracker_that_is_missing_or_holds_no_tracker_table() {
    let dir = tempfile::tempdir().unwrap();
    lay_out(dir.path());
    std::fs::write(
        dir.path().join("NOTES.md"),
        "# Notes\n\nSPEC-KIT-900 is done.\n\n| Name | Status |\n|---|---|\n| x | Done |\n",
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        "[evidence]\ntracker_paths = [\"SPEC.md\", \"NOTES.md\"]\n",
    );
    let (code, _, stderr) = check_within(&config, false);
    assert_eq!(code, 2, "{stderr}");
    let broken = format!(
        "error: SPEC tracker {} holds no tracker table: no Markdown table with an ID column (Task ID, Spec ID, Spec, ID or Item) and a Status column, a `|---|` row under its header\n  fix: set `tracker_paths` in [evidence] of {} to the Markdown files holding the SPEC table, or give its SPEC table those columns",
        dir.path().join("NOTES.md").display(),
        config.display()
    );
    assert_eq!(stderr.matches(&broken).count(), 1, "{stderr}");
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
    let (_, stdout, _) = check_within(&config, true);
    assert_eq!(only_problem(&stdout)["key"], "evidence.tracker_paths.1");

    let config = write_config(dir.path(), "[evidence]\ntracker_paths = [\"GONE.md\"]\n");
    let (code, _, stderr) = check_within(&config, false);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: cannot read SPEC tracker {}: No such file or directory",
            dir.path().join("GONE.md").display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("or create it; a cleanup refuses to run without it"),
        "{stderr}"
    );
}

#[test]
fn check_reports_a_plugin_library_that_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    lay_out(dir.path());
    let config = write_config(
        dir.path(),
        "[plugins.ghost]\npath = \"plugins/libghost.so\"\nschedule = \"off\"\n",
    );
    let (code, _, stderr) = check_within(&config, false);
    assert_eq!(code, 2, "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: plugin ghost does not load: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("plugins/libghost.so"),
        "names the file: {line}"
    );
    assert!(
        stderr.contains("fix: set `path` in [plugins.ghost] to the built shared library (or a folder holding one) that only you can write, or remove [plugins.ghost]"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("libghost.so").count(),
        1,
        "said once: {stderr}"
    );
    let (_, stdout, _) = check_within(&config, true);
    assert_eq!(only_problem(&stdout)["key"], "plugins.ghost.path");
}

#[test]
fn a_policy_missing_only_optional_things_warns_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("evidence")).unwrap();
    let config = write_config(
        dir.path(),
        "[storage]\ndatabase_path = \"state/consensus.db\"\n[evidence]\nroot = \"evidence\"\ntracker_paths = []\n",
    );
    let (code, stdout, stderr) = check_within(&config, false);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("policy OK: "), "{stdout}");
    assert!(!stderr.contains("error:"), "{stderr}");
    for expected in [
        "warning: no SPEC tracker (evidence.tracker_paths is empty): no SPEC can be known finished, so every SPEC is protected and nothing is archived",
        "warning: evidence root ",
        "holds neither commands/ nor consensus/",
        &format!(
            "note: the database's folder {} does not exist yet: the first command that writes creates it",
            dir.path().join("state").display()
        ),
    ] {
        assert_eq!(stderr.matches(expected).count(), 1, "{expected}: {stderr}");
    }
    let (code, stdout, _) = check_within(&config, true);
    assert_eq!(code, 0);
    let json = speckit_testkit::json::data(stdout.as_bytes());
    assert_eq!(json["valid"], true);
    assert_eq!(json["problems"].as_array().unwrap().len(), 0);
    assert_eq!(json["warnings"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(json["notes"][0]["key"], "storage.database_path");
    // check created nothing.
    assert!(!dir.path().join("state").exists());
}
