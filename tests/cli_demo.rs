//! The demo as a new user runs it: the spawn refused while the SPEC is over its limit,
//! then cleanup, then the spawn; the workspace kept with next steps that work there, or
//! removed with `--remove`.

use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

fn demo(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("demo")
        .args(args)
        .env_remove("SPECKIT_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_demo_refuses_then_cleans_then_spawns_and_keeps_its_workspace() {
    let (ok, stdout, stderr) = demo(&[]);
    assert!(ok, "{stdout}");
    // The refusal is said once, on stdout; logs into a pipe carry no colour codes.
    assert!(
        !stderr.contains('\x1b'),
        "ANSI escapes in piped logs: {stderr:?}"
    );
    assert!(
        !stderr.contains("refused"),
        "the refusal said twice: {stderr}"
    );
    let refused = stdout
        .split("== spawn (before cleanup)\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no refused spawn:\n{stdout}"));
    assert!(
        refused.starts_with("refused: SPEC-KIT-902's evidence is over its limit"),
        "{refused}"
    );
    let order: Vec<usize> = ["== spawn (before cleanup)", "== cleanup", "\n== spawn\n"]
        .iter()
        .map(|s| {
            stdout
                .find(s)
                .unwrap_or_else(|| panic!("{s} missing:\n{stdout}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert!(
        stdout.contains("SPEC-KIT-902 plan: 3/3 agents spawned"),
        "{stdout}"
    );

    let kept: PathBuf = stdout
        .lines()
        .find_map(|l| l.strip_prefix("  cd "))
        .expect("a next step to cd into the workspace")
        .into();
    assert!(kept.join("speckit.toml").is_file(), "{kept:?} was not kept");
    // The next step works there as printed.
    let stats = Command::new(BIN)
        .arg("stats")
        .current_dir(&kept)
        .env_remove("SPECKIT_CONFIG")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&stats.stdout).contains("SPEC-KIT-902"),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    // Offload to the workspace's file:// store: the 60-day-old archives went there, and
    // `archives` (a next step) says where each archive is.
    assert!(
        stdout.contains("offloaded 2 archive(s)"),
        "no offload in the cleanup summary:\n{stdout}"
    );
    let store = kept.join("offload-store");
    let objects: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .flat_map(|spec| std::fs::read_dir(spec.unwrap().path()).unwrap())
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(objects.len(), 2, "{objects:?}");
    let archives = Command::new(BIN)
        .args(["archives", "--json"])
        .current_dir(&kept)
        .env_remove("SPECKIT_CONFIG")
        .output()
        .unwrap();
    assert!(
        archives.status.success(),
        "{}",
        String::from_utf8_lossy(&archives.stderr)
    );
    let listed = speckit_testkit::json::data(&archives.stdout)["archives"].clone();
    let count = |w: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["location"] == w)
            .count()
    };
    assert_eq!(count("remote"), 2, "{listed:#}");
    assert_eq!(count("purged"), 2, "{listed:#}");
    assert!(count("local") >= 1, "{listed:#}");
    let table = Command::new(BIN)
        .arg("archives")
        .current_dir(&kept)
        .env_remove("SPECKIT_CONFIG")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&format!("-> file://{}", store.display())),
        "{table}"
    );
    // A restore fetches the offloaded archives back from the store.
    let restore = Command::new(BIN)
        .args(["restore", "SPEC-KIT-900", "--to", "restored"])
        .current_dir(&kept)
        .env_remove("SPECKIT_CONFIG")
        .output()
        .unwrap();
    assert!(
        restore.status.success(),
        "{}{}",
        String::from_utf8_lossy(&restore.stdout),
        String::from_utf8_lossy(&restore.stderr)
    );
    assert!(stdout.contains(&format!("rm -rf {}", kept.display())));
    std::fs::remove_dir_all(&kept).unwrap();
}

#[test]
fn the_demo_with_remove_leaves_nothing() {
    let (ok, stdout, _) = demo(&["--remove"]);
    assert!(ok, "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Workspace ") && l.ends_with("removed (--remove)."))
        .unwrap_or_else(|| panic!("{stdout}"));
    let dir = line
        .trim_start_matches("Workspace ")
        .trim_end_matches(" removed (--remove).");
    assert!(!std::path::Path::new(dir).exists(), "{dir} is still there");
}
