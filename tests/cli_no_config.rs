//! Without a config file (no ./speckit.toml, no --config, no $SPECKIT_CONFIG), commands
//! that would write say so and stop (exit 2, naming `init` and `--config`) and create
//! nothing; commands that only read or plan go on with the defaults.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

/// The commands that write (the database, the evidence tree).
const WRITING: &[&[&str]] = &[
    &["run", "--once"],
    &["cleanup"],
    &["vacuum"],
    &["restore", "SPEC-KIT-900"],
    &["spawn", "--spec", "SPEC-KIT-900", "--stage", "plan"],
];

/// The commands that only read, plan or print.
const READING: &[&[&str]] = &[
    &["check"],
    &["stats"],
    &["jobs"],
    &["plugins"],
    &["guard", "SPEC-KIT-900"],
    &["cleanup", "--dry-run"],
    &["vacuum", "--dry-run"],
    &["spawn", "stats"],
    &["spawn", "--list-agents"],
    &["completions", "bash"],
    &["man"],
];

/// A repository in upstream's layout without a speckit.toml; also the home folder, so the
/// defaults' `~/.code/consensus_artifacts.db` would appear in it if anything wrote.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    speckit_testkit::repository::upstream_layout(dir.path(), &[("SPEC-KIT-900", "Done")]).unwrap();
    dir
}

fn hygiene(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("CODE_HOME", dir.join(".code"));
    speckit_testkit::process::without_speckit_env(&mut cmd);
    speckit_testkit::process::output_within(
        &mut cmd,
        Duration::from_secs(60),
        &format!("speckit-hygiene {args:?}"),
    )
}

/// Every path under `dir`, sorted.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn writing_commands_without_a_config_exit_2_naming_init_and_create_nothing() {
    let repo = repository();
    let before = tree(repo.path());
    let expected = format!(
        "error: no config file: {} does not exist, and neither --config nor $SPECKIT_CONFIG names one. This command writes (the database, the evidence tree), so it does not run on the defaults, which point at the host's shared ~/.code/consensus_artifacts.db; nothing was done. Run `speckit-hygiene init` to write a speckit.toml for this repository, or pass `--config FILE`.\n",
        repo.path().join("speckit.toml").display()
    );
    for args in WRITING {
        let out = hygiene(repo.path(), args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stderr), expected, "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    }
    assert_eq!(
        tree(repo.path()),
        before,
        "a refused command created something"
    );
    assert!(!repo.path().join(".code/consensus_artifacts.db").exists());
}

#[test]
fn reading_commands_without_a_config_run_on_the_defaults() {
    let repo = repository();
    let before = tree(repo.path());
    for args in READING {
        let out = hygiene(repo.path(), args);
        let stderr = text(&out.stderr);
        assert!(
            out.status.code().is_some_and(|c| c != 2),
            "{args:?}: {:?} {stderr}",
            out.status.code()
        );
        assert!(
            !stderr.contains("error: no config file"),
            "{args:?}: {stderr}"
        );
    }
    let check = hygiene(repo.path(), &["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert!(text(&check.stdout).contains("(not found: defaults)"));
    assert!(
        text(&check.stderr).contains("note: no config file:"),
        "{}",
        text(&check.stderr)
    );
    assert_eq!(
        tree(repo.path()),
        before,
        "a reading command created something"
    );
}

#[test]
fn a_config_named_by_the_environment_lets_writing_commands_run() {
    let repo = repository();
    let config = repo.path().join("elsewhere.toml");
    std::fs::write(&config, "[storage]\ndatabase_path = \"consensus.db\"\n").unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("vacuum")
        .current_dir(repo.path())
        .env("HOME", repo.path())
        .env("SPECKIT_CONFIG", &config);
    let out = speckit_testkit::process::output_within(
        &mut cmd,
        Duration::from_secs(60),
        "speckit-hygiene vacuum",
    );
    // Runs: on a database that does not exist, vacuum says so and creates nothing.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing to vacuum"),
        "{}",
        text(&out.stderr)
    );
}
