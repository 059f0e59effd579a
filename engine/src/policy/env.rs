//! `SPECKIT_SECTION__KEY=value` environment variables as a figment provider.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

/// `SPECKIT_SECTION__KEY=value` variables as a figment provider. Only names with `__`
/// count (so `SPECKIT_CONFIG` is not a policy key). Values are read as TOML values where
/// they parse as one (`45`, `true`, `["a","b"]`), else as strings.
#[derive(Debug, Clone, Default)]
pub(super) struct EnvVars {
    vars: Vec<(Vec<String>, String, String)>,
}

impl EnvVars {
    pub(super) const NAME: &'static str = "environment variable";
    const PREFIX: &'static str = "SPECKIT_";

    pub(super) fn from_iter(env: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut vars: Vec<_> = env
            .into_iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix(Self::PREFIX)?;
                if !rest.contains("__") {
                    return None;
                }
                let parts = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
                Some((parts, name, value))
            })
            .collect();
        vars.sort();
        Self { vars }
    }

    pub(super) fn variable_for(&self, key: &str) -> String {
        self.vars
            .iter()
            .find(|(parts, _, _)| parts.join(".") == key)
            .map(|(_, name, _)| name.clone())
            .unwrap_or_else(|| {
                format!(
                    "{}{}",
                    Self::PREFIX,
                    key.replace('.', "__").to_ascii_uppercase()
                )
            })
    }
}

fn env_value(raw: &str) -> Value {
    let wrapped = format!("v = {raw}");
    match wrapped.parse::<toml::Table>() {
        Ok(table) => match table.get("v").cloned() {
            Some(v) => Value::serialize(v).unwrap_or_else(|_| Value::from(raw.to_string())),
            None => Value::from(raw.to_string()),
        },
        Err(_) => Value::from(raw.to_string()),
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named(Self::NAME)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (parts, _, raw) in &self.vars {
            insert_nested(&mut root, parts, env_value(raw));
        }
        Ok(Profile::Default.collect(root))
    }
}

fn insert_nested(dict: &mut Dict, parts: &[String], value: Value) {
    match parts {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_nested(inner, rest, value);
            }
        }
    }
}
