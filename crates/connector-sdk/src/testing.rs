//! Testing a connector in-process, without a runtime, a plugin library or Iggy.
//!
//! - [`TestMessage`] and [`TestBatch`] build what a sink consumes, from owned values
//!   (no `unsafe` in the test); [`TestBatch::view`] lends it as a [`MessageBatch`].
//! - [`SinkHarness`] and [`SourceHarness`] drive a connector through its life as the
//!   runtime does: the config parsed by [`parse_config`] (so a test sees the errors a
//!   user would), `open` with a [`ConnectorContext`] whose key is [`TEST_KEY`], then
//!   `consume`, or `poll` and settle (oldest batch first, with the runtime's rules for
//!   rejected batches and [`Source::MAX_UNSETTLED_BATCHES`]), then `close`.
//!
//! The harnesses call the connector directly on the test's own executor (a
//! `#[tokio::test]`): a panic in the connector fails the test where it happened.
//! Misusing a harness (settling with no batch unsettled, polling past the source's
//! limit) is a bug in the test and panics, as the runtime never does it.
//!
//! ```
//! use connector_sdk::testing::{SinkHarness, TestBatch, TestMessage};
//! use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Config { min_size: usize }
//!
//! /// Keeps the offsets of the payloads that are long enough.
//! struct Filter { min_size: usize, kept: Vec<u64> }
//!
//! impl Sink for Filter {
//!     type Config = Config;
//!
//!     async fn open(config: Config, _: ConnectorContext) -> Result<Self, Error> {
//!         Ok(Filter { min_size: config.min_size, kept: Vec::new() })
//!     }
//!
//!     async fn consume(&mut self, batch: MessageBatch<'_>) -> Result<(), Error> {
//!         let long = batch.messages.iter().filter(|m| m.payload().len() >= self.min_size);
//!         self.kept.extend(long.map(|m| m.offset()));
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! // In a connector crate: #[tokio::test] async fn keeps_long_payloads() { ... }
//! let mut sink = SinkHarness::<Filter>::open(serde_json::json!({"min_size": 3})).await?;
//! sink.consume(&TestBatch::of(["a", "abc", "abcd"])).await?;
//! assert_eq!(sink.connector().kept, [1, 2]);
//! sink.close().await?;
//!
//! // A bad config fails as it would in the runtime.
//! let error = SinkHarness::<Filter>::open(r#"{"min_size": "3"}"#).await.err().unwrap();
//! assert!(error.message().starts_with("plugin_config.min_size:"), "{error}");
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use crate::message::{MessageFields, MessageViews};
use crate::{
    BatchOutcome, ConnectorContext, Error, MessageBatch, OwnedHeader, ProducedBatch, Schema, Sink,
    Source, parse_config,
};

/// The connector key of the context the harnesses open connectors with.
///
/// ```
/// assert_eq!(connector_sdk::testing::context(connector_sdk::testing::TEST_KEY).key, "test");
/// ```
pub const TEST_KEY: &str = "test";

/// The Iggy timestamp of a [`TestMessage`] at offset 0 that sets none: 2023-11-14T22:13:20Z
/// in microseconds. A message's default timestamp is this plus its offset, so tests
/// that print timestamps see fixed values.
///
/// ```
/// use connector_sdk::testing::{BASE_TIMESTAMP, TestBatch};
/// TestBatch::of(["a", "b"]).view_with(|batch| {
///     assert_eq!(batch.messages[1].timestamp(), BASE_TIMESTAMP + 1);
/// });
/// ```
pub const BASE_TIMESTAMP: u64 = 1_700_000_000_000_000;

/// The context the runtime would open a connector called `key` with.
///
/// ```
/// use connector_sdk::testing::context;
/// assert_eq!(context("orders").key, "orders");
/// ```
pub fn context(key: &str) -> ConnectorContext {
    ConnectorContext {
        key: key.to_owned(),
    }
}

/// A connector's `plugin_config` as a test gives it: JSON text (`&str`, `String`) or a
/// [`serde_json::Value`] (`serde_json::json!`). Either way it reaches the connector
/// through [`parse_config`], as in the runtime.
///
/// ```
/// use connector_sdk::testing::ConfigJson;
/// assert_eq!(r#"{"a": 1}"#.into_json(), r#"{"a": 1}"#);
/// assert_eq!(serde_json::json!({"a": 1}).into_json(), r#"{"a":1}"#);
/// ```
pub trait ConfigJson {
    /// The config as JSON text.
    fn into_json(self) -> String;
}

impl ConfigJson for &str {
    fn into_json(self) -> String {
        self.to_owned()
    }
}

impl ConfigJson for String {
    fn into_json(self) -> String {
        self
    }
}

impl ConfigJson for serde_json::Value {
    fn into_json(self) -> String {
        self.to_string()
    }
}

impl ConfigJson for &serde_json::Value {
    fn into_json(self) -> String {
        self.to_string()
    }
}

/// Problems with a config as the runtime's `validate` reports them: the
/// [`parse_config`] error if it does not deserialise, else what `check` says.
fn problems<C: serde::de::DeserializeOwned>(
    config: impl ConfigJson,
    check: fn(&C) -> Vec<String>,
) -> Vec<String> {
    match parse_config::<C>(&config.into_json()) {
        Ok(config) => check(&config),
        Err(error) => vec![error.message().to_owned()],
    }
}

/// One message of a [`TestBatch`], owned. Only the payload is required; the rest has
/// defaults that [`TestBatch::view`] fills in:
/// - offset: the previous message's plus one (the first one's is the batch's
///   [`TestBatch::first_offset`], 0 unless set);
/// - id: the offset plus one (unique in the batch, never the "no id" 0);
/// - timestamp: [`BASE_TIMESTAMP`] plus the offset; origin timestamp: the timestamp;
/// - checksum: 0; no headers.
///
/// ```
/// use connector_sdk::OwnedHeader;
/// use connector_sdk::testing::{TestBatch, TestMessage};
///
/// let message = TestMessage::new("hello")
///     .offset(41)
///     .id(7)
///     .timestamp(1_000)
///     .origin_timestamp(999)
///     .checksum(5)
///     .header(OwnedHeader::string("trace", "abc"));
/// TestBatch::new().message(message).view_with(|batch| {
///     let message = &batch.messages[0];
///     assert_eq!((message.offset(), message.id(), message.checksum()), (41, 7, 5));
///     assert_eq!((message.timestamp(), message.origin_timestamp()), (1_000, 999));
///     assert_eq!(message.payload(), b"hello");
///     assert_eq!(message.header("trace").map(|h| h.value), Some(&b"abc"[..]));
/// });
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestMessage {
    payload: Bytes,
    headers: Vec<OwnedHeader>,
    offset: Option<u64>,
    id: Option<u128>,
    timestamp: Option<u64>,
    origin_timestamp: Option<u64>,
    checksum: u64,
}

