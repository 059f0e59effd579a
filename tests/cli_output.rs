//! The output contract's switches end to end: `--color` (always, never, auto: plain in a
//! pipe) for data on stdout and logs on stderr, and `-q` (warnings gone from stderr, the
//! data on stdout unchanged).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");
const ESC: &str = "\x1b[";

/// A policy with one SPEC over its warning size, and one agent whose stdout is cut at
/// `max_log_bytes` (a warning of the spawn job).
fn workspace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("evidence/commands/SPEC-KIT-001");
    fs::create_dir_all(&spec).unwrap();
    fs::write(spec.join("big.json"), vec![b'x'; 1200 * 1024]).unwrap();
    let config = dir.path().join("speckit.toml");
    fs::write(
        &config,
        "[storage]\ndatabase_path = \"db.sqlite\"\n[evidence]\nroot = \"evidence\"\nwarn_mb = 0.5\nlimit_mb = 1\n\
         [spawn]\nhost_config = \"off\"\nmax_log_bytes = 1024\n\
         [[spawn.agents]]\nname = \"chatty\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"head -c 5000 /dev/zero\"]\n",
    )
    .unwrap();
    (dir, config)
}

fn run(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("SPECKIT_CONFIG")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn color_always_colours_stdout_and_logs_never_and_a_pipe_do_not() {
    let (_dir, config) = workspace();
    let always = run(&config, &["--color", "always", "stats"]);
    assert!(
        text(&always.stdout).contains(ESC),
        "{}",
        text(&always.stdout)
    );
    // Logs: a spawn logs at info.
    let spawn = ["spawn", "--spec", "SPEC-KIT-002", "--stage", "plan"];
    let logs = |colour: &[&str]| {
        let mut args = colour.to_vec();
        args.push("-v");
        args.extend(spawn);
        let out = run(&config, &args);
        assert!(
            text(&out.stderr).contains("spawning agents"),
            "{}",
            text(&out.stderr)
        );
        text(&out.stderr)
    };
    assert!(logs(&["--color", "always"]).contains(ESC));
    for colour in [&["--color", "never"][..], &[][..]] {
        assert!(!logs(colour).contains(ESC), "{colour:?}");
        let mut args = colour.to_vec();
        args.push("stats");
        let out = run(&config, &args);
        assert!(
            !text(&out.stdout).contains(ESC),
            "{colour:?}: {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stdout).contains("SPEC-KIT-001"),
            "the data is there"
        );
    }
    let bad = run(&config, &["--color", "sometimes", "stats"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("sometimes"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn quiet_drops_warnings_and_keeps_the_data() {
    let (_dir, config) = workspace();
    let spawn = ["spawn", "--spec", "SPEC-KIT-002", "--stage", "plan"];
    let loud = run(&config, &spawn);
    assert!(loud.status.success(), "{}", text(&loud.stderr));
    let warning = "warning: agent \"chatty\" wrote 5000 bytes";
    assert_eq!(
        text(&loud.stderr).matches(warning).count(),
        1,
        "{}",
        text(&loud.stderr)
    );
    assert!(
        !text(&loud.stdout).contains("warning:"),
        "diagnostics stay off stdout"
    );

    let mut quiet_args = vec!["-q"];
    quiet_args.extend(spawn);
    let quiet = run(&config, &quiet_args);
    assert!(quiet.status.success(), "{}", text(&quiet.stderr));
    assert!(
        !text(&quiet.stderr).contains("warning:"),
        "{}",
        text(&quiet.stderr)
    );
    assert!(
        text(&quiet.stdout).contains("1/1 agents spawned"),
        "{}",
        text(&quiet.stdout)
    );

    let both = run(&config, &["-q", "-v", "stats"]);
    assert_eq!(both.status.code(), Some(2), "-q and -v conflict");
}

#[test]
fn every_json_output_is_the_one_envelope() {
    let (_dir, config) = workspace();
    let commands: &[(&[&str], &str)] = &[
        (&["check", "--json"], "check"),
        (&["plugins", "--json"], "plugins"),
        (&["jobs", "--json"], "jobs"),
        (&["stats", "--json"], "stats"),
        (&["guard", "SPEC-KIT-002", "--json"], "guard"),
        (&["cleanup", "--dry-run", "--json"], "cleanup"),
        (&["vacuum", "--dry-run", "--json"], "vacuum"),
        (&["spawn", "stats", "--json"], "spawn stats"),
        (&["spawn", "--list-agents", "--json"], "spawn --list-agents"),
        (
            &[
                "spawn",
                "--spec",
                "SPEC-KIT-002",
                "--stage",
                "plan",
                "--json",
            ],
            "spawn",
        ),
        (&["run", "--once", "--json"], "run"),
        (&["archives", "--json"], "archives"),
    ];
    for (args, command) in commands {
        let out = run(&config, args);
        assert!(
            !out.stdout.is_empty(),
            "{args:?} printed nothing: {}",
            text(&out.stderr)
        );
        let envelope = speckit_testkit::json::envelope(&out.stdout);
        assert_eq!(envelope["command"], *command, "{args:?}");
        // What went well has its data; what did not says why (this policy names no
        // tracker, so cleanup refuses to guess which SPECs are finished).
        if envelope["ok"] == true {
            assert!(envelope["data"].is_object(), "{args:?}: {envelope}");
        } else {
            assert!(
                !envelope["errors"].as_array().unwrap().is_empty(),
                "{args:?}: {envelope}"
            );
            assert_ne!(out.status.code(), Some(0), "{args:?}");
        }
    }
    // A job's run has the shape `jobs` lists runs in: trigger and outcome as words,
    // the duration in milliseconds.
    let spawn = run(
        &config,
        &[
            "spawn",
            "--spec",
            "SPEC-KIT-002",
            "--stage",
            "plan",
            "--json",
        ],
    );
    let job = speckit_testkit::json::envelope(&spawn.stdout)["job"].clone();
    let jobs = run(&config, &["jobs", "--json"]);
    let listed = speckit_testkit::json::data(&jobs.stdout)["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] == job["run_id"])
        .cloned()
        .unwrap_or_else(|| panic!("run {} not listed", job["run_id"]));
    for key in ["job", "plugin", "trigger", "outcome", "summary"] {
        assert_eq!(job[key], listed[key], "{key}: {job} against {listed}");
    }
    assert_eq!(job["trigger"], "manual");
    assert!(job["duration_ms"].is_u64() && listed["duration_ms"].is_u64());
}

#[test]
fn a_failure_with_json_is_json_on_stdout_and_a_non_zero_exit() {
    let (_dir, config) = workspace();
    let out = run(
        &config,
        &["spawn", "--spec", "not a spec", "--stage", "plan", "--json"],
    );
    assert_eq!(out.status.code(), Some(2));
    let envelope = speckit_testkit::json::envelope(&out.stdout);
    assert_eq!(envelope["ok"], false);
    assert_eq!(envelope["errors"][0]["kind"], "usage");
    assert!(
        envelope["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not a spec"),
        "{envelope}"
    );
    assert!(
        !text(&out.stderr).contains("error:"),
        "said once: {}",
        text(&out.stderr)
    );
    // A job that fails in the engine: refused by the evidence guard (exit 3).
    let out = run(
        &config,
        &[
            "spawn",
            "--spec",
            "SPEC-KIT-001",
            "--stage",
            "plan",
            "--json",
        ],
    );
    let envelope = speckit_testkit::json::envelope(&out.stdout);
    assert_eq!(envelope["ok"], false, "{envelope}");
    assert_eq!(envelope["job"]["outcome"], "failed");
    assert_eq!(envelope["errors"][0]["kind"], "refused", "{envelope}");
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn job_history_says_which_config_a_run_served() {
    // Two repositories on one shared database (as with the host's per-user file).
    let shared = tempfile::tempdir().unwrap();
    let db = shared.path().join("consensus_artifacts.db");
    let repo = |name: &str| {
        let dir = shared.path().join(name);
        fs::create_dir_all(dir.join("evidence")).unwrap();
        speckit_testkit::tracker::write_four_column(&dir.join("SPEC.md"), &[]).unwrap();
        let config = dir.join("speckit.toml");
        fs::write(
            &config,
            format!(
                "[storage]\ndatabase_path = {:?}\n[evidence]\nroot = \"evidence\"\ntracker_paths = [\"SPEC.md\"]\n",
                db.display().to_string()
            ),
        )
        .unwrap();
        config.canonicalize().unwrap()
    };
    let (a, b) = (repo("a"), repo("b"));
    let cleanup = run(&a, &["cleanup"]);
    assert!(cleanup.status.success(), "{}", text(&cleanup.stderr));

    let listed = run(&b, &["jobs", "--json"]);
    let runs = speckit_testkit::json::data(&listed.stdout)["runs"].clone();
    assert_eq!(runs[0]["job"], "cleanup");
    assert_eq!(runs[0]["config_path"], a.display().to_string(), "{runs}");
    // The table in repository B marks A's run; in A it needs no mark.
    let table = text(&run(&b, &["jobs"]).stdout);
    assert!(table.contains(&format!("[for {}]", a.display())), "{table}");
    let table = text(&run(&a, &["jobs"]).stdout);
    assert!(!table.contains("[for "), "{table}");
}
