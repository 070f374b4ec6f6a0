//! [`IggyBus`]: the [`MessageBus`] over the `iggy` client, one connection per
//! connector, with its own round robin over partitions and consumer group repair.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use iggy::prelude::*;
use iggy_binary_protocol::codes::{
    POLL_MESSAGES_CODE, SEND_MESSAGES_CODE, SYNC_CONSUMER_GROUP_CODE,
};
use iggy_binary_protocol::requests::consumer_groups::SyncConsumerGroupRequest;
use iggy_binary_protocol::requests::messages::poll_messages::PollMessagesRequest;
use iggy_binary_protocol::responses::consumer_groups::SyncConsumerGroupResponse;
use iggy_binary_protocol::{WireDecode, WireEncode};
use iggy_common::DiagnosticEvent;
use iggy_common::wire_conversions::{
    consumer_to_wire, identifier_to_wire, polling_strategy_to_wire,
};

use super::wire::{decode_read, encode_send, polled_messages};
use super::{
    BusError, Destination, GroupMember, GroupProgress, MARKER_SEARCH_DEPTH, MessageBus,
    OutgoingMessage, PartitionProgress, Polled, PreparedSend, READ_AHEAD_CONSUMER,
    SEND_MARKER_HEADER,
};

/// The segment size of a topic made with a retention (cluster mode's state topic).
const STATE_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// Messages [`IggyBus`] reads per request while searching for a marker.
const MARKER_SEARCH_PAGE: u32 = 1_000;

impl From<IggyError> for BusError {
    fn from(error: IggyError) -> Self {
        BusError::new(error.to_string())
    }
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
    /// Send bodies the client is done with, kept for the next encode (see
    /// [`SpareBodies`]).
    spare: Arc<SpareBodies>,
}

/// The most send bodies a bus keeps for reuse. One is enough: a source encodes its next
/// send while one is in flight, and that one comes back before the send after.
const SPARE_BODIES: usize = 1;

/// The largest send body a bus keeps for reuse (a larger one is freed): what a source
/// holds beyond its memory budget.
const SPARE_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Send bodies kept for reuse. A body of a batch of 1000 1 KiB messages is 1 MiB: freed
/// and allocated again for every send, its pages went back to the system and were
/// faulted in and zeroed again each time (a quarter of the encode's CPU in the e2e
/// bench's profile).
#[derive(Debug, Default)]
struct SpareBodies(Mutex<Vec<bytes::BytesMut>>);

impl SpareBodies {
    /// An empty buffer, reused when one is spare.
    fn take(&self) -> bytes::BytesMut {
        self.0
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .unwrap_or_default()
    }

