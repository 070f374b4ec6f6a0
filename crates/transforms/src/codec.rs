//! What a `[[streams]]` entry says about its payloads ([`StreamPayload`]), and the
//! [`Codec`] built from it.

use std::sync::Arc;

use connector_sdk::Schema;
use serde::{Deserialize, Serialize};

use crate::{AvroSchema, Codec, FlatBufferSchema, ProtoSchema};

/// The payload part of a connector's `[[streams]]` entry: the schema its messages are
/// written with in Iggy and, for Avro, Protobuf and FlatBuffers, where the message
/// schema comes from.
/// Sinks and sources share it; the config crate reads it with the stream's other keys.
///
/// ```
/// use connector_sdk::Schema;
/// use transforms::StreamPayload;
///
/// let payload = StreamPayload {
///     avro_schema_json: Some(r#"{"type":"record","name":"R","fields":[{"name":"n","type":"long"}]}"#.to_owned()),
///     ..StreamPayload::new(Schema::Avro)
/// };
/// let codec = payload.codec()?;
/// assert!(codec.avro.is_some());
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamPayload {
    /// Payload schema.
    pub schema: Schema,
    /// Avro schema, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avro_schema_json: Option<String>,
    /// Avro schema, from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avro_schema_path: Option<String>,
    /// Protobuf: a compiled descriptor set file (`protoc --descriptor_set_out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto_descriptor_set: Option<String>,
    /// Protobuf: the full name of the message type in the descriptor set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto_message_type: Option<String>,
    /// FlatBuffers: a binary schema file (`flatc --schema -b`, a `.bfbs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat_buffer_schema_path: Option<String>,
    /// FlatBuffers: the root table's name (default: the schema's `root_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat_buffer_root_table: Option<String>,
}

impl StreamPayload {
    /// The keys of a `[[streams]]` entry that belong to the payload part.
    pub const KEYS: [&'static str; 7] = [
        "schema",
        "avro_schema_json",
        "avro_schema_path",
        "proto_descriptor_set",
        "proto_message_type",
        "flat_buffer_schema_path",
        "flat_buffer_root_table",
    ];

    /// `schema` without a message schema.
    pub fn new(schema: Schema) -> Self {
        StreamPayload {
            schema,
            avro_schema_json: None,
            avro_schema_path: None,
            proto_descriptor_set: None,
            proto_message_type: None,
            flat_buffer_schema_path: None,
            flat_buffer_root_table: None,
        }
    }

    /// The stream's codec: its schema, with the Avro schema from `avro_schema_json` or
    /// the file `avro_schema_path` names, and the Protobuf message type
    /// `proto_message_type` of the descriptor set file `proto_descriptor_set`, and the
    /// FlatBuffers root table of the binary schema `flat_buffer_schema_path`. Files
    /// are read here (a runtime does it once, when the connector starts); the error
    /// names the key at fault.
    pub fn codec(&self) -> Result<Codec, String> {
        let text = match (&self.avro_schema_json, &self.avro_schema_path) {
            (Some(json), _) => Some(json.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|error| format!("avro_schema_path {path}: {error}"))?,
            ),
            (None, None) => None,
        };
        let avro = match text {
            Some(text) => Some(Arc::new(
                AvroSchema::parse(&text).map_err(|error| format!("Avro schema: {error}"))?,
            )),
            None => None,
        };
        let proto = match (&self.proto_descriptor_set, &self.proto_message_type) {
            (Some(path), Some(message_type)) => {
                let bytes = std::fs::read(path)
                    .map_err(|error| format!("proto_descriptor_set {path}: {error}"))?;
                Some(Arc::new(
                    ProtoSchema::from_descriptor_set(&bytes, message_type)
                        .map_err(|error| format!("proto_descriptor_set {path}: {error}"))?,
                ))
            }
            (Some(_), None) => {
                return Err(
                    "proto_descriptor_set needs proto_message_type (the message's full name)"
                        .to_owned(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "proto_message_type needs proto_descriptor_set (a descriptor set file)"
                        .to_owned(),
                );
            }
            (None, None) => None,
        };
        let flat_buffer = match (&self.flat_buffer_schema_path, &self.flat_buffer_root_table) {
            (Some(path), root) => {
                let bytes = std::fs::read(path)
                    .map_err(|error| format!("flat_buffer_schema_path {path}: {error}"))?;
                Some(Arc::new(
                    FlatBufferSchema::from_bfbs(&bytes, root.as_deref())
                        .map_err(|error| format!("flat_buffer_schema_path {path}: {error}"))?,
                ))
            }
            (None, Some(_)) => {
                return Err(
                    "flat_buffer_root_table needs flat_buffer_schema_path (a .bfbs file)"
                        .to_owned(),
                );
            }
            (None, None) => None,
        };
        Ok(Codec {
            schema: self.schema,
            avro,
            proto,
            flat_buffer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_key_at_fault() {
        let missing = StreamPayload {
            avro_schema_path: Some("/nonexistent/schema.avsc".to_owned()),
            ..StreamPayload::new(Schema::Avro)
        };
        let error = missing.codec().err().unwrap_or_default();
        assert!(
            error.starts_with("avro_schema_path /nonexistent"),
            "{error}"
        );
        let half = StreamPayload {
            proto_message_type: Some("a.B".to_owned()),
            ..StreamPayload::new(Schema::Proto)
        };
        let error = half.codec().err().unwrap_or_default();
        assert!(error.contains("needs proto_descriptor_set"), "{error}");
        assert_eq!(
            StreamPayload::new(Schema::Json).codec(),
            Ok(Codec::plain(Schema::Json))
        );
    }
}
