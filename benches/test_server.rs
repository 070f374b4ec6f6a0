//! Throughput of the iggy test server through the real `iggy` client: messages per
//! second sent and polled, for 100-byte and 1 KiB payloads, so that end-to-end
//! benchmarks can show the test server is not their bottleneck.
//!
//! Run: `cargo bench -p iggy-connectors-benches --bench test_server`
//! (`BENCH_MESSAGES` sets the messages per case, default 200000;
//! `IGGY_TEST_ADDRESS=host:port` measures a real Iggy server instead, user iggy/iggy).

use std::time::{Duration, Instant};

use bytes::Bytes;
use iggy::prelude::*;

const BATCH: usize = 1000;

fn id(name: &str) -> Result<Identifier, IggyError> {
    Identifier::named(name)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(200_000);
    let target = iggy_test_server::TestTarget::from_env().await?;
    let (server, address) = (target.server, target.address);
    let client = iggy_connectors_tests::iggy_client(&address).await?;
    let target = if server.is_some() {
        "iggy-test-server"
    } else {
        "IGGY_TEST_ADDRESS"
    };
    println!("{target} at {address}: {total} messages per case, batches of {BATCH}, one partition");
    println!(
        "{:>8} {:>14} {:>10} {:>14} {:>10}",
        "payload", "send msg/s", "MB/s", "poll msg/s", "MB/s"
    );
    for size in [100usize, 1024] {
        let stream = format!("bench-{size}-{}", std::process::id());
        client.create_stream(&stream).await?;
        let options = TopicCreateOptions {
            partitions_count: Some(1),
            ..TopicCreateOptions::default()
        };
        client.create_topic(&id(&stream)?, "t", &options).await?;
        let payload = Bytes::from(vec![b'x'; size]);
        let partitioning = Partitioning::partition_id(0);

        let started = Instant::now();
        for _ in 0..total / BATCH {
            let mut messages = (0..BATCH)
                .map(|_| IggyMessage::builder().payload(payload.clone()).build())
                .collect::<Result<Vec<_>, _>>()?;
            client
                .send_messages(&id(&stream)?, &id("t")?, &partitioning, &mut messages)
                .await?;
        }
        let send = started.elapsed();

        let consumer = Consumer::new(id("bench")?);
        let started = Instant::now();
        let mut offset = 0u64;
        let mut received = 0usize;
        while received < total / BATCH * BATCH {
            let polled = client
                .poll_messages(
                    &id(&stream)?,
                    &id("t")?,
                    Some(0),
                    &consumer,
                    &PollingStrategy::offset(offset),
                    BATCH as u32,
                    false,
                )
                .await?;
            if polled.messages.is_empty() {
                return Err("poll returned nothing before the end".into());
            }
            received += polled.messages.len();
            offset += polled.messages.len() as u64;
        }
        let poll = started.elapsed();
        let rate = |elapsed: Duration| received as f64 / elapsed.as_secs_f64();
        let mbps = |elapsed: Duration| rate(elapsed) * size as f64 / 1e6;
        println!(
            "{size:>8} {:>14.0} {:>10.1} {:>14.0} {:>10.1}",
            rate(send),
            mbps(send),
            rate(poll),
            mbps(poll)
        );
        client.delete_stream(&id(&stream)?).await?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
