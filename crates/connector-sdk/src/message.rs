//! The message model: what a sink consumes and what a source produces.

use std::marker::PhantomData;

use bytes::Bytes;

use serde::{Deserialize, Serialize};

use crate::abi::{HeaderView, MessageView, RawSlice};

/// How a payload is encoded.
///
/// The config strings are the snake_case names (`json`, `raw`, `text`, `proto`,
/// `flat_buffer`, `avro`), as upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schema {
    /// JSON text.
    #[default]
    Json,
    /// Opaque bytes.
    Raw,
    /// UTF-8 text.
    Text,
    /// Protocol Buffers.
    Proto,
    /// FlatBuffers.
    FlatBuffer,
    /// Apache Avro.
    Avro,
}

impl Schema {
    /// Every schema, in code order.
    pub const ALL: [Schema; 6] = [
        Schema::Json,
        Schema::Raw,
        Schema::Text,
        Schema::Proto,
        Schema::FlatBuffer,
        Schema::Avro,
    ];

    /// The code that carries the schema across the ABI.
    pub const fn code(self) -> u32 {
        match self {
            Schema::Json => 0,
            Schema::Raw => 1,
            Schema::Text => 2,
            Schema::Proto => 3,
            Schema::FlatBuffer => 4,
            Schema::Avro => 5,
        }
    }

    /// The schema for an ABI code, if the code is known.
    pub fn from_code(code: u32) -> Option<Schema> {
        Schema::ALL.into_iter().find(|schema| schema.code() == code)
    }

    /// The config string of the schema.
    pub const fn as_str(self) -> &'static str {
        match self {
            Schema::Json => "json",
            Schema::Raw => "raw",
            Schema::Text => "text",
            Schema::Proto => "proto",
            Schema::FlatBuffer => "flat_buffer",
            Schema::Avro => "avro",
        }
    }
}

impl std::fmt::Display for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a user header value, with Iggy's numeric codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum HeaderKind {
    Raw = 1,
    String = 2,
    Bool = 3,
    Int8 = 4,
    Int16 = 5,
    Int32 = 6,
    Int64 = 7,
    Int128 = 8,
    Uint8 = 9,
    Uint16 = 10,
    Uint32 = 11,
    Uint64 = 12,
    Uint128 = 13,
    Float32 = 14,
    Float64 = 15,
}

impl HeaderKind {
    /// The kind for a code, if the code is known.
    pub fn from_code(code: u32) -> Option<HeaderKind> {
        use HeaderKind::*;
        [
            Raw, String, Bool, Int8, Int16, Int32, Int64, Int128, Uint8, Uint16, Uint32, Uint64,
            Uint128, Float32, Float64,
        ]
        .into_iter()
        .find(|kind| *kind as u32 == code)
    }
}

/// A borrowed user header of a [`Message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// The header name.
    pub key: &'a str,
    /// The kind code of the value (see [`HeaderKind::from_code`]).
    pub kind: u32,
    /// The value bytes.
    pub value: &'a [u8],
}

/// An owned user header, for messages a source produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedHeader {
    /// The header name.
    pub key: String,
    /// The value's kind.
    pub kind: HeaderKind,
    /// The value bytes, in Iggy's encoding for the kind.
    pub value: Vec<u8>,
}

impl OwnedHeader {
    /// A UTF-8 string header.
    pub fn string(key: impl Into<String>, value: impl Into<String>) -> Self {
        OwnedHeader {
            key: key.into(),
            kind: HeaderKind::String,
            value: value.into().into_bytes(),
        }
    }
}

/// A message handed to a sink. It borrows the host's memory: no payload is copied.
///
/// `Message` has the layout of the ABI's [`MessageView`], so a batch crosses the
/// boundary as one borrowed array without conversion.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct Message<'a> {
    view: MessageView,
    _borrow: PhantomData<&'a [u8]>,
}

