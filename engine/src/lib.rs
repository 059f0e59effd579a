//! The speckit-hygiene engine: policy, hot reload, shared storage, plugin dispatch and the
//! scheduler. It knows nothing about what any plugin does; see ARCHITECTURE.md.

pub mod clock;
pub mod cron_expr;
pub mod dynamic;
pub mod engine;
pub mod error;
pub mod events;
pub mod history;
pub mod identity;
pub mod options;
pub mod plugin;
pub mod policy;
pub mod registry;
pub mod scheduler;
pub mod spec_id;
pub mod storage;
pub mod units;
pub mod watch;

pub use clock::{Clock, SystemClock};
pub use engine::{Engine, EngineOptions};
pub use error::EngineError;
pub use events::{EngineEvent, EventBus, ReloadOutcome};
pub use options::{parse_job_options, NoOptions};
pub use plugin::{JobContext, JobErrorKind, JobReport, JobTrigger, Plugin, PluginError};
pub use policy::{Policy, PolicySnapshot};
pub use registry::PluginRegistry;
pub use spec_id::SpecId;
pub use storage::{Storage, StorageError};
