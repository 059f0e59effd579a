//! Dynamic plugins through the command line: the example plugin (`examples/custom-plugin`,
//! built by `cargo test` because it is a dev-dependency) dropped into a folder, named in
//! `speckit.toml`, listed by `speckit-hygiene plugins` and run by `run --once`; and bad
//! plugins refused or contained while the command goes on.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

/// The real upstream evidence (a missing fixture skips, saying why, outside CI and fails in CI).
fn fixture_evidence() -> Option<PathBuf> {
    speckit_testkit::fixtures::optional(
        "upstream-evidence/docs/SPEC-OPS-004-integrated-coder-hooks/evidence",
    )
}

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        speckit_testkit::artifacts::plugins_folder(dir.path());
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies a built library into `plugins/`, the way a user drops one in.
    fn drop_in(&self, lib: &str, file: &str) -> PathBuf {
        speckit_testkit::artifacts::install_library(self.path(), lib, file)
    }

    /// `speckit.toml` with built-in jobs off, evidence at `evidence`, and `plugins`.
    fn write(&self, evidence: &Path, plugins: &str) {
        let body = format!(
            "[storage]\ndatabase_path = \"consensus.db\"\n\n[evidence]\nroot = {evidence:?}\n\n\
             [schedule]\ncleanup = \"off\"\nvacuum = \"off\"\nintegrity_check = \"off\"\n\n{plugins}\n"
        );
        fs::write(self.path().join("speckit.toml"), body).unwrap();
    }

    /// Runs the CLI on this workspace; fails the test if it takes over a minute.
    fn cli(&self, args: &[&str]) -> Output {
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(self.path().join("speckit.toml"))
            .args(args)
            .env_remove("SPECKIT_CONFIG")
            .env("RUST_LOG", "warn");
        speckit_testkit::process::output_within(
            &mut command,
            Duration::from_secs(60),
            &format!("speckit-hygiene {args:?}"),
        )
    }
}

fn digest_section(schedule: &str) -> String {
    format!(
        "[plugins.digest]\npath = \"plugins/libspeckit_digest.so\"\nschedule = \"{schedule}\"\n\
         [plugins.digest.config]\noutput_dir = \"digests\"\n"
    )
}

fn stdout_json(output: &Output) -> serde_json::Value {
    speckit_testkit::json::data(&output.stdout)
}