impl TestMessage {
    /// A message with this payload: a `&'static str`, `String`, `Vec<u8>`, `Bytes`...
    ///
    /// ```
    /// use connector_sdk::testing::{TestBatch, TestMessage};
    /// let batch = TestBatch::new().message(TestMessage::new(vec![0xff, 0x00]));
    /// batch.view_with(|batch| assert_eq!(batch.messages[0].payload(), [0xff, 0x00]));
    /// ```
    pub fn new(payload: impl Into<Bytes>) -> Self {
        TestMessage {
            payload: payload.into(),
            ..TestMessage::default()
        }
    }

    /// A message whose payload is `value` as JSON text.
    ///
    /// ```
    /// use connector_sdk::testing::{TestBatch, TestMessage};
    /// let batch = TestBatch::new().message(TestMessage::json(serde_json::json!({"n": 1})));
    /// batch.view_with(|batch| assert_eq!(batch.messages[0].payload_str(), Some(r#"{"n":1}"#)));
    /// ```
    pub fn json(value: serde_json::Value) -> Self {
        TestMessage::new(value.to_string())
    }

    /// Sets the offset; the messages after it count up from it.
    ///
    /// ```
    /// use connector_sdk::testing::{TestBatch, TestMessage};
    /// let batch = TestBatch::new()
    ///     .message(TestMessage::new("a").offset(10))
    ///     .message(TestMessage::new("b"));
    /// batch.view_with(|batch| assert_eq!(batch.messages[1].offset(), 11));
    /// ```
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Sets the 128-bit message id.
    ///
    /// ```
    /// use connector_sdk::testing::{TestBatch, TestMessage};
    /// let batch = TestBatch::new().message(TestMessage::new("a").id(u128::MAX));
    /// batch.view_with(|batch| assert_eq!(batch.messages[0].id(), u128::MAX));
    /// ```
    pub fn id(mut self, id: u128) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets Iggy's timestamp, microseconds since the UNIX epoch.
    ///
    /// ```
    /// use connector_sdk::testing::{TestBatch, TestMessage};
    /// let batch = TestBatch::new().message(TestMessage::new("a").timestamp(7));
    /// batch.view_with(|batch| assert_eq!(batch.messages[0].timestamp(), 7));
    /// ```
    pub fn timestamp(mut self, micros: u64) -> Self {
        self.timestamp = Some(micros);
        self
    }

    /// Sets the producer's timestamp, microseconds since the UNIX epoch.
    ///
    /// ```
    /// use connector_sdk::testing::{TestBatch, TestMessage};
    /// let batch = TestBatch::new().message(TestMessage::new("a").origin_timestamp(7));
    /// batch.view_with(|batch| assert_eq!(batch.messages[0].origin_timestamp(), 7));
    /// ```
    pub fn origin_timestamp(mut self, micros: u64) -> Self {
        self.origin_timestamp = Some(micros);
        self
    }

    /// Sets the checksum.
    ///
    /// ```
    /// use connector_sdk::testing::{TestBatch, TestMessage};
    /// let batch = TestBatch::new().message(TestMessage::new("a").checksum(9));
    /// batch.view_with(|batch| assert_eq!(batch.messages[0].checksum(), 9));
    /// ```
    pub fn checksum(mut self, checksum: u64) -> Self {
        self.checksum = checksum;
        self
    }

    /// Adds a user header (after the ones already added).
    ///
    /// ```
    /// use connector_sdk::{HeaderKind, OwnedHeader};
    /// use connector_sdk::testing::{TestBatch, TestMessage};
    /// let flag = OwnedHeader { key: "flag".into(), kind: HeaderKind::Bool, value: vec![1] };
    /// let message = TestMessage::new("a").header(OwnedHeader::string("k", "v")).header(flag);
    /// TestBatch::new().message(message).view_with(|batch| {
    ///     let keys: Vec<&str> = batch.messages[0].headers().map(|h| h.key).collect();
    ///     assert_eq!(keys, ["k", "flag"]);
    /// });
    /// ```
    pub fn header(mut self, header: OwnedHeader) -> Self {
        self.headers.push(header);
        self
    }
}

/// A batch of one partition, owned: what the runtime hands a sink in one `consume`.
///
/// By default the stream is `test_stream`, the topic `test_topic`, the partition 1, the
/// schema [`Schema::Json`], the first offset 0, and the current offset that of the
/// last message (the first offset when there is none). [`TestBatch::view`] lends it as a
/// [`MessageBatch`].
///
/// ```
/// use connector_sdk::Schema;
/// use connector_sdk::testing::{TestBatch, TestMessage};
///
/// let batch = TestBatch::of(["one", "two"])
///     .stream("orders")
///     .topic("created")
///     .partition_id(3)
///     .schema(Schema::Text)
///     .first_offset(100)
///     .current_offset(500)
///     .message(TestMessage::new("three"));
/// assert_eq!(batch.len(), 3);
/// batch.view_with(|batch| {
///     assert_eq!((batch.stream, batch.topic, batch.partition_id), ("orders", "created", 3));
///     assert_eq!((batch.schema, batch.current_offset), (Schema::Text, 500));
///     let offsets: Vec<u64> = batch.messages.iter().map(|m| m.offset()).collect();
///     assert_eq!(offsets, [100, 101, 102]);
/// });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestBatch {
    stream: String,
    topic: String,
    partition_id: u32,
    schema: Schema,
    first_offset: u64,
    current_offset: Option<u64>,
    messages: Vec<TestMessage>,
}

impl Default for TestBatch {
    fn default() -> Self {
        TestBatch {
            stream: "test_stream".to_owned(),
            topic: "test_topic".to_owned(),
            partition_id: 1,
            schema: Schema::Json,
            first_offset: 0,
            current_offset: None,
            messages: Vec::new(),
        }
    }
}

impl TestBatch {
    /// An empty batch with the defaults.
    ///
    /// ```
    /// use connector_sdk::testing::TestBatch;
    /// assert!(TestBatch::new().is_empty());
    /// ```
    pub fn new() -> Self {
        TestBatch::default()
    }

    /// A batch of messages with these payloads and the defaults.
    ///
    /// ```
    /// use connector_sdk::testing::TestBatch;
    /// TestBatch::of([r#"{"a":1}"#, r#"{"a":2}"#]).view_with(|batch| {
    ///     assert_eq!(batch.messages[1].payload_str(), Some(r#"{"a":2}"#));
    /// });
    /// ```
    pub fn of<P: Into<Bytes>>(payloads: impl IntoIterator<Item = P>) -> Self {
        TestBatch::new().messages(payloads.into_iter().map(TestMessage::new))
    }

    /// The batch a sink would get for what a source produced: its schema, and each
    /// message's payload, headers, and id and origin timestamp where set. For tests
    /// that pipe a [`SourceHarness`] into a [`SinkHarness`].
    ///
    /// ```
    /// use connector_sdk::{ProducedBatch, ProducedMessage, Schema};
    /// use connector_sdk::testing::TestBatch;
    /// let produced = ProducedBatch {
    ///     schema: Schema::Raw,
    ///     messages: vec![ProducedMessage { id: Some(9), ..ProducedMessage::new("x") }],
    ///     state: None,
    /// };
    /// TestBatch::from_produced(&produced).view_with(|batch| {
    ///     assert_eq!(batch.schema, Schema::Raw);
    ///     assert_eq!((batch.messages[0].id(), batch.messages[0].payload()), (9, &b"x"[..]));
    /// });
    /// ```
    pub fn from_produced(batch: &ProducedBatch) -> Self {
        TestBatch::new()
            .schema(batch.schema)
            .messages(batch.messages.iter().map(|produced| TestMessage {
                payload: produced.payload.clone(),
                headers: produced.headers.clone(),
                id: produced.id,
                origin_timestamp: produced.origin_timestamp,
                ..TestMessage::default()
            }))
    }

