//! The host's own agents: upstream's `~/.code/config.toml` declares them as `[[agents]]`
//! (kebab-case keys: `canonical-name`, `args-read-only`, `args-write`, `read-only`,
//! `enabled`, `env`, `instructions`, `model`...) and routes spec-kit stages to them in
//! `[speckit.stage_agents]` (or `stage-agents`). `[spawn] host_config` names that file
//! (`"auto"`: `$CODE_HOME/config.toml`, else `~/.code/config.toml`, when present; `"off"`:
//! none); the agents in `speckit.toml` add to or override its agents by name.
//!
//! The file is the host's: keys we do not know are ignored, and it is read at every spawn
//! (never written). An entry we cannot use (no name, a name that cannot be part of a file
//! name, a key of the wrong type) is left out and reported with the file, the entry and
//! the key.
//!
//! An entry runs with the arguments the host gives it: its own for the mode, then the
//! host's defaults for its known CLIs (`claude`, `gemini`, `qwen`, `code`, `codex`, by the
//! command's file name), then the prompt (`-p PROMPT`, bare for `code`/`codex`, or stdin).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{AgentPolicy, SpawnPolicy};

/// Where an agent in effect was declared.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentOrigin {
    /// `[[spawn.agents]]` in `speckit.toml`.
    Policy,
    /// An `[[agents]]` entry of the host's config file.
    Host { file: PathBuf },
    /// A host agent overridden by a `speckit.toml` agent of the same name.
    PolicyOverHost { file: PathBuf },
}

/// One agent in effect.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EffectiveAgent {
    pub agent: AgentPolicy,
    pub origin: AgentOrigin,
    /// The host's `canonical-name` (stage routing names agents by it).
    pub canonical_name: Option<String>,
    /// The host's `model` (the host passes it in `args`, never as a flag of its own).
    pub model: Option<String>,
}

/// The agents a spawn may start, the host's stage routing, and what could not be used.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AgentsInEffect {
    pub agents: Vec<EffectiveAgent>,
    /// Stage (`plan`, `tasks`...) to the agent name the host routes it to.
    pub stage_agents: BTreeMap<String, String>,
    /// The host file read, if any.
    pub host_file: Option<PathBuf>,
    /// Host entries left out, each naming the file, the entry and the key.
    pub problems: Vec<String>,
    /// Host agents with `enabled = false` (never started).
    pub disabled: Vec<String>,
}

impl AgentsInEffect {
    /// The agent named `name`, or routed to by that name (its `canonical-name`).
    pub fn find(&self, name: &str) -> Option<&EffectiveAgent> {
        self.agents
            .iter()
            .find(|a| a.agent.name == name)
            .or_else(|| {
                self.agents
                    .iter()
                    .find(|a| a.canonical_name.as_deref() == Some(name))
            })
    }

    /// The agent the host routes `stage` to (its short or `spec-` form), if any.
    pub fn routed(&self, stage: &str) -> Option<&EffectiveAgent> {
        let stage = stage.to_ascii_lowercase();
        let short = stage.strip_prefix("spec-").unwrap_or(&stage);
        self.stage_agents
            .get(short)
            .and_then(|name| self.find(name))
    }
}

/// The host file `[spawn] host_config` names, if it is to be read.
pub fn host_config_file(
    setting: &str,
    home: Option<&Path>,
    code_home: Option<&Path>,
) -> Option<PathBuf> {
    match setting.trim() {
        "off" => None,
        "auto" => {
            let dir = code_home
                .map(Path::to_path_buf)
                .or_else(|| home.map(|h| h.join(".code")))?;
            let file = dir.join("config.toml");
            file.is_file().then_some(file)
        }
        path => Some(PathBuf::from(path)),
    }
}

