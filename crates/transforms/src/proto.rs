//! Protobuf payloads: one message type from a compiled descriptor set.
//!
//! A stream with `schema = "proto"` names a descriptor set file (what `protoc
//! --include_imports --descriptor_set_out=FILE` or `buf build -o FILE` writes) and the
//! full name of its message type. Payloads are decoded to JSON for transforms and
//! encoded back from JSON, with protobuf's JSON mapping, except that keys are the
//! field names of the `.proto` file (as transforms name them), every field is present
//! (defaults included, so a filter can test a zero), and 64-bit integers stay numbers.
//! Parsing JSON accepts the camelCase names and quoted integers of the canonical
//! mapping too, and leaves out JSON fields the message type does not have (as the Avro
//! encoder does), so a JSON source can feed a Protobuf stream of some of its fields.
//!
//! The descriptor and JSON handling is `prost-reflect`'s: the JSON mapping of
//! protobuf (well-known types, `Any`, enums by name, oneofs, maps) is large and subtle,
//! and that crate implements and tests it.

use prost_reflect::prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// How messages are shown as JSON (see the module docs).
const TO_JSON: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .skip_default_fields(false)
    .stringify_64_bit_integers(false);

/// How JSON is read into messages: fields the type lacks are left out.
const FROM_JSON: DeserializeOptions = DeserializeOptions::new().deny_unknown_fields(false);

/// A protobuf message type, ready to decode and encode payloads.
///
/// ```
/// # fn descriptor_set() -> Vec<u8> {
/// #     use prost_reflect::prost::Message;
/// #     use prost_reflect::prost_types::*;
/// #     let field = FieldDescriptorProto {
/// #         name: Some("name".into()), number: Some(1),
/// #         label: Some(field_descriptor_proto::Label::Optional as i32),
/// #         r#type: Some(field_descriptor_proto::Type::String as i32),
/// #         ..Default::default()
/// #     };
/// #     FileDescriptorSet { file: vec![FileDescriptorProto {
/// #         name: Some("user.proto".into()), package: Some("demo".into()),
/// #         syntax: Some("proto3".into()),
/// #         message_type: vec![DescriptorProto { name: Some("User".into()), field: vec![field], ..Default::default() }],
/// #         ..Default::default()
/// #     }] }.encode_to_vec()
/// # }
/// use transforms::ProtoSchema;
///
/// let schema = ProtoSchema::from_descriptor_set(&descriptor_set(), "demo.User")?;
/// let bytes = schema.encode(&serde_json::json!({ "name": "ann", "not_in_the_type": 1 }))?;
/// assert_eq!(bytes, b"\x0a\x03ann");
/// assert_eq!(schema.decode(&bytes)?, serde_json::json!({ "name": "ann" }));
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProtoSchema {
    message: MessageDescriptor,
}

impl ProtoSchema {
    /// Reads a serialized `FileDescriptorSet` and picks `message_type` (its full name,
    /// `package.Message`) from it.
    pub fn from_descriptor_set(bytes: &[u8], message_type: &str) -> Result<Self, String> {
        let pool = DescriptorPool::decode(bytes)
            .map_err(|error| format!("not a valid protobuf descriptor set: {error}"))?;
        Self::from_pool(&pool, Some(message_type))
    }

    /// Compiles the `.proto` file `path` (with the files it imports, found in
    /// `include_paths` or beside it) and picks `message_type` from it, or its only
    /// message type when `None`. The compiler is `protox`, pure Rust: no `protoc`.
    pub fn from_proto_file(
        path: &Path,
        include_paths: &[PathBuf],
        message_type: Option<&str>,
    ) -> Result<Self, String> {
        let directory = path.parent().unwrap_or(Path::new("."));
        let file = path.file_name().ok_or("not a file name")?;
        let mut includes = vec![directory.to_path_buf()];
        includes.extend(include_paths.iter().cloned());
        let mut compiler =
            protox::Compiler::new(&includes).map_err(|error| format!("cannot compile: {error}"))?;
        compiler
            .include_imports(true)
            .open_file(file)
            .map_err(|error| format!("cannot compile: {error}"))?;
        Self::from_pool(&compiler.descriptor_pool(), message_type)
    }

    /// `message_type` from `pool`, or its only message type.
    fn from_pool(pool: &DescriptorPool, message_type: Option<&str>) -> Result<Self, String> {
        let mut known: Vec<String> = pool
            .all_messages()
            .filter(|message| !message.is_map_entry())
            .map(|message| message.full_name().to_owned())
            .collect();
        known.sort();
        let Some(message_type) = message_type else {
            return match known.as_slice() {
                [only] => Self::from_pool(pool, Some(only)),
                _ => Err(format!(
                    "name the message type (message_type); the schema has: {}",
                    known.join(", ")
                )),
            };
        };
        let name = message_type.trim_start_matches('.');
        match pool.get_message_by_name(name) {
            Some(message) => Ok(ProtoSchema { message }),
            None => Err(format!(
                "the descriptor set has no message type {name:?} (it has: {})",
                known.join(", ")
            )),
        }
    }