impl<'a> Message<'a> {
    /// Views a host array of messages.
    ///
    /// # Safety
    /// `ptr` must point to `len` valid [`MessageView`]s (or be null with `len == 0`)
    /// whose payloads and headers stay valid and unchanged for `'a`, with header keys
    /// in UTF-8.
    pub unsafe fn slice_from_raw(ptr: *const MessageView, len: usize) -> &'a [Message<'a>] {
        if ptr.is_null() || len == 0 {
            return &[];
        }
        // SAFETY: Message is repr(transparent) over MessageView, and the caller
        // guarantees `len` valid views for 'a.
        unsafe { std::slice::from_raw_parts(ptr.cast::<Message<'a>>(), len) }
    }

    /// The 128-bit message id.
    pub fn id(&self) -> u128 {
        (u128::from(self.view.id_high) << 64) | u128::from(self.view.id_low)
    }

    /// The message's offset in its partition.
    pub fn offset(&self) -> u64 {
        self.view.offset
    }

    /// Iggy's timestamp, microseconds since the UNIX epoch.
    pub fn timestamp(&self) -> u64 {
        self.view.timestamp
    }

    /// The producer's timestamp, microseconds since the UNIX epoch.
    pub fn origin_timestamp(&self) -> u64 {
        self.view.origin_timestamp
    }

    /// The checksum Iggy computed.
    pub fn checksum(&self) -> u64 {
        self.view.checksum
    }

    /// The payload bytes.
    pub fn payload(&self) -> &'a [u8] {
        // SAFETY: the constructor's contract: the payload is valid for 'a.
        unsafe { self.view.payload.as_bytes() }
    }

    /// The user headers, in the order they were given.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = Header<'a>> + 'a {
        let views: &'a [HeaderView] = if self.view.headers.is_null() || self.view.headers_len == 0 {
            &[]
        } else {
            // SAFETY: the constructor's contract: `headers_len` views valid for 'a.
            unsafe { std::slice::from_raw_parts(self.view.headers, self.view.headers_len) }
        };
        views.iter().map(|header| Header {
            // SAFETY: the constructor's contract covers header keys and values; a key
            // that is not UTF-8 (a host bug) shows as empty rather than as garbage.
            key: unsafe { header.key.as_str("header key") }.unwrap_or(""),
            kind: header.kind,
            // SAFETY: as above.
            value: unsafe { header.value.as_bytes() },
        })
    }

    /// The value of the first header called `key`.
    pub fn header(&self, key: &str) -> Option<Header<'a>> {
        self.headers().find(|header| header.key == key)
    }

    /// The payload as UTF-8 text, if it is.
    pub fn payload_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.payload()).ok()
    }
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id())
            .field("offset", &self.offset())
            .field("timestamp", &self.timestamp())
            .field("payload_len", &self.payload().len())
            .field("headers", &self.headers().len())
            .finish()
    }
}

/// What a sink receives in one `consume` call: messages of one partition.
#[derive(Debug, Clone, Copy)]
pub struct MessageBatch<'a> {
    /// Stream name.
    pub stream: &'a str,
    /// Topic name.
    pub topic: &'a str,
    /// Partition the messages come from.
    pub partition_id: u32,
    /// The payload schema of the stream.
    pub schema: Schema,
    /// The partition's current offset when the batch was polled.
    pub current_offset: u64,
    /// The messages, in offset order.
    pub messages: &'a [Message<'a>],
}

/// A message a source produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducedMessage {
    /// The message id; `None` lets Iggy pick one.
    pub id: Option<u128>,
    /// The producer's timestamp in microseconds since the UNIX epoch; `None` = not set.
    pub origin_timestamp: Option<u64>,
    /// User headers.
    pub headers: Vec<OwnedHeader>,
    /// The payload bytes. A `Bytes` so that a batch's payloads can share one
    /// allocation (write them into one `BytesMut` and split it, see
    /// [`ProducedMessage::new`]), and so that a client library's received `Bytes` can
    /// be passed on without a copy.
    pub payload: Bytes,
}

