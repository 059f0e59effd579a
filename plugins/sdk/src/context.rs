//! What crosses the boundary as JSON: the job context the host sends to `run`, and the
//! report the plugin sends back. Both only ever gain fields (with defaults), so a plugin
//! built against an older SDK keeps reading a newer host's context.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::abi::HostApi;
use crate::storage::Storage;

/// Everything a job gets. Paths are absolute (resolved against the config file's folder).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobContext {
    /// The plugin's name in the policy (`[plugins.<name>]`); also its job's name.
    pub plugin: String,
    pub job: String,
    /// The host's id for this run (its row in the job-runs table).
    pub run_id: i64,
    /// `schedule`, `catch_up` or `manual`.
    pub trigger: String,
    /// Options for this run (`{"dry_run": true}`), `null` for scheduled runs.
    pub args: serde_json::Value,
    /// The plugin's `[plugins.<name>.config]` table, as validated by `validate`.
    pub config: serde_json::Value,
    pub config_file: PathBuf,
    /// The config file's folder: resolve relative paths in `config` against it.
    pub config_dir: PathBuf,
    /// Every plugin section of the policy in effect (`evidence`, `retention`, ...), as
    /// JSON, read-only; [`JobContext::section`] reads one as a type. The four fields
    /// below are read from it by the SDK.
    pub sections: serde_json::Map<String, serde_json::Value>,
    /// `[evidence] root`: holds `commands/<SPEC-ID>/` and `consensus/<SPEC-ID>/`.
    pub evidence_root: PathBuf,
    /// `[evidence] tracker_paths`: the SPEC trackers.
    pub tracker_paths: Vec<PathBuf>,
    /// `[retention] active_statuses`: tracker statuses whose SPECs are in flight.
    pub active_statuses: Vec<String>,
    /// `[retention] finished_statuses`: tracker statuses of finished SPECs (a SPEC is done
    /// only when every tracker row gives one; any other status means "not known to be
    /// finished").
    pub finished_statuses: Vec<String>,
    /// The host clock's "now", in milliseconds since the Unix epoch and as RFC 3339.
    pub now_unix_ms: i64,
    pub now_rfc3339: String,
    /// Which applied policy this run started on.
    pub policy_generation: u64,
    /// The engine's storage for this run; set by the SDK, never sent. Use
    /// [`JobContext::storage`].
    #[doc(hidden)]
    #[serde(skip)]
    pub host: HostLink,
}

/// The host's services for one run, as the SDK received them (opaque).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct HostLink(*const HostApi);

impl Default for HostLink {
    fn default() -> Self {
        Self(std::ptr::null())
    }
}

/// Two contexts are equal by what they say, not by which run lent them storage.
impl PartialEq for HostLink {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

// SAFETY: the host's table is immutable, and its `call` may be made from any thread (the
// host serialises requests); it lives as long as the plugin host process.
unsafe impl Send for HostLink {}
// SAFETY: as above.
unsafe impl Sync for HostLink {}

impl JobContext {
    /// The engine's storage: reads anywhere, writes to this plugin's own tables in one
    /// transaction (see [`crate::storage`]). Errors when the host lent none (a context
    /// built by hand, in a test).
    pub fn storage(&self) -> Result<Storage<'_>, String> {
        if self.host.0.is_null() {
            return Err("no storage: this context did not come from the engine".into());
        }
        // SAFETY: non-null pointers come from the host's `run` call (see `set_host`).
        Ok(Storage::new(unsafe { &*self.host.0 }))
    }

    /// Lends the host's services to this context (the SDK's `run` does this).
    ///
    /// # Safety
    /// `host` must be null or valid for as long as this context (and its clones) is used.
    #[doc(hidden)]
    pub unsafe fn set_host(&mut self, host: *const HostApi) {
        self.host = HostLink(host);
    }

    /// Policy section `name` as a type (`serde(default)` fields are advised: the section
    /// belongs to another plugin and may gain fields); the error names the section.
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<T, String> {
        let value = self
            .sections
            .get(name)
            .cloned()
            .ok_or_else(|| format!("the policy has no [{name}] section"))?;
        serde_json::from_value(value).map_err(|e| format!("[{name}]: {e}"))
    }

    /// Fills the convenience fields from `sections` (`[evidence]` and `[retention]`, as
    /// the retention plugin declares them); the SDK does this before `run`.
    #[doc(hidden)]
    pub fn fill_from_sections(&mut self) {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Evidence {
            root: PathBuf,
            tracker_paths: Vec<PathBuf>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Retention {
            active_statuses: Vec<String>,
            finished_statuses: Vec<String>,
        }
        if let Ok(evidence) = self.section::<Evidence>("evidence") {
            self.evidence_root = evidence.root;
            self.tracker_paths = evidence.tracker_paths;
        }
        if let Ok(retention) = self.section::<Retention>("retention") {
            self.active_statuses = retention.active_statuses;
            self.finished_statuses = retention.finished_statuses;
        }
    }

    /// The config, deserialized; the error names the plugin and the cause.
    pub fn config_as<T: DeserializeOwned>(&self) -> Result<T, String> {
        parse_config(&self.config)
    }

    /// A boolean run option, false when absent (`dry_run`, `force`).
    pub fn flag(&self, name: &str) -> bool {
        self.args
            .get(name)
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    /// `path` resolved against the config file's folder when it is relative.
    pub fn resolve(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.config_dir.join(path)
        }
    }
}

/// Deserializes a plugin's config (`null` counts as an empty table), with a message that
/// says which key is wrong.
pub fn parse_config<T: DeserializeOwned>(config: &serde_json::Value) -> Result<T, String> {
    let value = if config.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        config.clone()
    };
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// What a job reports: the same shape as the host's own job reports. Every figure in it
/// must come from what the job did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// One line for people.
    pub summary: String,
    /// The job's figures, for programs (`--json`).
    pub data: serde_json::Value,
    pub warnings: Vec<String>,
    /// Problems the job went on past; any makes the run count as failed.
    pub errors: Vec<String>,
}

impl Report {
    pub fn new(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            ..Self::default()
        }
    }

    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_context_fields_are_ignored_and_missing_ones_default() {
        let ctx: JobContext =
            serde_json::from_str(r#"{"job":"digest","from_a_newer_host":1}"#).unwrap();
        assert_eq!(ctx.job, "digest");
        assert_eq!(ctx.run_id, 0);
        assert!(!ctx.flag("dry_run"));
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let ctx = JobContext {
            config_dir: PathBuf::from("/etc/speckit"),
            ..JobContext::default()
        };
        assert_eq!(ctx.resolve("out"), PathBuf::from("/etc/speckit/out"));
        assert_eq!(ctx.resolve("/abs"), PathBuf::from("/abs"));
    }

    #[test]
    fn config_errors_name_the_key() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Config {
            limit: u32,
        }
        let err = parse_config::<Config>(&serde_json::json!({"limit": "x"})).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let err = parse_config::<Config>(&serde_json::json!({"limt": 1})).unwrap_err();
        assert!(err.contains("limt"), "{err}");
    }
}
