//! The plugin host process: the child side of [`super::process`]. A program that embeds
//! the engine calls [`serve_if_requested`] first thing in `main`; when the engine started
//! this process as a plugin host, it loads one plugin library and answers calls until its
//! stdin closes, then exits. Otherwise it returns at once and the program goes on.
//!
//! Whatever the plugin does here (segfault, `abort()`, `exit()`, loop, allocate without
//! bound) ends this process at worst; the engine sees the pipe close or the deadline pass,
//! reports the cause, and starts a new host for the next call.

use std::ffi::{c_void, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use speckit_plugin_sdk::abi::{ByteSlice, HostApi, RawBuffer, STATUS_ERROR, STATUS_OK};

use super::error::CallError;
use super::library::{self, LoadedLibrary};
use super::protocol::{
    read_frame, write_frame, CallStatus, FromHost, ReadError, ToHost, PROTOCOL_VERSION,
};

/// The argument a plugin host is started with.
pub const HOST_ARG: &str = "--speckit-plugin-host";

/// Set (to the protocol version) in a plugin host's environment, and removed from it at
/// once, so a program the plugin starts is never taken for a plugin host.
pub const HOST_ENV: &str = "SPECKIT_PLUGIN_HOST";

/// Serves as a plugin host and exits, if this process was started as one; returns
/// otherwise. Call it before anything else in `main` (before threads or a runtime start).
pub fn serve_if_requested() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(HOST_ARG)) {
        return;
    }
    let expected = PROTOCOL_VERSION.to_string();
    if std::env::var_os(HOST_ENV).as_deref() != Some(OsStr::new(&expected)) {
        return;
    }
    // Single-threaded still (the caller's promise), so changing the environment is sound.
    std::env::remove_var(HOST_ENV);
    std::process::exit(serve());
}

/// The protocol's pipes, shared by the main loop and the plugin's storage requests.
struct Pipes {
    input: File,
    output: File,
}

struct HostIo {
    pipes: Mutex<Pipes>,
}

impl HostIo {
    fn send(&self, message: &FromHost) -> io::Result<()> {
        let mut pipes = self.pipes.lock().unwrap_or_else(|e| e.into_inner());
        write_frame(&mut pipes.output, message)
    }

    /// One storage request of the plugin's, answered by the engine.
    fn storage(&self, request: String) -> Result<String, String> {
        let mut pipes = self.pipes.lock().unwrap_or_else(|e| e.into_inner());
        write_frame(&mut pipes.output, &FromHost::Storage { request })
            .map_err(|e| format!("cannot reach the engine: {e}"))?;
        match read_frame::<ToHost>(&mut pipes.input, None) {
            Ok(ToHost::StorageReply { response }) => Ok(response),
            Ok(other) => Err(format!(
                "the engine sent {other:?} instead of a storage reply"
            )),
            Err(e) => Err(format!("cannot reach the engine: {e}")),
        }
    }
}

