//! Upstream's convert transforms, configured as upstream configs have them: JSON to
//! Protobuf and Avro on a source, back to JSON on a sink, with field mappings, through
//! the same codecs as streams of those schemas.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use bytes::Bytes;
use connector_sdk::{ConnectorKind, Schema};
use serde_json::{Value, json};
use transforms::{AvroSchema, Codec, ProtoSchema, TransformChain, shape};

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// One `[transforms.<name>]` table of a TOML text, as the config crate hands it over.
fn chain(kind: ConnectorKind, name: &str, toml_text: &str) -> Result<TransformChain, String> {
    let table: Value = toml::from_str(toml_text).map_err(|error| error.to_string())?;
    TransformChain::new(kind, &[(name.to_owned(), table)])
}

/// Shapes one JSON payload through `chain`, read with `from` and written with `to`.
fn shaped(
    chain: &TransformChain,
    from: &Codec,
    payload: Bytes,
    to: &Codec,
) -> Result<Bytes, String> {
    let shaped = shape(chain, from, payload, std::slice::from_ref(to))?.ok_or("filtered")?;
    Ok(shaped.payloads[0].clone())
}

/// upstream's `proto_convert` table, every key present (upstream's struct has no
/// defaults); `field_mappings` renames on the JSON side.
fn proto_convert(source: &str, target: &str, mappings: &str) -> String {
    format!(
        r#"
enabled = true
source_format = "{source}"
target_format = "{target}"
schema_path = "{}"
message_type = "shop.Order"
field_mappings = {{ {mappings} }}
include_paths = ["{}"]
preserve_unknown_fields = false

[conversion_options]
validate_messages = true
pretty_json = false
include_metadata = false
type_url_prefix = "type.googleapis.com"
strict_mode = false
"#,
        data("order.proto"),
        data("shared")
    )
}

#[test]
fn json_to_protobuf_and_back_with_field_mappings() {
    let source = chain(
        ConnectorKind::Source,
        "proto_convert",
        &proto_convert("json", "proto", r#"orderId = "id", buyer = "customer""#),
    )
    .unwrap();
    let sink = chain(
        ConnectorKind::Sink,
        "proto_convert",
        &proto_convert("proto", "json", r#"id = "orderId", customer = "buyer""#),
    )
    .unwrap();
    let json = Codec::plain(Schema::Json);
    // A proto stream that names no descriptor: it stores what the transform wrote.
    let stream = Codec::plain(Schema::Proto);
    let order = json!({
        "orderId": 42,
        "buyer": "ann",
        "items": ["tea"],
        "status": "PAID",
        "total": { "currency": "EUR", "units": 7 },
        "not_in_the_type": true
    });
    let in_iggy = shaped(&source, &json, Bytes::from(order.to_string()), &stream).unwrap();
    // What Iggy holds is a real shop.Order, as protoc's schema reads it.
    let schema = ProtoSchema::from_proto_file(
        Path::new(&data("order.proto")),
        &[data("shared").into()],
        Some("shop.Order"),
    )
    .unwrap();
    let message = schema.decode(&in_iggy).unwrap();
    assert_eq!(message["id"], 42);
    assert_eq!(message["customer"], "ann");
    assert_eq!(message["total"]["units"], 7);
    // And the sink gets the JSON back, names mapped back, the extra field gone.
    let out = shaped(&sink, &stream, in_iggy, &json).unwrap();
    let mut expected = order.clone();
    expected.as_object_mut().unwrap().remove("not_in_the_type");
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), expected);
    // The codec the chain converts with is there for tools to show samples.
    assert_eq!(
        sink.codec_for(Schema::Proto)
            .unwrap()
            .proto
            .unwrap()
            .message_type(),
        "shop.Order"
    );
}

