//! The HTTP sink's throughput to a local receiver (a hyper server in the same process
//! that reads every body and answers 200): `ndjson` batches of 1000 messages, and
//! `individual` (one request per message), ~200-byte JSON payloads with the metadata
//! envelope (the default). The sink runs in-process through `connector_sdk::testing`,
//! as the runtime's executor would run it, one batch at a time.
//!
//! Each mode is measured against a baseline in the same run: `bare`, a bare hyper
//! HTTP/1.1 client (`hyper::client::conn::http1`, one keep-alive connection, no pool,
//! no retries, no encoding) posting the very bodies the sink sends without the envelope
//! (captured ahead by a recording receiver: the payloads as they are, one per line for
//! `ndjson`) to the same receiver, one request after another as the sink does. `ours`
//! is the sink with its defaults (the envelope), `ours-p` the sink with
//! `include_metadata = false`, which sends exactly the baseline's bodies; `x bare` is
//! each one's rate over the baseline's.
//!
//! Run: `cargo bench -p iggy-connectors-benches --bench http_sink` (`BENCH_MESSAGES`,
//! default 200,000 for `ndjson`; `individual` sends a tenth of it).

#[path = "../crates/connectors/sinks/http/tests/support/receiver.rs"]
mod receiver;

use std::time::Instant;

use bytes::Bytes;
use connector_sdk::testing::{SinkHarness, TestBatch, TestMessage};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use iggy_connector_http_sink::HttpSink;
use receiver::{Receiver, Reply};

type BenchError = Box<dyn std::error::Error>;

fn main() -> Result<(), BenchError> {
    let total: usize = iggy_connectors_benches::env_or("BENCH_MESSAGES", 200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let receiver = Receiver::start_with(None, false, |_, _| Reply::ok()).await;
        println!(" mode         client batch   messages   requests      msg/s     MB/s  x bare");
        for (mode, batch_size, messages) in
            [("ndjson", 1000, total), ("individual", 1000, total / 10)]
        {
            run(&receiver, mode, batch_size, messages).await?;
        }
        Ok(())
    })
}

/// Four distinct batches of `batch_size` ~200-byte JSON messages.
fn batches(batch_size: usize) -> Vec<TestBatch> {
    (0..4)
        .map(|b| {
            TestBatch::new().messages((0..batch_size).map(|n| {
                TestMessage::json(serde_json::json!({
                    "order_id": b * batch_size + n, "customer": format!("customer-{n:06}"),
                    "status": "created", "amount": 1234.5, "currency": "EUR",
                    "items": [{"sku": "SKU-0001", "qty": 2}, {"sku": "SKU-0002", "qty": 1}],
                    "note": "x".repeat(48),
                }))
            }))
        })
        .collect()
}

async fn run(
    receiver: &Receiver,
    mode: &str,
    batch_size: usize,
    total: usize,
) -> Result<(), BenchError> {
    let batches = batches(batch_size);
    let payload_bytes: usize = batches[0].view_with(|batch| {
        batch
            .messages
            .iter()
            .map(|m| m.payload().len())
            .sum::<usize>()
            / batch_size
    });
    let envelope = serde_json::json!({ "batch_mode": mode });
    let bare_payloads = serde_json::json!({ "batch_mode": mode, "include_metadata": false });

    // The bodies the sink sends for each batch without the envelope (the payloads as
    // they are, one per line for `ndjson`), for the baseline to send as they are.
    let (bodies, content_type) = captured_bodies(&batches, &bare_payloads).await?;
    let (bare, bare_requests) =
        bare_client(receiver, &bodies, &content_type, batch_size, total).await?;
    let row = |client: &str, requests: u64, rate: f64, ratio: String| {
        println!(
            " {mode:<12} {client:<6} {batch_size:>5} {total:>10} {requests:>10} {rate:>10.0} {:>8.1} {ratio:>7}   ({payload_bytes} B payloads)",
            rate * payload_bytes as f64 / 1e6,
        );
    };
    for (client, plugin_config) in [("ours", &envelope), ("ours-p", &bare_payloads)] {
        let (ours, requests) = sink_rate(receiver, &batches, plugin_config, total).await?;
        row(client, requests, ours, format!("{:.2}", ours / bare));
    }
    row("bare", bare_requests, bare, String::new());
    Ok(())
}

