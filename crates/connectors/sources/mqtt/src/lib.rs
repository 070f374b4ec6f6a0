//! The `mqtt_source` connector: subscribes to MQTT topic filters (MQTT 3.1.1 or 5) and
//! produces every message that arrives to Iggy, the payload as is.
//!
//! Lossless with QoS 1 and 2: the connector acknowledges a message to the broker
//! (PUBACK, or PUBREC for QoS 2) only once the runtime settled the batch holding it
//! `Accepted`, that is once Iggy stored it. With a persistent session (`clean_session`
//! false, the default, and a fixed `client_id`) the broker keeps what it sent and was not
//! acknowledged, and what arrives while the connector is down, and sends it again when
//! it reconnects: a crash loses nothing and may produce a message twice (at least once).
//! A rejected batch is produced again from memory, with every later unsettled one.
//!
//! Each message carries the headers `mqtt_topic` (string), `mqtt_qos` (uint8) and
//! `mqtt_retain` (bool), and with MQTT 5 its user properties as string headers. Its
//! Iggy message id can come from a top-level JSON field or the MQTT 5 correlation data
//! (`message_id.rs`). A batch holds up to `batch_length` messages, or what arrived
//! within `linger_time` of its first message.
//!
//! What a crash can repeat is what Iggy stored and the broker was not yet told: the
//! batches produced and not settled, at most `MAX_UNSETTLED_BATCHES` (8) times
//! `batch_length` messages, and the acknowledgements of settled ones not yet written
//! to the broker (they go to the client as soon as a batch is settled, so at most as
//! many again, and far fewer in practice). The broker's own in-flight limit is no bound to count on: Mosquitto 2.0.11
//! keeps to `max_inflight_messages` only until acknowledgements flow, and was seen with
//! over 9000 QoS 1 messages unacknowledged under a limit of 100.

#[path = "../../../sinks/mqtt/src/connect.rs"]
mod connect;
mod message_id;
mod protocol;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use connector_sdk::{
    BatchOutcome, ConnectorContext, Error, HeaderKind, OwnedHeader, ProducedBatch, ProducedMessage,
    Schema, Source,
};
use rumqttc::QoS;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use connect::{BrokerUrl, Connection, TlsFiles};
use message_id::IdFrom;
pub use protocol::ProtocolVersion;
use protocol::{Client, Events, Happening, Received, Session};

/// One topic filter to subscribe to.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicFilter {
    /// The filter, with `+` (one level) and `#` (the rest) wildcards.
    pub filter: String,
    /// The subscription's maximum QoS: 0, 1 or 2. Only QoS 1 and 2 messages are
    /// lossless.
    #[serde(default = "default_qos")]
    pub qos: u8,
}

/// How the payloads are encoded, for the stream's schema.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PayloadSchema {
    /// JSON text.
    #[default]
    Json,
    /// UTF-8 text.
    Text,
    /// Opaque bytes.
    Raw,
}

