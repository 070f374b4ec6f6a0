//! The C ABI between the runtime (the host) and a connector plugin.
//!
//! Everything here is `#[repr(C)]` and only holds plain integers, raw pointers and
//! `extern "C"` function pointers, so a plugin built by another compiler version can
//! talk to the host. Connector authors never touch this module: the
//! [`export_sink!`](crate::export_sink) and [`export_source!`](crate::export_source)
//! macros build the descriptor, and `plugin-host` wraps it in safe handles.
//!
//! # The handshake
//!
//! A plugin library exports one symbol, `iggy_connector_descriptor_<crate name>`
//! (see [`descriptor_symbol`]), a function returning a pointer to a static
//! [`ConnectorDescriptor`]. Its first field is [`ConnectorDescriptor::abi_version`]; the
//! host reads that field alone, and refuses the plugin unless it equals [`ABI_VERSION`],
//! before it reads anything else. Any change to a type in this module must bump
//! [`ABI_VERSION`].
//!
//! The symbol carries the crate name so that several connector crates can be linked
//! statically into one binary without their symbols clashing.
//!
//! # Calls are asynchronous
//!
//! Every operation (`open`, `consume`, `poll`, `batch_result`, `close`) returns at once:
//! the plugin starts the work on its own executor and reports the outcome later through
//! the completion function the host passed, with the host's opaque `ctx` pointer. The
//! completion is called exactly once per call, possibly before the call returns, and
//! from any thread. The host therefore never blocks a thread on a plugin. The two
//! exceptions are no operations on an instance: [`ConnectorDescriptor::config_schema`]
//! returns static text, and [`ConnectorDescriptor::validate_config`] deserialises and
//! checks a config without I/O and answers before it returns.
//!
//! # Memory
//!
//! Nothing allocated on one side is freed on the other.
//! - [`OpenArgs`] is borrowed for the duration of the `open` call only.
//! - A [`SinkBatchView`] and everything it points to stay valid and unchanged until the
//!   plugin calls the completion of that `consume`.
//! - A [`SourceBatchView`] passed to a poll completion stays valid until the host calls
//!   `batch_result` for that batch (or `close`).
//! - The message and `RawSlice` passed to a completion or log function are valid only
//!   during that call.

use std::ffi::c_void;

/// Version of this ABI. The host refuses a plugin that declares another one.
pub const ABI_VERSION: u32 = 3;

/// Prefix of the exported descriptor symbol; the crate name follows it.
pub const DESCRIPTOR_SYMBOL_PREFIX: &str = "iggy_connector_descriptor_";

/// The name of the descriptor symbol a crate called `crate_name` exports.
///
/// ```
/// assert_eq!(
///     connector_sdk::abi::descriptor_symbol("iggy-connector-stdout-sink"),
///     "iggy_connector_descriptor_iggy_connector_stdout_sink"
/// );
/// ```
pub fn descriptor_symbol(crate_name: &str) -> String {
    format!("{DESCRIPTOR_SYMBOL_PREFIX}{}", crate_name.replace('-', "_"))
}

/// [`ConnectorDescriptor::kind`] of a sink.
pub const KIND_SINK: u32 = 1;
/// [`ConnectorDescriptor::kind`] of a source.
pub const KIND_SOURCE: u32 = 2;

/// Call outcome: success.
pub const STATUS_OK: i32 = 0;
/// Call outcome: the connector reported an error worth retrying.
pub const STATUS_RETRYABLE: i32 = 1;
/// Call outcome: the connector reported an error that retrying will not fix.
pub const STATUS_PERMANENT: i32 = 2;
/// Call outcome: the plugin config did not deserialise or was rejected.
pub const STATUS_INVALID_CONFIG: i32 = 3;
/// Call outcome: the connector panicked; the message is the panic message.
pub const STATUS_PANIC: i32 = 4;
/// Call outcome: the call itself was wrong (bad pointer, wrong batch id, bad UTF-8...).
pub const STATUS_INVALID_CALL: i32 = 5;
/// Call outcome: the work was abandoned because the instance was closing.
pub const STATUS_CANCELLED: i32 = 6;

/// A borrowed run of bytes. `ptr` may be null only when `len` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawSlice {
    /// First byte, or null for an empty slice.
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

// SAFETY: a RawSlice is an immutable view; the ABI rules above say the memory behind it
// stays valid and unchanged while the receiver may read it, from any thread.
unsafe impl Send for RawSlice {}
// SAFETY: as for Send; nothing is ever written through a RawSlice.
unsafe impl Sync for RawSlice {}

