//! Upstream's convert transforms, with upstream's keys: `proto_convert`,
//! `avro_convert` and `flat_buffer_convert`. Each converts between its binary format
//! and JSON (or JSON text, or the raw bytes), with the same codecs as a stream of that
//! schema ([`ProtoSchema`], [`AvroSchema`], [`FlatBufferSchema`]); the schema is read
//! and compiled once, when the transform is built.
//!
//! Decoding takes a payload still in the binary format ([`Payload::Encoded`], or the
//! bytes of a `raw` stream); encoding leaves [`Payload::Encoded`], which a stream of
//! that schema (or `raw`) writes as it is. `field_mappings` renames top-level fields of
//! the JSON side: before encoding, after decoding.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use connector_sdk::Schema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::chain::{Message, Step, Verdict};
use crate::payload::{Codec, JsonObject, Payload};
use crate::{AvroSchema, FlatBufferSchema, ProtoSchema};

/// `[transforms.proto_convert]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProtoConvertConfig {
    source_format: Schema,
    target_format: Schema,
    /// A `.proto` file, compiled when the transform is built.
    #[serde(default)]
    schema_path: Option<PathBuf>,
    #[serde(default)]
    message_type: Option<String>,
    #[serde(default)]
    field_mappings: Option<BTreeMap<String, String>>,
    #[serde(default)]
    schema_registry_url: Option<String>,
    /// A descriptor set: a file, or its bytes (upstream's form).
    #[serde(default)]
    descriptor_set: Option<DescriptorSet>,
    #[serde(default)]
    include_paths: Vec<PathBuf>,
    #[serde(default)]
    preserve_unknown_fields: bool,
    #[serde(default)]
    conversion_options: ProtoOptions,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DescriptorSet {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProtoOptions {
    validate_messages: bool,
    pretty_json: bool,
    include_metadata: bool,
    type_url_prefix: String,
    strict_mode: bool,
}

impl Default for ProtoOptions {
    fn default() -> Self {
        ProtoOptions {
            validate_messages: true,
            pretty_json: false,
            include_metadata: false,
            type_url_prefix: "type.googleapis.com".to_owned(),
            strict_mode: false,
        }
    }
}

/// `[transforms.avro_convert]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AvroConvertConfig {
    source_format: Schema,
    target_format: Schema,
    #[serde(default)]
    schema_path: Option<PathBuf>,
    #[serde(default)]
    schema_json: Option<String>,
    #[serde(default)]
    field_mappings: Option<BTreeMap<String, String>>,
    #[serde(default)]
    conversion_options: AvroOptions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AvroOptions {
    pretty_json: bool,
    include_metadata: bool,
    strict_mode: bool,
}

/// `[transforms.flat_buffer_convert]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlatBufferConvertConfig {
    source_format: Schema,
    target_format: Schema,
    /// A binary schema (`.bfbs`).
    #[serde(default)]
    schema_path: Option<PathBuf>,
    #[serde(default)]
    root_table_name: Option<String>,
    #[serde(default)]
    field_mappings: Option<BTreeMap<String, String>>,
    #[serde(default)]
    include_paths: Vec<PathBuf>,
    #[serde(default)]
    preserve_unknown_fields: bool,
    #[serde(default)]
    conversion_options: FlatBufferOptions,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FlatBufferOptions {
    verify_buffers: bool,
    pretty_json: bool,
    include_metadata: bool,
    buffer_size_hint: usize,
    strict_mode: bool,
}

impl Default for FlatBufferOptions {
    fn default() -> Self {
        FlatBufferOptions {
            verify_buffers: true,
            pretty_json: false,
            include_metadata: false,
            buffer_size_hint: 1024,
            strict_mode: false,
        }
    }
}

/// The binary format a convert transform works with, and its schema.
enum Binary {
    Proto(Arc<ProtoSchema>),
    Avro(Arc<AvroSchema>),
    FlatBuffer(Arc<FlatBufferSchema>),
}

impl Binary {
    fn schema(&self) -> Schema {
        match self {
            Binary::Proto(_) => Schema::Proto,
            Binary::Avro(_) => Schema::Avro,
            Binary::FlatBuffer(_) => Schema::FlatBuffer,
        }
    }

    /// What the metadata says a message was converted from, and its type.
    fn describe(&self) -> (&'static str, String) {
        match self {
            Binary::Proto(proto) => ("protobuf", proto.message_type().to_owned()),
            Binary::Avro(_) => ("avro", "datum".to_owned()),
            Binary::FlatBuffer(flat) => ("flat_buffer", flat.root_table().to_owned()),
        }
    }

    fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        match self {
            Binary::Proto(proto) => proto.decode(bytes),
            Binary::Avro(avro) => avro
                .decode(bytes)
                .map_err(|error| format!("invalid Avro datum: {error}")),
            Binary::FlatBuffer(flat) => flat.decode(bytes),
        }
    }

    fn encode(&self, value: &Value, size_hint: usize) -> Result<Vec<u8>, String> {
        match self {
            Binary::Proto(proto) => proto.encode(value),
            Binary::Avro(avro) => avro
                .encode(value)
                .map_err(|error| format!("cannot encode as Avro: {error}")),
            Binary::FlatBuffer(flat) => flat.encode_with_capacity(value, size_hint),
        }
    }

    fn has_field(&self, name: &str) -> bool {
        match self {
            Binary::Proto(proto) => proto.field_names().any(|field| field == name),
            Binary::Avro(avro) => avro.field_names().any(|field| field == name),
            Binary::FlatBuffer(flat) => flat.field_names().any(|field| field == name),
        }
    }
}

