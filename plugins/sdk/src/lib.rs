//! The crate a dynamic speckit-hygiene plugin links against: a safe [`Plugin`] trait and
//! [`export_plugin!`], which turns an implementation into the C-ABI table the engine loads.
//!
//! ```no_run
//! use speckit_plugin_sdk::{export_plugin, JobContext, Plugin, Report};
//!
//! #[derive(Default)]
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn run(&self, ctx: &JobContext) -> Result<Report, String> {
//!         Ok(Report::new(format!("hello from {}", ctx.plugin)))
//!     }
//! }
//!
//! export_plugin!(Hello, "hello");
//! ```
//!
//! Build it as a `cdylib` with `panic = "unwind"` (the default), name it in `speckit.toml`
//! (`[plugins.hello] path = "libhello.so"`), and the engine loads, validates and schedules
//! it. The boundary is described in [`abi`]; everything crossing it is JSON in owned byte
//! buffers, so the plugin and the engine may be built by different compilers.

pub mod abi;
mod context;
#[doc(hidden)]
pub mod export;
pub mod storage;

pub use context::{parse_config, JobContext, Report};
pub use storage::{table_prefix, Description, Migration, Statement};

/// This SDK's version, recorded in every plugin table for diagnostics.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A plugin. Calls may come from several threads at once, hence `Send + Sync`; a panic is
/// caught at the boundary and fails the job (or, in `validate`, the load) with its message.
pub trait Plugin: Send + Sync + 'static {
    /// Checks the plugin's `[plugins.<name>.config]` table (as JSON; `{}` when absent).
    /// An error rejects the whole policy: at start-up the engine does not start, at reload
    /// it keeps the policy in effect. The default accepts anything.
    fn validate(&self, config: &serde_json::Value) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Runs the job. An `Err` fails the run with that message; errors listed in the
    /// report fail it too, after the report is recorded.
    fn run(&self, ctx: &JobContext) -> Result<Report, String>;

    /// The plugin's own tables, named [`table_prefix`] of its exported name. The engine
    /// applies new steps before the plugin's next run on a writable database. The default
    /// has none.
    fn migrations(&self) -> Vec<Migration> {
        Vec::new()
    }
}

