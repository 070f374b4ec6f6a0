//! The narrow interface through which the runtime reaches Iggy ([`MessageBus`] and the
//! values it takes and gives), and its implementation with the `iggy` client
//! (`iggy.rs`, with the requests it encodes itself in `wire.rs`).

mod connecting;
mod iggy;
mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use connector_sdk::OwnedHeader;

pub use connecting::ConnectingBus;
pub use iggy::{IggyBus, IggySettings};

/// A stream and one of its topics: where messages go, or come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
}

impl Destination {
    /// `stream`/`topic`.
    pub fn new(stream: impl Into<String>, topic: impl Into<String>) -> Self {
        Destination {
            stream: stream.into(),
            topic: topic.into(),
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.stream, self.topic)
    }
}

/// A message to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The id; `None` (or 0) gets a random one, as the client gives it.
    pub id: Option<u128>,
    /// User headers.
    pub headers: Vec<OwnedHeader>,
    /// The payload.
    pub payload: Bytes,
}

/// Messages made ready to send by [`MessageBus::prepare_send`], so that the
/// conversion can happen while an earlier send is in flight.
#[derive(Debug)]
#[non_exhaustive]
pub enum PreparedSend {
    /// The messages as given: what the default `prepare_send` makes, for a bus that
    /// converts nothing ahead.
    Messages(Vec<OutgoingMessage>),
    /// A `SendMessages` request body as [`IggyBus`] puts it on the wire, its partition
    /// chosen and its payloads copied in.
    Wire(Bytes),
}

impl PreparedSend {
    /// The bytes the send holds of its own: a wire body's length (kept messages share
    /// their payloads with the batch they came from).
    pub fn len(&self) -> usize {
        match self {
            PreparedSend::Messages(_) => 0,
            PreparedSend::Wire(body) => body.len(),
        }
    }

    /// Whether the send holds no bytes of its own.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A consumed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// Its id.
    pub id: u128,
    /// Its offset in the partition.
    pub offset: u64,
    /// Iggy's timestamp, microseconds.
    pub timestamp: u64,
    /// The producer's timestamp, microseconds.
    pub origin_timestamp: u64,
    /// Iggy's checksum.
    pub checksum: u64,
    /// User headers.
    pub headers: Vec<OwnedHeader>,
    /// The payload.
    pub payload: Bytes,
}

/// What one poll returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Polled {
    /// The partition polled.
    pub partition_id: u32,
    /// The partition's current offset.
    pub current_offset: u64,
    /// The messages, in offset order (possibly none).
    pub messages: Vec<IncomingMessage>,
}

/// One member of a consumer group, as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The member's number in the group (the server's; it changes as members come and
    /// go, so it names no one for long).
    pub id: u32,
    /// The partitions the server assigned it.
    pub partitions: Vec<u32>,
}

/// How far a consumer group has read one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionProgress {
    /// The partition.
    pub partition_id: u32,
    /// The offset the partition's next message will get (0 while it is empty).
    pub end: u64,
    /// The group's stored offset (the last message it delivered), if any.
    pub stored: Option<u64>,
}

/// How far a consumer group has read its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupProgress {
    /// The group's id: a group deleted and made again (reset) has another.
    pub group_id: u32,
    /// Each partition's progress.
    pub partitions: Vec<PartitionProgress>,
}

impl PartitionProgress {
    /// Messages beyond the group's stored offset.
    pub fn unread(&self) -> u64 {
        self.end
            .saturating_sub(self.stored.map_or(0, |stored| stored.saturating_add(1)))
    }
}

/// Why a call to Iggy failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BusError {
    message: String,
    kind: BusErrorKind,
}

/// What kind of failure a [`BusError`] is, where the runtime acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusErrorKind {
    /// Anything else: retried per the connector's retry policy.
    Other,
    /// The group's partition is not this member's (any more): it went to another
    /// member in a rebalance, so its offset is not this sink's to store.
    NotOwned,
}

impl BusError {
    /// A failure of kind [`BusErrorKind::Other`].
    pub fn new(message: impl Into<String>) -> Self {
        BusError {
            message: message.into(),
            kind: BusErrorKind::Other,
        }
    }

