//! The `mqtt_sink` connector: publishes each message to an MQTT broker (MQTT 3.1.1 or
//! 5; with 5 the message's headers go as user properties).
//!
//! Each message's payload is published as is, to the topic its `topic` template names:
//! a fixed topic, or one with `{name}` placeholders filled from the message's header
//! `name`, else from the top-level field `name` of its JSON payload
//! (`devices/{device_id}/commands`). A message the template cannot be filled for is a
//! permanent error naming its offset, found before anything of the batch is published.
//!
//! Delivery: `consume` returns `Ok` only once the broker acknowledged every publish of
//! the batch (PUBACK for QoS 1, PUBCOMP for QoS 2; QoS 0 once written to the socket).
//! A lost connection, a broker that does not answer within `ack_timeout`, or one that
//! cannot be reached is a retryable error: the runtime retries the batch (publishing it
//! again, so a consumer may see a message twice: at least once) and stores no offset
//! until a `consume` succeeded. The connection of a failed attempt is dropped with what
//! it had in flight, and the next attempt connects again.

mod connect;
mod session;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use connector_sdk::{ConnectorContext, Error, HeaderKind, Message, MessageBatch, Sink};
use rumqttc::QoS;
use serde::{Deserialize, Serialize};

pub use connect::BrokerUrl;
use connect::{Connection, TlsFiles};
pub use session::ProtocolVersion;
use session::{Happened, Session};

/// The sink's `plugin_config`.
///
/// Each message's payload is published as is; a batch counts as delivered only once
/// the broker acknowledged every publish of it (QoS 1 and 2). A broker that is down or
/// slow fails the batch retryably: the runtime retries it and stores no offset, so
/// nothing is lost and a message may be published twice.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkConfig {
    /// The broker: `mqtt://host:port` (default port 1883) or `mqtts://host:port` for
    /// TLS (default port 8883).
    pub url: String,
    /// The topic to publish to: fixed, or with `{name}` placeholders filled from the
    /// message's header `name`, else from the top-level field `name` of its JSON payload
    /// (e.g. `devices/{device_id}/commands`). A filled-in value may not be empty nor
    /// hold `/`, `+` or `#`.
    pub topic: String,
    /// The QoS of every publish: 0 (at most once), 1 (at least once) or 2 (exactly
    /// once between the connector and the broker). With 1 and 2 a batch counts as
    /// delivered only once the broker acknowledged all of it.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Set the retain flag on every publish (the broker keeps the last message of each
    /// topic for new subscribers).
    #[serde(default)]
    pub retain: bool,
    /// The MQTT version: "3.1.1" or "5". With MQTT 5 each message's headers go as user
    /// properties (numbers and booleans as text; raw bytes that are not UTF-8 are left
    /// out with a warning), and a broker that refuses a message in its PUBACK or PUBREC
    /// says why (not authorised, bad topic or payload: the message's own error for the
    /// error policy; quota exceeded and the like: retried).
    #[serde(default)]
    pub protocol_version: ProtocolVersion,
    /// The MQTT client id; default `iggy-connectors-<connector key>`.
    #[serde(default)]
    pub client_id: Option<String>,
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
    /// How long one batch may take, connecting and waiting for the broker's
    /// acknowledgements included, before it fails (retryably).
    #[serde(
        default = "default_ack_timeout",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub ack_timeout: Duration,
    /// Publishes awaiting the broker's acknowledgement at once (QoS 1 and 2).
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// The largest packet, in bytes, sent or accepted; a bigger message fails its batch.
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

fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_inflight() -> u16 {
    100
}

fn default_max_packet_size() -> usize {
    1 << 20
}

impl MqttSinkConfig {
    fn tls_files(&self) -> TlsFiles<'_> {
        TlsFiles {
            ca_file: self.tls_ca_file.as_deref(),
            client_cert_file: self.tls_client_cert_file.as_deref(),
            client_key_file: self.tls_client_key_file.as_deref(),
        }
    }
}

/// A QoS number as the client's type.
pub fn qos_of(qos: u8) -> Option<QoS> {
    match qos {
        0 => Some(QoS::AtMostOnce),
        1 => Some(QoS::AtLeastOnce),
        2 => Some(QoS::ExactlyOnce),
        _ => None,
    }
}