/// The source's `plugin_config`.
///
/// Lossless with QoS 1 and 2: a message is acknowledged to the broker only once Iggy
/// stored its batch; with the default persistent session (`clean_session = false`, a
/// fixed `client_id`), what was not acknowledged and what arrives while the connector
/// is down comes after it restarts (at least once: a message may be produced twice).
/// Each message carries the headers `mqtt_topic` (string), `mqtt_qos` (uint8) and
/// `mqtt_retain` (bool), and with MQTT 5 each user property as a string header; the
/// payload is passed as is. After a crash, the batches not yet settled (at most 8 times
/// `batch_length` messages) and acknowledgements not yet written to the broker (at
/// most as many again) are produced again. Iggy headers hold 1 to 255 bytes: a
/// user property, or a topic, outside that is left out with a warning.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// The broker: `mqtt://host:port` (default port 1883) or `mqtts://host:port` for
    /// TLS (default port 8883).
    pub url: String,
    /// The topic filters to subscribe to, each a table `{ filter = "sensors/+/temp",
    /// qos = 1 }`: the filter (`+` one level, `#` every level below) and the
    /// subscription's QoS, 0, 1 (the default) or 2.
    pub topics: Vec<TopicFilter>,
    /// The MQTT version: "3.1.1" or "5". MQTT 5 brings user properties (as headers),
    /// correlation data (as a message id), `session_expiry` and `receive_maximum`.
    #[serde(default)]
    pub protocol_version: ProtocolVersion,
    /// MQTT 5: how long the broker keeps the session (and queues for it) after the
    /// connection is gone. The default, a week, outlasts any restart; "0s" ends the
    /// session with the connection, and with it what arrives while the connector is
    /// down. (MQTT 3.1.1 sessions last until the broker's own limit.)
    #[serde(
        default = "default_session_expiry",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub session_expiry: Duration,
    /// MQTT 5: the most unacknowledged QoS 1/2 messages the broker may send at once.
    /// Acknowledgements wait for Iggy, so this bounds what one round of batches holds.
    #[serde(default = "default_receive_maximum")]
    pub receive_maximum: u16,
    /// Take each message's Iggy id from this top-level field of its JSON payload: a
    /// whole number, a UUID string or a decimal string. A publisher retrying with the
    /// same id then makes the same message id. A message without a usable one gets an
    /// id from Iggy, with a warning.
    #[serde(default)]
    pub message_id_field: Option<String>,
    /// MQTT 5: take each message's Iggy id from its correlation data (16 bytes, big
    /// endian, or a UUID or decimal text). Not with `message_id_field`.
    #[serde(default)]
    pub message_id_from_correlation_data: bool,
    /// The MQTT client id; default `iggy-connectors-<connector key>`. The broker keeps
    /// a persistent session under it: two connectors must not share one.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Start a new session on every connection: what arrived while the connector was
    /// away, and what was not acknowledged, is dropped by the broker. Off by default
    /// (a persistent session), which is what makes QoS 1/2 lossless across restarts.
    /// With MQTT 5 it also ends the session with the connection (`session_expiry` 0).
    #[serde(default)]
    pub clean_session: bool,
    /// User name, if the broker asks for one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    #[schemars(extend("x-secret" = true))]
    pub password: Option<String>,
    /// Interval of keep-alive pings (a duration, at least "1s"; "0s": none).
    #[serde(
        default = "default_keep_alive",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub keep_alive: Duration,
    /// How long to wait for the connection and the broker's CONNACK.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub connect_timeout: Duration,
    /// Pause before connecting again after the connection was lost.
    #[serde(
        default = "default_reconnect_delay",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub reconnect_delay: Duration,
    /// Most messages in one batch.
    #[serde(default = "default_batch_length")]
    pub batch_length: usize,
    /// How long a batch waits for more messages after its first one.
    #[serde(
        default = "default_linger_time",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub linger_time: Duration,
    /// The encoding of the payloads, the schema the batches are produced with.
    #[serde(default)]
    pub schema: PayloadSchema,
    /// The largest packet, in bytes, accepted; the broker's bigger messages break the
    /// connection.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: usize,
    /// PEM file of the certificate authorities trusted for `mqtts` (default: the
    /// web's public roots).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain, for brokers that ask for one.
    #[serde(default)]
    pub tls_client_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(default)]
    pub tls_client_key_file: Option<PathBuf>,
}

fn default_qos() -> u8 {
    1
}

fn default_session_expiry() -> Duration {
    Duration::from_secs(7 * 24 * 60 * 60)
}

fn default_receive_maximum() -> u16 {
    100
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_reconnect_delay() -> Duration {
    Duration::from_millis(500)
}

fn default_batch_length() -> usize {
    1000
}

fn default_linger_time() -> Duration {
    Duration::from_millis(5)
}

fn default_max_packet_size() -> usize {
    1 << 20
}

impl MqttSourceConfig {
    fn tls_files(&self) -> TlsFiles<'_> {
        TlsFiles {
            ca_file: self.tls_ca_file.as_deref(),
            client_cert_file: self.tls_client_cert_file.as_deref(),
            client_key_file: self.tls_client_key_file.as_deref(),
        }
    }

    fn id_from(&self) -> IdFrom {
        match (
            &self.message_id_field,
            self.message_id_from_correlation_data,
        ) {
            (Some(field), _) => IdFrom::JsonField(field.clone()),
            (None, true) => IdFrom::CorrelationData,
            (None, false) => IdFrom::Nothing,
        }
    }
}

fn qos_of(qos: u8) -> Option<QoS> {
    match qos {
        0 => Some(QoS::AtMostOnce),
        1 => Some(QoS::AtLeastOnce),
        2 => Some(QoS::ExactlyOnce),
        _ => None,
    }
}

/// A message as the driver hands it over: the connection it came on, and the message.
#[derive(Debug)]
struct Arrived {
    connection: u64,
    message: Received,
}