fn serve() -> i32 {
    let pipes = match take_protocol_pipes() {
        Ok(pipes) => pipes,
        Err(e) => {
            eprintln!("speckit plugin host: cannot set up its pipes: {e}");
            return 70;
        }
    };
    // Lives as long as the process: a plugin thread may hold the HostApi past its run.
    let io: &'static HostIo = Box::leak(Box::new(HostIo {
        pipes: Mutex::new(pipes),
    }));
    let api: &'static HostApi = Box::leak(Box::new(HostApi {
        context: io as *const HostIo as *mut c_void,
        call: Some(host_call),
        free_buffer: Some(host_free),
    }));
    let ready = FromHost::Ready {
        protocol: PROTOCOL_VERSION,
        pid: std::process::id(),
    };
    if io.send(&ready).is_err() {
        return 71;
    }
    let mut loaded: Option<LoadedLibrary> = None;
    loop {
        let message = {
            let mut pipes = io.pipes.lock().unwrap_or_else(|e| e.into_inner());
            read_frame::<ToHost>(&mut pipes.input, None)
        };
        let reply = match message {
            Ok(ToHost::Load { path, identity }) => match library::open(&path, identity.into()) {
                Ok(library) => {
                    let reply = FromHost::Loaded {
                        name: library.name().to_string(),
                        version: library.version().to_string(),
                        sdk_version: library.sdk_version().to_string(),
                    };
                    loaded = Some(library);
                    reply
                }
                Err(e) => FromHost::LoadFailed {
                    error: e.to_string(),
                },
            },
            Ok(ToHost::Call { function, input }) => match &loaded {
                Some(library) => returned(library.call(function, input.as_bytes(), Some(api))),
                None => FromHost::Returned {
                    status: CallStatus::Refused,
                    output: "no library is loaded in this plugin host".into(),
                },
            },
            Ok(ToHost::StorageReply { .. }) => {
                eprintln!("speckit plugin host: a storage reply nobody asked for; ignored");
                continue;
            }
            Err(ReadError::Closed) => return 0,
            Err(e) => {
                eprintln!("speckit plugin host: cannot read from the engine: {e}");
                return 72;
            }
        };
        if io.send(&reply).is_err() {
            return 73;
        }
    }
}

fn returned(result: Result<Vec<u8>, CallError>) -> FromHost {
    let (status, output) = match result {
        Ok(bytes) => (CallStatus::Ok, String::from_utf8_lossy(&bytes).into_owned()),
        Err(CallError::Refused(message)) => (CallStatus::Refused, message),
        Err(CallError::Panicked(message)) => (CallStatus::Panicked, message),
        Err(CallError::UnknownStatus(status)) => (CallStatus::Unknown, status.to_string()),
        Err(other) => (CallStatus::BadOutput, other.to_string()),
    };
    FromHost::Returned { status, output }
}

/// Moves the protocol off fds 0 and 1: stdin becomes `/dev/null` and stdout goes to
/// stderr, so a plugin that reads stdin or prints cannot corrupt a frame.
fn take_protocol_pipes() -> io::Result<Pipes> {
    let dup = |fd: i32| {
        // SAFETY: fcntl on an fd this process was started with; the result is checked.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if new < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: a fresh descriptor that nothing else owns.
            Ok(unsafe { File::from_raw_fd(new) })
        }
    };
    let input = dup(0)?;
    let output = dup(1)?;
    let null = File::open("/dev/null")?;
    for (from, to) in [(std::os::fd::AsRawFd::as_raw_fd(&null), 0), (2, 1)] {
        // SAFETY: dup2 between descriptors this process owns.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Pipes { input, output })
}

/// `HostApi::call`: forwards a storage request to the engine and lends back its answer.
unsafe extern "C" fn host_call(
    context: *mut c_void,
    request: ByteSlice,
    response: *mut RawBuffer,
) -> u32 {
    let answered = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `context` is the leaked HostIo this process made; `request` is lent for
        // the call by the plugin.
        let io = unsafe { &*(context as *const HostIo) };
        let request = String::from_utf8_lossy(unsafe { request.as_bytes() }).into_owned();
        io.storage(request)
    }))
    .unwrap_or_else(|_| Err("the plugin host panicked while asking the engine".into()));
    let (status, bytes) = match answered {
        Ok(text) => (STATUS_OK, text.into_bytes()),
        Err(message) => (STATUS_ERROR, message.into_bytes()),
    };
    if !response.is_null() {
        // SAFETY: the plugin passes a writable RawBuffer.
        unsafe { response.write(RawBuffer::from_vec(bytes)) };
    }
    status
}

/// `HostApi::free_buffer`: takes back a buffer [`host_call`] made.
unsafe extern "C" fn host_free(_context: *mut c_void, buffer: RawBuffer) {
    // SAFETY: the plugin hands back a buffer host_call made with RawBuffer::from_vec.
    drop(unsafe { buffer.into_vec() });
}
