//! `init`: finds the evidence root and the trackers of a repository laid out as upstream's
//! (built here, and upstream's real tree linked from the fixtures), writes a commented
//! `speckit.toml` that `check` passes, chooses the database explicitly, never replaces a
//! file without `--force`, and says what it did not find.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use speckit_testkit::repository::{upstream_layout, EVIDENCE_ROOT};

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

/// Runs the CLI in `cwd`, with `home` as the home folder and no SPECKIT_ variables.
fn hygiene(cwd: &Path, home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd).env("HOME", home);
    speckit_testkit::process::without_speckit_env(&mut cmd);
    speckit_testkit::process::output_within(
        &mut cmd,
        Duration::from_secs(60),
        &format!("speckit-hygiene {args:?}"),
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts exit status 0 and returns stdout.
fn success(out: &Output, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Every key the file sets has a comment line right above it (or above its section's
/// first key): nothing is written unexplained.
fn assert_every_key_is_explained(file: &str) {
    let lines: Vec<&str> = file.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        assert!(
            i > 0 && lines[i - 1].trim_start().starts_with('#'),
            "{line:?} has no comment above it:\n{file}"
        );
    }
}

/// `check` on the file init wrote in `dir`: exit 0, no error or warning.
fn assert_check_passes(dir: &Path, home: &Path) {
    let out = hygiene(dir, home, &["check"]);
    let stdout = success(&out, "check");
    let stderr = text(&out.stderr);
    assert!(
        stdout.starts_with(&format!(
            "policy OK: {}",
            dir.join("speckit.toml").display()
        )),
        "{stdout}"
    );
    assert!(!stderr.contains("error:"), "{stderr}");
    assert!(!stderr.contains("warning:"), "{stderr}");
}

#[test]
fn init_finds_the_root_and_trackers_of_an_upstream_layout_and_check_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = upstream_layout(
        dir.path(),
        &[
            ("SPEC-KIT-900", "Done"),
            ("SPEC-KIT-901", "In Progress"),
            ("SPEC-KIT-902", "Backlog"),
        ],
    )
    .unwrap();
    // A SPEC.md that is not a tracker, and a build folder with evidence-like copies: the
    // first is reported and left out, the second never looked at.
    std::fs::create_dir_all(dir.path().join("notes")).unwrap();
    std::fs::write(dir.path().join("notes/SPEC.md"), "# How we write SPECs\n").unwrap();
    std::fs::create_dir_all(dir.path().join("target/copy/commands/SPEC-KIT-999")).unwrap();

    let out = hygiene(dir.path(), dir.path(), &["init"]);
    let stdout = success(&out, "init");
    for expected in [
        format!(
            "Looked for the evidence root and the SPEC trackers under {}:\n",
            dir.path().display()
        ),
        format!("  evidence root   {EVIDENCE_ROOT}: 3 SPECs in 3 SPEC folders\n"),
        "  SPEC tracker    SPEC.md: 3 status rows, 3 SPECs\n".to_string(),
        "  not a tracker   notes/SPEC.md: no table with an ID column and a Status column\n"
            .to_string(),
        "  database        .speckit/consensus_artifacts.db, per repository (no --database given; --database host uses the host's ~/.code/consensus_artifacts.db)\n".to_string(),
        format!("Wrote {}.\n", dir.path().join("speckit.toml").display()),
        "Next: speckit-hygiene check, then speckit-hygiene cleanup --dry-run\n".to_string(),
    ] {
        assert!(stdout.contains(&expected), "{expected:?} missing:\n{stdout}");
    }
    assert!(!stdout.contains("target/"), "{stdout}");

    let file = std::fs::read_to_string(dir.path().join("speckit.toml")).unwrap();
    assert!(
        file.contains(&format!("\nroot = \"{EVIDENCE_ROOT}\"\n")),
        "{file}"
    );
    assert!(file.contains("\ntracker_paths = [\"SPEC.md\"]\n"), "{file}");
    assert!(
        file.contains("\ndatabase_path = \".speckit/consensus_artifacts.db\"\n"),
        "{file}"
    );
    assert!(
        file.contains("per repository (the default, as init was run without --database)"),
        "{file}"
    );
    assert_every_key_is_explained(&file);

    assert_check_passes(dir.path(), dir.path());
    let json = hygiene(dir.path(), dir.path(), &["check", "--json"]);
    let json = speckit_testkit::json::data(success(&json, "check --json").as_bytes());
    assert_eq!(json["valid"], true);
    assert_eq!(
        json["policy"]["evidence"]["root"],
        repo.root.display().to_string()
    );
    assert_eq!(
        json["policy"]["evidence"]["tracker_paths"][0],
        repo.tracker.display().to_string()
    );
    // Neither init nor check made the database (or its folder).
    assert!(!dir.path().join(".speckit").exists());
}

#[test]
fn init_on_upstreams_real_tree_in_another_folder_and_check_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    speckit_testkit::fixtures::linked_upstream_repository(&repo);
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();

    let out = hygiene(
        &elsewhere,
        dir.path(),
        &[
            "init",
            "--dir",
            repo.to_str().unwrap(),
            "--database",
            "repo",
        ],
    );
    let stdout = success(&out, "init --dir");
    for expected in [
        format!("  evidence root   {EVIDENCE_ROOT}: 11 SPECs in 12 SPEC folders\n"),
        format!(
            "  also evidence   codex-rs/{EVIDENCE_ROOT} (1 SPEC folder): not used, one root per speckit.toml\n"
        ),
        "  SPEC tracker    SPEC.md: 91 status rows, 91 SPECs\n".to_string(),
        "  SPEC tracker    codex-rs/SPEC.md: 7 status rows, 7 SPECs\n".to_string(),
        "  database        .speckit/consensus_artifacts.db, per repository (--database repo)\n"
            .to_string(),
        format!("Wrote {}.\n", repo.join("speckit.toml").display()),
        format!(
            "Next: cd {} && speckit-hygiene check, then speckit-hygiene cleanup --dry-run\n",
            repo.display()
        ),
    ] {
        assert!(stdout.contains(&expected), "{expected:?} missing:\n{stdout}");
    }
    // Written in the repository folder (a real folder here), nothing in the fixtures or
    // where it was run.
    assert!(!repo.join("speckit.toml").is_symlink());
    assert!(!speckit_testkit::fixtures::root()
        .join("upstream-evidence/speckit.toml")
        .exists());
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    let file = std::fs::read_to_string(repo.join("speckit.toml")).unwrap();
    assert!(
        file.contains("\ntracker_paths = [\"SPEC.md\", \"codex-rs/SPEC.md\"]\n"),
        "{file}"
    );
    assert!(file.contains("per repository (--database repo)"), "{file}");
    assert_every_key_is_explained(&file);
    assert_check_passes(&repo, dir.path());
}

