//! The two MQTT versions the source speaks, behind one shape: rumqttc has a client and
//! an event loop per version, with their own packet types. The source's logic (batches,
//! acknowledgements after `Accepted`, reconnection) sees only [`Client`], [`Events`] and
//! what [`Events::next`] reports.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5;
use rumqttc::{AsyncClient, EventLoop, Packet, QoS, SubscribeFilter};

pub use crate::connect::ProtocolVersion;
use crate::connect::{self, Connection, is_v5_refusal, v5_qos};

/// A message as the broker sent it, whichever the version.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub qos: QoS,
    pub retain: bool,
    pub pkid: u16,
    pub payload: Bytes,
    /// MQTT 5 user properties, in the order sent (none with 3.1.1).
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5 correlation data.
    pub correlation_data: Option<Bytes>,
}

/// What the event loop reported.
pub enum Happening {
    /// A CONNACK: the session is (re)established.
    Connected {
        session_present: bool,
    },
    /// A SUBACK: the indexes of the filters the broker refused.
    Subscribed {
        refused: Vec<usize>,
    },
    Message(Received),
    /// The DISCONNECT asked for by `close` went out.
    Disconnected,
    /// The connection was lost or could not be made; `refused` when the broker refused
    /// the login (retrying cannot help).
    Lost {
        error: String,
        refused: bool,
    },
    /// Anything else (pings, acknowledgements going out).
    Other,
}

/// The client half: acknowledgements, subscriptions, the closing DISCONNECT.
#[derive(Clone)]
pub enum Client {
    V311(AsyncClient),
    V5(v5::AsyncClient),
}