impl RawSlice {
    /// The empty slice (null pointer, zero length).
    pub const EMPTY: RawSlice = RawSlice {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// A view of `bytes`; the caller keeps `bytes` alive as the ABI rules require.
    pub const fn new(bytes: &[u8]) -> Self {
        RawSlice {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// Whether this is the "absent" value (a null pointer).
    pub fn is_null(&self) -> bool {
        self.ptr.is_null()
    }

    /// The bytes behind the view.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that stay valid and unchanged for `'a`,
    /// or be null with `len == 0`.
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: non-null, and the caller guarantees `len` valid bytes for 'a.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes as UTF-8, or an error naming `what` if they are not.
    ///
    /// # Safety
    /// As for [`RawSlice::as_bytes`].
    pub unsafe fn as_str<'a>(&self, what: &str) -> Result<&'a str, String> {
        // SAFETY: forwarded to the caller.
        let bytes = unsafe { self.as_bytes() };
        std::str::from_utf8(bytes).map_err(|error| format!("{what} is not UTF-8: {error}"))
    }
}

impl From<&'static str> for RawSlice {
    fn from(value: &'static str) -> Self {
        RawSlice::new(value.as_bytes())
    }
}

/// One message as it crosses the boundary, in either direction.
///
/// For a message a source produced, zero in `id_low`/`id_high` means "let Iggy pick an
/// id" and zero in a timestamp means "not set".
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MessageView {
    /// Low 64 bits of the 128-bit message id.
    pub id_low: u64,
    /// High 64 bits of the 128-bit message id.
    pub id_high: u64,
    /// Offset in the partition (sink side).
    pub offset: u64,
    /// Iggy timestamp, microseconds since the UNIX epoch.
    pub timestamp: u64,
    /// Timestamp set by the producer, microseconds since the UNIX epoch.
    pub origin_timestamp: u64,
    /// Checksum Iggy computed for the message.
    pub checksum: u64,
    /// The payload bytes.
    pub payload: RawSlice,
    /// First user header, or null when `headers_len` is 0.
    pub headers: *const HeaderView,
    /// Number of user headers.
    pub headers_len: usize,
}

// SAFETY: an immutable view; see the memory rules in the module documentation.
unsafe impl Send for MessageView {}
// SAFETY: an immutable view; see the memory rules in the module documentation.
unsafe impl Sync for MessageView {}

/// One user header: a UTF-8 key, a kind code (Iggy's `HeaderKind`) and the value bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HeaderView {
    /// Header name, UTF-8.
    pub key: RawSlice,
    /// Kind code of the value; see [`HeaderKind`](crate::HeaderKind).
    pub kind: u32,
    /// Value bytes, in Iggy's encoding for the kind.
    pub value: RawSlice,
}

/// A batch the host hands to a sink: messages of one partition of one topic.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SinkBatchView {
    /// Stream name.
    pub stream: RawSlice,
    /// Topic name.
    pub topic: RawSlice,
    /// Partition the messages come from.
    pub partition_id: u32,
    /// Payload schema code; see [`Schema::code`](crate::Schema::code).
    pub schema: u32,
    /// The partition's current (highest) offset when the batch was polled.
    pub current_offset: u64,
    /// First message.
    pub messages: *const MessageView,
    /// Number of messages.
    pub messages_len: usize,
}

// SAFETY: an immutable view; see the memory rules in the module documentation.
unsafe impl Send for SinkBatchView {}
// SAFETY: an immutable view; see the memory rules in the module documentation.
unsafe impl Sync for SinkBatchView {}

/// A batch a source produced, handed to the host in a poll completion.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SourceBatchView {
    /// Identifies the batch in the `batch_result` call that settles it.
    pub batch_id: u64,
    /// Payload schema code of every message in the batch.
    pub schema: u32,
    /// First message.
    pub messages: *const MessageView,
    /// Number of messages.
    pub messages_len: usize,
    /// State to persist once the batch is accepted; a null pointer means "unchanged".
    pub state: RawSlice,
}

// SAFETY: an immutable view; see the memory rules in the module documentation.
unsafe impl Send for SourceBatchView {}
// SAFETY: an immutable view; see the memory rules in the module documentation.
unsafe impl Sync for SourceBatchView {}

/// A log event forwarded from a plugin's own copy of `tracing` to the host.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LogRecord {
    /// 0 = TRACE, 1 = DEBUG, 2 = INFO, 3 = WARN, 4 = ERROR.
    pub level: u32,
    /// The connector key of the instance that logged, empty if unknown.
    pub connector: RawSlice,
    /// The plugin's connector name.
    pub plugin: RawSlice,
    /// The event's `tracing` target inside the plugin.
    pub target: RawSlice,
    /// The event's message.
    pub message: RawSlice,
    /// The event's other fields, formatted as `name=value` pairs separated by spaces.
    pub fields: RawSlice,
}

/// Receives a plugin's log events; the record is valid only during the call.
pub type LogFn = unsafe extern "C" fn(record: *const LogRecord);

/// Completion of an `open`: on success `instance` is the new instance, else null.
pub type OpenDoneFn =
    unsafe extern "C" fn(ctx: *mut c_void, status: i32, message: RawSlice, instance: *mut c_void);

/// Completion of `consume`, `batch_result` and `close`.
pub type DoneFn = unsafe extern "C" fn(ctx: *mut c_void, status: i32, message: RawSlice);

/// Completion of a source `poll`: on success `batch` is the produced batch, else null.
pub type PollDoneFn = unsafe extern "C" fn(
    ctx: *mut c_void,
    status: i32,
    message: RawSlice,
    batch: *const SourceBatchView,
);