/// The agents in effect for a policy: the host's, then `speckit.toml`'s over them by name.
/// A host file named explicitly that cannot be read is an error; under `"auto"` it is
/// read only when present.
pub fn agents_in_effect(spawn: &SpawnPolicy) -> Result<AgentsInEffect, String> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let code_home = std::env::var_os("CODE_HOME").map(PathBuf::from);
    let file = host_config_file(&spawn.host_config, home.as_deref(), code_home.as_deref());
    let mut effect = match &file {
        Some(file) => read_host_file(file)?,
        None => AgentsInEffect::default(),
    };
    for agent in &spawn.agents {
        let origin = match effect
            .agents
            .iter()
            .position(|a| a.agent.name == agent.name)
        {
            Some(i) => {
                let host = effect.agents.remove(i);
                match host.origin {
                    AgentOrigin::Host { file } => AgentOrigin::PolicyOverHost { file },
                    other => other,
                }
            }
            None => AgentOrigin::Policy,
        };
        effect.agents.push(EffectiveAgent {
            agent: agent.clone(),
            origin,
            canonical_name: None,
            model: None,
        });
    }
    Ok(effect)
}

/// One `[[agents]]` entry as the host writes it (`AgentConfig`, kebab-case).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct HostAgent {
    name: String,
    #[serde(default)]
    canonical_name: Option<String>,
    #[serde(default)]
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    read_only: bool,
    #[serde(default = "enabled")]
    enabled: bool,
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    args_read_only: Option<Vec<String>>,
    #[serde(default)]
    args_write: Option<Vec<String>>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

fn enabled() -> bool {
    true
}

/// Reads the host's `[[agents]]` and stage routing from `file`.
pub fn read_host_file(file: &Path) -> Result<AgentsInEffect, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the host's config {}: {e}", file.display()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        format!(
            "the host's config {} is not valid TOML: {}",
            file.display(),
            e.message()
        )
    })?;
    let mut effect = AgentsInEffect {
        host_file: Some(file.to_path_buf()),
        ..AgentsInEffect::default()
    };
    let entries = match table.get("agents") {
        None => Vec::new(),
        Some(toml::Value::Array(entries)) => entries.clone(),
        Some(_) => {
            effect.problems.push(format!(
                "{}: `agents` is not an array of tables",
                file.display()
            ));
            Vec::new()
        }
    };
    for (i, entry) in entries.into_iter().enumerate() {
        let label = entry
            .get("name")
            .and_then(toml::Value::as_str)
            .map(|n| format!("[[agents]] #{} ({n:?})", i + 1))
            .unwrap_or_else(|| format!("[[agents]] #{}", i + 1));
        match entry.try_into::<HostAgent>() {
            Ok(host) => match to_agent(host) {
                Ok(Some(agent)) => effect.agents.push(EffectiveAgent {
                    origin: AgentOrigin::Host {
                        file: file.to_path_buf(),
                    },
                    ..agent
                }),
                Ok(None) => effect.disabled.push(label),
                Err((key, why)) => effect.problems.push(format!(
                    "{}: {label}: {key}: {why}; left out",
                    file.display()
                )),
            },
            Err(e) => effect.problems.push(format!(
                "{}: {label}: {}; left out",
                file.display(),
                e.message()
            )),
        }
    }
    let routing = table
        .get("speckit")
        .and_then(|s| s.get("stage_agents").or_else(|| s.get("stage-agents")));
    if let Some(routing) = routing.and_then(toml::Value::as_table) {
        for (stage, agent) in routing {
            match agent.as_str() {
                Some(agent) => {
                    effect
                        .stage_agents
                        .insert(stage.to_ascii_lowercase(), agent.to_string());
                }
                None => effect.problems.push(format!(
                    "{}: [speckit.stage_agents] {stage}: not a string; left out",
                    file.display()
                )),
            }
        }
    }
    Ok(effect)
}

/// A mode's arguments as the host assembles them (`agent_tool.rs`): the entry's own (the
/// mode's, else `args`), then upstream's `default_params_for` the CLI: always for
/// `claude`, `gemini` and `qwen`; for `code` and `codex` only when the entry has no
/// arguments for the mode. `None` (the entry's `args`) when nothing is added.
fn with_host_defaults(
    program: &str,
    read_only: bool,
    args: &[String],
    mode_args: Option<Vec<String>>,
) -> Option<Vec<String>> {
    let defaults = match program {
        "code" | "codex" if mode_args.is_some() => Vec::new(),
        program => host_default_args(program, read_only),
    };
    if defaults.is_empty() {
        return mode_args;
    }
    let mut all = mode_args.unwrap_or_else(|| args.to_vec());
    all.extend(defaults);
    Some(all)
}

