//! Property tests: no transform settings and no payload make the transforms panic or
//! hang. Chains are built from arbitrary settings of every transform (well-formed,
//! mistyped, unknown) and run over arbitrary payloads (bytes, JSON objects and values,
//! mangled JSON, text, Avro datums, Protobuf messages) decoded and encoded with every
//! codec, as the runtime shapes messages; Avro schemas and Protobuf messages get
//! arbitrary input of their own. Each input gets a result or an error within a
//! deadline.
//!
//! CI runs a few cases per property (`PROPTEST_CASES` overrides it). A long run:
//!
//! ```text
//! PROPTEST_CASES=10000 cargo test -p transforms --test properties
//! ```

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use connector_sdk::{ConnectorKind, Schema};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use prost_reflect::prost::Message as _;
use prost_reflect::prost_types::field_descriptor_proto::{Label, Type};
use prost_reflect::prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
    FileDescriptorProto, FileDescriptorSet,
};
use serde_json::{Map, Value, json};
use transforms::{
    AvroSchema, Codec, FlatBufferSchema, ProtoSchema, TRANSFORMS, TransformChain, shape,
};

/// Cases per property in CI; `PROPTEST_CASES` sets another number.
const CASES: u32 = 64;

/// Longest one input may take before it counts as a hang (debug build, a loaded
/// machine: generous).
const DEADLINE: Duration = Duration::from_secs(20);

#[path = "../../../tests/support/property.rs"]
#[allow(dead_code)]
mod property;

fn config() -> ProptestConfig {
    property::config(CASES)
}

fn within<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    property::within(what, DEADLINE, work)
}

// ---- JSON ----------------------------------------------------------------------------

/// Field names: the ones the settings below use (so transforms find what they look
/// for), and odd ones: empty, dotted, quotes, backslashes, control characters, unicode.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(vec![
            "a", "b", "id", "data", "log", "level", "n", "kind", "tmp1", "user_name", "password",
        ])
        .prop_map(str::to_owned),
        2 => "\\PC{0,8}",
        1 => "[a-z]{1,4}(\\.[a-z0-9]{1,4}){1,3}",
        1 => select(vec!["", "\"", "\\", "\u{0}", "a\"b", "\\u0041", "é", "😀", "\u{7f}", "\n"])
            .prop_map(str::to_owned),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-20i64..20).prop_map(Value::from),
        any::<f64>().prop_map(
            |float| serde_json::Number::from_f64(float).map_or(Value::Null, Value::Number)
        ),
    ]
}

/// Any JSON value, nested a few levels, objects keyed by [`key`].
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        "\\PC{0,12}".prop_map(Value::String),
        select(vec!["debug", "info", "order", "7", "true", ""]).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(key(), inner, 0..5).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A JSON object (what the transforms work on).
fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(key(), json_value(), 0..8).prop_map(|map| map.into_iter().collect())
}

// ---- transform settings --------------------------------------------------------------

/// A dotted path into a payload.
fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => key(),
        2 => (key(), vec(prop_oneof![key(), (0usize..4).prop_map(|n| n.to_string())], 1..3))
            .prop_map(|(first, rest)| format!("{first}.{}", rest.join("."))),
        1 => select(vec![".", "..", "a.", ".a", "a..b"]).prop_map(str::to_owned),
    ]
}

/// Regexes: anything (most are invalid), and valid ones of every kind.
fn regex_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "\\PC{0,10}",
        2 => select(vec![
            "^tmp", "(a*)*b", "[", "(?i)ÄB", "\\p{Greek}+", "a{1000}{1000}", "(?-u:\\xFF)",
            "\\b", "$", ".*", "", "(", "a{4294967295}", "[[:alpha:]]", "\\d+\\.\\d+",
        ])
        .prop_map(str::to_owned),
    ]
}

