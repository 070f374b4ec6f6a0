//! The HTTP sink run by the runtime, from Iggy (the test server, or a real one from
//! `IGGY_TEST_ADDRESS`) to a receiver started in the test: an endpoint that is down
//! loses nothing, and a message the endpoint refuses goes to the dead letter topic with
//! the answer.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

#[path = "support/receiver.rs"]
mod receiver;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use config_provider::{ActiveConfigs, ConnectorConfig, parse_connector_toml};
use connector_sdk::ConnectorKind;
use iggy_connectors_tests::{
    WAIT_LIMIT, eventually, plugin_path, prepare_topic, target, temp_dir, unique,
};
use iggy_test_server::TestTarget;
use plugin_host::PluginLoader;
use receiver::{Receiver, Recorded, Reply};
use runtime_core::{
    Destination, IggyBus, IggySettings, IncomingMessage, MessageBus, PluginRegistry, RestartPolicy,
    RetryPolicy, Runtime, RuntimeContext, StallPolicy, StateStore,
};

async fn bus(target: &TestTarget) -> Arc<dyn MessageBus> {
    let bus = IggyBus::connect(&IggySettings {
        connect_retries: 2,
        reconnect_interval: Duration::from_millis(50),
        ..IggySettings::new(target.address.clone())
    })
    .await
    .unwrap();
    Arc::new(bus)
}

/// A runtime on `target` that retries a call 4 times and restarts a failed connector
/// after 50 ms.
async fn start(target: &TestTarget, configs: Vec<ConnectorConfig>) -> Runtime {
    let mut active = ActiveConfigs::default();
    for config in configs {
        let map = match config.kind() {
            ConnectorKind::Sink => &mut active.sinks,
            ConnectorKind::Source => &mut active.sources,
        };
        map.insert(config.common().key.to_owned(), config);
    }
    let context = RuntimeContext {
        bus: bus(target).await,
        state: StateStore::new(temp_dir("http-sink").join("state")),
        retry: RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        },
        restart: RestartPolicy {
            enabled: true,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(100),
            max_restarts: None,
        },
        stop_timeout: Duration::from_secs(10),
        stall: StallPolicy::default(),
        memory_budget: config_provider::DEFAULT_MEMORY_BUDGET,
        cluster: None,
    };
    Runtime::start(active, PluginRegistry::new(PluginLoader::new()), context).await
}

/// The random source: `count` JSON messages `{"seq": n, ...}` to `topic` of `stream`.
fn random_source(stream: &str, topic: &str, count: u64) -> ConnectorConfig {
    parse_connector_toml(&format!(
        r#"
type = "source"
key = "random"
enabled = true
version = 0
name = "Random"
path = "{path}"
[[streams]]
stream = "{stream}"
topic = "{topic}"
schema = "json"
[plugin_config]
interval = "1ms"
max_count = {count}
messages_range = [10, 20]
payload_size = 20
"#,
        path = plugin_path("iggy_connector_random_source"),
    ))
    .unwrap()
}

/// The HTTP sink `http` from topic `t` of `stream` to `url`, NDJSON, no retries of its
/// own (the runtime's retry and restart are under test), under `policy`.
fn http_sink(stream: &str, url: &str, policy: &str) -> ConnectorConfig {
    parse_connector_toml(&format!(
        r#"
type = "sink"
key = "http"
enabled = true
version = 0
name = "HTTP"
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
url = "{url}"
batch_mode = "ndjson"
include_metadata = false
max_retries = 0
"#,
        path = plugin_path("iggy_connector_http_sink"),
    ))
    .unwrap()
}

