//! Ages that survive a checkout: in a git work tree whose checkout reset every mtime, a file
//! without a timestamp in its name is aged by the last commit that changed it; untracked
//! and modified files by mtime. Tried on a small repository with hostile names and on a
//! repository made from the real upstream evidence tree with its commit dates.
//!
//! These tests need `git` (`.ci/run` installs it): without it they fail in CI and skip,
//! saying so, elsewhere.

mod cleanup_support;

use chrono::{DateTime, Duration, Utc};
use cleanup_support::*;
use serde_json::json;
use speckit_engine::events::JobOutcome;
use speckit_engine::{Engine, JobTrigger};
use speckit_retention::age::{name_timestamp, AgeSource};
use speckit_retention::git_times::GitTimes;
use speckit_retention::layout::canonical_id;
use speckit_retention::plan::{Action, ActionKind};
use speckit_retention::RetentionPlugin;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

/// Whether `git` runs; in CI its absence fails the test.
fn have_git() -> bool {
    let ok = Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "git is missing in CI: these tests need it (.ci/run installs it)"
        );
        eprintln!("skipped: git is not installed");
    }
    ok
}

/// Runs git in `dir`, isolated from the user's configuration, with both commit dates set
/// to `at` when given.
fn git(dir: &Path, args: &[&OsStr], at: Option<DateTime<Utc>>) {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    if let Some(at) = at {
        let date = format!("@{} +0000", at.timestamp());
        cmd.env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn commit_all(dir: &Path, message: &str, at: DateTime<Utc>) {
    git(dir, &["add".as_ref(), "-A".as_ref(), ".".as_ref()], None);
    git(
        dir,
        &[
            "commit".as_ref(),
            "-q".as_ref(),
            "-m".as_ref(),
            message.as_ref(),
        ],
        Some(at),
    );
}

fn set_mtime(path: &Path, at: DateTime<Utc>) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(at.into())
        .unwrap();
}

/// Every regular file under `dir` (its own `.git` left out).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() && e.file_name() != ".git" {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

async fn dry_run(engine: &Engine, plugin: &RetentionPlugin) -> Vec<Action> {
    let run = engine
        .run_job(
            "cleanup",
            JobTrigger::Manual,
            json!({ "dry_run": true, "list_actions": true }),
        )
        .await
        .unwrap();
    assert_eq!(run.outcome, JobOutcome::Succeeded, "{:?}", run.report);
    plugin.take_actions(run.run_id).expect("dry-run actions")
}

fn made_at(a: &Action) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(a.made_at.as_deref().unwrap())
        .unwrap()
        .into()
}