/// A `matches` / `value_pattern` table: each kind, and garbage.
fn value_pattern() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => json_value().prop_map(|value| json!({ "equals": value })),
        1 => "\\PC{0,6}".prop_map(|text| json!({ "contains": text })),
        2 => regex_text().prop_map(|text| json!({ "regex": text })),
        1 => number().prop_map(|bound| json!({ "greater_than": bound })),
        1 => number().prop_map(|bound| json!({ "less_than": bound })),
        1 => (number(), number()).prop_map(|(low, high)| json!({ "between": [low, high] })),
        2 => select(vec![
            "is_null", "is_not_null", "is_string", "is_number", "is_boolean", "is_object",
            "is_array", "is_nothing",
        ])
        .prop_map(Value::from),
        1 => json_value(),
    ]
}

/// Mostly what [`value_pattern`] gives that a transform accepts.
fn good_value_pattern() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => json_value().prop_map(|value| json!({ "equals": value })),
        1 => "\\PC{0,6}".prop_map(|text| json!({ "contains": text })),
        1 => "[a-z^$.*]{0,6}".prop_map(|text| json!({ "regex": text })),
        1 => (-20i64..20).prop_map(|bound| json!({ "greater_than": bound })),
        1 => (-20i64..20).prop_map(|bound| json!({ "less_than": bound })),
        1 => (-20i64..0, 0i64..20).prop_map(|(low, high)| json!({ "between": [low, high] })),
        2 => select(vec![
            "is_null", "is_not_null", "is_string", "is_number", "is_boolean", "is_object",
            "is_array",
        ])
        .prop_map(Value::from),
        1 => value_pattern(),
    ]
}

/// An `add_fields` / `update_fields` value: static, computed (known or not), plain.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => json_value().prop_map(|value| json!({ "static": value })),
        2 => select(vec![
            "date_time", "timestamp_nanos", "timestamp_micros", "timestamp_millis",
            "timestamp_seconds", "uuid_v4", "uuid_v7",
        ])
        .prop_map(|kind| json!({ "computed": kind })),
        1 => select(vec![json!({ "computed": "uuid_v9" }), json!({ "static": 1, "computed": "uuid_v4" })]),
        2 => json_value(),
    ]
}

/// A `[transforms]` section: tables in order, a name listed once (mostly: twice is an
/// error to report).
fn transforms() -> impl Strategy<Value = Vec<(String, Value)>> {
    (vec(transform(), 0..5), 0..8).prop_map(|(mut tables, twice)| {
        if twice != 0 {
            let mut seen = std::collections::BTreeSet::new();
            tables.retain(|(name, _)| seen.insert(name.clone()));
        }
        tables
    })
}