/// The `seq` of each line of the bodies the receiver answered 2xx.
fn delivered(requests: &[(Recorded, u16)]) -> Vec<u64> {
    requests
        .iter()
        .filter(|(_, status)| *status < 300)
        .flat_map(|(request, _)| {
            request
                .text()
                .lines()
                .map(|line| {
                    serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
                        .as_u64()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A receiver that answers each request as `status_of` says, remembering the answer.
struct Endpoint {
    receiver: Receiver,
    answers: Arc<std::sync::Mutex<Vec<u16>>>,
}

impl Endpoint {
    async fn start(status_of: impl Fn(&Recorded, u64) -> Reply + Send + Sync + 'static) -> Self {
        let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = answers.clone();
        let receiver = Receiver::answering(move |request, number| {
            let reply = status_of(request, number);
            kept.lock().unwrap().push(reply.status);
            reply
        })
        .await;
        Endpoint { receiver, answers }
    }

    /// Every request with its answer, in arrival order.
    fn exchanges(&self) -> Vec<(Recorded, u16)> {
        let answers = self.answers.lock().unwrap().clone();
        self.receiver.requests().into_iter().zip(answers).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_is_down_for_a_while_loses_nothing() {
    let target = target().await;
    let stream = unique("http-sink-down");
    prepare_topic(&target.address, &stream, "t").await;
    prepare_topic(&target.address, &stream, "dead").await;
    // The first 10 requests fail: more than the runtime's 4 attempts, so the sink
    // fails and is restarted, and reads again from the last stored offset.
    let failures = Arc::new(AtomicU64::new(0));
    let counted = failures.clone();
    let endpoint = Endpoint::start(move |_, number| {
        if number <= 10 {
            counted.fetch_add(1, Ordering::SeqCst);
            Reply::status(503, "down for maintenance")
        } else {
            Reply::ok()
        }
    })
    .await;
    let url = endpoint.receiver.url("/ingest");
    let runtime = start(
        &target,
        vec![
            random_source(&stream, "t", 200),
            http_sink(&stream, &url, "fail"),
        ],
    )
    .await;
    eventually("all 200 messages delivered", || {
        delivered(&endpoint.exchanges())
            .into_iter()
            .collect::<BTreeSet<_>>()
            .len()
            == 200
    })
    .await;
    assert_eq!(failures.load(Ordering::SeqCst), 10);
    let seqs = delivered(&endpoint.exchanges());
    // At least once: a batch that failed came again; never out of order.
    let mut sorted = seqs.clone();
    sorted.dedup();
    assert!(sorted.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    assert_eq!(sorted, (0..200).collect::<Vec<_>>());
    runtime.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_goes_to_the_dead_letter_topic_with_the_answer() {
    let target = target().await;
    let stream = unique("http-sink-dead");
    prepare_topic(&target.address, &stream, "t").await;
    prepare_topic(&target.address, &stream, "dead").await;
    let endpoint = Endpoint::start(|request, _| {
        if request.text().contains("\"seq\":37,") {
            Reply::status(422, "seq 37 is not welcome here")
        } else {
            Reply::status(202, "")
        }
    })
    .await;
    let url = endpoint.receiver.url("/ingest");
    let runtime = start(
        &target,
        vec![
            random_source(&stream, "t", 100),
            http_sink(&stream, &url, "dead_letter"),
        ],
    )
    .await;
    eventually("99 messages delivered", || {
        delivered(&endpoint.exchanges())
            .into_iter()
            .collect::<BTreeSet<_>>()
            .len()
            == 99
    })
    .await;
    let delivered: BTreeSet<u64> = delivered(&endpoint.exchanges()).into_iter().collect();
    assert!(!delivered.contains(&37));

    let letters = read_topic(&target, &stream, "dead", 1).await;
    let payload: serde_json::Value = serde_json::from_slice(&letters[0].payload).unwrap();
    assert_eq!(payload["seq"], 37);
    let error = letters[0]
        .headers
        .iter()
        .find(|header| header.key == runtime_core::dead_letter::ERROR)
        .map(|header| String::from_utf8_lossy(&header.value).into_owned())
        .unwrap();
    assert!(error.contains("422"), "{error}");
    assert!(error.contains("seq 37 is not welcome here"), "{error}");
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// The first `count` messages of `stream`/`topic`, read as a group of the test's own.
async fn read_topic(
    target: &TestTarget,
    stream: &str,
    topic: &str,
    count: usize,
) -> Vec<IncomingMessage> {
    let reader = bus(target).await;
    let from = Destination::new(stream, topic);
    reader.join_group(&from, "check").await.unwrap();
    let mut messages = Vec::new();
    let deadline = Instant::now() + WAIT_LIMIT;
    while messages.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count}",
            messages.len()
        );
        let polled = reader.poll(&from, "check", 100).await.unwrap();
        match polled.messages.last() {
            Some(last) => reader
                .store_offset(&from, "check", polled.partition_id, last.offset)
                .await
                .unwrap(),
            // Nothing yet: poll again shortly (each poll is a round trip, not a wait).
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        messages.extend(polled.messages);
    }
    messages
}

/// Upstream's config file, unchanged, with the plugin path, the URL and the stream set
/// by environment overrides (as a deployment would): the runtime loads it and the sink
/// delivers NDJSON envelopes with the file's headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_config_file_runs_unchanged_with_overrides() {
    use config_provider::{ConfigProvider, LocalProvider};
    let target = target().await;
    let stream = unique("http-sink-upstream");
    prepare_topic(&target.address, &stream, "my_topic").await;
    let endpoint = Endpoint::start(|_, _| Reply::status(204, "")).await;
    let dir = temp_dir("http-sink-upstream");
    let fixture = iggy_connectors_tests::upstream_connectors_dir().join("http_sink.toml");
    // A directory of its own holding the file as it is (the provider reads a directory).
    std::fs::copy(&fixture, dir.join("http_sink.toml")).unwrap();
    let env = std::collections::BTreeMap::from([
        (
            "IGGY_CONNECTORS_SINK_HTTP_PATH".to_owned(),
            plugin_path("iggy_connector_http_sink"),
        ),
        (
            "IGGY_CONNECTORS_SINK_HTTP_PLUGIN_CONFIG_URL".to_owned(),
            endpoint.receiver.url("/ingest"),
        ),
        (
            "IGGY_CONNECTORS_SINK_HTTP_STREAMS_0_STREAM".to_owned(),
            stream.clone(),
        ),
    ]);
    let provider = LocalProvider::open(&dir, &env).unwrap();
    let sink = provider
        .active_configs()
        .await
        .unwrap()
        .sinks
        .remove("http")
        .unwrap();
    let source = random_source(&stream, "my_topic", 120);
    let runtime = start(&target, vec![source, sink]).await;
    eventually("120 messages delivered", || {
        envelopes(&endpoint.exchanges()).len() >= 120
    })
    .await;
    let exchanges = endpoint.exchanges();
    let (request, _) = &exchanges[0];
    assert_eq!(request.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(request.header("x-custom-header"), Some("custom-value"));
    assert_eq!(
        request.header("authorization"),
        Some("Bearer <YOUR_TOKEN_HERE>")
    );
    let seqs: BTreeSet<u64> = envelopes(&exchanges)
        .iter()
        .map(|envelope| {
            assert_eq!(envelope["metadata"]["iggy_stream"], stream.as_str());
            assert_eq!(envelope["metadata"]["iggy_topic"], "my_topic");
            envelope["payload"]["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(seqs, (0..120).collect());
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// Every NDJSON line the receiver got, parsed.
fn envelopes(exchanges: &[(Recorded, u16)]) -> Vec<serde_json::Value> {
    exchanges
        .iter()
        .flat_map(|(request, _)| {
            request
                .text()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}
