//! The HTTP sink's throughput to a local receiver (a hyper server in the same process
//! that reads every body and answers 200): `ndjson` batches of 1000 messages, and
//! `individual` (one request per message), ~200-byte JSON payloads with the metadata
//! envelope (the default). The sink runs in-process through `connector_sdk::testing`,
//! as the runtime's executor would run it, one batch at a time.
//!
//! Run: `cargo bench -p iggy-connectors-benches --bench http_sink` (`BENCH_MESSAGES`,
//! default 200,000 for `ndjson`; `individual` sends a tenth of it).

#[path = "../crates/connectors/sinks/http/tests/support/receiver.rs"]
mod receiver;

use std::time::Instant;

use connector_sdk::testing::{SinkHarness, TestBatch, TestMessage};
use iggy_connector_http_sink::HttpSink;
use receiver::{Receiver, Reply};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = iggy_connectors_benches::env_or("BENCH_MESSAGES", 200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let receiver = Receiver::start_with(None, false, |_, _| Reply::ok()).await;
        println!(" mode         batch   messages   requests      msg/s     MB/s");
        for (mode, batch_size, messages) in
            [("ndjson", 1000, total), ("individual", 1000, total / 10)]
        {
            run(&receiver, mode, batch_size, messages).await?;
        }
        Ok(())
    })
}

async fn run(
    receiver: &Receiver,
    mode: &str,
    batch_size: usize,
    total: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = serde_json::json!({ "url": receiver.url("/ingest"), "batch_mode": mode });
    let mut sink = SinkHarness::<HttpSink>::open(config).await?;
    // ~200 bytes of JSON each, distinct per message.
    let batches: Vec<TestBatch> = (0..4)
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
        .collect();
    let payload_bytes: usize = batches[0].view_with(|batch| {
        batch
            .messages
            .iter()
            .map(|m| m.payload().len())
            .sum::<usize>()
            / batch_size
    });
    // Warm-up: the connection pool and the receiver's first connections.
    sink.consume(&batches[0]).await?;
    let before = receiver.count();
    let started = Instant::now();
    let mut sent = 0;
    let mut index = 0;
    while sent < total {
        sink.consume(&batches[index % batches.len()]).await?;
        sent += batch_size;
        index += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = receiver.count() - before;
    println!(
        " {mode:<12} {batch_size:>5} {sent:>10} {requests:>10} {:>10.0} {:>8.1}   ({payload_bytes} B payloads)",
        sent as f64 / elapsed,
        (sent * payload_bytes) as f64 / elapsed / 1e6,
    );
    sink.close().await?;
    Ok(())
}
