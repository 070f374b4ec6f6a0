//! The requests [`IggyBus`](super::IggyBus) encodes and the replies it decodes itself,
//! with the encoders of the protocol crate the client and server use: a send's body
//! straight from the runtime's messages, and a read's reply into consumed messages.

use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use connector_sdk::{HeaderKind, OwnedHeader};
use iggy::prelude::*;
use iggy_binary_protocol::batch::BATCH_MESSAGE_HEADER_SIZE;
use iggy_binary_protocol::requests::messages::send_messages::{RawMessage, SendMessagesEncoder};
use iggy_binary_protocol::responses::messages::poll_messages::PollMessagesResponse;
use iggy_binary_protocol::{WireIdentifier, WirePartitioning, WireUserHeaders};

use super::{BusError, Destination, IncomingMessage, OutgoingMessage, Polled, SEND_MARKER_HEADER};

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
pub(super) fn encode_send(
    to: &Destination,
    partition: u32,
    messages: &[OutgoingMessage],
    mut body: BytesMut,
) -> Result<Bytes, BusError> {
    let wire_name = |name: &str| {
        WireIdentifier::named(name)
            .map_err(|error| BusError::new(format!("{name:?} is not a valid name: {error}")))
    };
    let (stream_id, topic_id) = (wire_name(&to.stream)?, wire_name(&to.topic)?);
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
    body.clear();
    body.reserve(size);
    SendMessagesEncoder::encode(&mut body, &stream_id, &topic_id, &partitioning, &raw)
        .map_err(|error| BusError::new(format!("cannot encode the send: {error}")))?;
    Ok(body.freeze())
}

/// A poll's reply as the runtime sees it.
pub(super) fn polled_messages(polled: PolledMessages) -> Polled {
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
pub(super) fn decode_read(reply: Bytes) -> Result<Polled, BusError> {
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
        let body = encode_send(&Destination::new("s", "t"), 3, &messages, BytesMut::new())
            .expect("valid messages encode");
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
        let refused = encode_send(
            &Destination::new("s", "t"),
            0,
            &[outgoing(None, Vec::new(), b"")],
            BytesMut::new(),
        )
        .map(|_| ());
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
        let body = encode_send(&Destination::new("s", "t"), 0, &messages, BytesMut::new())
            .expect("valid messages encode");
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
        let body = encode_send(
            &Destination::new("s", "t"),
            0,
            &[outgoing(Some(1), Vec::new(), b"payload")],
            BytesMut::new(),
        )
        .expect("valid messages encode");
        let reply = served(&body, 0, 0, 0);
        let cut = reply.slice(..reply.len() - 3);
        let error = decode_read(cut).expect_err("a cut reply is refused");
        assert!(error.to_string().contains("does not decode"), "{error}");
        assert!(decode_read(Bytes::from_static(b"short")).is_err());
    }
}
