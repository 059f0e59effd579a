//! One plugin library: opening it (once [`super::locate`] has found and checked the
//! file), checking its table's header before anything else, and calling its functions on
//! the current thread.
//!
//! A library, once opened, is never closed: a Rust library registers thread-local
//! destructors that would run code from unmapped memory after `dlclose`. See
//! [`crate::dynamic`] for how a new version is taken instead.

use std::path::{Path, PathBuf};

use speckit_plugin_sdk::abi::{
    ByteSlice, CallFn, EntryFn, FreeFn, HostApi, PluginTable, RawBuffer, RunFn, TableHeader,
    ENTRY_SYMBOL, FLAG_PANIC_UNWIND, STATUS_ERROR, STATUS_OK, STATUS_PANIC,
};

use super::error::{CallError, PluginLoadError};
use super::locate::{check_object_format, FileIdentity};

/// Longest name or version string read from a table.
const MAX_TABLE_STRING: usize = 256;

/// Which function of the table to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginFunction {
    Validate,
    Run,
    Describe,
}

/// A loaded, checked plugin library. Lives for the rest of the process.
#[derive(Debug)]
pub struct LoadedLibrary {
    path: PathBuf,
    identity: FileIdentity,
    name: String,
    version: String,
    sdk_version: String,
    validate: CallFn,
    run: RunFn,
    describe: CallFn,
    free_buffer: FreeFn,
}

impl LoadedLibrary {
    /// The canonical path it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn identity(&self) -> FileIdentity {
        self.identity
    }

    /// The name the plugin gives itself.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn sdk_version(&self) -> &str {
        &self.sdk_version
    }

    /// Calls `function` with `input` on this thread and returns its output; `host` is lent
    /// to `run` (null: no storage). Blocks for as long as the plugin takes.
    pub fn call(
        &self,
        function: PluginFunction,
        input: &[u8],
        host: Option<&'static HostApi>,
    ) -> Result<Vec<u8>, CallError> {
        let host: *const HostApi = host.map_or(std::ptr::null(), |h| h as *const HostApi);
        let mut output = RawBuffer::EMPTY;
        let input = ByteSlice::new(input);
        // SAFETY: the table passed the header check, so every function has this ABI's
        // signature; the input outlives the call, `output` is a valid place for the plugin
        // to write, and `host` is the caller's promise.
        let status = unsafe {
            match function {
                PluginFunction::Validate => (self.validate)(input, &mut output),
                PluginFunction::Run => (self.run)(input, host, &mut output),
                PluginFunction::Describe => (self.describe)(input, &mut output),
            }
        };
        // Copy out, then give the buffer back to the allocator that made it.
        // SAFETY: the plugin wrote a buffer of `len` bytes (or left it empty).
        let bytes = unsafe { output.as_bytes() }.to_vec();
        // SAFETY: the buffer came from this plugin and is handed back once.
        unsafe { (self.free_buffer)(output) };
        match status {
            STATUS_OK => Ok(bytes),
            STATUS_ERROR => Err(CallError::Refused(
                String::from_utf8_lossy(&bytes).into_owned(),
            )),
            STATUS_PANIC => Err(CallError::Panicked(
                String::from_utf8_lossy(&bytes).into_owned(),
            )),
            other => Err(CallError::UnknownStatus(other)),
        }
    }
}

/// Opens `file` (already located and checked), finds the entry symbol, and checks the
/// table's header (magic, ABI version, size: all reported at once), then its flags,
/// strings and functions.
///
/// The file is opened once and must still be the one `identity` describes (checked when
/// it was located); on Linux the dynamic loader then maps it through that descriptor, so a
/// file swapped in at the same path after the check is never loaded.
pub fn open(file: &Path, identity: FileIdentity) -> Result<LoadedLibrary, PluginLoadError> {
    check_object_format(file)?;
    let pinned = pin(file, identity)?;
    let library = open_library(file, &loader_path(file, &pinned))?;
    drop(pinned);
    // Never closed (see the module docs): leaking makes every pointer from it 'static.
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    // SAFETY: the symbol is only called through the ABI's entry signature, which the
    // header check below confirms before anything else in the table is used.
    let entry: EntryFn = unsafe {
        *library
            .get::<EntryFn>(ENTRY_SYMBOL.as_bytes())
            .map_err(|e| PluginLoadError::MissingSymbol {
                path: file.to_path_buf(),
                symbol: ENTRY_SYMBOL,
                message: e.to_string(),
            })?
    };
    let bad_table = |reason: String| PluginLoadError::BadTable {
        path: file.to_path_buf(),
        reason,
    };
    // SAFETY: the entry point takes nothing and returns a pointer (the SDK's contract).
    let table = unsafe { entry() };
    if table.is_null() {
        return Err(bad_table(format!("{ENTRY_SYMBOL} returned a null table")));
    }
    if table.align_offset(std::mem::align_of::<PluginTable>()) != 0 {
        return Err(bad_table(format!(
            "{ENTRY_SYMBOL} returned a misaligned table"
        )));
    }
    // Only the 16-byte header, whose layout every ABI version shares, is read first.
    // SAFETY: non-null, aligned, and every version's table starts with the header.
    let header = unsafe { std::ptr::read(table.cast::<TableHeader>()) };
    let mismatches = header.mismatches();
    if !mismatches.is_empty() {
        return Err(PluginLoadError::AbiMismatch {
            path: file.to_path_buf(),
            mismatches,
        });
    }
    // SAFETY: magic, version and size match this host's ABI; the table is 'static since
    // the library is never unloaded.
    read_table(file, unsafe { &*table }, identity)
}

