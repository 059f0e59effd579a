//! Per-agent stage prompts from the host's prompt file (`docs/spec-kit/prompts.json`),
//! found and rendered as upstream's `spec_prompts.rs` does, so an agent spawned here reads
//! the prompt the host would have given it.
//!
//! The file maps a stage key (`spec-plan`) to a `version` and one `{ "prompt": ... }` per
//! agent key (`gemini`, `claude`, `code`, `gpt_codex`, `gpt_pro`). An agent's template is
//! the entry under its name, else its `canonical-name`, else its model family (upstream's
//! `SpecAgent::from_string`: a name starting `gemini` is `gemini`...). Rendering is one
//! pass over `${NAME}` tokens (text put in is never expanded again, unlike upstream's
//! chain of `replace` calls, which would expand a `${...}` inside the user's prompt);
//! tokens nobody knows stay as written. A template using `${PREVIOUS_OUTPUTS}` makes the
//! batch chained: each agent starts after the ones before it ended, with their outputs.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::host_agents::EffectiveAgent;

/// Where upstream keeps its prompt file, relative to the repository (the config's folder).
pub const HOST_PROMPTS_FILE: &str = "docs/spec-kit/prompts.json";

/// Characters of a previous output put into a prompt when it holds no stage JSON
/// (upstream's cut, to keep a chain's prompts from growing without bound).
const PREVIOUS_OUTPUT_MAX_CHARS: usize = 5000;

/// The host's prompt file, read once per batch.
#[derive(Debug, Clone)]
pub struct PromptTemplates {
    pub file: PathBuf,
    stages: HashMap<String, StageTemplates>,
}

#[derive(Debug, Clone, Default)]
struct StageTemplates {
    version: Option<String>,
    /// Agent key to its prompt template.
    agents: HashMap<String, String>,
}

/// One agent's template for one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template<'a> {
    pub text: &'a str,
    /// The stage's `version` (`unversioned` when the file gives none, as upstream says).
    pub version: &'a str,
    /// The key it was found under (`spec-plan`), and the agent key (`gemini`).
    pub stage_key: &'a str,
    pub agent_key: &'a str,
}

impl Template<'_> {
    /// Whether the template asks for the outputs of the agents before it.
    pub fn needs_previous_outputs(&self) -> bool {
        self.text.contains("${PREVIOUS_OUTPUTS")
    }
}

/// Reads the prompt file `[spawn] prompts` names: `"off"` none; `"auto"` the host's file
/// next to the config when present; a path, which must exist. A file that exists but
/// cannot be read or is not JSON refuses the spawn (its agents would get other prompts
/// than the user wrote), naming the file and the cause.
pub fn load(setting: &str, config_dir: &Path) -> Result<Option<PromptTemplates>, String> {
    let file = match setting.trim() {
        "off" => return Ok(None),
        "auto" => {
            let file = config_dir.join(HOST_PROMPTS_FILE);
            if std::fs::symlink_metadata(&file).is_err() {
                return Ok(None);
            }
            file
        }
        path => PathBuf::from(path),
    };
    let fix = "fix it, or set [spawn] prompts = \"off\"";
    let text = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "cannot read the stage prompt file {}: {e}; {fix}",
            file.display()
        )
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "the stage prompt file {} is not valid JSON: {e}; {fix}",
            file.display()
        )
    })?;
    let Some(top) = json.as_object() else {
        return Err(format!(
            "the stage prompt file {} is not a JSON object of stages; {fix}",
            file.display()
        ));
    };
    // Entries that are not a stage of agent prompts (upstream's `template_context`) are
    // not ours to judge: they are skipped, as upstream's lookups skip them.
    let stages = top
        .iter()
        .filter_map(|(key, value)| {
            let entry = value.as_object()?;
            let agents: HashMap<String, String> = entry
                .iter()
                .filter_map(|(agent, v)| Some((agent.clone(), v.get("prompt")?.as_str()?.into())))
                .collect();
            let version = entry
                .get("version")
                .and_then(|v| v.as_str())
                .map(Into::into);
            Some((key.clone(), StageTemplates { version, agents }))
        })
        .collect();
    Ok(Some(PromptTemplates { file, stages }))
}

impl PromptTemplates {
    /// The agent's template for `stage` (`plan` or `spec-plan`), if the file has one.
    pub fn template(&self, stage: &str, agent: &EffectiveAgent) -> Option<Template<'_>> {
        let short = stage.strip_prefix("spec-").unwrap_or(stage);
        let (stage_key, entry) = self.stages.get_key_value(&format!("spec-{short}"))?;
        let family = Family::of(agent);
        let candidates = [
            Some(agent.agent.name.as_str()),
            agent.canonical_name.as_deref(),
            family.map(Family::key),
        ];
        let (agent_key, text) = candidates
            .into_iter()
            .flatten()
            .find_map(|key| entry.agents.get_key_value(key))?;
        Some(Template {
            text,
            version: entry.version.as_deref().unwrap_or("unversioned"),
            stage_key,
            agent_key,
        })
    }
}