/// What the driver task sends to `poll`.
#[derive(Debug)]
enum FromDriver {
    Message(Arrived),
    /// The broker refused the login: retrying cannot help.
    Refused(String),
}

/// Subscribes to MQTT topics.
pub struct MqttSource {
    config: MqttSourceConfig,
    client: Client,
    id_from: IdFrom,
    /// The connection the driver is on, counted up as soon as one is lost.
    /// Acknowledgements go only on the connection their message came on: after a
    /// reconnect the broker sends what was not acknowledged again (a duplicate at
    /// worst), and an old packet id is not trusted to name the same message.
    connection: Arc<AtomicU64>,
    incoming: mpsc::Receiver<FromDriver>,
    /// Messages taken from the driver and not yet in a batch, oldest first: kept here
    /// so that a `poll` dropped while lingering loses nothing.
    buffer: VecDeque<Arrived>,
    /// When the batch being gathered must be returned.
    linger_until: Option<Instant>,
    /// The batches returned and not settled, oldest first, with what each must
    /// acknowledge and its messages (to produce again if rejected).
    unsettled: VecDeque<Vec<Arrived>>,
    /// Acknowledgements of accepted messages not yet handed to the client. Settling
    /// never waits for the client's request queue: the driver may be waiting for
    /// `poll` to take messages (its channel full), and `poll` only runs after the
    /// settle, so a settle that waited could wait forever. `poll` hands these over.
    acks: VecDeque<(u16, QoS)>,
    driver: tokio::task::JoinHandle<()>,
    /// Set by `close` before its DISCONNECT: only that one ends the driver.
    closing: Arc<AtomicBool>,
}

impl std::fmt::Debug for MqttSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSource")
            .field("url", &self.config.url)
            .field("buffered", &self.buffer.len())
            .field("unsettled", &self.unsettled.len())
            .finish_non_exhaustive()
    }
}

/// Messages the driver holds for `poll` before it stops reading from the broker: the
/// memory bound when the broker sends faster than Iggy stores (brokers do not reliably
/// keep to their in-flight limit, and QoS 0 has none).
const CHANNEL: usize = 16 * 1024;

/// Polls the event loop for as long as the source is open: connects, subscribes on
/// every connection, hands messages over, and reconnects after a pause when the
/// connection is lost.
async fn drive(
    mut events: Events,
    client: Client,
    filters: Vec<(String, QoS)>,
    connection: Arc<AtomicU64>,
    to_poll: mpsc::Sender<FromDriver>,
    reconnect_delay: Duration,
    closing: Arc<AtomicBool>,
) {
    let mut last_error: Option<String> = None;
    // Set once `close`'s DISCONNECT went out.
    let mut disconnecting = false;
    loop {
        let happening = events.next().await;
        if disconnecting {
            // Reads on until the broker closes the connection. Dropped at once, the
            // socket would be reset over what the broker sent meanwhile, and a reset
            // can make the broker discard the acknowledgements and the DISCONNECT
            // still unread in its buffer (seen: it kept the session's connection and
            // sent the acknowledged messages again). What arrives now is not
            // acknowledged, so it comes again next time.
            if matches!(happening, Happening::Lost { .. }) {
                return;
            }
            continue;
        }
        match happening {
            Happening::Connected { session_present } => {
                let number = connection.load(Ordering::Acquire);
                tracing::info!(
                    connection = number,
                    session_present,
                    "connected to the MQTT broker"
                );
                last_error = None;
                // Subscribing again on a resumed session changes nothing, and a session
                // the broker lost gets its subscriptions back.
                if let Err(error) = client.subscribe(&filters).await {
                    tracing::error!(error = %error, "cannot subscribe");
                }
            }
            Happening::Subscribed { refused } => {
                for index in refused {
                    if let Some((filter, _)) = filters.get(index) {
                        tracing::error!(filter = %filter, "the broker refused the subscription");
                    }
                }
            }
            Happening::Message(message) => {
                let arrived = Arrived {
                    connection: connection.load(Ordering::Acquire),
                    message,
                };
                if to_poll.send(FromDriver::Message(arrived)).await.is_err() {
                    return; // The source is closed.
                }
            }
            // `close` asked: the acknowledgements queued before it went out first.
            Happening::Disconnected if closing.load(Ordering::Acquire) => disconnecting = true,
            // The client's own, on a protocol error: the connection is lost with it
            // (the error comes next), and the driver reconnects.
            Happening::Disconnected => {
                tracing::warn!("the MQTT client disconnected on a protocol error");
            }
            Happening::Other => {}
            Happening::Lost { error, refused } => {
                // A new connection number at once, not at the next CONNACK: an
                // acknowledgement queued meanwhile would go out on the new connection.
                connection.fetch_add(1, Ordering::AcqRel);
                if refused {
                    let _ = to_poll
                        .send(FromDriver::Refused(format!("MQTT broker: {error}")))
                        .await;
                }
                // One warning per outage, not one per attempt.
                if last_error.as_deref() != Some(error.as_str()) {
                    tracing::warn!(error = %error, "MQTT connection lost; reconnecting");
                    last_error = Some(error);
                }
                // Paces reconnection attempts to a broker that is down.
                tokio::time::sleep(reconnect_delay).await;
            }
        }
    }
}

