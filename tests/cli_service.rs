//! `service systemd` and `service cron` for a repository whose path has a space: the unit
//! passes `systemd-analyze verify` with nothing to say and its command runs; the cron
//! line's schedule is a valid five-field expression and its command runs quietly; with no
//! config file, both refuse (exit 2) naming `init`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

fn repository() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("my repo's spec-kit");
    std::fs::create_dir_all(repo.join("evidence/commands/SPEC-KIT-001")).unwrap();
    speckit_testkit::tracker::write_four_column(
        &repo.join("SPEC.md"),
        &[("SPEC-KIT-001", "In Progress")],
    )
    .unwrap();
    std::fs::write(
        repo.join("speckit.toml"),
        "[storage]\ndatabase_path = \"db.sqlite\"\n[evidence]\nroot = \"evidence\"\n",
    )
    .unwrap();
    (dir, repo)
}

fn service(repo: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("service")
        .args(args)
        .current_dir(repo)
        .env_remove("SPECKIT_CONFIG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The words of a systemd command line (double quotes, `\\` and `\"` escapes).
fn systemd_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut chars) = (Vec::new(), None, false, line.chars());
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            '\\' if quoted => word.get_or_insert_with(String::new).extend(chars.next()),
            c if c.is_whitespace() && !quoted => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

#[test]
fn the_systemd_unit_verifies_and_its_command_runs() {
    let (dir, repo) = repository();
    let out = service(&repo, &["systemd"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let unit = text(&out.stdout);
    assert!(
        unit.contains("systemctl --user enable --now speckit-hygiene-my-repo-s-spec-kit"),
        "{unit}"
    );
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => {
            let file = dir
                .path()
                .join("speckit-hygiene-my-repo-s-spec-kit.service");
            std::fs::write(&file, &unit).unwrap();
            let verify = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&file)
                .output()
                .unwrap();
            let said = format!("{}{}", text(&verify.stdout), text(&verify.stderr));
            assert!(
                verify.status.success() && said.trim().is_empty(),
                "{said}\n{unit}"
            );
        }
        _ if std::env::var_os("CI").is_some() => {
            panic!("systemd-analyze is not installed in CI (.ci/run installs it)")
        }
        _ => eprintln!("skipped systemd-analyze verify: it is not installed"),
    }
    // What ExecStart runs, once (`run --once` instead of the scheduler).
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let words = systemd_words(exec);
    assert_eq!(words.last().map(String::as_str), Some("run"), "{words:?}");
    assert_eq!(
        words[2],
        repo.join("speckit.toml")
            .canonicalize()
            .unwrap()
            .display()
            .to_string()
    );
    let ran = Command::new(&words[0])
        .args(&words[1..])
        .arg("--once")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", text(&ran.stderr));
}

#[test]
fn the_cron_line_is_a_valid_schedule_and_its_command_runs_quietly() {
    let (_dir, repo) = repository();
    let out = service(&repo, &["cron", "--at", "04:30"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout)
        .lines()
        .find(|l| !l.starts_with('#'))
        .expect("a crontab line")
        .to_string();
    let fields: Vec<&str> = line.splitn(6, ' ').collect();
    assert_eq!(&fields[..5], ["30", "4", "*", "*", "*"], "{line}");
    speckit_engine::cron_expr::parse(&fields[..5].join(" ")).expect("a valid cron expression");
    // cron runs the command with /bin/sh from the user's home.
    let ran = Command::new("/bin/sh")
        .arg("-c")
        .arg(fields[5])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    assert_eq!(text(&ran.stdout), "", "nothing for cron to mail");
    assert_eq!(text(&ran.stderr), "", "nothing for cron to mail");
    assert!(
        repo.join("db.sqlite").exists(),
        "the jobs ran on the repository's database"
    );

    let bad = service(&repo, &["cron", "--at", "25:00"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("--at \"25:00\""),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn without_a_config_file_both_refuse_naming_init() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["systemd", "cron"] {
        let out = service(dir.path(), &[kind]);
        assert_eq!(out.status.code(), Some(2), "{kind}");
        assert!(
            text(&out.stderr).contains("speckit-hygiene init"),
            "{}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
}
