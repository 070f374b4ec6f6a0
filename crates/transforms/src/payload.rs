//! Payloads decoded by schema, and encoded back.
//!
//! A JSON object is decoded only one level deep: each top-level value stays raw JSON
//! text until a transform reads it, so transforms that touch a few top-level fields of
//! a large document do not pay for parsing or re-serialising the rest.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use connector_sdk::Schema;
use serde_json::Value;
use serde_json::value::RawValue;

/// Part of a JSON object: a slice of the document it was decoded from, or text a
/// transform wrote.
#[derive(Debug, Clone)]
enum Text {
    /// `start..end` of the source document.
    Span(u32, u32),
    /// Written by a transform (a key) or unescaped (a key with escapes).
    Owned(String),
}

/// A top-level field's value: raw JSON in the source document, or a value a transform
/// set.
#[derive(Debug, Clone)]
enum Slot {
    Raw(u32, u32),
    Value(Value),
}

/// A key's text. Spans are valid UTF-8 (the whole document was checked) and start and
/// end at ASCII quotes; `from_utf8` keeps this panic-free regardless.
fn text_in<'a>(source: &'a [u8], text: &'a Text) -> &'a str {
    match text {
        Text::Span(start, end) => {
            std::str::from_utf8(&source[*start as usize..*end as usize]).unwrap_or("")
        }
        Text::Owned(text) => text,
    }
}

/// A field's value, parsed if it is still raw.
fn parse_in(source: &[u8], slot: &Slot) -> Result<Value, String> {
    match slot {
        Slot::Raw(start, end) => serde_json::from_slice(&source[*start as usize..*end as usize])
            .map_err(|error| error.to_string()),
        Slot::Value(value) => Ok(value.clone()),
    }
}

/// A JSON object decoded one level deep: keys and values stay slices of the source
/// document until a transform changes them, so decoding allocates one vector and
/// encoding copies untouched fields as they were.
#[derive(Debug, Clone, Default)]
pub struct JsonObject {
    source: Bytes,
    fields: Vec<(Text, Slot)>,
}

impl JsonObject {
    fn text<'a>(&'a self, text: &'a Text) -> &'a str {
        text_in(&self.source, text)
    }

    fn key_bytes<'a>(&'a self, text: &'a Text) -> &'a [u8] {
        match text {
            Text::Span(start, end) => &self.source[*start as usize..*end as usize],
            Text::Owned(text) => text.as_bytes(),
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|(name, _)| self.key_bytes(name) == key.as_bytes())
    }

    fn parse(&self, slot: &Slot) -> Result<Value, String> {
        parse_in(&self.source, slot)
    }

    /// The keys, in document order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(key, _)| self.text(key))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether it has no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Whether `key` is there.
    pub fn contains(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// The value of `key`, parsed.
    pub fn get(&self, key: &str) -> Option<Result<Value, String>> {
        let index = self.position(key)?;
        Some(self.parse(&self.fields[index].1))
    }

    /// Sets `key`, replacing its value where it is, or appending it.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.position(key) {
            Some(index) => self.fields[index].1 = Slot::Value(value),
            None => self
                .fields
                .push((Text::Owned(key.to_owned()), Slot::Value(value))),
        }
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        match self.position(key) {
            Some(index) => {
                self.fields.remove(index);
                true
            }
            None => false,
        }
    }

    /// Keeps the fields for which `keep(key, value)` says so; the value is parsed only
    /// when `keep` asks for it.
    pub fn retain(
        &mut self,
        mut keep: impl FnMut(&str, &dyn Fn() -> Result<Value, String>) -> Result<bool, String>,
    ) -> Result<(), String> {
        let source = &self.source;
        let mut failure = None;
        self.fields.retain(|(key, slot)| {
            if failure.is_some() {
                return true;
            }
            match keep(text_in(source, key), &|| parse_in(source, slot)) {
                Ok(verdict) => verdict,
                Err(error) => {
                    failure = Some(error);
                    true
                }
            }
        });
        failure.map_or(Ok(()), Err)
    }

    /// The value at a dotted path (`a.b.c`): the first segment is a top-level field,
    /// the rest index into its parsed value.
    pub fn lookup(&self, path: &str) -> Option<Value> {
        let mut segments = path.split('.');
        let first = self.get(segments.next()?)?.ok()?;
        segments.try_fold(first, |value, segment| match value {
            Value::Object(mut map) => map.remove(segment),
            Value::Array(mut items) => {
                let index: usize = segment.parse().ok()?;
                (index < items.len()).then(|| items.swap_remove(index))
            }
            _ => None,
        })
    }

    /// An object of `values` (no source document).
    pub fn from_map(values: serde_json::Map<String, Value>) -> Self {
        JsonObject {
            source: Bytes::new(),
            fields: values
                .into_iter()
                .map(|(key, value)| (Text::Owned(key), Slot::Value(value)))
                .collect(),
        }
    }
}