/// One convert transform, built.
pub(crate) struct Convert {
    name: &'static str,
    binary: Binary,
    from: Schema,
    to: Schema,
    mappings: Vec<(String, String)>,
    /// Refuse JSON fields the schema does not have (instead of leaving them out).
    strict: bool,
    /// Wrap decoded JSON as `{data, metadata}`.
    metadata: bool,
    pretty: bool,
    /// Decode binary payloads going out as raw bytes too, to check them.
    check: bool,
    type_url_prefix: Option<String>,
    size_hint: usize,
}

/// The format pairs `binary`'s transform converts.
fn pairs(name: &str, binary: Schema, from: Schema, to: Schema) -> Result<(), String> {
    let decoding = from == binary && matches!(to, Schema::Json | Schema::Text | Schema::Raw);
    let encoding = to == binary
        && match binary {
            // upstream's flat_buffer_convert only encodes from JSON.
            Schema::FlatBuffer => from == Schema::Json,
            _ => matches!(from, Schema::Json | Schema::Text | Schema::Raw),
        };
    if decoding || encoding {
        return Ok(());
    }
    let sources = if binary == Schema::FlatBuffer {
        "json"
    } else {
        "json, text or raw"
    };
    Err(format!(
        "transforms.{name}: cannot convert {from} to {to}; it converts {binary} to json, text or raw, and {sources} to {binary}"
    ))
}

impl Convert {
    /// A convert transform from what every table has: its formats, field mappings and
    /// `[strict_mode, include_metadata, pretty_json]`; binary payloads are checked.
    fn new(
        name: &'static str,
        binary: Binary,
        (from, to): (Schema, Schema),
        mappings: Option<BTreeMap<String, String>>,
        [strict, metadata, pretty]: [bool; 3],
    ) -> Self {
        Convert {
            name,
            binary,
            from,
            to,
            mappings: mappings.unwrap_or_default().into_iter().collect(),
            strict,
            metadata,
            pretty,
            check: true,
            type_url_prefix: None,
            size_hint: 0,
        }
    }

    /// `proto_convert`: the message type from a `.proto` file (`schema_path`) or a
    /// descriptor set.
    pub(crate) fn proto(config: ProtoConvertConfig) -> Result<Self, String> {
        const NAME: &str = "proto_convert";
        pairs(
            NAME,
            Schema::Proto,
            config.source_format,
            config.target_format,
        )?;
        if config.schema_registry_url.is_some() {
            return Err(format!(
                "transforms.{NAME}.schema_registry_url: schema registries are not supported (upstream ignores the key too); give schema_path or descriptor_set"
            ));
        }
        refuse_preserve(NAME, config.preserve_unknown_fields)?;
        let at = |key: &str| format!("transforms.{NAME}.{key}");
        let message_type = config.message_type.as_deref();
        let schema = match (&config.descriptor_set, &config.schema_path) {
            (Some(set), _) => {
                let bytes = match set {
                    DescriptorSet::Bytes(bytes) => bytes.clone(),
                    DescriptorSet::Path(path) => std::fs::read(path).map_err(|error| {
                        format!("{} {}: {error}", at("descriptor_set"), path.display())
                    })?,
                };
                let message_type = message_type
                    .ok_or_else(|| format!("{}: needed with descriptor_set", at("message_type")))?;
                ProtoSchema::from_descriptor_set(&bytes, message_type)
                    .map_err(|error| format!("{}: {error}", at("descriptor_set")))?
            }
            (None, Some(path)) => {
                ProtoSchema::from_proto_file(path, &config.include_paths, message_type)
                    .map_err(|error| format!("{} {}: {error}", at("schema_path"), path.display()))?
            }
            (None, None) => {
                return Err(format!(
                    "transforms.{NAME}: needs schema_path (a .proto file) or descriptor_set"
                ));
            }
        };
        let options = config.conversion_options;
        Ok(Convert {
            check: options.validate_messages,
            type_url_prefix: Some(options.type_url_prefix),
            ..Convert::new(
                NAME,
                Binary::Proto(Arc::new(schema)),
                (config.source_format, config.target_format),
                config.field_mappings,
                [
                    options.strict_mode,
                    options.include_metadata,
                    options.pretty_json,
                ],
            )
        })
    }

