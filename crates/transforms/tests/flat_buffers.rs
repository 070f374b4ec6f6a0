//! FlatBuffers payloads: buffers written by the official `flatbuffers` builder decode
//! to the JSON view through a binary schema, what we encode decodes again, and a
//! corrupt buffer is an error naming the field and byte, not a panic or a guess.
//!
//! `data/sensor.bfbs` is the binary schema of `data/sensor.fbs`, as `flatc --schema -b`
//! writes it; [`sensor_bfbs`] writes it with the builder (flatc is not needed), and
//! `UPDATE_FIXTURES=1 cargo test -p transforms --test flat_buffers` writes the file
//! again.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use connector_sdk::{ConnectorKind, Schema};
use flatbuffers::{FlatBufferBuilder, TableFinishedWIPOffset, WIPOffset};
use serde_json::{Value, json};
use transforms::{
    Codec, FlatBufferSchema, Message, Payload, StreamPayload, TransformChain, Verdict, shape,
};

type Table = WIPOffset<TableFinishedWIPOffset>;

// reflection.fbs BaseType codes.
const UTYPE: i8 = 1;
const BYTE: i8 = 3;
const SHORT: i8 = 5;
const ULONG: i8 = 10;
const FLOAT: i8 = 11;
const DOUBLE: i8 = 12;
const STRING: i8 = 13;
const VECTOR: i8 = 14;
const OBJ: i8 = 15;
const UNION: i8 = 16;

/// The vtable offset of field `id`.
fn slot(id: u16) -> u16 {
    4 + 2 * id
}

fn ty(b: &mut FlatBufferBuilder<'_>, base: i8, element: i8, index: i32) -> Table {
    let t = b.start_table();
    b.push_slot::<i8>(slot(0), base, 0);
    b.push_slot::<i8>(slot(1), element, 0);
    b.push_slot::<i32>(slot(2), index, -1);
    b.end_table(t)
}

/// A reflection `Field`: `offset` is the vtable offset (tables) or byte offset (structs).
fn field(
    b: &mut FlatBufferBuilder<'_>,
    name: &str,
    (base, element, index): (i8, i8, i32),
    id: u16,
    offset: u16,
    default_integer: i64,
    required: bool,
) -> Table {
    let name = b.create_string(name);
    let ty = ty(b, base, element, index);
    let t = b.start_table();
    b.push_slot_always(slot(0), name);
    b.push_slot_always(slot(1), ty);
    b.push_slot::<u16>(slot(2), id, 0);
    b.push_slot::<u16>(slot(3), offset, 0);
    b.push_slot::<i64>(slot(4), default_integer, 0);
    b.push_slot::<bool>(slot(7), required, false);
    b.end_table(t)
}

/// A table field: its vtable offset follows from its id.
fn table_field(
    b: &mut FlatBufferBuilder<'_>,
    name: &str,
    ty: (i8, i8, i32),
    id: u16,
    default_integer: i64,
    required: bool,
) -> Table {
    field(b, name, ty, id, slot(id), default_integer, required)
}

fn object(
    b: &mut FlatBufferBuilder<'_>,
    name: &str,
    fields: &[Table],
    is_struct: bool,
    (minalign, bytesize): (i32, i32),
) -> Table {
    let name = b.create_string(name);
    let fields = b.create_vector(fields);
    let t = b.start_table();
    b.push_slot_always(slot(0), name);
    b.push_slot_always(slot(1), fields);
    b.push_slot::<bool>(slot(2), is_struct, false);
    b.push_slot::<i32>(slot(3), minalign, 0);
    b.push_slot::<i32>(slot(4), bytesize, 0);
    b.end_table(t)
}

/// A reflection `Enum`; each value is its name, number and union table index.
fn enumeration(
    b: &mut FlatBufferBuilder<'_>,
    name: &str,
    values: &[(&str, i64, Option<i32>)],
    is_union: bool,
    underlying: i8,
) -> Table {
    let values: Vec<Table> = values
        .iter()
        .map(|&(symbol, number, object)| {
            let symbol = b.create_string(symbol);
            let union_type = object.map(|index| ty(b, OBJ, 0, index));
            let t = b.start_table();
            b.push_slot_always(slot(0), symbol);
            b.push_slot::<i64>(slot(1), number, 0);
            if let Some(union_type) = union_type {
                b.push_slot_always(slot(3), union_type);
            }
            b.end_table(t)
        })
        .collect();
    let name = b.create_string(name);
    let values = b.create_vector(&values);
    let underlying = ty(b, underlying, 0, -1);
    let t = b.start_table();
    b.push_slot_always(slot(0), name);
    b.push_slot_always(slot(1), values);
    b.push_slot::<bool>(slot(2), is_union, false);
    b.push_slot_always(slot(3), underlying);
    b.end_table(t)
}