/// A decoded payload.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A JSON object (decoded one level deep).
    Object(JsonObject),
    /// Any other JSON document (array, string, number...), kept whole.
    Json(Value),
    /// Bytes.
    Raw(Bytes),
    /// UTF-8 text.
    Text(String),
    /// Bytes written with a binary schema (`avro`, `proto` or `flat_buffer`) that
    /// nothing decoded: read from a stream of that schema that names no message
    /// schema, or written by a convert transform. A convert transform decodes it;
    /// field transforms pass it through unchanged; a stream of the same schema (or
    /// `raw`) writes the bytes as they are.
    Encoded(Schema, Bytes),
}

/// Why a payload could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FormatError {}

/// Whether this runtime can decode and encode `schema` (for transforms and
/// conversions; Avro, Protobuf and FlatBuffers with a [`Codec`] that has their
/// schema, or through a convert transform).
pub fn supported(schema: Schema) -> bool {
    matches!(
        schema,
        Schema::Json
            | Schema::Raw
            | Schema::Text
            | Schema::Avro
            | Schema::Proto
            | Schema::FlatBuffer
    )
}

/// How a stream's payloads are written: its schema, and for Avro and Protobuf the
/// message schema. Codecs are equal when their schemas are and they share the same
/// message schema instance (compared by pointer: this is asked per batch and per
/// message).
#[derive(Debug, Clone)]
pub struct Codec {
    /// The stream's schema.
    pub schema: Schema,
    /// The Avro schema, for `Schema::Avro`.
    pub avro: Option<Arc<crate::AvroSchema>>,
    /// The Protobuf message type, for `Schema::Proto`.
    pub proto: Option<Arc<crate::ProtoSchema>>,
    /// The FlatBuffers schema and root table, for `Schema::FlatBuffer`.
    pub flat_buffer: Option<Arc<crate::FlatBufferSchema>>,
}

/// Whether two optional shared schemas are the same instance (or both absent).
fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

impl PartialEq for Codec {
    fn eq(&self, other: &Self) -> bool {
        self.schema == other.schema
            && same(&self.avro, &other.avro)
            && same(&self.proto, &other.proto)
            && same(&self.flat_buffer, &other.flat_buffer)
    }
}

impl Codec {
    /// A codec without a message schema.
    pub fn plain(schema: Schema) -> Self {
        Codec {
            schema,
            avro: None,
            proto: None,
            flat_buffer: None,
        }
    }

