//! The environment an agent starts with, by the host's rule: the engine's environment
//! without what `[spawn.environment] remove` names (the host strips `RUST_LOG` and its
//! kin, which are the engine's logging, not the agent's), then the agent's own `env`, then
//! each alias the agent lacks (`GEMINI_API_KEY` from `GOOGLE_API_KEY`), then each default
//! it lacks (`DISABLE_AUTOUPDATER=1`). Values are never logged.

use std::collections::BTreeMap;
use std::ffi::OsString;

use crate::settings::EnvironmentPolicy;

/// The variables an agent gets, from `parent` (the engine's environment).
pub fn agent_environment(
    rule: &EnvironmentPolicy,
    agent_env: &BTreeMap<String, String>,
    parent: impl IntoIterator<Item = (OsString, OsString)>,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = parent
        .into_iter()
        .filter(|(name, _)| !rule.removes(&name.to_string_lossy()))
        .collect();
    for (name, value) in agent_env {
        env.insert(name.into(), value.into());
    }
    for (name, source) in &rule.aliases {
        if let Some(value) = env.get(&OsString::from(source)).cloned() {
            env.entry(name.into()).or_insert(value);
        }
    }
    for (name, value) in &rule.defaults {
        env.entry(name.into()).or_insert_with(|| value.into());
    }
    env
}

impl EnvironmentPolicy {
    /// Whether `name` is removed: an exact entry, or an entry ending in `*` that it starts
    /// with.
    pub fn removes(&self, name: &str) -> bool {
        self.remove
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        vars.iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn get<'a>(env: &'a BTreeMap<OsString, OsString>, name: &str) -> Option<&'a str> {
        env.get(&OsString::from(name)).and_then(|v| v.to_str())
    }

    #[test]
    fn the_hosts_rule_strips_rust_logging_applies_aliases_and_defaults() {
        let rule = EnvironmentPolicy::default();
        let env = agent_environment(
            &rule,
            &BTreeMap::new(),
            parent(&[
                ("RUST_LOG", "debug"),
                ("RUST_LOG_STYLE", "always"),
                ("RUST_LOG_SPAN_EVENTS", "full"),
                ("RUST_BACKTRACE", "1"),
                ("RUSTFLAGS", "-C x"),
                ("GOOGLE_API_KEY", "g"),
                ("CLAUDE_API_KEY", "c"),
                ("PATH", "/bin"),
            ]),
        );
        for gone in [
            "RUST_LOG",
            "RUST_LOG_STYLE",
            "RUST_LOG_SPAN_EVENTS",
            "RUST_BACKTRACE",
        ] {
            assert_eq!(get(&env, gone), None, "{gone}");
        }
        assert_eq!(
            get(&env, "RUSTFLAGS"),
            Some("-C x"),
            "only the listed names go"
        );
        assert_eq!(get(&env, "PATH"), Some("/bin"));
        assert_eq!(get(&env, "GEMINI_API_KEY"), Some("g"));
        assert_eq!(get(&env, "ANTHROPIC_API_KEY"), Some("c"));
        assert_eq!(get(&env, "DISABLE_AUTOUPDATER"), Some("1"));
    }

    #[test]
    fn the_agents_env_wins_and_an_alias_never_overwrites() {
        let rule = EnvironmentPolicy::default();
        let agent: BTreeMap<String, String> = [
            ("RUST_LOG".to_string(), "agent-wants-it".to_string()),
            ("GEMINI_API_KEY".to_string(), "mine".to_string()),
            ("DISABLE_AUTOUPDATER".to_string(), "0".to_string()),
        ]
        .into();
        let env = agent_environment(&rule, &agent, parent(&[("GOOGLE_API_KEY", "g")]));
        assert_eq!(get(&env, "RUST_LOG"), Some("agent-wants-it"));
        assert_eq!(get(&env, "GEMINI_API_KEY"), Some("mine"));
        assert_eq!(get(&env, "DISABLE_AUTOUPDATER"), Some("0"));
    }

    #[test]
    fn an_empty_rule_passes_everything_through() {
        let rule = EnvironmentPolicy {
            remove: Vec::new(),
            aliases: BTreeMap::new(),
            defaults: BTreeMap::new(),
        };
        let env = agent_environment(&rule, &BTreeMap::new(), parent(&[("RUST_LOG", "x")]));
        assert_eq!(get(&env, "RUST_LOG"), Some("x"));
        assert_eq!(env.len(), 1);
    }
}
