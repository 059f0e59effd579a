//! Why a plugin library was refused, and why a call into one failed. Every load error
//! names the file (or folder) and the cause.

use std::path::PathBuf;

use speckit_plugin_sdk::abi::FieldMismatch;

/// A plugin library that was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginLoadError {
    #[error("cannot read plugin path {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin folder {} holds no shared library (*{suffix})", dir.display())]
    EmptyFolder { dir: PathBuf, suffix: &'static str },
    #[error("plugin folder {} holds {} shared libraries ({}); name one in path", dir.display(), candidates.len(), candidates.join(", "))]
    AmbiguousFolder {
        dir: PathBuf,
        candidates: Vec<String>,
    },
    #[error("plugin path {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("refusing plugin {what} {}: it is writable by group or others (mode {mode:04o}); anyone who can write it can run code inside speckit-hygiene (fix: chmod go-w {})", path.display(), path.display())]
    Writable {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error("refusing plugin {what} {}: it is owned by uid {owner}, neither this user (uid {user}) nor root", path.display())]
    ForeignOwner {
        what: &'static str,
        path: PathBuf,
        owner: u32,
        user: u32,
    },
    #[error("{} is not a shared library: {detail}", path.display())]
    NotASharedLibrary { path: PathBuf, detail: String },
    #[error("cannot load plugin library {}: {message}", path.display())]
    Open { path: PathBuf, message: String },
    #[error("{} is not a speckit-hygiene plugin: it has no symbol {symbol} (export one with speckit_plugin_sdk::export_plugin!): {message}", path.display())]
    MissingSymbol {
        path: PathBuf,
        symbol: &'static str,
        message: String,
    },
    #[error("plugin {} was built for another plugin ABI: {}; rebuild it against speckit-plugin-sdk {}", path.display(), mismatches.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "), speckit_plugin_sdk::SDK_VERSION)]
    AbiMismatch {
        path: PathBuf,
        mismatches: Vec<FieldMismatch>,
    },
    #[error("plugin {} was built with panic = \"abort\": a panic in it would abort speckit-hygiene; build it with panic = \"unwind\" (the default)", path.display())]
    PanicAbort { path: PathBuf },
    #[error("plugin {} has a bad table: {reason}", path.display())]
    BadTable { path: PathBuf, reason: String },
    #[error("cannot start the plugin host {}: {message}", program.display())]
    HostStart { program: PathBuf, message: String },
    /// The plugin host process refused the library (the message names file and cause).
    #[error("{message}")]
    InHost { message: String },
    #[error("plugin {} has migrations that cannot be applied: {reason}", path.display())]
    BadMigrations { path: PathBuf, reason: String },
    #[error("plugin {} changed between its check and its loading; not loaded (try again once it is installed)", path.display())]
    ChangedSinceChecked { path: PathBuf },
    #[error("plugin {} was replaced on disk after it was loaded; still running version {version} from before. A library cannot be loaded again from the same path: install the new version under a new file name and point path at it", path.display())]
    ReplacedOnDisk { path: PathBuf, version: String },
}

/// A call into a loaded plugin that did not return a result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin said no (`Err` from `validate` or `run`).
    #[error("{0}")]
    Refused(String),
    #[error("panicked: {0}")]
    Panicked(String),
    #[error(
        "did not return within {timeout_ms} ms (call_timeout_ms); its host process was killed"
    )]
    TimedOut { timeout_ms: u64 },
    #[error("returned an unknown status {0}")]
    UnknownStatus(u32),
    #[error("returned output that is not valid: {0}")]
    BadOutput(String),
    /// Its host process ended mid-call: a signal (`SIGSEGV`, `SIGABRT`), `exit()`, or a
    /// memory limit.
    #[error("crashed: its host process {how}{}", last_words(last_output))]
    Crashed { how: String, last_output: String },
    #[error("cannot start its host process: {0}")]
    HostStart(String),
}

fn last_words(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!("; its last output: {output}")
    }
}