impl ProducedMessage {
    /// A message with only a payload: a `Vec<u8>`, a `String`, a static string or
    /// slice, or `Bytes`.
    ///
    /// A source that makes many messages can write a batch into one buffer and split
    /// it: one allocation for the whole batch, and the runtime sends the payloads
    /// straight from that buffer (it copies payloads scattered over many small
    /// allocations into one buffer first):
    ///
    /// ```
    /// use connector_sdk::ProducedMessage;
    /// use connector_sdk::bytes::{BufMut, BytesMut};
    ///
    /// let mut buffer = BytesMut::with_capacity(3 * 16);
    /// let messages: Vec<ProducedMessage> = (0..3)
    ///     .map(|n| {
    ///         buffer.put_slice(format!("{{\"n\":{n}}}").as_bytes());
    ///         ProducedMessage::new(buffer.split().freeze())
    ///     })
    ///     .collect();
    /// assert_eq!(messages[2].payload, "{\"n\":2}");
    /// ```
    pub fn new(payload: impl Into<Bytes>) -> Self {
        ProducedMessage {
            payload: payload.into(),
            ..ProducedMessage::default()
        }
    }
}

/// What a source returns from one `poll`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducedBatch {
    /// The schema of every payload in the batch.
    pub schema: Schema,
    /// The messages, in the order they must be produced.
    pub messages: Vec<ProducedMessage>,
    /// State to persist once Iggy has accepted the batch; `None` keeps the last one.
    pub state: Option<Vec<u8>>,
}

/// How the host settled a batch a source produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Iggy stored every message and the state (if any) was persisted: commit the cursor.
    Accepted,
    /// The batch was not stored: roll the cursor back; it will be asked for again.
    Rejected,
}

impl ProducedMessage {
    /// The ABI view of this message; `headers` must be the views of `self.headers`.
    pub(crate) fn view(&self, headers: &[HeaderView]) -> MessageView {
        let id = self.id.unwrap_or(0);
        MessageView {
            id_low: id as u64,
            id_high: (id >> 64) as u64,
            offset: 0,
            timestamp: 0,
            origin_timestamp: self.origin_timestamp.unwrap_or(0),
            checksum: 0,
            payload: RawSlice::new(&self.payload),
            headers: if headers.is_empty() {
                std::ptr::null()
            } else {
                headers.as_ptr()
            },
            headers_len: headers.len(),
        }
    }
}

impl OwnedHeader {
    pub(crate) fn view(&self) -> HeaderView {
        HeaderView {
            key: RawSlice::new(self.key.as_bytes()),
            kind: self.kind as u32,
            value: RawSlice::new(&self.value),
        }
    }
}

/// The fields of one message to view as a [`Message`], borrowing its payload and headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MessageFields<'a> {
    pub(crate) id: u128,
    pub(crate) offset: u64,
    pub(crate) timestamp: u64,
    pub(crate) origin_timestamp: u64,
    pub(crate) checksum: u64,
    pub(crate) payload: &'a [u8],
    pub(crate) headers: &'a [OwnedHeader],
}

/// The ABI views of messages whose bytes the caller owns (the [`MessageView`]s, with
/// the [`HeaderView`]s of every message in one array behind them): the safe way to get
/// [`Message`]s in-process, as `testing` does.
///
/// The views point into the borrowed payloads and headers (alive for `'a`) and into the
/// two arrays owned here, whose heap buffers never move: neither is changed after
/// `new`.
#[derive(Debug)]
pub(crate) struct MessageViews<'a> {
    messages: Vec<MessageView>,
    _headers: Vec<HeaderView>,
    _borrow: PhantomData<&'a [u8]>,
}

