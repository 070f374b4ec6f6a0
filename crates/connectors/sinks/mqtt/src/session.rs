//! One connection to the broker in either MQTT version: rumqttc has a client and an
//! event loop per version, with their own packet types. The sink's delivery logic
//! (queue every publish, wait for every acknowledgement) sees only [`Session`] and the
//! [`Happened`] it reports.

use bytes::Bytes;
use rumqttc::v5;
use rumqttc::{AsyncClient, ClientError, Event, EventLoop, Outgoing, Packet, QoS};

pub use crate::connect::ProtocolVersion;
use crate::connect::{self, Connection, is_v5_refusal, v5_qos};

/// Requests the client queues before a publish is refused as "queue full"; the event
/// loop drains it while `consume` waits.
const REQUEST_QUEUE: usize = 1024;

/// A connection: the client that queues requests and the event loop that does the
/// I/O, driven by the sink inside `consume`, so acknowledgements are seen by the call
/// that waits for them.
pub enum Session {
    V311 {
        client: AsyncClient,
        events: Box<EventLoop>,
    },
    V5 {
        client: v5::AsyncClient,
        events: Box<v5::EventLoop>,
    },
}

/// What one turn of the event loop did.
pub enum Happened {
    Connected,
    /// A publish went out with this packet id (0 for QoS 0).
    Written(u16),
    /// The broker acknowledged a packet id; with MQTT 5, `refused` says why it did not
    /// take the message.
    Acknowledged {
        pkid: u16,
        refused: Option<Refusal>,
    },
    /// The requested DISCONNECT went out.
    Disconnected,
    Other,
}

/// An MQTT 5 acknowledgement that refuses the message.
#[derive(Debug)]
pub struct Refusal {
    pub reason: String,
    /// The message itself is the problem (not authorised, bad topic or payload): sent
    /// again it is refused again.
    pub permanent: bool,
}

/// The connection failed; `refused` when the broker refused the login.
pub struct Lost {
    pub error: String,
    pub refused: bool,
}

impl Session {
    /// A session for `connection`, not yet connected (the first `poll` connects).
    pub fn new(connection: &Connection<'_>, version: ProtocolVersion) -> Result<Session, String> {
        match version {
            ProtocolVersion::V311 => {
                let (client, mut events) = AsyncClient::new(connection.options()?, REQUEST_QUEUE);
                events.set_network_options(connection.network_options());
                Ok(Session::V311 {
                    client,
                    events: Box::new(events),
                })
            }
            ProtocolVersion::V5 => {
                let options = connection.options_v5()?;
                let (client, events) = v5::AsyncClient::new(options, REQUEST_QUEUE);
                Ok(Session::V5 {
                    client,
                    events: Box::new(events),
                })
            }
        }
    }

