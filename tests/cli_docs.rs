//! `completions` and `man`: generated from the parser itself, so every command and flag is
//! in them; the bash script must be valid bash.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_speckit-hygiene");

fn output(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_bash_completion_script_is_valid_bash_and_knows_every_command() {
    let script = output(&["completions", "bash"]);
    for word in [
        "init",
        "service",
        "--database",
        "cleanup",
        "restore",
        "vacuum",
        "spawn",
        "guard",
        "--list-agents",
        "--ignore-limits",
    ] {
        assert!(script.contains(word), "{word} is not completed");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("speckit-hygiene.bash");
    std::fs::write(&file, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    // Loaded into a shell, it registers the completion function.
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!("source {:?} && complete -p speckit-hygiene", file))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&loaded.stdout).contains("speckit-hygiene"),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
}

#[test]
fn other_shells_get_their_scripts_and_an_unknown_shell_is_refused() {
    assert!(output(&["completions", "zsh"]).starts_with("#compdef speckit-hygiene"));
    assert!(output(&["completions", "fish"]).contains("complete -c speckit-hygiene"));
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcsh"));
}

#[test]
fn the_man_page_is_roff_naming_every_command() {
    let page = output(&["man"]);
    assert!(page.contains(".TH speckit-hygiene 1"), "{}", &page[..200]);
    let subcommands = page
        .split(".SH SUBCOMMANDS")
        .nth(1)
        .expect("a SUBCOMMANDS section");
    for command in [
        "init",
        "run",
        "check",
        "cleanup",
        "restore",
        "stats",
        "guard",
        "spawn",
        "completions",
        "man",
        "service",
    ] {
        assert!(
            subcommands.contains(&format!("speckit\\-hygiene\\-{command}(1)")),
            "{command} is not in the man page's SUBCOMMANDS"
        );
    }
}
