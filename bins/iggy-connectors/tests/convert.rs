//! Upstream's convert transforms in a running runtime, through the Iggy test server (or
//! the real server `IGGY_TEST_ADDRESS` names): a sink reads a `flat_buffer` stream with
//! the shipped `flat_buffer_convert` table, its plugin gets JSON, and a buffer that fails
//! verification goes to the dead letter topic with its error while the rest flow on.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;

use bytes::Bytes;
use iggy_connectors_tests::{create_topic, eventually, iggy_client, plugin_path, temp_dir, unique};
use iggy_test_server::TestTarget;
use runtime_core::{Destination, IggyBus, IggySettings, MessageBus, OutgoingMessage};
use serde_json::json;

mod support;
use support::{Reaped, runtime_command, runtime_with_connectors};

/// The shipped example's binary schema (`configs/transforms/sensor.bfbs`).
const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../configs/transforms/sensor.bfbs"
);

fn message(payload: Vec<u8>) -> OutgoingMessage {
    OutgoingMessage {
        id: None,
        headers: Vec::new(),
        payload: Bytes::from(payload),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_buffer_sink_gets_json_and_a_corrupt_buffer_is_dead_lettered() {
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("binary-flat-buffer-convert");
    let stream = unique("flat-buffer");
    let client = iggy_client(&target.address).await.unwrap();
    create_topic(&client, &stream, "t", 1).await.unwrap();
    create_topic(&client, &stream, "dead", 1).await.unwrap();
    // Three readings as a FlatBuffers producer writes them; the second cut short.
    let schema =
        transforms::FlatBufferSchema::from_bfbs(&std::fs::read(SCHEMA).unwrap(), None).unwrap();
    let reading = |sensor: &str| {
        schema
            .encode(&json!({ "sensor": sensor, "celsius": 20.5 }))
            .unwrap()
    };
    let mut corrupt = reading("t-2");
    corrupt.truncate(corrupt.len() - 6);
    let bus = IggyBus::connect(&IggySettings::new(&target.address))
        .await
        .unwrap();
    let topic = Destination::new(&stream, "t");
    bus.send(
        &topic,
        vec![
            message(reading("t-1")),
            message(corrupt.clone()),
            message(reading("t-3")),
        ],
    )
    .await
    .unwrap();

    let output = dir.join("out.jsonl");
    let sink = format!(
        r#"type = "sink"
key = "readings"
enabled = true
version = 0
name = "Readings"
path = "{plugin}"
error_policy = "dead_letter"

[dead_letter]
stream = "{stream}"
topic = "dead"

[[streams]]
stream = "{stream}"
topics = ["t"]
schema = "flat_buffer"
poll_interval = "5ms"

[plugin_config]
path = "{output}"

[transforms.flat_buffer_convert]
source_format = "flat_buffer"
target_format = "json"
schema_path = "{SCHEMA}"
root_table_name = "demo.Reading"
field_mappings = {{ sensor = "sensor_id" }}
include_paths = []
preserve_unknown_fields = false
conversion_options = {{ verify_buffers = true, pretty_json = false, include_metadata = false, buffer_size_hint = 256, strict_mode = false }}
"#,
        plugin = plugin_path("iggy_connector_file_sink"),
        output = output.display(),
    );
    let config = runtime_with_connectors(&dir, &target.address, &[("readings.toml", sink)]);
    let child = Reaped::spawn(
        runtime_command(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let written = || std::fs::read_to_string(&output).unwrap_or_default();
    eventually("both good readings written", || {
        written().lines().count() == 2
    })
    .await;
    // Upstream's form, a `flat_buffer` stream: the plugin is handed what the transform
    // wrote, JSON, labelled so (the file sink keeps a JSON payload as JSON).
    let sensors: Vec<serde_json::Value> = written()
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            record["payload"]["sensor_id"].clone()
        })
        .collect();
    assert_eq!(sensors, [json!("t-1"), json!("t-3")], "{}", written());

    // The sink sends a batch's dead letters before it hands the plugin the rest, and
    // t-3 came after the corrupt buffer: the letter is there.
    let letters = bus
        .read(&Destination::new(&stream, "dead"), 0, 0, 10)
        .await
        .unwrap()
        .map(|polled| polled.messages)
        .unwrap_or_default();
    assert_eq!(letters.len(), 1, "one dead letter");
    assert_eq!(
        letters[0].payload,
        Bytes::from(corrupt),
        "the buffer as it was read"
    );
    let error = letters[0]
        .headers
        .iter()
        .find(|header| header.key == runtime_core::dead_letter::ERROR)
        .map(|header| String::from_utf8_lossy(&header.value).into_owned())
        .unwrap_or_default();
    assert!(
        error.contains("transform flat_buffer_convert failed") && error.contains("byte"),
        "{error}"
    );
    drop(child);
}