    /// Queues a publish. `Ok(None)` when queued; `Ok(Some(payload))` gives the payload
    /// back when the queue is full (drain, then try again).
    pub fn try_publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: Bytes,
        user_properties: &[(String, String)],
    ) -> Result<Option<Bytes>, String> {
        match self {
            Session::V311 { client, .. } => match client.try_publish(topic, qos, retain, payload) {
                Ok(()) => Ok(None),
                Err(ClientError::TryRequest(rumqttc::Request::Publish(publish))) => {
                    Ok(Some(publish.payload))
                }
                Err(error) => Err(error.to_string()),
            },
            Session::V5 { client, .. } => {
                let properties = v5::mqttbytes::v5::PublishProperties {
                    user_properties: user_properties.to_vec(),
                    ..Default::default()
                };
                match client.try_publish_with_properties(
                    topic,
                    v5_qos(qos),
                    retain,
                    payload,
                    properties,
                ) {
                    Ok(()) => Ok(None),
                    Err(v5::ClientError::TryRequest(v5::Request::Publish(publish))) => {
                        Ok(Some(publish.payload))
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
        }
    }

    /// Turns the event loop once (connecting first when not connected).
    pub async fn poll(&mut self) -> Result<Happened, Lost> {
        match self {
            Session::V311 { events, .. } => match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(Happened::Connected),
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ok(Happened::Written(pkid)),
                Ok(Event::Incoming(Packet::PubAck(ack))) => Ok(Happened::Acknowledged {
                    pkid: ack.pkid,
                    refused: None,
                }),
                Ok(Event::Incoming(Packet::PubComp(complete))) => Ok(Happened::Acknowledged {
                    pkid: complete.pkid,
                    refused: None,
                }),
                Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(Happened::Disconnected),
                Ok(_) => Ok(Happened::Other),
                Err(error) => Err(Lost {
                    refused: connect::is_refusal(&error),
                    error: error.to_string(),
                }),
            },
            Session::V5 { events, .. } => {
                use v5::mqttbytes::v5::Packet as P5;
                match events.poll().await {
                    Ok(v5::Event::Incoming(P5::ConnAck(_))) => Ok(Happened::Connected),
                    Ok(v5::Event::Outgoing(Outgoing::Publish(pkid))) => Ok(Happened::Written(pkid)),
                    Ok(v5::Event::Incoming(P5::PubAck(ack))) => Ok(Happened::Acknowledged {
                        pkid: ack.pkid,
                        refused: refusal(ack.reason),
                    }),
                    // QoS 2: a PUBREC that refuses ends the exchange (no PUBREL, no
                    // PUBCOMP follows), so it is the message's last word.
                    Ok(v5::Event::Incoming(P5::PubRec(received))) => {
                        match pubrec_refusal(received.reason) {
                            Some(refused) => Ok(Happened::Acknowledged {
                                pkid: received.pkid,
                                refused: Some(refused),
                            }),
                            None => Ok(Happened::Other),
                        }
                    }
                    Ok(v5::Event::Incoming(P5::PubComp(complete))) => Ok(Happened::Acknowledged {
                        pkid: complete.pkid,
                        refused: None,
                    }),
                    Ok(v5::Event::Outgoing(Outgoing::Disconnect)) => Ok(Happened::Disconnected),
                    Ok(_) => Ok(Happened::Other),
                    Err(error) => Err(Lost {
                        refused: is_v5_refusal(&error),
                        error: error.to_string(),
                    }),
                }
            }
        }
    }

    /// Queues a DISCONNECT behind what is queued.
    pub fn try_disconnect(&self) -> bool {
        match self {
            Session::V311 { client, .. } => client.try_disconnect().is_ok(),
            Session::V5 { client, .. } => client.try_disconnect().is_ok(),
        }
    }
}

/// Why an MQTT 5 PUBACK refuses its message, if it does.
fn refusal(reason: v5::mqttbytes::v5::PubAckReason) -> Option<Refusal> {
    use v5::mqttbytes::v5::PubAckReason as R;
    refused(
        || format!("{reason:?}"),
        matches!(reason, R::Success | R::NoMatchingSubscribers),
        matches!(
            reason,
            R::NotAuthorized | R::TopicNameInvalid | R::PayloadFormatInvalid
        ),
    )
}

/// Why an MQTT 5 PUBREC refuses its message, if it does (the same reasons as PUBACK's).
fn pubrec_refusal(reason: v5::mqttbytes::v5::PubRecReason) -> Option<Refusal> {
    use v5::mqttbytes::v5::PubRecReason as R;
    refused(
        || format!("{reason:?}"),
        matches!(reason, R::Success | R::NoMatchingSubscribers),
        matches!(
            reason,
            R::NotAuthorized | R::TopicNameInvalid | R::PayloadFormatInvalid
        ),
    )
}

/// A refusal unless the reason is a success (named only then: every acknowledgement
/// comes through here); `permanent` when the message itself is the problem.
fn refused(reason: impl FnOnce() -> String, success: bool, permanent: bool) -> Option<Refusal> {
    (!success).then(|| Refusal {
        reason: reason(),
        permanent,
    })
}