#[test]
fn the_example_plugin_is_listed_and_run_by_the_command_line() {
    let ws = Workspace::new();
    ws.drop_in("speckit_digest", "libspeckit_digest.so");
    let evidence = ws.path().join("evidence");
    speckit_testkit::evidence::small_consensus_tree(&evidence);
    ws.write(&evidence, &digest_section("0 5 * * *"));

    let listed = ws.cli(&["plugins", "--json"]);
    assert_eq!(
        listed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed = stdout_json(&listed);
    let digest = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "digest")
        .expect("digest is listed");
    assert_eq!(digest["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(digest["origin"]["kind"], "dynamic");
    assert!(listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["origin"]["kind"] == "builtin"));
    assert_eq!(listed["load_errors"], serde_json::json!([]));
    assert_eq!(listed["libraries"][0]["name"], "speckit-digest");

    // Scheduled, so `run --once` runs it through the engine.
    let ran = ws.cli(&["run", "--once", "--json"]);
    assert_eq!(
        ran.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let runs = stdout_json(&ran)["runs"].clone();
    let run = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["job"] == "digest")
        .unwrap();
    assert_eq!(run["outcome"], "succeeded");
    let data = &run["data"];
    assert_eq!(data["specs"], 2);
    assert_eq!(data["digests_written"], 2);
    assert_eq!(data["latest_status_counts"]["hold"], 1);
    let digest = fs::read_to_string(ws.path().join("digests/SPEC-KIT-101.md")).unwrap();
    assert!(
        digest.contains("| plan | 2025-10-12T14:44:00Z | ok | 1 | 2 | gpt_pro |"),
        "{digest}"
    );
    assert!(digest.contains("- Vacuum in chunks"), "{digest}");
    assert!(digest.contains("| unlock | - | hold |"), "{digest}");

    // The run is in the job history like any other.
    let again = stdout_json(&ws.cli(&["run", "--once", "--json"]));
    assert_eq!(again["runs"][0]["data"]["digests_unchanged"], 2);
}

#[test]
fn the_example_plugin_digests_the_real_upstream_evidence() {
    let Some(evidence) = fixture_evidence() else {
        return;
    };
    let ws = Workspace::new();
    ws.drop_in("speckit_digest", "libspeckit_digest.so");
    ws.write(&evidence, &digest_section("0 5 * * *"));
    let ran = ws.cli(&["run", "--once", "--json"]);
    assert_eq!(
        ran.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let data = &stdout_json(&ran)["runs"][0]["data"];
    // Upstream has five SPEC folders under consensus/ and 37 synthesis and verdict files.
    assert_eq!(data["specs"], 5, "{data}");
    assert_eq!(
        data["synthesis_files"].as_u64().unwrap() + data["verdict_files"].as_u64().unwrap(),
        37
    );
    assert_eq!(data["latest_status_counts"]["hold"], 2, "{data}");
    assert_eq!(data["latest_status_counts"]["degraded"], 2, "{data}");
    let demo = fs::read_to_string(ws.path().join("digests/SPEC-KIT-DEMO.md")).unwrap();
    assert!(
        demo.contains("| unlock | 2025-10-12T16:43:43Z | hold | 1 | 3 | gpt_pro, gpt_codex |"),
        "{demo}"
    );
    let kit025 = fs::read_to_string(
        ws.path()
            .join("digests/SPEC-KIT-025-add-automated-conflict-resolution-with.md"),
    )
    .unwrap();
    assert!(kit025.contains("Only unrendered templates"), "{kit025}");
    // The evidence is only read.
    assert!(!evidence.join("consensus/SPEC-KIT-DEMO.md").exists());
}

#[test]
fn bad_plugins_are_listed_with_their_errors_and_contained_while_the_rest_runs() {
    let ws = Workspace::new();
    ws.drop_in("speckit_digest", "libspeckit_digest.so");
    let open = ws.drop_in("speckit_digest", "libopen.so");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o666)).unwrap();
    let script = ws.path().join("plugins/libscript.so");
    fs::write(&script, "echo not a library\n").unwrap();
    ws.drop_in("speckit_test_probe", "libprobe.so");
    let evidence = ws.path().join("evidence");
    speckit_testkit::evidence::small_consensus_tree(&evidence);
    ws.write(
        &evidence,
        &format!(
            "{}\n[plugins.open]\npath = \"plugins/libopen.so\"\n\n[plugins.script]\npath = \"plugins/libscript.so\"\n\n\
             [plugins.boom]\npath = \"plugins/libprobe.so\"\nschedule = \"0 5 * * *\"\n[plugins.boom.config]\nmode = \"panic\"\n\n\
             [plugins.stuck]\npath = \"plugins/libprobe.so\"\nschedule = \"0 5 * * *\"\ncall_timeout_ms = 300\n[plugins.stuck.config]\nmode = \"hang\"\n",
            digest_section("0 5 * * *")
        ),
    );

    let listed = ws.cli(&["plugins"]);
    assert_eq!(
        listed.status.code(),
        Some(1),
        "load errors make `plugins` exit 1"
    );
    let text = String::from_utf8_lossy(&listed.stdout);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}: {text}"))
            .to_string()
    };
    assert!(line("open").contains("FAILED"), "{text}");
    assert!(
        line("open").contains(&fs::canonicalize(&open).unwrap().display().to_string()),
        "{text}"
    );
    assert!(
        line("open").contains("writable by group or others (mode 0666)"),
        "{text}"
    );
    assert!(
        line("script").contains("libscript.so is not a shared library"),
        "{text}"
    );
    assert!(line("digest").contains("libspeckit_digest.so"), "{text}");
    assert!(!line("boom").contains("FAILED"), "{text}");

    // The panicking and the never-returning plugin fail their jobs; the digest still runs,
    // and the process exits (it does not wait for the hung plugin's thread).
    let ran = ws.cli(&["run", "--once", "--json"]);
    assert_eq!(
        ran.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let runs = stdout_json(&ran)["runs"].clone();
    let outcome = |job: &str| {
        runs.as_array()
            .unwrap()
            .iter()
            .find(|r| r["job"] == job)
            .unwrap()
            .clone()
    };
    assert_eq!(outcome("digest")["outcome"], "succeeded");
    assert_eq!(outcome("boom")["outcome"], "failed");
    assert!(outcome("boom")["error"]["message"]
        .as_str()
        .unwrap()
        .contains("panicked: probe panicked in run"));
    assert_eq!(outcome("stuck")["outcome"], "failed");
    assert!(outcome("stuck")["error"]["message"]
        .as_str()
        .unwrap()
        .contains("did not return within 300 ms"));
}

