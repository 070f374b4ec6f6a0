//! Host-to-sink call cost: what the runtime pays per message to hand batches to a sink
//! plugin loaded as a .so (the `null` sink, which only counts).
//!
//! For each batch size (1, 100, 1000) and payload size (100 B, 4 KiB), per message:
//! - `build`: making the `SinkBatch` (message structs and the ABI view) from payloads
//!   the runtime already holds (moved in, as the runtime does, not copied);
//! - `host cpu`: CPU time the calling (host) thread spends per message handing batches
//!   over and receiving the answers, with 16 calls kept in flight;
//! - `wall`: elapsed time per message at that pipelining depth (both threads);
//! - `latency`: the round trip of a single call with nothing else in flight, per batch
//!   (dominated by waking a parked thread twice).
//!
//! Host-side overhead per message = `build` + `host cpu`.
//!
//! Run: `cargo bench -p iggy-connectors-benches --bench sink_call`
//! (`BENCH_SECONDS` sets the time per case, default 1).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use connector_sdk::Schema;
use iggy_connectors_benches::{measure, nanos_per, thread_cpu_time};
use iggy_connectors_tests::plugin_path;
use plugin_host::{
    BatchSource, MessageMeta, OpenOptions, PluginLoader, SinkBatch, SinkBatchBuilder, SinkInstance,
};

const IN_FLIGHT: usize = 16;

fn batch(payload: &Bytes, count: usize) -> SinkBatch {
    let mut builder = SinkBatchBuilder::with_capacity(source(), count);
    for offset in 0..count {
        let meta = MessageMeta {
            id: offset as u128,
            offset: offset as u64,
            timestamp: 1,
            origin_timestamp: 1,
            checksum: 1,
        };
        // A static Bytes clones without touching a reference count, like a move.
        builder.push(meta, Vec::new(), payload.clone());
    }
    builder.build()
}

fn source() -> BatchSource {
    BatchSource {
        stream: "bench".to_owned(),
        topic: "bench".to_owned(),
        partition_id: 1,
        schema: Schema::Raw,
        current_offset: 0,
    }
}

/// Keeps `IN_FLIGHT` consume calls going for `budget`; returns (wall, host cpu, batches).
fn pipelined(
    runtime: &tokio::runtime::Runtime,
    sink: &SinkInstance,
    batch: &Arc<SinkBatch>,
    budget: Duration,
) -> Result<(Duration, Option<Duration>, usize), plugin_host::CallError> {
    runtime.block_on(async {
        let cpu_start = thread_cpu_time();
        let start = Instant::now();
        let mut in_flight = VecDeque::with_capacity(IN_FLIGHT);
        let mut done = 0;
        while start.elapsed() < budget {
            while in_flight.len() < IN_FLIGHT {
                in_flight.push_back(sink.consume(batch));
            }
            if let Some(answer) = in_flight.pop_front() {
                answer.await?;
                done += 1;
            }
        }
        for answer in in_flight {
            answer.await?;
            done += 1;
        }
        let cpu = thread_cpu_time()
            .zip(cpu_start)
            .map(|(end, start)| end.saturating_sub(start));
        Ok((start.elapsed(), cpu, done))
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1.0);
    let budget = Duration::from_secs_f64(seconds);
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let plugin = PluginLoader::new().load(&plugin_path("iggy_connector_null_sink"))?;
    let sink = runtime.block_on(plugin.open_sink("bench", "{}", OpenOptions::default()))?;

    println!("host-to-sink call cost, null sink loaded as a .so ({IN_FLIGHT} calls in flight)");
    println!(
        "{:>6} {:>8} {:>12} {:>12} {:>12} {:>14}",
        "batch", "payload", "build ns/msg", "host cpu", "wall ns/msg", "latency us/call"
    );
    for batch_size in [1usize, 100, 1000] {
        for payload_size in [100usize, 4096] {
            let payload = Bytes::from_static(vec![b'x'; payload_size].leak());
            let build = measure(budget, || {
                std::hint::black_box(batch(&payload, batch_size));
            });
            let batch = Arc::new(batch(&payload, batch_size));
            let (wall, cpu, batches) = pipelined(&runtime, &sink, &batch, budget)?;
            let messages_sent = batches * batch_size;
            let mut failure = None;
            let latency = measure(budget / 4, || {
                if let Err(error) = runtime.block_on(sink.consume(&batch)) {
                    failure = Some(error);
                }
            });
            if let Some(error) = failure {
                return Err(error.into());
            }
            let cpu = cpu.map_or("n/a".to_owned(), |cpu| {
                format!("{:.1}", nanos_per(cpu, messages_sent))
            });
            println!(
                "{batch_size:>6} {payload_size:>8} {:>12.1} {:>12} {:>12.1} {:>14.1}",
                nanos_per(build, batch_size),
                cpu,
                nanos_per(wall, messages_sent),
                latency.as_secs_f64() * 1e6,
            );
        }
    }
    runtime.block_on(sink.close(Duration::from_secs(5)))?;
    Ok(())
}
