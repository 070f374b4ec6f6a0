//! The narrow interface through which the runtime reaches Iggy, and its implementation
//! with the `iggy` client.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use connector_sdk::{HeaderKind, OwnedHeader};
use iggy::prelude::*;
use iggy_binary_protocol::batch::BATCH_MESSAGE_HEADER_SIZE;
use iggy_binary_protocol::codes::{POLL_MESSAGES_CODE, SEND_MESSAGES_CODE};
use iggy_binary_protocol::requests::messages::poll_messages::PollMessagesRequest;
use iggy_binary_protocol::requests::messages::send_messages::{RawMessage, SendMessagesEncoder};
use iggy_binary_protocol::responses::messages::poll_messages::PollMessagesResponse;
use iggy_binary_protocol::{WireEncode, WireIdentifier, WirePartitioning, WireUserHeaders};
use iggy_common::DiagnosticEvent;
use iggy_common::wire_conversions::{
    consumer_to_wire, identifier_to_wire, polling_strategy_to_wire,
};

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

/// Messages made ready to send by [`MessageBus::prepare_send`]: in whatever form the
/// bus sends, so that the conversion can happen while an earlier send is in flight.
#[derive(Debug)]
pub struct PreparedSend(Box<dyn std::any::Any + Send>);

impl PreparedSend {
    /// Wraps a bus's own form of the messages.
    pub fn new<T: Send + 'static>(messages: T) -> Self {
        PreparedSend(Box::new(messages))
    }

    /// The bus's own form back, or `self` when it holds another type.
    pub fn into_inner<T: 'static>(self) -> Result<T, Self> {
        self.0
            .downcast::<T>()
            .map(|messages| *messages)
            .map_err(PreparedSend)
    }
}