    /// Sets the stream name.
    ///
    /// ```
    /// use connector_sdk::testing::TestBatch;
    /// TestBatch::new().stream("s").view_with(|batch| assert_eq!(batch.stream, "s"));
    /// ```
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = stream.into();
        self
    }

    /// Sets the topic name.
    ///
    /// ```
    /// use connector_sdk::testing::TestBatch;
    /// TestBatch::new().topic("t").view_with(|batch| assert_eq!(batch.topic, "t"));
    /// ```
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Sets the partition the messages come from.
    ///
    /// ```
    /// use connector_sdk::testing::TestBatch;
    /// TestBatch::new().partition_id(2).view_with(|batch| assert_eq!(batch.partition_id, 2));
    /// ```
    pub fn partition_id(mut self, partition_id: u32) -> Self {
        self.partition_id = partition_id;
        self
    }

    /// Sets the payload schema of the stream.
    ///
    /// ```
    /// use connector_sdk::Schema;
    /// use connector_sdk::testing::TestBatch;
    /// TestBatch::new().schema(Schema::Raw).view_with(|batch| assert_eq!(batch.schema, Schema::Raw));
    /// ```
    pub fn schema(mut self, schema: Schema) -> Self {
        self.schema = schema;
        self
    }

    /// Sets the offset of the first message that sets none.
    ///
    /// ```
    /// use connector_sdk::testing::TestBatch;
    /// TestBatch::of(["a"]).first_offset(5).view_with(|batch| {
    ///     assert_eq!(batch.messages[0].offset(), 5);
    ///     assert_eq!(batch.current_offset, 5);
    /// });
    /// ```
    pub fn first_offset(mut self, offset: u64) -> Self {
        self.first_offset = offset;
        self
    }

    /// Sets the partition's current offset (by default the last message's).
    ///
    /// ```
    /// use connector_sdk::testing::TestBatch;
    /// TestBatch::of(["a"]).current_offset(9).view_with(|batch| assert_eq!(batch.current_offset, 9));
    /// ```
    pub fn current_offset(mut self, offset: u64) -> Self {
        self.current_offset = Some(offset);
        self
    }

    /// Adds a message after the others.
    ///
    /// ```
    /// use connector_sdk::testing::{TestBatch, TestMessage};
    /// assert_eq!(TestBatch::new().message(TestMessage::new("a")).len(), 1);
    /// ```
    pub fn message(mut self, message: TestMessage) -> Self {
        self.messages.push(message);
        self
    }

    /// Adds messages after the others.
    ///
    /// ```
    /// use connector_sdk::testing::{TestBatch, TestMessage};
    /// let batch = TestBatch::new().messages((0..3).map(|n| TestMessage::new(n.to_string())));
    /// assert_eq!(batch.len(), 3);
    /// ```
    pub fn messages(mut self, messages: impl IntoIterator<Item = TestMessage>) -> Self {
        self.messages.extend(messages);
        self
    }

    /// The number of messages.
    ///
    /// ```
    /// use connector_sdk::testing::TestBatch;
    /// assert_eq!(TestBatch::of(["a", "b"]).len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether the batch has no message.
    ///
    /// ```
    /// use connector_sdk::testing::TestBatch;
    /// assert!(TestBatch::of(Vec::<String>::new()).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The batch as a sink sees it, with every default filled in. The view owns the
    /// ABI arrays the [`MessageBatch`] points into; it borrows the payloads from `self`.
    ///
    /// ```
    /// use connector_sdk::testing::TestBatch;
    /// let batch = TestBatch::of(["a", "b"]);
    /// let view = batch.view();
    /// let messages = view.batch().messages;
    /// assert_eq!(messages.len(), 2);
    /// assert_eq!(messages[1].payload(), b"b");
    /// ```
    pub fn view(&self) -> BatchView<'_> {
        let mut next_offset = self.first_offset;
        let fields: Vec<MessageFields<'_>> = self
            .messages
            .iter()
            .map(|message| {
                let offset = message.offset.unwrap_or(next_offset);
                next_offset = offset.wrapping_add(1);
                let timestamp = message
                    .timestamp
                    .unwrap_or(BASE_TIMESTAMP.wrapping_add(offset));
                MessageFields {
                    id: message
                        .id
                        .unwrap_or_else(|| u128::from(offset).wrapping_add(1)),
                    offset,
                    timestamp,
                    origin_timestamp: message.origin_timestamp.unwrap_or(timestamp),
                    checksum: message.checksum,
                    payload: &message.payload,
                    headers: &message.headers,
                }
            })
            .collect();
        let current_offset = self.current_offset.unwrap_or_else(|| {
            fields
                .last()
                .map_or(self.first_offset, |message| message.offset)
        });
        BatchView {
            batch: self,
            current_offset,
            messages: MessageViews::new(fields),
        }
    }

    /// Calls `f` with the batch as a sink sees it (see [`TestBatch::view`]).
    ///
    /// ```
    /// use connector_sdk::testing::TestBatch;
    /// let sizes: Vec<usize> = TestBatch::of(["a", "bc"])
    ///     .view_with(|batch| batch.messages.iter().map(|m| m.payload().len()).collect());
    /// assert_eq!(sizes, [1, 2]);
    /// ```
    pub fn view_with<R>(&self, f: impl FnOnce(MessageBatch<'_>) -> R) -> R {
        f(self.view().batch())
    }
}

/// A [`TestBatch`] lent as a [`MessageBatch`]: it holds the ABI views of the messages
/// (made once, by [`TestBatch::view`]) for as long as the batch is used.
///
/// ```
/// use connector_sdk::testing::TestBatch;
/// let batch = TestBatch::of(["a"]);
/// let view = batch.view();
/// assert_eq!(view.batch().messages[0].payload_str(), Some("a"));
/// ```
#[derive(Debug)]
pub struct BatchView<'b> {
    batch: &'b TestBatch,
    current_offset: u64,
    messages: MessageViews<'b>,
}

impl BatchView<'_> {
    /// The batch, borrowing this view.
    ///
    /// ```
    /// use connector_sdk::testing::TestBatch;
    /// let batch = TestBatch::of(["a", "b"]);
    /// let view = batch.view();
    /// assert_eq!(view.batch().current_offset, 1);
    /// ```
    pub fn batch(&self) -> MessageBatch<'_> {
        MessageBatch {
            stream: &self.batch.stream,
            topic: &self.batch.topic,
            partition_id: self.batch.partition_id,
            schema: self.batch.schema,
            current_offset: self.current_offset,
            messages: self.messages.messages(),
        }
    }
}

