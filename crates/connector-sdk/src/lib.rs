//! The connector SDK: everything a connector author depends on.
//!
//! A connector is a [`Sink`] (writes messages consumed from Iggy to an external system) or
//! a [`Source`] (reads from an external system; the runtime produces what it reads to
//! Iggy). Implement the trait, then call [`export_sink!`] or [`export_source!`] once at
//! the crate root. The same crate then works two ways, through the one descriptor the
//! macro builds:
//! - built as a `cdylib`, the runtime loads it from a file at run time;
//! - linked as an `rlib`, a program registers it with `plugin-host` through the
//!   generated `descriptor()` function.
//!
//! The SDK knows nothing of the runtime or of Iggy's client: its dependencies are serde,
//! tokio (each connector instance runs on an executor of its own) and tracing (events are
//! forwarded to the host, tagged with the connector key).
//!
//! The [`abi`] module is the contract between plugin and host; connector authors never
//! use it directly.
//!
//! # Testing a connector
//!
//! [`testing`] runs a connector in its own crate's unit tests, in-process: no runtime,
//! no plugin library, no Iggy. [`testing::TestBatch`] and [`testing::TestMessage`]
//! build what a sink consumes from owned values; [`testing::SinkHarness`] and
//! [`testing::SourceHarness`] open the connector with a config (parsed as the runtime
//! parses it), then `consume`, or `poll` and `accept`/`reject` (with the runtime's
//! settling rules and the state it would persist), then `close`. They are `async`, for
//! `#[tokio::test]` (the connector crate's dev-dependency
//! `tokio = { version = "1", features = ["macros", "rt"] }`):
//!
//! ```
//! # use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
//! # #[derive(serde::Deserialize, schemars::JsonSchema)]
//! # struct Config {}
//! # struct MySink(usize);
//! # impl Sink for MySink {
//! #     type Config = Config;
//! #     async fn open(_: Config, _: ConnectorContext) -> Result<Self, Error> { Ok(MySink(0)) }
//! #     async fn consume(&mut self, b: MessageBatch<'_>) -> Result<(), Error> { self.0 += b.messages.len(); Ok(()) }
//! # }
//! use connector_sdk::testing::{SinkHarness, TestBatch};
//!
//! #[tokio::test]
//! async fn consumes_a_batch() {
//!     let mut sink = SinkHarness::<MySink>::open(serde_json::json!({})).await.unwrap();
//!     sink.consume(&TestBatch::of([r#"{"a":1}"#, r#"{"a":2}"#])).await.unwrap();
//!     assert_eq!(sink.connector().0, 2);
//!     sink.close().await.unwrap();
//! }
//! # fn main() { tokio::runtime::Runtime::new().unwrap().block_on(async {
//! #     let mut sink = SinkHarness::<MySink>::open(serde_json::json!({})).await.unwrap();
//! #     sink.consume(&TestBatch::of([r#"{"a":1}"#, r#"{"a":2}"#])).await.unwrap();
//! #     assert_eq!(sink.connector().0, 2);
//! # }) }
//! ```

#[doc(hidden)]
#[path = "export.rs"]
pub mod __export;
pub mod abi;
mod connector;
pub mod duration;
mod error;
mod log_forward;
mod message;
pub mod testing;

/// The `bytes` crate that [`ProducedMessage::payload`] is made of, so that connectors
/// use the same version.
pub use bytes;
pub use connector::{ConnectorContext, ConnectorKind, Sink, Source};
pub use error::{Error, ErrorKind, parse_config};
pub use log_forward::{level_code, level_from_code};
pub use message::{
    BatchOutcome, Header, HeaderKind, Message, MessageBatch, OwnedHeader, ProducedBatch,
    ProducedMessage, Schema,
};
/// The `schemars` crate whose `JsonSchema` a connector's config type implements.
pub use schemars;
