//! Decoding, transforming and encoding the messages of a batch (the `transforms`
//! crate), and sorting out the ones that failed or were filtered out.
//!
//! A batch needs no shaping when its connector has no transforms and the schemas on
//! both sides are the same: then payloads pass untouched and nothing here runs.

use bytes::Bytes;
use connector_sdk::Schema;
use transforms::{Message, Payload, TransformChain, Verdict};

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

/// Runs `chain` over consumed messages of a stream with `schema`.
pub(crate) fn sink_batch(
    chain: &TransformChain,
    schema: Schema,
    messages: Vec<IncomingMessage>,
) -> ShapedSink {
    let mut shaped = ShapedSink {
        kept: Vec::with_capacity(messages.len()),
        ..ShapedSink::default()
    };
    for mut message in messages {
        match shape(chain, schema, message.payload.clone(), &[schema]) {
            Ok(Some((mut payloads, _))) => {
                message.payload = payloads.pop().unwrap_or_default();
                shaped.kept.push(message);
            }
            Ok(None) => shaped.dropped += 1,
            Err(error) => shaped.failed.push(Failed { message, error }),
        }
    }
    shaped
}

/// A shaped message: its payload encoded for each schema asked for, and the topic a
/// `route` transform chose.
pub(crate) type Shaped = (Vec<Bytes>, Option<String>);

/// Decodes `payload` (written with `from`), runs the chain, and encodes the result once
/// per schema of `to`. `Ok(None)`: filtered out.
pub(crate) fn shape(
    chain: &TransformChain,
    from: Schema,
    payload: Bytes,
    to: &[Schema],
) -> Result<Option<Shaped>, String> {
    let mut message = Message {
        payload: Payload::decode(from, payload)
            .map_err(|error| format!("cannot decode the {from:?} payload: {error}"))?,
        topic: None,
    };
    if chain.run(&mut message).map_err(|error| error.to_string())? == Verdict::Drop {
        return Ok(None);
    }
    let mut encoded: Vec<(Schema, Bytes)> = Vec::with_capacity(to.len());
    let mut out = Vec::with_capacity(to.len());
    for schema in to {
        let bytes = match encoded.iter().find(|(done, _)| done == schema) {
            Some((_, bytes)) => bytes.clone(),
            None => {
                let bytes = Bytes::from(
                    message
                        .payload
                        .encode(*schema)
                        .map_err(|error| format!("cannot encode as {schema:?}: {error}"))?,
                );
                encoded.push((*schema, bytes.clone()));
                bytes
            }
        };
        out.push(bytes);
    }
    Ok(Some((out, message.topic)))
}

/// Whether messages need shaping at all between `from` and every schema of `to`.
pub(crate) fn needed(chain: &TransformChain, from: Schema, to: &[Schema]) -> bool {
    !chain.is_empty() || to.iter().any(|schema| *schema != from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_sdk::ConnectorKind;
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
            Schema::Json,
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
    fn conversions_without_transforms() {
        let chain = TransformChain::default();
        assert!(!needed(&chain, Schema::Json, &[Schema::Json]));
        assert!(needed(&chain, Schema::Text, &[Schema::Json]));
        let (out, topic) = shape(
            &chain,
            Schema::Text,
            Bytes::from_static(b"hi"),
            &[Schema::Json, Schema::Text],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            out,
            [Bytes::from_static(b"\"hi\""), Bytes::from_static(b"hi")]
        );
        assert_eq!(topic, None);
    }
}