/// The binary schema of `data/sensor.fbs`: objects and fields sorted by name, as flatc
/// writes them (Location 0, Point 1, Reading 2; enums Kind 0, Place 1).
fn sensor_bfbs() -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let location_fields = [
        table_field(&mut b, "at", (OBJ, 0, 1), 1, 0, false),
        table_field(&mut b, "name", (STRING, 0, -1), 0, 0, false),
    ];
    let location = object(&mut b, "demo.Location", &location_fields, false, (4, 0));
    let point_fields = [
        field(&mut b, "x", (FLOAT, 0, -1), 0, 0, 0, false),
        field(&mut b, "y", (FLOAT, 0, -1), 1, 4, 0, false),
    ];
    let point = object(&mut b, "demo.Point", &point_fields, true, (4, 8));
    let reading_fields = [
        table_field(&mut b, "celsius", (DOUBLE, 0, -1), 1, 0, false),
        table_field(&mut b, "count", (ULONG, 0, -1), 7, 7, false),
        table_field(&mut b, "kind", (BYTE, 0, 0), 2, 0, false),
        table_field(&mut b, "place", (UNION, 0, 1), 6, 0, false),
        table_field(&mut b, "place_type", (UTYPE, 0, 1), 5, 0, false),
        table_field(&mut b, "samples", (VECTOR, SHORT, -1), 4, 0, false),
        table_field(&mut b, "sensor", (STRING, 0, -1), 0, 0, true),
        table_field(&mut b, "tags", (VECTOR, STRING, -1), 3, 0, false),
    ];
    let reading = object(&mut b, "demo.Reading", &reading_fields, false, (8, 0));
    let kind = enumeration(
        &mut b,
        "demo.Kind",
        &[("Air", 0, None), ("Water", 1, None)],
        false,
        BYTE,
    );
    let place = enumeration(
        &mut b,
        "demo.Place",
        &[("NONE", 0, None), ("Location", 1, Some(0))],
        true,
        UTYPE,
    );
    let objects = b.create_vector(&[location, point, reading]);
    let enums = b.create_vector(&[kind, place]);
    let ident = b.create_string("RDNG");
    let t = b.start_table();
    b.push_slot_always(slot(0), objects);
    b.push_slot_always(slot(1), enums);
    b.push_slot_always(slot(2), ident);
    b.push_slot_always(slot(4), reading);
    let root = b.end_table(t);
    b.finish(root, Some("BFBS"));
    b.finished_data().to_vec()
}

fn fixture_path(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_committed_binary_schema_is_what_the_builder_writes() {
    let path = fixture_path("sensor.bfbs");
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, sensor_bfbs()).unwrap();
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        sensor_bfbs(),
        "UPDATE_FIXTURES=1 rewrites it"
    );
}

fn schema() -> FlatBufferSchema {
    FlatBufferSchema::from_bfbs(&sensor_bfbs(), None).unwrap()
}

/// A `demo.Reading` written field by field with the official builder, with a union
/// variant (a `Location`) and vectors.
fn builder_reading() -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let sensor = b.create_string("t-1");
    let tags = [b.create_string("roof"), b.create_string("north")];
    let tags = b.create_vector(&tags);
    let samples = b.create_vector(&[-3i16, 0, 12]);
    let name = b.create_string("garden");
    let t = b.start_table();
    b.push_slot_always(slot(0), name);
    let location = b.end_table(t);
    let t = b.start_table();
    b.push_slot_always(slot(0), sensor);
    b.push_slot::<f64>(slot(1), 21.5, 0.0);
    b.push_slot::<i8>(slot(2), 1, 0);
    b.push_slot_always(slot(3), tags);
    b.push_slot_always(slot(4), samples);
    b.push_slot::<u8>(slot(5), 1, 0);
    b.push_slot_always(slot(6), location);
    let root = b.end_table(t);
    b.finish(root, Some("RDNG"));
    b.finished_data().to_vec()
}

