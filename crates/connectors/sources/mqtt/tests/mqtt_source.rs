//! The MQTT source against the shared Mosquitto (`IGGY_TEST_MQTT_URL`): messages with
//! their MQTT headers, MQTT 5 user properties and correlation data, message ids from
//! JSON fields, and acknowledgements that wait for the runtime's `Accepted` (with MQTT
//! 3.1.1 and 5).

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use connector_sdk::testing::{SinkHarness, SourceHarness, TestBatch};
use connector_sdk::{HeaderKind, OwnedHeader, ProducedMessage};
use iggy_connector_mqtt_sink::MqttSink;
use iggy_connector_mqtt_source::MqttSource;
use iggy_connectors_tests::services::{Service, ServiceAddress, service_url};
use iggy_connectors_tests::unique;

/// Publishes `payloads` to `topic` with QoS 1, acknowledged by the broker on return.
async fn publish(url: &str, topic: &str, payloads: &[&str], retain: bool) {
    let mut sink = SinkHarness::<MqttSink>::open(serde_json::json!({
        "url": url, "topic": topic, "qos": 1, "retain": retain,
        // Tests run at once: a shared client id would make the broker drop the other.
        "client_id": unique("pub"),
    }))
    .await
    .unwrap();
    sink.consume(&TestBatch::of(payloads.iter().map(|p| p.to_string())))
        .await
        .unwrap();
    sink.close().await.unwrap();
}

fn header<'a>(message: &'a ProducedMessage, key: &str) -> &'a OwnedHeader {
    message
        .headers
        .iter()
        .find(|header| header.key == key)
        .unwrap_or_else(|| panic!("no header {key} in {message:?}"))
}

fn topic_of(message: &ProducedMessage) -> String {
    String::from_utf8(header(message, "mqtt_topic").value.clone()).unwrap()
}

/// A source on `{prefix}/#` that is known to be subscribed: a retained message on
/// `{prefix}/ready`, published first, is what the broker sends on subscribing, and the
/// source's first batch. That batch is accepted and the retained message cleared (its
/// clearing is a live empty message, which callers skip).
async fn subscribed_source(url: &str, prefix: &str, client_id: &str) -> SourceHarness<MqttSource> {
    subscribed_source_with(url, prefix, client_id, serde_json::json!({})).await
}

/// [`subscribed_source`] with `extra` keys in its config.
async fn subscribed_source_with(
    url: &str,
    prefix: &str,
    client_id: &str,
    extra: serde_json::Value,
) -> SourceHarness<MqttSource> {
    publish(url, &format!("{prefix}/ready"), &["ready"], true).await;
    let mut source = open_with(url, prefix, client_id, extra).await;
    let batch = source
        .poll_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(topic_of(&batch.messages[0]), format!("{prefix}/ready"));
    let retain = header(&batch.messages[0], "mqtt_retain");
    assert_eq!(
        (retain.kind, retain.value.as_slice()),
        (HeaderKind::Bool, &[1u8][..])
    );
    source.accept().await.unwrap();
    publish(url, &format!("{prefix}/ready"), &[""], true).await;
    source
}

/// A source on `{prefix}/#` as `client_id`, with `extra` keys in its config.
async fn open_with(
    url: &str,
    prefix: &str,
    client_id: &str,
    extra: serde_json::Value,
) -> SourceHarness<MqttSource> {
    let mut config = serde_json::json!({
        "url": url,
        "client_id": client_id,
        "topics": [{"filter": format!("{prefix}/#"), "qos": 1}],
        "batch_length": 100,
        "linger_time": "20ms",
    });
    if let (Some(config), serde_json::Value::Object(extra)) = (config.as_object_mut(), extra) {
        config.extend(extra);
    }
    SourceHarness::<MqttSource>::open(config, None)
        .await
        .unwrap()
}

/// Ends the persistent session of `client_id` when dropped, the test passed or not (a
/// clean-session connection under its id), so that the shared broker does not keep
/// the test's session for ever.
struct EndSession {
    url: String,
    client_id: String,
}

impl EndSession {
    fn new(url: &str, client_id: &str) -> Self {
        EndSession {
            url: url.to_owned(),
            client_id: client_id.to_owned(),
        }
    }
}

impl Drop for EndSession {
    fn drop(&mut self) {
        let Ok(address) = ServiceAddress::parse(&self.url) else {
            return;
        };
        let _ = std::process::Command::new("mosquitto_sub")
            .args(["-h", &address.host, "-p", &address.port.to_string()])
            .args(["-i", &self.client_id, "-t", "end/session", "-E"])
            .output();
    }
}

/// Publishes one message with `mosquitto_pub` and MQTT 5 (QoS 1), with `properties`
/// (`-D publish <name> <value...>` each, e.g. `["user-property", "k", "v"]`).
fn publish_v5(url: &str, topic: &str, payload: &str, properties: &[&[&str]]) {
    let address = ServiceAddress::parse(url).unwrap();
    let mut command = std::process::Command::new("mosquitto_pub");
    command
        .args(["-V", "mqttv5", "-q", "1", "-h", &address.host])
        .args(["-p", &address.port.to_string(), "-t", topic, "-m", payload]);
    for property in properties {
        command.args(["-D", "publish"]).args(*property);
    }
    let output = command.output().expect("mosquitto_pub runs");
    assert!(output.status.success(), "{output:?}");
}

