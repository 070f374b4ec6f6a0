//! The source side: refused sends produced again, sends cut by `batch_length`,
//! `linger_time` and `max_send_bytes`, a source with two streams, source transforms,
//! and encoding to the stream's Avro or Protobuf schema.

use std::time::Duration;

use config_provider::ConnectorConfig;
use connector_sdk::ConnectorKind;
use iggy_connectors_tests::{eventually, target, temp_dir, unique};
use iggy_test_server::TestTarget;
use runtime_core::{ConnectorState, Runtime, SavedState, StateStore};

use crate::support::{
    RecordingBus, active, config, context, eventually_in, file_sink, in_state_with,
    plugins_for_test, position, produced, random_source, read_topic, seqs, stored_seqs,
};

/// Iggy refuses a source's sends: the batch is rejected (the source rewinds), produced
/// again after a pause, and the state advances only with accepted batches. When the
/// refusals outlast the retry budget, the source fails with the error and its state
/// stays where the last accepted batch left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_batches_are_produced_again_and_do_not_advance_the_state() {
    let target = target().await;
    let Some(server) = &target.server else {
        iggy_test_server::skip(
            "rejected_batches_are_produced_again_and_do_not_advance_the_state",
            "needs the test server's fault injection",
        );
        return;
    };
    let dir = temp_dir("e2e-reject");
    let stream = unique("e2e-reject");
    let saved = || async {
        StateStore::new(dir.join("state"))
            .read("random")
            .await
            .unwrap()
            .unwrap()
    };

    server.fail_next_sends(2);
    let first = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(
        active(vec![random_source(&stream, 100)]),
        plugins_for_test(),
        first,
    )
    .await;
    eventually("100 messages produced", || {
        runtime
            .status(ConnectorKind::Source, "random")
            .is_some_and(|status| status.metrics.messages_out == 100)
    })
    .await;
    let status = runtime.status(ConnectorKind::Source, "random").unwrap();
    assert_eq!(status.metrics.retries, 2, "{status:?}");
    let seqs = stored_seqs(server, &stream);
    assert_eq!(
        seqs,
        (0..100).collect::<Vec<_>>(),
        "refused batches came again, in order, once"
    );
    runtime.shutdown(Duration::from_secs(10)).await;
    assert_eq!(saved().await, 100u64.to_le_bytes());

    // Refusals that outlast the budget (4 attempts): failed, state unchanged.
    server.fail_next_sends(1000);
    let second = context(&target, &dir.join("state")).await;
    let more = random_source(&stream, 200);
    let runtime = Runtime::start(active(vec![more]), plugins_for_test(), second).await;
    eventually("the source failed", || {
        runtime
            .status(ConnectorKind::Source, "random")
            .is_some_and(|status| status.state == ConnectorState::Failed)
    })
    .await;
    let status = runtime.status(ConnectorKind::Source, "random").unwrap();
    assert!(
        status.last_error.as_deref().unwrap().contains("4 attempts"),
        "{status:?}"
    );
    assert_eq!(saved().await, 100u64.to_le_bytes());
    assert_eq!(server.messages(&stream, "t").unwrap().len(), 100);
    runtime.shutdown(Duration::from_secs(10)).await;
    server.fail_next_sends(0);
}

