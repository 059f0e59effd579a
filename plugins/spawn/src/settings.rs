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
}

fn default_agent_timeout_ms() -> u64 {
    600_000
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
    pub agents: Vec<AgentPolicy>,
}

impl Default for SpawnPolicy {
    fn default() -> Self {
        Self {
            max_concurrency: 8,
            spawn_timeout_ms: 10_000,
            max_response_bytes: 64 * 1024,
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
        for agent in &mut self.agents {
            if let Some(wd) = &mut agent.working_dir {
                *wd = resolve(wd);
            }
        }
    }
}
