//! The demo's agents: three `[[spawn.agents]]` that take 50 ms to become ready, run by the
//! demo's spawn step. They are the stub agent (`examples/stub_agent.rs`) when cargo built it
//! beside the running binary, else a tiny `/bin/sh` script doing the same, because
//! `cargo run --release -- demo` on a fresh clone builds no examples.

use std::path::{Path, PathBuf};

/// The SPEC and stage the demo spawns agents for (a SPEC the tracker marks In Progress, so
/// retention never touches its fresh evidence).
/// Finished, and over its evidence limit until the demo's cleanup archives its old
/// evidence: the demo's first spawn is refused, the one after the cleanup runs.
pub const DEMO_SPAWN_SPEC: &str = "SPEC-KIT-902";
pub const DEMO_SPAWN_STAGE: &str = "plan";

/// Agent names of the demo (stubs standing in for the real CLIs).
pub const DEMO_AGENTS: &[&str] = &["stub_gemini", "stub_claude", "stub_gpt_pro"];

/// The stub agent built beside `exe` (`target/<profile>/examples/stub_agent`), if any.
pub fn find_stub_agent(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent()?;
    [dir.join("examples/stub_agent"), dir.join("stub_agent")]
        .into_iter()
        .find(|p| p.is_file())
}

/// A TOML basic string (JSON string escapes are valid TOML escapes).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The `[spawn]` part of the demo policy.
pub fn agents_toml() -> String {
    let stub = std::env::current_exe()
        .ok()
        .and_then(|exe| find_stub_agent(&exe));
    let mut out = String::from(
        "\n[spawn]\n# Three stub agents, each ready 50 ms after it starts, started in parallel.\nmax_concurrency = 8\nspawn_timeout_ms = 5000\n# Never the real agents of the host's ~/.code/config.toml: the demo spends no API calls.\nhost_config = \"off\"\n",
    );
    for name in DEMO_AGENTS {
        let (command, args): (String, Vec<String>) = match &stub {
            Some(path) => (
                path.display().to_string(),
                [
                    "--prompt",
                    "{prompt_file}",
                    "--output",
                    "{output_file}",
                    "--ready-after-ms",
                    "50",
                ]
                .map(String::from)
                .to_vec(),
            ),
            None => (
                "/bin/sh".into(),
                vec![
                    "-c".into(),
                    "sleep 0.05; echo READY; printf '{\"agent\":\"%s\",\"prompt_first_line\":\"%s\"}\\n' \"$1\" \"$(head -n 1 \"$2\")\" > \"$3\"".into(),
                    "stub_agent".into(),
                    name.to_string(),
                    "{prompt_file}".into(),
                    "{output_file}".into(),
                ],
            ),
        };
        out.push_str(&format!(
            "\n[[spawn.agents]]\nname = {}\ncommand = {}\nargs = [{}]\ntimeout_ms = 30000\nreadiness = {{ line = \"READY\" }}\n",
            toml_string(name),
            toml_string(&command),
            args.iter().map(|a| toml_string(a)).collect::<Vec<_>>().join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_agents_load_as_a_valid_policy() {
        use speckit_engine::Plugin;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("speckit.toml");
        std::fs::write(&config, agents_toml()).unwrap();
        let snapshot =
            speckit_engine::policy::load_policy(&config, true, vec![], &crate::builtin_shape())
                .unwrap();
        let agents = &snapshot
            .policy
            .section::<speckit_spawn::SpawnPolicy>()
            .agents;
        let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, DEMO_AGENTS);
        assert!(agents
            .iter()
            .all(|a| a.args.iter().any(|x| x == "{output_file}")));
        speckit_spawn::SpawnPlugin::new()
            .validate(&snapshot.policy)
            .unwrap();
    }

    #[test]
    fn finds_the_stub_beside_the_binary() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("speckit-hygiene");
        assert!(find_stub_agent(&exe).is_none());
        std::fs::create_dir_all(dir.path().join("examples")).unwrap();
        std::fs::write(dir.path().join("examples/stub_agent"), "").unwrap();
        assert_eq!(
            find_stub_agent(&exe),
            Some(dir.path().join("examples/stub_agent"))
        );
    }
}