/// A topic template, parsed once: literal text and `{name}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

impl TopicTemplate {
    /// Parses a template; `{` and `}` only delimit placeholders.
    pub fn parse(template: &str) -> Result<TopicTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(format!("`{template}`: `}}` without `{{`"));
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("`{template}`: `{{` without `}}`"))?;
            let name = &after[..close];
            if name.is_empty() || name.contains('{') {
                return Err(format!("`{template}`: empty or nested placeholder"));
            }
            parts.push(Part::Field(name.to_owned()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        let literal: String = parts
            .iter()
            .filter_map(|part| match part {
                Part::Text(text) => Some(text.as_str()),
                Part::Field(_) => None,
            })
            .collect();
        if parts.is_empty() {
            return Err("the topic is empty".to_owned());
        }
        if literal.contains(['+', '#', '\0']) {
            return Err(format!(
                "`{template}`: a topic to publish to may not hold `+`, `#` or NUL"
            ));
        }
        Ok(TopicTemplate { parts })
    }

    /// The topic when the template has no placeholder.
    pub fn fixed(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// The topic for `message`: placeholders from its headers, else its JSON fields.
    pub fn resolve(&self, message: &Message<'_>) -> Result<String, String> {
        if let Some(fixed) = self.fixed() {
            return Ok(fixed.to_owned());
        }
        // The payload is parsed at most once, and only if a header does not answer.
        let mut json: Option<Option<serde_json::Map<String, serde_json::Value>>> = None;
        let mut topic = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => topic.push_str(text),
                Part::Field(name) => {
                    let value = match message.header(name).and_then(|h| header_text(&h)) {
                        Some(value) => value,
                        None => {
                            let fields = json.get_or_insert_with(|| {
                                serde_json::from_slice(message.payload()).ok()
                            });
                            let field = fields.as_ref().and_then(|fields| fields.get(name));
                            match field {
                                Some(serde_json::Value::String(text)) => text.clone(),
                                Some(serde_json::Value::Number(number)) => number.to_string(),
                                Some(serde_json::Value::Bool(flag)) => flag.to_string(),
                                _ => {
                                    return Err(format!(
                                        "no header nor top-level JSON field `{name}` (a string, number or bool) for the topic"
                                    ));
                                }
                            }
                        }
                    };
                    if value.is_empty() || value.contains(['/', '+', '#', '\0']) {
                        return Err(format!(
                            "`{name}` is `{value}`, which cannot be a topic level (empty, or holds `/`, `+`, `#` or NUL)"
                        ));
                    }
                    topic.push_str(&value);
                }
            }
        }
        Ok(topic)
    }
}

/// A header's value as text: strings and raw UTF-8 as they are, integers, floats and
/// bools in decimal (Iggy stores them little-endian); `None` for raw bytes that are not
/// UTF-8.
fn header_text(header: &connector_sdk::Header<'_>) -> Option<String> {
    let value = header.value;
    let int = |bytes: &[u8], signed: bool| -> Option<String> {
        let mut buffer = [0u8; 16];
        if bytes.is_empty() || bytes.len() > 16 {
            return None;
        }
        // Sign-extend so that a negative narrow integer stays negative in i128.
        let fill = if signed && bytes[bytes.len() - 1] & 0x80 != 0 {
            0xff
        } else {
            0
        };
        buffer.fill(fill);
        buffer[..bytes.len()].copy_from_slice(bytes);
        Some(if signed {
            i128::from_le_bytes(buffer).to_string()
        } else {
            u128::from_le_bytes(buffer).to_string()
        })
    };
    match HeaderKind::from_code(header.kind)? {
        HeaderKind::String | HeaderKind::Raw => std::str::from_utf8(value).ok().map(str::to_owned),
        HeaderKind::Bool => value.first().map(|byte| (*byte != 0).to_string()),
        HeaderKind::Int8
        | HeaderKind::Int16
        | HeaderKind::Int32
        | HeaderKind::Int64
        | HeaderKind::Int128 => int(value, true),
        HeaderKind::Uint8
        | HeaderKind::Uint16
        | HeaderKind::Uint32
        | HeaderKind::Uint64
        | HeaderKind::Uint128 => int(value, false),
        HeaderKind::Float32 => <[u8; 4]>::try_from(value)
            .ok()
            .map(|bytes| f32::from_le_bytes(bytes).to_string()),
        HeaderKind::Float64 => <[u8; 8]>::try_from(value)
            .ok()
            .map(|bytes| f64::from_le_bytes(bytes).to_string()),
    }
}

