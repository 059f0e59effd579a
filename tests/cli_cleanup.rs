//! `speckit-hygiene cleanup` and `restore` end to end: the JSON keys, the dry run printing
//! the exact plan and changing nothing, exit status 1 when a file errors (with its path)
//! or the plan is refused, 2 for a SPEC-ID that could escape a folder.

use chrono::Utc;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

struct Ws {
    dir: tempfile::TempDir,
    config: PathBuf,
    root: PathBuf,
}

fn workspace(max_removal_fraction: f64) -> Ws {
    workspace_aged(max_removal_fraction, 2)
}

/// Like [`workspace`], with the newest evidence file `newest_days` old.
fn workspace_aged(max_removal_fraction: f64, newest_days: i64) -> Ws {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("evidence");
    let specs: Vec<_> = [
        ("SPEC-KIT-100", 8),
        ("SPEC-KIT-101", 8),
        ("SPEC-KIT-200", 8),
    ]
    .iter()
    .map(|(s, n)| speckit_testkit::evidence::SpecEvidence {
        spec_id: s.to_string(),
        files_per_kind: *n,
        file_bytes: 900,
        oldest_age: chrono::Duration::days(150),
        newest_age: chrono::Duration::days(newest_days),
    })
    .collect();
    speckit_testkit::evidence::generate(&root, &specs, Utc::now()).unwrap();
    speckit_testkit::tracker::write_four_column(
        &dir.path().join("SPEC.md"),
        &[
            ("SPEC-KIT-100", "Done"),
            ("SPEC-KIT-101", "Done"),
            ("SPEC-KIT-200", "In Progress"),
        ],
    )
    .unwrap();
    let config = dir.path().join("speckit.toml");
    std::fs::write(
        &config,
        format!("[storage]\ndatabase_path = \"db.sqlite\"\n[evidence]\nroot = \"evidence\"\ntracker_paths = [\"SPEC.md\"]\n[retention]\nmax_removal_fraction = {max_removal_fraction}\n"),
    )
    .unwrap();
    Ws { dir, config, root }
}

fn hygiene(ws: &Ws, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(&ws.config).args(args);
    speckit_testkit::process::without_speckit_env(&mut cmd);
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(
                    e.path()
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

#[test]
fn dry_run_json_is_the_plan_and_the_real_run_does_it() {
    let ws = workspace(1.0);
    let before = files(&ws.root);
    let out = hygiene(&ws, &["cleanup", "--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = speckit_testkit::json::data(&out.stdout);
    for key in [
        "archived_files",
        "purged_archives",
        "bytes_reclaimed",
        "exempt_specs",
        "errors",
        "actions",
    ] {
        assert!(plan.get(key).is_some(), "--json lacks {key}: {plan}");
    }
    assert_eq!(files(&ws.root), before, "the dry run changed nothing");
    let actions = plan["actions"].as_array().unwrap();
    assert!(actions
        .iter()
        .all(|a| a["action"].is_string() && a["path"].is_string()));
    let planned: Vec<(String, String)> = actions
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().into(),
                a["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(planned.iter().any(|(a, _)| a == "archive"));
    assert!(planned
        .iter()
        .any(|(a, p)| a == "exempt" && p == "commands/SPEC-KIT-200"));

    // Human dry run: one line per action.
    let out = hygiene(&ws, &["cleanup", "--dry-run"]);
    let human = text(&out.stdout);
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("archive ") && l.contains(" -> cleanup/archives/SPEC-KIT-100/")),
        "{human}"
    );
    assert!(human.contains("dry run, nothing changed"));

    let out = hygiene(&ws, &["cleanup", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let done = speckit_testkit::json::data(&out.stdout);
    let executed: Vec<(String, String)> = done["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().into(),
                a["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        executed, planned,
        "the run executes exactly the dry run's plan"
    );
    let archived = planned.iter().filter(|(a, _)| a == "archive").count();
    assert_eq!(done["archived_files"], archived);
    assert!(done["bytes_reclaimed"].as_i64().unwrap() > 0);
    assert_eq!(done["errors"].as_array().unwrap().len(), 0);
    for (_, path) in planned.iter().filter(|(a, _)| a == "archive") {
        assert!(!ws.root.join(path).exists());
    }
    // Restore puts SPEC-KIT-100 back.
    let out = hygiene(&ws, &["restore", "SPEC-KIT-100", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let restored = speckit_testkit::json::data(&out.stdout);
    assert!(restored["restored_files"].as_u64().unwrap() > 0);
    for (_, path) in planned
        .iter()
        .filter(|(a, p)| a == "archive" && p.contains("SPEC-KIT-100/"))
    {
        assert!(ws.root.join(path).exists(), "{path} restored");
    }
}

#[test]
fn a_file_error_names_the_path_and_exits_1() {
    let ws = workspace(1.0);
    // SPEC-KIT-100's archive folder is a file: its archive cannot be written.
    std::fs::create_dir_all(ws.root.join("cleanup/archives")).unwrap();
    std::fs::write(ws.root.join("cleanup/archives/SPEC-KIT-100"), b"in the way").unwrap();
    let before = files(&ws.root);
    let out = hygiene(&ws, &["cleanup"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    // The error is a diagnostic: on stderr, and only there.
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!stdout.contains("error: "), "{stdout}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains("cleanup/archives/SPEC-KIT-100")),
        "{stderr}"
    );
    // SPEC-KIT-100's sources stay; SPEC-KIT-101 was cleaned.
    let after = files(&ws.root);
    for f in before.iter().filter(|f| f.contains("SPEC-KIT-100/")) {
        assert!(after.contains(f), "{f}");
    }
    assert!(
        after.iter().filter(|f| f.contains("SPEC-KIT-101/")).count()
            < before
                .iter()
                .filter(|f| f.contains("SPEC-KIT-101/"))
                .count()
    );
}

#[test]
fn a_large_first_cleanup_is_allowed_and_says_what_it_did() {
    // Most files of the tree are old and finished: archiving them is verified and
    // restorable, so max_removal_fraction does not stop it.
    let ws = workspace(0.05);
    let out = hygiene(&ws, &["cleanup"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("first cleanup: archived") && stdout.contains("speckit-hygiene restore"),
        "{stdout}"
    );
}

#[test]
fn a_plan_removing_too_much_exits_1_unless_forced() {
    // Nothing written for 40 days, and the plan archives most files: the clock signal.
    let ws = workspace_aged(0.05, 40);
    let before = files(&ws.root);
    let out = hygiene(&ws, &["cleanup"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("max_removal_fraction")
            && stdout.contains("[clock]")
            && stdout.contains("--force"),
        "{stdout}"
    );
    assert_eq!(files(&ws.root), before);
    let out = hygiene(&ws, &["cleanup", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("forced past the clock guard"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn spec_ids_that_could_escape_a_folder_exit_2() {
    let ws = workspace(1.0);
    for bad in ["../x", "a/b", ".hidden"] {
        let out = hygiene(&ws, &["cleanup", "--spec", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(text(&out.stderr).contains(bad), "{}", text(&out.stderr));
        let out = hygiene(&ws, &["restore", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
    let missing = ws.dir.path().join("missing.tar.zst");
    let out = hygiene(
        &ws,
        &[
            "restore",
            "SPEC-KIT-100",
            "--archive",
            missing.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.tar.zst"));
}