impl<'a> MessageViews<'a> {
    /// Views of `messages`, in order.
    pub(crate) fn new(messages: impl IntoIterator<Item = MessageFields<'a>>) -> Self {
        let messages: Vec<MessageFields<'a>> = messages.into_iter().collect();
        // Every header view is in place before any message view points into the array.
        let headers: Vec<HeaderView> = messages
            .iter()
            .flat_map(|message| message.headers.iter().map(OwnedHeader::view))
            .collect();
        let mut first_header = 0;
        let views = messages
            .iter()
            .map(|message| {
                let count = message.headers.len();
                let own = &headers[first_header..first_header + count];
                first_header += count;
                MessageView {
                    id_low: message.id as u64,
                    id_high: (message.id >> 64) as u64,
                    offset: message.offset,
                    timestamp: message.timestamp,
                    origin_timestamp: message.origin_timestamp,
                    checksum: message.checksum,
                    payload: RawSlice::new(message.payload),
                    headers: if own.is_empty() {
                        std::ptr::null()
                    } else {
                        own.as_ptr()
                    },
                    headers_len: own.len(),
                }
            })
            .collect();
        MessageViews {
            messages: views,
            _headers: headers,
            _borrow: PhantomData,
        }
    }

    /// The messages, as a sink sees them.
    pub(crate) fn messages(&self) -> &[Message<'_>] {
        // SAFETY: every view was made in `new` from payloads and headers borrowed for
        // 'a (which outlives this borrow of `self`), with header keys taken from
        // `String`s (UTF-8), and points into `self._headers`, which is never changed
        // or moved while `self` is borrowed.
        unsafe { Message::slice_from_raw(self.messages.as_ptr(), self.messages.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_codes_round_trip_and_config_names_match_upstream() {
        for schema in Schema::ALL {
            assert_eq!(Schema::from_code(schema.code()), Some(schema));
            let json = serde_json::to_string(&schema).unwrap();
            assert_eq!(json, format!("\"{}\"", schema.as_str()));
        }
        assert_eq!(Schema::from_code(99), None);
        let parsed: Schema = serde_json::from_str("\"flat_buffer\"").unwrap();
        assert_eq!(parsed, Schema::FlatBuffer);
    }

    #[test]
    fn header_kind_codes_match_iggy() {
        assert_eq!(HeaderKind::from_code(2), Some(HeaderKind::String));
        assert_eq!(HeaderKind::from_code(15), Some(HeaderKind::Float64));
        assert_eq!(HeaderKind::from_code(0), None);
        assert_eq!(HeaderKind::from_code(16), None);
    }

    #[test]
    fn message_reads_every_field_of_its_view() {
        let headers = [OwnedHeader::string("trace", "abc")];
        let header_views: Vec<HeaderView> = headers.iter().map(OwnedHeader::view).collect();
        let payload = b"{\"a\":1}";
        let id: u128 = (7u128 << 64) | 9;
        let views = [MessageView {
            id_low: id as u64,
            id_high: (id >> 64) as u64,
            offset: 42,
            timestamp: 1000,
            origin_timestamp: 999,
            checksum: 5,
            payload: RawSlice::new(payload),
            headers: header_views.as_ptr(),
            headers_len: header_views.len(),
        }];
        // SAFETY: the views point into locals that outlive `messages`.
        let messages = unsafe { Message::slice_from_raw(views.as_ptr(), views.len()) };
        let message = messages[0];
        assert_eq!(message.id(), id);
        assert_eq!(message.offset(), 42);
        assert_eq!(message.timestamp(), 1000);
        assert_eq!(message.origin_timestamp(), 999);
        assert_eq!(message.checksum(), 5);
        assert_eq!(message.payload(), payload);
        assert_eq!(message.payload_str(), Some("{\"a\":1}"));
        let header = message.header("trace").unwrap();
        assert_eq!(header.value, b"abc");
        assert_eq!(header.kind, HeaderKind::String as u32);
        assert!(message.header("missing").is_none());
    }
}