/// Publishes messages to an MQTT broker.
pub struct MqttSink {
    config: MqttSinkConfig,
    url: BrokerUrl,
    client_id: String,
    template: TopicTemplate,
    qos: QoS,
    session: Option<Session>,
    /// Each message's topic, payload and (MQTT 5) user properties, reused between
    /// batches.
    publishes: Vec<Publish>,
}

impl std::fmt::Debug for MqttSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSink")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("connected", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

/// One message to publish.
struct Publish {
    topic: String,
    payload: Bytes,
    user_properties: Vec<(String, String)>,
}

impl MqttSink {
    fn connection(&self) -> Connection<'_> {
        Connection {
            url: &self.url,
            client_id: &self.client_id,
            username: self.config.username.as_deref(),
            password: self.config.password.as_deref(),
            keep_alive: self.config.keep_alive,
            connect_timeout: self.config.ack_timeout,
            clean_session: true,
            max_inflight: self.config.max_inflight,
            max_packet_size: self.config.max_packet_size,
            tls: self.config.tls_files(),
        }
    }

    /// The open session, connecting first (up to the CONNACK) if there is none.
    async fn session(&mut self) -> Result<&mut Session, Error> {
        if self.session.is_none() {
            let mut session = Session::new(&self.connection(), self.config.protocol_version)
                .map_err(Error::invalid_config)?;
            loop {
                match session.poll().await {
                    Ok(Happened::Connected) => break,
                    Ok(_) => {}
                    Err(lost) => return Err(connection_error(&self.url, lost)),
                }
            }
            tracing::info!(host = %self.url.host, port = self.url.port, client_id = %self.client_id, protocol_version = ?self.config.protocol_version, "connected to the MQTT broker");
            self.session = Some(session);
        }
        self.session
            .as_mut()
            .ok_or_else(|| Error::retryable("no MQTT session"))
    }

    /// Publishes `self.publishes` and waits until the broker has them all.
    async fn publish_all(&mut self) -> Result<(), Error> {
        let qos = self.qos;
        let retain = self.config.retain;
        let url = self.url.clone();
        let ack_timeout = self.config.ack_timeout;
        let mut publishes = std::mem::take(&mut self.publishes);
        let result = async {
            let session = self.session().await?;
            let total = publishes.len();
            let mut queued = 0;
            let mut written = 0;
            // Packet ids of QoS 1/2 publishes written and not yet acknowledged. Every
            // batch waits for all of its own, so none is left over for the next batch.
            let mut unacknowledged = HashSet::new();
            loop {
                while queued < total {
                    let publish = &mut publishes[queued];
                    let queue = session.try_publish(
                        &publish.topic,
                        qos,
                        retain,
                        std::mem::take(&mut publish.payload),
                        &publish.user_properties,
                    );
                    match queue {
                        Ok(None) => queued += 1,
                        // The queue is full: keep the payload, drain, then try again.
                        Ok(Some(payload)) => {
                            publish.payload = payload;
                            break;
                        }
                        Err(error) => {
                            return Err(Error::retryable(format!(
                                "cannot queue a publish: {error}"
                            )));
                        }
                    }
                }
                if written == total && unacknowledged.is_empty() {
                    return Ok(());
                }
                match session.poll().await {
                    Ok(Happened::Written(pkid)) => {
                        written += 1;
                        if pkid != 0 {
                            unacknowledged.insert(pkid);
                        }
                    }
                    Ok(Happened::Acknowledged { pkid, refused }) => {
                        unacknowledged.remove(&pkid);
                        if let Some(refused) = refused {
                            let text = format!(
                                "the MQTT broker refused a message of the batch: {}",
                                refused.reason
                            );
                            // The runtime splits a batch that fails for good, which
                            // finds the message for the error policy.
                            return Err(if refused.permanent {
                                Error::permanent(text)
                            } else {
                                Error::retryable(text)
                            });
                        }
                    }
                    Ok(_) => {}
                    Err(lost) => return Err(connection_error(&url, lost)),
                }
            }
        };
        let result = match tokio::time::timeout(ack_timeout, result).await {
            Ok(result) => result,
            Err(_) => Err(Error::retryable(format!(
                "the MQTT broker at {}:{} did not acknowledge the batch within {}",
                url.host,
                url.port,
                connector_sdk::duration::format_duration(ack_timeout)
            ))),
        };
        // Keep the buffers (emptied by the publishes) for the next batch.
        publishes.clear();
        self.publishes = publishes;
        if result.is_err() {
            // What the failed connection had in flight goes with it: the runtime
            // retries the whole batch on a fresh connection.
            self.session = None;
        }
        result
    }
}