/// A refused send while many batches are in flight: the later ones, whose payloads are
/// still read in place from the plugin, are rejected (never a settle left waiting for
/// them), produced again, and every message is stored once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_send_with_batches_in_flight_rejects_them_all_and_loses_nothing() {
    let target = target().await;
    let Some(server) = &target.server else {
        iggy_test_server::skip(
            "a_refused_send_with_batches_in_flight_rejects_them_all_and_loses_nothing",
            "needs the test server's fault injection",
        );
        return;
    };
    let dir = temp_dir("e2e-reject-in-flight");
    let stream = unique("e2e-reject-in-flight");
    let mut source = random_source(&stream, 2000);
    if let ConnectorConfig::Source(source) = &mut source {
        // Five 10-message batches a send: the poller has the rest of the 16 that may
        // be unsettled waiting behind the refused send.
        source.streams[0].batch_length = 50;
        source.streams[0].linger_time = config_provider::ConfigDuration::from_millis(100);
        source.common.plugin_config = Some(serde_json::json!({
            "interval": "0ms", "max_count": 2000, "messages_range": [10, 10], "payload_size": 20
        }));
    }
    server.fail_next_sends(2);
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![source]), plugins_for_test(), context).await;
    produced(&runtime, 2000).await;
    let status = runtime.status(ConnectorKind::Source, "random").unwrap();
    assert_eq!(status.metrics.retries, 2, "{status:?}");
    assert_eq!(status.state, ConnectorState::Running, "{status:?}");
    assert_eq!(
        stored_seqs(server, &stream),
        (0..2000).collect::<Vec<_>>(),
        "every message once, in order"
    );
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A source batch larger than the stream's `batch_length` goes out in several sends,
/// every message once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_source_batches_are_sent_in_stream_sized_chunks() {
    let target = target().await;
    let dir = temp_dir("e2e-chunks");
    let stream = unique("e2e-chunks");
    let output = dir.join("out.jsonl");
    let mut source = random_source(&stream, 100);
    if let ConnectorConfig::Source(source) = &mut source {
        source.streams[0].batch_length = 7;
        if let Some(plugin) = source.common.plugin_config.as_mut() {
            plugin["messages_range"] = serde_json::json!([25, 25]);
        }
    }
    let sink = file_sink("file", &stream, &output, 1000);
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![source, sink]), plugins_for_test(), context).await;
    let seqs = || {
        std::fs::read_to_string(&output)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|value| value["payload"]["seq"].as_u64())
            .collect::<Vec<_>>()
    };
    eventually_in(&runtime, "100 messages", || seqs().len() >= 100).await;
    assert_eq!(seqs(), (0..100).collect::<Vec<_>>());
    let source = runtime.status(ConnectorKind::Source, "random").unwrap();
    assert_eq!(source.metrics.messages_out, 100, "{source:?}");
    assert_eq!(
        source.metrics.batch_latency.count, 4,
        "four plugin batches of 25"
    );
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A source of one-message batches, one every 20 ms, with `linger_time`: each send waits
/// for the batches that follow until it holds `batch_length` messages, and every message
/// arrives once, in order.
#[tokio::test]
async fn small_source_batches_linger_and_go_out_together() {
    let target = target().await;
    let dir = temp_dir("e2e-linger");
    let stream = unique("e2e-linger");
    let mut source = random_source(&stream, 39);
    if let ConnectorConfig::Source(source) = &mut source {
        source.streams[0].batch_length = 3;
        // Far longer than the next two batches take: a send that holds fewer than three
        // messages did not wait for them.
        source.streams[0].linger_time = config_provider::ConfigDuration::from_secs(30);
        // With verified resume a full send also takes the batches that are ready (cut
        // into sends of three and a rest): sends would be short for another reason.
        source.verified_resume = false;
        source.common.plugin_config = Some(serde_json::json!({
            "interval": "20ms", "max_count": 39, "messages_range": [1, 1], "payload_size": 10
        }));
    }
    let mut context = context(&target, &dir.join("state")).await;
    let recording = RecordingBus::around(&mut context);
    let runtime = Runtime::start(active(vec![source]), plugins_for_test(), context).await;
    produced(&runtime, 39).await;
    runtime.shutdown(Duration::from_secs(10)).await;
    let sends: Vec<usize> = recording.sends().iter().map(|(count, _)| *count).collect();
    assert_eq!(
        sends, [3; 13],
        "each send lingered until it held batch_length messages"
    );
    assert_eq!(
        json_seqs(&target, &stream, 39).await,
        (0..39).collect::<Vec<_>>()
    );
}

