//! The MQTT connectors' throughput through the local broker (`IGGY_TEST_MQTT_URL`,
//! default mqtt://127.0.0.1:1883), ~200-byte payloads, QoS 0 and 1, next to a bare
//! client's rate in the same run (a rumqttc publisher and subscriber: the broker's own
//! limit on this machine):
//! - `sink`: Iggy → MQTT, the sink's `consume` with batches of 1000, until a subscriber
//!   got every message;
//! - `source`: MQTT → Iggy, a bare publisher, the source polled and each batch accepted
//!   (so acknowledged to the broker) one after another, until every message came.
//!
//! The connectors run in-process through `connector_sdk::testing`, as the runtime's
//! executor runs them, one call at a time (the runtime also keeps up to 8 source
//! batches unsettled; this does not).
//!
//! Run: `cargo bench -p iggy-connectors-benches --bench mqtt` (`BENCH_MESSAGES`,
//! default 100,000).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use connector_sdk::testing::{SinkHarness, SourceHarness, TestBatch, TestMessage};
use iggy_connector_mqtt_sink::{BrokerUrl, MqttSink};
use iggy_connector_mqtt_source::MqttSource;
use iggy_connectors_tests::services::{Service, service_url};
use iggy_connectors_tests::unique;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Payload bytes per message.
const PAYLOAD: usize = 200;

fn main() -> Result<()> {
    let total: u64 = iggy_connectors_benches::env_or("BENCH_MESSAGES", 100_000);
    let Some(url) = service_url(Service::Mqtt) else {
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!(" path     qos   messages      msg/s   bare client msg/s");
        for qos in [0u8, 1] {
            let bare = bare(&url, qos, total).await?;
            let sink = sink(&url, qos, total).await?;
            println!(" sink     {qos:>3} {total:>10} {sink:>10.0} {bare:>19.0}");
            let source = source(&url, qos, total).await?;
            println!(" source   {qos:>3} {total:>10} {source:>10.0} {bare:>19.0}");
        }
        Ok(())
    })
}

fn qos_of(qos: u8) -> QoS {
    if qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

fn options(url: &str, label: &str) -> Result<MqttOptions> {
    let broker = BrokerUrl::parse(url)?;
    let mut options = MqttOptions::new(unique(label), broker.host, broker.port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    Ok(options)
}

/// A subscriber to `topic` counting what it gets; returns once subscribed.
async fn counter(url: &str, topic: &str, qos: u8) -> Result<Arc<AtomicU64>> {
    let (client, mut events) = AsyncClient::new(options(url, "bench-sub")?, 1024);
    let count = Arc::new(AtomicU64::new(0));
    let (subscribed, ready) = tokio::sync::oneshot::channel();
    client.subscribe(topic, qos_of(qos)).await?;
    let counted = count.clone();
    tokio::spawn(async move {
        let mut subscribed = Some(subscribed);
        // The client lives as long as its event loop.
        let _client = client;
        while let Ok(event) = events.poll().await {
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(subscribed) = subscribed.take() {
                        let _ = subscribed.send(());
                    }
                }
                Event::Incoming(Packet::Publish(_)) => {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    });
    ready.await?;
    Ok(count)
}

/// Waits until `count` reaches `total` (a minute at most: QoS 0 may drop some).
async fn reached(count: &AtomicU64, total: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn payload(n: u64) -> Vec<u8> {
    let mut payload = format!("{{\"seq\":{n},\"text\":\"").into_bytes();
    payload.resize(PAYLOAD - 2, b'x');
    payload.extend_from_slice(b"\"}");
    payload
}

/// A bare publisher and subscriber: messages/s from the first publish to the last
/// message received.
async fn bare(url: &str, qos: u8, total: u64) -> Result<f64> {
    let topic = unique("bench-bare");
    let count = counter(url, &topic, qos).await?;
    let (client, mut events) = AsyncClient::new(options(url, "bench-pub")?, 1024);
    let driver = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let started = Instant::now();
    for n in 0..total {
        client
            .publish(topic.as_str(), qos_of(qos), false, payload(n))
            .await?;
    }
    reached(&count, total).await;
    let rate = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    driver.abort();
    Ok(rate)
}

async fn sink(url: &str, qos: u8, total: u64) -> Result<f64> {
    let topic = unique("bench-sink");
    let count = counter(url, &topic, qos).await?;
    let mut sink = SinkHarness::<MqttSink>::open(serde_json::json!({
        "url": url, "topic": topic, "qos": qos, "client_id": unique("bench-sink"),
    }))
    .await?;
    let batches: Vec<TestBatch> = (0..total.div_ceil(1000))
        .map(|b| {
            let first = b * 1000;
            TestBatch::new()
                .first_offset(first)
                .messages((first..(first + 1000).min(total)).map(|n| TestMessage::new(payload(n))))
        })
        .collect();
    let started = Instant::now();
    for batch in &batches {
        sink.consume(batch).await?;
    }
    reached(&count, total).await;
    let rate = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    sink.close().await?;
    Ok(rate)
}

async fn source(url: &str, qos: u8, total: u64) -> Result<f64> {
    let prefix = unique("bench-source");
    let mut source = SourceHarness::<MqttSource>::open(
        serde_json::json!({
            "url": url,
            "client_id": unique("bench-source"),
            "clean_session": true,
            "topics": [{"filter": format!("{prefix}/#"), "qos": qos}],
            "batch_length": 1000,
            "linger_time": "1ms",
        }),
        None,
    )
    .await?;
    // Subscribed once a probe comes through (the subscription is asynchronous).
    let (client, mut events) = AsyncClient::new(options(url, "bench-pub")?, 1024);
    let driver = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    loop {
        client
            .publish(format!("{prefix}/probe"), QoS::AtLeastOnce, false, "probe")
            .await?;
        if source
            .poll_timeout(Duration::from_millis(200))
            .await?
            .is_some()
        {
            source.accept().await?;
            break;
        }
    }
    // Probes published before the subscription took effect may still come: skip them.
    let topic = format!("{prefix}/data");
    let publisher = tokio::spawn({
        let client = client.clone();
        async move {
            for n in 0..total {
                if client
                    .publish(topic.as_str(), qos_of(qos), false, payload(n))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    let started = Instant::now();
    let mut received = 0u64;
    while received < total {
        match source.poll_timeout(Duration::from_secs(5)).await? {
            Some(batch) => {
                received += batch
                    .messages
                    .iter()
                    .filter(|message| message.payload.as_ref() != b"probe")
                    .count() as u64;
                source.accept().await?;
            }
            // QoS 0 may drop messages under load: count what came.
            None => break,
        }
    }
    let rate = received as f64 / started.elapsed().as_secs_f64();
    publisher.abort();
    driver.abort();
    source.close().await?;
    Ok(rate)
}
