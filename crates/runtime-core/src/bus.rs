//! The narrow interface through which the runtime reaches Iggy, and its implementation
//! with the `iggy` client.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use connector_sdk::{HeaderKind, OwnedHeader};
use iggy::prelude::*;
use iggy_common::DiagnosticEvent;

/// A message to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The id; `None` lets the client pick one.
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

    /// Converts messages for [`MessageBus::send_prepared`], so that a pipeline can do
    /// it while its previous send is in flight. The same rule as for `send` holds for
    /// the payloads: they must not outlive the send. The default keeps the messages as
    /// they are.
    fn prepare_send(&self, messages: Vec<OutgoingMessage>) -> Result<PreparedSend, BusError> {
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
}

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

fn identifier(name: &str) -> Result<Identifier, BusError> {
    Identifier::named(name).map_err(BusError::from)
}

impl IggyBus {
    /// Produces messages in the client's form (balanced over partitions).
    async fn send_iggy(
        &self,
        stream: &str,
        topic: &str,
        batch: &mut [IggyMessage],
    ) -> Result<(), BusError> {
        self.client
            .send_messages(
                &identifier(stream)?,
                &identifier(topic)?,
                &Partitioning::balanced(),
                batch,
            )
            .await?;
        Ok(())
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

/// The client's form of messages to produce.
fn iggy_messages(messages: Vec<OutgoingMessage>) -> Result<Vec<IggyMessage>, BusError> {
    // One origin timestamp for the whole send: the client's builder reads the clock
    // for every message, which was a tenth of the conversion's cost.
    let origin_timestamp = IggyTimestamp::now().as_micros();
    let mut built = Vec::with_capacity(messages.len());
    for message in messages {
        let mut iggy = if message.headers.is_empty() {
            // What the builder checks, without the header encoding it would skip anyway.
            if message.payload.is_empty() {
                return Err(IggyError::InvalidMessagePayloadLength.into());
            }
            let payload_length = u32::try_from(message.payload.len())
                .ok()
                .filter(|length| *length <= MAX_PAYLOAD_SIZE)
                .ok_or(IggyError::TooBigMessagePayload)?;
            IggyMessage {
                header: IggyMessageHeader {
                    id: message.id.unwrap_or(0),
                    payload_length,
                    ..IggyMessageHeader::default()
                },
                payload: message.payload,
                user_headers: None,
            }
        } else {
            IggyMessage::builder()
                .maybe_id(message.id)
                .payload(message.payload)
                .maybe_user_headers(to_iggy_headers(&message.headers)?)
                .build()?
        };
        iggy.header.origin_timestamp = origin_timestamp;
        built.push(iggy);
    }
    Ok(built)
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
                headers: from_iggy_headers(&message),
                payload: message.payload,
            })
            .collect(),
    }
}

fn from_iggy_headers(message: &IggyMessage) -> Vec<OwnedHeader> {
    let offset = message.header.offset;
    let map = match message.user_headers_map() {
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
            match self
                .client
                .create_topic(&stream_id, topic, &TopicCreateOptions::default())
                .await
            {
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
        let mut batch = iggy_messages(messages)?;
        self.send_iggy(stream, topic, &mut batch).await
    }

    fn prepare_send(&self, messages: Vec<OutgoingMessage>) -> Result<PreparedSend, BusError> {
        Ok(PreparedSend::new(iggy_messages(messages)?))
    }

    async fn send_prepared(
        &self,
        stream: &str,
        topic: &str,
        prepared: PreparedSend,
    ) -> Result<(), BusError> {
        match prepared.into_inner::<Vec<IggyMessage>>() {
            Ok(mut batch) => self.send_iggy(stream, topic, &mut batch).await,
            Err(prepared) => send_as_given(self, stream, topic, prepared).await,
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
            match self
                .client
                .create_consumer_group(&stream_id, &topic_id, group)
                .await
            {
                Ok(_) | Err(IggyError::ConsumerGroupNameAlreadyExists(..)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        self.client
            .join_consumer_group(&stream_id, &topic_id, &group_id)
            .await?;
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
                self.client
                    .join_consumer_group(&stream_id, &topic_id, &group_id)
                    .await?;
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
        let polled = self
            .client
            .poll_messages(
                &identifier(stream)?,
                &identifier(topic)?,
                Some(partition),
                &Consumer::new(identifier(READ_AHEAD_CONSUMER)?),
                &PollingStrategy::offset(offset),
                count,
                false,
            )
            .await?;
        Ok(Some(polled_messages(polled)))
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
                self.client
                    .join_consumer_group(&stream_id, &topic_id, &group_id)
                    .await?;
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

    #[test]
    fn messages_with_and_without_headers_convert_alike() {
        let before = IggyTimestamp::now().as_micros();
        let built = iggy_messages(vec![
            outgoing(Some(7), Vec::new(), b"plain"),
            outgoing(
                None,
                vec![OwnedHeader::string("source", "random")],
                b"headed",
            ),
        ])
        .expect("valid messages convert");
        let after = IggyTimestamp::now().as_micros();

        let (plain, headed) = (&built[0], &built[1]);
        assert_eq!((plain.header.id, &plain.payload[..]), (7, &b"plain"[..]));
        assert_eq!(plain.header.payload_length, 5);
        assert_eq!(
            (
                plain.user_headers.as_ref(),
                plain.header.user_headers_length
            ),
            (None, 0)
        );
        assert_eq!((headed.header.id, &headed.payload[..]), (0, &b"headed"[..]));
        assert_eq!(headed.header.payload_length, 6);
        let headers = headed
            .user_headers_map()
            .expect("headers decode")
            .expect("headers present");
        let value = headers
            .get(&HeaderKey::from_str("source").expect("valid key"))
            .expect("the header is kept");
        assert_eq!(value.as_bytes(), b"random");
        assert_eq!(
            plain.header.origin_timestamp,
            headed.header.origin_timestamp
        );
        assert!((before..=after).contains(&plain.header.origin_timestamp));
    }

    #[test]
    fn an_empty_payload_is_refused_like_the_client_does() {
        let refused = iggy_messages(vec![outgoing(None, Vec::new(), b"")]).map(|_| ());
        let client = IggyMessage::builder()
            .payload(Bytes::new())
            .build()
            .map(|_| ())
            .map_err(BusError::from);
        assert_eq!(refused, client);
        assert!(refused.is_err());
    }
}
