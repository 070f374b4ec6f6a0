//! The traits a connector implements.

use std::future::Future;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::{BatchOutcome, Error, MessageBatch, ProducedBatch};

/// Whether a connector is a sink or a source.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    /// Writes messages consumed from Iggy to an external system.
    Sink,
    /// Reads from an external system for the runtime to produce to Iggy.
    Source,
}

impl ConnectorKind {
    /// `"sink"` or `"source"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::Sink => "sink",
            ConnectorKind::Source => "source",
        }
    }
}

impl std::fmt::Display for ConnectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the runtime tells a connector instance when it opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorContext {
    /// The connector's key, unique among connectors of its type.
    pub key: String,
}

/// A sink writes messages consumed from Iggy to an external system.
///
/// The runtime calls `consume` with one batch at a time per instance and stores the
/// consumer offsets only after `consume` returned `Ok`: a sink must have made the batch
/// durable (or handed it off for good) before it returns. A batch's offset is stored
/// while the next batch is consumed, so after a crash the last two batches of a
/// partition may come again.
///
/// ```
/// use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Config { prefix: String }
///
/// struct PrintSink { prefix: String }
///
/// impl Sink for PrintSink {
///     type Config = Config;
///
///     async fn open(config: Config, _context: ConnectorContext) -> Result<Self, Error> {
///         Ok(PrintSink { prefix: config.prefix })
///     }
///
///     async fn consume(&mut self, batch: MessageBatch<'_>) -> Result<(), Error> {
///         for message in batch.messages {
///             println!("{} {}", self.prefix, message.offset());
///         }
///         Ok(())
///     }
/// }
///
/// connector_sdk::export_sink!(PrintSink, "print");
/// assert_eq!(descriptor().abi_version, connector_sdk::abi::ABI_VERSION);
/// ```
pub trait Sink: Sized + Send + 'static {
    /// The connector's `plugin_config`, deserialised from JSON. Its JSON Schema (from
    /// `#[derive(schemars::JsonSchema)]`) is the config's reference: fields, types,
    /// defaults and doc comments; mark a secret field `#[schemars(extend("x-secret" =
    /// true))]`.
    type Config: DeserializeOwned + JsonSchema + Send + 'static;

    /// Problems with a config that deserialised, found without any I/O (a range whose
    /// ends are swapped, say): `iggy-connectors validate` and the API report them
    /// before anything is opened. None by default.
    fn check_config(config: &Self::Config) -> Vec<String> {
        let _ = config;
        Vec::new()
    }

    /// Opens the connector (connects, creates tables, ...).
    fn open(
        config: Self::Config,
        context: ConnectorContext,
    ) -> impl Future<Output = Result<Self, Error>> + Send;

    /// Writes one batch. The batch borrows the runtime's memory for this call only.
    fn consume(
        &mut self,
        batch: MessageBatch<'_>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Flushes and releases resources; called once, after the last `consume`.
    fn close(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        async { Ok(()) }
    }
}

/// A source reads from an external system; the runtime produces what it reads to Iggy.
///
/// The cursor contract: `poll` may read ahead but must not commit its external cursor
/// (delete rows, acknowledge a queue, ...) until `on_batch_result` says
/// [`BatchOutcome::Accepted`]. On [`BatchOutcome::Rejected`] the source rewinds so the
/// same data comes again. `poll` must be cancel-safe: closing the source drops a `poll`
/// that is still waiting, and so does the runtime settling an earlier batch meanwhile
/// (the `poll` is then called again), so nothing may be taken from the external system
/// across an `.await` without being kept for the next call.
///
/// By default at most one batch is unsettled at a time: `poll` is not called again
/// until the last batch was settled. A source that can keep track of several batches
/// sets [`Source::MAX_UNSETTLED_BATCHES`] above 1; the runtime then polls the next
/// batch while it sends the previous ones to Iggy (which is how a source reaches the
/// client's own throughput). Batches are settled oldest first; after a `Rejected`, the
/// later unsettled batches are discarded without another call: the source rewinds to
/// the start of the rejected batch and produces everything from there again.
///
/// ```
/// use connector_sdk::{BatchOutcome, ConnectorContext, Error, ProducedBatch, ProducedMessage, Source};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Config {}
///
/// struct Counter { next: u64, staged: u64 }
///
/// impl Source for Counter {
///     type Config = Config;
///
///     async fn open(_: Config, _: ConnectorContext, state: Option<Vec<u8>>) -> Result<Self, Error> {
///         let next = state
///             .and_then(|bytes| bytes.try_into().ok())
///             .map(u64::from_le_bytes)
///             .unwrap_or(0);
///         Ok(Counter { next, staged: next })
///     }
///
///     async fn poll(&mut self) -> Result<ProducedBatch, Error> {
///         self.staged = self.next + 1;
///         Ok(ProducedBatch {
///             messages: vec![ProducedMessage::new(self.next.to_string())],
///             state: Some(self.staged.to_le_bytes().to_vec()),
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
/// connector_sdk::export_source!(Counter, "counter");
/// assert_eq!(descriptor().kind, connector_sdk::abi::KIND_SOURCE);
/// ```
pub trait Source: Sized + Send + 'static {
    /// The connector's `plugin_config`, deserialised from JSON, with its JSON Schema
    /// (see [`Sink::Config`]).
    type Config: DeserializeOwned + JsonSchema + Send + 'static;

    /// Problems with a config that deserialised, found without any I/O (see
    /// [`Sink::check_config`]). None by default.
    fn check_config(config: &Self::Config) -> Vec<String> {
        let _ = config;
        Vec::new()
    }

    /// How many polled batches may wait for their outcome at once (at least 1).
    const MAX_UNSETTLED_BATCHES: u32 = 1;

    /// Opens the connector with the state it last returned in an accepted batch.
    fn open(
        config: Self::Config,
        context: ConnectorContext,
        state: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<Self, Error>> + Send;

    /// Waits for and returns the next batch. Must be cancel-safe (see the trait docs).
    fn poll(&mut self) -> impl Future<Output = Result<ProducedBatch, Error>> + Send;

    /// Settles the oldest unsettled batch (with one unsettled batch at a time: the
    /// batch the last `poll` returned).
    fn on_batch_result(
        &mut self,
        outcome: BatchOutcome,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = outcome;
        async { Ok(()) }
    }

    /// Releases resources; called once, after the last call.
    fn close(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        async { Ok(()) }
    }
}