/// One `[transforms.<name>]` table: well-formed settings of each transform, any
/// settings under a known or unknown name, and any `enabled`.
fn transform() -> impl Strategy<Value = (String, Value)> {
    let add = vec((key(), field_value()), 0..4).prop_map(|fields| {
        let fields: Vec<Value> = fields
            .into_iter()
            .map(|(key, value)| json!({ "key": key, "value": value }))
            .collect();
        ("add_fields".to_owned(), json!({ "fields": fields }))
    });
    let delete = vec(key(), 0..4)
        .prop_map(|fields| ("delete_fields".to_owned(), json!({ "fields": fields })));
    let condition = prop_oneof![
        8 => select(vec!["always", "key_exists", "key_not_exists"]),
        1 => Just("sometimes"),
    ];
    let update = vec((key(), field_value(), condition), 0..4).prop_map(|fields| {
        let fields: Vec<Value> = fields
            .into_iter()
            .map(|(key, value, condition)| json!({ "key": key, "value": value, "condition": condition }))
            .collect();
        ("update_fields".to_owned(), json!({ "fields": fields }))
    });
    let key_pattern = (
        prop_oneof![
            8 => select(vec!["exact", "starts_with", "ends_with", "contains", "regex"]),
            1 => Just("glob"),
        ],
        regex_text(),
    )
        .prop_map(|(kind, text)| {
            Value::Object(Map::from_iter([(kind.to_owned(), Value::from(text))]))
        });
    let pattern = (
        proptest::option::of(key_pattern),
        proptest::option::of(good_value_pattern()),
    )
        .prop_map(|(key, value)| {
            let mut pattern = Map::new();
            if let Some(key) = key {
                pattern.insert("key_pattern".to_owned(), key);
            }
            if let Some(value) = value {
                pattern.insert("value_pattern".to_owned(), value);
            }
            Value::Object(pattern)
        });
    let filter_fields = (vec(key(), 0..3), vec(pattern, 0..3), any::<bool>()).prop_map(
        |(keep, patterns, include)| {
            (
                "filter_fields".to_owned(),
                json!({ "keep_fields": keep, "patterns": patterns, "include_matching": include }),
            )
        },
    );
    let unwrap = key().prop_map(|field| ("unwrap_envelope".to_owned(), json!({ "field": field })));
    let filter =
        (path(), good_value_pattern(), any::<bool>()).prop_map(|(field, matches, keep)| {
            (
                "filter".to_owned(),
                json!({ "field": field, "matches": matches, "keep_matching": keep }),
            )
        });
    let route = (
        path(),
        btree_map("\\PC{0,6}", "\\PC{0,6}", 0..4),
        proptest::option::of("\\PC{0,6}"),
    )
        .prop_map(|(field, topics, default)| {
            let mut table = json!({ "field": field, "topics": topics });
            if let Some(default) = default {
                table["default_topic"] = Value::from(default);
            }
            ("route".to_owned(), table)
        });
    let name = prop_oneof![
        4 => select(TRANSFORMS.to_vec()).prop_map(str::to_owned),
        1 => select(vec!["avro_convert", "proto_convert", "add_feilds"]).prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ];
    let anything = (name, json_value());
    let enabled = prop_oneof![
        12 => Just(None),
        4 => any::<bool>().prop_map(|flag| Some(Value::Bool(flag))),
        1 => json_value().prop_map(Some),
    ];
    (
        prop_oneof![
            3 => add,
            2 => delete,
            3 => update,
            3 => filter_fields,
            2 => unwrap,
            3 => filter,
            2 => route,
            1 => anything,
        ],
        enabled,
    )
        .prop_map(|((name, mut settings), enabled)| {
            if let (Some(enabled), Some(table)) = (enabled, settings.as_object_mut()) {
                table.insert("enabled".to_owned(), enabled);
            }
            (name, settings)
        })
}

// ---- codecs --------------------------------------------------------------------------

/// Avro schemas the codecs use: a record of every type, and an array of a type that
/// takes no bytes.
const AVRO_SCHEMAS: [&str; 3] = [
    r#"{"type":"record","name":"Event","fields":[
        {"name":"id","type":"long"},
        {"name":"n","type":"int"},
        {"name":"level","type":["null","string"]},
        {"name":"ok","type":"boolean"},
        {"name":"score","type":"double"},
        {"name":"ratio","type":"float"},
        {"name":"blob","type":"bytes"},
        {"name":"tag","type":{"type":"fixed","name":"Tag","size":2}},
        {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["order","other"]}},
        {"name":"items","type":{"type":"array","items":"string"}},
        {"name":"attrs","type":{"type":"map","values":"long"}},
        {"name":"data","type":["null",{"type":"record","name":"Inner","fields":[{"name":"x","type":"Tag"}]}]}
    ]}"#,
    r#"{"type":"array","items":"null"}"#,
    r#"["null","long","string",{"type":"map","values":{"type":"array","items":"boolean"}}]"#,
];

