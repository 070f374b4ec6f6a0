//! The `mqtt_source` connector: subscribes to MQTT topic filters (MQTT 3.1.1) and
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
//! `mqtt_retain` (bool). A batch holds up to `batch_length` messages, or what arrived
//! within `linger_time` of its first message.
//!
//! What a crash can repeat is what Iggy stored and the broker was not yet told: the
//! batches produced and not settled, at most `MAX_UNSETTLED_BATCHES` (8) times
//! `batch_length` messages (acknowledgements go to the client as soon as a batch is
//! settled). The broker's own in-flight limit is no bound to count on: Mosquitto 2.0.11
//! keeps to `max_inflight_messages` only until acknowledgements flow, and was seen with
//! over 9000 QoS 1 messages unacknowledged under a limit of 100.

#[path = "../../../sinks/mqtt/src/connect.rs"]
mod connect;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use connector_sdk::{
    BatchOutcome, ConnectorContext, Error, HeaderKind, OwnedHeader, ProducedBatch, ProducedMessage,
    Schema, Source,
};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS, SubscribeFilter};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use connect::{BrokerUrl, Connection, TlsFiles};

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
/// `mqtt_retain` (bool); the payload is passed as is. After a crash, at most 8 times
/// `batch_length` messages (the batches not yet settled) are produced again.
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
    /// The MQTT client id; default `iggy-connectors-<connector key>`. The broker keeps
    /// a persistent session under it: two connectors must not share one.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Start a new session on every connection: what arrived while the connector was
    /// away, and what was not acknowledged, is dropped by the broker. Off by default
    /// (a persistent session), which is what makes QoS 1/2 lossless across restarts.
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
}

fn qos_of(qos: u8) -> Option<QoS> {
    match qos {
        0 => Some(QoS::AtMostOnce),
        1 => Some(QoS::AtLeastOnce),
        2 => Some(QoS::ExactlyOnce),
        _ => None,
    }
}

/// A message as the driver hands it over: the connection it came on, and the publish.
#[derive(Debug)]
struct Arrived {
    connection: u64,
    publish: Publish,
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
    client: AsyncClient,
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
    acks: VecDeque<Publish>,
    driver: tokio::task::JoinHandle<()>,
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
    mut events: EventLoop,
    client: AsyncClient,
    filters: Vec<SubscribeFilter>,
    connection: Arc<AtomicU64>,
    to_poll: mpsc::Sender<FromDriver>,
    reconnect_delay: Duration,
) {
    let mut last_error: Option<String> = None;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let number = connection.load(Ordering::Acquire);
                tracing::info!(
                    connection = number,
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                last_error = None;
                // Subscribing again on a resumed session changes nothing, and a session
                // the broker lost gets its subscriptions back.
                if let Err(error) = client.subscribe_many(filters.clone()).await {
                    tracing::error!(error = %error, "cannot subscribe");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                for (filter, code) in filters.iter().zip(&ack.return_codes) {
                    if matches!(code, rumqttc::SubscribeReasonCode::Failure) {
                        tracing::error!(filter = %filter.path, "the broker refused the subscription");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let arrived = Arrived {
                    connection: connection.load(Ordering::Acquire),
                    publish,
                };
                if to_poll.send(FromDriver::Message(arrived)).await.is_err() {
                    return; // The source is closed.
                }
            }
            // `close` asked: the acknowledgements queued before it went out first.
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(error) => {
                // A new connection number at once, not at the next CONNACK: an
                // acknowledgement queued meanwhile would go out on the new connection.
                connection.fetch_add(1, Ordering::AcqRel);
                if connect::is_refusal(&error) {
                    let _ = to_poll
                        .send(FromDriver::Refused(format!("MQTT broker: {error}")))
                        .await;
                }
                let text = error.to_string();
                // One warning per outage, not one per attempt.
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "MQTT connection lost; reconnecting");
                    last_error = Some(text);
                }
                // Paces reconnection attempts to a broker that is down.
                tokio::time::sleep(reconnect_delay).await;
            }
        }
    }
}

impl MqttSource {
    fn produced(publish: &Publish) -> ProducedMessage {
        let qos = publish.qos as u8;
        ProducedMessage {
            headers: vec![
                OwnedHeader::string("mqtt_topic", publish.topic.clone()),
                OwnedHeader {
                    key: "mqtt_qos".to_owned(),
                    kind: HeaderKind::Uint8,
                    value: vec![qos],
                },
                OwnedHeader {
                    key: "mqtt_retain".to_owned(),
                    kind: HeaderKind::Bool,
                    value: vec![u8::from(publish.retain)],
                },
            ],
            // The client's received bytes, passed on without a copy.
            ..ProducedMessage::new(publish.payload.clone())
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
            if arrived.publish.qos != QoS::AtMostOnce && arrived.connection == current {
                let mut ack = Publish::new("", arrived.publish.qos, Vec::new());
                ack.pkid = arrived.publish.pkid;
                self.acks.push_back(ack);
            }
        }
        self.hand_over_acks();
    }

    /// Hands queued acknowledgements to the client until its queue is full.
    fn hand_over_acks(&mut self) {
        while let Some(ack) = self.acks.front() {
            if self.client.try_ack(ack).is_err() {
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
        let mut options = connection.options().map_err(Error::invalid_config)?;
        // Acknowledged by `on_batch_result`, once Iggy stored the message.
        options.set_manual_acks(true);
        // Room for the acknowledgements of every batch that may be unsettled, so that
        // handing them over rarely waits (see `acks`).
        let requests = (Self::MAX_UNSETTLED_BATCHES as usize * config.batch_length).max(1024);
        let (client, mut events) = AsyncClient::new(options, requests);
        events.set_network_options(connection.network_options());
        let filters = config
            .topics
            .iter()
            .filter_map(|topic| {
                qos_of(topic.qos).map(|qos| SubscribeFilter::new(topic.filter.clone(), qos))
            })
            .collect();
        let counter = Arc::new(AtomicU64::new(0));
        let (to_poll, incoming) = mpsc::channel(CHANNEL);
        // The event loop must run between calls too (keep-alive, acknowledgements), so
        // it gets a task of its own on the instance's executor.
        let driver = tokio::spawn(drive(
            events,
            client.clone(),
            filters,
            counter.clone(),
            to_poll,
            config.reconnect_delay,
        ));
        tracing::info!(host = %url.host, port = url.port, client_id = %client_id, topics = config.topics.len(), "mqtt source opened");
        Ok(MqttSource {
            config,
            client,
            connection: counter,
            incoming,
            buffer: VecDeque::new(),
            linger_until: None,
            unsettled: VecDeque::new(),
            acks: VecDeque::new(),
            driver,
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
        let messages = batch
            .iter()
            .map(|arrived| Self::produced(&arrived.publish))
            .collect();
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
