//! The throughput configuration of issue 29, measured the way upstream's runtime was:
//! the random source at full rate (`messages_range = [4999, 5000]`, `payload_size =
//! 200`, `batch_length = 1000`, `linger_time = "0ms"`) -> one topic of one partition ->
//! the stdout sink (`print_payload = false`, `batch_length = 1000`, `poll_interval =
//! "1ms"`), with the runtime in a process of its own: this bench binary started again
//! as the runtime (`BENCH_THROUGHPUT_CHILD`). Rates are read from the server: the
//! topic's growth (source) and the sink group's stored offset (sink), over
//! `BENCH_SECONDS` (default 20) after `BENCH_WARMUP` seconds (default 3). The runtime's
//! CPU is its process's user + system time from `/proc/<pid>/stat`, in % of one core.
//! Its peak RSS is `VmHWM` from `/proc/<pid>/status` at the end of the window.
//! The runtime runs twice: runtime-core alone, and the release `iggy-connectors`
//! binary (`BENCH_BINARY`, by default `iggy-connectors` beside the bench's own
//! directory, as `cargo build --release -p iggy-connectors` leaves it) with the same
//! connectors by their bundled names, its API on and its log at `info`, as a user runs
//! it. `BENCH_RUNTIME=library` or `binary` runs one of them only.
//! In the same run, the raw `iggy` client producing and consuming at once (200 B
//! messages, batches of 1000) for as long: the ceiling.
//!
//! Run: `cargo build --release -p iggy-connectors && cargo bench -p
//! iggy-connectors-benches --bench throughput` (`IGGY_TEST_ADDRESS=host:port` for a
//! real server; without it the Iggy test server runs in this process, so its CPU is not
//! the runtime's).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use config_provider::{ActiveConfigs, ConnectorConfig, RuntimeBehaviour};
use iggy::prelude::*;
use iggy_connectors_benches::{env_or, runtime_binary, write_random_to_stdout};
use iggy_connectors_tests::{create_topic, iggy_client, plugin_path};
use plugin_host::PluginLoader;
use runtime_core::{IggyBus, IggySettings, PluginRegistry, Runtime, RuntimeContext, StateStore};

/// The child's environment variable: `<address> <stream> <state dir>`.
const CHILD: &str = "BENCH_THROUGHPUT_CHILD";

type Failure = Box<dyn std::error::Error>;

fn id(name: &str) -> Result<Identifier, IggyError> {
    Identifier::named(name)
}

/// The connector configs of the measured pipeline, on `stream` (the binary's files in
/// [`binary_setup`] say the same).
fn connectors(stream: &str) -> Result<ActiveConfigs, Failure> {
    let source: ConnectorConfig = serde_json::from_value(serde_json::json!({
        "type": "source", "key": "random", "enabled": true, "version": 0, "name": "Random",
        "path": plugin_path("iggy_connector_random_source"),
        "streams": [{ "stream": stream, "topic": "t", "schema": "json",
                      "batch_length": 1000, "linger_time": "0ms" }],
        "plugin_config": { "interval": "0ms", "messages_range": [4999, 5000], "payload_size": 200 }
    }))?;
    let sink: ConnectorConfig = serde_json::from_value(serde_json::json!({
        "type": "sink", "key": "stdout", "enabled": true, "version": 0, "name": "Stdout",
        "path": plugin_path("iggy_connector_stdout_sink"),
        "streams": [{ "stream": stream, "topics": ["t"], "schema": "json",
                      "batch_length": 1000, "poll_interval": "1ms" }],
        "plugin_config": { "print_payload": false }
    }))?;
    let mut configs = ActiveConfigs::default();
    configs.sources.insert(source.common().key.clone(), source);
    configs.sinks.insert(sink.common().key.clone(), sink);
    Ok(configs)
}

/// Which runtime a measurement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runner {
    /// runtime-core in this bench binary, started again.
    Library,
    /// The `iggy-connectors` binary.
    Binary,
}

/// Writes what the binary runs: `dir/config.toml` (Iggy at `address`, the API on a
/// port the system picks) and the two connectors by their bundled names.
fn binary_setup(
    dir: &std::path::Path,
    address: &str,
    stream: &str,
) -> Result<std::path::PathBuf, Failure> {
    let connectors = dir.join("connectors");
    std::fs::create_dir_all(&connectors)?;
    // The same settings as `connectors`, as a user writes them.
    write_random_to_stdout(
        &connectors,
        stream,
        (
            "batch_length = 1000\nlinger_time = \"0ms\"",
            "interval = \"0ms\"\nmessages_range = [4999, 5000]\npayload_size = 200",
        ),
        "batch_length = 1000\npoll_interval = \"1ms\"",
    )?;
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[iggy]\naddress = \"{address}\"\n[http]\nenabled = true\naddress = \"127.0.0.1:0\"\n[state]\npath = \"{}\"\n[connectors]\nconfig_dir = \"{}\"\n",
            dir.join("state").display(),
            connectors.display()
        ),
    )?;
    Ok(config)
}