/// Exports `$plugin` (a type implementing [`Plugin`] and `Default`) under `$name`, with the
/// crate's own version or `$version`. Use it once per `cdylib`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty, $name:expr) => {
        $crate::export_plugin!($plugin, $name, ::core::env!("CARGO_PKG_VERSION"));
    };
    ($plugin:ty, $name:expr, $version:expr) => {
        const _: () = {
            static INSTANCE: ::std::sync::OnceLock<$plugin> = ::std::sync::OnceLock::new();

            // Built on first use, inside the SDK's catch_unwind, so a panicking
            // constructor fails that call instead of aborting the host.
            fn instance() -> &'static $plugin {
                INSTANCE.get_or_init(<$plugin as ::core::default::Default>::default)
            }

            unsafe extern "C" fn validate(
                input: $crate::abi::ByteSlice,
                output: *mut $crate::abi::RawBuffer,
            ) -> u32 {
                // SAFETY: the host keeps to the ABI's contract for `validate`.
                unsafe { $crate::export::call_validate::<$plugin>(instance, input, output) }
            }

            unsafe extern "C" fn run(
                input: $crate::abi::ByteSlice,
                host: *const $crate::abi::HostApi,
                output: *mut $crate::abi::RawBuffer,
            ) -> u32 {
                // SAFETY: the host keeps to the ABI's contract for `run`.
                unsafe { $crate::export::call_run::<$plugin>(instance, input, host, output) }
            }

            unsafe extern "C" fn describe(
                _input: $crate::abi::ByteSlice,
                output: *mut $crate::abi::RawBuffer,
            ) -> u32 {
                // SAFETY: the host keeps to the ABI's contract for `describe`.
                unsafe { $crate::export::call_describe::<$plugin>(instance, output) }
            }

            static TABLE: $crate::abi::PluginTable = $crate::abi::PluginTable {
                header: $crate::abi::TableHeader::CURRENT,
                // Evaluated in the plugin's crate: records its own panic strategy.
                flags: if ::core::cfg!(panic = "unwind") {
                    $crate::abi::FLAG_PANIC_UNWIND
                } else {
                    0
                },
                reserved: 0,
                name: $crate::abi::StaticStr::new($name),
                version: $crate::abi::StaticStr::new($version),
                sdk_version: $crate::abi::StaticStr::new($crate::SDK_VERSION),
                validate: ::core::option::Option::Some(validate),
                run: ::core::option::Option::Some(run),
                free_buffer: ::core::option::Option::Some($crate::export::free_buffer),
                describe: ::core::option::Option::Some(describe),
            };

            /// The plugin's entry point: returns its table. Cannot panic.
            #[unsafe(no_mangle)]
            pub extern "C" fn speckit_plugin_entry() -> *const $crate::abi::PluginTable {
                &TABLE
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::abi::*;
    use super::*;

    #[derive(Default)]
    struct Probe;

    impl Plugin for Probe {
        fn validate(&self, config: &serde_json::Value) -> Result<(), String> {
            match config.get("limit").and_then(|v| v.as_u64()) {
                Some(_) => Ok(()),
                None => Err("limit must be a number".into()),
            }
        }
        fn run(&self, ctx: &JobContext) -> Result<Report, String> {
            match ctx.job.as_str() {
                "panic" => panic!("probe panicked on purpose"),
                "fail" => Err("probe failed on purpose".into()),
                _ => Ok(Report::new(format!("ran {}", ctx.job))),
            }
        }
    }

    export_plugin!(Probe, "probe", "9.9.9");

    // The macro's entry point lives in an anonymous const; reach it by its symbol, the
    // way the engine does.
    unsafe extern "C" {
        fn speckit_plugin_entry() -> *const PluginTable;
    }

    fn call(f: CallFn, input: &[u8]) -> (u32, Vec<u8>) {
        let free = table().free_buffer.unwrap();
        let mut out = RawBuffer::EMPTY;
        // SAFETY: input lives for the call; out is writable.
        let status = unsafe { f(ByteSlice::new(input), &mut out) };
        // SAFETY: the plugin filled `out`.
        let bytes = unsafe { out.as_bytes() }.to_vec();
        // SAFETY: handing the plugin's buffer back once.
        unsafe { free(out) };
        (status, bytes)
    }

    fn run_call(input: &[u8]) -> (u32, Vec<u8>) {
        let run = table().run.unwrap();
        let free = table().free_buffer.unwrap();
        let mut out = RawBuffer::EMPTY;
        // SAFETY: input lives for the call; no host services; out is writable.
        let status = unsafe { run(ByteSlice::new(input), std::ptr::null(), &mut out) };
        // SAFETY: the plugin filled `out`.
        let bytes = unsafe { out.as_bytes() }.to_vec();
        // SAFETY: handing the plugin's buffer back once.
        unsafe { free(out) };
        (status, bytes)
    }

    fn table() -> &'static PluginTable {
        // SAFETY: the macro's table is a 'static.
        unsafe { &*speckit_plugin_entry() }
    }

    #[test]
    fn the_table_carries_the_current_header_name_and_version() {
        let t = table();
        assert!(t.header.mismatches().is_empty());
        assert_eq!(t.flags & FLAG_PANIC_UNWIND, FLAG_PANIC_UNWIND);
        // SAFETY: StaticStr made from &'static str by the macro.
        unsafe {
            assert_eq!(t.name.to_str(64).unwrap(), "probe");
            assert_eq!(t.version.to_str(64).unwrap(), "9.9.9");
            assert_eq!(t.sdk_version.to_str(64).unwrap(), SDK_VERSION);
        }
    }

    #[test]
    fn validate_passes_the_config_and_returns_the_refusal() {
        let validate = table().validate.unwrap();
        assert_eq!(call(validate, br#"{"limit": 3}"#), (STATUS_OK, Vec::new()));
        let (status, message) = call(validate, br#"{"limit": "x"}"#);
        assert_eq!(status, STATUS_ERROR);
        assert_eq!(message, b"limit must be a number");
        let (status, message) = call(validate, b"not json");
        assert_eq!(status, STATUS_ERROR);
        assert!(String::from_utf8_lossy(&message).contains("not JSON"));
    }

    #[test]
    fn run_returns_a_report_an_error_or_the_caught_panic() {
        let (status, bytes) = run_call(br#"{"job":"ok"}"#);
        assert_eq!(status, STATUS_OK);
        let report: Report = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(report.summary, "ran ok");

        let (status, bytes) = run_call(br#"{"job":"fail"}"#);
        assert_eq!(
            (status, bytes.as_slice()),
            (STATUS_ERROR, &b"probe failed on purpose"[..])
        );

        let (status, bytes) = run_call(br#"{"job":"panic"}"#);
        assert_eq!(status, STATUS_PANIC);
        assert_eq!(bytes, b"probe panicked on purpose");
    }

    #[test]
    fn describe_lists_no_migrations_by_default_and_a_context_without_host_has_no_storage() {
        let (status, bytes) = call(table().describe.unwrap(), b"");
        assert_eq!(status, STATUS_OK);
        let description: Description = serde_json::from_slice(&bytes).unwrap();
        assert!(description.migrations.is_empty());
        let err = JobContext::default().storage().unwrap_err();
        assert!(err.contains("no storage"), "{err}");
    }

    #[test]
    fn a_null_output_pointer_is_tolerated() {
        let run = table().run.unwrap();
        // SAFETY: null output is allowed by `guarded`.
        let status = unsafe {
            run(
                ByteSlice::new(br#"{"job":"ok"}"#),
                std::ptr::null(),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(status, STATUS_OK);
    }
}
