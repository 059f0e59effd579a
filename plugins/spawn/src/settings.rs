//! The `[spawn]` section: the agents a stage can start and how, with its checks.

use serde::{Deserialize, Serialize};
use speckit_engine::policy::{Section, SectionProblems};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How the engine knows an agent process is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgentReadiness {
    /// Ready once the process has started.
    #[default]
    Started,
    /// Ready once the process prints this line on stdout.
    Line(String),
}

/// `[[spawn.agents]]`: one agent a stage can start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPolicy {
    pub name: String,
    pub command: String,
    /// Placeholders: `{prompt_file}`, `{spec_id}`, `{stage}`, `{output_file}`.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working folder; relative paths resolve against the config file's folder.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// The agent is killed if it runs longer than this many milliseconds.
    #[serde(default = "default_agent_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub readiness: AgentReadiness,
    /// How the prompt reaches the agent; see [`PromptVia`].
    #[serde(default)]
    pub prompt_via: PromptVia,
    /// Appended to the arguments when the prompt goes as an argument; `{prompt}` is the
    /// prompt itself (the host passes `-p <prompt>`).
    #[serde(default = "default_prompt_args")]
    pub prompt_args: Vec<String>,
    /// Put before the stage prompt, a blank line between (the host's `instructions`).
    #[serde(default)]
    pub instructions: Option<String>,
    /// Used instead of `args` when the stage runs read-only (the host's `args-read-only`).
    #[serde(default)]
    pub args_read_only: Option<Vec<String>>,
    /// Used instead of `args` when the stage may write (the host's `args-write`).
    #[serde(default)]
    pub args_write: Option<Vec<String>>,
    /// Always run read-only, whatever the stage's mode (the host's `read-only`).
    #[serde(default)]
    pub read_only: bool,
}

/// How an agent gets its prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PromptVia {
    /// The host's rule: as a file when `args` name `{prompt_file}`; else on stdin when it
    /// is over [`PROMPT_ARGUMENT_MAX_BYTES`]; else as an argument (`prompt_args`).
    #[default]
    Auto,
    /// Always as an argument (`prompt_args`): limited by the system's argument length.
    Argument,
    /// Always written to the agent's stdin, which is then closed.
    Stdin,
    /// Only as the `{prompt_file}` placeholder in `args`.
    File,
}

/// The largest prompt `auto` passes as an argument, as the host does (1 KiB).
pub const PROMPT_ARGUMENT_MAX_BYTES: usize = 1024;

fn default_agent_timeout_ms() -> u64 {
    600_000
}

fn default_prompt_args() -> Vec<String> {
    vec!["-p".into(), "{prompt}".into()]
}

impl Default for AgentPolicy {
    /// An agent with no name and no command (invalid as it is): a base for building one.
    fn default() -> Self {
        Self {
            name: String::new(),
            command: String::new(),
            args: Vec::new(),
            env: BTreeMap::new(),
            working_dir: None,
            timeout_ms: default_agent_timeout_ms(),
            readiness: AgentReadiness::default(),
            prompt_via: PromptVia::default(),
            prompt_args: default_prompt_args(),
            instructions: None,
            args_read_only: None,
            args_write: None,
            read_only: false,
        }
    }
}

impl AgentPolicy {
    /// The arguments for a stage in read-only or write mode (before the prompt's).
    pub fn mode_args(&self, read_only: bool) -> &[String] {
        let chosen = if read_only || self.read_only {
            self.args_read_only.as_ref()
        } else {
            self.args_write.as_ref()
        };
        chosen.unwrap_or(&self.args)
    }

    /// How a prompt of `prompt_bytes` reaches this agent in that mode.
    pub fn handover(&self, read_only: bool, prompt_bytes: usize) -> PromptVia {
        match self.prompt_via {
            PromptVia::Auto => {
                let names_file = self
                    .mode_args(read_only)
                    .iter()
                    .any(|a| crate::command::placeholders_in(a).contains(&"prompt_file"));
                if names_file {
                    PromptVia::File
                } else if prompt_bytes > PROMPT_ARGUMENT_MAX_BYTES {
                    PromptVia::Stdin
                } else {
                    PromptVia::Argument
                }
            }
            via => via,
        }
    }

    /// This agent's prompt: its `instructions`, a blank line, then the stage prompt.
    pub fn prompt_for(&self, stage_prompt: &str) -> String {
        match self.instructions.as_deref().map(str::trim) {
            Some(instructions) if !instructions.is_empty() => {
                format!("{instructions}\n\n{stage_prompt}")
            }
            _ => stage_prompt.to_string(),
        }
    }
}

/// `[spawn]`: starting a stage's agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpawnPolicy {
    /// Agents initialised at once; 1 gives the sequential baseline.
    pub max_concurrency: u32,
    /// An agent not running (and ready) within this many milliseconds has failed to spawn.
    pub spawn_timeout_ms: u64,
    /// Bytes of an agent's response stored in the database; the rest stays in its file.
    pub max_response_bytes: u64,
    /// Bytes kept of each of an agent's logs (stdout, stderr); the rest is dropped and the
    /// log ends with a line giving the true size. At least 1024.
    pub max_log_bytes: u64,
    /// `[spawn.environment]`: what agents get of the engine's environment.
    pub environment: EnvironmentPolicy,
    /// The host's config file whose `[[agents]]` and `[speckit.stage_agents]` spawn uses
    /// (the agents below add to or override them by name): `"auto"` (`$CODE_HOME/config.toml`,
    /// else `~/.code/config.toml`, when present), `"off"`, or a path (relative to this file).
    pub host_config: String,
    /// The host's stage prompt file, whose per-agent templates build each agent's prompt
    /// (the request's prompt becomes their `${CONTEXT}`): `"auto"`
    /// (`docs/spec-kit/prompts.json` next to this file, when present), `"off"` (every
    /// agent gets the request's prompt), or a path (relative to this file; must exist).
    pub prompts: String,
    pub agents: Vec<AgentPolicy>,
}