/// A source with two `[[streams]]`: every message is stored on both, once each, in
/// order. Each batch's record is saved once, before its first send, naming its sends to
/// both streams, and only the send to the last stream carries the state the batch
/// leads to: a crash after the first stream stored it makes the source produce it
/// again, never leaves it out of the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_with_two_streams_stores_every_message_on_both() {
    let target = target().await;
    let dir = temp_dir("e2e-two-streams");
    let (first, second) = (unique("e2e-two-streams-a"), unique("e2e-two-streams-b"));
    let mut source = random_source(&first, 100);
    if let ConnectorConfig::Source(source) = &mut source {
        let mut other = source.streams[0].clone();
        other.stream = second.clone();
        source.streams.push(other);
    }
    let state = dir.join("state");
    let mut context = context(&target, &state).await;
    let recording = RecordingBus::watching(&mut context, Some(state.clone()));
    let runtime = Runtime::start(active(vec![source]), plugins_for_test(), context).await;
    produced(&runtime, 100).await;
    runtime.shutdown(Duration::from_secs(10)).await;
    for stream in [&first, &second] {
        assert_eq!(
            json_seqs(&target, stream, 100).await,
            (0..100).collect::<Vec<_>>(),
            "{stream}"
        );
        if let Some(server) = &target.server {
            assert_eq!(server.messages(stream, "t").unwrap().len(), 100, "{stream}");
        }
    }
    // Each send went once the record naming it was saved; sends alternate between the
    // streams, a batch's first stream first.
    let saved = recording.saved_at_send();
    let named = |(record, marker): &(SavedState, Option<u128>)| {
        record
            .pending
            .iter()
            .find(|send| Some(send.marker) == *marker)
            .cloned()
            .unwrap_or_else(|| panic!("a send not saved as pending: {record:?}"))
    };
    let mut states = Vec::new();
    for pair in saved.chunks(2) {
        let [to_first, to_second] = pair else {
            panic!("a send to one stream only: {saved:?}");
        };
        let (sent_first, sent_second) = (named(to_first), named(to_second));
        assert_eq!((&sent_first.stream, &sent_second.stream), (&first, &second));
        assert!(
            to_first
                .0
                .pending
                .iter()
                .any(|send| send.marker == sent_second.marker),
            "saved once before the batch's first send, with both: {to_first:?}"
        );
        assert_eq!(
            sent_first.state, None,
            "the first stream's send moves no state"
        );
        states.push(position(sent_second.state.as_deref()));
    }
    assert!(states.is_sorted(), "{states:?}");
    assert_eq!(states.last(), Some(&100), "{states:?}");
    let last = StateStore::new(&state).read_saved("random").await.unwrap();
    assert_eq!(
        (last.state, last.pending.len()),
        (Some(100u64.to_le_bytes().to_vec()), 0)
    );
}

/// A stream's `max_send_bytes` cuts sends by payload size as `batch_length` cuts them
/// by count; a message over the limit still goes, alone.
#[tokio::test]
async fn sends_are_cut_by_max_send_bytes() {
    let target = target().await;
    let dir = temp_dir("e2e-send-bytes");
    let stream = unique("e2e-send-bytes");
    let mut source = random_source(&stream, 50);
    if let ConnectorConfig::Source(source) = &mut source {
        source.streams[0].batch_length = 100;
        source.streams[0].max_send_bytes = Some(350);
        source.common.plugin_config = Some(serde_json::json!({
            "interval": "0ms", "max_count": 50, "messages_range": [25, 25], "payload_size": 100
        }));
    }
    let mut context = context(&target, &dir.join("state")).await;
    let recording = RecordingBus::around(&mut context);
    let runtime = Runtime::start(active(vec![source]), plugins_for_test(), context).await;
    produced(&runtime, 50).await;
    runtime.shutdown(Duration::from_secs(10)).await;
    let sends = recording.sends();
    assert_eq!(
        sends.iter().map(|(count, _)| count).sum::<usize>(),
        50,
        "{sends:?}"
    );
    // Each message is about 165 bytes: two fit in 350, three do not.
    assert!(
        sends
            .iter()
            .all(|(count, bytes)| *bytes <= 350 && *count <= 2),
        "{sends:?}"
    );
    assert!(
        sends.len() <= 26,
        "sends are filled up to the limit: {sends:?}"
    );
    assert_eq!(
        json_seqs(&target, &stream, 50).await,
        (0..50).collect::<Vec<_>>()
    );
}