    /// Takes the message schema (Avro or Protobuf) of the first of `codecs` with
    /// `schema`: how a plugin that declares `schema` is read and written.
    pub fn for_schema<'a>(schema: Schema, codecs: impl IntoIterator<Item = &'a Codec>) -> Self {
        codecs
            .into_iter()
            .find(|codec| codec.schema == schema)
            .cloned()
            .unwrap_or_else(|| Codec::plain(schema))
    }

    /// Decodes `bytes`; Avro datums, Protobuf messages and FlatBuffers become JSON
    /// (objects one level deep). Without its message schema, a binary schema's bytes
    /// stay [`Payload::Encoded`], for a convert transform to decode.
    pub fn decode(&self, bytes: Bytes) -> Result<Payload, FormatError> {
        let decoded = match (self.schema, &self.avro, &self.proto, &self.flat_buffer) {
            (Schema::Avro, Some(avro), _, _) => avro
                .decode(&bytes)
                .map_err(|error| format!("invalid Avro datum: {error}")),
            (Schema::Proto, _, Some(proto), _) => proto.decode(&bytes),
            (Schema::FlatBuffer, _, _, Some(flat_buffer)) => flat_buffer.decode(&bytes),
            (schema @ (Schema::Avro | Schema::Proto | Schema::FlatBuffer), ..) => {
                return Ok(Payload::Encoded(schema, bytes));
            }
            (schema, ..) => return Payload::decode(schema, bytes),
        };
        match decoded.map_err(FormatError)? {
            Value::Object(map) => Ok(Payload::Object(JsonObject::from_map(map))),
            other => Ok(Payload::Json(other)),
        }
    }

    /// Encodes `payload` for this stream (JSON values as Avro datums for Avro, as
    /// messages of the stream's type for Protobuf, as buffers of the root table for
    /// FlatBuffers). Bytes already written with the stream's schema
    /// ([`Payload::Encoded`]) are written as they are.
    pub fn encode(&self, payload: &Payload) -> Result<Vec<u8>, FormatError> {
        if let Payload::Encoded(schema, bytes) = payload {
            return if *schema == self.schema || self.schema == Schema::Raw {
                Ok(bytes.to_vec())
            } else {
                Err(FormatError(format!(
                    "a {schema} payload cannot be written to a {} stream without a convert transform",
                    self.schema
                )))
            };
        }
        match self.schema {
            Schema::Avro => match &self.avro {
                Some(avro) => avro
                    .encode(&payload.to_value())
                    .map_err(|error| FormatError(format!("cannot encode as Avro: {error}"))),
                None => Err(FormatError(NO_AVRO_SCHEMA.to_owned())),
            },
            Schema::Proto => match &self.proto {
                Some(proto) => proto
                    .encode(&payload.to_value())
                    .map_err(|error| FormatError(format!("cannot encode as Protobuf: {error}"))),
                None => Err(FormatError(NO_PROTO_SCHEMA.to_owned())),
            },
            Schema::FlatBuffer => match &self.flat_buffer {
                Some(flat_buffer) => flat_buffer
                    .encode(&payload.to_value())
                    .map_err(|error| FormatError(format!("cannot encode as FlatBuffers: {error}"))),
                None => Err(FormatError(NO_FLAT_BUFFER_SCHEMA.to_owned())),
            },
            schema => payload.encode(schema),
        }
    }
}

// Encoding a decoded payload for a binary stream that names no message schema: the
// stream takes only bytes a convert transform wrote.
const NO_AVRO_SCHEMA: &str = "an Avro stream needs avro_schema_json or avro_schema_path (or an avro_convert transform that writes avro)";
const NO_PROTO_SCHEMA: &str = "a Protobuf stream needs proto_descriptor_set and proto_message_type (or a proto_convert transform that writes proto)";
const NO_FLAT_BUFFER_SCHEMA: &str = "a FlatBuffers stream needs flat_buffer_schema_path, a .bfbs file (or a flat_buffer_convert transform that writes flat_buffer)";