/// The event loop half, polled by the driver task.
pub enum Events {
    V311(Box<EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// What the session needs beyond the connection: manual acknowledgements always.
pub struct Session {
    pub version: ProtocolVersion,
    /// MQTT 5 session expiry; `None` keeps it to the connection.
    pub session_expiry: Option<u32>,
    /// MQTT 5 receive maximum: how many unacknowledged QoS 1/2 messages the broker may
    /// send at once.
    pub receive_maximum: u16,
    /// Room in the client's request queue.
    pub requests: usize,
}

/// A client and its event loop for `connection`, with manual acknowledgements.
pub fn connect(connection: &Connection<'_>, session: &Session) -> Result<(Client, Events), String> {
    match session.version {
        ProtocolVersion::V311 => {
            let mut options = connection.options()?;
            options.set_manual_acks(true);
            let (client, mut events) = AsyncClient::new(options, session.requests);
            events.set_network_options(connection.network_options());
            Ok((Client::V311(client), Events::V311(Box::new(events))))
        }
        ProtocolVersion::V5 => {
            let mut options = connection.options_v5()?;
            options.set_session_expiry_interval(session.session_expiry);
            options.set_receive_maximum(Some(session.receive_maximum.max(1)));
            options.set_manual_acks(true);
            let (client, events) = v5::AsyncClient::new(options, session.requests);
            Ok((Client::V5(client), Events::V5(Box::new(events))))
        }
    }
}

impl Client {
    /// Queues the acknowledgement of message `pkid` (QoS 1 or 2); an error when the
    /// request queue is full.
    pub fn try_ack(&self, pkid: u16, qos: QoS) -> Result<(), ()> {
        match self {
            Client::V311(client) => {
                let mut ack = rumqttc::Publish::new("", qos, Vec::new());
                ack.pkid = pkid;
                client.try_ack(&ack).map_err(drop)
            }
            Client::V5(client) => {
                let mut ack = v5::mqttbytes::v5::Publish::new("", v5_qos(qos), Vec::new(), None);
                ack.pkid = pkid;
                client.try_ack(&ack).map_err(drop)
            }
        }
    }

    /// Subscribes to every filter, each with its QoS.
    pub async fn subscribe(&self, filters: &[(String, QoS)]) -> Result<(), String> {
        match self {
            Client::V311(client) => client
                .subscribe_many(
                    filters
                        .iter()
                        .map(|(path, qos)| SubscribeFilter::new(path.clone(), *qos)),
                )
                .await
                .map_err(|error| error.to_string()),
            Client::V5(client) => {
                client
                    .subscribe_many(filters.iter().map(|(path, qos)| {
                        v5::mqttbytes::v5::Filter::new(path.clone(), v5_qos(*qos))
                    }))
                    .await
                    .map_err(|error| error.to_string())
            }
        }
    }

    /// Queues the DISCONNECT behind what is queued; an error when the queue is full.
    pub fn try_disconnect(&self) -> Result<(), ()> {
        match self {
            Client::V311(client) => client.try_disconnect().map_err(drop),
            Client::V5(client) => client.try_disconnect().map_err(drop),
        }
    }
}

impl Events {
    /// Polls the event loop once.
    pub async fn next(&mut self) -> Happening {
        match self {
            Events::V311(events) => match events.poll().await {
                Ok(rumqttc::Event::Incoming(Packet::ConnAck(ack))) => Happening::Connected {
                    session_present: ack.session_present,
                },
                Ok(rumqttc::Event::Incoming(Packet::SubAck(ack))) => Happening::Subscribed {
                    refused: refused_indexes(
                        ack.return_codes
                            .iter()
                            .map(|code| matches!(code, rumqttc::SubscribeReasonCode::Failure)),
                    ),
                },
                Ok(rumqttc::Event::Incoming(Packet::Publish(publish))) => {
                    Happening::Message(Received {
                        topic: publish.topic,
                        qos: publish.qos,
                        retain: publish.retain,
                        pkid: publish.pkid,
                        payload: publish.payload,
                        user_properties: Vec::new(),
                        correlation_data: None,
                    })
                }
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                    Happening::Disconnected
                }
                Ok(_) => Happening::Other,
                Err(error) => Happening::Lost {
                    refused: connect::is_refusal(&error),
                    error: error.to_string(),
                },
            },
            Events::V5(events) => {
                use v5::mqttbytes::v5::Packet as P5;
                match events.poll().await {
                    Ok(v5::Event::Incoming(P5::ConnAck(ack))) => Happening::Connected {
                        session_present: ack.session_present,
                    },
                    Ok(v5::Event::Incoming(P5::SubAck(ack))) => Happening::Subscribed {
                        refused: refused_indexes(ack.return_codes.iter().map(|code| {
                            !matches!(code, v5::mqttbytes::v5::SubscribeReasonCode::Success(_))
                        })),
                    },
                    Ok(v5::Event::Incoming(P5::Publish(publish))) => {
                        let (user_properties, correlation_data) = match publish.properties {
                            Some(properties) => {
                                (properties.user_properties, properties.correlation_data)
                            }
                            None => (Vec::new(), None),
                        };
                        Happening::Message(Received {
                            // Topic names are UTF-8 by the protocol; a broker that sent
                            // other bytes gets them replaced, not the message dropped.
                            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                            qos: v4_qos(publish.qos),
                            retain: publish.retain,
                            pkid: publish.pkid,
                            payload: publish.payload,
                            user_properties,
                            correlation_data,
                        })
                    }
                    Ok(v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                        Happening::Disconnected
                    }
                    Ok(_) => Happening::Other,
                    Err(error) => Happening::Lost {
                        refused: is_v5_refusal(&error),
                        error: error.to_string(),
                    },
                }
            }
        }
    }
}

fn refused_indexes(refused: impl Iterator<Item = bool>) -> Vec<usize> {
    refused
        .enumerate()
        .filter_map(|(index, refused)| refused.then_some(index))
        .collect()
}

fn v4_qos(qos: v5::mqttbytes::QoS) -> QoS {
    match qos {
        v5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        v5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        v5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// The session expiry sent with MQTT 5, in seconds; `None` when `expiry` is zero (the
/// session ends with the connection), an error past the protocol's 32 bits.
pub fn session_expiry_seconds(expiry: Duration) -> Result<Option<u32>, String> {
    if expiry.is_zero() {
        return Ok(None);
    }
    u32::try_from(expiry.as_secs().max(1))
        .map(Some)
        .map_err(|_| format!("at most {} seconds", u32::MAX))
}