#[test]
fn protobuf_conversion_options_and_errors() {
    let strict =
        proto_convert("json", "proto", "").replace("strict_mode = false", "strict_mode = true");
    let strict = chain(ConnectorKind::Source, "proto_convert", &strict).unwrap();
    let json = Codec::plain(Schema::Json);
    let error = shaped(
        &strict,
        &json,
        Bytes::from_static(br#"{"id":1,"extra":2}"#),
        &json,
    )
    .unwrap_err();
    assert!(
        error.contains("transform proto_convert failed: field extra: not in the proto schema"),
        "{error}"
    );
    let error = shaped(&strict, &json, Bytes::from_static(br#"{"id":"x"}"#), &json).unwrap_err();
    assert!(error.contains("not a valid shop.Order"), "{error}");
    // Decoding to text, with metadata, pretty.
    let text = proto_convert("proto", "text", "")
        .replace("include_metadata = false", "include_metadata = true")
        .replace("pretty_json = false", "pretty_json = true");
    let to_text = chain(ConnectorKind::Sink, "proto_convert", &text).unwrap();
    let raw = Codec::plain(Schema::Raw);
    let out = shaped(
        &to_text,
        &raw,
        Bytes::from_static(b"\x08\x05"),
        &Codec::plain(Schema::Text),
    )
    .unwrap();
    let out = std::str::from_utf8(&out).unwrap();
    assert!(out.contains("\n  \"data\": {"), "{out}");
    let out: Value = serde_json::from_str(out).unwrap();
    assert_eq!(out["data"]["id"], 5);
    assert_eq!(
        out["metadata"]["type_url"],
        "type.googleapis.com/shop.Order"
    );
    // A message that does not decode fails, naming the transform.
    let error = shaped(&to_text, &raw, Bytes::from_static(b"\x12\x09ab"), &raw).unwrap_err();
    assert!(
        error.contains("transform proto_convert failed: invalid shop.Order message"),
        "{error}"
    );
    // A payload in the wrong format is an error, not a guess.
    let error = shaped(&to_text, &json, Bytes::from_static(b"{}"), &raw).unwrap_err();
    assert!(
        error.contains("expected a proto payload, got a JSON object"),
        "{error}"
    );
}

/// upstream's `avro_convert` table.
fn avro_convert(source: &str, target: &str, schema: &str, mappings: &str) -> String {
    format!(
        r#"
source_format = "{source}"
target_format = "{target}"
{schema}
field_mappings = {{ {mappings} }}

[conversion_options]
pretty_json = false
include_metadata = false
strict_mode = false
"#
    )
}

#[test]
fn json_to_avro_and_back_with_field_mappings() {
    let from_file = format!("schema_path = \"{}\"", data("order.avsc"));
    let text = std::fs::read_to_string(data("order.avsc")).unwrap();
    let inline = format!("schema_json = '''{text}'''");
    let source = chain(
        ConnectorKind::Source,
        "avro_convert",
        &avro_convert("json", "avro", &from_file, r#"orderId = "id""#),
    )
    .unwrap();
    let sink = chain(
        ConnectorKind::Sink,
        "avro_convert",
        &avro_convert("avro", "json", &inline, r#"id = "orderId""#),
    )
    .unwrap();
    let json = Codec::plain(Schema::Json);
    let stream = Codec::plain(Schema::Avro);
    let order = json!({ "orderId": 9, "customer": "bo", "items": ["a", "b"], "note": null });
    let in_iggy = shaped(&source, &json, Bytes::from(order.to_string()), &stream).unwrap();
    let schema = AvroSchema::parse(&text).unwrap();
    assert_eq!(
        schema.decode(&in_iggy).unwrap(),
        json!({ "id": 9, "customer": "bo", "items": ["a", "b"], "note": null })
    );
    let out = shaped(&sink, &stream, in_iggy, &json).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), order);
    // A datum that does not fit the schema fails that message only.
    let error = shaped(
        &source,
        &json,
        Bytes::from_static(br#"{"orderId":"nine"}"#),
        &stream,
    )
    .unwrap_err();
    assert!(error.contains("transform avro_convert failed"), "{error}");
    let counts = &source.counts()[0];
    assert_eq!((counts.messages_out, counts.failed), (1, 1));
}

#[test]
fn bad_convert_configs_say_where() {
    let cases = [
        (
            "proto_convert",
            proto_convert("json", "proto", "").replace(
                "message_type = \"shop.Order\"",
                "message_type = \"shop.Nope\"",
            ),
            "transforms.proto_convert.schema_path",
        ),
        (
            "proto_convert",
            proto_convert("json", "proto", "").replace("strict_mode", "strict_mod"),
            "transforms.proto_convert.conversion_options.strict_mod: unknown field `strict_mod`, expected one of",
        ),
        (
            "proto_convert",
            proto_convert("json", "avro", ""),
            "cannot convert json to avro",
        ),
        (
            "proto_convert",
            proto_convert("json", "proto", "").replace("order.proto", "missing.proto"),
            "missing.proto",
        ),
        (
            "proto_convert",
            proto_convert("json", "proto", "").replace(
                "preserve_unknown_fields = false",
                "preserve_unknown_fields = true",
            ),
            "transforms.proto_convert.preserve_unknown_fields",
        ),
        (
            "avro_convert",
            avro_convert("json", "avro", "schema_json = '{\"type\":\"recrd\"}'", ""),
            "transforms.avro_convert.schema_json",
        ),
        (
            "avro_convert",
            avro_convert("json", "avro", "", ""),
            "needs schema_json or schema_path",
        ),
    ];
    for (name, text, expected) in cases {
        let error = chain(ConnectorKind::Source, name, &text).unwrap_err();
        assert!(error.contains(expected), "{text}: {error}");
    }
}

/// Upstream's `descriptor_set` is the descriptor set's bytes in the config (a TOML
/// array); ours may also name a file. Both pick the message type from it.
#[test]
fn descriptor_sets_as_bytes_or_a_file() {
    use prost_reflect::prost::Message as _;
    let set = protox::compile([data("order.proto")], [data(""), data("shared")])
        .unwrap()
        .encode_to_vec();
    let file = temp_file("order.pb", &set);
    let bytes: Vec<String> = set.iter().map(u8::to_string).collect();
    for descriptor_set in [format!("[{}]", bytes.join(", ")), format!("\"{file}\"")] {
        let text = format!(
            "source_format = \"proto\"\ntarget_format = \"json\"\nmessage_type = \"shop.Order\"\ndescriptor_set = {descriptor_set}\n"
        );
        let chain = chain(ConnectorKind::Sink, "proto_convert", &text).unwrap();
        let out = shaped(
            &chain,
            &Codec::plain(Schema::Raw),
            Bytes::from_static(b"\x08\x2a"),
            &Codec::plain(Schema::Json),
        )
        .unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap()["id"], 42);
    }
}

/// Writes `bytes` to a file of its own under the target's temporary directory.
fn temp_file(name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("transforms-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}