impl Payload {
    /// Decodes `bytes` written with `schema`. A JSON object keeps `bytes` (no copy)
    /// and refers into it.
    pub fn decode(schema: Schema, bytes: Bytes) -> Result<Payload, FormatError> {
        match schema {
            Schema::Json => {
                let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
                if first == Some(&b'{') {
                    if u32::try_from(bytes.len()).is_err() {
                        return Err(FormatError("a JSON document over 4 GiB".to_owned()));
                    }
                    let spans = crate::scan::object(&bytes).map_err(FormatError)?;
                    let mut fields = Vec::with_capacity(spans.len());
                    for ((key_start, key_end), escaped, (start, end)) in spans {
                        // Spans are within `bytes`, whose length fits in u32.
                        let key = if escaped {
                            let quoted = &bytes[key_start - 1..key_end + 1];
                            Text::Owned(serde_json::from_slice(quoted).map_err(|error| {
                                FormatError(format!("invalid JSON key: {error}"))
                            })?)
                        } else {
                            Text::Span(key_start as u32, key_end as u32)
                        };
                        fields.push((key, Slot::Raw(start as u32, end as u32)));
                    }
                    Ok(Payload::Object(JsonObject {
                        source: bytes,
                        fields,
                    }))
                } else {
                    serde_json::from_slice(&bytes)
                        .map(Payload::Json)
                        .map_err(|error| FormatError(format!("invalid JSON: {error}")))
                }
            }
            Schema::Raw => Ok(Payload::Raw(bytes)),
            Schema::Text => std::str::from_utf8(&bytes)
                .map(|text| Payload::Text(text.to_owned()))
                .map_err(|error| FormatError(format!("invalid UTF-8 text: {error}"))),
            other => Err(FormatError(format!(
                "schema {other:?} cannot be decoded without its schema (json, raw and text can; avro and proto with a Codec)"
            ))),
        }
    }

    /// Encodes for a stream with `schema`: JSON as JSON, text as its UTF-8 bytes (a
    /// JSON string literal for a JSON stream), raw bytes for a raw stream, and JSON or
    /// text as their bytes for a raw or text stream.
    pub fn encode(&self, schema: Schema) -> Result<Vec<u8>, FormatError> {
        match (self, schema) {
            (Payload::Object(object), Schema::Json | Schema::Text | Schema::Raw) => {
                Ok(encode_object(object))
            }
            (Payload::Json(value), Schema::Json | Schema::Text | Schema::Raw) => {
                serde_json::to_vec(value).map_err(|error| FormatError(error.to_string()))
            }
            (Payload::Text(text), Schema::Json) => {
                serde_json::to_vec(text).map_err(|error| FormatError(error.to_string()))
            }
            (Payload::Text(text), Schema::Text | Schema::Raw) => Ok(text.as_bytes().to_vec()),
            (Payload::Raw(bytes), Schema::Raw) => Ok(bytes.to_vec()),
            (Payload::Raw(bytes), Schema::Text) => std::str::from_utf8(bytes)
                .map(|text| text.as_bytes().to_vec())
                .map_err(|error| FormatError(format!("raw bytes are not UTF-8 text: {error}"))),
            (Payload::Encoded(_, bytes), Schema::Raw) => Ok(bytes.to_vec()),
            (Payload::Raw(bytes), Schema::Json) => serde_json::from_slice::<&RawValue>(bytes)
                .map(|raw| raw.get().as_bytes().to_vec())
                .map_err(|error| FormatError(format!("raw bytes are not JSON: {error}"))),
            (_, other) => Err(FormatError(format!(
                "schema {other:?} cannot be encoded without its schema (json, raw and text can; avro and proto with a Codec)"
            ))),
        }
    }

    /// The payload as one JSON value (for display and for tools).
    pub fn to_value(&self) -> Value {
        match self {
            Payload::Object(object) => Value::Object(
                object
                    .fields
                    .iter()
                    .map(|(key, slot)| {
                        (
                            object.text(key).to_owned(),
                            object.parse(slot).unwrap_or(Value::Null),
                        )
                    })
                    .collect(),
            ),
            Payload::Json(value) => value.clone(),
            Payload::Text(text) => Value::String(text.clone()),
            Payload::Raw(bytes) | Payload::Encoded(_, bytes) => {
                Value::String(String::from_utf8_lossy(bytes).into_owned())
            }
        }
    }
}