/// An Avro schema of any shape: every kind of type, nested, named types defined and
/// referred to (and some refused: unknown, recursive).
fn avro_schema() -> impl Strategy<Value = Value> {
    let name = || select(vec!["A", "B", "C"]);
    let leaf = prop_oneof![
        4 => select(vec![
            "null", "boolean", "int", "long", "float", "double", "bytes", "string",
        ])
        .prop_map(Value::from),
        1 => name().prop_map(Value::from),
        1 => (name(), vec("[a-z]{1,3}", 0..4))
            .prop_map(|(name, symbols)| json!({ "type": "enum", "name": name, "symbols": symbols })),
        1 => (name(), 0u64..4)
            .prop_map(|(name, size)| json!({ "type": "fixed", "name": name, "size": size })),
    ];
    leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            inner
                .clone()
                .prop_map(|items| json!({ "type": "array", "items": items })),
            inner
                .clone()
                .prop_map(|values| json!({ "type": "map", "values": values })),
            vec(inner.clone(), 1..4).prop_map(Value::Array),
            (name(), vec(("[a-z]{1,3}", inner), 0..4)).prop_map(|(name, fields)| {
                let fields: Vec<Value> = fields
                    .into_iter()
                    .map(|(field, kind)| json!({ "name": field, "type": kind }))
                    .collect();
                json!({ "type": "record", "name": name, "fields": fields })
            }),
        ]
    })
}

/// `demo.Order`: scalars of every kind, repeated, map, enum, a nested message that
/// may nest itself.
fn descriptor_set() -> Vec<u8> {
    fn field(name: &str, number: i32, kind: Type, label: Label) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.to_owned()),
            number: Some(number),
            label: Some(label as i32),
            r#type: Some(kind as i32),
            ..FieldDescriptorProto::default()
        }
    }
    let named = |mut field: FieldDescriptorProto, type_name: &str| {
        field.type_name = Some(type_name.to_owned());
        field
    };
    let entry = DescriptorProto {
        name: Some("AttrsEntry".to_owned()),
        field: vec![
            field("key", 1, Type::String, Label::Optional),
            field("value", 2, Type::Int64, Label::Optional),
        ],
        options: Some(prost_reflect::prost_types::MessageOptions {
            map_entry: Some(true),
            ..Default::default()
        }),
        ..DescriptorProto::default()
    };
    let order = DescriptorProto {
        name: Some("Order".to_owned()),
        field: vec![
            field("id", 1, Type::Uint64, Label::Optional),
            field("customer", 2, Type::String, Label::Optional),
            field("items", 3, Type::String, Label::Repeated),
            named(
                field("status", 4, Type::Enum, Label::Optional),
                ".demo.Status",
            ),
            field("paid", 5, Type::Bool, Label::Optional),
            field("total", 6, Type::Double, Label::Optional),
            field("blob", 7, Type::Bytes, Label::Optional),
            field("n", 8, Type::Sint32, Label::Optional),
            named(
                field("attrs", 9, Type::Message, Label::Repeated),
                ".demo.Order.AttrsEntry",
            ),
            named(
                field("parent", 10, Type::Message, Label::Optional),
                ".demo.Order",
            ),
            field("ratio", 11, Type::Float, Label::Optional),
            field("fixed", 12, Type::Fixed64, Label::Repeated),
        ],
        nested_type: vec![entry],
        ..DescriptorProto::default()
    };
    let status = EnumDescriptorProto {
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
    };
    let file = FileDescriptorProto {
        name: Some("order.proto".to_owned()),
        package: Some("demo".to_owned()),
        syntax: Some("proto3".to_owned()),
        message_type: vec![order],
        enum_type: vec![status],
        ..FileDescriptorProto::default()
    };
    FileDescriptorSet { file: vec![file] }.encode_to_vec()
}