/// Reads a table whose header matched: its flags, strings and functions.
fn read_table(
    file: &Path,
    table: &PluginTable,
    identity: FileIdentity,
) -> Result<LoadedLibrary, PluginLoadError> {
    let bad_table = |reason: String| PluginLoadError::BadTable {
        path: file.to_path_buf(),
        reason,
    };
    if table.flags & FLAG_PANIC_UNWIND == 0 {
        return Err(PluginLoadError::PanicAbort {
            path: file.to_path_buf(),
        });
    }
    // SAFETY: a table's strings point into its library's static data.
    let text = |field: &str, s: &speckit_plugin_sdk::abi::StaticStr| unsafe {
        s.to_str(MAX_TABLE_STRING)
            .map(str::to_string)
            .map_err(|e| bad_table(format!("{field} {e}")))
    };
    let name = text("name", &table.name)?;
    let version = text("version", &table.version)?;
    let sdk_version = text("sdk_version", &table.sdk_version)?;
    let missing = |field: &str| bad_table(format!("function {field} is null"));
    Ok(LoadedLibrary {
        path: file.to_path_buf(),
        identity,
        name,
        version,
        sdk_version,
        validate: table.validate.ok_or_else(|| missing("validate"))?,
        run: table.run.ok_or_else(|| missing("run"))?,
        describe: table.describe.ok_or_else(|| missing("describe"))?,
        free_buffer: table.free_buffer.ok_or_else(|| missing("free_buffer"))?,
    })
}

/// Opens `file` without following a link and checks it is the file that was checked.
fn pin(file: &Path, identity: FileIdentity) -> Result<std::fs::File, PluginLoadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let read = |source| PluginLoadError::Read {
        path: file.to_path_buf(),
        source,
    };
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(file)
        .map_err(read)?;
    let now = FileIdentity::of(&handle.metadata().map_err(read)?);
    if now != identity {
        return Err(PluginLoadError::ChangedSinceChecked {
            path: file.to_path_buf(),
        });
    }
    Ok(handle)
}

/// The name the dynamic loader opens: the pinned descriptor where the OS has one.
fn loader_path(file: &Path, pinned: &std::fs::File) -> PathBuf {
    if cfg!(target_os = "linux") {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", pinned.as_raw_fd()))
    } else {
        file.to_path_buf()
    }
}

/// dlopen of `through` (the pinned descriptor or `file` itself); errors name `file`.
#[cfg(unix)]
fn open_library(file: &Path, through: &Path) -> Result<libloading::Library, PluginLoadError> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // RTLD_NOW: an unresolved symbol fails here, with a message, not later mid-job.
    // RTLD_LOCAL: the plugin's symbols (its own copy of std among them) stay its own.
    // SAFETY: running the library's initialisers is what loading a plugin means; the
    // permission check above is what makes it the user's own code.
    unsafe { Library::open(Some(through), RTLD_NOW | RTLD_LOCAL) }
        .map(Into::into)
        .map_err(|e| PluginLoadError::Open {
            path: file.to_path_buf(),
            message: e.to_string(),
        })
}

#[cfg(not(unix))]
fn open_library(file: &Path, through: &Path) -> Result<libloading::Library, PluginLoadError> {
    // SAFETY: as above.
    unsafe { libloading::Library::new(through) }.map_err(|e| PluginLoadError::Open {
        path: file.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use speckit_plugin_sdk::abi::StaticStr;

    fn table(flags: u32, name: StaticStr, run: Option<RunFn>) -> PluginTable {
        unsafe extern "C" fn call(_: ByteSlice, _: *mut RawBuffer) -> u32 {
            STATUS_OK
        }
        unsafe extern "C" fn free(_: RawBuffer) {}
        PluginTable {
            header: TableHeader::CURRENT,
            flags,
            reserved: 0,
            name,
            version: StaticStr::new("1.0.0"),
            sdk_version: StaticStr::new("0.1.0"),
            validate: Some(call),
            run,
            free_buffer: Some(free),
            describe: Some(call),
        }
    }

    fn identity() -> FileIdentity {
        FileIdentity {
            device: 0,
            inode: 0,
            size: 0,
            modified_ns: 0,
        }
    }

    #[test]
    fn a_table_is_read_only_when_its_flags_strings_and_functions_are_sound() {
        unsafe extern "C" fn run(_: ByteSlice, _: *const HostApi, _: *mut RawBuffer) -> u32 {
            STATUS_OK
        }
        let file = Path::new("/plugins/libx.so");
        let good = table(FLAG_PANIC_UNWIND, StaticStr::new("x"), Some(run));
        let loaded = read_table(file, &good, identity()).unwrap();
        assert_eq!((loaded.name(), loaded.version()), ("x", "1.0.0"));

        let abort = table(0, StaticStr::new("x"), Some(run));
        let err = read_table(file, &abort, identity())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/plugins/libx.so was built with panic = \"abort\""),
            "{err}"
        );

        let not_utf8 = table(
            FLAG_PANIC_UNWIND,
            StaticStr {
                ptr: b"\xff".as_ptr(),
                len: 1,
            },
            Some(run),
        );
        let err = read_table(file, &not_utf8, identity())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad table: name is not UTF-8"), "{err}");

        let no_run = table(FLAG_PANIC_UNWIND, StaticStr::new("x"), None);
        let err = read_table(file, &no_run, identity())
            .unwrap_err()
            .to_string();
        assert!(err.contains("function run is null"), "{err}");
    }
}
