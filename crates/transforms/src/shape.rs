//! Shaping one message: decoded with the schema it was written with, run through a
//! connector's transforms, and encoded once for each schema it goes out with. The
//! runtime's pipelines and the `transform` command both shape messages here.

use bytes::Bytes;

use crate::{Codec, Message, TransformChain, Verdict};

/// A shaped message: its payload encoded for each codec asked for, and the topic a
/// `route` transform chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shaped {
    /// One payload per codec of `to`, in that order.
    pub payloads: Vec<Bytes>,
    /// The topic a `route` transform chose, if one did.
    pub topic: Option<String>,
}

/// Decodes `payload` (written with `from`), runs `chain`, and encodes the result once
/// per codec of `to` (codecs that are equal share the bytes). `Ok(None)`: a transform
/// filtered the message out. The error says which step failed.
///
/// ```
/// use bytes::Bytes;
/// use connector_sdk::{ConnectorKind, Schema};
/// use transforms::{Codec, TransformChain, shape};
///
/// let chain = TransformChain::new(
///     ConnectorKind::Source,
///     &[("add_fields".to_owned(), serde_json::json!({ "fields": [{ "key": "v", "value": { "static": 1 } }] }))],
/// )?;
/// let json = Codec::plain(Schema::Json);
/// let shaped = shape(&chain, &json, Bytes::from_static(b"{}"), &[json.clone()])?.ok_or("filtered")?;
/// assert_eq!(shaped.payloads, [Bytes::from_static(br#"{"v":1}"#)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn shape(
    chain: &TransformChain,
    from: &Codec,
    payload: Bytes,
    to: &[Codec],
) -> Result<Option<Shaped>, String> {
    let mut message = Message {
        payload: from
            .decode(payload)
            .map_err(|error| format!("cannot decode the {:?} payload: {error}", from.schema))?,
        topic: None,
    };
    if chain.run(&mut message).map_err(|error| error.to_string())? == Verdict::Drop {
        return Ok(None);
    }
    let mut payloads: Vec<Bytes> = Vec::with_capacity(to.len());
    for (index, codec) in to.iter().enumerate() {
        let bytes = match to[..index].iter().position(|done| done == codec) {
            Some(same) => payloads[same].clone(),
            None => Bytes::from(
                codec
                    .encode(&message.payload)
                    .map_err(|error| format!("cannot encode as {:?}: {error}", codec.schema))?,
            ),
        };
        payloads.push(bytes);
    }
    Ok(Some(Shaped {
        payloads,
        topic: message.topic,
    }))
}

/// The codec a sink's plugin gets messages of a stream written with `stream` in: what
/// the chain's last convert transform writes (JSON from a FlatBuffers stream, say), or
/// else the stream's own.
pub fn sink_output(chain: &TransformChain, stream: &Codec) -> Codec {
    chain.output_schema().map_or_else(
        || stream.clone(),
        |schema| Codec::for_schema(schema, [stream]),
    )
}

/// Whether messages written with `from` need shaping at all to go out with every codec
/// of `to`: not when there are no transforms and every codec is `from`'s (then the
/// payloads pass untouched).
pub fn shaping_needed(chain: &TransformChain, from: &Codec, to: &[Codec]) -> bool {
    !chain.is_empty() || to.iter().any(|codec| codec != from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_sdk::Schema;

    #[test]
    fn conversions_without_transforms() {
        let chain = TransformChain::default();
        let (json, text) = (Codec::plain(Schema::Json), Codec::plain(Schema::Text));
        assert!(!shaping_needed(&chain, &json, std::slice::from_ref(&json)));
        assert!(shaping_needed(&chain, &text, std::slice::from_ref(&json)));
        let shaped = shape(
            &chain,
            &text,
            Bytes::from_static(b"hi"),
            &[json.clone(), text.clone()],
        )
        .ok()
        .flatten();
        assert_eq!(
            shaped,
            Some(Shaped {
                payloads: vec![Bytes::from_static(b"\"hi\""), Bytes::from_static(b"hi")],
                topic: None
            })
        );
    }
}