/// Every codec: json, raw, text, flatbuffer without a schema (its bytes stay
/// encoded), Avro with each schema, Protobuf, and FlatBuffers with a schema. Made once: codecs are compared by
/// their schema instances.
fn codecs() -> &'static [Codec] {
    static CODECS: OnceLock<Vec<Codec>> = OnceLock::new();
    CODECS.get_or_init(|| {
        let mut codecs: Vec<Codec> = [Schema::Json, Schema::Raw, Schema::Text, Schema::FlatBuffer]
            .into_iter()
            .map(Codec::plain)
            .collect();
        for schema in AVRO_SCHEMAS {
            codecs.push(Codec {
                avro: Some(Arc::new(AvroSchema::parse(schema).unwrap())),
                ..Codec::plain(Schema::Avro)
            });
        }
        codecs.push(Codec {
            proto: Some(Arc::new(
                ProtoSchema::from_descriptor_set(&descriptor_set(), "demo.Order").unwrap(),
            )),
            ..Codec::plain(Schema::Proto)
        });
        codecs.push(Codec {
            flat_buffer: Some(Arc::new(
                FlatBufferSchema::from_bfbs(include_bytes!("data/sensor.bfbs"), None).unwrap(),
            )),
            ..Codec::plain(Schema::FlatBuffer)
        });
        // Avro and Protobuf without their schema.
        codecs.push(Codec::plain(Schema::Avro));
        codecs.push(Codec::plain(Schema::Proto));
        codecs
    })
}

fn codec() -> impl Strategy<Value = Codec> {
    (0..codecs().len()).prop_map(|index| codecs()[index].clone())
}

// ---- payloads ------------------------------------------------------------------------

/// A change to valid JSON text, to reach the scanner's error paths.
#[derive(Debug, Clone)]
enum Mangle {
    Truncate(usize),
    Insert(usize, u8),
    Replace(usize, u8),
    Remove(usize),
}

fn mangled(text: &[u8], mangle: &Mangle) -> Vec<u8> {
    let mut bytes = text.to_vec();
    let at = |index: usize, len: usize| if len == 0 { 0 } else { index % len };
    match *mangle {
        Mangle::Truncate(index) => bytes.truncate(at(index, text.len() + 1)),
        Mangle::Insert(index, byte) => bytes.insert(at(index, text.len() + 1), byte),
        Mangle::Replace(index, byte) if !bytes.is_empty() => {
            let index = at(index, bytes.len());
            bytes[index] = byte;
        }
        Mangle::Remove(index) if !bytes.is_empty() => {
            bytes.remove(at(index, text.len()));
        }
        _ => {}
    }
    bytes
}

/// Bytes that matter to JSON, and any byte.
fn json_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => select(b"{}[]\",:\\ 0123456789.-+eEtrufalsn\n\t\x00\x1f\xc3\xff".to_vec()),
        1 => any::<u8>(),
    ]
}

fn mangle() -> impl Strategy<Value = Mangle> {
    prop_oneof![
        any::<usize>().prop_map(Mangle::Truncate),
        (any::<usize>(), json_byte()).prop_map(|(at, byte)| Mangle::Insert(at, byte)),
        (any::<usize>(), json_byte()).prop_map(|(at, byte)| Mangle::Replace(at, byte)),
        any::<usize>().prop_map(Mangle::Remove),
    ]
}

/// A payload: JSON objects and values (valid, pretty, mangled), bytes, text.
fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        6 => json_object().prop_map(|object| Bytes::from(serde_json::to_vec(&object).unwrap())),
        1 => json_object().prop_map(|object| Bytes::from(serde_json::to_vec_pretty(&object).unwrap())),
        1 => json_value().prop_map(|value| Bytes::from(serde_json::to_vec(&value).unwrap())),
        3 => (json_object(), vec(mangle(), 1..3)).prop_map(|(object, mangles)| {
            let text = serde_json::to_vec(&object).unwrap();
            Bytes::from(mangles.iter().fold(text, |text, mangle| mangled(&text, mangle)))
        }),
        2 => vec(json_byte(), 0..64).prop_map(Bytes::from),
        2 => vec(any::<u8>(), 0..256).prop_map(Bytes::from),
        1 => "\\PC{0,64}".prop_map(Bytes::from),
    ]
}

/// A payload written with `codec`: for Avro and Protobuf, a value encoded with the
/// schema when it fits, else the bytes as they are.
fn written(codec: &Codec, bytes: Bytes, value: &Value) -> Bytes {
    let encoded = match (&codec.avro, &codec.proto, &codec.flat_buffer) {
        (Some(avro), ..) => avro.encode(value).ok(),
        (_, Some(proto), _) => proto.encode(value).ok(),
        (.., Some(flat_buffer)) => flat_buffer.encode(value).ok(),
        _ => None,
    };
    encoded.map_or(bytes, Bytes::from)
}