/// Source transforms run in order before producing: a field is added, messages are
/// filtered, and `route` picks the topic; a sink reads the routed topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_transforms_add_filter_and_route() {
    let target = target().await;
    let dir = temp_dir("e2e-transforms");
    let stream = unique("e2e-transforms");
    let output = dir.join("routed.jsonl");
    let mut source = random_source(&stream, 100);
    if let ConnectorConfig::Source(source) = &mut source {
        let transforms = config(
            r#"
type = "source"
key = "x"
enabled = true
version = 0
name = "x"
path = "x"
[[streams]]
stream = "s"
topic = "t"
schema = "json"
[transforms.add_fields]
enabled = true
fields = [{ key = "origin", value.static = "test" }]
[transforms.filter]
field = "seq"
matches.less_than = 10
[transforms.route]
field = "key"
topics = { random = "routed" }
"#,
        );
        if let ConnectorConfig::Source(with) = transforms {
            source.common.transforms = with.common.transforms;
        }
    }
    let mut sink = file_sink("file", &stream, &output, 20);
    if let ConnectorConfig::Sink(sink) = &mut sink {
        sink.streams[0].topics = vec!["routed".to_owned()];
    }
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![source, sink]), plugins_for_test(), context).await;
    let payloads = || {
        std::fs::read_to_string(&output)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|value| value["payload"].clone())
            .collect::<Vec<_>>()
    };
    eventually_in(&runtime, "90 routed messages", || payloads().len() >= 90).await;
    let payloads = payloads();
    let seqs: Vec<u64> = payloads
        .iter()
        .map(|p| p["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (10..100).collect::<Vec<_>>(),
        "filtered, in order, once"
    );
    assert!(
        payloads.iter().all(|p| p["origin"] == "test"),
        "{:?}",
        payloads[0]
    );
    let status = runtime.status(ConnectorKind::Source, "random").unwrap();
    assert_eq!(status.metrics.filtered, 10, "{status:?}");
    let names: Vec<&str> = status.transforms.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["add_fields", "filter", "route"]);
    assert_eq!(
        (
            status.transforms[1].messages_in,
            status.transforms[1].dropped
        ),
        (100, 10)
    );
    if let Some(server) = &target.server {
        assert_eq!(
            server.messages(&stream, "t").unwrap().len(),
            0,
            "nothing went to the stream's own topic"
        );
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// The first `count` messages in topic `t` of `stream`, decoded.
async fn decoded_topic(
    target: &TestTarget,
    stream: &str,
    count: usize,
    decode: impl Fn(&[u8]) -> serde_json::Value,
) -> Vec<serde_json::Value> {
    read_topic(target, stream, "t", count)
        .await
        .iter()
        .map(|message| decode(&message.payload))
        .collect()
}

/// The `seq` fields of the first `count` JSON messages in topic `t` of `stream`.
async fn json_seqs(target: &TestTarget, stream: &str, count: usize) -> Vec<u64> {
    seqs(
        &decoded_topic(target, stream, count, |payload| {
            serde_json::from_slice(payload).unwrap()
        })
        .await,
    )
}

/// A source whose stream is Avro: the plugin's JSON is encoded with the stream's Avro
/// schema (inline here), after its transforms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_source_produces_avro_with_the_stream_schema() {
    let target = target().await;
    let dir = temp_dir("e2e-avro");
    let stream = unique("e2e-avro");
    let schema = r#"{"type":"record","name":"Event","fields":[{"name":"seq","type":"long"},{"name":"key","type":"string"},{"name":"origin","type":["null","string"]}]}"#;
    let mut source = random_source(&stream, 30);
    if let ConnectorConfig::Source(source) = &mut source {
        source.streams[0].payload.schema = connector_sdk::Schema::Avro;
        source.streams[0].payload.avro_schema_json = Some(schema.to_owned());
        source.common.transforms = config_provider::Transforms(vec![(
            "add_fields".to_owned(),
            serde_json::json!({ "fields": [{ "key": "origin", "value": { "static": "avro-test" } }] }),
        )]);
    }
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![source]), plugins_for_test(), context).await;
    produced(&runtime, 30).await;
    let avro = transforms::AvroSchema::parse(schema).unwrap();
    let decoded = decoded_topic(&target, &stream, 30, |payload| {
        avro.decode(payload).unwrap()
    })
    .await;
    assert_eq!(seqs(&decoded), (0..30).collect::<Vec<_>>());
    assert!(
        decoded
            .iter()
            .all(|value| value["key"] == "random" && value["origin"] == "avro-test")
    );
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// `demo.Event { uint64 seq = 1; string key = 2; string origin = 3; }` as a descriptor
/// set file, as `protoc --descriptor_set_out` writes it.
fn event_descriptor_set(dir: &std::path::Path) -> String {
    use prost_reflect::prost::Message;
    use prost_reflect::prost_types::field_descriptor_proto::{Label, Type};
    use prost_reflect::prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    };
    let field = |name: &str, number: i32, kind: Type| FieldDescriptorProto {
        name: Some(name.to_owned()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(kind as i32),
        ..FieldDescriptorProto::default()
    };
    let set = FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("event.proto".to_owned()),
            package: Some("demo".to_owned()),
            syntax: Some("proto3".to_owned()),
            message_type: vec![DescriptorProto {
                name: Some("Event".to_owned()),
                field: vec![
                    field("seq", 1, Type::Uint64),
                    field("key", 2, Type::String),
                    field("origin", 3, Type::String),
                ],
                ..DescriptorProto::default()
            }],
            ..FileDescriptorProto::default()
        }],
    };
    let path = dir.join("event.pb");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, set.encode_to_vec()).unwrap();
    path.display().to_string()
}

