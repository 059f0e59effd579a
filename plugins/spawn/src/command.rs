//! Turning an `[[spawn.agents]]` entry into a process command: placeholder expansion in
//! `args`, and where the program and working folder are (a bare name found on the agent's
//! own `PATH` before the process starts, see [`find_program`]).
//!
//! A placeholder is `{name}` with `name` made of lowercase letters and `_`; the known ones
//! are listed in [`PLACEHOLDERS`]. Braces around anything else (`{"json": 1}`) are literal.
//! An unknown placeholder is a policy error, caught when the policy loads.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::AgentPolicy;

/// The placeholders `args` (and `args_read_only`, `args_write`) may hold.
pub const PLACEHOLDERS: &[&str] = &["prompt_file", "spec_id", "stage", "output_file"];

/// The placeholder `prompt_args` holds besides those: the prompt itself.
pub const PROMPT_PLACEHOLDER: &str = "prompt";

/// The values placeholders expand to for one agent.
#[derive(Debug, Clone)]
pub struct PlaceholderValues<'a> {
    pub prompt_file: &'a Path,
    pub spec_id: &'a str,
    pub stage: &'a str,
    pub output_file: &'a Path,
    /// Set only while expanding `prompt_args`.
    pub prompt: Option<&'a str>,
}

impl PlaceholderValues<'_> {
    fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "prompt_file" => self.prompt_file.display().to_string(),
            "spec_id" => self.spec_id.to_string(),
            "stage" => self.stage.to_string(),
            "output_file" => self.output_file.display().to_string(),
            PROMPT_PLACEHOLDER => self.prompt?.to_string(),
            _ => return None,
        })
    }
}

/// The placeholder names written in `arg`, known or not.
pub fn placeholders_in(arg: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if is_placeholder_name(&after[..close]) => {
                found.push(&after[..close]);
                rest = &after[close + 1..];
            }
            _ => rest = after,
        }
    }
    found
}