/// Iggy's bounds on a header's key and string value, in bytes.
const HEADER_BYTES: std::ops::RangeInclusive<usize> = 1..=255;

/// A string header, or `None` when the key or the value is outside what Iggy holds.
fn string_header(key: &str, value: &str) -> Option<OwnedHeader> {
    (HEADER_BYTES.contains(&key.len()) && HEADER_BYTES.contains(&value.len()))
        .then(|| OwnedHeader::string(key, value))
}

/// The names of the headers the source sets itself; a user property of one of these
/// names is left out.
const OWN_HEADERS: [&str; 3] = ["mqtt_topic", "mqtt_qos", "mqtt_retain"];

/// What a batch left out, said once per batch.
#[derive(Default)]
struct LeftOut {
    headers: usize,
    ids: usize,
    id_reason: Option<&'static str>,
}

impl MqttSource {
    fn produced(&self, message: &Received, left_out: &mut LeftOut) -> ProducedMessage {
        let mut headers = Vec::with_capacity(3 + message.user_properties.len());
        match string_header("mqtt_topic", &message.topic) {
            Some(header) => headers.push(header),
            None => left_out.headers += 1,
        }
        headers.push(OwnedHeader {
            key: "mqtt_qos".to_owned(),
            kind: HeaderKind::Uint8,
            value: vec![message.qos as u8],
        });
        headers.push(OwnedHeader {
            key: "mqtt_retain".to_owned(),
            kind: HeaderKind::Bool,
            value: vec![u8::from(message.retain)],
        });
        for (key, value) in &message.user_properties {
            let header = string_header(key, value).filter(|_| !OWN_HEADERS.contains(&key.as_str()));
            let Some(header) = header else {
                left_out.headers += 1;
                continue;
            };
            // A name sent twice keeps its last value: Iggy's headers are a map.
            match headers.iter_mut().find(|kept| kept.key == header.key) {
                Some(kept) => *kept = header,
                None => headers.push(header),
            }
        }
        let id = match message_id::message_id(
            &self.id_from,
            &message.payload,
            message.correlation_data.as_ref(),
        ) {
            Ok(id) => id,
            Err(reason) => {
                left_out.ids += 1;
                left_out.id_reason.get_or_insert(reason);
                None
            }
        };
        ProducedMessage {
            id,
            headers,
            // The client's received bytes, passed on without a copy.
            ..ProducedMessage::new(message.payload.clone())
        }
    }

    fn take(&mut self, message: FromDriver) -> Result<(), Error> {
        match message {
            FromDriver::Message(arrived) => {
                if self.buffer.is_empty() {
                    self.linger_until = Some(Instant::now() + self.config.linger_time);
                }
                self.buffer.push_back(arrived);
                Ok(())
            }
            FromDriver::Refused(text) => Err(Error::permanent(text)),
        }
    }

    /// Queues the acknowledgements of an accepted batch and hands over what the
    /// client's queue takes now.
    fn acknowledge(&mut self, batch: Vec<Arrived>) {
        let current = self.connection.load(Ordering::Acquire);
        for arrived in batch {
            // QoS 0 has nothing to acknowledge; a message of an earlier connection
            // comes again from the broker (a duplicate, never a loss), and its packet id
            // means nothing on this one.
            let message = &arrived.message;
            if message.qos != QoS::AtMostOnce && arrived.connection == current {
                self.acks.push_back((message.pkid, message.qos));
            }
        }
        self.hand_over_acks();
    }

    /// Hands queued acknowledgements to the client until its queue is full.
    fn hand_over_acks(&mut self) {
        while let Some(&(pkid, qos)) = self.acks.front() {
            if self.client.try_ack(pkid, qos).is_err() {
                return;
            }
            self.acks.pop_front();
        }
    }
}