/// JSON from the plugin is transformed and encoded as the stream's Protobuf message
/// type; a misnamed message type fails the connector, naming the setting.
#[tokio::test]
async fn a_json_source_produces_protobuf_with_the_stream_message_type() {
    let target = target().await;
    let dir = temp_dir("e2e-proto");
    let descriptors = event_descriptor_set(&dir);
    let stream = unique("e2e-proto");
    let proto = |message_type: &str| {
        let mut source = random_source(&stream, 30);
        if let ConnectorConfig::Source(source) = &mut source {
            source.streams[0].payload.schema = connector_sdk::Schema::Proto;
            source.streams[0].payload.proto_descriptor_set = Some(descriptors.clone());
            source.streams[0].payload.proto_message_type = Some(message_type.to_owned());
            source.common.transforms = config_provider::Transforms(vec![(
                "add_fields".to_owned(),
                serde_json::json!({ "fields": [{ "key": "origin", "value": { "static": "proto-test" } }] }),
            )]);
        }
        source
    };
    let first = context(&target, &dir.join("state")).await;
    let runtime =
        Runtime::start(active(vec![proto("demo.Event")]), plugins_for_test(), first).await;
    produced(&runtime, 30).await;
    let bytes = std::fs::read(&descriptors).unwrap();
    let schema = transforms::ProtoSchema::from_descriptor_set(&bytes, "demo.Event").unwrap();
    let decoded = decoded_topic(&target, &stream, 30, |payload| {
        schema.decode(payload).unwrap()
    })
    .await;
    assert_eq!(seqs(&decoded), (0..30).collect::<Vec<_>>());
    assert!(
        decoded
            .iter()
            .all(|value| value["key"] == "random" && value["origin"] == "proto-test"),
        "{decoded:?}"
    );
    runtime.shutdown(Duration::from_secs(10)).await;

    let second = context(&target, &dir.join("state-2")).await;
    let runtime =
        Runtime::start(active(vec![proto("demo.Nope")]), plugins_for_test(), second).await;
    in_state_with(
        &runtime,
        ConnectorKind::Source,
        "random",
        ConnectorState::Error,
        "no message type \"demo.Nope\"",
    )
    .await;
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A stream declared Avro without an Avro schema cannot run: the source is `error`,
/// saying so.
#[tokio::test]
async fn an_avro_stream_without_a_schema_fails_clearly() {
    let target = target().await;
    let dir = temp_dir("e2e-avro-missing");
    let mut source = random_source(&unique("e2e-avro-missing"), 5);
    if let ConnectorConfig::Source(source) = &mut source {
        source.streams[0].payload.schema = connector_sdk::Schema::Avro;
        source.streams[0].payload.avro_schema_path =
            Some(dir.join("missing.avsc").display().to_string());
    }
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![source]), plugins_for_test(), context).await;
    in_state_with(
        &runtime,
        ConnectorKind::Source,
        "random",
        ConnectorState::Error,
        "avro_schema_path",
    )
    .await;
    runtime.shutdown(Duration::from_secs(10)).await;
}
