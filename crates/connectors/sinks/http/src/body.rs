//! Request bodies: each message as JSON (its payload, or the `{metadata, payload}`
//! envelope) or as its raw bytes, and the requests a batch becomes in each mode.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use connector_sdk::{Error, HeaderKind, Message, MessageBatch, Schema};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::value::RawValue;

use crate::config::{BatchMode, HttpSinkConfig};

/// The marker upstream puts beside base64 data, so a receiver can tell it from text.
const BASE64: &str = "base64";

/// One request to make: its body and the messages it carries.
#[derive(Debug, Clone)]
pub struct Request {
    /// The body.
    pub body: Bytes,
    /// The offset of its first message.
    pub first: u64,
    /// The offset of its last message.
    pub last: u64,
    /// How many messages it carries.
    pub count: usize,
}

/// Turns messages into bodies as the config says.
#[derive(Debug, Clone)]
pub struct Encoder {
    mode: BatchMode,
    include_metadata: bool,
    include_checksum: bool,
    include_origin_timestamp: bool,
    /// 0: no limit.
    max_body: u64,
}

impl Encoder {
    /// The encoder for `config`.
    pub fn new(config: &HttpSinkConfig) -> Self {
        Encoder {
            mode: config.batch_mode,
            include_metadata: config.include_metadata,
            include_checksum: config.include_checksum,
            include_origin_timestamp: config.include_origin_timestamp,
            max_body: config.max_payload_size_bytes,
        }
    }

    /// The requests `batch` becomes, in order. Everything is encoded before anything is
    /// sent, so a message that cannot go (over `max_payload_size_bytes`) fails the batch
    /// before any of it was sent: the runtime's message-by-message retry then repeats
    /// nothing that already arrived.
    pub fn requests(&self, batch: &MessageBatch<'_>) -> Result<Vec<Request>, Error> {
        match self.mode {
            BatchMode::Individual | BatchMode::Raw => batch
                .messages
                .iter()
                .map(|message| {
                    let body = if self.mode == BatchMode::Raw {
                        message.payload().to_vec()
                    } else {
                        let mut body = Vec::with_capacity(message.payload().len() + 256);
                        self.write_value(&mut body, batch, message)?;
                        body
                    };
                    self.check_size(body.len(), message.offset())?;
                    Ok(Request {
                        body: Bytes::from(body),
                        first: message.offset(),
                        last: message.offset(),
                        count: 1,
                    })
                })
                .collect(),
            BatchMode::NdJson | BatchMode::JsonArray => self.batched(batch),
        }
    }

    /// `ndjson` or `json_array`: as few requests as `max_payload_size_bytes` allows.
    fn batched(&self, batch: &MessageBatch<'_>) -> Result<Vec<Request>, Error> {
        let ndjson = self.mode == BatchMode::NdJson;
        let mut requests = Vec::new();
        let mut body: Vec<u8> = Vec::with_capacity(batch.messages.len() * 320);
        let mut value = Vec::with_capacity(512);
        let (mut first, mut last, mut count) = (0, 0, 0);
        for message in batch.messages {
            value.clear();
            self.write_value(&mut value, batch, message)?;
            // What the value adds: a newline for NDJSON; a comma (or the opening
            // bracket) and the closing bracket for an array.
            let alone = value.len() + if ndjson { 1 } else { 2 };
            self.check_size(alone, message.offset())?;
            let added = value.len() + 1;
            let full = self.max_body > 0
                && count > 0
                && (body.len() + added + usize::from(!ndjson)) as u64 > self.max_body;
            if full {
                requests.push(self.finish(&mut body, first, last, count));
            }
            if count == 0 || full {
                first = message.offset();
                count = 0;
                if !ndjson {
                    body.push(b'[');
                }
            } else if !ndjson {
                body.push(b',');
            }
            body.extend_from_slice(&value);
            if ndjson {
                body.push(b'\n');
            }
            last = message.offset();
            count += 1;
        }
        if count > 0 {
            requests.push(self.finish(&mut body, first, last, count));
        }
        Ok(requests)
    }

    /// Closes the body being built as a request of `count` messages, `first..=last`.
    fn finish(&self, body: &mut Vec<u8>, first: u64, last: u64, count: usize) -> Request {
        if self.mode == BatchMode::JsonArray {
            body.push(b']');
        }
        Request {
            body: Bytes::from(std::mem::take(body)),
            first,
            last,
            count,
        }
    }

    fn check_size(&self, len: usize, offset: u64) -> Result<(), Error> {
        if self.max_body > 0 && len as u64 > self.max_body {
            return Err(Error::permanent(format!(
                "the message at offset {offset} makes a body of {len} bytes, over max_payload_size_bytes ({})",
                self.max_body
            )));
        }
        Ok(())
    }