impl Source for MqttSource {
    type Config = MqttSourceConfig;

    const MAX_UNSETTLED_BATCHES: u32 = 8;

    fn check_config(config: &MqttSourceConfig) -> Vec<String> {
        // The source never sends in-flight publishes of its own.
        let mut problems = connect::check(&config.url, &config.tls_files(), config.keep_alive, 1);
        if config.topics.is_empty() {
            problems.push("plugin_config.topics: at least one topic filter".to_owned());
        }
        for (index, topic) in config.topics.iter().enumerate() {
            if qos_of(topic.qos).is_none() {
                problems.push(format!(
                    "plugin_config.topics[{index}].qos: expected 0, 1 or 2, got {}",
                    topic.qos
                ));
            }
            if !rumqttc::valid_filter(&topic.filter) {
                problems.push(format!(
                    "plugin_config.topics[{index}].filter: `{}` is not a valid filter",
                    topic.filter
                ));
            }
        }
        if config.batch_length == 0 {
            problems.push("plugin_config.batch_length: at least 1".to_owned());
        }
        let v5 = config.protocol_version == ProtocolVersion::V5;
        if let Err(problem) = protocol::session_expiry_seconds(config.session_expiry) {
            problems.push(format!("plugin_config.session_expiry: {problem}"));
        }
        if config.receive_maximum == 0 {
            problems.push("plugin_config.receive_maximum: at least 1".to_owned());
        }
        if !v5 {
            // Accepted and then ignored, they would promise what 3.1.1 cannot do.
            if config.session_expiry != default_session_expiry() {
                problems.push(
                    "plugin_config.session_expiry: MQTT 5's; with 3.1.1 a session lasts until the broker's own limit (clean_session = true ends it with the connection)".to_owned(),
                );
            }
            if config.receive_maximum != default_receive_maximum() {
                problems.push(
                    "plugin_config.receive_maximum: MQTT 5's; set protocol_version = \"5\""
                        .to_owned(),
                );
            }
        }
        if config.message_id_from_correlation_data {
            if !v5 {
                problems.push(
                    "plugin_config.message_id_from_correlation_data: correlation data is MQTT 5's; set protocol_version = \"5\"".to_owned(),
                );
            }
            if config.message_id_field.is_some() {
                problems.push(
                    "plugin_config.message_id_field: not together with message_id_from_correlation_data; one source of ids".to_owned(),
                );
            }
        }
        if config.message_id_field.as_deref() == Some("") {
            problems.push("plugin_config.message_id_field: a field name, not empty".to_owned());
        }
        problems
    }