#[test]
fn a_builder_written_buffer_decodes_to_the_json_view() {
    assert_eq!(schema().root_table(), "demo.Reading");
    assert_eq!(
        schema().decode(&builder_reading()).unwrap(),
        json!({
            "sensor": "t-1",
            "celsius": 21.5,
            "kind": "Water",
            "tags": ["roof", "north"],
            "samples": [-3, 0, 12],
            "place_type": "Location",
            "place": { "name": "garden" },
            "count": 7
        })
    );
}

#[test]
fn what_we_encode_decodes_again_structs_and_unions_included() {
    let schema = schema();
    let reading = json!({
        "sensor": "t-2",
        "celsius": -4.25,
        "kind": "Air",
        "tags": [],
        "samples": [32767, -32768],
        "place_type": "Location",
        "place": { "name": "shed", "at": { "x": 1.5, "y": -2.0 } },
        "count": 18446744073709551615u64
    });
    let bytes = schema.encode(&reading).unwrap();
    assert_eq!(&bytes[4..8], b"RDNG", "the file identifier is written");
    assert_eq!(schema.decode(&bytes).unwrap(), reading);
    // Fields the table lacks are left out; enums may be numbers.
    let bytes = schema
        .encode(&json!({ "sensor": "s", "kind": 1, "extra": true }))
        .unwrap();
    let decoded = schema.decode(&bytes).unwrap();
    assert_eq!(decoded["kind"], "Water");
    assert!(decoded.get("extra").is_none());
    // What does not fit is an error naming the field.
    for (value, expected) in [
        (
            json!({ "celsius": 1.0 }),
            "field sensor: required but missing",
        ),
        (
            json!({ "sensor": "s", "samples": [70000] }),
            "field samples[0]: 70000 is not a short",
        ),
        (json!({ "sensor": "s", "kind": "Fire" }), "field kind"),
        (json!({ "sensor": "s", "place": {} }), "needs place_type"),
        (
            json!({ "sensor": "s", "place_type": "Location", "place": { "at": { "x": 1 } } }),
            "field place.at.y",
        ),
    ] {
        let error = schema.encode(&value).unwrap_err();
        assert!(error.contains(expected), "{value}: {error}");
    }
}

#[test]
fn a_corrupt_buffer_is_an_error_naming_the_field_and_byte() {
    let schema = schema();
    let good = builder_reading();
    // The string "t-1" is the first field's target: make its length run past the end.
    let sensor_at = good.windows(3).position(|w| w == b"t-1").unwrap() - 4;
    let mut long_string = good.clone();
    long_string[sensor_at..sensor_at + 4].copy_from_slice(&1000u32.to_le_bytes());
    let error = schema.decode(&long_string).unwrap_err();
    assert!(error.starts_with("field sensor: "), "{error}");
    assert!(error.contains(&format!("byte {sensor_at}")), "{error}");
    // A NUL-less string passes only without verification.
    let mut unterminated = good.clone();
    unterminated[sensor_at + 7] = b'!';
    let error = schema.decode(&unterminated).unwrap_err();
    assert!(error.contains("not NUL-terminated"), "{error}");
    let unverified = schema.clone().verify(false);
    assert_eq!(unverified.decode(&unterminated).unwrap()["sensor"], "t-1");
    // Truncated and empty buffers, and any cut of a good one, fail without panicking.
    assert!(schema.decode(&[]).unwrap_err().contains("no root table"));
    for len in 0..good.len() {
        let _ = schema.decode(&good[..len]);
        let _ = unverified.decode(&good[..len]);
    }
    for index in 0..good.len() {
        let mut flipped = good.clone();
        flipped[index] ^= 0xff;
        let _ = schema.decode(&flipped);
    }
}

#[test]
fn a_flat_buffer_stream_decodes_with_its_schema_and_refuses_corrupt_buffers() {
    let payload = StreamPayload {
        flat_buffer_schema_path: Some(fixture_path("sensor.bfbs")),
        ..StreamPayload::new(Schema::FlatBuffer)
    };
    let codec = payload.codec().unwrap();
    let json = Codec::plain(Schema::Json);
    let shaped = shape(
        &TransformChain::default(),
        &codec,
        Bytes::from(builder_reading()),
        &[json, codec.clone()],
    )
    .unwrap()
    .unwrap();
    let as_json: Value = serde_json::from_slice(&shaped.payloads[0]).unwrap();
    assert_eq!(as_json["place"]["name"], "garden");
    assert_eq!(
        codec
            .flat_buffer
            .as_ref()
            .unwrap()
            .decode(&shaped.payloads[1])
            .unwrap(),
        as_json
    );
    let error = shape(
        &TransformChain::default(),
        &codec,
        Bytes::from_static(b"\x04\x00\x00\x00\xff\xff"),
        &[],
    )
    .unwrap_err();
    assert!(error.contains("cannot decode"), "{error}");
    let missing = StreamPayload {
        flat_buffer_root_table: Some("demo.Nope".to_owned()),
        ..payload
    };
    let error = missing.codec().unwrap_err();
    assert!(error.contains("no table \"demo.Nope\""), "{error}");
}

