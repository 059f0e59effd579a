//! `speckit-hygiene stats` and `guard` end to end: formats, exit statuses (0 allow/warn,
//! 3 block, 2 bad input, 1 unreadable), the real fixtures, and the demo's closing table.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MIB: u64 = 1_048_576;
const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

/// A workspace: `speckit.toml` pointing at `evidence/` (or at `root` when given).
fn workspace(root: Option<&Path>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let evidence = root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.path().join("evidence"));
    let config = dir.path().join("speckit.toml");
    fs::write(
        &config,
        format!(
            "[storage]\ndatabase_path = \"db.sqlite\"\n[evidence]\nroot = {:?}\n",
            evidence.display().to_string()
        ),
    )
    .unwrap();
    (dir, config)
}

fn sparse(path: &Path, len: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::File::create(path).unwrap().set_len(len).unwrap();
}

fn run(config: &Path, args: &[&str]) -> Output {
    command(config, args).output().unwrap()
}

fn command(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(config).args(args);
    cmd.env_remove("SPECKIT_CONFIG").env_remove("NO_COLOR");
    speckit_testkit::process::without_speckit_env(&mut cmd);
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    speckit_testkit::json::data(&out.stdout)
}

#[test]
fn stats_flags_a_commands_only_spec_and_exits_3() {
    let (dir, config) = workspace(None);
    let evidence = dir.path().join("evidence");
    sparse(&evidence.join("commands/SPEC-KIT-060/run.log"), 60 * MIB);
    sparse(&evidence.join("consensus/SPEC-KIT-001/a.json"), 10);

    let out = run(&config, &["stats", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let report = json(&out);
    let specs = report["specs"].as_array().unwrap();
    let spec = specs.iter().find(|s| s["spec"] == "SPEC-KIT-060").unwrap();
    assert_eq!(spec["verdict"], "block");
    assert_eq!(spec["commands"]["bytes"], 60 * MIB);
    assert_eq!(spec["consensus"]["files"], 0);
    assert_eq!(report["counts"]["block"], 1);

    // The table says the same, without colour when stdout is not a terminal.
    let out = run(&config, &["stats"]);
    assert_eq!(out.status.code(), Some(3));
    let table = text(&out.stdout);
    assert!(!table.contains('\x1b'), "{table}");
    let line = table
        .lines()
        .find(|l| l.starts_with("SPEC-KIT-060"))
        .unwrap();
    assert!(
        line.contains("[####################]") && line.ends_with("block"),
        "{line}"
    );
    assert!(line.contains("120%"), "{line}");

    // --spec measures that SPEC only.
    let out = run(&config, &["stats", "--spec", "SPEC-KIT-001", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let report = json(&out);
    assert_eq!(report["specs"].as_array().unwrap().len(), 1);
    assert_eq!(report["root_total"], serde_json::Value::Null);
}

#[test]
fn stats_on_the_real_fixtures_adds_up_like_find() {
    let Some(fixtures) = speckit_testkit::fixtures::optional(
        "upstream-evidence/docs/SPEC-OPS-004-integrated-coder-hooks/evidence",
    ) else {
        return;
    };
    let (_dir, config) = workspace(Some(&fixtures));
    let out = run(&config, &["stats", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = json(&out);
    // Independently: apparent sizes of regular files, symlinks not followed.
    let (mut bytes, mut files, mut stack) = (0u64, 0u64, vec![fixtures.clone()]);
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap() {
            let path = e.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                bytes += meta.len();
                files += 1;
            }
        }
    }
    assert_eq!(report["root_total"]["bytes"], bytes);
    assert_eq!(report["root_total"]["files"], files);
    assert_eq!(report["complete"], true);
}

#[test]
fn prometheus_output_is_the_text_format_with_spec_and_kind_labels() {
    let (dir, config) = workspace(None);
    let evidence = dir.path().join("evidence");
    sparse(&evidence.join("commands/SPEC-KIT-1/a.log"), 41 * MIB);
    sparse(&evidence.join("consensus/SPEC-KIT-1/b.json"), 7);
    sparse(&evidence.join("consensus/SPEC-KIT-2/b.json"), 5);
    let out = run(&config, &["stats", "--format", "prometheus"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let body = text(&out.stdout);

    let mut declared = std::collections::HashSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(kind, "gauge");
            declared.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        // name{labels} value, the name declared before its samples.
        let (series, value) = line.rsplit_once(' ').unwrap();
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            declared.contains(name),
            "{name} sampled before its TYPE line"
        );
    }
    // Every sample names its evidence root, so two repositories on one node do not collide.
    let root = format!("root=\"{}\"", evidence.display());
    for expected in [
        format!("speckit_evidence_bytes{{{root},spec=\"SPEC-KIT-1\",kind=\"commands\"}} 42991616"),
        format!("speckit_evidence_bytes{{{root},spec=\"SPEC-KIT-1\",kind=\"consensus\"}} 7"),
        format!("speckit_evidence_files{{{root},spec=\"SPEC-KIT-2\",kind=\"commands\"}} 0"),
        format!("speckit_evidence_verdict{{{root},spec=\"SPEC-KIT-1\"}} 1"),
        format!("speckit_evidence_verdict{{{root},spec=\"SPEC-KIT-2\"}} 0"),
        format!("speckit_evidence_limit_bytes{{{root},level=\"block\"}} 52428800"),
        format!("speckit_evidence_root_bytes{{{root}}} 42991628"),
        format!("speckit_evidence_complete{{{root}}} 1"),
    ] {
        assert!(
            body.lines().any(|l| l == expected),
            "missing {expected:?} in\n{body}"
        );
    }
}

#[test]
fn stats_names_specs_protected_by_an_unknown_or_conflicting_status() {
    let (dir, config) = workspace(None);
    let evidence = dir.path().join("evidence");
    sparse(&evidence.join("commands/SPEC-KIT-1/a.log"), 10);
    sparse(&evidence.join("commands/SPEC-KIT-2/a.log"), 10);
    sparse(&evidence.join("commands/SPEC-KIT-3/a.log"), 10);
    let mut policy = fs::read_to_string(&config).unwrap();
    policy.push_str("tracker_paths = [\"SPEC.md\"]\n");
    fs::write(&config, policy).unwrap();
    fs::write(
        dir.path().join("SPEC.md"),
        "| Spec | Status | Owner | Next Action |\n|---|---|---|---|\n\
         | SPEC-KIT-1 | On Hold | a | - |\n| SPEC-KIT-2 | Done | b | - |\n| SPEC-KIT-2 | WIP | b | - |\n| SPEC-KIT-3 | **Done** | c | - |\n",
    )
    .unwrap();
    let out = run(&config, &["stats"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("SPEC-KIT-1 is protected: status \"On Hold\"")
            && table.contains("SPEC.md:3"),
        "{table}"
    );
    assert!(
        table.contains("SPEC-KIT-2 is protected: its tracker rows disagree"),
        "{table}"
    );
    assert!(!table.contains("SPEC-KIT-3 is protected"), "{table}");
    let out = run(&config, &["stats", "--json"]);
    let json = json(&out);
    let protected: Vec<&str> = json["protected_specs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spec"].as_str().unwrap())
        .collect();
    assert_eq!(protected, ["SPEC-KIT-1", "SPEC-KIT-2"]);
    assert_eq!(json["protected_specs"][0]["rows"][0]["status"], "On Hold");
}

#[test]
fn guard_exits_0_on_allow_and_warn_3_on_block() {
    let (dir, config) = workspace(None);
    let evidence = dir.path().join("evidence");
    sparse(&evidence.join("commands/SPEC-KIT-1/a.log"), 40 * MIB);
    sparse(&evidence.join("consensus/SPEC-KIT-2/a.json"), 40 * MIB + 1);
    sparse(&evidence.join("commands/SPEC-KIT-3/a.log"), 50 * MIB + 1);

    let allow = run(&config, &["guard", "SPEC-KIT-1"]);
    assert_eq!(allow.status.code(), Some(0));
    assert!(text(&allow.stdout).starts_with("allow: SPEC-KIT-1"));
    assert!(allow.stderr.is_empty(), "{}", text(&allow.stderr));

    let warn = run(&config, &["guard", "SPEC-KIT-2"]);
    assert_eq!(warn.status.code(), Some(0));
    let message = text(&warn.stderr);
    assert!(message.starts_with("warning: SPEC-KIT-2"), "{message}");
    assert!(message.contains("41943041 bytes") && message.contains("40 MiB warning size"));

    let block = run(&config, &["guard", "SPEC-KIT-3"]);
    assert_eq!(block.status.code(), Some(3));
    let message = text(&block.stderr);
    assert!(message.starts_with("blocked: SPEC-KIT-3"), "{message}");
    assert!(message.contains("above the 50 MiB limit"), "{message}");
    assert!(message.contains("speckit-hygiene cleanup --dry-run --spec SPEC-KIT-3"));
    assert!(message.contains("1 B (1 bytes)"), "what must go: {message}");

    let json_out = run(&config, &["guard", "SPEC-KIT-3", "--json"]);
    assert_eq!(json_out.status.code(), Some(3));
    let verdict = json(&json_out);
    assert_eq!(verdict["verdict"], "block");
    assert_eq!(verdict["action"]["must_free_bytes"], 1);

    // A SPEC without evidence yet may start.
    let none = run(&config, &["guard", "SPEC-KIT-404"]);
    assert_eq!(none.status.code(), Some(0));
    assert!(text(&none.stdout).contains("no evidence folder yet"));
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let (dir, config) = workspace(None);
    fs::create_dir_all(dir.path().join("evidence/commands")).unwrap();
    for bad in ["../x", "a/b", "..", ".hidden", "a b", ""] {
        for args in [vec!["guard", bad], vec!["stats", "--spec", bad]] {
            let out = run(&config, &args);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?}: {}",
                text(&out.stderr)
            );
            let stderr = text(&out.stderr);
            assert!(stderr.contains("invalid SPEC-ID"), "{args:?}: {stderr}");
        }
    }

    let (_dir, config) = workspace(Some(Path::new("/nonexistent/evidence-root")));
    for args in [vec!["guard", "SPEC-KIT-1"], vec!["stats"]] {
        let out = run(&config, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("/nonexistent/evidence-root does not exist")
                && stderr.contains("evidence.root, from file"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn an_unreadable_folder_is_reported_and_exits_1() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let (dir, config) = workspace(None);
    let evidence = dir.path().join("evidence");
    sparse(&evidence.join("commands/SPEC-KIT-1/a.log"), 3);
    sparse(&evidence.join("commands/SPEC-KIT-2/locked/b.log"), 4);
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let locked = evidence.join("commands/SPEC-KIT-2/locked");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();

    // Root ignores permission bits: run the command as `nobody` instead.
    let mut cmd = command(&config, &["stats", "--json"]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    if text(&out.stderr).contains("Permission denied") && out.stdout.is_empty() {
        eprintln!(
            "note: skipped: nobody cannot run the binary here: {}",
            text(&out.stderr)
        );
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = json(&out);
    assert_eq!(report["complete"], false);
    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["path"], "commands/SPEC-KIT-2/locked");
    assert_eq!(skipped[0]["reason"], "unreadable");
    let two = report["specs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["spec"] == "SPEC-KIT-2")
        .unwrap();
    assert_eq!(two["unreadable_entries"], 1);
}

#[test]
fn the_demo_pass_ends_with_the_stats_table() {
    let out = Command::new(BIN)
        .arg("demo")
        .env_remove("SPECKIT_CONFIG")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    let stats = stdout
        .rfind("\n== stats")
        .unwrap_or_else(|| panic!("no stats section in\n{stdout}"));
    let last_section = stdout.rfind("\n== ").unwrap();
    assert_eq!(
        stats, last_section,
        "the stats table is not last:\n{stdout}"
    );
    let table = &stdout[stats..];
    assert!(table.contains("USE OF LIMIT"));
    for spec in [
        "SPEC-KIT-900",
        "SPEC-KIT-901",
        "SPEC-KIT-902",
        "SPEC-KIT-903",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(spec)),
            "{spec} in\n{table}"
        );
    }
    assert!(table.contains("SPECs: "));
}

#[test]
fn guard_block_says_what_cleanup_would_free_from_the_plan() {
    let (dir, config) = workspace(None);
    let evidence = dir.path().join("evidence");
    let old = evidence.join("commands/SPEC-KIT-070/old.log");
    sparse(&old, 8 * MIB);
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(100 * 86_400))
        .unwrap();
    sparse(&evidence.join("consensus/SPEC-KIT-070/new.json"), 45 * MIB);
    sparse(&evidence.join("consensus/SPEC-KIT-071/new.json"), 51 * MIB);
    fs::write(
        dir.path().join("SPEC.md"),
        "| Spec | Status | Owner | Next Action |\n|---|---|---|---|\n\
         | SPEC-KIT-070 | Done | a | - |\n| SPEC-KIT-071 | In Progress | b | - |\n",
    )
    .unwrap();

    // Without a database the plan cannot be asked: the block points to a dry run.
    let out = run(&config, &["guard", "SPEC-KIT-070"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("cleanup --dry-run --spec SPEC-KIT-070"));
    assert!(
        !dir.path().join("db.sqlite").exists(),
        "guard created the database"
    );

    let storage = speckit_engine::Storage::open(speckit_engine::storage::StorageOptions::new(
        dir.path().join("db.sqlite"),
    ))
    .unwrap();
    storage.close();
    let out = run(&config, &["guard", "SPEC-KIT-070"]);
    assert_eq!(out.status.code(), Some(3));
    let message = text(&out.stderr);
    assert!(
        message.contains("run `speckit-hygiene cleanup --spec SPEC-KIT-070`: it would archive 8.0 MiB in 1 file, enough"),
        "{message}"
    );
    let out = run(&config, &["guard", "SPEC-KIT-071"]);
    assert_eq!(out.status.code(), Some(3));
    let message = text(&out.stderr);
    assert!(
        message.contains("by hand: cleanup leaves SPEC-KIT-071 alone (active"),
        "{message}"
    );
    assert!(old.exists(), "the guard changed nothing");
}

/// The textfile-collector recipe (`stats --format prometheus > f.tmp && mv f.tmp f`) must
/// publish when a SPEC is over its limit: that is when the alert is due. The table still
/// exits 3.
#[test]
fn prometheus_output_exits_0_when_a_spec_is_blocked() {
    let (dir, config) = workspace(None);
    let evidence = dir.path().join("evidence");
    sparse(&evidence.join("commands/SPEC-KIT-1/a.log"), 60 * MIB);
    let out = run(&config, &["stats", "--format", "prometheus"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let body = text(&out.stdout);
    assert!(
        body.lines()
            .any(|l| l.starts_with("speckit_evidence_verdict{root=")
                && l.ends_with(",spec=\"SPEC-KIT-1\"} 2")),
        "{body}"
    );
    let out = run(&config, &["stats"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

/// `--output FILE` writes the metrics atomically whatever the verdict and keeps the
/// verdict's exit status; `--exit-zero` exits 0 with the data on stdout.
#[test]
fn output_writes_the_file_whatever_the_verdict_and_exit_zero_always_exits_0() {
    let (dir, config) = workspace(None);
    let evidence = dir.path().join("evidence");
    sparse(&evidence.join("commands/SPEC-KIT-1/a.log"), 60 * MIB);
    let textfile = dir.path().join("collector").join("evidence.prom");
    fs::create_dir_all(textfile.parent().unwrap()).unwrap();
    fs::write(&textfile, "old metrics\n").unwrap();
    let out = run(
        &config,
        &[
            "stats",
            "--format",
            "prometheus",
            "--output",
            textfile.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "over its limit: {}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "the metrics go to the file only");
    let body = fs::read_to_string(&textfile).unwrap();
    assert!(body.contains("spec=\"SPEC-KIT-1\"} 2"), "{body}");
    // No temporary file left beside it for the collector to read.
    let names: Vec<_> = fs::read_dir(textfile.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["evidence.prom"], "{names:?}");

    let out = run(&config, &["stats", "--json", "--exit-zero"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(json(&out)["counts"]["block"], 1);

    // Bad input still exits 2 with --exit-zero.
    let out = run(&config, &["stats", "--spec", "../x", "--exit-zero"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