    /// Writes one message as a JSON value: the envelope, or the payload alone.
    pub fn write_value(
        &self,
        out: &mut Vec<u8>,
        batch: &MessageBatch<'_>,
        message: &Message<'_>,
    ) -> Result<(), Error> {
        let one_line: Option<Box<RawValue>>;
        let payload = match payload_json(batch.schema, message.payload()) {
            // A JSON payload may span lines (pretty-printed); an NDJSON line must not.
            // Line breaks in valid JSON only separate tokens (strings escape them), so
            // dropping them keeps the value as it was.
            PayloadJson::Json(raw) if raw.get().contains(['\n', '\r']) => {
                one_line = RawValue::from_string(raw.get().replace(['\n', '\r'], "")).ok();
                match one_line.as_deref() {
                    Some(raw) => PayloadJson::Json(raw),
                    None => PayloadJson::Base64(message.payload()),
                }
            }
            other => other,
        };
        let written = if self.include_metadata {
            let envelope = Envelope {
                metadata: Metadata {
                    iggy_id: format!("{:032x}", message.id()),
                    iggy_offset: message.offset(),
                    iggy_timestamp: message.timestamp(),
                    iggy_stream: batch.stream,
                    iggy_topic: batch.topic,
                    iggy_partition_id: batch.partition_id,
                    iggy_checksum: self.include_checksum.then(|| message.checksum()),
                    iggy_origin_timestamp: self
                        .include_origin_timestamp
                        .then(|| message.origin_timestamp()),
                    iggy_headers: (message.headers().len() > 0).then_some(Headers(message)),
                },
                payload,
            };
            serde_json::to_writer(&mut *out, &envelope)
        } else {
            serde_json::to_writer(&mut *out, &payload)
        };
        written.map_err(|error| {
            Error::permanent(format!(
                "cannot encode the message at offset {}: {error}",
                message.offset()
            ))
        })
    }
}

/// A payload as JSON: itself when it is JSON, a string when it is text, else base64.
enum PayloadJson<'a> {
    Json(&'a RawValue),
    Text(&'a str),
    Base64(&'a [u8]),
}

fn payload_json(schema: Schema, payload: &[u8]) -> PayloadJson<'_> {
    match schema {
        Schema::Json => match serde_json::from_slice::<&RawValue>(payload) {
            Ok(raw) => PayloadJson::Json(raw),
            Err(_) => PayloadJson::Base64(payload),
        },
        Schema::Text => match std::str::from_utf8(payload) {
            Ok(text) => PayloadJson::Text(text),
            Err(_) => PayloadJson::Base64(payload),
        },
        _ => PayloadJson::Base64(payload),
    }
}

impl Serialize for PayloadJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PayloadJson::Json(raw) => raw.serialize(serializer),
            PayloadJson::Text(text) => serializer.serialize_str(text),
            PayloadJson::Base64(bytes) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("data", &STANDARD.encode(bytes))?;
                map.serialize_entry("iggy_payload_encoding", BASE64)?;
                map.end()
            }
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    metadata: Metadata<'a>,
    payload: PayloadJson<'a>,
}

/// Upstream's metadata fields, named as upstream names them.
#[derive(Serialize)]
struct Metadata<'a> {
    iggy_id: String,
    iggy_offset: u64,
    iggy_timestamp: u64,
    iggy_stream: &'a str,
    iggy_topic: &'a str,
    iggy_partition_id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    iggy_checksum: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iggy_origin_timestamp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iggy_headers: Option<Headers<'a, 'a>>,
}

/// A message's headers as a JSON object: text for strings, numbers and booleans (as
/// upstream renders them), `{"data": base64, "iggy_header_encoding": "base64"}` for raw
/// bytes and anything that does not decode.
struct Headers<'m, 'a>(&'m Message<'a>);

impl Serialize for Headers<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.headers().len()))?;
        for header in self.0.headers() {
            match header_text(header.kind, header.value) {
                Some(text) => map.serialize_entry(header.key, &text)?,
                None => map.serialize_entry(
                    header.key,
                    &EncodedHeader {
                        data: STANDARD.encode(header.value),
                        iggy_header_encoding: BASE64,
                    },
                )?,
            }
        }
        map.end()
    }
}

#[derive(Serialize)]
struct EncodedHeader {
    data: String,
    iggy_header_encoding: &'static str,
}

/// A header value as text, when its kind has one (Iggy stores numbers little-endian).
pub(crate) fn header_text(kind: u32, value: &[u8]) -> Option<String> {
    fn le<const N: usize>(value: &[u8]) -> Option<[u8; N]> {
        value.try_into().ok()
    }
    Some(match HeaderKind::from_code(kind)? {
        HeaderKind::Raw => return None,
        HeaderKind::String => std::str::from_utf8(value).ok()?.to_owned(),
        HeaderKind::Bool => match value {
            [0] => "false".to_owned(),
            [1] => "true".to_owned(),
            _ => return None,
        },
        HeaderKind::Int8 => i8::from_le_bytes(le(value)?).to_string(),
        HeaderKind::Int16 => i16::from_le_bytes(le(value)?).to_string(),
        HeaderKind::Int32 => i32::from_le_bytes(le(value)?).to_string(),
        HeaderKind::Int64 => i64::from_le_bytes(le(value)?).to_string(),
        HeaderKind::Int128 => i128::from_le_bytes(le(value)?).to_string(),
        HeaderKind::Uint8 => u8::from_le_bytes(le(value)?).to_string(),
        HeaderKind::Uint16 => u16::from_le_bytes(le(value)?).to_string(),
        HeaderKind::Uint32 => u32::from_le_bytes(le(value)?).to_string(),
        HeaderKind::Uint64 => u64::from_le_bytes(le(value)?).to_string(),
        HeaderKind::Uint128 => u128::from_le_bytes(le(value)?).to_string(),
        HeaderKind::Float32 => f32::from_le_bytes(le(value)?).to_string(),
        HeaderKind::Float64 => f64::from_le_bytes(le(value)?).to_string(),
    })
}