/// Drives a [`Sink`] in-process: `open`, `consume` any number of batches, `close`.
///
/// ```
/// use connector_sdk::testing::{SinkHarness, TestBatch};
/// use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Config {}
/// struct Count(usize);
/// impl Sink for Count {
///     type Config = Config;
///     async fn open(_: Config, _: ConnectorContext) -> Result<Self, Error> { Ok(Count(0)) }
///     async fn consume(&mut self, batch: MessageBatch<'_>) -> Result<(), Error> {
///         self.0 += batch.messages.len();
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// let mut sink = SinkHarness::<Count>::open("{}").await?;
/// sink.consume(&TestBatch::of(["a", "b"])).await?;
/// sink.consume(&TestBatch::of(["c"])).await?;
/// assert_eq!(sink.connector().0, 3);
/// sink.close().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SinkHarness<S: Sink> {
    sink: S,
}

impl<S: Sink> SinkHarness<S> {
    /// Opens the sink with this `plugin_config` and the key [`TEST_KEY`]. The config is
    /// parsed by [`parse_config`], as the runtime's `open` does.
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # #[serde(deny_unknown_fields)]
    /// # struct Config { path: String }
    /// # struct Files;
    /// # impl Sink for Files {
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext) -> Result<Self, Error> { Ok(Files) }
    /// #     async fn consume(&mut self, _: MessageBatch<'_>) -> Result<(), Error> { Ok(()) }
    /// # }
    /// use connector_sdk::ErrorKind;
    /// use connector_sdk::testing::SinkHarness;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let error = SinkHarness::<Files>::open(serde_json::json!({"pth": "/tmp/x"})).await.err().unwrap();
    /// assert_eq!(error.kind(), ErrorKind::InvalidConfig);
    /// assert!(error.message().contains("unknown field `pth`"), "{error}");
    /// # }
    /// ```
    pub async fn open(config: impl ConfigJson) -> Result<Self, Error> {
        SinkHarness::open_with_context(config, context(TEST_KEY)).await
    }

    /// Opens the sink with this `plugin_config` and context.
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// struct Keyed(String);
    /// impl Sink for Keyed {
    ///     // ...
    /// #     type Config = Config;
    ///     async fn open(_: Config, context: ConnectorContext) -> Result<Self, Error> {
    ///         Ok(Keyed(context.key))
    ///     }
    /// #     async fn consume(&mut self, _: MessageBatch<'_>) -> Result<(), Error> { Ok(()) }
    /// }
    /// use connector_sdk::testing::{SinkHarness, context};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let sink = SinkHarness::<Keyed>::open_with_context("{}", context("orders")).await?;
    /// assert_eq!(sink.connector().0, "orders");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open_with_context(
        config: impl ConfigJson,
        context: ConnectorContext,
    ) -> Result<Self, Error> {
        let config = parse_config::<S::Config>(&config.into_json())?;
        Ok(SinkHarness {
            sink: S::open(config, context).await?,
        })
    }

    /// The plugin's own verdict on this `plugin_config`, as its `validate_config` entry
    /// point gives it: the [`parse_config`] error, else those of
    /// [`Sink::check_config`]. Empty when valid. (`iggy-connectors validate` asks the
    /// same, and words a refusal from the config's schema when it can: every problem,
    /// misspelt keys with the nearest known one.)
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config { min: u32, max: u32 }
    /// # struct Ranged;
    /// impl Sink for Ranged {
    ///     // ...
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext) -> Result<Self, Error> { Ok(Ranged) }
    /// #     async fn consume(&mut self, _: MessageBatch<'_>) -> Result<(), Error> { Ok(()) }
    ///     fn check_config(config: &Config) -> Vec<String> {
    ///         if config.min > config.max { vec!["min > max".to_owned()] } else { Vec::new() }
    ///     }
    /// }
    /// use connector_sdk::testing::SinkHarness;
    /// assert!(SinkHarness::<Ranged>::validate(r#"{"min": 1, "max": 2}"#).is_empty());
    /// assert_eq!(SinkHarness::<Ranged>::validate(r#"{"min": 3, "max": 2}"#), ["min > max"]);
    /// assert!(SinkHarness::<Ranged>::validate(r#"{"min": 3}"#)[0].contains("missing field `max`"));
    /// ```
    pub fn validate(config: impl ConfigJson) -> Vec<String> {
        problems(config, S::check_config)
    }

    /// Hands the sink one batch, as the runtime's `consume` does.
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// struct TextOnly;
    /// impl Sink for TextOnly {
    ///     // ...
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext) -> Result<Self, Error> { Ok(TextOnly) }
    ///     async fn consume(&mut self, batch: MessageBatch<'_>) -> Result<(), Error> {
    ///         match batch.messages.iter().find(|m| m.payload_str().is_none()) {
    ///             Some(m) => Err(Error::permanent(format!("offset {} is not text", m.offset()))),
    ///             None => Ok(()),
    ///         }
    ///     }
    /// }
    /// use connector_sdk::testing::{SinkHarness, TestBatch, TestMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let mut sink = SinkHarness::<TextOnly>::open("{}").await?;
    /// let batch = TestBatch::of(["ok"]).message(TestMessage::new(vec![0xff]));
    /// let error = sink.consume(&batch).await.unwrap_err();
    /// assert_eq!(error.message(), "offset 1 is not text");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn consume(&mut self, batch: &TestBatch) -> Result<(), Error> {
        let view = batch.view();
        self.sink.consume(view.batch()).await
    }

    /// The sink, to look at what it did.
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// # struct Count(usize);
    /// # impl Sink for Count {
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext) -> Result<Self, Error> { Ok(Count(0)) }
    /// #     async fn consume(&mut self, b: MessageBatch<'_>) -> Result<(), Error> { self.0 += b.messages.len(); Ok(()) }
    /// # }
    /// use connector_sdk::testing::{SinkHarness, TestBatch};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let mut sink = SinkHarness::<Count>::open("{}").await?;
    /// sink.consume(&TestBatch::of(["a"])).await?;
    /// assert_eq!(sink.connector().0, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn connector(&self) -> &S {
        &self.sink
    }

    /// The sink, to change it between calls (to make it fail, say).
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// # struct Count(usize);
    /// # impl Sink for Count {
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext) -> Result<Self, Error> { Ok(Count(0)) }
    /// #     async fn consume(&mut self, b: MessageBatch<'_>) -> Result<(), Error> { self.0 += b.messages.len(); Ok(()) }
    /// # }
    /// use connector_sdk::testing::{SinkHarness, TestBatch};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let mut sink = SinkHarness::<Count>::open("{}").await?;
    /// sink.connector_mut().0 = 10;
    /// sink.consume(&TestBatch::of(["a"])).await?;
    /// assert_eq!(sink.connector().0, 11);
    /// # Ok(())
    /// # }
    /// ```
    pub fn connector_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Closes the sink, as the runtime does after its last `consume`.
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// struct Flaky;
    /// impl Sink for Flaky {
    ///     // ...
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext) -> Result<Self, Error> { Ok(Flaky) }
    /// #     async fn consume(&mut self, _: MessageBatch<'_>) -> Result<(), Error> { Ok(()) }
    ///     async fn close(&mut self) -> Result<(), Error> {
    ///         Err(Error::retryable("flush failed"))
    ///     }
    /// }
    /// use connector_sdk::testing::SinkHarness;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let sink = SinkHarness::<Flaky>::open("{}").await?;
    /// assert_eq!(sink.close().await, Err(Error::retryable("flush failed")));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn close(mut self) -> Result<(), Error> {
        self.sink.close().await
    }
}