/// Polls until `count` messages off `{prefix}/ready` came, leaving every batch
/// unsettled; returns them and how many batches held them.
async fn collect(
    source: &mut SourceHarness<MqttSource>,
    prefix: &str,
    count: usize,
) -> (Vec<ProducedMessage>, usize) {
    let ready = format!("{prefix}/ready");
    let mut messages = Vec::new();
    let mut batches = 0;
    while messages.len() < count {
        let batch = source
            .poll_timeout(Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("only {} of {count} messages", messages.len()));
        batches += 1;
        messages.extend(batch.messages.into_iter().filter(|m| topic_of(m) != ready));
    }
    (messages, batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_with_their_topic_qos_and_retain_headers() {
    let Some(url) = service_url(Service::Mqtt) else {
        return;
    };
    let prefix = unique("mqtt-source");
    let client_id = unique("src");
    let _end = EndSession::new(&url, &client_id);
    let mut source = subscribed_source(&url, &prefix, &client_id).await;
    publish(
        &url,
        &format!("{prefix}/a/1"),
        &[r#"{"n":1}"#, r#"{"n":2}"#],
        false,
    )
    .await;
    publish(&url, &format!("{prefix}/b"), &["plain text"], false).await;
    let (messages, _) = collect(&mut source, &prefix, 3).await;
    let seen: Vec<(String, Vec<u8>)> = messages
        .iter()
        .map(|m| (topic_of(m), m.payload.to_vec()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (format!("{prefix}/a/1"), br#"{"n":1}"#.to_vec()),
            (format!("{prefix}/a/1"), br#"{"n":2}"#.to_vec()),
            (format!("{prefix}/b"), b"plain text".to_vec()),
        ]
    );
    for message in &messages {
        let qos = header(message, "mqtt_qos");
        assert_eq!(
            (qos.kind, qos.value.as_slice()),
            (HeaderKind::Uint8, &[1u8][..])
        );
        let retain = header(message, "mqtt_retain");
        assert_eq!(retain.value, vec![0]);
    }
    source.close().await.unwrap();
}

/// The broker is acknowledged only for accepted batches: what was polled and not
/// accepted comes again to the next run of the same session; what was accepted does
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_accepted_batches_are_acknowledged_to_the_broker() {
    only_accepted_batches_are_acknowledged(serde_json::json!({})).await;
}

/// The same with MQTT 5, whose session outlives the connection only by its expiry (a
/// week by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_accepted_batches_are_acknowledged_to_the_broker_with_mqtt5() {
    only_accepted_batches_are_acknowledged(serde_json::json!({"protocol_version": "5"})).await;
}

async fn only_accepted_batches_are_acknowledged(extra: serde_json::Value) {
    let Some(url) = service_url(Service::Mqtt) else {
        return;
    };
    let prefix = unique("mqtt-source-ack");
    let client_id = unique("src-ack");
    let _end = EndSession::new(&url, &client_id);
    let payloads = ["m1", "m2", "m3", "m4", "m5"];
    let mut source = subscribed_source_with(&url, &prefix, &client_id, extra.clone()).await;
    publish(&url, &format!("{prefix}/data"), &payloads, false).await;
    let (first, _) = collect(&mut source, &prefix, payloads.len()).await;
    // Closed (as after a crash or a failed send) with the batches unsettled.
    source.close().await.unwrap();

    let mut source = open_with(&url, &prefix, &client_id, extra.clone()).await;
    let (again, batches) = collect(&mut source, &prefix, payloads.len()).await;
    let texts = |messages: &[ProducedMessage]| -> Vec<Vec<u8>> {
        messages.iter().map(|m| m.payload.to_vec()).collect()
    };
    assert_eq!(texts(&first), texts(&again), "the broker sent them again");
    for _ in 0..batches {
        source.accept().await.unwrap();
    }
    source.close().await.unwrap();

    // Accepted, so acknowledged: the next run gets only what is new.
    let mut source = open_with(&url, &prefix, &client_id, extra.clone()).await;
    publish(&url, &format!("{prefix}/data"), &["new"], false).await;
    let (next, _) = collect(&mut source, &prefix, 1).await;
    assert_eq!(texts(&next), vec![b"new".to_vec()]);
    source.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_batch_is_produced_again_before_anything_newer() {
    let Some(url) = service_url(Service::Mqtt) else {
        return;
    };
    let prefix = unique("mqtt-source-reject");
    let client_id = unique("src-rej");
    let _end = EndSession::new(&url, &client_id);
    let mut source = subscribed_source(&url, &prefix, &client_id).await;
    publish(&url, &format!("{prefix}/data"), &["r1", "r2"], false).await;
    let (first, batches) = collect(&mut source, &prefix, 2).await;
    for _ in 0..batches {
        source.reject().await.unwrap();
        if source.unsettled() == 0 {
            break;
        }
    }
    publish(&url, &format!("{prefix}/data"), &["r3"], false).await;
    let (again, _) = collect(&mut source, &prefix, 3).await;
    let payloads: Vec<Vec<u8>> = again.iter().map(|m| m.payload.to_vec()).collect();
    assert_eq!(
        &payloads[..2],
        &first.iter().map(|m| m.payload.to_vec()).collect::<Vec<_>>()[..]
    );
    assert_eq!(payloads[2], b"r3".to_vec());
    source.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_user_properties_become_headers_and_correlation_data_the_message_id() {
    let Some(url) = service_url(Service::Mqtt) else {
        return;
    };
    let prefix = unique("mqtt5-source");
    let extra = serde_json::json!({
        "protocol_version": "5",
        "message_id_from_correlation_data": true,
    });
    let client_id = unique("src5");
    let _end = EndSession::new(&url, &client_id);
    let mut source = subscribed_source_with(&url, &prefix, &client_id, extra).await;
    let topic = format!("{prefix}/data");
    publish_v5(
        &url,
        &topic,
        "first",
        &[
            &["user-property", "tenant", "acme"],
            &["user-property", "site", "north"],
            // One of the source's own names: left out, not overriding the topic.
            &["user-property", "mqtt_topic", "forged"],
            &["correlation-data", "123e4567-e89b-12d3-a456-426614174000"],
        ],
    );
    publish_v5(&url, &topic, "second", &[&["correlation-data", "42"]]);
    // No correlation data: still produced, with an id left to Iggy.
    publish_v5(&url, &topic, "third", &[]);
    let (messages, _) = collect(&mut source, &prefix, 3).await;
    let payloads: Vec<&[u8]> = messages.iter().map(|m| &m.payload[..]).collect();
    assert_eq!(payloads, [&b"first"[..], b"second", b"third"]);
    let text = |message: &ProducedMessage, key: &str| {
        String::from_utf8(header(message, key).value.clone()).unwrap()
    };
    assert_eq!(text(&messages[0], "tenant"), "acme");
    assert_eq!(text(&messages[0], "site"), "north");
    assert_eq!(topic_of(&messages[0]), topic);
    assert_eq!(messages[0].id, Some(0x123e4567_e89b_12d3_a456_426614174000));
    assert_eq!(messages[1].id, Some(42));
    assert_eq!(messages[2].id, None);
    assert!(
        messages[1].headers.iter().all(|h| h.key != "tenant"),
        "properties are the message's own"
    );
    source.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_field_becomes_the_message_id() {
    let Some(url) = service_url(Service::Mqtt) else {
        return;
    };
    let prefix = unique("mqtt-source-id");
    let extra = serde_json::json!({"message_id_field": "event_id"});
    let client_id = unique("src-id");
    let _end = EndSession::new(&url, &client_id);
    let mut source = subscribed_source_with(&url, &prefix, &client_id, extra).await;
    publish(
        &url,
        &format!("{prefix}/data"),
        &[
            r#"{"event_id": 7, "v": 1}"#,
            r#"{"event_id": "00000000-0000-0000-0000-00000000000a"}"#,
            r#"{"v": "no id"}"#,
            "not json",
        ],
        false,
    )
    .await;
    let (messages, _) = collect(&mut source, &prefix, 4).await;
    let ids: Vec<Option<u128>> = messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, [Some(7), Some(10), None, None]);
    source.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_are_reported_without_connecting() {
    let problems = SourceHarness::<MqttSource>::validate(serde_json::json!({
        "url": "http://x",
        "topics": [{"filter": "a/#/b", "qos": 3}],
        "batch_length": 0,
    }));
    assert_eq!(problems.len(), 4, "{problems:?}");
    let keys = |config: serde_json::Value| -> Vec<String> {
        SourceHarness::<MqttSource>::validate(config)
            .iter()
            .map(|problem| problem.split(':').next().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        keys(serde_json::json!({
            "url": "mqtt://127.0.0.1",
            "topics": [{"filter": "a/#"}],
            "protocol_version": "5",
            "message_id_from_correlation_data": true,
            "message_id_field": "id",
            "receive_maximum": 0,
            "session_expiry": "200000d",
        })),
        [
            "plugin_config.session_expiry",
            "plugin_config.receive_maximum",
            "plugin_config.message_id_field",
        ]
    );
    // MQTT 5's options with 3.1.1 are refused, not ignored.
    assert_eq!(
        keys(serde_json::json!({
            "url": "mqtt://127.0.0.1",
            "topics": [{"filter": "a/#"}],
            "message_id_from_correlation_data": true,
            "receive_maximum": 10,
            "session_expiry": "1h",
        })),
        [
            "plugin_config.session_expiry",
            "plugin_config.receive_maximum",
            "plugin_config.message_id_from_correlation_data",
        ]
    );
}