/// Plugins that segfault, abort or call `exit(0)`, as `[plugins.*]` sections (every
/// second when `schedule` is given), plus a well-behaved one.
fn crashing_sections(schedule: &str) -> String {
    ["segfault", "abort", "exit", "ok"]
        .iter()
        .map(|mode| {
            format!(
                "[plugins.p_{mode}]\npath = \"plugins/libprobe.so\"\nschedule = \"{schedule}\"\n\
                 [plugins.p_{mode}.config]\nmode = \"{mode}\"\n\n"
            )
        })
        .collect()
}

#[test]
fn run_once_reports_each_crashing_plugin_and_runs_the_rest() {
    let ws = Workspace::new();
    ws.drop_in("speckit_test_probe", "libprobe.so");
    let evidence = ws.path().join("evidence");
    speckit_testkit::evidence::small_consensus_tree(&evidence);
    ws.write(&evidence, &crashing_sections("0 5 * * *"));
    let ran = ws.cli(&["run", "--once", "--json"]);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    // Not 139 or 134 (the engine's own death), not 0 (a false success): one job failed.
    assert_eq!(ran.status.code(), Some(1), "{stderr}");
    let runs = stdout_json(&ran)["runs"].clone();
    let run = |job: &str| {
        runs.as_array()
            .unwrap()
            .iter()
            .find(|r| r["job"] == job)
            .unwrap_or_else(|| panic!("no run of {job}: {runs}"))
            .clone()
    };
    for (job, cause) in [
        ("p_segfault", "killed by SIGSEGV"),
        ("p_abort", "killed by SIGABRT"),
        ("p_exit", "exited with status 0 in the middle of a call"),
    ] {
        assert_eq!(run(job)["outcome"], "failed", "{job}");
        let error = run(job)["error"]["message"].as_str().unwrap().to_string();
        assert!(error.contains(&format!("plugin {job} (")), "{error}");
        assert!(error.contains(cause), "{error}");
    }
    assert_eq!(run("p_ok")["outcome"], "succeeded");
}

#[test]
fn the_daemon_outlives_crashing_plugins_and_runs_its_other_jobs_on_time() {
    let ws = Workspace::new();
    ws.drop_in("speckit_test_probe", "libprobe.so");
    let evidence = ws.path().join("evidence");
    speckit_testkit::evidence::small_consensus_tree(&evidence);
    ws.write(&evidence, &crashing_sections("* * * * * *"));
    let mut daemon = Command::new(BIN)
        .arg("--config")
        .arg(ws.path().join("speckit.toml"))
        .arg("run")
        .env_remove("SPECKIT_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let database = ws.path().join("consensus.db");
    let counts = || -> Option<(i64, i64, i64)> {
        let conn = rusqlite::Connection::open_with_flags(
            &database,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()?;
        conn.query_row(
            "SELECT \
               (SELECT count(*) FROM hygiene_job_runs WHERE job = 'p_ok' AND outcome = 'succeeded'), \
               (SELECT count(*) FROM hygiene_job_runs WHERE job IN ('p_segfault', 'p_abort', 'p_exit') AND outcome = 'failed'), \
               (SELECT count(*) FROM hygiene_job_runs WHERE outcome = 'running' AND job <> 'p_ok' AND started_at < (strftime('%s','now') - 5) * 1000)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .ok()
    };
    // Three ticks of every job: the crashing ones failed each time, the good one ran on
    // every tick, and the daemon is still there.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = None;
    while std::time::Instant::now() < deadline {
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "the daemon ended: {:?}",
            daemon.try_wait()
        );
        seen = counts();
        if matches!(seen, Some((ok, failed, _)) if ok >= 3 && failed >= 9) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let alive = daemon.try_wait().unwrap().is_none();
    // SAFETY: plain kill(2) of the child we started.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(alive, "the daemon died: {status:?}");
    let (ok, failed, stale) = seen.expect("the daemon wrote no job history");
    assert!(
        ok >= 3 && failed >= 9,
        "ok runs {ok}, failed crash runs {failed}"
    );
    assert_eq!(stale, 0, "no crashed run is left at running");
}