    /// Keeps `body` for reuse if nobody else holds it (the client dropped its
    /// reference once the send was answered) and it is not too large.
    fn give_back(&self, body: Bytes) {
        let Ok(mut body) = body.try_into_mut() else {
            return;
        };
        if body.capacity() > SPARE_BODY_BYTES {
            return;
        }
        body.clear();
        if let Ok(mut spare) = self.0.lock()
            && spare.len() < SPARE_BODIES
        {
            spare.push(body);
        }
    }
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
    async fn next_partition(&self, to: &Destination) -> Result<u32, BusError> {
        let (stream, topic) = (to.stream.as_str(), to.topic.as_str());
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

    /// The `SendMessages` body for `messages`, bound for the topic's next partition.
    async fn encode(
        &self,
        to: &Destination,
        messages: &[OutgoingMessage],
    ) -> Result<Bytes, BusError> {
        let partition = self.next_partition(to).await?;
        encode_send(to, partition, messages, self.spare.take())
    }

    /// Forgets a topic's partition count, so that the next send asks again.
    fn forget_partitions(&self, to: &Destination) {
        let (stream, topic) = (to.stream.as_str(), to.topic.as_str());
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
            // Every connector run opens connections of its own: only coming back after a
            // loss is news at info level.
            let mut lost = false;
            while let Ok(event) = events.recv().await {
                let Some(flag) = flag.upgrade() else { return };
                match event {
                    DiagnosticEvent::Connected | DiagnosticEvent::SignedIn => {
                        if !flag.swap(true, Ordering::Relaxed) {
                            if lost {
                                tracing::info!("connected to Iggy again");
                            } else {
                                tracing::debug!("connected to Iggy");
                            }
                        }
                    }
                    DiagnosticEvent::Disconnected
                    | DiagnosticEvent::Shutdown
                    | DiagnosticEvent::SignedOut => {
                        if flag.swap(false, Ordering::Relaxed) {
                            lost = true;
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
            spare: Arc::default(),
        }
    }
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

    async fn ensure_topic(&self, to: &Destination) -> Result<(), BusError> {
        let (stream, topic) = (to.stream.as_str(), to.topic.as_str());
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

    async fn send(&self, to: &Destination, messages: Vec<OutgoingMessage>) -> Result<(), BusError> {
        let prepared = self.prepare_send(to, messages).await?;
        self.send_prepared(to, prepared).await
    }

    async fn prepare_send(
        &self,
        to: &Destination,
        messages: Vec<OutgoingMessage>,
    ) -> Result<PreparedSend, BusError> {
        Ok(PreparedSend::Wire(self.encode(to, &messages).await?))
    }

    async fn send_prepared(
        &self,
        to: &Destination,
        prepared: PreparedSend,
    ) -> Result<(), BusError> {
        let body = match prepared {
            PreparedSend::Wire(body) => body,
            PreparedSend::Messages(messages) => self.encode(to, &messages).await?,
        };
        // The confirmations the reply may carry are not needed: `Ok` means stored.
        let kept = body.clone();
        let sent = self
            .client
            .send_binary_request(SEND_MESSAGES_CODE, body)
            .await;
        self.spare.give_back(kept);
        match sent {
            Ok(_) => Ok(()),
            Err(error) => {
                self.forget_partitions(to);
                Err(error.into())
            }
        }
    }

    async fn join_group(&self, from: &Destination, group: &str) -> Result<(), BusError> {
        let (stream, topic) = (from.stream.as_str(), from.topic.as_str());
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

    async fn poll(&self, from: &Destination, group: &str, count: u32) -> Result<Polled, BusError> {
        let (stream, topic) = (from.stream.as_str(), from.topic.as_str());
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
        from: &Destination,
        partition: u32,
        offset: u64,
        count: u32,
    ) -> Result<Option<Polled>, BusError> {
        let (stream, topic) = (from.stream.as_str(), from.topic.as_str());
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

    async fn find_marker(&self, to: &Destination, marker: u128) -> Result<Option<bool>, BusError> {
        let (stream, topic) = (to.stream.as_str(), to.topic.as_str());
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
        from: &Destination,
        group: &str,
    ) -> Result<Option<GroupProgress>, BusError> {
        let (stream, topic) = (from.stream.as_str(), from.topic.as_str());
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
        from: &Destination,
        group: &str,
        seen: u32,
    ) -> Result<bool, BusError> {
        let (stream, topic) = (from.stream.as_str(), from.topic.as_str());
        let (stream_id, topic_id, group_id) =
            (identifier(stream)?, identifier(topic)?, identifier(group)?);
        // No other join in this process meanwhile: two sinks of one group find the same
        // stall (the second must find the group reset), and a member that joins before
        // the offsets are restored gets partitions without them.
        let _one_at_a_time = self.joins.lock().await;
        let Some(progress) = self.group_progress(from, group).await? else {
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

    async fn ensure_partitioned_topic(
        &self,
        to: &Destination,
        partitions: u32,
        retention: Option<std::time::Duration>,
    ) -> Result<u32, BusError> {
        let (stream, topic) = (to.stream.as_str(), to.topic.as_str());
        let (stream_id, topic_id) = (identifier(stream)?, identifier(topic)?);
        if self.client.get_stream(&stream_id).await?.is_none() {
            match self.client.create_stream(stream).await {
                Ok(_) | Err(IggyError::StreamNameAlreadyExists(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        if let Some(details) = self.client.get_topic(&stream_id, &topic_id).await? {
            return Ok(details.partitions_count);
        }
        // Flushed on every message, as the runtime's other topics: a record a member
        // was told is stored must outlive a killed server.
        let mut options = TopicCreateOptions {
            partitions_count: Some(partitions),
            messages_required_to_save: Some(1),
            ..TopicCreateOptions::default()
        };
        if let Some(retention) = retention {
            options.message_expiry = Some(IggyExpiry::ExpireDuration(retention.into()));
            // Iggy drops expired messages a whole segment at a time: small segments
            // let it drop them soon after they expire.
            options.segment_size = Some(IggyByteSize::from(STATE_SEGMENT_BYTES));
        }
        match self.client.create_topic(&stream_id, topic, &options).await {
            Ok(_) | Err(IggyError::TopicNameAlreadyExists(..)) => {}
            Err(error) => return Err(error.into()),
        }
        // Made by another member at the same moment, perhaps with another count.
        let details = self
            .client
            .get_topic(&stream_id, &topic_id)
            .await?
            .ok_or_else(|| BusError::new(format!("topic {stream}/{topic} was made and is gone")))?;
        Ok(details.partitions_count)
    }

    async fn assignment(
        &self,
        from: &Destination,
        group: &str,
    ) -> Result<Option<Vec<u32>>, BusError> {
        let request = SyncConsumerGroupRequest {
            stream_id: identifier_to_wire(&identifier(&from.stream)?)?,
            topic_id: identifier_to_wire(&identifier(&from.topic)?)?,
            group_id: identifier_to_wire(&identifier(group)?)?,
        };
        let reply = match self
            .client
            .send_binary_request(SYNC_CONSUMER_GROUP_CODE, request.to_bytes())
            .await
        {
            Ok(reply) => reply,
            // Not a member of the group, or no group yet (joining makes it).
            Err(
                IggyError::ConsumerGroupMemberNotFound(..)
                | IggyError::ConsumerGroupIdNotFound(..)
                | IggyError::ConsumerGroupNameNotFound(..),
            ) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        // An empty answer: not a member.
        if reply.is_empty() {
            return Ok(None);
        }
        let response = SyncConsumerGroupResponse::decode(&reply).map_err(|error| {
            BusError::new(format!(
                "the server's answer to a group sync does not decode: {error}"
            ))
        })?;
        Ok(Some(response.0.partitions))
    }

    async fn group_members(
        &self,
        from: &Destination,
        group: &str,
    ) -> Result<Vec<GroupMember>, BusError> {
        let (stream_id, topic_id, group_id) = (
            identifier(&from.stream)?,
            identifier(&from.topic)?,
            identifier(group)?,
        );
        let Some(details) = self
            .client
            .get_consumer_group(&stream_id, &topic_id, &group_id)
            .await?
        else {
            return Ok(Vec::new());
        };
        Ok(details
            .members
            .into_iter()
            .map(|member| GroupMember {
                id: member.id,
                partitions: member.partitions,
            })
            .collect())
    }

    async fn leave_group(&self, from: &Destination, group: &str) -> Result<(), BusError> {
        let (stream_id, topic_id, group_id) = (
            identifier(&from.stream)?,
            identifier(&from.topic)?,
            identifier(group)?,
        );
        match self
            .client
            .leave_consumer_group(&stream_id, &topic_id, &group_id)
            .await
        {
            Ok(()) | Err(IggyError::ConsumerGroupMemberNotFound(..)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn partition_ends(&self, of: &Destination) -> Result<Vec<u64>, BusError> {
        let Some(details) = self
            .client
            .get_topic(&identifier(&of.stream)?, &identifier(&of.topic)?)
            .await?
        else {
            return Err(BusError::new(format!("topic {of} does not exist")));
        };
        let mut ends = vec![0; details.partitions.len()];
        for partition in &details.partitions {
            // A partition whose messages all expired keeps its current offset.
            let end = if partition.messages_count == 0 && partition.current_offset == 0 {
                0
            } else {
                partition.current_offset + 1
            };
            if let Some(slot) = ends.get_mut(partition.id as usize) {
                *slot = end;
            }
        }
        Ok(ends)
    }

    async fn send_to_partition(
        &self,
        to: &Destination,
        partition: u32,
        messages: Vec<OutgoingMessage>,
    ) -> Result<(), BusError> {
        let body = encode_send(to, partition, &messages, bytes::BytesMut::new())?;
        self.client
            .send_binary_request(SEND_MESSAGES_CODE, body)
            .await?;
        Ok(())
    }

    async fn store_offset(
        &self,
        from: &Destination,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), BusError> {
        let (stream, topic) = (from.stream.as_str(), from.topic.as_str());
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
    use super::*;

    #[test]
    fn a_send_body_nobody_else_holds_is_reused_and_no_more_than_a_few_are_kept() {
        let spare = SpareBodies::default();
        let body = bytes::BytesMut::with_capacity(4096).freeze();
        let held = body.clone();
        spare.give_back(body);
        assert_eq!(spare.take().capacity(), 0, "still held elsewhere: not kept");
        drop(held);
        for _ in 0..3 {
            let mut body = bytes::BytesMut::with_capacity(4096);
            body.extend_from_slice(b"sent");
            spare.give_back(body.freeze());
        }
        for _ in 0..SPARE_BODIES {
            let reused = spare.take();
            assert!(reused.is_empty() && reused.capacity() >= 4096);
        }
        assert_eq!(spare.take().capacity(), 0, "at most {SPARE_BODIES} kept");
        spare.give_back(bytes::BytesMut::with_capacity(SPARE_BODY_BYTES + 1).freeze());
        assert_eq!(spare.take().capacity(), 0, "too large to keep");
    }
}
