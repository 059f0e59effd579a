//! A real shared library that is not a plugin: it exports a function, but not
//! `speckit_plugin_entry`. The engine must refuse it with "missing symbol".

/// Something to export, so the library is not empty.
#[unsafe(no_mangle)]
pub extern "C" fn speckit_not_a_plugin() -> u32 {
    42
}
