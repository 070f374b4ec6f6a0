//! A shared library that is not a connector: it exports no descriptor symbol.

/// Some exported function, so the library is not empty.
#[unsafe(no_mangle)]
pub extern "C" fn not_a_connector() -> u32 {
    42
}
