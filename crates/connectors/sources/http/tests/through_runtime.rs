//! The webhook source run by the runtime against Iggy (the test server, or a real one
//! from `IGGY_TEST_ADDRESS`): what a client got 2xx for is in the topic, and a paused
//! connector answers 503.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use config_provider::{ActiveConfigs, parse_connector_toml};
use connector_sdk::ConnectorKind;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use iggy_connectors_tests::{
    WAIT_LIMIT, eventually, plugin_path, prepare_topic, target, temp_dir, unique,
};
use iggy_test_server::TestTarget;
use plugin_host::PluginLoader;
use runtime_core::{
    ConnectorState, Destination, IggyBus, IggySettings, MessageBus, PluginRegistry, RestartPolicy,
    RetryPolicy, Runtime, RuntimeContext, StallPolicy, StateStore,
};

const KEY: &str = "webhooks";

/// A free loopback port (free when asked; the source binds it right after).
fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

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

async fn start(target: &TestTarget, stream: &str, address: SocketAddr, extra: &str) -> Runtime {
    prepare_topic(&target.address, stream, "t").await;
    let config = parse_connector_toml(&format!(
        r#"
type = "source"
key = "{KEY}"
enabled = true
version = 0
name = "Webhooks"
path = "{path}"
[[streams]]
stream = "{stream}"
topic = "t"
schema = "json"
[plugin_config]
address = "{address}"
{extra}
"#,
        path = plugin_path("iggy_connector_http_source"),
    ))
    .unwrap();
    let mut active = ActiveConfigs::default();
    active.sources.insert(KEY.to_owned(), config);
    let context = RuntimeContext {
        bus: bus(target).await,
        state: StateStore::new(temp_dir("http-source").join("state")),
        retry: RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        },
        restart: RestartPolicy {
            enabled: false,
            ..RestartPolicy::default()
        },
        stop_timeout: Duration::from_secs(10),
        stall: StallPolicy::default(),
        memory_budget: config_provider::DEFAULT_MEMORY_BUDGET,
        cluster: None,
    };
    let runtime = Runtime::start(active, PluginRegistry::new(PluginLoader::new()), context).await;
    eventually("the source is running", || {
        runtime
            .status(ConnectorKind::Source, KEY)
            .is_some_and(|status| status.state == ConnectorState::Running)
    })
    .await;
    runtime
}

