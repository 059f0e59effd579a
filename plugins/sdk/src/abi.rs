//! The C ABI between speckit-hygiene and a dynamic plugin: one exported function that
//! returns a `#[repr(C)]` table of plain function pointers, and byte buffers that hold JSON.
//!
//! Rust has no stable ABI, so nothing Rust-specific crosses the boundary: no trait objects,
//! no `String`, no `Vec`, no panics. The table starts with a [`TableHeader`] whose layout
//! never changes, so a host can read the magic number, the ABI version and the table's size
//! of any plugin, old or new, before it touches anything else.
//!
//! Ownership: the host lends its input ([`ByteSlice`]) for the duration of one call; the
//! plugin returns its output in a [`RawBuffer`] allocated by the plugin's own allocator,
//! which the host copies and hands back to the plugin's `free_buffer`. Each side frees
//! only what it allocated (the two may link different allocators).

use std::fmt;

/// "SPKHYGPL": identifies a speckit-hygiene plugin table.
pub const MAGIC: u64 = u64::from_be_bytes(*b"SPKHYGPL");

/// The version of this table layout and of the calling convention. Bumped on any change a
/// plugin built against the old SDK would misread; the host refuses any other version.
pub const ABI_VERSION: u32 = 3;

/// The symbol a plugin exports: `extern "C" fn() -> *const PluginTable`.
pub const ENTRY_SYMBOL: &str = "speckit_plugin_entry";

/// The call succeeded; the output holds its result (JSON, or nothing for `validate`).
pub const STATUS_OK: u32 = 0;
/// The plugin refused (a bad config, a failed job); the output holds a UTF-8 message.
pub const STATUS_ERROR: u32 = 1;
/// The plugin panicked and the SDK caught it; the output holds the panic message.
pub const STATUS_PANIC: u32 = 2;

/// Set when the plugin was built with `panic = "unwind"`, so the SDK can catch a panic
/// before it reaches the `extern "C"` boundary. With `panic = "abort"` a panic would abort
/// the host process, so the host refuses plugins without this flag.
pub const FLAG_PANIC_UNWIND: u32 = 1;

/// The type of [`ENTRY_SYMBOL`].
pub type EntryFn = unsafe extern "C" fn() -> *const PluginTable;

/// `validate` and `describe`: read `input`, write the result to `*output`, return a status.
pub type CallFn = unsafe extern "C" fn(input: ByteSlice, output: *mut RawBuffer) -> u32;

/// `run`: like [`CallFn`], with the host's services lent for the duration of the call.
pub type RunFn =
    unsafe extern "C" fn(input: ByteSlice, host: *const HostApi, output: *mut RawBuffer) -> u32;

/// What the host lends one `run` call: its storage, reached by JSON requests
/// ([`crate::storage::HostRequest`]). Valid only until `run` returns.
///
/// `call` writes the response (a [`crate::storage::HostResponse`] as JSON) into a buffer
/// the host allocated; the plugin copies it and hands it back through `free_buffer`.
/// It returns [`STATUS_OK`], or [`STATUS_ERROR`] when the host could not be reached (the
/// buffer then holds a UTF-8 message).
#[repr(C)]
#[derive(Debug)]
pub struct HostApi {
    pub context: *mut std::ffi::c_void,
    pub call: Option<
        unsafe extern "C" fn(
            context: *mut std::ffi::c_void,
            request: ByteSlice,
            response: *mut RawBuffer,
        ) -> u32,
    >,
    pub free_buffer:
        Option<unsafe extern "C" fn(context: *mut std::ffi::c_void, buffer: RawBuffer)>,
}

/// Gives a buffer the plugin returned back to the plugin's allocator.
pub type FreeFn = unsafe extern "C" fn(buffer: RawBuffer);

/// The first 16 bytes of every table, in every ABI version.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableHeader {
    pub magic: u64,
    pub abi_version: u32,
    /// `size_of::<PluginTable>()` as the plugin was compiled.
    pub table_size: u32,
}

impl TableHeader {
    /// The header this SDK writes and this host expects.
    pub const CURRENT: TableHeader = TableHeader {
        magic: MAGIC,
        abi_version: ABI_VERSION,
        table_size: TABLE_SIZE,
    };

    /// Every field that differs from [`TableHeader::CURRENT`], by name. Empty when the
    /// table can be read.
    pub fn mismatches(&self) -> Vec<FieldMismatch> {
        let expected = Self::CURRENT;
        let mut out = Vec::new();
        if self.magic != expected.magic {
            out.push(FieldMismatch {
                field: "magic",
                found: format!("{:#018x}", self.magic),
                expected: format!("{:#018x}", expected.magic),
            });
        }
        if self.abi_version != expected.abi_version {
            out.push(FieldMismatch {
                field: "abi_version",
                found: self.abi_version.to_string(),
                expected: expected.abi_version.to_string(),
            });
        }
        if self.table_size != expected.table_size {
            out.push(FieldMismatch {
                field: "table_size",
                found: self.table_size.to_string(),
                expected: expected.table_size.to_string(),
            });
        }
        out
    }
}

/// One header field that is not what the host expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMismatch {
    pub field: &'static str,
    pub found: String,
    pub expected: String,
}

impl fmt::Display for FieldMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {} (expected {})",
            self.field, self.found, self.expected
        )
    }
}