    /// `avro_convert`: the schema from `schema_json` or the file `schema_path`, parsed
    /// once (upstream parses it again for every message).
    pub(crate) fn avro(config: AvroConvertConfig) -> Result<Self, String> {
        const NAME: &str = "avro_convert";
        pairs(
            NAME,
            Schema::Avro,
            config.source_format,
            config.target_format,
        )?;
        let (key, text) = match (&config.schema_json, &config.schema_path) {
            (Some(json), _) => ("schema_json", json.clone()),
            (None, Some(path)) => (
                "schema_path",
                std::fs::read_to_string(path).map_err(|error| {
                    format!("transforms.{NAME}.schema_path {}: {error}", path.display())
                })?,
            ),
            (None, None) => {
                return Err(format!(
                    "transforms.{NAME}: needs schema_json or schema_path"
                ));
            }
        };
        let schema = AvroSchema::parse(&text)
            .map_err(|error| format!("transforms.{NAME}.{key}: {error}"))?;
        let options = config.conversion_options;
        // Avro datums have no framing to check short of decoding them: raw bytes
        // relabelled as Avro are always checked.
        Ok(Convert::new(
            NAME,
            Binary::Avro(Arc::new(schema)),
            (config.source_format, config.target_format),
            config.field_mappings,
            [
                options.strict_mode,
                options.include_metadata,
                options.pretty_json,
            ],
        ))
    }

    /// `flat_buffer_convert`: the root table of a binary schema (`schema_path`, a
    /// `.bfbs`).
    pub(crate) fn flat_buffer(config: FlatBufferConvertConfig) -> Result<Self, String> {
        const NAME: &str = "flat_buffer_convert";
        pairs(
            NAME,
            Schema::FlatBuffer,
            config.source_format,
            config.target_format,
        )?;
        refuse_preserve(NAME, config.preserve_unknown_fields)?;
        // A binary schema has its includes compiled in; the key is accepted as upstream
        // has it.
        let _ = config.include_paths;
        let path = config.schema_path.ok_or_else(|| {
            format!("transforms.{NAME}: needs schema_path (a binary schema, `flatc --schema -b`)")
        })?;
        let at = format!("transforms.{NAME}.schema_path {}", path.display());
        let bytes = std::fs::read(&path).map_err(|error| format!("{at}: {error}"))?;
        let options = config.conversion_options;
        let schema = FlatBufferSchema::from_bfbs(&bytes, config.root_table_name.as_deref())
            .map_err(|error| format!("{at}: {error}"))?
            .verify(options.verify_buffers);
        Ok(Convert {
            check: options.verify_buffers,
            size_hint: options.buffer_size_hint,
            ..Convert::new(
                NAME,
                Binary::FlatBuffer(Arc::new(schema)),
                (config.source_format, config.target_format),
                config.field_mappings,
                [
                    options.strict_mode,
                    options.include_metadata,
                    options.pretty_json,
                ],
            )
        })
    }