/// Arguments of `open`, borrowed for the duration of the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct OpenArgs {
    /// The connector key (from its config file).
    pub key: RawSlice,
    /// The connector's `plugin_config`, as JSON text.
    pub config_json: RawSlice,
    /// A source's last persisted state; a null pointer means "none".
    pub state: RawSlice,
    /// Where the plugin sends its log events. `None` means the plugin shares the host's
    /// `tracing` (it is linked statically) and must not install a forwarder.
    pub log: Option<LogFn>,
    /// The most verbose level the host records (same codes as [`LogRecord::level`]).
    pub max_log_level: u32,
    /// Worker threads of the instance's executor; 0 picks the default (1).
    pub worker_threads: u32,
}

/// Opens a sink or source instance.
pub type OpenFn = unsafe extern "C" fn(args: *const OpenArgs, done: OpenDoneFn, ctx: *mut c_void);

/// Closes an instance: cancels or waits for in-flight work (at most `timeout_ms`), runs
/// the connector's `close`, frees the instance. The instance pointer is dead afterwards.
pub type CloseFn =
    unsafe extern "C" fn(instance: *mut c_void, timeout_ms: u64, done: DoneFn, ctx: *mut c_void);

/// The functions of a sink plugin.
#[repr(C)]
#[derive(Debug)]
pub struct SinkVTable {
    /// Opens an instance.
    pub open: OpenFn,
    /// Delivers a batch; the batch stays valid until `done` is called.
    pub consume: unsafe extern "C" fn(
        instance: *mut c_void,
        batch: *const SinkBatchView,
        done: DoneFn,
        ctx: *mut c_void,
    ),
    /// Closes an instance.
    pub close: CloseFn,
}

/// The functions of a source plugin.
#[repr(C)]
#[derive(Debug)]
pub struct SourceVTable {
    /// Opens an instance.
    pub open: OpenFn,
    /// Asks for the next batch. At most [`ConnectorDescriptor::max_unsettled_batches`]
    /// batches are unsettled at a time.
    pub poll: unsafe extern "C" fn(instance: *mut c_void, done: PollDoneFn, ctx: *mut c_void),
    /// Settles the oldest unsettled batch: `accepted` = 1 when Iggy stored it, 0 when the
    /// host rejects it. Batches are settled in the order they were polled; once one is
    /// rejected, every later unsettled batch can only be rejected too (the source has
    /// rewound to the start of the rejected one).
    pub batch_result: unsafe extern "C" fn(
        instance: *mut c_void,
        batch_id: u64,
        accepted: u8,
        done: DoneFn,
        ctx: *mut c_void,
    ),
    /// Closes an instance.
    pub close: CloseFn,
}

/// What a plugin's entry symbol returns.
#[repr(C)]
#[derive(Debug)]
pub struct ConnectorDescriptor {
    /// Must stay the first field in every ABI version: the host reads it first.
    pub abi_version: u32,
    /// [`KIND_SINK`] or [`KIND_SOURCE`].
    pub kind: u32,
    /// The connector's name (e.g. `stdout`).
    pub name: RawSlice,
    /// The connector crate's version.
    pub version: RawSlice,
    /// The version of `connector-sdk` the plugin was built with.
    pub sdk_version: RawSlice,
    /// The sink functions when `kind` is [`KIND_SINK`], else null.
    pub sink: *const SinkVTable,
    /// The source functions when `kind` is [`KIND_SOURCE`], else null.
    pub source: *const SourceVTable,
    /// A source: how many polled batches may be unsettled at once (at least 1), so the
    /// host can send one batch to Iggy while the source produces the next. 0 for a sink.
    pub max_unsettled_batches: u32,
    /// The JSON Schema (UTF-8 JSON text) of the connector's `plugin_config`: fields,
    /// types, defaults, docs, and `"x-secret": true` on secret fields. The text is the
    /// plugin's and stays valid for the life of the process.
    pub config_schema: ConfigSchemaFn,
    /// Checks a `plugin_config` without any I/O (nothing is opened or connected).
    pub validate_config: ValidateConfigFn,
}

/// Signature of [`ConnectorDescriptor::config_schema`].
pub type ConfigSchemaFn = unsafe extern "C" fn() -> RawSlice;

/// Signature of [`ConnectorDescriptor::validate_config`]: `config_json` (UTF-8 JSON) is
/// borrowed for the call; `done` is called exactly once before it returns, with
/// [`STATUS_OK`] and an empty message, or [`STATUS_INVALID_CONFIG`] and the problems as
/// a JSON array of strings (or [`STATUS_PANIC`] and the panic message).
pub type ValidateConfigFn =
    unsafe extern "C" fn(config_json: RawSlice, done: DoneFn, ctx: *mut c_void);

// SAFETY: a descriptor is immutable static data (pointers to static strings and static
// function tables), so sharing it between threads is sound.
unsafe impl Sync for ConnectorDescriptor {}
// SAFETY: as for Sync.
unsafe impl Send for ConnectorDescriptor {}

/// Signature of the exported descriptor symbol.
pub type DescriptorFn = unsafe extern "C" fn() -> *const ConnectorDescriptor;