/// `[spawn.environment]`: the host's rule for an agent's environment, by default exactly
/// as upstream applies it (see `environment.rs` for the order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvironmentPolicy {
    /// Variables of the engine's environment an agent does not get; a trailing `*`
    /// matches every name starting with what precedes it.
    pub remove: Vec<String>,
    /// `NAME = "SOURCE"`: an agent without `NAME` gets the value of `SOURCE`.
    pub aliases: BTreeMap<String, String>,
    /// `NAME = "value"`: an agent without `NAME` gets this value.
    pub defaults: BTreeMap<String, String>,
}

impl Default for EnvironmentPolicy {
    fn default() -> Self {
        let pairs = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Self {
            remove: ["RUST_LOG", "RUST_BACKTRACE", "RUST_LOG_STYLE", "RUST_LOG_*"]
                .map(String::from)
                .to_vec(),
            aliases: pairs(&[
                ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
                ("ANTHROPIC_API_KEY", "CLAUDE_API_KEY"),
                ("CLAUDE_API_KEY", "ANTHROPIC_API_KEY"),
                ("CLAUDE_BASE_URL", "ANTHROPIC_BASE_URL"),
                ("DASHSCOPE_API_KEY", "QWEN_API_KEY"),
                ("QWEN_API_KEY", "DASHSCOPE_API_KEY"),
                ("DASHSCOPE_BASE_URL", "QWEN_BASE_URL"),
                ("QWEN_BASE_URL", "DASHSCOPE_BASE_URL"),
            ]),
            defaults: pairs(&[
                ("DISABLE_AUTOUPDATER", "1"),
                ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
                ("DISABLE_ERROR_REPORTING", "1"),
            ]),
        }
    }
}

impl Default for SpawnPolicy {
    fn default() -> Self {
        Self {
            max_concurrency: 8,
            spawn_timeout_ms: 10_000,
            max_response_bytes: 64 * 1024,
            max_log_bytes: 16 * 1024 * 1024,
            environment: EnvironmentPolicy::default(),
            host_config: "auto".into(),
            prompts: "auto".into(),
            agents: Vec::new(),
        }
    }
}

impl Section for SpawnPolicy {
    const NAME: &'static str = "spawn";

    fn validate(&self, problems: &mut SectionProblems) {
        if self.max_concurrency == 0 {
            problems.bad("max_concurrency", "must be at least 1");
        }
        if self.spawn_timeout_ms == 0 {
            problems.bad("spawn_timeout_ms", "must be at least 1");
        }
        if self.max_log_bytes < 1024 {
            problems.bad(
                "max_log_bytes",
                format!("must be at least 1024, got {}", self.max_log_bytes),
            );
        }
        let env_name =
            |name: &str| !name.is_empty() && !name.contains(['=', '\0']) && !name.contains('*');
        for (i, pattern) in self.environment.remove.iter().enumerate() {
            let name = pattern.strip_suffix('*').unwrap_or(pattern);
            if !(env_name(name) || (pattern.ends_with('*') && name.is_empty())) {
                problems.bad(
                    format!("environment.remove.{i}"),
                    format!("{pattern:?} is not a variable name (a trailing * matches a prefix)"),
                );
            }
        }
        for (table, map) in [
            ("aliases", &self.environment.aliases),
            ("defaults", &self.environment.defaults),
        ] {
            for name in map.keys() {
                if !env_name(name) {
                    problems.bad(
                        format!("environment.{table}.{name}"),
                        format!("{name:?} is not a variable name"),
                    );
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, agent) in self.agents.iter().enumerate() {
            let key = format!("agents.{i}");
            if agent.name.trim().is_empty() {
                problems.bad(format!("{key}.name"), "must not be empty");
            } else if !names.insert(agent.name.clone()) {
                problems.bad(
                    format!("{key}.name"),
                    format!("agent {:?} is defined twice", agent.name),
                );
            }
            if let Some(problem) = crate::request::agent_name_problem(&agent.name) {
                problems.bad(
                    format!("{key}.name"),
                    format!("{:?}: {problem}", agent.name),
                );
            }
            if agent.command.trim().is_empty() {
                problems.bad(format!("{key}.command"), "must not be empty");
            }
            // Agent names become parts of file names and placeholders must be known: a
            // policy breaking either is rejected when it loads, not when an agent starts.
            for (field, message) in crate::command::check_agent(agent) {
                problems.bad(
                    format!("{key}.{field}"),
                    format!("agent {:?}: {message}", agent.name),
                );
            }
            if agent.timeout_ms == 0 {
                problems.bad(format!("{key}.timeout_ms"), "must be at least 1");
            }
        }
    }

    fn resolve_paths(&mut self, resolve: &dyn Fn(&Path) -> PathBuf) {
        if !matches!(self.host_config.trim(), "auto" | "off") {
            self.host_config = resolve(Path::new(&self.host_config)).display().to_string();
        }
        if !matches!(self.prompts.trim(), "auto" | "off") {
            self.prompts = resolve(Path::new(&self.prompts)).display().to_string();
        }
        for agent in &mut self.agents {
            if let Some(wd) = &mut agent.working_dir {
                *wd = resolve(wd);
            }
        }
    }
}