// ---- properties ----------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Chains from any settings, run over any payload from any codec to any codecs.
    #[test]
    fn any_chain_over_any_payload(
        source in any::<bool>(),
        transforms in transforms(),
        from in prop_oneof![4 => Just(Codec::plain(Schema::Json)), 3 => codec()],
        to in vec(codec(), 0..3),
        bytes in payload(),
        value in json_value(),
    ) {
        let kind = if source { ConnectorKind::Source } else { ConnectorKind::Sink };
        let payload = written(&from, bytes, &value);
        let valid_json = serde_json::from_slice::<Value>(&payload).is_ok();
        within("build and shape", move || {
            let Ok(chain) = TransformChain::new(kind, &transforms) else {
                return;
            };
            let names = chain.names().len();
            let shaped = shape(&chain, &from, payload.clone(), &to);
            let counts = chain.counts();
            assert_eq!(counts.len(), names);
            let Ok(Some(shaped)) = shaped else {
                return;
            };
            assert_eq!(shaped.payloads.len(), to.len());
            // Valid JSON in, JSON out: what the transforms wrote is valid JSON too.
            if from.schema == Schema::Json && valid_json {
                for (codec, bytes) in to.iter().zip(&shaped.payloads) {
                    if codec.schema == Schema::Json {
                        assert!(
                            serde_json::from_slice::<Value>(bytes).is_ok(),
                            "invalid JSON out of {:?}: {}",
                            String::from_utf8_lossy(&payload),
                            String::from_utf8_lossy(bytes),
                        );
                    }
                }
            }
        });
    }

    /// Any bytes through every codec, with no transforms.
    #[test]
    fn any_bytes_through_every_codec(bytes in vec(any::<u8>(), 0..512)) {
        within("decode and encode", move || {
            let bytes = Bytes::from(bytes);
            let chain = TransformChain::default();
            for from in codecs() {
                let _ = shape(&chain, from, bytes.clone(), codecs());
            }
        });
    }

    /// Avro: schemas of any shape (and any JSON), and datums: any bytes decode or fail,
    /// and what a value encodes to decodes again.
    #[test]
    fn avro_schemas_and_datums(
        schema in prop_oneof![4 => avro_schema(), 1 => json_value()],
        schema_index in 0..AVRO_SCHEMAS.len(),
        bytes in vec(any::<u8>(), 0..256),
        value in json_value(),
    ) {
        within("avro", move || {
            let generated = AvroSchema::parse(&schema.to_string());
            let fixed = AvroSchema::parse(AVRO_SCHEMAS[schema_index]).unwrap();
            for avro in generated.iter().chain([&fixed]) {
                let _ = avro.decode(&bytes);
                if let Ok(encoded) = avro.encode(&value)
                    && let Err(error) = avro.decode(&encoded)
                {
                    panic!("{value} encodes to {encoded:?}, which does not decode: {error}");
                }
            }
        });
    }

    /// Protobuf: any bytes decode or fail; any JSON value encodes or fails.
    #[test]
    fn protobuf_messages(bytes in vec(any::<u8>(), 0..256), value in json_value()) {
        within("protobuf", move || {
            let proto = ProtoSchema::from_descriptor_set(&descriptor_set(), "demo.Order").unwrap();
            let _ = proto.decode(&bytes);
            if let Ok(encoded) = proto.encode(&value) {
                let _ = proto.decode(&encoded);
            }
            let _ = ProtoSchema::from_descriptor_set(&bytes, "demo.Order");
        });
    }

    /// FlatBuffers: any bytes (and any change to a good buffer) decode or fail,
    /// verified or not; any bytes as a binary schema load or fail; what a JSON value
    /// encodes to decodes again.
    #[test]
    fn flat_buffers(
        bytes in vec(any::<u8>(), 0..256),
        fields in btree_map(
            select(vec!["sensor", "celsius", "kind", "tags", "samples", "place_type", "place", "count", "other"]),
            json_value(),
            0..8,
        ),
        at in any::<usize>(),
        byte in any::<u8>(),
    ) {
        within("flat buffers", move || {
            let bfbs = include_bytes!("data/sensor.bfbs");
            let schema = FlatBufferSchema::from_bfbs(bfbs, None).unwrap();
            let unverified = schema.clone().verify(false);
            let _ = schema.decode(&bytes);
            let _ = unverified.decode(&bytes);
            let _ = FlatBufferSchema::from_bfbs(&bytes, None);
            let mut schema_bytes = bfbs.to_vec();
            schema_bytes[at % bfbs.len()] = byte;
            let _ = FlatBufferSchema::from_bfbs(&schema_bytes, None);
            let mut map: Map<String, Value> =
                fields.into_iter().map(|(key, value)| (key.to_owned(), value)).collect();
            map.entry("sensor").or_insert_with(|| Value::from("s"));
            let value = Value::Object(map);
            if let Ok(mut encoded) = schema.encode(&value) {
                if let Err(error) = schema.decode(&encoded) {
                    panic!("{value} encodes to {encoded:?}, which does not decode: {error}");
                }
                let index = at % encoded.len();
                encoded[index] = byte;
                let _ = schema.decode(&encoded);
                let _ = unverified.decode(&encoded);
            }
        });
    }
}