#[test]
fn init_with_database_host_writes_the_hosts_shared_file() {
    let dir = tempfile::tempdir().unwrap();
    upstream_layout(dir.path(), &[("SPEC-KIT-900", "Done")]).unwrap();
    let out = hygiene(dir.path(), dir.path(), &["init", "--database", "host"]);
    let stdout = success(&out, "init --database host");
    assert!(
        stdout.contains("  database        ~/.code/consensus_artifacts.db, the host application's, shared by every repository (--database host)\n"),
        "{stdout}"
    );
    let file = std::fs::read_to_string(dir.path().join("speckit.toml")).unwrap();
    assert!(
        file.contains("\ndatabase_path = \"~/.code/consensus_artifacts.db\"\n"),
        "{file}"
    );
    assert!(
        file.contains("the spec-kit host application's own (--database host)"),
        "{file}"
    );
    assert_every_key_is_explained(&file);
    assert_check_passes(dir.path(), dir.path());
    let json = hygiene(dir.path(), dir.path(), &["check", "--json"]);
    let json = speckit_testkit::json::data(&json.stdout);
    assert_eq!(
        json["policy"]["storage"]["database_path"],
        dir.path()
            .join(".code/consensus_artifacts.db")
            .display()
            .to_string()
    );
}

#[test]
fn init_refuses_to_replace_a_config_without_force() {
    let dir = tempfile::tempdir().unwrap();
    upstream_layout(dir.path(), &[("SPEC-KIT-900", "Done")]).unwrap();
    let config = dir.path().join("speckit.toml");
    std::fs::write(&config, "# mine\n").unwrap();
    let out = hygiene(dir.path(), dir.path(), &["init"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {} already exists: init does not replace it (pass --force to overwrite it)\n",
            config.display()
        )
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");
    // No temporary file left beside it either.
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".speckit-"))
            .count(),
        0
    );

    let out = hygiene(dir.path(), dir.path(), &["init", "--force"]);
    success(&out, "init --force");
    let file = std::fs::read_to_string(&config).unwrap();
    assert!(
        file.contains(&format!("root = \"{EVIDENCE_ROOT}\"")),
        "{file}"
    );
    assert_check_passes(dir.path(), dir.path());
}

#[test]
fn init_where_nothing_is_found_writes_the_default_root_commented_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = hygiene(dir.path(), dir.path(), &["init"]);
    let stdout = success(&out, "init");
    for expected in [
        format!("  evidence root   not found (no commands/SPEC-*/ or consensus/SPEC-*/ within 5 folders): the default {EVIDENCE_ROOT} is left commented out; set [evidence] root once spec-kit has written evidence\n"),
        "  SPEC tracker    not found (no SPEC.md holding a table with an ID column and a Status column): tracker_paths = [], so every SPEC is protected until you list yours\n".to_string(),
        format!(
            "Next: set [evidence] root in {} (until then `speckit-hygiene check` reports the evidence root as missing)\n",
            dir.path().join("speckit.toml").display()
        ),
    ] {
        assert!(stdout.contains(&expected), "{expected:?} missing:\n{stdout}");
    }
    let file = std::fs::read_to_string(dir.path().join("speckit.toml")).unwrap();
    assert!(
        file.contains(&format!("\n# root = \"{EVIDENCE_ROOT}\"\n")),
        "{file}"
    );
    assert!(file.contains("\ntracker_paths = []\n"), "{file}");
    assert_every_key_is_explained(&file);
    // The file is valid; check says what is missing, as init said it would.
    let check = hygiene(dir.path(), dir.path(), &["check"]);
    assert_eq!(check.status.code(), Some(2));
    let stderr = text(&check.stderr);
    assert!(
        stderr.contains(&format!(
            "error: evidence root {} does not exist",
            dir.path().join(EVIDENCE_ROOT).display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("warning: no SPEC tracker"), "{stderr}");
}

#[test]
fn init_refuses_a_dir_that_is_not_a_folder_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = hygiene(dir.path(), dir.path(), &["init", "--dir", "missing"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr), "error: --dir missing: not a folder\n");
    let out = hygiene(dir.path(), dir.path(), &["--config", "x.toml", "init"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("pass --dir to choose the folder"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