/// POSTs an NDJSON body; the status.
async fn post(address: SocketAddr, body: String) -> u16 {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::post("/")
        .header("host", address.to_string())
        .header("content-type", "application/x-ndjson")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

/// Lines `{"n": first}` .. `{"n": first + count - 1}`.
fn lines(first: u64, count: u64) -> String {
    (first..first + count)
        .map(|n| format!("{{\"n\":{n}}}\n"))
        .collect()
}

/// The `n` of every message in topic `t` of `stream`, in order, once `count` distinct
/// ones are there and nothing more comes (so duplicates after the last new one count).
async fn stored(target: &TestTarget, stream: &str, count: usize) -> Vec<u64> {
    let reader = bus(target).await;
    let from = Destination::new(stream, "t");
    reader.join_group(&from, "check").await.unwrap();
    let mut seen = Vec::new();
    let mut distinct = BTreeSet::new();
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} messages",
            distinct.len()
        );
        let polled = reader.poll(&from, "check", 1000).await.unwrap();
        let Some(last) = polled.messages.last() else {
            if distinct.len() >= count {
                return seen;
            }
            // Nothing new yet: poll again shortly (a poll is a round trip, not a wait).
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        reader
            .store_offset(&from, "check", polled.partition_id, last.offset)
            .await
            .unwrap();
        for message in &polled.messages {
            let n = serde_json::from_slice::<serde_json::Value>(&message.payload).unwrap()["n"]
                .as_u64()
                .unwrap();
            seen.push(n);
            distinct.insert(n);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_is_in_the_topic() {
    let target = target().await;
    let stream = unique("http-source");
    let address = free_address();
    let runtime = start(&target, &stream, address, "").await;

    // 20 clients at once, 5 requests of 10 lines each.
    let mut clients = Vec::new();
    for client in 0..20u64 {
        clients.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for request in 0..5u64 {
                let first = (client * 5 + request) * 10;
                if post(address, lines(first, 10)).await == 200 {
                    acknowledged.extend(first..first + 10);
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = BTreeSet::new();
    for client in clients {
        acknowledged.extend(client.await.unwrap());
    }
    assert_eq!(
        acknowledged.len(),
        1000,
        "a running source stores everything"
    );
    let in_topic: BTreeSet<u64> = stored(&target, &stream, 1000).await.into_iter().collect();
    assert_eq!(in_topic, acknowledged);
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// Paused, the source answers 503 and stores nothing. The poll already waiting in the
/// plugin when the pause came may still take one request (one a batch here:
/// `max_batch_messages = 1`); the runtime holds that batch until the resume, and the
/// request is answered 200 then (or 503 had `ack_timeout` run out first). Every request
/// answered 200, and none answered 503, is in the topic, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_source_answers_503_and_what_got_200_is_stored() {
    let target = target().await;
    let stream = unique("http-source-pause");
    let address = free_address();
    let runtime = start(
        &target,
        &stream,
        address,
        "queue_timeout = \"300ms\"\nmax_batch_messages = 1",
    )
    .await;
    assert_eq!(post(address, lines(0, 1)).await, 200);

    runtime
        .pause_connector(ConnectorKind::Source, KEY)
        .await
        .unwrap();
    let one = tokio::spawn(post(address, lines(1, 1)));
    let two = tokio::spawn(post(address, lines(2, 1)));
    // At most one of them is held by the waiting poll: the other is not taken, and
    // answered 503 once `queue_timeout` passed, while still paused.
    eventually("a request answered while paused", || {
        one.is_finished() || two.is_finished()
    })
    .await;
    let (refused, held) = if one.is_finished() {
        ((1, one), (2, two))
    } else {
        ((2, two), (1, one))
    };
    assert_eq!(refused.1.await.unwrap(), 503, "paused: refused");

    runtime
        .resume_connector(ConnectorKind::Source, KEY)
        .await
        .unwrap();
    let mut acknowledged = vec![0];
    if held.1.await.unwrap() == 200 {
        acknowledged.push(held.0);
    }
    assert_eq!(post(address, lines(3, 1)).await, 200);
    acknowledged.push(3);
    let in_topic = stored(&target, &stream, acknowledged.len()).await;
    assert_eq!(
        in_topic, acknowledged,
        "what got 200, once, in order; no 503'd message"
    );
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// POSTs until answered 200, retrying what got no 2xx (a 503, a connection refused or
/// cut while the runtime is down), as a webhook sender does; within `WAIT_LIMIT`.
async fn post_until_stored(address: SocketAddr, body: String) -> u32 {
    let deadline = Instant::now() + WAIT_LIMIT;
    let mut attempts = 0;
    loop {
        attempts += 1;
        if try_post(address, body.clone()).await == Some(200) {
            return attempts;
        }
        assert!(Instant::now() < deadline, "never stored");
        // A client's pause before it tries again (what it does, not a wait on the test).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`post`] that reports a connection that failed as `None`.
async fn try_post(address: SocketAddr, body: String) -> Option<u16> {
    let stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = hyper::Request::post("/")
        .header("host", address.to_string())
        .header("content-type", "application/x-ndjson")
        .body(Full::new(Bytes::from(body)))
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    response.into_body().collect().await.ok()?;
    Some(status)
}

/// 100,000 messages in 100 requests of 1000 from 4 clients, the runtime shut down and
/// started again (a new runtime on the same state) in the middle; clients retry what
/// got no 2xx. Every message a client got 200 for is in the topic, and a message is
/// stored twice at most when its request was cut after Iggy stored it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_a_runtime_restart_under_load() {
    let target = target().await;
    let stream = unique("http-source-restart");
    let address = free_address();
    let first = start(&target, &stream, address, "").await;

    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut clients = Vec::new();
    for client in 0..4u64 {
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            let mut retried = 0;
            for request in 0..25u64 {
                let first = (client * 25 + request) * 1000;
                retried += post_until_stored(address, lines(first, 1000)).await - 1;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            retried
        }));
    }
    eventually("a third of the requests stored", || {
        done.load(std::sync::atomic::Ordering::SeqCst) >= 33
    })
    .await;
    first.shutdown(Duration::from_secs(10)).await;
    let second = start(&target, &stream, address, "").await;
    let mut retried = 0;
    for client in clients {
        retried += client.await.unwrap();
    }
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 100);

    // Every request was acknowledged in the end, so every message must be there; the
    // requests cut by the restart may have been stored before their answer was lost.
    let stored = stored(&target, &stream, 100_000).await;
    let unique_stored: BTreeSet<u64> = stored.iter().copied().collect();
    assert_eq!(unique_stored, (0..100_000).collect::<BTreeSet<_>>());
    let duplicates = stored.len() - unique_stored.len();
    eprintln!("{retried} requests retried, {duplicates} messages stored twice");
    assert!(
        duplicates <= retried as usize * 1000,
        "{duplicates} duplicates from {retried} retried requests"
    );
    second.shutdown(Duration::from_secs(10)).await;
}