fn encode_object(object: &JsonObject) -> Vec<u8> {
    let mut out = Vec::with_capacity(object.source.len() + 64);
    out.push(b'{');
    for (index, (key, slot)) in object.fields.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        match key {
            Text::Span(start, end) => {
                out.push(b'"');
                out.extend_from_slice(&object.source[*start as usize..*end as usize]);
                out.push(b'"');
            }
            // Writing a string or a Value into a Vec cannot fail.
            Text::Owned(text) => {
                let _ = serde_json::to_writer(&mut out, text);
            }
        }
        out.push(b':');
        match slot {
            Slot::Raw(start, end) => {
                out.extend_from_slice(&object.source[*start as usize..*end as usize]);
            }
            Slot::Value(value) => {
                let _ = serde_json::to_writer(&mut out, value);
            }
        }
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip_with_raw_fields_untouched() {
        let text: &'static [u8] = br#"{"a":1,"b":{"deep":[1,2,{"x":"y"}]},"c":"s\"q","k\u0041":2}"#;
        let payload = Payload::decode(Schema::Json, Bytes::from_static(text)).unwrap();
        // Escaped keys come back unescaped; everything else byte for byte.
        let expected = String::from_utf8(text.to_vec())
            .unwrap()
            .replace("k\\u0041", "kA");
        assert_eq!(
            String::from_utf8(payload.encode(Schema::Json).unwrap()).unwrap(),
            expected
        );
        let Payload::Object(object) = payload else {
            panic!("an object")
        };
        assert_eq!(object.get("kA").unwrap().unwrap(), Value::from(2));
        assert_eq!(object.keys().collect::<Vec<_>>(), ["a", "b", "c", "kA"]);
        assert_eq!(object.lookup("b.deep.2.x"), Some(Value::from("y")));
        assert_eq!(object.lookup("b.nope"), None);
    }

    #[test]
    fn conversions_between_formats() {
        let text = Payload::decode(Schema::Text, Bytes::from("héllo")).unwrap();
        assert_eq!(
            text.encode(Schema::Json).unwrap(),
            "\"héllo\"".as_bytes().to_vec()
        );
        assert_eq!(
            text.encode(Schema::Raw).unwrap(),
            "héllo".as_bytes().to_vec()
        );
        let array = Payload::decode(Schema::Json, Bytes::from_static(b" [1, 2]")).unwrap();
        assert_eq!(array.encode(Schema::Text).unwrap(), b"[1,2]".to_vec());
        let raw = Payload::decode(Schema::Raw, Bytes::from_static(&[0xff, 0])).unwrap();
        assert!(raw.encode(Schema::Text).is_err());
        assert!(raw.encode(Schema::Json).is_err());
        assert_eq!(raw.encode(Schema::Raw).unwrap(), vec![0xff, 0]);
        let json_bytes =
            Payload::decode(Schema::Raw, Bytes::from_static(br#"{"k":true}"#)).unwrap();
        assert_eq!(
            json_bytes.encode(Schema::Json).unwrap(),
            br#"{"k":true}"#.to_vec()
        );
    }

    #[test]
    fn bad_input_names_the_problem() {
        let error = Payload::decode(Schema::Json, Bytes::from_static(br#"{"a":1"#)).unwrap_err();
        assert!(error.0.contains("invalid JSON"), "{error}");
        let error = Payload::decode(Schema::Json, Bytes::from_static(br#"{"a":1} x"#)).unwrap_err();
        assert!(error.0.contains("trailing"), "{error}");
        let error = Payload::decode(Schema::Text, Bytes::from_static(&[0xc3])).unwrap_err();
        assert!(error.0.contains("UTF-8"), "{error}");
        let error = Payload::decode(Schema::Avro, Bytes::from_static(b"x")).unwrap_err();
        assert!(error.0.contains("Avro"), "{error}");
    }

    #[test]
    fn binary_payloads_without_their_schema_stay_encoded() {
        let proto = Codec::plain(Schema::Proto);
        let payload = proto.decode(Bytes::from_static(b"\x08\x01")).unwrap();
        assert!(matches!(payload, Payload::Encoded(Schema::Proto, _)));
        assert_eq!(proto.encode(&payload).unwrap(), b"\x08\x01");
        assert_eq!(
            Codec::plain(Schema::Raw).encode(&payload).unwrap(),
            b"\x08\x01"
        );
        let error = Codec::plain(Schema::Json).encode(&payload).unwrap_err();
        assert!(error.0.contains("without a convert transform"), "{error}");
        let error = Codec::plain(Schema::Avro).encode(&payload).unwrap_err();
        assert!(error.0.contains("proto payload"), "{error}");
    }
}