fn is_placeholder_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// Expands the placeholders of one argument. Unknown ones (rejected at policy load) are
/// left as written.
pub fn expand(arg: &str, values: &PlaceholderValues<'_>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if is_placeholder_name(&after[..close]) => {
                match values.get(&after[..close]) {
                    Some(value) => out.push_str(&value),
                    None => out.push_str(&rest[open..open + close + 2]),
                }
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The program to run: a bare name is looked up on `PATH`; a relative path with a
/// separator resolves against the config file's folder (not the agent's working folder,
/// so it means the same whatever `working_dir` says).
pub fn program_path(command: &str, config_dir: &Path) -> PathBuf {
    let path = Path::new(command);
    if path.is_absolute() || !command.contains('/') {
        path.to_path_buf()
    } else {
        config_dir.join(path)
    }
}

/// Where `execvp` looks when `PATH` is unset: glibc's `confstr(_CS_PATH)`.
const DEFAULT_SEARCH_PATH: &str = "/bin:/usr/bin";

/// The file a program named without a folder runs: the first executable file of that name
/// in the folders of `path_var` (the agent's own `PATH`, not the engine's; glibc's default
/// when it has none), an empty entry or a relative one meaning a folder of `cwd`, as
/// `execvp` would find it in the child. A program with a folder is returned as it is.
/// One difference from `execvp`: an entry starting with `~/` is taken as the engine's home
/// folder (`which` expands it, as shells do), where `execvp` would look for a folder
/// named `~`.
///
/// Why before the start and not in the child: given a bare name and an environment of its
/// own, the standard library cannot use `posix_spawn` and forks instead, copying the page
/// tables of the whole engine, or of the host application embedding it, for every agent.
/// Measured from a process holding 512 MiB (`SPECKIT_BENCH_CASES=6 cargo bench -p
/// speckit-spawn --bench spawn`): a start by name p50 25.8-30.7 ms, the engine's start
/// after this look-up 0.4-1.4 ms.
pub fn find_program(
    program: &Path,
    path_var: Option<&OsStr>,
    cwd: &Path,
) -> Result<PathBuf, String> {
    if program.as_os_str().as_encoded_bytes().contains(&b'/') {
        return Ok(program.to_path_buf());
    }
    let search = path_var.unwrap_or(OsStr::new(DEFAULT_SEARCH_PATH));
    which::which_in(program, Some(search), cwd).map_err(|_| {
        format!(
            "no executable file named {:?} in the {} folders of the agent's PATH \
             (set by [spawn.environment] and the agent's env)",
            program,
            std::env::split_paths(search).count()
        )
    })
}

/// Where `agent`'s process starts from: its program as configured (resolved against the
/// config file's folder, [`program_path`]) and the folder it starts in (its `working_dir`,
/// else the engine's). Both a start and `spawn --list-agents` find its file through this.
#[derive(Debug, Clone)]
pub struct AgentProgram {
    pub program: PathBuf,
    /// `None` only when the engine's own working folder is gone.
    pub working_dir: Option<PathBuf>,
}

impl AgentProgram {
    pub fn of(agent: &AgentPolicy, config_dir: &Path) -> Self {
        Self {
            program: program_path(&agent.command, config_dir),
            working_dir: agent
                .working_dir
                .clone()
                .or_else(|| std::env::current_dir().ok()),
        }
    }

    /// The file the process runs: a bare name found on the `PATH` of `environment` (the
    /// agent's own, [`crate::environment::agent_environment`]) from the working folder,
    /// as [`find_program`] finds it. `Err` says why it would not start.
    pub fn executable(
        &self,
        environment: &BTreeMap<OsString, OsString>,
    ) -> Result<PathBuf, String> {
        let search_path = environment.get(OsStr::new("PATH")).map(|p| p.as_os_str());
        let cwd = self.working_dir.as_deref().unwrap_or(Path::new("."));
        find_program(&self.program, search_path, cwd)
    }
}

/// Problems with one agent's command settings, as (key suffix, message) pairs.
pub fn check_agent(agent: &AgentPolicy) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let known = |extra: Option<&str>| {
        PLACEHOLDERS
            .iter()
            .copied()
            .chain(extra)
            .map(|p| format!("{{{p}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let lists = [
        ("args", Some(&agent.args)),
        ("args_read_only", agent.args_read_only.as_ref()),
        ("args_write", agent.args_write.as_ref()),
    ];
    for (key, list) in lists {
        for (i, arg) in list.into_iter().flatten().enumerate() {
            for name in placeholders_in(arg) {
                if name == PROMPT_PLACEHOLDER {
                    problems.push((
                        format!("{key}.{i}"),
                        "{prompt} belongs in prompt_args, which are left out when the prompt goes on stdin or in a file".into(),
                    ));
                } else if !PLACEHOLDERS.contains(&name) {
                    problems.push((
                        format!("{key}.{i}"),
                        format!("unknown placeholder {{{name}}}; known: {}", known(None)),
                    ));
                }
            }
        }
    }
    let mut prompt_in_args = false;
    for (i, arg) in agent.prompt_args.iter().enumerate() {
        for name in placeholders_in(arg) {
            prompt_in_args |= name == PROMPT_PLACEHOLDER;
            if name != PROMPT_PLACEHOLDER && !PLACEHOLDERS.contains(&name) {
                problems.push((
                    format!("prompt_args.{i}"),
                    format!(
                        "unknown placeholder {{{name}}}; known: {}",
                        known(Some(PROMPT_PLACEHOLDER))
                    ),
                ));
            }
        }
    }
    let may_use_argument = matches!(
        agent.prompt_via,
        crate::PromptVia::Auto | crate::PromptVia::Argument
    );
    if may_use_argument && !prompt_in_args {
        problems.push((
            "prompt_args".into(),
            "must hold {prompt} when the prompt may go as an argument (prompt_via \"auto\" or \"argument\")".into(),
        ));
    }
    if let crate::AgentReadiness::Line(line) = &agent.readiness {
        if line.trim().is_empty() {
            problems.push((
                "readiness.line".into(),
                "the ready line must not be empty".into(),
            ));
        }
    }
    for key in agent.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            problems.push((
                format!("env.{key}"),
                "an environment variable name must be non-empty, without '=' or NUL".into(),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_found_as_execvp_would_find_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let make = |folder: &str, mode: u32| {
            let folder = dir.path().join(folder);
            std::fs::create_dir_all(&folder).unwrap();
            let file = folder.join("agent");
            std::fs::write(&file, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            file
        };
        make("plain", 0o644);
        let relative = make("rel", 0o755);
        let found =
            |path: &str| find_program(Path::new("agent"), Some(OsStr::new(path)), dir.path());
        // A relative entry is a folder of the working folder; a file without x is passed over.
        assert_eq!(found("plain:rel").unwrap(), relative);
        // An empty entry is the working folder itself.
        std::fs::write(dir.path().join("agent"), "").unwrap();
        std::fs::set_permissions(
            dir.path().join("agent"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_eq!(found("plain::rel").unwrap(), dir.path().join("agent"));
        let missing = found("plain").unwrap_err();
        assert!(missing.contains("\"agent\" in the 1 folders"), "{missing}");
        // No PATH: glibc's default.
        assert_eq!(
            find_program(Path::new("sh"), None, dir.path()).unwrap(),
            Path::new("/bin/sh")
        );
        // A program with a folder is not looked up.
        assert_eq!(
            find_program(Path::new("./x/agent"), Some(OsStr::new("rel")), dir.path()).unwrap(),
            Path::new("./x/agent")
        );
    }

    fn values() -> PlaceholderValues<'static> {
        PlaceholderValues {
            prompt_file: Path::new("/e/p.md"),
            spec_id: "SPEC-KIT-900",
            stage: "plan",
            output_file: Path::new("/e/o.txt"),
            prompt: None,
        }
    }

    #[test]
    fn expands_known_placeholders_and_keeps_other_braces() {
        let v = values();
        assert_eq!(
            expand("--prompt-file={prompt_file}", &v),
            "--prompt-file=/e/p.md"
        );
        assert_eq!(
            expand("{spec_id}/{stage}:{output_file}", &v),
            "SPEC-KIT-900/plan:/e/o.txt"
        );
        assert_eq!(expand(r#"{"json": 1}"#, &v), r#"{"json": 1}"#);
        assert_eq!(expand("{unknown} {", &v), "{unknown} {");
        assert_eq!(expand("{{stage}}", &v), "{plan}");
    }

    #[test]
    fn finds_unknown_placeholders() {
        assert_eq!(
            placeholders_in("{prompt} {stage} {\"a\":1}"),
            vec!["prompt", "stage"]
        );
        let agent: AgentPolicy = toml::from_str(
            "name = \"a\"\ncommand = \"x\"\nargs = [\"{prompt}\", \"{stage}\", \"{promt}\"]\nreadiness = { line = \" \" }\n",
        )
        .unwrap();
        let problems = check_agent(&agent);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(problems[0].0, "args.0");
        assert!(problems[0].1.contains("belongs in prompt_args"));
        assert_eq!(problems[1].0, "args.2");
        assert!(problems[1].1.contains("{prompt_file}"));
        assert_eq!(problems[2].0, "readiness.line");
    }

    #[test]
    fn program_resolution() {
        let dir = Path::new("/cfg");
        assert_eq!(program_path("gemini", dir), PathBuf::from("gemini"));
        assert_eq!(program_path("/usr/bin/x", dir), PathBuf::from("/usr/bin/x"));
        assert_eq!(
            program_path("bin/agent", dir),
            PathBuf::from("/cfg/bin/agent")
        );
    }
}
