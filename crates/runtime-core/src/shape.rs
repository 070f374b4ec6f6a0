//! Shaping the messages of a sink batch (with `transforms::shape`), and sorting out the
//! ones that failed or were filtered out.
//!
//! A batch needs no shaping when its connector has no transforms and the schemas on
//! both sides are the same: then payloads pass untouched and nothing here runs.

use transforms::{Codec, TransformChain};

use crate::bus::IncomingMessage;

/// A message that could not be decoded, transformed or encoded, and why.
#[derive(Debug)]
pub(crate) struct Failed<T> {
    pub(crate) message: T,
    pub(crate) error: String,
}

/// What shaping left of a sink batch.
#[derive(Debug, Default)]
pub(crate) struct ShapedSink {
    /// Messages to hand to the plugin, payloads transformed.
    pub(crate) kept: Vec<IncomingMessage>,
    /// Messages a transform filtered out.
    pub(crate) dropped: usize,
    /// Messages for the error policy (payloads as consumed).
    pub(crate) failed: Vec<Failed<IncomingMessage>>,
}

/// Runs `chain` over consumed messages of a stream written with `codec`, encoding what
/// it makes with `to` for the plugin.
pub(crate) fn sink_batch(
    chain: &TransformChain,
    codec: &Codec,
    to: &Codec,
    messages: Vec<IncomingMessage>,
) -> ShapedSink {
    let mut shaped = ShapedSink {
        kept: Vec::with_capacity(messages.len()),
        ..ShapedSink::default()
    };
    for mut message in messages {
        match transforms::shape(
            chain,
            codec,
            message.payload.clone(),
            std::slice::from_ref(to),
        ) {
            Ok(Some(mut out)) => {
                message.payload = out.payloads.pop().unwrap_or_default();
                shaped.kept.push(message);
            }
            Ok(None) => shaped.dropped += 1,
            Err(error) => shaped.failed.push(Failed { message, error }),
        }
    }
    shaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use connector_sdk::{ConnectorKind, Schema};
    use serde_json::json;

    fn incoming(offset: u64, payload: &'static [u8]) -> IncomingMessage {
        IncomingMessage {
            id: u128::from(offset),
            offset,
            timestamp: 0,
            origin_timestamp: 0,
            checksum: 0,
            headers: Vec::new(),
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn sink_batches_keep_drop_and_fail_message_by_message() {
        let chain = TransformChain::new(
            ConnectorKind::Sink,
            &[
                (
                    "filter".to_owned(),
                    json!({ "field": "skip", "matches": { "equals": true } }),
                ),
                (
                    "add_fields".to_owned(),
                    json!({ "fields": [{ "key": "seen", "value": { "static": 1 } }] }),
                ),
            ],
        )
        .unwrap();
        let shaped = sink_batch(
            &chain,
            &Codec::plain(Schema::Json),
            &Codec::plain(Schema::Json),
            vec![
                incoming(0, br#"{"a":1}"#),
                incoming(1, br#"{"skip":true}"#),
                incoming(2, b"not json"),
                incoming(3, br#"{"a":3}"#),
            ],
        );
        let kept: Vec<(u64, &[u8])> = shaped
            .kept
            .iter()
            .map(|m| (m.offset, &m.payload[..]))
            .collect();
        assert_eq!(
            kept,
            [
                (0, &br#"{"a":1,"seen":1}"#[..]),
                (3, &br#"{"a":3,"seen":1}"#[..])
            ]
        );
        assert_eq!(shaped.dropped, 1);
        assert_eq!(shaped.failed.len(), 1);
        assert_eq!(shaped.failed[0].message.offset, 2);
        assert_eq!(
            &shaped.failed[0].message.payload[..],
            b"not json",
            "failed messages keep their payload"
        );
        assert!(
            shaped.failed[0].error.contains("cannot decode"),
            "{}",
            shaped.failed[0].error
        );
    }

    #[test]
    fn avro_sink_batches_are_decoded_transformed_and_encoded_again() {
        let avro = std::sync::Arc::new(
            transforms::AvroSchema::parse(
                r#"{"type":"record","name":"R","fields":[{"name":"n","type":"long"},{"name":"tag","type":["null","string"]}]}"#,
            )
            .unwrap(),
        );
        let codec = Codec {
            avro: Some(avro.clone()),
            ..Codec::plain(Schema::Avro)
        };
        let chain = TransformChain::new(
            ConnectorKind::Sink,
            &[(
                "update_fields".to_owned(),
                json!({ "fields": [{ "key": "tag", "value": "seen" }] }),
            )],
        )
        .unwrap();
        let datum = avro.encode(&json!({ "n": 7, "tag": null })).unwrap();
        let mut message = incoming(0, b"");
        message.payload = Bytes::from(datum);
        let mut broken = incoming(1, b"\xff");
        broken.payload = Bytes::from_static(&[0xff]);
        let shaped = sink_batch(&chain, &codec, &codec, vec![message, broken]);
        assert_eq!(shaped.kept.len(), 1);
        assert_eq!(
            avro.decode(&shaped.kept[0].payload).unwrap(),
            json!({ "n": 7, "tag": "seen" })
        );
        assert_eq!(shaped.failed.len(), 1);
        assert!(
            shaped.failed[0].error.contains("Avro"),
            "{}",
            shaped.failed[0].error
        );
    }
}
