//! A sink's error policy for messages it cannot handle (in its plugin or its
//! transforms): `dead_letter` sends them to the dead letter topic with their error,
//! `skip` passes over them, `fail` stops the sink before them.

use std::time::Duration;

use config_provider::ConnectorConfig;
use connector_sdk::ConnectorKind;
use iggy::prelude::{Identifier, TopicClient};
use iggy_connectors_tests::{eventually, plugin_path, target, temp_dir, unique};
use iggy_test_server::OffsetOwner;
use runtime_core::{ConnectorState, Destination, Runtime};

use crate::support::{
    active, bus, client_with_topic, config, context, eventually_in, failed_with, file_sink,
    group_offset, plugins_for_test, produce_to_partition, random_source, read_topic,
};

/// A faulty sink `key` on topic `t` of `stream` that fails permanently on any batch
/// holding one of `poison` (payload fragments), under `policy`.
fn poisoned_sink(key: &str, stream: &str, poison: &[&str], policy: &str) -> ConnectorConfig {
    let poison = poison
        .iter()
        .map(|fragment| format!("'{fragment}'"))
        .collect::<Vec<_>>()
        .join(", ");
    config(&format!(
        r#"
type = "sink"
key = "{key}"
enabled = true
version = 0
name = "Poisoned"
path = "{path}"
error_policy = "{policy}"
[dead_letter]
stream = "{stream}"
topic = "dead"
[[streams]]
stream = "{stream}"
topics = ["t"]
schema = "json"
batch_length = 20
poll_interval = "2ms"
[plugin_config]
fail_payloads_containing = [{poison}]
"#,
        path = plugin_path("faulty_sink_plugin"),
    ))
}

/// A string header's value ("" when absent).
fn header(message: &runtime_core::IncomingMessage, key: &str) -> String {
    message
        .headers
        .iter()
        .find(|header| header.key == key)
        .map(|header| String::from_utf8_lossy(&header.value).into_owned())
        .unwrap_or_default()
}

