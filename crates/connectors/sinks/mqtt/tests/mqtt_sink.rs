//! The MQTT sink against a real broker: the shared Mosquitto (`IGGY_TEST_MQTT_URL`) for
//! topics and payloads, a private one for the broker going away; and end to end through
//! the runtime (the Iggy test server, or a real one from `IGGY_TEST_ADDRESS`) with the
//! broker restarted mid-stream.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use config_provider::{ActiveConfigs, parse_connector_toml};
use connector_sdk::testing::{SinkHarness, TestBatch, TestMessage};
use connector_sdk::{ConnectorKind, ErrorKind, OwnedHeader, Schema};
use iggy_connector_mqtt_sink::MqttSink;
use iggy_connectors_tests::services::{Service, ServiceAddress, service_url};
use iggy_connectors_tests::{
    eventually, eventually_showing, plugin_path, target, temp_dir, unique,
};
use plugin_host::PluginLoader;
use runtime_core::{
    ConnectorState, IggyBus, IggySettings, PluginRegistry, RestartPolicy, RetryPolicy, Runtime,
    RuntimeContext, StallPolicy, StateStore,
};
use support::{Broker, Received, Subscriber};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_each_payload_to_the_topic_its_template_names() {
    let Some(url) = service_url(Service::Mqtt) else {
        return;
    };
    let prefix = unique("mqtt-sink");
    let subscriber = Subscriber::start(&url, &format!("{prefix}/#")).await;
    let mut sink = SinkHarness::<MqttSink>::open(serde_json::json!({
        // Tests run at once: a shared client id would make the broker drop the other.
        "client_id": unique("sink"),
        "url": url,
        "topic": format!("{prefix}/devices/{{device_id}}/commands"),
        "qos": 1,
    }))
    .await
    .unwrap();
    let batch = TestBatch::new()
        .schema(Schema::Json)
        .message(TestMessage::new(r#"{"device_id":"d1","cmd":"on"}"#))
        .message(TestMessage::new(r#"{"device_id":7,"cmd":"off"}"#))
        .message(
            TestMessage::new(r#"{"device_id":"ignored","cmd":"reset"}"#)
                .header(OwnedHeader::string("device_id", "d3")),
        );
    sink.consume(&batch).await.unwrap();
    eventually("3 messages received", || subscriber.received().len() >= 3).await;
    let mut received = subscriber.received();
    received.sort_by(|a, b| a.topic.cmp(&b.topic));
    let expected = |device: &str, payload: &str| Received {
        topic: format!("{prefix}/devices/{device}/commands"),
        payload: payload.as_bytes().to_vec(),
        retain: false,
    };
    assert_eq!(
        received,
        vec![
            expected("7", r#"{"device_id":7,"cmd":"off"}"#),
            expected("d1", r#"{"device_id":"d1","cmd":"on"}"#),
            expected("d3", r#"{"device_id":"ignored","cmd":"reset"}"#),
        ]
    );
    sink.close().await.unwrap();
}

/// With MQTT 5 the message's headers go as user properties, integers as decimals. The
/// messages are retained, so a subscriber started afterwards (`mosquitto_sub`, which
/// prints the properties) gets them with their properties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_publishes_headers_as_user_properties() {
    let Some(url) = service_url(Service::Mqtt) else {
        return;
    };
    let address = ServiceAddress::parse(&url).unwrap();
    let prefix = unique("mqtt5-sink");
    let mut sink = SinkHarness::<MqttSink>::open(serde_json::json!({
        "client_id": unique("sink5"),
        "url": url,
        "topic": format!("{prefix}/{{device_id}}"),
        "qos": 1,
        "retain": true,
        "protocol_version": "5",
    }))
    .await
    .unwrap();
    let batch = TestBatch::new()
        .message(
            TestMessage::new("on")
                .header(OwnedHeader::string("device_id", "d1"))
                .header(OwnedHeader::string("tenant", "acme"))
                .header(OwnedHeader {
                    key: "level".to_owned(),
                    kind: connector_sdk::HeaderKind::Uint32,
                    value: 300u32.to_le_bytes().to_vec(),
                }),
        )
        .message(TestMessage::new("off").header(OwnedHeader::string("device_id", "d2")));
    sink.consume(&batch).await.unwrap();
    sink.close().await.unwrap();
    let output = std::process::Command::new("mosquitto_sub")
        .args([
            "-V",
            "mqttv5",
            "-h",
            &address.host,
            "-p",
            &address.port.to_string(),
        ])
        .args([
            "-t",
            &format!("{prefix}/#"),
            "-F",
            "%t %p %P",
            "-C",
            "2",
            "-W",
            "10",
        ])
        .output()
        .expect("mosquitto_sub runs");
    // The retained messages cleared, whatever the outcome.
    for device in ["d1", "d2"] {
        let _ = std::process::Command::new("mosquitto_pub")
            .args(["-h", &address.host, "-p", &address.port.to_string()])
            .args(["-t", &format!("{prefix}/{device}"), "-r", "-n"])
            .output();
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("{prefix}/d1 on device_id:d1 tenant:acme level:300"),
            format!("{prefix}/d2 off device_id:d2"),
        ],
        "{output:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_its_topic_field_fails_the_batch_before_anything_is_published() {
    let Some(url) = service_url(Service::Mqtt) else {
        return;
    };
    let prefix = unique("mqtt-sink-bad");
    let subscriber = Subscriber::start(&url, &format!("{prefix}/#")).await;
    let mut sink = SinkHarness::<MqttSink>::open(serde_json::json!({
        // Tests run at once: a shared client id would make the broker drop the other.
        "client_id": unique("sink"),
        "url": url,
        "topic": format!("{prefix}/{{device_id}}"),
    }))
    .await
    .unwrap();
    let batch = TestBatch::new()
        .first_offset(40)
        .message(TestMessage::new(r#"{"device_id":"ok"}"#))
        .message(TestMessage::new(r#"{"other":1}"#));
    let error = sink.consume(&batch).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error:?}");
    assert!(error.message().contains("offset 41"), "{error:?}");
    // A later, good batch goes through; the refused one left nothing behind.
    sink.consume(&TestBatch::of([r#"{"device_id":"after"}"#]))
        .await
        .unwrap();
    eventually("the good message", || !subscriber.received().is_empty()).await;
    let topics: Vec<String> = subscriber.received().into_iter().map(|m| m.topic).collect();
    assert_eq!(topics, vec![format!("{prefix}/after")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_reach_a_later_subscriber() {
    let Some(url) = service_url(Service::Mqtt) else {
        return;
    };
    let topic = unique("mqtt-sink-retain");
    let mut sink = SinkHarness::<MqttSink>::open(serde_json::json!({
        // Tests run at once: a shared client id would make the broker drop the other.
        "client_id": unique("sink"),
        "url": url, "topic": topic, "qos": 2, "retain": true,
    }))
    .await
    .unwrap();
    sink.consume(&TestBatch::of(["last known state"]))
        .await
        .unwrap();
    // Subscribed only after the publish was acknowledged: only a retained message comes.
    let subscriber = Subscriber::start(&url, &topic).await;
    eventually("the retained message", || !subscriber.received().is_empty()).await;
    let received = subscriber.received();
    assert_eq!(received[0].payload, b"last known state");
    assert!(received[0].retain);
    // Clear the retained message (an empty retained publish) so the broker forgets it.
    sink.consume(&TestBatch::of([""])).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_fails_batches_retryably_until_it_is_back() {
    let Some(mut broker) = Broker::start("a_broker_that_is_down_fails_batches_retryably") else {
        return;
    };
    broker.stop();
    // Opening does not need the broker: the connector stays up and batches retry.
    let mut sink = SinkHarness::<MqttSink>::open(serde_json::json!({
        // Tests run at once: a shared client id would make the broker drop the other.
        "client_id": unique("sink"),
        "url": broker.url(), "topic": "t", "ack_timeout": "2s",
    }))
    .await
    .unwrap();
    let error = sink.consume(&TestBatch::of(["m"])).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Retryable, "{error:?}");
    broker.run();
    let subscriber = Subscriber::start(&broker.url(), "t").await;
    sink.consume(&TestBatch::of(["m"])).await.unwrap();
    eventually("the message after the broker came back", || {
        subscriber.received().len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_a_permanent_error_at_open() {
    let Some(broker) = Broker::start_with("a_refused_login", "allow_anonymous false\n") else {
        return;
    };
    let error = SinkHarness::<MqttSink>::open(serde_json::json!({
        // Tests run at once: a shared client id would make the broker drop the other.
        "client_id": unique("sink"),
        "url": broker.url(), "topic": "t", "username": "nobody", "password": "wrong",
    }))
    .await
    .unwrap_err();
    assert_ne!(error.kind(), ErrorKind::Retryable, "{error:?}");
}

/// Iggy → runtime → MQTT sink → private broker, the broker stopped and started again
/// while messages flow: every message reaches the subscriber (duplicates allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_arrives_through_a_broker_restart() {
    const COUNT: u64 = 3000;
    let Some(mut broker) = Broker::start("every_message_arrives_through_a_broker_restart") else {
        return;
    };
    let target = target().await;
    let dir = temp_dir("mqtt-sink-e2e");
    let stream = unique("mqtt-sink-e2e");
    iggy_connectors_tests::prepare_topic(&target.address, &stream, "t").await;
    let subscriber = Subscriber::start(&broker.url(), "e2e/#").await;
    let source = parse_connector_toml(&format!(
        r#"
type = "source"
key = "random"
enabled = true
version = 0
name = "Random"
path = "{path}"
[[streams]]
stream = "{stream}"
topic = "t"
schema = "json"
[plugin_config]
interval = "2ms"
max_count = {COUNT}
messages_range = [5, 10]
payload_size = 20
"#,
        path = plugin_path("iggy_connector_random_source"),
    ))
    .unwrap();
    let sink = parse_connector_toml(&format!(
        r#"
type = "sink"
key = "mqtt"
enabled = true
version = 0
name = "MQTT"
path = "{path}"
[[streams]]
stream = "{stream}"
topics = ["t"]
schema = "json"
batch_length = 50
poll_interval = "2ms"
[retry]
max_attempts = 1000
initial_backoff = "20ms"
max_backoff = "200ms"
[plugin_config]
url = "{url}"
topic = "e2e/{{seq}}"
qos = 1
ack_timeout = "2s"
"#,
        path = plugin_path("iggy_connector_mqtt_sink"),
        url = broker.url(),
    ))
    .unwrap();
    let mut active = ActiveConfigs::default();
    active.sources.insert("random".into(), source);
    active.sinks.insert("mqtt".into(), sink);
    let bus = IggyBus::connect(&IggySettings {
        connect_retries: 2,
        reconnect_interval: Duration::from_millis(50),
        ..IggySettings::new(target.address.clone())
    })
    .await
    .unwrap();
    let context = RuntimeContext {
        bus: Arc::new(bus),
        state: StateStore::new(dir.join("state")),
        retry: RetryPolicy {
            attempts: 1000,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        },
        restart: RestartPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            ..RestartPolicy::default()
        },
        stop_timeout: Duration::from_secs(10),
        stall: StallPolicy::default(),
        memory_budget: config_provider::DEFAULT_MEMORY_BUDGET,
        cluster: None,
    };
    let runtime = Runtime::start(active, PluginRegistry::new(PluginLoader::new()), context).await;
    let seqs = || -> BTreeSet<u64> {
        subscriber
            .received()
            .iter()
            .map(|message| message.topic["e2e/".len()..].parse::<u64>().unwrap())
            .collect()
    };
    let statuses = || {
        let got = seqs();
        let missing: Vec<u64> = (0..COUNT)
            .filter(|seq| !got.contains(seq))
            .take(20)
            .collect();
        format!(
            "{} distinct of {COUNT}, first missing {missing:?}; {:#?}",
            got.len(),
            runtime.statuses()
        )
    };
    eventually_showing(
        "a third of the messages",
        || seqs().len() as u64 >= COUNT / 3,
        statuses,
    )
    .await;
    broker.stop();
    // The sink's batches fail while the broker is away (retryably: it stays up).
    let failed_before = runtime.status(ConnectorKind::Sink, "mqtt").unwrap();
    broker.run();
    eventually_showing("every message", || seqs().len() as u64 == COUNT, statuses).await;
    assert_eq!(seqs(), (0..COUNT).collect::<BTreeSet<u64>>());
    for received in subscriber.received() {
        let payload: serde_json::Value = serde_json::from_slice(&received.payload).unwrap();
        assert_eq!(
            received.topic,
            format!("e2e/{}", payload["seq"]),
            "each payload on its own topic"
        );
    }
    let status = runtime.status(ConnectorKind::Sink, "mqtt").unwrap();
    assert_eq!(
        status.state,
        ConnectorState::Running,
        "{status:?} (before: {failed_before:?})"
    );
    runtime.shutdown(Duration::from_secs(10)).await;
}
