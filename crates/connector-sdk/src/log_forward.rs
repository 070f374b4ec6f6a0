//! Forwards a plugin's `tracing` events to the host.
//!
//! A cdylib carries its own copy of `tracing`, with its own global dispatcher, so the
//! host's subscriber never sees the plugin's events. On the first `open`, the SDK installs
//! [`ForwardingSubscriber`] as the plugin's global dispatcher; it hands every event to the
//! host's [`LogFn`] with the key of the connector instance whose executor thread logged it.
//! A statically linked connector shares the host's `tracing` and installs nothing.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::{Arc, Once};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::abi::{LogFn, LogRecord, RawSlice};

thread_local! {
    /// The key of the connector instance that owns the current executor thread.
    static CURRENT_CONNECTOR: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// Marks the current thread as belonging to the instance `key` (executor threads only).
pub(crate) fn set_thread_connector(key: Arc<str>) {
    CURRENT_CONNECTOR.with(|current| *current.borrow_mut() = Some(key));
}

/// The ABI level code of a `tracing` level.
pub fn level_code(level: Level) -> u32 {
    match level {
        Level::TRACE => 0,
        Level::DEBUG => 1,
        Level::INFO => 2,
        Level::WARN => 3,
        Level::ERROR => 4,
    }
}

/// The `tracing` level of an ABI level code; unknown codes read as ERROR.
pub fn level_from_code(code: u32) -> Level {
    match code {
        0 => Level::TRACE,
        1 => Level::DEBUG,
        2 => Level::INFO,
        3 => Level::WARN,
        _ => Level::ERROR,
    }
}

static INSTALL: Once = Once::new();

/// Installs the forwarder as this library's global dispatcher, once per library.
pub(crate) fn install(log: LogFn, max_level: u32, plugin: &'static str) {
    INSTALL.call_once(|| {
        let subscriber = ForwardingSubscriber {
            log,
            max_level: level_from_code(max_level),
            plugin,
        };
        // A failure means the plugin installed its own subscriber: keep that one.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// The subscriber that sends events to the host. Spans are not tracked: the connector
/// key comes from the executor thread instead.
struct ForwardingSubscriber {
    log: LogFn,
    max_level: Level,
    plugin: &'static str,
}

impl Subscriber for ForwardingSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max_level
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::from_level(
            self.max_level,
        ))
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = FieldCollector::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        CURRENT_CONNECTOR.with(|current| {
            let current = current.borrow();
            let connector = current.as_deref().unwrap_or("");
            let record = LogRecord {
                level: level_code(*metadata.level()),
                connector: RawSlice::new(connector.as_bytes()),
                plugin: RawSlice::new(self.plugin.as_bytes()),
                target: RawSlice::new(metadata.target().as_bytes()),
                message: RawSlice::new(fields.message.as_bytes()),
                fields: RawSlice::new(fields.others.as_bytes()),
            };
            // SAFETY: the host gave this function for exactly this use; the record and
            // the strings it points to live until the call returns.
            unsafe { (self.log)(&record) };
        });
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Splits an event's fields into its message and the other `name=value` pairs.
#[derive(Default)]
struct FieldCollector {
    message: String,
    others: String,
}

impl Visit for FieldCollector {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.separator();
            let _ = write!(self.others, "{}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.separator();
            let _ = write!(self.others, "{}={value:?}", field.name());
        }
    }
}

impl FieldCollector {
    fn separator(&mut self) {
        if !self.others.is_empty() {
            self.others.push(' ');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_codes_round_trip() {
        for level in [
            Level::TRACE,
            Level::DEBUG,
            Level::INFO,
            Level::WARN,
            Level::ERROR,
        ] {
            assert_eq!(level_from_code(level_code(level)), level);
        }
    }
}
