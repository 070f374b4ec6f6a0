//! A chain of four JSON transforms on 1 KiB JSON messages, on one core: decode with the
//! stream's schema, run the chain, encode again (what a sink or source does per message).
//! Then a JSON -> Protobuf conversion (`proto_convert`, upstream's config, the shipped
//! configs/transforms/order.proto with a field mapping) shaped for a `proto` stream, as
//! a source does.
//!
//! Run: `cargo bench -p iggy-connectors-benches --bench transforms` (`BENCH_MESSAGES`,
//! default 1,000,000).

use std::time::Instant;

use connector_sdk::{ConnectorKind, Schema};
use serde_json::json;
use transforms::{Codec, Message, Payload, TransformChain, Verdict};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = iggy_connectors_benches::env_or("BENCH_MESSAGES", 1_000_000);
    let chain = TransformChain::new(
        ConnectorKind::Sink,
        &[
            (
                "add_fields".to_owned(),
                json!({ "enabled": true, "fields": [
                    { "key": "service", "value": { "static": "checkout" } },
                    { "key": "ingested_at", "value": { "computed": "timestamp_micros" } }
                ] }),
            ),
            (
                "delete_fields".to_owned(),
                json!({ "enabled": true, "fields": ["password", "ssn"] }),
            ),
            (
                "update_fields".to_owned(),
                json!({ "enabled": true, "fields": [
                    { "key": "status", "value": "seen", "condition": "key_exists" }
                ] }),
            ),
            (
                "filter_fields".to_owned(),
                json!({ "enabled": true, "patterns": [{ "key_pattern": { "starts_with": "debug_" } }], "include_matching": false }),
            ),
        ],
    )?;
    // A 1 KiB document: a dozen fields, some nested, a long text.
    let mut messages = Vec::with_capacity(64);
    for n in 0..64u64 {
        let document = json!({
            "id": n, "user": format!("user-{n}"), "password": "hunter2", "ssn": "000-00-0000",
            "status": "new", "amount": n as f64 * 1.5, "tags": ["a", "b", "c"],
            "address": { "street": "1 Main St", "city": "Springfield", "zip": "12345" },
            "debug_trace": "abcdef", "debug_span": 12,
            "text": "x".repeat(760),
        });
        messages.push(bytes::Bytes::from(serde_json::to_vec(&document)?));
    }
    let size = messages[0].len();
    let started = Instant::now();
    let mut bytes_out = 0usize;
    for index in 0..total {
        let input = &messages[index % messages.len()];
        let mut message = Message {
            payload: Payload::decode(Schema::Json, input.clone())?,
            topic: None,
        };
        if chain.run(&mut message)? == Verdict::Keep {
            bytes_out += message.payload.encode(Schema::Json)?.len();
        }
    }
    let elapsed = started.elapsed();
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        // Where the time goes: decoding alone, and decoding plus encoding.
        let t = Instant::now();
        for index in 0..total {
            let input = &messages[index % messages.len()];
            std::hint::black_box(Payload::decode(Schema::Json, input.clone())?);
        }
        let decode = t.elapsed();
        let t = Instant::now();
        for index in 0..total {
            let input = &messages[index % messages.len()];
            let payload = Payload::decode(Schema::Json, input.clone())?;
            std::hint::black_box(payload.encode(Schema::Json)?);
        }
        let both = t.elapsed();
        let per = |d: std::time::Duration| d.as_nanos() as f64 / total as f64;
        eprintln!(
            "per message: decode {:.0} ns, encode {:.0} ns, transforms {:.0} ns",
            per(decode),
            per(both) - per(decode),
            per(elapsed) - per(both)
        );
    }
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "four JSON transforms (add_fields, delete_fields, update_fields, filter_fields), decode + encode"
    );
    println!(
        "{total} messages of {size} B in {elapsed:?}: {rate:.0} messages/s, {:.1} MB/s in, {} B out per message",
        rate * size as f64 / 1e6,
        bytes_out / total
    );
    json_to_protobuf(total)
}

/// `proto_convert` from JSON orders to `shop.Order` messages, through `transforms::shape`
/// as a source's pipeline runs it.
fn json_to_protobuf(total: usize) -> Result<(), Box<dyn std::error::Error>> {
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/transforms/order.proto"
    );
    let chain = TransformChain::new(
        ConnectorKind::Source,
        &[(
            "proto_convert".to_owned(),
            json!({
                "source_format": "json", "target_format": "proto", "schema_path": schema,
                "message_type": "shop.Order", "field_mappings": { "order_id": "id" },
                "include_paths": [], "preserve_unknown_fields": false,
                "conversion_options": { "validate_messages": true, "pretty_json": false,
                    "include_metadata": false, "type_url_prefix": "type.googleapis.com",
                    "strict_mode": false }
            }),
        )],
    )?;
    let (json, proto) = (Codec::plain(Schema::Json), Codec::plain(Schema::Proto));
    let messages: Vec<bytes::Bytes> = (0..64u64)
        .map(|n| {
            let order = json!({
                "order_id": n, "customer": format!("customer-{n}"),
                "items": ["tea", "cake", "scones"], "paid": n % 2 == 0, "session": "s-1",
            });
            bytes::Bytes::from(order.to_string())
        })
        .collect();
    let size = messages[0].len();
    let started = Instant::now();
    let mut bytes_out = 0usize;
    for index in 0..total {
        let input = messages[index % messages.len()].clone();
        let shaped = transforms::shape(&chain, &json, input, std::slice::from_ref(&proto))?;
        bytes_out += shaped.map_or(0, |shaped| shaped.payloads[0].len());
    }
    let elapsed = started.elapsed();
    let rate = total as f64 / elapsed.as_secs_f64();
    println!("proto_convert JSON -> Protobuf (shop.Order, one field mapping), decode + convert");
    println!(
        "{total} messages of {size} B in {elapsed:?}: {rate:.0} messages/s, {} B out per message",
        bytes_out / total
    );
    Ok(())
}