/// The child: runs the pipeline until it is killed.
async fn child(spec: &str) -> Result<(), Failure> {
    let mut parts = spec.split(' ');
    let (Some(address), Some(stream), Some(state)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(
            format!("{CHILD}: expected `<address> <stream> <state dir>`, got `{spec}`").into(),
        );
    };
    let bus = IggyBus::connect(&IggySettings {
        connect_retries: 3,
        reconnect_interval: Duration::from_millis(500),
        ..IggySettings::new(address.to_owned())
    })
    .await?;
    let context = RuntimeContext::new(
        Arc::new(bus),
        StateStore::new(std::path::Path::new(state)),
        &RuntimeBehaviour::default(),
    );
    let runtime = Runtime::start(
        connectors(stream)?,
        PluginRegistry::new(PluginLoader::new()),
        context,
    )
    .await;
    // Runs until the parent kills it; says what failed meanwhile.
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for status in runtime.statuses() {
            if let Some(error) = &status.last_error {
                eprintln!("{} {}: {error}", status.kind, status.key);
            }
        }
    }
}

/// User + system CPU time of process `pid`, from `/proc/<pid>/stat`, in clock ticks
/// of 10 ms (`CLK_TCK` is 100 on Linux's every architecture we build for).
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces), from the third on.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The topic's message count and the sink group's stored offset on partition 0.
async fn progress(client: &IggyClient, stream: &str) -> Result<(u64, Option<u64>), Failure> {
    let topic = client
        .get_topic(&id(stream)?, &id("t")?)
        .await?
        .ok_or("the topic is gone")?;
    let group = Consumer::group(id("iggy-connect-sink-stdout")?);
    let stored = client
        .get_consumer_offset(&group, &id(stream)?, &id("t")?, Some(0))
        .await
        .ok()
        .flatten()
        .map(|offset| offset.stored_offset);
    Ok((topic.messages_count, stored))
}

/// What one measurement saw.
struct Rates {
    source: f64,
    /// `None` when the sink group's offset could not be read.
    sink: Option<f64>,
    cpu_percent: Option<f64>,
    /// The runtime's peak resident memory, in MiB.
    peak_rss: Option<f64>,
}

/// The peak resident memory of process `pid` (`VmHWM`), in MiB.
fn peak_rss(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The runtime in a child process: warm-up, then rates over the window.
async fn through_runtime(
    runner: Runner,
    address: &str,
    warmup: Duration,
    window: Duration,
) -> Result<Rates, Failure> {
    let stream = iggy_test_server::unique("throughput");
    let client = iggy_client(address).await?;
    create_topic(&client, &stream, "t", 1).await?;
    let state = std::env::temp_dir().join(format!("throughput-bench-{}", std::process::id()));
    let mut command = match runner {
        Runner::Library => {
            let mut command = std::process::Command::new(std::env::current_exe()?);
            command.env(CHILD, format!("{address} {stream} {}", state.display()));
            command
        }
        Runner::Binary => {
            let mut command = std::process::Command::new(runtime_binary()?);
            command
                .args(["--config"])
                .arg(binary_setup(&state, address, &stream)?)
                .env("NO_COLOR", "1")
                .stderr(std::process::Stdio::null());
            command
        }
    };
    let mut runtime = command.stdout(std::process::Stdio::null()).spawn()?;
    let pid = runtime.id();
    // A runtime that died (a plugin missing, no connection) would measure as 0 msg/s.
    let mut alive = || match runtime.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(status)) => Err(format!("the runtime exited: {status}")),
        Err(error) => Err(format!("the runtime: {error}")),
    };
    let measured = async {
        tokio::time::sleep(warmup).await;
        alive()?;
        let (produced, consumed) = progress(&client, &stream).await?;
        let (cpu, started) = (process_cpu(pid), Instant::now());
        tokio::time::sleep(window).await;
        let (produced_after, consumed_after) = progress(&client, &stream).await?;
        let peak_rss = peak_rss(pid);
        alive()?;
        let elapsed = started.elapsed().as_secs_f64();
        let cpu_percent = process_cpu(pid)
            .zip(cpu)
            .map(|(after, before)| (after - before).as_secs_f64() / elapsed * 100.0);
        let sink = match (consumed, consumed_after) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / elapsed),
            _ => None,
        };
        Ok::<_, Failure>(Rates {
            source: produced_after.saturating_sub(produced) as f64 / elapsed,
            sink,
            cpu_percent,
            peak_rss,
        })
    }
    .await;
    let _ = runtime.kill();
    let _ = runtime.wait();
    let _ = client.delete_stream(&id(&stream)?).await;
    let _ = std::fs::remove_dir_all(&state);
    measured
}