/// An upstream `flat_buffer_convert` table, every key present as upstream requires;
/// `field_mappings` renames `from` to `to` on the JSON side.
fn upstream_config(source: &str, target: &str, (from, to): (&str, &str)) -> Value {
    let text = format!(
        r#"
enabled = true
source_format = "{source}"
target_format = "{target}"
schema_path = "{}"
root_table_name = "demo.Reading"
field_mappings = {{ {from} = "{to}" }}
include_paths = ["."]
preserve_unknown_fields = false

[conversion_options]
verify_buffers = true
pretty_json = false
include_metadata = false
buffer_size_hint = 512
strict_mode = false
"#,
        fixture_path("sensor.bfbs")
    );
    toml::from_str(&text).unwrap()
}

/// A chain of that one transform.
fn convert_chain(
    kind: ConnectorKind,
    source: &str,
    target: &str,
    mapping: (&str, &str),
) -> TransformChain {
    let table = upstream_config(source, target, mapping);
    TransformChain::new(kind, &[("flat_buffer_convert".to_owned(), table)]).unwrap()
}

#[test]
fn flat_buffer_convert_decodes_and_a_corrupt_buffer_fails_that_message_only() {
    let chain = convert_chain(
        ConnectorKind::Sink,
        "flat_buffer",
        "json",
        ("sensor", "sensor_id"),
    );
    // A flat_buffer stream without a schema hands the transform the bytes.
    let stream = Codec::plain(Schema::FlatBuffer);
    let json = Codec::plain(Schema::Json);
    let shaped = shape(
        &chain,
        &stream,
        Bytes::from(builder_reading()),
        std::slice::from_ref(&json),
    )
    .unwrap()
    .unwrap();
    let out: Value = serde_json::from_slice(&shaped.payloads[0]).unwrap();
    assert_eq!(out["sensor_id"], "t-1", "field_mappings renamed the field");
    assert!(out.get("sensor").is_none());
    let mut corrupt = builder_reading();
    corrupt.truncate(20);
    let mut message = Message {
        payload: stream.decode(Bytes::from(corrupt)).unwrap(),
        topic: None,
    };
    let error = chain.run(&mut message).unwrap_err();
    assert_eq!(error.transform, "flat_buffer_convert");
    assert!(error.message.contains("byte"), "{error}");
    let counts = &chain.counts()[0];
    assert_eq!((counts.messages_out, counts.failed), (1, 1));
}

#[test]
fn flat_buffer_convert_encodes_json_for_a_flat_buffer_stream() {
    let chain = convert_chain(
        ConnectorKind::Source,
        "json",
        "flat_buffer",
        ("sensor_id", "sensor"),
    );
    let run = |json: &'static [u8]| {
        let mut message = Message {
            payload: Payload::decode(Schema::Json, Bytes::from_static(json)).unwrap(),
            topic: None,
        };
        chain
            .run(&mut message)
            .map(|verdict| (verdict, message.payload))
    };
    let error = run(br#"{"celsius":3.5}"#).unwrap_err();
    assert!(error.message.contains("field sensor: required"), "{error}");
    let (verdict, payload) = run(br#"{"sensor_id":"x","celsius":3.5}"#).unwrap();
    assert_eq!(verdict, Verdict::Keep);
    assert!(matches!(payload, Payload::Encoded(Schema::FlatBuffer, _)));
    let message = Message {
        payload,
        topic: None,
    };
    let bytes = Codec::plain(Schema::FlatBuffer)
        .encode(&message.payload)
        .unwrap();
    assert_eq!(schema().decode(&bytes).unwrap()["celsius"], 3.5);
    let error = TransformChain::new(
        ConnectorKind::Source,
        &[(
            "flat_buffer_convert".to_owned(),
            upstream_config("text", "flat_buffer", ("a", "b")),
        )],
    )
    .unwrap_err();
    assert!(
        error.contains("cannot convert text to flat_buffer"),
        "{error}"
    );
}