/// A batch polled and not settled yet.
#[derive(Debug)]
struct Unsettled {
    /// The state the batch carried, persisted when it is accepted.
    state: Option<Vec<u8>>,
    /// A reject of an earlier batch discarded it: it may only be rejected.
    discarded: bool,
}

/// Drives a [`Source`] in-process: `open` with a state, `poll` batches, settle each
/// (oldest first) with `accept` or `reject`, `close`.
///
/// It keeps the state the runtime would have persisted ([`SourceHarness::state`]: the
/// one of the last accepted batch that carried one), so a test can reopen the source
/// with it as after a restart. It follows the runtime's rules: at most
/// [`Source::MAX_UNSETTLED_BATCHES`] batches are unsettled, and rejecting one discards
/// the later unsettled ones (the source rewound): they are then rejected without
/// calling the source, and must be before the next poll.
///
/// ```
/// use connector_sdk::testing::SourceHarness;
/// use connector_sdk::{BatchOutcome, ConnectorContext, Error, ProducedBatch, ProducedMessage, Source};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Config {}
///
/// /// Counts up from its state, one number per batch.
/// struct Counter { next: u8, staged: u8 }
///
/// impl Source for Counter {
///     type Config = Config;
///
///     async fn open(_: Config, _: ConnectorContext, state: Option<Vec<u8>>) -> Result<Self, Error> {
///         let next = state.and_then(|state| state.first().copied()).unwrap_or(0);
///         Ok(Counter { next, staged: next })
///     }
///
///     async fn poll(&mut self) -> Result<ProducedBatch, Error> {
///         self.staged = self.next + 1;
///         Ok(ProducedBatch {
///             messages: vec![ProducedMessage::new(self.next.to_string())],
///             state: Some(vec![self.staged]),
///             ..ProducedBatch::default()
///         })
///     }
///
///     async fn on_batch_result(&mut self, outcome: BatchOutcome) -> Result<(), Error> {
///         if outcome == BatchOutcome::Accepted {
///             self.next = self.staged;
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// let mut source = SourceHarness::<Counter>::open("{}", None).await?;
/// assert_eq!(source.poll().await?.messages[0].payload, "0");
/// source.accept().await?;
/// assert_eq!(source.poll().await?.messages[0].payload, "1");
/// source.reject().await?; // produced again
/// assert_eq!(source.poll().await?.messages[0].payload, "1");
/// source.accept().await?;
/// let state = source.state().map(<[u8]>::to_vec);
/// source.close().await?;
///
/// // A restart goes on from the persisted state.
/// let mut source = SourceHarness::<Counter>::open("{}", state).await?;
/// assert_eq!(source.poll().await?.messages[0].payload, "2");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SourceHarness<S: Source> {
    source: S,
    state: Option<Vec<u8>>,
    unsettled: VecDeque<Unsettled>,
}

