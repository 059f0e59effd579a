//! A test plugin built for another ABI: right magic, but the next ABI version and a table
//! of another size, as a plugin from a newer SDK would export. The engine must refuse it
//! by reading the header alone, naming both fields.

use speckit_plugin_sdk::abi::{TableHeader, ABI_VERSION, MAGIC, TABLE_SIZE};

#[repr(C)]
pub struct FutureTable {
    header: TableHeader,
    // What a future version might have: a larger table the engine must not read.
    padding: [u64; 16],
}

static TABLE: FutureTable = FutureTable {
    header: TableHeader {
        magic: MAGIC,
        abi_version: ABI_VERSION + 1,
        table_size: TABLE_SIZE + 128,
    },
    padding: [0; 16],
};

/// The entry point, returning the future table.
#[unsafe(no_mangle)]
pub extern "C" fn speckit_plugin_entry() -> *const FutureTable {
    &TABLE
}