// ---- regressions and inputs too large to come up by chance ---------------------------

/// Found by `any_bytes_through_every_codec`: five bytes claiming 2^31 items of a type
/// that takes no bytes made the Avro decoder push `null`s until memory ran out.
#[test]
fn an_avro_block_claiming_more_items_than_the_datum_holds_is_an_error() {
    let nulls = AvroSchema::parse(r#"{"type":"array","items":"null"}"#).unwrap();
    let error = within("avro", move || {
        nulls.decode(&[0xfe, 0xff, 0xff, 0xff, 0x0f])
    })
    .unwrap_err();
    assert!(
        error.contains("more than a datum of 5 bytes can hold"),
        "{error}"
    );
    // Arrays of arrays draw on one allowance.
    let nested =
        AvroSchema::parse(r#"{"type":"array","items":{"type":"array","items":"null"}}"#).unwrap();
    let mut bytes = vec![0x80, 0x10]; // 1024 arrays...
    for _ in 0..1024 {
        bytes.extend([0x80, 0x08, 0x00]); // ...of 512 nulls each: 2^19 in all.
    }
    bytes.push(0x00);
    let error = within("avro", move || nested.decode(&bytes)).unwrap_err();
    assert!(error.contains("can hold"), "{error}");
    // What a datum may hold still decodes: 1000 nulls in two bytes, 0x00 ends the array.
    let nulls = AvroSchema::parse(r#"{"type":"array","items":"null"}"#).unwrap();
    assert_eq!(
        nulls.decode(&[0xd0, 0x0f, 0x00]).unwrap(),
        Value::Array(vec![Value::Null; 1000])
    );
}

/// An Avro schema whose named types each use the one before twice: 2^40 fields once
/// expanded. Parsing it, and decoding and encoding with it, must end (with an error)
/// rather than expand it.
#[test]
fn an_avro_schema_that_doubles_at_every_named_type_is_an_error() {
    let mut types = vec![r#"{"type":"record","name":"T0","fields":[]}"#.to_owned()];
    for level in 1..=40 {
        let previous = level - 1;
        types.push(format!(
            r#"{{"type":"record","name":"T{level}","fields":[{{"name":"a","type":"T{previous}"}},{{"name":"b","type":"T{previous}"}}]}}"#
        ));
    }
    let schema = format!("[{}]", types.join(","));
    let parsed = within("avro schema", move || {
        AvroSchema::parse(&schema).map(|_| ())
    });
    assert!(parsed.is_err(), "{parsed:?}");
}