/// Upstream's agent families (`SpecAgent`): the keys of its prompt file and of its model
/// metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Gemini,
    Claude,
    Code,
    GptCodex,
    GptPro,
}

impl Family {
    /// Upstream's `SpecAgent::from_string`, in its order: lower case, `-` and space as `_`.
    pub fn from_name(name: &str) -> Option<Self> {
        let normalized = name.to_ascii_lowercase().replace(['-', ' '], "_");
        let name = normalized.trim_matches('_');
        if name.is_empty() {
            None
        } else if name.starts_with("gemini") {
            Some(Self::Gemini)
        } else if name.starts_with("claude") {
            Some(Self::Claude)
        } else if name.starts_with("code") {
            Some(Self::Code)
        } else if name.contains("codex") {
            Some(Self::GptCodex)
        } else if name.starts_with("gpt") {
            Some(Self::GptPro)
        } else {
            None
        }
    }

    /// By the agent's canonical name first (the host resolves by it), then its name.
    pub fn of(agent: &EffectiveAgent) -> Option<Self> {
        agent
            .canonical_name
            .as_deref()
            .and_then(Self::from_name)
            .or_else(|| Self::from_name(&agent.agent.name))
    }

    pub fn key(self) -> &'static str {
        match self {
            Self::Gemini => "gemini",
            Self::Claude => "claude",
            Self::Code => "code",
            Self::GptCodex => "gpt_codex",
            Self::GptPro => "gpt_pro",
        }
    }

    fn env_prefix(self) -> &'static str {
        match self {
            Self::Gemini => "GEMINI",
            Self::Claude => "CLAUDE",
            Self::Code => "CODE",
            Self::GptCodex => "GPT_CODEX",
            Self::GptPro => "GPT_PRO",
        }
    }

    /// Upstream's `model_metadata` defaults: (model id, release, reasoning mode).
    fn metadata_defaults(self, stage_key: &str) -> [&'static str; 3] {
        match (self, stage_key) {
            (Self::Gemini, "spec-tasks" | "spec-unlock") => {
                ["gemini-2.5-flash", "2025-05-14", "fast"]
            }
            (Self::Gemini, _) => ["gemini-2.5-pro", "2025-05-14", "thinking"],
            (Self::Claude, _) => ["claude-4.5-sonnet", "2025-09-29", "balanced"],
            (Self::Code, _) => ["claude-sonnet-4-5", "2025-10-22", "extended"],
            (Self::GptCodex, _) => ["gpt-5-codex", "2025-09-29", "auto"],
            (Self::GptPro, _) => ["gpt-5", "2025-08-06", "high"],
        }
    }

    /// A metadata field as upstream resolves it: `SPECKIT_<FIELD>_<AGENT>_<STAGE>`, then
    /// `SPECKIT_<FIELD>_<AGENT>`, then its default.
    fn metadata(self, field: &str, stage_key: &str) -> String {
        let index = match field {
            "MODEL_ID" => 0,
            "MODEL_RELEASE" => 1,
            _ => 2,
        };
        let stage = stage_key.replace('-', "_").to_ascii_uppercase();
        let agent = self.env_prefix();
        std::env::var(format!("SPECKIT_{field}_{agent}_{stage}"))
            .or_else(|_| std::env::var(format!("SPECKIT_{field}_{agent}")))
            .unwrap_or_else(|_| self.metadata_defaults(stage_key)[index].to_string())
    }
}

/// What a template is rendered with.
pub struct PromptValues<'a> {
    pub spec_id: &'a str,
    /// The prompt given to spawn.
    pub context: &'a str,
    pub family: Option<Family>,
    /// Where `templates/<name>-template.md` is looked for (the config's folder).
    pub config_dir: &'a Path,
    /// Earlier agents of a chained batch: the names a placeholder may use (its name and
    /// canonical name) and its output.
    pub previous: &'a [PreviousOutput],
}

/// One earlier agent's output, for `${PREVIOUS_OUTPUTS}`.
#[derive(Debug, Clone)]
pub struct PreviousOutput {
    pub names: Vec<String>,
    pub output: String,
}

/// Renders `template` in one pass; see the module docs.
pub fn render(template: &Template<'_>, values: &PromptValues<'_>) -> String {
    substitute(template.text, |name| match name {
        "SPEC_ID" => Some(values.spec_id.into()),
        "CONTEXT" => Some(values.context.into()),
        "PROMPT_VERSION" => Some(template.version.into()),
        "MODEL_ID" | "MODEL_RELEASE" | "REASONING_MODE" => values
            .family
            .map(|f| f.metadata(name, template.stage_key).into()),
        "PREVIOUS_OUTPUTS" => Some(all_previous(values.previous).into()),
        _ => {
            if let Some(template_name) = name.strip_prefix("TEMPLATE:") {
                return Some(template_reference(template_name, values.config_dir).into());
            }
            let agent = name.strip_prefix("PREVIOUS_OUTPUTS.")?;
            let previous = values
                .previous
                .iter()
                .find(|p| p.names.iter().any(|n| n == agent))?;
            Some(one_previous(&previous.output).into())
        }
    })
}