fn connection_error(url: &BrokerUrl, lost: session::Lost) -> Error {
    let text = format!("MQTT broker {}:{}: {}", url.host, url.port, lost.error);
    if lost.refused {
        Error::permanent(text)
    } else {
        Error::retryable(text)
    }
}

impl Sink for MqttSink {
    type Config = MqttSinkConfig;

    fn check_config(config: &MqttSinkConfig) -> Vec<String> {
        let mut problems = connect::check(
            &config.url,
            &config.tls_files(),
            config.keep_alive,
            config.max_inflight,
        );
        if let Err(problem) = TopicTemplate::parse(&config.topic) {
            problems.push(format!("plugin_config.topic: {problem}"));
        }
        if qos_of(config.qos).is_none() {
            problems.push(format!(
                "plugin_config.qos: expected 0, 1 or 2, got {}",
                config.qos
            ));
        }
        if config.ack_timeout < Duration::from_millis(1) {
            problems.push("plugin_config.ack_timeout: must be above zero".to_owned());
        }
        problems
    }

    async fn open(config: MqttSinkConfig, context: ConnectorContext) -> Result<Self, Error> {
        if let Some(problem) = Self::check_config(&config).into_iter().next() {
            return Err(Error::invalid_config(problem));
        }
        let url = BrokerUrl::parse(&config.url).map_err(Error::invalid_config)?;
        let template = TopicTemplate::parse(&config.topic).map_err(Error::invalid_config)?;
        let qos = qos_of(config.qos)
            .ok_or_else(|| Error::invalid_config("plugin_config.qos: expected 0, 1 or 2"))?;
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("iggy-connectors-{}", context.key));
        let mut sink = MqttSink {
            config,
            url,
            client_id,
            template,
            qos,
            session: None,
            publishes: Vec::new(),
        };
        // Connect now to report a refused login at once; a broker that is down is
        // only a warning: each batch connects again until it answers.
        match tokio::time::timeout(sink.config.ack_timeout, sink.session()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) if error.kind() != connector_sdk::ErrorKind::Retryable => {
                return Err(error);
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error.message(), "MQTT broker not reachable yet; batches will retry");
            }
            Err(_) => {
                tracing::warn!(host = %sink.url.host, port = sink.url.port, "MQTT broker did not answer in time; batches will retry");
            }
        }
        tracing::info!(topic = %sink.config.topic, qos = sink.config.qos, retain = sink.config.retain, "mqtt sink opened");
        Ok(sink)
    }

    async fn consume(&mut self, batch: MessageBatch<'_>) -> Result<(), Error> {
        // Every topic first: a message that cannot have one fails the batch before any
        // of it is published.
        self.publishes.clear();
        let mut left_out = 0usize;
        for message in batch.messages {
            let topic = self.template.resolve(message).map_err(|problem| {
                Error::permanent(format!(
                    "message at offset {} of {}/{} partition {}: {problem}",
                    message.offset(),
                    batch.stream,
                    batch.topic,
                    batch.partition_id
                ))
            })?;
            let user_properties = match self.config.protocol_version {
                ProtocolVersion::V311 => Vec::new(),
                ProtocolVersion::V5 => {
                    let mut properties = Vec::with_capacity(message.headers().len());
                    for header in message.headers() {
                        match header_text(&header) {
                            Some(text) => properties.push((header.key.to_owned(), text)),
                            None => left_out += 1,
                        }
                    }
                    properties
                }
            };
            self.publishes.push(Publish {
                topic,
                payload: Bytes::copy_from_slice(message.payload()),
                user_properties,
            });
        }
        if left_out > 0 {
            tracing::warn!(
                headers = left_out,
                "headers with no text form (raw bytes that are not UTF-8) were not sent as user properties"
            );
        }
        if self.publishes.is_empty() {
            return Ok(());
        }
        let count = self.publishes.len();
        self.publish_all().await.inspect_err(|error| {
            tracing::warn!(messages = count, error = %error.message(), "MQTT batch not delivered");
        })
    }

    async fn close(&mut self) -> Result<(), Error> {
        if let Some(mut session) = self.session.take() {
            // A clean DISCONNECT, so the broker drops the session at once; best effort.
            if session.try_disconnect() {
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Ok(happened) = session.poll().await {
                        if matches!(happened, Happened::Disconnected) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        Ok(())
    }
}

connector_sdk::export_sink!(MqttSink, "mqtt_sink");

#[cfg(test)]
mod tests {
    use connector_sdk::testing::{TestBatch, TestMessage};
    use connector_sdk::{OwnedHeader, Schema};

    use super::*;

    fn topics(template: &str, batch: &TestBatch) -> Vec<Result<String, String>> {
        let template = TopicTemplate::parse(template).expect("parses");
        batch.view_with(|batch| batch.messages.iter().map(|m| template.resolve(m)).collect())
    }

    #[test]
    fn placeholders_come_from_headers_first_then_json_fields() {
        let batch = TestBatch::new()
            .schema(Schema::Json)
            .message(TestMessage::json(
                serde_json::json!({"device_id": "d1", "n": 7}),
            ))
            .message(
                TestMessage::json(serde_json::json!({"device_id": "from-json"}))
                    .header(OwnedHeader::string("device_id", "from-header")),
            )
            .message(TestMessage::json(serde_json::json!({"device_id": 42})));
        let resolved = topics("devices/{device_id}/commands", &batch);
        assert_eq!(
            resolved,
            vec![
                Ok("devices/d1/commands".to_owned()),
                Ok("devices/from-header/commands".to_owned()),
                Ok("devices/42/commands".to_owned()),
            ]
        );
    }

    #[test]
    fn a_missing_or_unsafe_value_is_refused() {
        let batch = TestBatch::new()
            .message(TestMessage::json(serde_json::json!({"other": 1})))
            .message(TestMessage::new("not json"))
            .message(TestMessage::json(serde_json::json!({"device_id": "a/b"})))
            .message(TestMessage::json(serde_json::json!({"device_id": "#"})))
            .message(TestMessage::json(serde_json::json!({"device_id": ""})));
        for resolved in topics("d/{device_id}", &batch) {
            assert!(resolved.is_err(), "{resolved:?}");
        }
    }

    #[test]
    fn number_headers_read_as_decimals() {
        let negative = OwnedHeader {
            key: "n".into(),
            kind: HeaderKind::Int16,
            value: (-3i16).to_le_bytes().to_vec(),
        };
        let big = OwnedHeader {
            key: "n".into(),
            kind: HeaderKind::Uint64,
            value: u64::MAX.to_le_bytes().to_vec(),
        };
        let float = OwnedHeader {
            key: "n".into(),
            kind: HeaderKind::Float64,
            value: 2.5f64.to_le_bytes().to_vec(),
        };
        let batch = TestBatch::new()
            .message(TestMessage::new("x").header(negative))
            .message(TestMessage::new("x").header(big))
            .message(TestMessage::new("x").header(float));
        assert_eq!(
            topics("t/{n}", &batch),
            vec![
                Ok("t/-3".to_owned()),
                Ok(format!("t/{}", u64::MAX)),
                Ok("t/2.5".to_owned())
            ]
        );
    }

    #[test]
    fn templates_parse_or_say_what_is_wrong() {
        assert_eq!(
            TopicTemplate::parse("a/b").expect("fixed").fixed(),
            Some("a/b")
        );
        assert!(
            TopicTemplate::parse("a/{x}/b")
                .expect("placeholder")
                .fixed()
                .is_none()
        );
        for bad in ["", "a/{", "a/}", "a/{}", "a/+/b", "a/#", "{a{b}}"] {
            assert!(TopicTemplate::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