/// The sink with `plugin_config` (its `url` set to the receiver's) consuming `batches`
/// in turn until `total` messages went: messages per second and the requests made.
async fn sink_rate(
    receiver: &Receiver,
    batches: &[TestBatch],
    plugin_config: &serde_json::Value,
    total: usize,
) -> Result<(f64, u64), BenchError> {
    let mut config = plugin_config.clone();
    config["url"] = receiver.url("/ingest").into();
    let mut sink = SinkHarness::<HttpSink>::open(config).await?;
    // Warm-up: the connection pool and the receiver's first connections.
    sink.consume(&batches[0]).await?;
    let before = receiver.count();
    let started = Instant::now();
    let mut sent = 0;
    let mut index = 0;
    while sent < total {
        let batch = &batches[index % batches.len()];
        sink.consume(batch).await?;
        sent += batch.view_with(|batch| batch.messages.len());
        index += 1;
    }
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    let requests = receiver.count() - before;
    sink.close().await?;
    Ok((rate, requests))
}

/// The request bodies the sink with `plugin_config` sends for each of `batches`
/// (recorded by a receiver of their own), and their `content-type`.
async fn captured_bodies(
    batches: &[TestBatch],
    plugin_config: &serde_json::Value,
) -> Result<(Vec<Vec<Bytes>>, String), BenchError> {
    let recorder = Receiver::start_with(None, true, |_, _| Reply::ok()).await;
    let mut config = plugin_config.clone();
    config["url"] = recorder.url("/ingest").into();
    let mut sink = SinkHarness::<HttpSink>::open(config).await?;
    let mut bodies = Vec::new();
    for batch in batches {
        let before = recorder.requests().len();
        sink.consume(batch).await?;
        bodies.push(
            recorder.requests()[before..]
                .iter()
                .map(|request| request.body.clone())
                .collect::<Vec<Bytes>>(),
        );
    }
    sink.close().await?;
    let content_type = recorder
        .requests()
        .first()
        .and_then(|request| request.header("content-type").map(str::to_owned))
        .ok_or("the sink sent nothing")?;
    Ok((bodies, content_type))
}

/// The baseline: `bodies` (per batch, its requests' bodies) posted in turn by a bare
/// hyper HTTP/1.1 connection until `total` messages went; messages per second and the
/// requests made.
async fn bare_client(
    receiver: &Receiver,
    bodies: &[Vec<Bytes>],
    content_type: &str,
    batch_size: usize,
    total: usize,
) -> Result<(f64, u64), BenchError> {
    let tcp = tokio::net::TcpStream::connect(receiver.address).await?;
    // As the sink's connector does: small requests answered one at a time.
    tcp.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let uri: hyper::Uri = receiver.url("/ingest").parse()?;
    let host = receiver.address.to_string();
    let mut post = async |body: &Bytes| -> Result<(), BenchError> {
        sender.ready().await?;
        let request = hyper::Request::post(uri.clone())
            .header(hyper::header::HOST, &host)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(body.clone()))?;
        let response = sender.send_request(request).await?;
        if !response.status().is_success() {
            return Err(format!("the receiver answered {}", response.status()).into());
        }
        // Read to the end, as the sink does, so the connection is free for the next.
        response.into_body().collect().await?;
        Ok(())
    };
    // Warm-up, as for the sink.
    for body in &bodies[0] {
        post(body).await?;
    }
    let before = receiver.count();
    let started = Instant::now();
    let mut sent = 0;
    let mut index = 0;
    while sent < total {
        for body in &bodies[index % bodies.len()] {
            post(body).await?;
        }
        sent += batch_size;
        index += 1;
    }
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    Ok((rate, receiver.count() - before))
}