/// A `&'static str` as a pointer and a length (UTF-8, not NUL-terminated).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct StaticStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl StaticStr {
    pub const fn new(s: &'static str) -> Self {
        Self {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The string, if it is at most `max_len` bytes of UTF-8.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that live as long as `'a`.
    pub unsafe fn to_str<'a>(&self, max_len: usize) -> Result<&'a str, String> {
        if self.len > max_len {
            return Err(format!("is {} bytes long (at most {max_len})", self.len));
        }
        if self.ptr.is_null() {
            return if self.len == 0 {
                Ok("")
            } else {
                Err("is a null pointer".into())
            };
        }
        // SAFETY: the caller promises `len` readable bytes at `ptr`.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        std::str::from_utf8(bytes).map_err(|e| format!("is not UTF-8: {e}"))
    }
}

/// Bytes the caller lends for the duration of one call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ByteSlice {
    pub ptr: *const u8,
    pub len: usize,
}

impl ByteSlice {
    pub fn new(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// # Safety
    /// `ptr` must point to `len` readable bytes for `'a` (or be null with `len` 0).
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            // SAFETY: the caller promises `len` readable bytes at `ptr`.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// Bytes owned by the side that allocated them: a `Vec<u8>` taken apart.
#[repr(C)]
#[derive(Debug)]
pub struct RawBuffer {
    pub ptr: *mut u8,
    pub len: usize,
    pub capacity: usize,
}

impl RawBuffer {
    /// No buffer; freeing it does nothing.
    pub const EMPTY: RawBuffer = RawBuffer {
        ptr: std::ptr::null_mut(),
        len: 0,
        capacity: 0,
    };

    /// Takes ownership of a vector's allocation.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        Self {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            capacity: bytes.capacity(),
        }
    }

    /// Gives the allocation back to a vector.
    ///
    /// # Safety
    /// Only on the side that made this buffer with [`RawBuffer::from_vec`], once.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        if self.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: the parts came from a Vec<u8> of this allocator (the caller's promise).
        unsafe { Vec::from_raw_parts(self.ptr, self.len, self.capacity) }
    }

    /// The bytes, borrowed.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes (or be null).
    pub unsafe fn as_bytes(&self) -> &[u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            // SAFETY: the caller promises `len` readable bytes at `ptr`.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// What [`ENTRY_SYMBOL`] returns. ABI version 3 (the job context carries `sections`; version 2
/// sent the evidence fields itself; version 1 had no `describe` and no
/// [`HostApi`] in `run`). Never reorder or resize fields without
/// bumping [`ABI_VERSION`]; the header stays first in every version.
#[repr(C)]
#[derive(Debug)]
pub struct PluginTable {
    pub header: TableHeader,
    /// [`FLAG_PANIC_UNWIND`] and future flags.
    pub flags: u32,
    pub reserved: u32,
    /// The plugin's own name (the host schedules it under its `[plugins.<name>]` key).
    pub name: StaticStr,
    pub version: StaticStr,
    /// The version of this SDK the plugin was built with, for diagnostics.
    pub sdk_version: StaticStr,
    /// Input: the plugin's config as JSON. `STATUS_ERROR` rejects the policy.
    pub validate: Option<CallFn>,
    /// Input: the job context as JSON ([`crate::JobContext`]). Output: a [`crate::Report`]
    /// as JSON.
    pub run: Option<RunFn>,
    pub free_buffer: Option<FreeFn>,
    /// Input: nothing. Output: a [`crate::Description`] as JSON (the plugin's migrations).
    pub describe: Option<CallFn>,
}

// SAFETY: the table is immutable and its pointers point to 'static data and functions.
unsafe impl Sync for PluginTable {}

/// `size_of::<PluginTable>()` for this ABI version.
pub const TABLE_SIZE: u32 = std::mem::size_of::<PluginTable>() as u32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_header_matches_itself() {
        assert!(TableHeader::CURRENT.mismatches().is_empty());
    }

    #[test]
    fn every_mismatched_field_is_named() {
        let header = TableHeader {
            magic: 0xdead_beef,
            abi_version: ABI_VERSION + 1,
            table_size: 8,
        };
        let text: Vec<String> = header.mismatches().iter().map(|m| m.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert_eq!(
            text[0],
            format!("magic is 0x00000000deadbeef (expected {MAGIC:#018x})")
        );
        assert_eq!(
            text[1],
            format!(
                "abi_version is {} (expected {ABI_VERSION})",
                ABI_VERSION + 1
            )
        );
        assert_eq!(text[2], format!("table_size is 8 (expected {TABLE_SIZE})"));
    }

    #[test]
    fn the_header_is_the_first_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<TableHeader>(), 16);
        assert_eq!(std::mem::offset_of!(PluginTable, header), 0);
    }

    #[test]
    fn raw_buffers_round_trip() {
        let buffer = RawBuffer::from_vec(b"hello".to_vec());
        // SAFETY: made by from_vec just above.
        assert_eq!(unsafe { buffer.as_bytes() }, b"hello");
        // SAFETY: made by from_vec just above, given back once.
        assert_eq!(unsafe { buffer.into_vec() }, b"hello");
        // SAFETY: EMPTY is null, which into_vec handles.
        assert!(unsafe { RawBuffer::EMPTY.into_vec() }.is_empty());
    }

    #[test]
    fn static_strings_are_checked() {
        let s = StaticStr::new("digest");
        // SAFETY: made from a &'static str.
        assert_eq!(unsafe { s.to_str(64) }, Ok("digest"));
        // SAFETY: as above.
        assert!(unsafe { s.to_str(3) }.unwrap_err().contains("6 bytes"));
        let bad = StaticStr {
            ptr: b"\xff\xfe".as_ptr(),
            len: 2,
        };
        // SAFETY: points to a 2-byte static.
        assert!(unsafe { bad.to_str(64) }.unwrap_err().contains("not UTF-8"));
    }
}