    async fn open(
        config: MqttSourceConfig,
        context: ConnectorContext,
        _state: Option<Vec<u8>>,
    ) -> Result<Self, Error> {
        if let Some(problem) = Self::check_config(&config).into_iter().next() {
            return Err(Error::invalid_config(problem));
        }
        let url = BrokerUrl::parse(&config.url).map_err(Error::invalid_config)?;
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("iggy-connectors-{}", context.key));
        let connection = Connection {
            url: &url,
            client_id: &client_id,
            username: config.username.as_deref(),
            password: config.password.as_deref(),
            keep_alive: config.keep_alive,
            connect_timeout: config.connect_timeout,
            clean_session: config.clean_session,
            max_inflight: 100,
            max_packet_size: config.max_packet_size,
            tls: config.tls_files(),
        };
        let session = Session {
            version: config.protocol_version,
            // A clean session is one that ends with its connection, in MQTT 5 terms
            // too: else the broker would keep (and queue for) a session no connection
            // resumes.
            session_expiry: if config.clean_session {
                None
            } else {
                protocol::session_expiry_seconds(config.session_expiry)
                    .map_err(Error::invalid_config)?
            },
            receive_maximum: config.receive_maximum,
            // Room for the acknowledgements of every batch that may be unsettled, so
            // that handing them over rarely waits (see `acks`).
            requests: (Self::MAX_UNSETTLED_BATCHES as usize * config.batch_length).max(1024),
        };
        // Acknowledged by `on_batch_result`, once Iggy stored the message.
        let (client, events) =
            protocol::connect(&connection, &session).map_err(Error::invalid_config)?;
        let filters = config
            .topics
            .iter()
            .filter_map(|topic| qos_of(topic.qos).map(|qos| (topic.filter.clone(), qos)))
            .collect();
        let counter = Arc::new(AtomicU64::new(0));
        let (to_poll, incoming) = mpsc::channel(CHANNEL);
        // The event loop must run between calls too (keep-alive, acknowledgements), so
        // it gets a task of its own on the instance's executor.
        let closing = Arc::new(AtomicBool::new(false));
        let driver = tokio::spawn(drive(
            events,
            client.clone(),
            filters,
            counter.clone(),
            to_poll,
            config.reconnect_delay,
            closing.clone(),
        ));
        tracing::info!(host = %url.host, port = url.port, client_id = %client_id, topics = config.topics.len(), protocol_version = ?config.protocol_version, "mqtt source opened");
        Ok(MqttSource {
            id_from: config.id_from(),
            config,
            client,
            connection: counter,
            incoming,
            buffer: VecDeque::new(),
            linger_until: None,
            unsettled: VecDeque::new(),
            acks: VecDeque::new(),
            driver,
            closing,
        })
    }

    async fn poll(&mut self) -> Result<ProducedBatch, Error> {
        // Everything taken from the channel goes into `self.buffer` at once, so a poll
        // dropped at any await loses nothing.
        while self.buffer.len() < self.config.batch_length {
            self.hand_over_acks();
            let deadline = self.linger_until;
            let acks_waiting = !self.acks.is_empty();
            tokio::select! {
                // Acknowledgements the client's queue had no room for: the broker may
                // send nothing more until it has them, so try again soon. (`try_ack`
                // only: a cancelled `ack().await` may still deliver its request, and a
                // second PUBACK could acknowledge a later message under a reused id.)
                () = tokio::time::sleep(Duration::from_millis(1)), if acks_waiting => {}
                message = self.incoming.recv() => match message {
                    Some(message) => self.take(message)?,
                    None => return Err(Error::permanent("the MQTT driver task stopped")),
                },
                () = async {
                    match deadline {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                } => break,
            }
        }
        let take = self.buffer.len().min(self.config.batch_length);
        let batch: Vec<Arrived> = self.buffer.drain(..take).collect();
        self.linger_until = if self.buffer.is_empty() {
            None
        } else {
            // What is left over is already late: the next batch goes out at once.
            Some(Instant::now())
        };
        let mut left_out = LeftOut::default();
        let messages = batch
            .iter()
            .map(|arrived| self.produced(&arrived.message, &mut left_out))
            .collect();
        if left_out.headers > 0 {
            tracing::warn!(
                left_out = left_out.headers,
                "topics or user properties Iggy headers cannot hold (1 to 255 bytes, not the source's own names) were left out"
            );
        }
        if let Some(reason) = left_out.id_reason {
            tracing::warn!(
                messages = left_out.ids,
                reason,
                "messages without a usable id got one from Iggy"
            );
        }
        self.unsettled.push_back(batch);
        Ok(ProducedBatch {
            schema: match self.config.schema {
                PayloadSchema::Json => Schema::Json,
                PayloadSchema::Text => Schema::Text,
                PayloadSchema::Raw => Schema::Raw,
            },
            messages,
            // The broker's session is the cursor: nothing to keep here.
            state: None,
        })
    }

    async fn on_batch_result(&mut self, outcome: BatchOutcome) -> Result<(), Error> {
        match outcome {
            BatchOutcome::Accepted => {
                let batch = self.unsettled.pop_front().ok_or_else(|| {
                    Error::permanent("a batch was accepted but none is unsettled")
                })?;
                self.acknowledge(batch);
            }
            BatchOutcome::Rejected => {
                // The rejected batch and every later unsettled one come again, in order,
                // before anything newer.
                let mut again: VecDeque<Arrived> = self.unsettled.drain(..).flatten().collect();
                again.append(&mut self.buffer);
                self.buffer = again;
                if !self.buffer.is_empty() {
                    self.linger_until = Some(Instant::now());
                }
            }
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), Error> {
        // The DISCONNECT queues behind the acknowledgements of accepted batches, so
        // waiting for the driver to send it sends those too (else the broker sends
        // their messages again next time). A persistent session stays with the broker
        // either way. A broker that is down holds the close up for a second at most.
        self.hand_over_acks();
        self.closing.store(true, Ordering::Release);
        if self.client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.driver).await;
        }
        self.driver.abort();
        Ok(())
    }
}

impl Drop for MqttSource {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

connector_sdk::export_source!(MqttSource, "mqtt_source");