/// Sends a [`PreparedSend`] that holds the messages as they were given (what the
/// default [`MessageBus::prepare_send`] makes) with [`MessageBus::send`].
async fn send_as_given<B: MessageBus + ?Sized>(
    bus: &B,
    stream: &str,
    topic: &str,
    prepared: PreparedSend,
) -> Result<(), BusError> {
    match prepared.into_inner::<Vec<OutgoingMessage>>() {
        Ok(messages) => bus.send(stream, topic, messages).await,
        Err(_) => Err(BusError::new(
            "a send prepared by another kind of bus was handed to this one",
        )),
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

impl From<IggyError> for BusError {
    fn from(error: IggyError) -> Self {
        BusError::new(error.to_string())
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

/// Messages [`IggyBus`] reads per request while searching for a marker.
const MARKER_SEARCH_PAGE: u32 = 1_000;

/// What the runtime needs from Iggy. Implemented by [`IggyBus`]; tests and embedders may
/// supply their own.
#[async_trait]
pub trait MessageBus: Send + Sync {
    /// Creates the stream and topic unless they exist.
    async fn ensure_topic(&self, stream: &str, topic: &str) -> Result<(), BusError>;

    /// Produces messages (balanced over partitions); `Ok` means Iggy stored them.
    ///
    /// A source's payloads are read in place out of its plugin (see
    /// `plugin_host::SourceBatch::payloads`), and the batch is settled only once every
    /// one is dropped: an implementation must not keep them (or clones of them) after
    /// it returns, or the source stalls. Copy what must be kept
    /// (`Bytes::copy_from_slice`).
    async fn send(
        &self,
        stream: &str,
        topic: &str,
        messages: Vec<OutgoingMessage>,
    ) -> Result<(), BusError>;

    /// Converts messages bound for `stream`/`topic` for [`MessageBus::send_prepared`],
    /// so that a pipeline can do it while its previous send is in flight. The same rule
    /// as for `send` holds for the payloads: they must not outlive the send. The
    /// default keeps the messages as they are.
    async fn prepare_send(
        &self,
        stream: &str,
        topic: &str,
        messages: Vec<OutgoingMessage>,
    ) -> Result<PreparedSend, BusError> {
        let _ = (stream, topic);
        Ok(PreparedSend::new(messages))
    }

    /// Sends what [`MessageBus::prepare_send`] made, as [`MessageBus::send`] would; the
    /// default sends the messages the default `prepare_send` kept.
    async fn send_prepared(
        &self,
        stream: &str,
        topic: &str,
        prepared: PreparedSend,
    ) -> Result<(), BusError> {
        send_as_given(self, stream, topic, prepared).await
    }

    /// Creates the consumer group unless it exists, and joins it.
    async fn join_group(&self, stream: &str, topic: &str, group: &str) -> Result<(), BusError>;

    /// Polls the group's next messages after its stored offset, without committing.
    async fn poll(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
        count: u32,
    ) -> Result<Polled, BusError>;

    /// Reads up to `count` messages of one partition from `offset` on, as a consumer of
    /// its own that stores nothing: a sink reads the next batch of a partition it was
    /// given with this (on a connection of its own, see [`MessageBus::for_connector`])
    /// while the plugin takes the current one and its offset is stored. `None` (the
    /// default) when the bus cannot; the sink then polls the group.
    async fn read(
        &self,
        stream: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        count: u32,
    ) -> Result<Option<Polled>, BusError> {
        let _ = (stream, topic, partition, offset, count);
        Ok(None)
    }

    /// How far the group has read each partition of the topic, for the sink's true lag
    /// and to find partitions nobody reads (see [`MessageBus::reset_group`]). `None`
    /// (the default) when the bus cannot tell.
    async fn group_progress(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
    ) -> Result<Option<GroupProgress>, BusError> {
        let _ = (stream, topic, group);
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
        stream: &str,
        topic: &str,
        group: &str,
        seen: u32,
    ) -> Result<bool, BusError> {
        let _ = (stream, topic, seen);
        Err(BusError::new(format!(
            "this bus cannot reset consumer group {group}"
        )))
    }

    /// Stores the group's offset on a partition (the last delivered message).
    async fn store_offset(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), BusError>;

    /// Whether a message carrying `marker` in its [`SEND_MARKER_HEADER`] is among the
    /// topic's newest messages: `Some(true)` found, `Some(false)` looked and not found,
    /// `None` when the bus cannot tell (the default). Anything but `Some(true)` makes
    /// a restarted source resume from its confirmed state, which can only produce
    /// again, never skip.
    async fn find_marker(
        &self,
        stream: &str,
        topic: &str,
        marker: u128,
    ) -> Result<Option<bool>, BusError> {
        let _ = (stream, topic, marker);
        Ok(None)
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

/// [`MessageBus`] over an `iggy` client.
///
/// A bus made by [`IggyBus::connect`] gives each connector a connection of its own
/// ([`MessageBus::for_connector`]), as the raw client would use one per producer and
/// consumer: requests on one connection are answered one at a time, so a shared one
/// would make every connector wait for the others. It reports connected while its
/// own connection and every connector's are up.
#[derive(Debug, Clone)]
pub struct IggyBus {
    client: Arc<IggyClient>,
    connected: Arc<AtomicBool>,
    /// How to open connectors' connections; `None` for a bus over a given client.
    settings: Option<Arc<IggySettings>>,
    /// The connection flags of the connectors' buses that are still open (shared by
    /// the bus that made them and by them, which take themselves out when closed).
    connectors: Arc<Mutex<Vec<Weak<AtomicBool>>>>,
    /// Where this bus's next send to each topic goes.
    balance: Arc<Mutex<Vec<Balance>>>,
    /// Held while this process joins or resets a group, shared with the connectors'
    /// buses (see [`MessageBus::reset_group`]).
    joins: Arc<tokio::sync::Mutex<()>>,
}

/// Attempts at making a reset group again with its offsets, after deleting it.
const RESET_ATTEMPTS: u32 = 5;

/// The pause before the second attempt; it grows by as much each time.
const RESET_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Round robin over a topic's partitions, as the client balances its own sends: each
/// send goes to the next partition. The count is asked once, and again after a send
/// to the topic failed (its partitions may have changed).
#[derive(Debug)]
struct Balance {
    stream: String,
    topic: String,
    partitions: u32,
    next: u32,
}

/// A send made ready by [`IggyBus`]'s `prepare_send`: the `SendMessages` request body
/// as it goes on the wire, its partition chosen and its payloads copied in.
struct EncodedSend(Bytes);

/// How to reach Iggy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IggySettings {
    /// `host:port`.
    pub address: String,
    /// User name (with `password`), unless `token` is set.
    pub username: String,
    /// Password.
    pub password: String,
    /// Personal access token; used when not empty.
    pub token: String,
    /// TLS: `Some((ca_file, domain))` to enable.
    pub tls: Option<(String, String)>,
    /// Connection attempts after the first, before giving up.
    pub connect_retries: u32,
    /// Pause between connection attempts, and before re-establishing a lost connection.
    pub reconnect_interval: std::time::Duration,
}

impl IggySettings {
    /// `address` with Iggy's default user (iggy/iggy), no TLS, and the runtime's
    /// reconnection defaults (10 attempts, 500 ms apart); change what differs with
    /// struct update syntax.
    pub fn new(address: impl Into<String>) -> Self {
        IggySettings {
            address: address.into(),
            username: "iggy".to_owned(),
            password: "iggy".to_owned(),
            token: String::new(),
            tls: None,
            connect_retries: 10,
            reconnect_interval: std::time::Duration::from_millis(500),
        }
    }
}

fn identifier(name: &str) -> Result<Identifier, BusError> {
    Identifier::named(name).map_err(BusError::from)
}

impl IggyBus {
    /// The partition the next send to `stream`/`topic` goes to.
    async fn next_partition(&self, stream: &str, topic: &str) -> Result<u32, BusError> {
        let next = |balance: &mut Balance| {
            let partition = balance.next % balance.partitions;
            balance.next = balance.next.wrapping_add(1);
            partition
        };
        let known = self.balance.lock().ok().and_then(|mut balance| {
            balance
                .iter_mut()
                .find(|known| known.stream == stream && known.topic == topic)
                .map(next)
        });
        if let Some(partition) = known {
            return Ok(partition);
        }
        let details = self
            .client
            .get_topic(&identifier(stream)?, &identifier(topic)?)
            .await?
            .ok_or_else(|| BusError::new(format!("topic {stream}/{topic} does not exist")))?;
        if details.partitions_count == 0 {
            return Err(BusError::new(format!(
                "topic {stream}/{topic} has no partitions"
            )));
        }
        let mut balance = Balance {
            stream: stream.to_owned(),
            topic: topic.to_owned(),
            partitions: details.partitions_count,
            next: 0,
        };
        let partition = next(&mut balance);
        if let Ok(mut known) = self.balance.lock() {
            known.retain(|known| known.stream != stream || known.topic != topic);
            known.push(balance);
        }
        Ok(partition)
    }

    /// Creates a consumer group; one made meanwhile by someone else will do.
    async fn create_group(
        &self,
        stream: &Identifier,
        topic: &Identifier,
        group: &str,
    ) -> Result<(), IggyError> {
        match self
            .client
            .create_consumer_group(stream, topic, group)
            .await
        {
            Ok(_) | Err(IggyError::ConsumerGroupNameAlreadyExists(..)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Joins a consumer group, never while this process resets one.
    async fn join(
        &self,
        stream: &Identifier,
        topic: &Identifier,
        group: &Identifier,
    ) -> Result<(), IggyError> {
        let _not_while_resetting = self.joins.lock().await;
        self.client.join_consumer_group(stream, topic, group).await
    }

    /// Forgets a topic's partition count, so that the next send asks again.
    fn forget_partitions(&self, stream: &str, topic: &str) {
        if let Ok(mut known) = self.balance.lock() {
            known.retain(|known| known.stream != stream || known.topic != topic);
        }
    }

    /// Connects and signs in.
    pub async fn connect(settings: &IggySettings) -> Result<IggyBus, BusError> {
        let mut bus = IggyBus::open(settings).await?;
        bus.settings = Some(Arc::new(settings.clone()));
        Ok(bus)
    }

    /// One connection, signed in.
    async fn open(settings: &IggySettings) -> Result<IggyBus, BusError> {
        let login = if settings.token.is_empty() {
            AutoLogin::Enabled(Credentials::UsernamePassword(
                settings.username.clone(),
                settings.password.as_str().into(),
            ))
        } else {
            AutoLogin::Enabled(Credentials::PersonalAccessToken(
                settings.token.as_str().into(),
            ))
        };
        let mut builder = IggyClient::builder()
            .with_tcp()
            .with_server_address(settings.address.clone())
            .with_auto_sign_in(login)
            // Give up on an unreachable server instead of retrying forever (the client's
            // default); the runtime reports the error.
            .with_reconnection_max_retries(Some(settings.connect_retries))
            .with_reconnection_interval(
                NonZeroIggyDuration::try_from(settings.reconnect_interval)
                    .map_err(|error| BusError::new(format!("reconnect_interval: {error}")))?,
            )
            .with_reestablish_after(IggyDuration::from(settings.reconnect_interval))
            .with_no_delay();
        if let Some((ca_file, domain)) = &settings.tls {
            builder = builder
                .with_tls_enabled(true)
                .with_tls_ca_file(ca_file.clone());
            if !domain.is_empty() {
                builder = builder.with_tls_domain(domain.clone());
            }
        }
        let client = builder.build()?;
        let bus = IggyBus::watching(Arc::new(client)).await;
        bus.client.connect().await?;
        Ok(bus)
    }

    /// A bus over an existing (connected) client.
    pub async fn from_client(client: Arc<IggyClient>) -> Self {
        let bus = IggyBus::watching(client).await;
        bus.connected.store(true, Ordering::Relaxed);
        bus
    }

    /// Follows the client's connection events, so status can show a lost connection.
    async fn watching(client: Arc<IggyClient>) -> Self {
        let connected = Arc::new(AtomicBool::new(false));
        let mut events = client.subscribe_events().await;
        let flag = Arc::downgrade(&connected);
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                let Some(flag) = flag.upgrade() else { return };
                match event {
                    DiagnosticEvent::Connected | DiagnosticEvent::SignedIn => {
                        if !flag.swap(true, Ordering::Relaxed) {
                            tracing::info!("connected to Iggy");
                        }
                    }
                    DiagnosticEvent::Disconnected
                    | DiagnosticEvent::Shutdown
                    | DiagnosticEvent::SignedOut => {
                        if flag.swap(false, Ordering::Relaxed) {
                            tracing::warn!(%event, "lost the connection to Iggy; reconnecting");
                        }
                    }
                }
            }
        });
        IggyBus {
            client,
            connected,
            settings: None,
            connectors: Arc::default(),
            balance: Arc::default(),
            joins: Arc::default(),
        }
    }
}

fn to_iggy_headers(
    headers: &[OwnedHeader],
) -> Result<Option<std::collections::BTreeMap<HeaderKey, HeaderValue>>, BusError> {
    if headers.is_empty() {
        return Ok(None);
    }
    headers
        .iter()
        .map(|header| {
            let key = HeaderKey::from_str(&header.key)?;
            let kind = iggy::prelude::HeaderKind::from_code(header.kind as u8)?;
            let value = HeaderValue::from_raw(kind, &header.value)?;
            Ok((key, value))
        })
        .collect::<Result<_, IggyError>>()
        .map(Some)
        .map_err(BusError::from)
}

/// The `SendMessages` request body for `messages` to one partition, encoded as the
/// client encodes it (with the encoder it uses), after the checks it makes, and with
/// one origin timestamp for the whole send (the client's builder reads the clock for
/// every message). Encoding straight from the runtime's messages saves a pass over
/// every message into the client's own form.
fn encode_send(
    stream: &str,
    topic: &str,
    partition: u32,
    messages: &[OutgoingMessage],
) -> Result<Bytes, BusError> {
    let wire_name = |name: &str| {
        WireIdentifier::named(name)
            .map_err(|error| BusError::new(format!("{name:?} is not a valid name: {error}")))
    };
    let (stream_id, topic_id) = (wire_name(stream)?, wire_name(topic)?);
    let partitioning = WirePartitioning::PartitionId(partition);
    let origin_timestamp = IggyTimestamp::now().as_micros();
    // Headers in their wire form, for the (few) messages that have any.
    let mut headers = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        if message.payload.is_empty() {
            return Err(IggyError::InvalidMessagePayloadLength.into());
        }
        if message.payload.len() > MAX_PAYLOAD_SIZE as usize {
            return Err(IggyError::TooBigMessagePayload.into());
        }
        if let Some(map) = to_iggy_headers(&message.headers)? {
            let wire = iggy_common::wire_conversions::user_headers_to_wire(&map).into_bytes();
            if wire.len() > MAX_USER_HEADERS_SIZE as usize {
                return Err(IggyError::TooBigUserHeaders.into());
            }
            headers.push((index, wire));
        }
    }
    let mut with_headers = headers.iter().peekable();
    let raw: Vec<RawMessage<'_>> = messages
        .iter()
        .enumerate()
        .map(|(index, message)| RawMessage {
            // A message without an id gets one as the client would give it.
            id: message
                .id
                .filter(|id| *id != 0)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_u128_le()),
            origin_timestamp,
            headers: with_headers
                .next_if(|(at, _)| *at == index)
                .map(|(_, wire)| &wire[..]),
            payload: &message.payload,
        })
        .collect();
    let size = SendMessagesEncoder::encoded_size(&stream_id, &topic_id, &partitioning, &raw);
    let mut body = BytesMut::with_capacity(size);
    SendMessagesEncoder::encode(&mut body, &stream_id, &topic_id, &partitioning, &raw)
        .map_err(|error| BusError::new(format!("cannot encode the send: {error}")))?;
    Ok(body.freeze())
}

/// A poll's reply as the runtime sees it.
fn polled_messages(polled: PolledMessages) -> Polled {
    Polled {
        partition_id: polled.partition_id,
        current_offset: polled.current_offset,
        // Moved, not cloned: each payload is a slice of the poll's one buffer, and a
        // clone would be a contended reference count change per message.
        messages: polled
            .messages
            .into_iter()
            .map(|message| IncomingMessage {
                id: message.header.id,
                offset: message.header.offset,
                timestamp: message.header.timestamp,
                origin_timestamp: message.header.origin_timestamp,
                checksum: message.header.checksum,
                headers: incoming_headers(
                    message.header.offset,
                    message
                        .user_headers_map()
                        .map_err(|error| error.to_string()),
                ),
                payload: message.payload,
            })
            .collect(),
    }
}

/// A read's reply decoded straight into the runtime's form: the payloads are slices of
/// the reply, as the client's own decoding makes them, without the client's message
/// form in between (a pass over every message of its own).
fn decode_read(reply: Bytes) -> Result<Polled, BusError> {
    let broken = |error: &dyn std::fmt::Display| {
        BusError::new(format!(
            "the server's reply to a read does not decode: {error}"
        ))
    };
    let response = PollMessagesResponse::decode(&reply).map_err(|error| broken(&error))?;
    // The count comes from the server: room for no more messages than the reply holds.
    let room =
        (response.header.messages_count as usize).min(reply.len() / BATCH_MESSAGE_HEADER_SIZE);
    let mut messages = Vec::with_capacity(room);
    for view in response.messages {
        let view = view.map_err(|error| broken(&error))?;
        let headers = if view.user_headers.is_empty() {
            Vec::new()
        } else {
            let map = WireUserHeaders::from_bytes(reply.slice_ref(view.user_headers))
                .map_err(|error| error.to_string())
                .and_then(|wire| {
                    iggy_common::wire_conversions::user_headers_from_wire(&wire)
                        .map_err(|error| error.to_string())
                });
            incoming_headers(view.offset, map.map(Some))
        };
        messages.push(IncomingMessage {
            id: view.id,
            offset: view.offset,
            timestamp: view.timestamp,
            origin_timestamp: view.origin_timestamp,
            checksum: view.checksum,
            headers,
            payload: reply.slice_ref(view.payload),
        });
    }
    Ok(Polled {
        partition_id: response.header.partition_id,
        current_offset: response.header.current_offset,
        messages,
    })
}

/// A message's user headers as the SDK passes them on: without the runtime's own
/// marker, and without those the SDK has no kind for (each logged).
fn incoming_headers(
    offset: u64,
    map: Result<Option<std::collections::BTreeMap<HeaderKey, HeaderValue>>, String>,
) -> Vec<OwnedHeader> {
    let map = match map {
        Ok(Some(map)) => map,
        Ok(None) => return Vec::new(),
        Err(error) => {
            tracing::warn!(offset, %error, "user headers do not decode; delivering the message without them");
            return Vec::new();
        }
    };
    map.iter()
        .filter(|(key, _)| key.as_str().ok() != Some(SEND_MARKER_HEADER))
        .filter_map(|(key, value)| {
            let code = value.kind().as_code();
            let Some(kind) = HeaderKind::from_code(u32::from(code)) else {
                tracing::warn!(offset, key = %key, code, "dropping a header of a kind the SDK does not know");
                return None;
            };
            Some(OwnedHeader {
                // Keys of another kind than string are passed on as their text.
                key: key
                    .as_str()
                    .map_or_else(|_| key.to_string_value(), str::to_owned),
                kind,
                value: value.as_bytes().to_vec(),
            })
        })
        .collect()
}

#[async_trait]
impl MessageBus for IggyBus {
    fn connected(&self) -> bool {
        if !self.connected.load(Ordering::Relaxed) {
            return false;
        }
        // A connector's own bus speaks for its own connection only.
        if self.settings.is_none() {
            return true;
        }
        let Ok(mut connectors) = self.connectors.lock() else {
            return true;
        };
        connectors.retain(|flag| flag.strong_count() > 0);
        connectors
            .iter()
            .filter_map(Weak::upgrade)
            .all(|flag| flag.load(Ordering::Relaxed))
    }

    async fn for_connector(&self, key: &str) -> Result<Option<Arc<dyn MessageBus>>, BusError> {
        let Some(settings) = &self.settings else {
            return Ok(None);
        };
        let mut bus = IggyBus::open(settings)
            .await
            .map_err(|error| BusError::new(format!("connecting for {key}: {error}")))?;
        bus.connectors = self.connectors.clone();
        bus.joins = self.joins.clone();
        if let Ok(mut connectors) = self.connectors.lock() {
            connectors.push(Arc::downgrade(&bus.connected));
        }
        Ok(Some(Arc::new(bus)))
    }

    async fn close(&self) {
        if let Ok(mut connectors) = self.connectors.lock() {
            let own = Arc::downgrade(&self.connected);
            connectors.retain(|flag| !flag.ptr_eq(&own));
        }
        if let Err(error) = self.client.shutdown().await {
            tracing::debug!(%error, "closing an Iggy connection failed");
        }
    }

    async fn ensure_topic(&self, stream: &str, topic: &str) -> Result<(), BusError> {
        let stream_id = identifier(stream)?;
        if self.client.get_stream(&stream_id).await?.is_none() {
            match self.client.create_stream(stream).await {
                Ok(_) | Err(IggyError::StreamNameAlreadyExists(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let topic_id = identifier(topic)?;
        if self
            .client
            .get_topic(&stream_id, &topic_id)
            .await?
            .is_none()
        {
            // Flushed on every send: with the server's default (every 1024 messages or
            // 1 MiB), a killed server loses the messages it acknowledged since its last
            // flush (seen with iggy-server 0.9.0-edge.5). One write per send costs
            // little; an fsync per send (`enforce_fsync`) is the topic owner's choice.
            let options = TopicCreateOptions {
                messages_required_to_save: Some(1),
                ..TopicCreateOptions::default()
            };
            match self.client.create_topic(&stream_id, topic, &options).await {
                Ok(_) | Err(IggyError::TopicNameAlreadyExists(..)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    async fn send(
        &self,
        stream: &str,
        topic: &str,
        messages: Vec<OutgoingMessage>,
    ) -> Result<(), BusError> {
        let prepared = self.prepare_send(stream, topic, messages).await?;
        self.send_prepared(stream, topic, prepared).await
    }

    async fn prepare_send(
        &self,
        stream: &str,
        topic: &str,
        messages: Vec<OutgoingMessage>,
    ) -> Result<PreparedSend, BusError> {
        let partition = self.next_partition(stream, topic).await?;
        let body = encode_send(stream, topic, partition, &messages)?;
        Ok(PreparedSend::new(EncodedSend(body)))
    }

    async fn send_prepared(
        &self,
        stream: &str,
        topic: &str,
        prepared: PreparedSend,
    ) -> Result<(), BusError> {
        let EncodedSend(body) = match prepared.into_inner::<EncodedSend>() {
            Ok(encoded) => encoded,
            Err(prepared) => return send_as_given(self, stream, topic, prepared).await,
        };
        // The confirmations the reply may carry are not needed: `Ok` means stored.
        match self
            .client
            .send_binary_request(SEND_MESSAGES_CODE, body)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => {
                self.forget_partitions(stream, topic);
                Err(error.into())
            }
        }
    }

    async fn join_group(&self, stream: &str, topic: &str, group: &str) -> Result<(), BusError> {
        let (stream_id, topic_id, group_id) =
            (identifier(stream)?, identifier(topic)?, identifier(group)?);
        if self
            .client
            .get_consumer_group(&stream_id, &topic_id, &group_id)
            .await?
            .is_none()
        {
            self.create_group(&stream_id, &topic_id, group).await?;
        }
        self.join(&stream_id, &topic_id, &group_id).await?;
        Ok(())
    }

    async fn poll(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
        count: u32,
    ) -> Result<Polled, BusError> {
        let (stream_id, topic_id, group_id) =
            (identifier(stream)?, identifier(topic)?, identifier(group)?);
        let consumer = Consumer::group(group_id.clone());
        let next = PollingStrategy::next();
        let poll = || {
            self.client
                .poll_messages(&stream_id, &topic_id, None, &consumer, &next, count, false)
        };
        let polled = match poll().await {
            // A reconnected client is a new member: the server dropped the old one with
            // its connection. Join again and carry on from the group's stored offsets.
            Err(IggyError::ConsumerGroupMemberNotFound(..)) => {
                tracing::info!(
                    stream,
                    topic,
                    group,
                    "rejoining the consumer group after a reconnect"
                );
                self.join(&stream_id, &topic_id, &group_id).await?;
                poll().await?
            }
            result => result?,
        };
        Ok(polled_messages(polled))
    }

    async fn read(
        &self,
        stream: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        count: u32,
    ) -> Result<Option<Polled>, BusError> {
        let request = PollMessagesRequest {
            consumer: consumer_to_wire(&Consumer::new(identifier(READ_AHEAD_CONSUMER)?))?,
            stream_id: identifier_to_wire(&identifier(stream)?)?,
            topic_id: identifier_to_wire(&identifier(topic)?)?,
            partition_id: Some(partition),
            strategy: polling_strategy_to_wire(&PollingStrategy::offset(offset)),
            count,
            auto_commit: false,
        };
        let reply = self
            .client
            .send_binary_request(POLL_MESSAGES_CODE, request.to_bytes())
            .await?;
        decode_read(reply).map(Some)
    }

    async fn find_marker(
        &self,
        stream: &str,
        topic: &str,
        marker: u128,
    ) -> Result<Option<bool>, BusError> {
        let (stream_id, topic_id) = (identifier(stream)?, identifier(topic)?);
        let Some(details) = self.client.get_topic(&stream_id, &topic_id).await? else {
            return Ok(Some(false));
        };
        // A consumer of its own that stores nothing: reading leaves no trace.
        let consumer = Consumer::new(identifier("iggy-connectors-marker-search")?);
        let key = HeaderKey::from_str(SEND_MARKER_HEADER)?;
        let carries_marker = |message: &IggyMessage| {
            message.user_headers.is_some()
                && message
                    .user_headers_map()
                    .ok()
                    .flatten()
                    .is_some_and(|map| {
                        map.get(&key).and_then(|value| value.as_uint128().ok()) == Some(marker)
                    })
        };
        // Backwards from each partition's end, a page of every partition in turn: the
        // marker is almost always in the newest page of one of them.
        let mut partitions: Vec<(u32, u64)> = details
            .partitions
            .iter()
            .filter(|partition| partition.messages_count > 0)
            .map(|partition| (partition.id, partition.current_offset + 1))
            .collect();
        let mut searched = 0;
        while searched < MARKER_SEARCH_DEPTH && !partitions.is_empty() {
            let page = MARKER_SEARCH_PAGE.min(MARKER_SEARCH_DEPTH - searched);
            for (partition, end) in &mut partitions {
                let start = end.saturating_sub(u64::from(page));
                let polled = self
                    .client
                    .poll_messages(
                        &stream_id,
                        &topic_id,
                        Some(*partition),
                        &consumer,
                        &PollingStrategy::offset(start),
                        page,
                        false,
                    )
                    .await?;
                if polled
                    .messages
                    .iter()
                    .filter(|message| message.header.offset < *end)
                    .any(carries_marker)
                {
                    return Ok(Some(true));
                }
                *end = start;
            }
            partitions.retain(|(_, end)| *end > 0);
            searched += page;
        }
        Ok(Some(false))
    }

    async fn group_progress(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
    ) -> Result<Option<GroupProgress>, BusError> {
        let (stream_id, topic_id, group_id) =
            (identifier(stream)?, identifier(topic)?, identifier(group)?);
        let Some(details) = self
            .client
            .get_consumer_group(&stream_id, &topic_id, &group_id)
            .await?
        else {
            return Err(BusError::new(format!(
                "consumer group {group} of {stream}/{topic} does not exist"
            )));
        };
        let group_id_now = details.id;
        let consumer = Consumer::group(group_id);
        let Some(details) = self.client.get_topic(&stream_id, &topic_id).await? else {
            return Err(BusError::new(format!(
                "topic {stream}/{topic} does not exist"
            )));
        };
        let mut progress = Vec::with_capacity(details.partitions.len());
        for partition in &details.partitions {
            let stored = self
                .client
                .get_consumer_offset(&consumer, &stream_id, &topic_id, Some(partition.id))
                .await?
                .map(|offset| offset.stored_offset);
            progress.push(PartitionProgress {
                partition_id: partition.id,
                end: if partition.messages_count == 0 {
                    0
                } else {
                    partition.current_offset + 1
                },
                stored,
            });
        }
        Ok(Some(GroupProgress {
            group_id: group_id_now,
            partitions: progress,
        }))
    }

    async fn reset_group(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
        seen: u32,
    ) -> Result<bool, BusError> {
        let (stream_id, topic_id, group_id) =
            (identifier(stream)?, identifier(topic)?, identifier(group)?);
        // No other join in this process meanwhile: two sinks of one group find the same
        // stall (the second must find the group reset), and a member that joins before
        // the offsets are restored gets partitions without them.
        let _one_at_a_time = self.joins.lock().await;
        let Some(progress) = self.group_progress(stream, topic, group).await? else {
            return Ok(false);
        };
        if progress.group_id != seen {
            // Reset since the caller looked (by another sink, here or elsewhere).
            self.client
                .join_consumer_group(&stream_id, &topic_id, &group_id)
                .await?;
            return Ok(false);
        }
        // The offsets are the group's (a new group starts with none): read first, and
        // stored again by the new group's only member, which owns every partition. One
        // a server lost messages behind (stored at or past the end) is stored as the
        // end, so that the messages that take those offsets again are read.
        let offsets: Vec<(u32, u64)> = progress
            .partitions
            .iter()
            .filter_map(|partition| {
                let stored = partition.stored?;
                let last = partition.end.checked_sub(1)?;
                Some((partition.partition_id, stored.min(last)))
            })
            .collect();
        match self
            .client
            .delete_consumer_group(&stream_id, &topic_id, &group_id)
            .await
        {
            Ok(()) | Err(IggyError::ConsumerGroupIdNotFound(..)) => {}
            Err(error) => return Err(error.into()),
        }
        // From here the offsets exist only in hand: keep trying to put them back (a
        // group left without them is read again from the start of every partition).
        let consumer = Consumer::group(group_id.clone());
        let mut failure = None;
        for attempt in 0..RESET_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(RESET_PAUSE * attempt).await;
            }
            let made = async {
                self.create_group(&stream_id, &topic_id, group).await?;
                self.client
                    .join_consumer_group(&stream_id, &topic_id, &group_id)
                    .await?;
                for (partition, offset) in &offsets {
                    self.client
                        .store_consumer_offset(
                            &consumer,
                            &stream_id,
                            &topic_id,
                            Some(*partition),
                            *offset,
                        )
                        .await?;
                }
                Ok::<_, IggyError>(())
            };
            match made.await {
                Ok(()) => return Ok(true),
                Err(error) => failure = Some(error),
            }
        }
        let error = failure.map_or_else(|| "no attempt".to_owned(), |error| error.to_string());
        tracing::warn!(
            stream,
            topic,
            group,
            offsets = ?offsets,
            %error,
            "cannot restore the group's offsets after resetting it; partitions without one will be read again from their start"
        );
        Err(BusError::new(format!(
            "resetting consumer group {group}: {error}"
        )))
    }

    async fn store_offset(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), BusError> {
        let (stream_id, topic_id, group_id) =
            (identifier(stream)?, identifier(topic)?, identifier(group)?);
        let consumer = Consumer::group(group_id.clone());
        let store = || {
            self.client.store_consumer_offset(
                &consumer,
                &stream_id,
                &topic_id,
                Some(partition),
                offset,
            )
        };
        // Only the member that owns a partition may store its offset, and a
        // reconnected client is a new member that has not joined yet (the poll rejoins
        // too, but the store of the batch in hand comes first). The real server's
        // refusal reaches the client as `ResourceNotFound`; where the group itself is
        // gone, joining fails with the reason.
        let refused = |error: &IggyError| {
            matches!(
                error,
                IggyError::ConsumerGroupMemberNotFound(..)
                    | IggyError::ConsumerGroupPartitionNotOwned(..)
                    | IggyError::ResourceNotFound(_)
            )
        };
        match store().await {
            Err(error) if refused(&error) => {
                tracing::info!(
                    stream,
                    topic,
                    group,
                    partition,
                    "rejoining the consumer group to store an offset"
                );
                self.join(&stream_id, &topic_id, &group_id).await?;
                match store().await {
                    // A member again, and still refused: the partition is another's.
                    Err(error) if refused(&error) => Err(BusError::not_owned(format!(
                        "partition {partition} of {stream}/{topic} is no longer this member's in group {group}: {error}"
                    ))),
                    result => Ok(result?),
                }
            }
            result => Ok(result?),
        }
    }
}

#[cfg(test)]
mod tests {
    use iggy_binary_protocol::WireDecode;
    use iggy_binary_protocol::batch::{
        BATCH_HEADER_SIZE, BatchRef, calculate_batch_checksum, decode_batch_slice,
    };
    use iggy_binary_protocol::requests::messages::send_messages::SendMessagesHeader;

    use super::*;

    fn outgoing(
        id: Option<u128>,
        headers: Vec<OwnedHeader>,
        payload: &'static [u8],
    ) -> OutgoingMessage {
        OutgoingMessage {
            id,
            headers,
            payload: Bytes::from_static(payload),
        }
    }

    /// The body's metadata and its batch record, decoded (checksums verified) with the
    /// protocol crate the client and server use.
    fn decode_send(body: &[u8]) -> (SendMessagesHeader, BatchRef<'_>) {
        let metadata = u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) as usize;
        let (header, used) = SendMessagesHeader::decode(&body[4..]).expect("metadata decodes");
        assert_eq!(used, metadata);
        let batch = decode_batch_slice(&body[4 + metadata..]).expect("the batch verifies");
        (header, batch)
    }

    #[test]
    fn messages_with_and_without_headers_encode_as_the_server_decodes() {
        let before = IggyTimestamp::now().as_micros();
        let messages = vec![
            outgoing(Some(7), Vec::new(), b"plain"),
            outgoing(
                None,
                vec![OwnedHeader::string("source", "random")],
                b"headed",
            ),
        ];
        let body = encode_send("s", "t", 3, &messages).expect("valid messages encode");
        let after = IggyTimestamp::now().as_micros();

        let (header, batch) = decode_send(&body);
        assert_eq!(header.stream_id, WireIdentifier::named("s").expect("name"));
        assert_eq!(header.topic_id, WireIdentifier::named("t").expect("name"));
        assert_eq!(header.partitioning, WirePartitioning::PartitionId(3));
        assert_eq!(header.messages_count, 2);
        assert!((before..=after).contains(&batch.header.origin_timestamp));
        let frames: Vec<_> = batch.iter().collect();
        assert_eq!(frames.len(), 2);
        let (plain, headed) = (&frames[0], &frames[1]);
        assert_eq!((plain.header.id, plain.payload), (7, &b"plain"[..]));
        assert!(plain.user_headers.is_empty());
        // One origin timestamp for the send.
        assert_eq!(
            (plain.header.timestamp_delta, headed.header.timestamp_delta),
            (0, 0)
        );
        // A message without an id gets one.
        assert_ne!(headed.header.id, 0);
        assert_eq!(headed.payload, b"headed");
        let wire = WireUserHeaders::from_bytes(Bytes::copy_from_slice(headed.user_headers))
            .expect("headers decode");
        let map =
            iggy_common::wire_conversions::user_headers_from_wire(&wire).expect("headers decode");
        let value = map
            .get(&HeaderKey::from_str("source").expect("valid key"))
            .expect("the header is kept");
        assert_eq!(value.as_bytes(), b"random");
    }

    #[test]
    fn an_empty_payload_is_refused_like_the_client_does() {
        let refused = encode_send("s", "t", 0, &[outgoing(None, Vec::new(), b"")]).map(|_| ());
        let client = IggyMessage::builder()
            .payload(Bytes::new())
            .build()
            .map(|_| ())
            .map_err(BusError::from);
        assert_eq!(refused, client);
        assert!(refused.is_err());
    }

    /// A poll's reply holding what `encode_send` sent, as the server serves it: the
    /// record with its base offset and timestamp stamped, after the reply's header.
    fn served(body: &[u8], partition: u32, base_offset: u64, current_offset: u64) -> Bytes {
        let (header, batch) = decode_send(body);
        let mut stamped = batch.header;
        stamped.base_offset = base_offset;
        stamped.base_timestamp = 1_000;
        stamped.batch_checksum = calculate_batch_checksum(&stamped, batch.blob());
        let mut record = vec![0; BATCH_HEADER_SIZE];
        stamped.encode_into(&mut record);
        record.extend_from_slice(batch.blob());
        let mut reply = Vec::new();
        reply.extend_from_slice(&partition.to_le_bytes());
        reply.extend_from_slice(&current_offset.to_le_bytes());
        reply.extend_from_slice(&header.messages_count.to_le_bytes());
        reply.extend_from_slice(&record);
        Bytes::from(reply)
    }

    #[test]
    fn a_read_decodes_what_was_sent_without_the_runtimes_marker() {
        let marker = OwnedHeader {
            key: SEND_MARKER_HEADER.to_owned(),
            kind: HeaderKind::Uint128,
            value: 5u128.to_le_bytes().to_vec(),
        };
        let messages = vec![
            outgoing(Some(1), Vec::new(), b"first"),
            outgoing(
                Some(2),
                vec![OwnedHeader::string("source", "random"), marker],
                b"second",
            ),
        ];
        let body = encode_send("s", "t", 0, &messages).expect("valid messages encode");
        let polled = decode_read(served(&body, 4, 40, 99)).expect("the reply decodes");

        assert_eq!((polled.partition_id, polled.current_offset), (4, 99));
        let seen: Vec<_> = polled
            .messages
            .iter()
            .map(|message| (message.id, message.offset, &message.payload[..]))
            .collect();
        assert_eq!(seen, [(1, 40, &b"first"[..]), (2, 41, &b"second"[..])]);
        assert!(
            polled
                .messages
                .iter()
                .all(|message| message.timestamp == 1_000)
        );
        assert!(polled.messages[0].headers.is_empty());
        assert_eq!(
            polled.messages[1].headers,
            [OwnedHeader::string("source", "random")]
        );
    }

    #[test]
    fn a_broken_reply_is_an_error() {
        let body = encode_send("s", "t", 0, &[outgoing(Some(1), Vec::new(), b"payload")])
            .expect("valid messages encode");
        let reply = served(&body, 0, 0, 0);
        let cut = reply.slice(..reply.len() - 3);
        let error = decode_read(cut).expect_err("a cut reply is refused");
        assert!(error.to_string().contains("does not decode"), "{error}");
        assert!(decode_read(Bytes::from_static(b"short")).is_err());
    }
}