    fn decode(&self, message: &mut Message) -> Result<(), String> {
        let schema = self.binary.schema();
        let bytes: Bytes = match &message.payload {
            Payload::Encoded(encoded, bytes) if *encoded == schema => bytes.clone(),
            Payload::Raw(bytes) => bytes.clone(),
            other => {
                return Err(format!(
                    "expected a {schema} payload, got {} (a stream that decodes {schema} itself needs no {})",
                    kind(other),
                    self.name
                ));
            }
        };
        if self.to == Schema::Raw {
            if self.check {
                self.binary.decode(&bytes)?;
            }
            message.payload = Payload::Raw(bytes);
            return Ok(());
        }
        let mut value = self.binary.decode(&bytes)?;
        rename(&mut value, &self.mappings);
        if self.metadata {
            let (from, message_type) = self.binary.describe();
            let mut metadata = json!({ "converted_from": from, "message_type": message_type });
            if let Some(prefix) = &self.type_url_prefix {
                metadata["type_url"] = Value::String(format!("{prefix}/{message_type}"));
            }
            value = json!({ "data": value, "metadata": metadata });
        }
        message.payload = match self.to {
            Schema::Text => Payload::Text(
                if self.pretty {
                    serde_json::to_string_pretty(&value)
                } else {
                    serde_json::to_string(&value)
                }
                .map_err(|error| error.to_string())?,
            ),
            _ => match value {
                Value::Object(map) => Payload::Object(JsonObject::from_map(map)),
                other => Payload::Json(other),
            },
        };
        Ok(())
    }

    fn encode(&self, message: &mut Message) -> Result<(), String> {
        let schema = self.binary.schema();
        let mut value = match (self.from, &message.payload) {
            (Schema::Json, Payload::Object(_) | Payload::Json(_)) => message.payload.to_value(),
            (Schema::Text, Payload::Text(text)) => serde_json::from_str(text)
                .map_err(|error| format!("the text is not JSON: {error}"))?,
            (Schema::Raw, Payload::Raw(bytes)) => {
                // Raw bytes are taken to be a message already; checked when asked to.
                if self.check {
                    self.binary.decode(bytes)?;
                }
                message.payload = Payload::Encoded(schema, bytes.clone());
                return Ok(());
            }
            (from, other) => {
                return Err(format!(
                    "expected a {from} payload (source_format), got {}",
                    kind(other)
                ));
            }
        };
        rename(&mut value, &self.mappings);
        if self.strict
            && let Value::Object(map) = &value
            && let Some(unknown) = map.keys().find(|key| !self.binary.has_field(key))
        {
            return Err(format!(
                "field {unknown}: not in the {schema} schema (strict_mode)"
            ));
        }
        let bytes = self.binary.encode(&value, self.size_hint)?;
        message.payload = Payload::Encoded(schema, Bytes::from(bytes));
        Ok(())
    }
}

impl Step for Convert {
    fn apply(&self, message: &mut Message) -> Result<Verdict, String> {
        if self.decodes() {
            self.decode(message)?;
        } else {
            self.encode(message)?;
        }
        Ok(Verdict::Keep)
    }

    fn decodes(&self) -> bool {
        self.from == self.binary.schema()
    }

    fn writes(&self) -> Option<Schema> {
        Some(self.to)
    }

    fn codec(&self) -> Option<Codec> {
        let plain = Codec::plain(self.binary.schema());
        Some(match &self.binary {
            Binary::Proto(proto) => Codec {
                proto: Some(proto.clone()),
                ..plain
            },
            Binary::Avro(avro) => Codec {
                avro: Some(avro.clone()),
                ..plain
            },
            Binary::FlatBuffer(flat_buffer) => Codec {
                flat_buffer: Some(flat_buffer.clone()),
                ..plain
            },
        })
    }
}

fn refuse_preserve(name: &str, preserve: bool) -> Result<(), String> {
    if preserve {
        return Err(format!(
            "transforms.{name}.preserve_unknown_fields: true is not supported: fields the schema lacks have no place in the binary message (they are left out, or refused with conversion_options.strict_mode)"
        ));
    }
    Ok(())
}

/// Renames the top-level fields of an object: `from` becomes `to`.
fn rename(value: &mut Value, mappings: &[(String, String)]) {
    let Value::Object(map) = value else {
        return;
    };
    if mappings.is_empty() {
        return;
    }
    let renamed: Map<String, Value> = std::mem::take(map)
        .into_iter()
        .map(
            |(key, value)| match mappings.iter().find(|(from, _)| *from == key) {
                Some((_, to)) => (to.clone(), value),
                None => (key, value),
            },
        )
        .collect();
    *map = renamed;
}

/// What a payload is, for errors.
fn kind(payload: &Payload) -> String {
    match payload {
        Payload::Object(_) => "a JSON object".to_owned(),
        Payload::Json(_) => "a JSON value".to_owned(),
        Payload::Text(_) => "text".to_owned(),
        Payload::Raw(_) => "raw bytes".to_owned(),
        Payload::Encoded(schema, _) => format!("a {schema} payload"),
    }
}