/// Two poison messages among 50: each goes to the dead letter topic with headers naming
/// the error and its origin; the rest reach the sink; the offset moves past all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_messages_go_to_the_dead_letter_topic_with_their_error() {
    use runtime_core::dead_letter;
    let target = target().await;
    let dir = temp_dir("e2e-dead-letter");
    let stream = unique("e2e-dead-letter");
    let sink = poisoned_sink(
        "poisoned",
        &stream,
        &["\"seq\":7,", "\"seq\":31,"],
        "dead_letter",
    );
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(
        active(vec![random_source(&stream, 50), sink]),
        plugins_for_test(),
        context,
    )
    .await;
    eventually_in(&runtime, "every message handled", || {
        runtime
            .status(ConnectorKind::Sink, "poisoned")
            .is_some_and(|status| status.metrics.messages_out + status.metrics.dead_letters == 50)
    })
    .await;
    let status = runtime.status(ConnectorKind::Sink, "poisoned").unwrap();
    assert_eq!(status.state, ConnectorState::Running, "{status:?}");
    assert_eq!(status.metrics.dead_letters, 2, "{status:?}");
    assert_eq!(status.metrics.messages_out, 48, "{status:?}");
    assert!(
        runtime
            .prometheus()
            .contains("iggy_connectors_dead_letters_total{kind=\"sink\",key=\"poisoned\"} 2\n")
    );

    let letters = read_topic(&target, &stream, "dead", 2).await;
    let mut seqs = Vec::new();
    for letter in &letters {
        let payload: serde_json::Value = serde_json::from_slice(&letter.payload).unwrap();
        let seq = payload["seq"].as_u64().unwrap();
        seqs.push(seq);
        assert!(
            header(letter, dead_letter::ERROR).contains("poison message"),
            "{letter:?}"
        );
        assert_eq!(header(letter, dead_letter::CONNECTOR), "poisoned");
        assert_eq!(header(letter, dead_letter::STREAM), stream);
        assert_eq!(header(letter, dead_letter::TOPIC), "t");
        assert!(!header(letter, dead_letter::PARTITION).is_empty());
        // The random source's seq n is offset n of its topic.
        assert_eq!(header(letter, dead_letter::OFFSET), seq.to_string());
    }
    assert_eq!(seqs, vec![7, 31]);
    if let Some(server) = &target.server {
        let owner = OffsetOwner::Group("iggy-connect-sink-poisoned".to_owned());
        eventually("the offset moved past the poison", || {
            server.stored_offset(&stream, "t", &owner, 0) == Some(49)
        })
        .await;
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A dead letter Iggy does not store (its topic was deleted after the sink made it) is
/// no dead letter: the sink fails on the message instead of passing over it, and its
/// group's offset stays before it, so the message is read again once the sink runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_iggy_does_not_store_leaves_the_offset_before_the_message() {
    let target = target().await;
    let dir = temp_dir("e2e-dead-letter-lost");
    let stream = unique("e2e-dead-letter-lost");
    let client = client_with_topic(&target, &stream, 1).await;
    let sink = poisoned_sink("poisoned", &stream, &["\"seq\":3}"], "dead_letter");
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![sink]), plugins_for_test(), context).await;
    let status = || runtime.status(ConnectorKind::Sink, "poisoned").unwrap();
    // Running: it made the dead letter topic (first) and joined its group.
    eventually_in(&runtime, "the sink running", || {
        status().state == ConnectorState::Running
    })
    .await;
    client
        .delete_topic(
            &Identifier::named(&stream).unwrap(),
            &Identifier::named("dead").unwrap(),
        )
        .await
        .unwrap();
    produce_to_partition(&client, &stream, 0, 10).await;
    eventually_in(&runtime, "the sink failed, or went on", || {
        let status = status();
        status.state == ConnectorState::Failed || status.metrics.messages_out > 0
    })
    .await;
    let failed = status();
    assert_eq!(failed.state, ConnectorState::Failed, "{failed:?}");
    assert!(
        failed
            .last_error
            .as_deref()
            .unwrap()
            .contains("could not go to the dead letter topic"),
        "{failed:?}"
    );
    assert_eq!(
        (failed.metrics.dead_letters, failed.metrics.messages_out),
        (0, 0),
        "{failed:?}"
    );
    let group = "iggy-connect-sink-poisoned";
    let stored = group_offset(&client, &stream, "t", group, 0).await;
    assert!(stored.is_none_or(|offset| offset < 3), "{stored:?}");
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// Under `skip`, poison messages are counted and passed over; under `fail` (the
/// default), the sink fails on the first one and stores no offset at or beyond it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_passes_over_poison_and_fail_stops_before_it() {
    let target = target().await;
    let dir = temp_dir("e2e-skip");
    let stream = unique("e2e-skip");
    let skipping = poisoned_sink("skipping", &stream, &["\"seq\":12,"], "skip");
    let failing = poisoned_sink("failing", &stream, &["\"seq\":12,"], "fail");
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(
        active(vec![random_source(&stream, 50), skipping, failing]),
        plugins_for_test(),
        context,
    )
    .await;
    eventually_in(&runtime, "the skipping sink handled everything", || {
        runtime
            .status(ConnectorKind::Sink, "skipping")
            .is_some_and(|status| status.metrics.messages_out == 49 && status.metrics.skipped == 1)
    })
    .await;
    let failing = failed_with(&runtime, ConnectorKind::Sink, "failing", "poison message").await;
    assert_eq!(failing.metrics.dead_letters + failing.metrics.skipped, 0);
    if let Some(server) = &target.server {
        let owner = |group: &str| OffsetOwner::Group(group.to_owned());
        eventually("the skipping sink committed everything", || {
            server.stored_offset(&stream, "t", &owner("iggy-connect-sink-skipping"), 0) == Some(49)
        })
        .await;
        let failed_at = server.stored_offset(&stream, "t", &owner("iggy-connect-sink-failing"), 0);
        assert!(failed_at.is_none_or(|offset| offset < 12), "{failed_at:?}");
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A message a sink's transforms cannot handle (here: not JSON in a JSON stream)
/// follows the error policy: skipped, sent to the dead letter topic, or failing the
/// sink; the messages around it are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_transform_failures_follow_the_error_policy() {
    use runtime_core::{OutgoingMessage, dead_letter};
    let target = target().await;
    let dir = temp_dir("e2e-transform-policy");
    let stream = unique("e2e-transform-policy");
    let writer = bus(&target).await;
    writer
        .ensure_topic(&Destination::new(&stream, "t"))
        .await
        .unwrap();
    let message = |payload: &'static [u8]| OutgoingMessage {
        id: None,
        headers: Vec::new(),
        payload: bytes::Bytes::from_static(payload),
    };
    writer
        .send(
            &Destination::new(&stream, "t"),
            vec![
                message(br#"{"n":1}"#),
                message(b"not json"),
                message(br#"{"n":3}"#),
            ],
        )
        .await
        .unwrap();
    let sink = |key: &str, policy: &str| {
        let output = dir.join(format!("{key}.jsonl"));
        let mut sink = file_sink(key, &stream, &output, 10);
        if let ConnectorConfig::Sink(sink) = &mut sink {
            sink.common.error_policy = match policy {
                "skip" => config_provider::ErrorPolicy::Skip,
                "dead_letter" => config_provider::ErrorPolicy::DeadLetter,
                _ => config_provider::ErrorPolicy::Fail,
            };
            sink.common.dead_letter = Some(config_provider::DeadLetterTarget {
                stream: stream.clone(),
                topic: format!("dead-{key}"),
            });
            sink.common.transforms = config_provider::Transforms(vec![(
                "add_fields".to_owned(),
                serde_json::json!({ "enabled": true, "fields": [{ "key": "seen", "value": { "static": true } }] }),
            )]);
        }
        (sink, output)
    };
    let (skipping, skipped_output) = sink("skipping", "skip");
    let (lettering, lettered_output) = sink("lettering", "dead_letter");
    let (failing, failed_output) = sink("failing", "fail");
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(
        active(vec![skipping, lettering, failing]),
        plugins_for_test(),
        context,
    )
    .await;
    let ns = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|value| {
                (
                    value["payload"]["n"].as_u64().unwrap_or(0),
                    value["payload"]["seen"] == true,
                )
            })
            .collect::<Vec<_>>()
    };
    eventually_in(
        &runtime,
        "skip and dead letter delivered both good messages",
        || ns(&skipped_output).len() == 2 && ns(&lettered_output).len() == 2,
    )
    .await;
    assert_eq!(ns(&skipped_output), [(1, true), (3, true)]);
    assert_eq!(ns(&lettered_output), [(1, true), (3, true)]);
    failed_with(&runtime, ConnectorKind::Sink, "failing", "cannot decode").await;
    assert!(
        ns(&failed_output).is_empty(),
        "nothing of the failing batch was delivered"
    );
    // A batch counts as delivered once its offset is stored, after the file has it.
    let counted = |key: &str| {
        let status = runtime.status(ConnectorKind::Sink, key).unwrap();
        (
            status.metrics.skipped,
            status.metrics.dead_letters,
            status.metrics.messages_out,
        )
    };
    eventually_in(&runtime, "both sinks counted their batch", || {
        counted("skipping").2 == 2 && counted("lettering").2 == 2
    })
    .await;
    assert_eq!(counted("skipping"), (1, 0, 2));
    assert_eq!(counted("lettering"), (0, 1, 2));

    let letter = read_topic(&target, &stream, "dead-lettering", 1)
        .await
        .remove(0);
    assert_eq!(&letter.payload[..], b"not json", "the original payload");
    let error = header(&letter, dead_letter::ERROR);
    assert!(error.contains("cannot decode"), "{error}");
    runtime.shutdown(Duration::from_secs(10)).await;
}