/// Replaces each `${NAME}` whose value `lookup` knows; the rest stays as written.
fn substitute<'a>(text: &str, lookup: impl Fn(&str) -> Option<Cow<'a, str>>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let value = after
            .find('}')
            .map(|end| (&after[..end], end))
            .filter(|(name, _)| !name.is_empty() && !name.contains(['$', '{', '\n']))
            .and_then(|(name, end)| Some((lookup(name)?, end)));
        match value {
            Some((value, end)) => {
                out.push_str(&value);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Upstream's `${TEMPLATE:plan}`: the project's `templates/plan-template.md` (as that
/// relative path) when present, else its `[embedded:plan]` marker.
fn template_reference(name: &str, config_dir: &Path) -> String {
    let relative = Path::new("templates").join(format!("{}-template.md", name.to_lowercase()));
    if config_dir.join(&relative).is_file() {
        relative.display().to_string()
    } else {
        format!("[embedded:{name}]")
    }
}

/// `${PREVIOUS_OUTPUTS.<agent>}`: its stage JSON (compact), else its output cut with a
/// marker saying how much was left out.
fn one_previous(output: &str) -> String {
    if let Some(json) = stage_json(output) {
        return json;
    }
    let total = output.chars().count();
    if total > PREVIOUS_OUTPUT_MAX_CHARS {
        let kept: String = output.chars().take(PREVIOUS_OUTPUT_MAX_CHARS).collect();
        format!(
            "{kept}...[truncated {} chars]",
            total - PREVIOUS_OUTPUT_MAX_CHARS
        )
    } else {
        output.to_string()
    }
}

/// `${PREVIOUS_OUTPUTS}`: `## <agent>` and its output (stage JSON, else its first 5000
/// characters) per earlier agent, as upstream joins them.
fn all_previous(previous: &[PreviousOutput]) -> String {
    previous
        .iter()
        .map(|p| {
            let clean = stage_json(&p.output)
                .unwrap_or_else(|| p.output.chars().take(PREVIOUS_OUTPUT_MAX_CHARS).collect());
            format!("## {}\n{clean}", p.names.first().map_or("", String::as_str))
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A stage agent's JSON answer (an object with a `stage` field, as upstream's
/// `extract_stage_agent_json` requires), found as the whole output, a ```json fence, or
/// the first balanced `{...}`; compact.
fn stage_json(output: &str) -> Option<String> {
    let fenced = output
        .split("```json")
        .nth(1)
        .and_then(|s| s.split("```").next());
    [Some(output.trim()), fenced, first_object(output)]
        .into_iter()
        .flatten()
        .filter_map(|candidate| serde_json::from_str::<serde_json::Value>(candidate.trim()).ok())
        .find(|json| json.get("stage").is_some())
        .map(|json| json.to_string())
}

/// The first `{...}` whose braces balance, skipping braces inside JSON strings.
fn first_object(text: &str) -> Option<&str> {
    let start = text.find('{')?;
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in text[start..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '{' if !in_string => depth += 1,
            '}' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..start + i + 1]);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_follow_upstream_order() {
        assert_eq!(Family::from_name("gemini-25-pro"), Some(Family::Gemini));
        assert_eq!(Family::from_name("Claude Code"), Some(Family::Claude));
        assert_eq!(Family::from_name("code"), Some(Family::Code));
        assert_eq!(Family::from_name("gpt-5-codex"), Some(Family::GptCodex));
        assert_eq!(Family::from_name("gpt_pro"), Some(Family::GptPro));
        assert_eq!(Family::from_name("my-agent"), None);
        assert_eq!(Family::from_name("--"), None);
    }

    #[test]
    fn substitution_is_one_pass_and_keeps_unknown_tokens() {
        let out = substitute("a ${X} b ${UNKNOWN} c ${ d ${", |name| {
            (name == "X").then(|| Cow::from("${X}"))
        });
        assert_eq!(out, "a ${X} b ${UNKNOWN} c ${ d ${");
        let out = substitute("${X}${X}", |_| Some(Cow::from("é")));
        assert_eq!(out, "éé");
    }

    #[test]
    fn previous_outputs_prefer_stage_json_and_cut_the_rest() {
        let answer = "Here:\n```json\n{\"stage\": \"spec-plan\", \"n\": 1}\n```\nbye";
        assert_eq!(one_previous(answer), r#"{"n":1,"stage":"spec-plan"}"#);
        let braces = "text {\"stage\":\"x\",\"s\":\"}{\"} more";
        assert_eq!(one_previous(braces), r#"{"s":"}{","stage":"x"}"#);
        let long = "é".repeat(5003);
        let cut = one_previous(&long);
        assert!(cut.ends_with("...[truncated 3 chars]"), "{cut}");
        assert_eq!(cut.chars().filter(|c| *c == 'é').count(), 5000);
        let previous = [PreviousOutput {
            names: vec!["gemini".into()],
            output: "plain".into(),
        }];
        assert_eq!(all_previous(&previous), "## gemini\nplain");
    }
}