    /// A failure of kind [`BusErrorKind::NotOwned`].
    pub fn not_owned(message: impl Into<String>) -> Self {
        BusError {
            message: message.into(),
            kind: BusErrorKind::NotOwned,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> BusErrorKind {
        self.kind
    }
}

/// The user header that marks the last message of a source's send (a `u128`, unique
/// to the send), so that after a crash the runtime can ask Iggy whether it stored the
/// send (see `verified_resume` and [`MessageBus::find_marker`]). Sinks run by this
/// runtime never see it.
pub const SEND_MARKER_HEADER: &str = "iggy_connectors_send";

/// How many of each partition's newest messages [`IggyBus`] reads to find a marker:
/// other producers' messages since the send push it further back.
pub const MARKER_SEARCH_DEPTH: u32 = 10_000;

/// The plain consumer [`IggyBus::read`](MessageBus::read) reads as (a sink reading its
/// partition's next batch ahead): it never stores an offset, but a server's client and
/// poll figures show it beside the sink's group.
pub const READ_AHEAD_CONSUMER: &str = "iggy-connectors-read-ahead";

/// What the cluster-mode methods of [`MessageBus`] answer on a bus that lacks them.
fn no_cluster() -> BusError {
    BusError::new("this bus cannot coordinate a cluster")
}

/// What the runtime needs from Iggy. Implemented by [`IggyBus`]; tests and embedders may
/// supply their own.
#[async_trait]
pub trait MessageBus: Send + Sync {
    /// Creates the stream and topic unless they exist.
    async fn ensure_topic(&self, to: &Destination) -> Result<(), BusError>;

    /// Produces messages (balanced over partitions); `Ok` means Iggy stored them.
    ///
    /// A source's payloads are read in place out of its plugin (see
    /// `plugin_host::SourceBatch::payloads`), and the batch is settled only once every
    /// one is dropped: an implementation must not keep them (or clones of them) after
    /// it returns, or the source stalls. Copy what must be kept
    /// (`Bytes::copy_from_slice`).
    async fn send(&self, to: &Destination, messages: Vec<OutgoingMessage>) -> Result<(), BusError>;

    /// Converts messages bound for `to` for [`MessageBus::send_prepared`],
    /// so that a pipeline can do it while its previous send is in flight. The same rule
    /// as for `send` holds for the payloads: they must not outlive the send. The
    /// default keeps the messages as they are.
    async fn prepare_send(
        &self,
        to: &Destination,
        messages: Vec<OutgoingMessage>,
    ) -> Result<PreparedSend, BusError> {
        let _ = to;
        Ok(PreparedSend::Messages(messages))
    }

    /// Sends what [`MessageBus::prepare_send`] made, as [`MessageBus::send`] would; the
    /// default sends the messages the default `prepare_send` kept, and refuses a wire
    /// body (only the bus that encoded it can send it).
    async fn send_prepared(
        &self,
        to: &Destination,
        prepared: PreparedSend,
    ) -> Result<(), BusError> {
        match prepared {
            PreparedSend::Messages(messages) => self.send(to, messages).await,
            PreparedSend::Wire(_) => Err(BusError::new(
                "a send prepared by another kind of bus was handed to this one",
            )),
        }
    }

    /// Creates the consumer group unless it exists, and joins it.
    async fn join_group(&self, from: &Destination, group: &str) -> Result<(), BusError>;

    /// Polls the group's next messages after its stored offset, without committing.
    async fn poll(&self, from: &Destination, group: &str, count: u32) -> Result<Polled, BusError>;

    /// Reads up to `count` messages of one partition from `offset` on, as a consumer of
    /// its own that stores nothing: a sink reads the next batch of a partition it was
    /// given with this (on a connection of its own, see [`MessageBus::for_connector`])
    /// while the plugin takes the current one and its offset is stored. `None` (the
    /// default) when the bus cannot; the sink then polls the group.
    async fn read(
        &self,
        from: &Destination,
        partition: u32,
        offset: u64,
        count: u32,
    ) -> Result<Option<Polled>, BusError> {
        let _ = (from, partition, offset, count);
        Ok(None)
    }

    /// How far the group has read each partition of the topic, for the sink's true lag
    /// and to find partitions nobody reads (see [`MessageBus::reset_group`]). `None`
    /// (the default) when the bus cannot tell.
    async fn group_progress(
        &self,
        from: &Destination,
        group: &str,
    ) -> Result<Option<GroupProgress>, BusError> {
        let _ = (from, group);
        Ok(None)
    }

    /// Drops every member of the group, including those a killed Iggy server keeps
    /// holding partitions with nobody behind them, keeping its stored offsets, and
    /// joins it again: the runtime's way out when the group has unread messages that
    /// no member reads. Other members find themselves outside the group and join
    /// again. `seen` is the group id the caller found stuck: a group reset since (it
    /// has another id) is only joined. `Ok(true)` when this call reset it. The default
    /// cannot, and says so.
    async fn reset_group(
        &self,
        from: &Destination,
        group: &str,
        seen: u32,
    ) -> Result<bool, BusError> {
        let _ = (from, seen);
        Err(BusError::new(format!(
            "this bus cannot reset consumer group {group}"
        )))
    }

    /// Stores the group's offset on a partition (the last delivered message).
    async fn store_offset(
        &self,
        from: &Destination,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), BusError>;

    /// Whether a message carrying `marker` in its [`SEND_MARKER_HEADER`] is among the
    /// topic's newest messages: `Some(true)` found, `Some(false)` looked and not found,
    /// `None` when the bus cannot tell (the default). Anything but `Some(true)` makes
    /// a restarted source resume from its confirmed state, which can only produce
    /// again, never skip.
    async fn find_marker(&self, to: &Destination, marker: u128) -> Result<Option<bool>, BusError> {
        let _ = (to, marker);
        Ok(None)
    }

    /// Creates the stream and a topic of `partitions` partitions unless they exist
    /// (its messages expiring after `retention`, if given), and answers how many
    /// partitions the topic has (one made earlier keeps its count and expiry). For
    /// cluster mode; the default cannot.
    async fn ensure_partitioned_topic(
        &self,
        to: &Destination,
        partitions: u32,
        retention: Option<std::time::Duration>,
    ) -> Result<u32, BusError> {
        let _ = (to, partitions, retention);
        Err(no_cluster())
    }

    /// The partitions the server assigned this connection in the group, or `None` when
    /// it is not a member (it never joined, or its connection was made again since).
    /// For cluster mode; the default cannot.
    async fn assignment(
        &self,
        from: &Destination,
        group: &str,
    ) -> Result<Option<Vec<u32>>, BusError> {
        let _ = (from, group);
        Err(no_cluster())
    }

    /// Every member of the group with its partitions. For cluster mode; the default
    /// cannot.
    async fn group_members(
        &self,
        from: &Destination,
        group: &str,
    ) -> Result<Vec<GroupMember>, BusError> {
        let _ = (from, group);
        Err(no_cluster())
    }

    /// Leaves the group, so that the server gives this connection's partitions to the
    /// other members at once. For cluster mode; the default cannot.
    async fn leave_group(&self, from: &Destination, group: &str) -> Result<(), BusError> {
        let _ = (from, group);
        Err(no_cluster())
    }

    /// Where each partition of the topic ends: the offset its next message will get (0
    /// while it is empty), by partition id. Unlike reading from offset 0, this holds
    /// after the oldest messages expired. For cluster mode; the default cannot.
    async fn partition_ends(&self, of: &Destination) -> Result<Vec<u64>, BusError> {
        let _ = of;
        Err(no_cluster())
    }

    /// Produces messages to one partition; `Ok` means Iggy stored them. For cluster
    /// mode's records; the default cannot.
    async fn send_to_partition(
        &self,
        to: &Destination,
        partition: u32,
        messages: Vec<OutgoingMessage>,
    ) -> Result<(), BusError> {
        let _ = (to, partition, messages);
        Err(no_cluster())
    }

    /// Whether the connection is up as far as the bus knows (a bus that cannot tell
    /// says `true`).
    fn connected(&self) -> bool {
        true
    }

    /// A bus of its own for one connector (its own connection, for [`IggyBus`]), so
    /// that no connector's requests queue behind another's; `None` shares this one.
    /// The runtime asks once per connector run (twice for a sink: the second is where
    /// it reads ahead, see [`MessageBus::read`]) and [`MessageBus::close`]s each after.
    async fn for_connector(&self, key: &str) -> Result<Option<Arc<dyn MessageBus>>, BusError> {
        let _ = key;
        Ok(None)
    }

    /// Releases what the bus holds (a connector's own connection).
    async fn close(&self) {}
}

/// A test bus that takes every call, has nothing to poll, and says whether it was
/// closed.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Closable(pub(crate) std::sync::atomic::AtomicBool);

#[cfg(test)]
#[async_trait]
impl MessageBus for Closable {
    async fn ensure_topic(&self, _: &Destination) -> Result<(), BusError> {
        Ok(())
    }
    async fn send(&self, _: &Destination, _: Vec<OutgoingMessage>) -> Result<(), BusError> {
        Ok(())
    }
    async fn join_group(&self, _: &Destination, _: &str) -> Result<(), BusError> {
        Ok(())
    }
    async fn poll(&self, _: &Destination, _: &str, _: u32) -> Result<Polled, BusError> {
        Err(BusError::new("nothing to poll"))
    }
    async fn store_offset(&self, _: &Destination, _: &str, _: u32, _: u64) -> Result<(), BusError> {
        Ok(())
    }
    async fn close(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
