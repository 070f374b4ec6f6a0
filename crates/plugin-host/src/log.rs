//! Re-emits log events forwarded by cdylib plugins into the host's `tracing`.

use connector_sdk::abi::LogRecord;
use connector_sdk::level_code;
use tracing::Level;
use tracing::level_filters::LevelFilter;

/// The host's log function, handed to every cdylib plugin at `open`.
pub(crate) unsafe extern "C" fn forward_plugin_log(record: *const LogRecord) {
    if record.is_null() {
        return;
    }
    // SAFETY: the ABI says the record and its strings are valid during this call.
    let record = unsafe { *record };
    // SAFETY: as above.
    let text =
        |slice: connector_sdk::abi::RawSlice| unsafe { String::from_utf8_lossy(slice.as_bytes()) };
    let connector = text(record.connector);
    let plugin = text(record.plugin);
    let target = text(record.target);
    let message = text(record.message);
    let fields = text(record.fields);
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(
                target: "connector",
                $level,
                connector = %connector,
                plugin = %plugin,
                plugin_target = %target,
                fields = %fields,
                "{message}"
            )
        };
    }
    match record.level {
        0 => emit!(Level::TRACE),
        1 => emit!(Level::DEBUG),
        2 => emit!(Level::INFO),
        3 => emit!(Level::WARN),
        _ => emit!(Level::ERROR),
    }
}

/// The most verbose level the host's subscriber records, as an ABI level code.
pub(crate) fn host_max_level() -> u32 {
    match LevelFilter::current().into_level() {
        Some(level) => level_code(level),
        // Logging is off: forward errors only, which cost nothing when nothing fails.
        None => level_code(Level::ERROR),
    }
}