#[tokio::test]
async fn a_checkout_that_reset_every_mtime_keeps_commit_ages() {
    if !have_git() {
        return;
    }
    let ws = Ws::new(&[("SPEC-KIT-100", "Done")], "");
    let now = now();
    let (old, gone, recent) = (
        now - Duration::days(90),
        now - Duration::days(80),
        now - Duration::days(10),
    );
    // The repository is the workspace: the evidence root is a folder inside the work tree.
    git(ws.dir.path(), &["init".as_ref(), "-q".as_ref()], None);
    let dir = ws.root.join("commands/SPEC-KIT-100");
    std::fs::create_dir_all(&dir).unwrap();
    let young_dated = format!(
        "spec-plan_{}-1.json",
        (now - Duration::days(5)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let non_utf8 = OsStr::from_bytes(b"b\xff_verdict.json");
    let committed: Vec<&OsStr> = vec![
        "plan_verdict.json".as_ref(),
        "with space_verdict.json".as_ref(),
        "new\nline_verdict.json".as_ref(),
        "\nleading newline_verdict.json".as_ref(),
        non_utf8,
        "modified_verdict.json".as_ref(),
        "recent_verdict.json".as_ref(),
        "gone_verdict.json".as_ref(),
        "spec-plan_2025-10-12T20:50:45Z-1.json".as_ref(),
        young_dated.as_ref(),
    ];
    for name in &committed {
        std::fs::write(dir.join(name), b"{\"v\":1}").unwrap();
    }
    commit_all(ws.dir.path(), "evidence", old);
    git(
        ws.dir.path(),
        &[
            "rm".as_ref(),
            "-q".as_ref(),
            dir.join("gone_verdict.json").as_os_str(),
        ],
        None,
    );
    git(
        ws.dir.path(),
        &[
            "commit".as_ref(),
            "-q".as_ref(),
            "-m".as_ref(),
            "rm".as_ref(),
        ],
        Some(gone),
    );
    std::fs::write(dir.join("recent_verdict.json"), b"{\"v\":2}").unwrap();
    commit_all(ws.dir.path(), "rewrite", recent);
    // The work tree now: a modified file, an untracked one, and a deleted file made again
    // without being committed (git's history has its name, HEAD does not).
    std::fs::write(dir.join("modified_verdict.json"), b"{\"v\":3}").unwrap();
    std::fs::write(dir.join("untracked_verdict.json"), b"{}").unwrap();
    std::fs::write(dir.join("gone_verdict.json"), b"{}").unwrap();
    // The checkout: every mtime is now, except the two files git does not know, which were
    // written 60 days ago.
    for f in files_under(&ws.root) {
        set_mtime(&f, now);
    }
    let by_mtime = now - Duration::days(60);
    set_mtime(&dir.join("untracked_verdict.json"), by_mtime);
    set_mtime(&dir.join("gone_verdict.json"), by_mtime);

    // The stat data of every file now differs from the index: git compares content, and a
    // dry run must not write the refreshed index.
    let index = ws.dir.path().join(".git/index");
    let index_before = (
        std::fs::read(&index).unwrap(),
        std::fs::metadata(&index).unwrap().modified().unwrap(),
    );
    let times = GitTimes::load(&ws.root).expect("a work tree");
    let rel = |name: &OsStr| Path::new("commands/SPEC-KIT-100").join(name);
    for (name, want) in [
        (OsStr::new("plan_verdict.json"), Some(old)),
        ("with space_verdict.json".as_ref(), Some(old)),
        ("new\nline_verdict.json".as_ref(), Some(old)),
        ("\nleading newline_verdict.json".as_ref(), Some(old)),
        (non_utf8, Some(old)),
        ("recent_verdict.json".as_ref(), Some(recent)),
        ("modified_verdict.json".as_ref(), None),
        ("untracked_verdict.json".as_ref(), None),
        ("gone_verdict.json".as_ref(), None),
    ] {
        assert_eq!(times.commit_time(&rel(name)), want, "{name:?}");
    }

    let plugin = Arc::new(RetentionPlugin::new());
    let engine = ws.engine(now, plugin.clone()).await;
    let actions = dry_run(&engine, &plugin).await;
    let archived: BTreeMap<String, (AgeSource, DateTime<Utc>)> = actions
        .iter()
        .filter(|a| a.action == ActionKind::Archive)
        .map(|a| {
            let name = a.path.rsplit('/').next().unwrap().to_string();
            (name, (a.age_source.unwrap(), made_at(a)))
        })
        .collect();
    let dated = chrono::TimeZone::with_ymd_and_hms(&Utc, 2025, 10, 12, 20, 50, 45).unwrap();
    let mut want = BTreeMap::from([
        ("plan_verdict.json", (AgeSource::GitCommit, old)),
        ("with space_verdict.json", (AgeSource::GitCommit, old)),
        ("new\nline_verdict.json", (AgeSource::GitCommit, old)),
        (
            "\nleading newline_verdict.json",
            (AgeSource::GitCommit, old),
        ),
        (
            "spec-plan_2025-10-12T20:50:45Z-1.json",
            (AgeSource::Name, dated),
        ),
        ("untracked_verdict.json", (AgeSource::Mtime, by_mtime)),
        ("gone_verdict.json", (AgeSource::Mtime, by_mtime)),
    ])
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect::<BTreeMap<_, _>>();
    // A name that is not UTF-8 cannot be planned by path today (it is reported as
    // skipped); if it ever is, its age must come from git as well.
    if let Some(a) = actions
        .iter()
        .find(|a| a.action == ActionKind::Archive && a.path.contains("b\u{FFFD}_verdict"))
    {
        want.insert(
            a.path.rsplit('/').next().unwrap().to_string(),
            (AgeSource::GitCommit, old),
        );
    }
    // Not planned: the modified file (its mtime is now, its commit time is not its
    // content's), the one rewritten 10 days ago, the young dated one.
    assert_eq!(archived, want);
    let index_after = (
        std::fs::read(&index).unwrap(),
        std::fs::metadata(&index).unwrap().modified().unwrap(),
    );
    assert!(index_before == index_after, "the dry run wrote git's index");
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}

struct Row {
    path: String,
    bytes: u64,
    last_modified: DateTime<Utc>,
}

fn manifest(fixtures: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(fixtures.join("upstream-evidence/MANIFEST.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (p, b, lm) = (col("path"), col("bytes"), col("last_modified_date"));
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            Row {
                path: cells[p].to_string(),
                bytes: cells[b].parse().unwrap(),
                last_modified: DateTime::parse_from_rfc3339(cells[lm]).unwrap().into(),
            }
        })
        .collect()
}

#[tokio::test]
async fn the_real_upstream_tree_is_aged_by_its_history() {
    if !have_git() {
        return;
    }
    let Some(_) = speckit_testkit::fixtures::optional("upstream-evidence/MANIFEST.tsv") else {
        return;
    };
    let fixtures = speckit_testkit::fixtures::root();
    let rows = manifest(&fixtures);
    let prefix = "docs/SPEC-OPS-004-integrated-coder-hooks/evidence";
    // Every SPEC of the tree is finished (a local tracker): what is archived is decided by
    // age alone.
    let mut ids = BTreeSet::new();
    for r in &rows {
        let parts: Vec<&str> = r.path.split('/').collect();
        if r.path.starts_with(prefix)
            && matches!(parts[3], "commands" | "consensus")
            && parts.len() > 5
        {
            ids.insert(canonical_id(parts[4]).to_string());
        }
    }
    let statuses: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "Done")).collect();
    let ws = Ws::new(&statuses, "");
    // The archive age splits the tree's history: now is 2026-03-01, so 90 days is
    // 2025-12-01, between SPEC-KIT-900's verdicts (2025-11-11) and SPEC-DOGFOOD-001's
    // (2025-12-26).
    let archive_days = 90;
    let cutoff = now() - Duration::days(archive_days);
    let repo = ws.dir.path().join("repo");
    std::fs::write(
        &ws.config,
        BASE_CONFIG
            .replace("root = \"evidence\"", &format!("root = \"repo/{prefix}\""))
            .replace(
                "archive_after_days = 30",
                &format!("archive_after_days = {archive_days}"),
            )
            .replace("purge_after_days = 90", "purge_after_days = 365"),
    )
    .unwrap();

    // The repository: every file of the manifest (both upstream trees), committed at its
    // last-modified date, one commit per date.
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init".as_ref(), "-q".as_ref()], None);
    let mut by_date: BTreeMap<DateTime<Utc>, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        by_date.entry(r.last_modified).or_default().push(r);
    }
    for (at, group) in &by_date {
        for r in group {
            let dest = repo.join(&r.path);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(fixtures.join("upstream-evidence").join(&r.path), &dest).unwrap();
            std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
        }
        commit_all(&repo, &format!("evidence of {at}"), *at);
    }
    // The checkout: every mtime is now.
    let root = repo.join(prefix);
    for f in files_under(&repo) {
        set_mtime(&f, now());
    }

    let started = Instant::now();
    let times = GitTimes::load(&root).expect("a work tree");
    let load_time = started.elapsed();
    let in_root: Vec<&Row> = rows.iter().filter(|r| r.path.starts_with(prefix)).collect();
    assert_eq!(
        times.len(),
        in_root.len(),
        "every file of the root is clean in git"
    );
    for r in &in_root {
        let rel = Path::new(&r.path[prefix.len() + 1..]);
        assert_eq!(times.commit_time(rel), Some(r.last_modified), "{}", r.path);
    }
    eprintln!(
        "GitTimes::load on the real tree: {} files, {} commits, {load_time:?}",
        times.len(),
        by_date.len()
    );

    let plugin = Arc::new(RetentionPlugin::new());
    let engine = ws.engine(now(), plugin.clone()).await;
    let actions = dry_run(&engine, &plugin).await;
    let manifest_of: BTreeMap<String, &Row> = in_root
        .iter()
        .map(|r| (r.path[prefix.len() + 1..].to_string(), *r))
        .collect();
    let mut figures: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut archived = BTreeSet::new();
    for a in actions.iter().filter(|a| a.action == ActionKind::Archive) {
        let source = a.age_source.unwrap();
        let row = manifest_of[&a.path];
        let name = a.path.rsplit('/').next().unwrap();
        match name_timestamp(name) {
            Some(_) => assert_eq!(source, AgeSource::Name, "{}", a.path),
            None => {
                assert_eq!(source, AgeSource::GitCommit, "{}", a.path);
                assert_eq!(made_at(a), row.last_modified, "{}", a.path);
            }
        }
        let f = figures.entry(format!("{source:?}")).or_default();
        f.0 += 1;
        f.1 += a.bytes.unwrap();
        archived.insert(a.path.clone());
    }
    let kept: BTreeSet<&str> = actions
        .iter()
        .filter(|a| a.action == ActionKind::Keep)
        .map(|a| a.path.as_str())
        .collect();
    // The undated synthesis and verdict files: those committed before the cutoff are
    // archived (or kept as their stage's newest synthesis), the newer ones are not. By mtime
    // (now) none of them would be.
    let mut undated_old = 0;
    let mut undated_old_bytes = 0;
    for (path, row) in &manifest_of {
        let name = path.rsplit('/').next().unwrap();
        let evidence = (path.starts_with("commands/") || path.starts_with("consensus/"))
            && path.matches('/').count() >= 2;
        let undated = name.ends_with("_synthesis.json") || name.ends_with("_verdict.json");
        if !evidence || !undated || name_timestamp(name).is_some() {
            continue;
        }
        if row.last_modified < cutoff {
            assert!(
                archived.contains(path) || kept.contains(path.as_str()),
                "{path} (committed {}) must be archived by its commit age",
                row.last_modified
            );
            if archived.contains(path) {
                undated_old += 1;
                undated_old_bytes += row.bytes;
            }
        } else {
            assert!(
                !archived.contains(path),
                "{path} is younger than the archive age"
            );
        }
    }
    assert!(
        undated_old > 0,
        "no undated file was archived by its git age"
    );
    assert!(!figures.contains_key("Mtime"), "{figures:?}");
    eprintln!(
        "real tree, archive after {archive_days} d (cutoff {cutoff}), {} files in the root, {} kept as newest synthesis:",
        in_root.len(),
        kept.len()
    );
    for (source, (files, bytes)) in &figures {
        eprintln!("  planned for archive by {source}: {files} files, {bytes} bytes");
    }
    eprintln!(
        "  of which undated *_synthesis.json / *_verdict.json by git commit: {undated_old} files, {undated_old_bytes} bytes"
    );

    // The same tree without its repository: every undated file is aged by its mtime (now),
    // so only the dated ones are planned.
    std::fs::rename(repo.join(".git"), ws.dir.path().join("git-aside")).unwrap();
    assert!(GitTimes::load(&root).is_none());
    let without = dry_run(&engine, &plugin).await;
    let without: Vec<&Action> = without
        .iter()
        .filter(|a| a.action == ActionKind::Archive)
        .collect();
    assert!(without
        .iter()
        .all(|a| a.age_source == Some(AgeSource::Name)));
    assert_eq!(without.len() as u64, figures["Name"].0);
    eprintln!(
        "  without git: {} files, {} bytes planned (all by name)",
        without.len(),
        without.iter().map(|a| a.bytes.unwrap()).sum::<u64>()
    );
    engine.shutdown(std::time::Duration::from_secs(5)).await;
}