/// The raw client producing and consuming at once for `window` after `warmup`, as the
/// runtime is measured: messages per second each way.
async fn raw(address: &str, warmup: Duration, window: Duration) -> Result<(f64, f64), Failure> {
    let stream = iggy_test_server::unique("throughput-raw");
    let producer = iggy_client(address).await?;
    create_topic(&producer, &stream, "t", 1).await?;
    let consumer = iggy_client(address).await?;
    let done = Arc::new(AtomicBool::new(false));
    let (sent, read) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let payload = bytes::Bytes::from(vec![b'x'; 200]);
    let produce = {
        let (done, sent, stream) = (done.clone(), sent.clone(), stream.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let mut messages = (0..1000)
                    .map(|_| IggyMessage::builder().payload(payload.clone()).build())
                    .collect::<Result<Vec<_>, _>>()?;
                producer
                    .send_messages(
                        &id(&stream)?,
                        &id("t")?,
                        &Partitioning::partition_id(0),
                        &mut messages,
                    )
                    .await?;
                sent.fetch_add(1000, Ordering::Relaxed);
            }
            Ok::<_, IggyError>(())
        })
    };
    let consume = {
        let (done, read, stream) = (done.clone(), read.clone(), stream.clone());
        tokio::spawn(async move {
            let mut offset = 0;
            while !done.load(Ordering::Relaxed) {
                let polled = consumer
                    .poll_messages(
                        &id(&stream)?,
                        &id("t")?,
                        Some(0),
                        &Consumer::new(id("raw")?),
                        &PollingStrategy::offset(offset),
                        1000,
                        false,
                    )
                    .await?;
                offset += polled.messages.len() as u64;
                read.store(offset, Ordering::Relaxed);
                if polled.messages.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<_, IggyError>(())
        })
    };
    tokio::time::sleep(warmup).await;
    let started = Instant::now();
    let (sent_before, read_before) = (sent.load(Ordering::Relaxed), read.load(Ordering::Relaxed));
    tokio::time::sleep(window).await;
    let elapsed = started.elapsed().as_secs_f64();
    let rates = (
        (sent.load(Ordering::Relaxed) - sent_before) as f64 / elapsed,
        (read.load(Ordering::Relaxed) - read_before) as f64 / elapsed,
    );
    done.store(true, Ordering::Relaxed);
    produce.await??;
    consume.await??;
    let _ = iggy_client(address)
        .await?
        .delete_stream(&id(&stream)?)
        .await;
    Ok(rates)
}

fn main() -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Ok(spec) = std::env::var(CHILD) {
        return runtime.block_on(child(&spec));
    }
    runtime.block_on(async {
        let target = iggy_test_server::TestTarget::from_env().await?;
        let warmup = Duration::from_secs(env_or("BENCH_WARMUP", 3));
        let window = Duration::from_secs(env_or("BENCH_SECONDS", 20));
        let server = if target.server.is_some() {
            "the test server (in this process)"
        } else {
            "a real server"
        };
        println!(
            "throughput against {server} at {}, {} s after {} s of warm-up",
            target.address,
            window.as_secs(),
            warmup.as_secs()
        );
        let runners: &[Runner] = match std::env::var("BENCH_RUNTIME").as_deref() {
            Ok("library") => &[Runner::Library],
            Ok("binary") => &[Runner::Binary],
            _ => &[Runner::Library, Runner::Binary],
        };
        for &runner in runners {
            let rates = through_runtime(runner, &target.address, warmup, window).await?;
            let cpu = rates.cpu_percent.map_or_else(
                || "unknown".to_owned(),
                |percent| format!("{percent:.0}% of a core"),
            );
            let sink = rates.sink.map_or_else(
                || "unknown (no stored offset)".to_owned(),
                |rate| format!("{rate:.0} msg/s"),
            );
            let rss = rates
                .peak_rss
                .map_or_else(|| "unknown".to_owned(), |mib| format!("{mib:.1} MiB"));
            let name = match runner {
                Runner::Library => "runtime-core",
                Runner::Binary => "binary",
            };
            println!(
                "{name}: source {:.0} msg/s, sink {sink}, runtime CPU {cpu}, peak RSS {rss}",
                rates.source
            );
        }
        let (produced, consumed) = raw(&target.address, warmup, window).await?;
        println!("raw client: produce {produced:.0} msg/s, consume {consumed:.0} msg/s (at once)");
        Ok(())
    })
}