/// Upstream's `agent_defaults::default_params_for`: the arguments the host adds for its
/// known CLIs, by access mode (the prompt flag excluded).
fn host_default_args(program: &str, read_only: bool) -> Vec<String> {
    let args: &[&str] = match (program, read_only) {
        ("claude", true) => &[
            "--allowedTools",
            "Bash(ls:*), Bash(cat:*), Bash(grep:*), Bash(git status:*), Bash(git log:*), \
             Bash(find:*), Read, Grep, Glob, LS, WebFetch, TodoRead, TodoWrite, WebSearch",
        ],
        ("claude", false) => &["--dangerously-skip-permissions"],
        ("gemini", true) => &["-m", "gemini-2.5-flash"],
        ("gemini", false) => &["-m", "gemini-2.5-flash", "-y"],
        ("qwen", false) => &["-y"],
        ("code" | "codex", true) => &[
            "-s",
            "read-only",
            "-a",
            "never",
            "exec",
            "--skip-git-repo-check",
        ],
        ("code" | "codex", false) => &[
            "-s",
            "workspace-write",
            "-a",
            "never",
            "exec",
            "--skip-git-repo-check",
        ],
        _ => &[],
    };
    args.iter().map(|a| a.to_string()).collect()
}

/// A host entry as an agent of ours; `None` when it is disabled; `Err((key, why))` when
/// it cannot be used.
fn to_agent(host: HostAgent) -> Result<Option<EffectiveAgent>, (&'static str, String)> {
    if let Some(problem) = crate::request::agent_name_problem(&host.name) {
        return Err(("name", problem.to_string()));
    }
    if !host.enabled {
        return Ok(None);
    }
    // The host runs an agent without a command by its name.
    let command = if host.command.trim().is_empty() {
        host.name.clone()
    } else {
        host.command.clone()
    };
    // The host's codex-style CLIs take the prompt as the last argument; the others `-p`.
    let program = Path::new(&command)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let prompt_args = if matches!(program, "code" | "codex") {
        vec!["{prompt}".to_string()]
    } else {
        vec!["-p".to_string(), "{prompt}".to_string()]
    };
    let args_read_only = with_host_defaults(program, true, &host.args, host.args_read_only);
    let args_write = with_host_defaults(program, false, &host.args, host.args_write);
    let agent = AgentPolicy {
        name: host.name,
        command,
        args: host.args,
        env: host.env.unwrap_or_default(),
        prompt_args,
        instructions: host.instructions,
        args_read_only,
        args_write,
        read_only: host.read_only,
        ..AgentPolicy::default()
    };
    // The first problem is enough to leave the entry out; it names the host's key.
    if let Some((key, message)) = crate::command::check_agent(&agent).into_iter().next() {
        let key: &'static str = match key.split('.').next() {
            Some("args") => "args",
            Some("args_read_only") => "args-read-only",
            Some("args_write") => "args-write",
            Some("env") => "env",
            _ => "agent",
        };
        return Err((key, message));
    }
    Ok(Some(EffectiveAgent {
        agent,
        origin: AgentOrigin::Policy,
        canonical_name: host.canonical_name,
        model: host.model,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn the_hosts_default_arguments_follow_its_own_entries() {
        let own = strings(&["--yolo"]);
        // gemini: always, after the entry's own arguments.
        assert_eq!(
            with_host_defaults("gemini", false, &[], Some(own.clone())),
            Some(strings(&["--yolo", "-m", "gemini-2.5-flash", "-y"]))
        );
        assert_eq!(
            with_host_defaults("gemini", true, &strings(&["--debug"]), None),
            Some(strings(&["--debug", "-m", "gemini-2.5-flash"]))
        );
        // code: only when the entry has none for the mode.
        assert_eq!(
            with_host_defaults("code", false, &[], Some(own.clone())),
            Some(own.clone())
        );
        assert_eq!(
            with_host_defaults("codex", true, &[], None).unwrap()[..2],
            strings(&["-s", "read-only"])[..]
        );
        // qwen reads without extra arguments; unknown CLIs get nothing.
        assert_eq!(with_host_defaults("qwen", true, &[], None), None);
        assert_eq!(with_host_defaults("my-cli", false, &own, None), None);
    }
}