impl<S: Source> SourceHarness<S> {
    /// Opens the source with this `plugin_config`, the key [`TEST_KEY`] and the state
    /// it returned last (`None`: a first start). The config is parsed by
    /// [`parse_config`], as the runtime's `open` does.
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, ProducedBatch, Source};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config { interval: u64 }
    /// # struct Timer;
    /// # impl Source for Timer {
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext, _: Option<Vec<u8>>) -> Result<Self, Error> { Ok(Timer) }
    /// #     async fn poll(&mut self) -> Result<ProducedBatch, Error> { Ok(ProducedBatch::default()) }
    /// # }
    /// use connector_sdk::testing::SourceHarness;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let error = SourceHarness::<Timer>::open(r#"{"interval": -1}"#, None).await.err().unwrap();
    /// assert!(error.message().starts_with("plugin_config.interval:"), "{error}");
    /// # }
    /// ```
    pub async fn open(config: impl ConfigJson, state: Option<Vec<u8>>) -> Result<Self, Error> {
        SourceHarness::open_with_context(config, context(TEST_KEY), state).await
    }

    /// Opens the source with this `plugin_config`, context and state.
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, ProducedBatch, ProducedMessage, Source};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// struct Named(String);
    /// impl Source for Named {
    /// #     type Config = Config;
    ///     // ...
    ///     async fn open(_: Config, context: ConnectorContext, _: Option<Vec<u8>>) -> Result<Self, Error> {
    ///         Ok(Named(context.key))
    ///     }
    /// #     async fn poll(&mut self) -> Result<ProducedBatch, Error> { Ok(ProducedBatch::default()) }
    /// }
    /// use connector_sdk::testing::{SourceHarness, context};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let source = SourceHarness::<Named>::open_with_context("{}", context("feed"), None).await?;
    /// assert_eq!(source.connector().0, "feed");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open_with_context(
        config: impl ConfigJson,
        context: ConnectorContext,
        state: Option<Vec<u8>>,
    ) -> Result<Self, Error> {
        let config = parse_config::<S::Config>(&config.into_json())?;
        let source = S::open(config, context, state.clone()).await?;
        Ok(SourceHarness {
            source,
            state,
            unsettled: VecDeque::new(),
        })
    }

    /// The plugin's own verdict on this `plugin_config` (see [`SinkHarness::validate`]):
    /// the [`parse_config`] error, else those of [`Source::check_config`]. Empty when
    /// valid.
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, ProducedBatch, Source};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config { batch: u32 }
    /// # struct Batches;
    /// impl Source for Batches {
    ///     // ...
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext, _: Option<Vec<u8>>) -> Result<Self, Error> { Ok(Batches) }
    /// #     async fn poll(&mut self) -> Result<ProducedBatch, Error> { Ok(ProducedBatch::default()) }
    ///     fn check_config(config: &Config) -> Vec<String> {
    ///         if config.batch == 0 { vec!["batch must be at least 1".to_owned()] } else { Vec::new() }
    ///     }
    /// }
    /// use connector_sdk::testing::SourceHarness;
    /// assert!(SourceHarness::<Batches>::validate(r#"{"batch": 1}"#).is_empty());
    /// assert_eq!(SourceHarness::<Batches>::validate(r#"{"batch": 0}"#), ["batch must be at least 1"]);
    /// ```
    pub fn validate(config: impl ConfigJson) -> Vec<String> {
        problems(config, S::check_config)
    }

    /// Polls the next batch, as the runtime does, and keeps it unsettled.
    ///
    /// # Panics
    /// When [`Source::MAX_UNSETTLED_BATCHES`] batches are unsettled, or the oldest
    /// unsettled batch was discarded by a reject: the runtime settles first.
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, ProducedBatch, ProducedMessage, Source};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// # struct Hello;
    /// # impl Source for Hello {
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext, _: Option<Vec<u8>>) -> Result<Self, Error> { Ok(Hello) }
    /// #     async fn poll(&mut self) -> Result<ProducedBatch, Error> {
    /// #         Ok(ProducedBatch { messages: vec![ProducedMessage::new("hello")], ..ProducedBatch::default() })
    /// #     }
    /// # }
    /// use connector_sdk::testing::SourceHarness;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let mut source = SourceHarness::<Hello>::open("{}", None).await?;
    /// let batch = source.poll().await?;
    /// assert_eq!(batch.messages[0].payload, "hello");
    /// assert_eq!(source.unsettled(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn poll(&mut self) -> Result<ProducedBatch, Error> {
        self.check_may_poll();
        let batch = self.source.poll().await?;
        self.unsettled.push_back(Unsettled {
            state: batch.state.clone(),
            discarded: false,
        });
        Ok(batch)
    }

    /// Polls the next batch, giving up after `timeout`: `Ok(None)` then, and the
    /// waiting `poll` is dropped, as the runtime drops it when it closes the source or
    /// settles a batch meanwhile (`poll` must be cancel-safe). For a source that has
    /// nothing to produce; with `#[tokio::test(start_paused = true)]` (tokio's
    /// `test-util` feature) the timeout passes as soon as the source only waits.
    ///
    /// # Panics
    /// As [`SourceHarness::poll`].
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, ProducedBatch, Source};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// struct Idle;
    /// impl Source for Idle {
    ///     // ...
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext, _: Option<Vec<u8>>) -> Result<Self, Error> { Ok(Idle) }
    ///     async fn poll(&mut self) -> Result<ProducedBatch, Error> {
    ///         std::future::pending().await
    ///     }
    /// }
    /// use std::time::Duration;
    /// use connector_sdk::testing::SourceHarness;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let mut source = SourceHarness::<Idle>::open("{}", None).await?;
    /// assert_eq!(source.poll_timeout(Duration::from_millis(10)).await?, None);
    /// assert_eq!(source.unsettled(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn poll_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<ProducedBatch>, Error> {
        self.check_may_poll();
        match tokio::time::timeout(timeout, self.source.poll()).await {
            Ok(Ok(batch)) => {
                self.unsettled.push_back(Unsettled {
                    state: batch.state.clone(),
                    discarded: false,
                });
                Ok(Some(batch))
            }
            Ok(Err(error)) => Err(error),
            Err(_elapsed) => Ok(None),
        }
    }

    /// Accepts the oldest unsettled batch: Iggy stored it, and its state (if it carried
    /// one) is now [`SourceHarness::state`]. See [`SourceHarness::settle`].
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, ProducedBatch, Source};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// # struct Stateful;
    /// # impl Source for Stateful {
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext, _: Option<Vec<u8>>) -> Result<Self, Error> { Ok(Stateful) }
    /// #     async fn poll(&mut self) -> Result<ProducedBatch, Error> {
    /// #         Ok(ProducedBatch { state: Some(b"cursor".to_vec()), ..ProducedBatch::default() })
    /// #     }
    /// # }
    /// use connector_sdk::testing::SourceHarness;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let mut source = SourceHarness::<Stateful>::open("{}", None).await?;
    /// source.poll().await?;
    /// assert_eq!(source.state(), None);
    /// source.accept().await?;
    /// assert_eq!(source.state(), Some(&b"cursor"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn accept(&mut self) -> Result<(), Error> {
        self.settle(BatchOutcome::Accepted).await
    }

    /// Rejects the oldest unsettled batch: the source rewinds to its start, and every
    /// later unsettled batch is discarded. See [`SourceHarness::settle`].
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, ProducedBatch, Source};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// # struct Stateful;
    /// # impl Source for Stateful {
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext, _: Option<Vec<u8>>) -> Result<Self, Error> { Ok(Stateful) }
    /// #     async fn poll(&mut self) -> Result<ProducedBatch, Error> {
    /// #         Ok(ProducedBatch { state: Some(b"cursor".to_vec()), ..ProducedBatch::default() })
    /// #     }
    /// # }
    /// use connector_sdk::testing::SourceHarness;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let mut source = SourceHarness::<Stateful>::open("{}", Some(b"start".to_vec())).await?;
    /// source.poll().await?;
    /// source.reject().await?;
    /// assert_eq!(source.state(), Some(&b"start"[..]));
    /// assert_eq!(source.unsettled(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reject(&mut self) -> Result<(), Error> {
        self.settle(BatchOutcome::Rejected).await
    }

    /// Settles the oldest unsettled batch as the runtime does: an accepted batch's
    /// state is persisted first, then the source hears the outcome through
    /// [`Source::on_batch_result`]; a rejected batch discards the later unsettled
    /// ones. A discarded batch is rejected without calling the source.
    ///
    /// # Panics
    /// When no batch is unsettled, or when accepting a discarded batch.
    ///
    /// ```
    /// # use connector_sdk::{BatchOutcome, ConnectorContext, Error, ProducedBatch, Source};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// /// Records the outcomes it hears.
    /// struct Heard(Vec<BatchOutcome>);
    /// impl Source for Heard {
    ///     // ...
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext, _: Option<Vec<u8>>) -> Result<Self, Error> { Ok(Heard(Vec::new())) }
    /// #     async fn poll(&mut self) -> Result<ProducedBatch, Error> { Ok(ProducedBatch::default()) }
    ///     const MAX_UNSETTLED_BATCHES: u32 = 4;
    ///     async fn on_batch_result(&mut self, outcome: BatchOutcome) -> Result<(), Error> {
    ///         self.0.push(outcome);
    ///         Ok(())
    ///     }
    /// }
    /// use connector_sdk::testing::SourceHarness;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let mut source = SourceHarness::<Heard>::open("{}", None).await?;
    /// for _ in 0..3 {
    ///     source.poll().await?;
    /// }
    /// source.settle(BatchOutcome::Accepted).await?;
    /// source.settle(BatchOutcome::Rejected).await?;
    /// source.settle(BatchOutcome::Rejected).await?; // discarded: the source is not called
    /// assert_eq!(source.connector().0, [BatchOutcome::Accepted, BatchOutcome::Rejected]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn settle(&mut self, outcome: BatchOutcome) -> Result<(), Error> {
        let Some(oldest) = self.unsettled.pop_front() else {
            panic!("SourceHarness: {outcome:?} with no batch unsettled (poll first)");
        };
        if oldest.discarded {
            assert!(
                outcome == BatchOutcome::Rejected,
                "SourceHarness: a batch polled after a rejected one was discarded with it \
                 and can only be rejected"
            );
            return Ok(());
        }
        match outcome {
            BatchOutcome::Accepted => {
                if oldest.state.is_some() {
                    self.state = oldest.state;
                }
            }
            BatchOutcome::Rejected => {
                for later in &mut self.unsettled {
                    later.discarded = true;
                }
            }
        }
        self.source.on_batch_result(outcome).await
    }

    /// How many polled batches wait to be settled.
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, ProducedBatch, Source};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// # struct Empty;
    /// # impl Source for Empty {
    /// #     type Config = Config;
    /// #     const MAX_UNSETTLED_BATCHES: u32 = 2;
    /// #     async fn open(_: Config, _: ConnectorContext, _: Option<Vec<u8>>) -> Result<Self, Error> { Ok(Empty) }
    /// #     async fn poll(&mut self) -> Result<ProducedBatch, Error> { Ok(ProducedBatch::default()) }
    /// # }
    /// use connector_sdk::testing::SourceHarness;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let mut source = SourceHarness::<Empty>::open("{}", None).await?;
    /// source.poll().await?;
    /// source.poll().await?;
    /// assert_eq!(source.unsettled(), 2);
    /// source.accept().await?;
    /// assert_eq!(source.unsettled(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn unsettled(&self) -> usize {
        self.unsettled.len()
    }

    /// The state the runtime would have persisted: that of the last accepted batch
    /// that carried one, else the one the source was opened with.
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, ProducedBatch, Source};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// # struct Empty;
    /// # impl Source for Empty {
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext, _: Option<Vec<u8>>) -> Result<Self, Error> { Ok(Empty) }
    /// #     async fn poll(&mut self) -> Result<ProducedBatch, Error> { Ok(ProducedBatch::default()) }
    /// # }
    /// use connector_sdk::testing::SourceHarness;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let mut source = SourceHarness::<Empty>::open("{}", Some(vec![1])).await?;
    /// source.poll().await?; // a batch with no state keeps the last one
    /// source.accept().await?;
    /// assert_eq!(source.state(), Some(&[1][..]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn state(&self) -> Option<&[u8]> {
        self.state.as_deref()
    }

    /// The source, to look at what it did.
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, ProducedBatch, Source};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// struct Polls(u32);
    /// impl Source for Polls {
    ///     // ...
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext, _: Option<Vec<u8>>) -> Result<Self, Error> { Ok(Polls(0)) }
    ///     async fn poll(&mut self) -> Result<ProducedBatch, Error> {
    ///         self.0 += 1;
    ///         Ok(ProducedBatch::default())
    ///     }
    /// }
    /// use connector_sdk::testing::SourceHarness;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let mut source = SourceHarness::<Polls>::open("{}", None).await?;
    /// source.poll().await?;
    /// assert_eq!(source.connector().0, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn connector(&self) -> &S {
        &self.source
    }

    /// The source, to change it between calls (to make it fail, say).
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, ProducedBatch, Source};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// struct Down(bool);
    /// impl Source for Down {
    ///     // ...
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext, _: Option<Vec<u8>>) -> Result<Self, Error> { Ok(Down(false)) }
    ///     async fn poll(&mut self) -> Result<ProducedBatch, Error> {
    ///         if self.0 { Err(Error::retryable("down")) } else { Ok(ProducedBatch::default()) }
    ///     }
    /// }
    /// use connector_sdk::testing::SourceHarness;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let mut source = SourceHarness::<Down>::open("{}", None).await?;
    /// source.connector_mut().0 = true;
    /// assert_eq!(source.poll().await, Err(Error::retryable("down")));
    /// assert_eq!(source.unsettled(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn connector_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// Closes the source, as the runtime does after its last call. The unsettled
    /// batches are dropped without an outcome, as when the runtime stops.
    ///
    /// ```
    /// # use connector_sdk::{ConnectorContext, Error, ProducedBatch, Source};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// # struct Config {}
    /// # struct Empty;
    /// # impl Source for Empty {
    /// #     type Config = Config;
    /// #     async fn open(_: Config, _: ConnectorContext, _: Option<Vec<u8>>) -> Result<Self, Error> { Ok(Empty) }
    /// #     async fn poll(&mut self) -> Result<ProducedBatch, Error> { Ok(ProducedBatch::default()) }
    /// # }
    /// use connector_sdk::testing::SourceHarness;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let mut source = SourceHarness::<Empty>::open("{}", None).await?;
    /// source.poll().await?;
    /// source.close().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn close(mut self) -> Result<(), Error> {
        self.source.close().await
    }

    /// Panics unless the runtime would poll now.
    fn check_may_poll(&self) {
        if let Some(oldest) = self.unsettled.front() {
            assert!(
                !oldest.discarded,
                "SourceHarness: the oldest unsettled batch was discarded by a reject: \
                 reject it before polling again"
            );
        }
        let limit = S::MAX_UNSETTLED_BATCHES.max(1) as usize;
        assert!(
            self.unsettled.len() < limit,
            "SourceHarness: {} batches are unsettled, as many as the source allows \
             (MAX_UNSETTLED_BATCHES): settle the oldest before polling again",
            self.unsettled.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HeaderKind, ProducedMessage};

    #[test]
    fn defaults_count_up_from_the_first_offset_and_explicit_values_win() {
        let batch = TestBatch::new()
            .first_offset(10)
            .message(TestMessage::new("a"))
            .message(TestMessage::new("b").offset(20).id(5).timestamp(1))
            .message(TestMessage::new("c"));
        let view = batch.view();
        let batch = view.batch();
        let offsets: Vec<u64> = batch.messages.iter().map(|m| m.offset()).collect();
        assert_eq!(offsets, [10, 20, 21]);
        let ids: Vec<u128> = batch.messages.iter().map(|m| m.id()).collect();
        assert_eq!(ids, [11, 5, 22]);
        assert_eq!(batch.messages[0].timestamp(), BASE_TIMESTAMP + 10);
        assert_eq!(batch.messages[1].timestamp(), 1);
        assert_eq!(batch.messages[1].origin_timestamp(), 1);
        assert_eq!(batch.current_offset, 21);
        assert_eq!((batch.stream, batch.topic), ("test_stream", "test_topic"));
        assert_eq!(batch.partition_id, 1);
        assert_eq!(batch.schema, Schema::Json);
    }

    #[test]
    fn headers_of_each_message_stay_with_it() {
        let batch = TestBatch::new()
            .message(
                TestMessage::new("a")
                    .header(OwnedHeader::string("one", "1"))
                    .header(OwnedHeader::string("two", "2")),
            )
            .message(TestMessage::new("b"))
            .message(TestMessage::new("c").header(OwnedHeader {
                key: "raw".to_owned(),
                kind: HeaderKind::Raw,
                value: vec![0, 1],
            }));
        batch.view_with(|batch| {
            let keys = |index: usize| -> Vec<&str> {
                batch.messages[index].headers().map(|h| h.key).collect()
            };
            assert_eq!(keys(0), ["one", "two"]);
            assert!(keys(1).is_empty());
            assert_eq!(keys(2), ["raw"]);
            let raw = batch.messages[2].header("raw").map(|h| (h.kind, h.value));
            assert_eq!(raw, Some((HeaderKind::Raw as u32, &[0u8, 1][..])));
        });
    }

    #[test]
    fn an_empty_batch_has_no_messages_and_the_first_offset_as_current() {
        TestBatch::new().first_offset(4).view_with(|batch| {
            assert!(batch.messages.is_empty());
            assert_eq!(batch.current_offset, 4);
        });
    }

    #[test]
    fn a_produced_batch_reads_back_as_produced() {
        let produced = ProducedBatch {
            schema: Schema::Text,
            messages: vec![
                ProducedMessage {
                    id: Some(u128::MAX),
                    origin_timestamp: Some(3),
                    headers: vec![OwnedHeader::string("h", "v")],
                    payload: Bytes::from_static(b"x"),
                },
                ProducedMessage::new("y"),
            ],
            state: None,
        };
        TestBatch::from_produced(&produced).view_with(|batch| {
            assert_eq!(batch.schema, Schema::Text);
            let first = &batch.messages[0];
            assert_eq!((first.id(), first.origin_timestamp()), (u128::MAX, 3));
            assert_eq!(first.header("h").map(|h| h.value), Some(&b"v"[..]));
            assert_eq!(batch.messages[1].payload(), b"y");
            assert_eq!(batch.messages[1].id(), 2);
        });
    }

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    struct NoConfig {}

    /// Produces one message per batch carrying its number, up to `limit` unsettled.
    struct Numbers {
        next: u32,
        committed: u32,
        unsettled: VecDeque<u32>,
        outcomes: Vec<BatchOutcome>,
    }

    impl Source for Numbers {
        type Config = NoConfig;
        const MAX_UNSETTLED_BATCHES: u32 = 3;

        async fn open(
            _: NoConfig,
            _: ConnectorContext,
            state: Option<Vec<u8>>,
        ) -> Result<Self, Error> {
            let start = state
                .and_then(|state| state.try_into().ok())
                .map_or(0, u32::from_le_bytes);
            Ok(Numbers {
                next: start,
                committed: start,
                unsettled: VecDeque::new(),
                outcomes: Vec::new(),
            })
        }

        async fn poll(&mut self) -> Result<ProducedBatch, Error> {
            let number = self.next;
            self.next += 1;
            self.unsettled.push_back(self.next);
            Ok(ProducedBatch {
                messages: vec![ProducedMessage::new(number.to_string())],
                state: Some(self.next.to_le_bytes().to_vec()),
                ..ProducedBatch::default()
            })
        }

        async fn on_batch_result(&mut self, outcome: BatchOutcome) -> Result<(), Error> {
            self.outcomes.push(outcome);
            match outcome {
                BatchOutcome::Accepted => {
                    self.committed = self.unsettled.pop_front().unwrap_or(self.committed);
                }
                BatchOutcome::Rejected => {
                    self.unsettled.clear();
                    self.next = self.committed;
                }
            }
            Ok(())
        }
    }

    fn payload(batch: &ProducedBatch) -> &[u8] {
        &batch.messages[0].payload
    }

    #[tokio::test]
    async fn a_reject_discards_the_later_batches_without_calling_the_source() {
        let mut source = SourceHarness::<Numbers>::open("{}", None).await.unwrap();
        for expected in ["0", "1", "2"] {
            assert_eq!(payload(&source.poll().await.unwrap()), expected.as_bytes());
        }
        source.accept().await.unwrap();
        assert_eq!(source.state(), Some(&1u32.to_le_bytes()[..]));
        source.reject().await.unwrap();
        source.reject().await.unwrap();
        assert_eq!(source.unsettled(), 0);
        assert_eq!(
            source.connector().outcomes,
            [BatchOutcome::Accepted, BatchOutcome::Rejected]
        );
        assert_eq!(source.state(), Some(&1u32.to_le_bytes()[..]));
        // The source rewound: "1" comes again.
        assert_eq!(payload(&source.poll().await.unwrap()), b"1");
    }

    #[tokio::test]
    #[should_panic(expected = "as many as the source allows")]
    async fn polling_past_the_limit_is_refused() {
        let mut source = SourceHarness::<Numbers>::open("{}", None).await.unwrap();
        for _ in 0..4 {
            let _ = source.poll().await;
        }
    }

    #[tokio::test]
    #[should_panic(expected = "reject it before polling again")]
    async fn polling_before_rejecting_the_discarded_batches_is_refused() {
        let mut source = SourceHarness::<Numbers>::open("{}", None).await.unwrap();
        let _ = source.poll().await;
        let _ = source.poll().await;
        let _ = source.reject().await;
        let _ = source.poll().await;
    }

    #[tokio::test]
    #[should_panic(expected = "can only be rejected")]
    async fn accepting_a_discarded_batch_is_refused() {
        let mut source = SourceHarness::<Numbers>::open("{}", None).await.unwrap();
        let _ = source.poll().await;
        let _ = source.poll().await;
        let _ = source.reject().await;
        let _ = source.accept().await;
    }

    #[tokio::test]
    #[should_panic(expected = "no batch unsettled")]
    async fn settling_with_nothing_unsettled_is_refused() {
        let mut source = SourceHarness::<Numbers>::open("{}", None).await.unwrap();
        let _ = source.accept().await;
    }

    #[tokio::test]
    async fn a_reopened_source_goes_on_from_the_persisted_state() {
        let mut source = SourceHarness::<Numbers>::open(serde_json::json!({}), None)
            .await
            .unwrap();
        source.poll().await.unwrap();
        source.accept().await.unwrap();
        source.poll().await.unwrap(); // unsettled at the stop: produced again
        let state = source.state().map(<[u8]>::to_vec);
        source.close().await.unwrap();
        let mut source = SourceHarness::<Numbers>::open("{}", state).await.unwrap();
        assert_eq!(payload(&source.poll().await.unwrap()), b"1");
    }

    /// Counts what it consumes.
    struct Count(usize);

    impl Sink for Count {
        type Config = NoConfig;

        async fn open(_: NoConfig, _: ConnectorContext) -> Result<Self, Error> {
            Ok(Count(0))
        }

        async fn consume(&mut self, batch: MessageBatch<'_>) -> Result<(), Error> {
            self.0 += batch.messages.len();
            Ok(())
        }
    }

    fn assert_send<T: Send>(value: T) -> T {
        value
    }

    #[tokio::test]
    async fn harness_calls_can_run_on_any_worker_thread() {
        let batch = TestBatch::of(["a"]);
        let mut sink = assert_send(SinkHarness::<Count>::open("{}")).await.unwrap();
        assert_send(sink.consume(&batch)).await.unwrap();
        assert_send(sink.close()).await.unwrap();
        let mut source = assert_send(SourceHarness::<Numbers>::open("{}", None))
            .await
            .unwrap();
        assert_send(source.poll()).await.unwrap();
        assert_send(source.poll_timeout(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_send(source.accept()).await.unwrap();
        assert_send(source.reject()).await.unwrap();
        assert_send(source.close()).await.unwrap();
    }

    #[tokio::test]
    async fn config_errors_are_those_of_parse_config() {
        let error = SourceHarness::<Numbers>::open("1", None).await.err();
        let expected = parse_config::<NoConfig>("1").err();
        assert_eq!(error, expected);
        assert!(error.is_some());
        assert_eq!(
            SourceHarness::<Numbers>::validate("1"),
            [expected.map(|e| e.message().to_owned()).unwrap_or_default()]
        );
    }
}
