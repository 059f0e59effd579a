//! The plugin side of the boundary: what [`crate::export_plugin!`] expands to calls these.
//! Every call runs inside `catch_unwind`, because a panic that reaches an `extern "C"`
//! function aborts the whole host process (Rust 1.81 and later).

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::abi::{ByteSlice, HostApi, RawBuffer, STATUS_ERROR, STATUS_OK, STATUS_PANIC};
use crate::storage::Description;
use crate::{JobContext, Plugin};

/// `validate`: parses the config JSON and asks the plugin.
///
/// # Safety
/// `input` must be readable for the call and `output` null or writable.
pub unsafe fn call_validate<P: Plugin>(
    instance: fn() -> &'static P,
    input: ByteSlice,
    output: *mut RawBuffer,
) -> u32 {
    // SAFETY: the host lends `input` for this call.
    let bytes = unsafe { input.as_bytes() };
    // SAFETY: forwarded from our caller.
    unsafe {
        guarded(output, || {
            let config: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| format!("the host sent config that is not JSON: {e}"))?;
            instance().validate(&config).map(|()| Vec::new())
        })
    }
}

/// `run`: parses the job context, lends it the host's services, runs the job,
/// serializes the report.
///
/// # Safety
/// `input` must be readable for the call, `host` null or valid for the plugin host's life,
/// and `output` null or writable.
pub unsafe fn call_run<P: Plugin>(
    instance: fn() -> &'static P,
    input: ByteSlice,
    host: *const HostApi,
    output: *mut RawBuffer,
) -> u32 {
    // SAFETY: the host lends `input` for this call.
    let bytes = unsafe { input.as_bytes() };
    // SAFETY: forwarded from our caller.
    unsafe {
        guarded(output, || {
            let mut ctx: JobContext = serde_json::from_slice(bytes)
                .map_err(|e| format!("the host sent a job context that is not valid: {e}"))?;
            // SAFETY (inside the unsafe block above): forwarded from our caller's promise
            // about `host`.
            ctx.set_host(host);
            ctx.fill_from_sections();
            let report = instance().run(&ctx)?;
            serde_json::to_vec(&report).map_err(|e| format!("cannot serialize the report: {e}"))
        })
    }
}

/// `describe`: the plugin's migrations.
///
/// # Safety
/// `output` must be null or writable.
pub unsafe fn call_describe<P: Plugin>(
    instance: fn() -> &'static P,
    output: *mut RawBuffer,
) -> u32 {
    // SAFETY: forwarded from our caller.
    unsafe {
        guarded(output, || {
            let description = Description {
                migrations: instance().migrations(),
            };
            serde_json::to_vec(&description)
                .map_err(|e| format!("cannot serialize the description: {e}"))
        })
    }
}

/// `free_buffer`: gives a buffer this plugin returned back to its allocator.
///
/// # Safety
/// `buffer` must be one this plugin returned, freed once.
pub unsafe extern "C" fn free_buffer(buffer: RawBuffer) {
    // SAFETY: the host hands back a buffer we made with RawBuffer::from_vec.
    drop(unsafe { buffer.into_vec() });
}

/// Runs `f`, writes its output or error or panic message to `output`, returns the status.
/// Nothing unwinds out of here.
unsafe fn guarded(output: *mut RawBuffer, f: impl FnOnce() -> Result<Vec<u8>, String>) -> u32 {
    let (status, bytes) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(bytes)) => (STATUS_OK, bytes),
        Ok(Err(message)) => (STATUS_ERROR, message.into_bytes()),
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            // A payload whose destructor panics would unwind from here: contain it too.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            (STATUS_PANIC, message.into_bytes())
        }
    };
    if !output.is_null() {
        // SAFETY: the host passes a writable RawBuffer (checked non-null above).
        unsafe { output.write(RawBuffer::from_vec(bytes)) };
    }
    status
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".into()
    }
}