    /// The message type's field names.
    pub fn field_names(&self) -> impl Iterator<Item = String> {
        self.message.fields().map(|field| field.name().to_owned())
    }

    /// The message type's full name.
    pub fn message_type(&self) -> &str {
        self.message.full_name()
    }

    /// Decodes one message to a JSON value (an object).
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        let message = DynamicMessage::decode(self.message.clone(), bytes)
            .map_err(|error| format!("invalid {} message: {error}", self.message_type()))?;
        message
            .serialize_with_options(serde_json::value::Serializer, &TO_JSON)
            .map_err(|error| format!("cannot show {} as JSON: {error}", self.message_type()))
    }

    /// Encodes a JSON value (an object with the message's fields) as one message;
    /// fields the message type does not have are left out.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
        let mut track = serde_path_to_error::Track::new();
        let fields = serde_path_to_error::Deserializer::new(value, &mut track);
        let message =
            DynamicMessage::deserialize_with_options(self.message.clone(), fields, &FROM_JSON)
                .map_err(|error| {
                    format!(
                        "not a valid {}: field {}: {error}",
                        self.message_type(),
                        track.path()
                    )
                })?;
        Ok(message.encode_to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::prost_types::field_descriptor_proto::{Label, Type};
    use prost_reflect::prost_types::{
        DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
        FileDescriptorProto, FileDescriptorSet,
    };
    use serde_json::json;

    fn field(name: &str, number: i32, kind: Type, label: Label) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.to_owned()),
            number: Some(number),
            label: Some(label as i32),
            r#type: Some(kind as i32),
            ..FieldDescriptorProto::default()
        }
    }

    /// `demo.Order { uint64 id = 1; string customer = 2; repeated string items = 3;
    /// Status status = 4; bool paid = 5; }` with `enum Status { NEW = 0; SHIPPED = 1; }`.
    fn order_set() -> Vec<u8> {
        let mut status = field("status", 4, Type::Enum, Label::Optional);
        status.type_name = Some(".demo.Status".to_owned());
        let file = FileDescriptorProto {
            name: Some("order.proto".to_owned()),
            package: Some("demo".to_owned()),
            syntax: Some("proto3".to_owned()),
            message_type: vec![DescriptorProto {
                name: Some("Order".to_owned()),
                field: vec![
                    field("id", 1, Type::Uint64, Label::Optional),
                    field("customer", 2, Type::String, Label::Optional),
                    field("items", 3, Type::String, Label::Repeated),
                    status,
                    field("paid", 5, Type::Bool, Label::Optional),
                ],
                ..DescriptorProto::default()
            }],
            enum_type: vec![EnumDescriptorProto {
                name: Some("Status".to_owned()),
                value: ["NEW", "SHIPPED"]
                    .iter()
                    .zip(0..)
                    .map(|(name, number)| EnumValueDescriptorProto {
                        name: Some((*name).to_owned()),
                        number: Some(number),
                        ..EnumValueDescriptorProto::default()
                    })
                    .collect(),
                ..EnumDescriptorProto::default()
            }],
            ..FileDescriptorProto::default()
        };
        FileDescriptorSet { file: vec![file] }.encode_to_vec()
    }

    #[test]
    fn messages_round_trip_through_json_with_field_names_and_defaults() {
        let schema = ProtoSchema::from_descriptor_set(&order_set(), "demo.Order").unwrap();
        assert_eq!(schema.message_type(), "demo.Order");
        let order = json!({ "id": 18446744073709551615u64, "customer": "ann", "items": ["a", "b"], "status": "SHIPPED", "paid": false });
        let bytes = schema.encode(&order).unwrap();
        assert_eq!(schema.decode(&bytes).unwrap(), order);
        // Defaults are shown, 64-bit integers are numbers, enums are names.
        let empty = schema.decode(&[]).unwrap();
        assert_eq!(
            empty,
            json!({ "id": 0, "customer": "", "items": [], "status": "NEW", "paid": false })
        );
        // The canonical mapping's spellings are accepted too.
        let canonical = schema.encode(&json!({ "id": "7", "status": 1 })).unwrap();
        assert_eq!(schema.decode(&canonical).unwrap()["id"], 7);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let missing = ProtoSchema::from_descriptor_set(&order_set(), "demo.Missing").unwrap_err();
        assert!(
            missing.contains("no message type \"demo.Missing\""),
            "{missing}"
        );
        assert!(missing.contains("demo.Order"), "{missing}");
        let garbage = ProtoSchema::from_descriptor_set(b"\xff\xff", "demo.Order").unwrap_err();
        assert!(
            garbage.contains("not a valid protobuf descriptor set"),
            "{garbage}"
        );
        let schema = ProtoSchema::from_descriptor_set(&order_set(), "demo.Order").unwrap();
        let wrong_type = schema.encode(&json!({ "id": "not a number" })).unwrap_err();
        assert!(
            wrong_type.contains("not a valid demo.Order"),
            "{wrong_type}"
        );
        let truncated = schema.decode(b"\x12\x05ab").unwrap_err();
        assert!(
            truncated.contains("invalid demo.Order message"),
            "{truncated}"
        );
    }
}
