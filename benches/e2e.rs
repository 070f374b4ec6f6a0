//! End to end: the random source (as a generator) -> Iggy -> the null sink, through the
//! runtime, against the raw `iggy` client producing and consuming the same messages in
//! the same run: the generator's own messages, made by the plugin before the raw case
//! (untimed) and sent from memory. Messages of about 100 B and 1 KiB, one partition,
//! batches of 1000.
//! The runtime case runs twice: alone, and with the HTTP API served while two clients
//! keep asking it for `/stats` and `/metrics`, pausing `BENCH_API_PAUSE_MS` (default 10)
//! between requests; 0 makes it a closed loop (`+API/s`, `API req/s`).
//!
//! Run: `cargo bench -p iggy-connectors-benches --bench e2e`
//! (`BENCH_MESSAGES`, default 500000; `IGGY_TEST_ADDRESS=host:port` for a real server,
//! with `IGGY_TEST_CREATE_TOPIC_COMMAND` where its build refuses the client's topics;
//! `BENCH_STATE_DIR` for the source state directory; `BENCH_VERBOSE=1` tells when the
//! source and the sink finished; `BENCH_ONLY=runtime,api,raw,generator` runs only the
//! cases named, e.g. under a profiler; `BENCH_SIZES=40,964` picks the random text sizes;
//! `BENCH_ROUNDS`, default 5, repeats every case and adds a line of medians: this VM's
//! figures move by 20% from one run to the next, so one round says little, and the
//! raw case goes first in every other round;
//! the generator runs with the connector defaults, verified resume on;
//! `BENCH_VERIFIED_RESUME=false` turns it off, and then `BENCH_UNSAVED_SENDS`, default 1,
//! is its `max_unsaved_sends`).
//!
//! Both clocks start once the pipeline is ready: the raw client connected and its topic
//! created, the runtime with both connectors running (plugins open, connections made,
//! topic created, group joined; `BENCH_VERBOSE=1` shows how long that took).
//! Before the timed cases of each size, one runtime case and one raw case run untimed,
//! so neither side pays the first loading of the plugin libraries, the first
//! connection or the heap's first growth to what the server stores. Every case deletes
//! its stream afterwards, so the server's store does not grow from case to case.
//! `cpu ns/msg` is the CPU time of the whole process (server included) per message,
//! from `/proc/self/stat` (10 ms ticks). `steal %` is the share of the machine's CPU
//! time the hypervisor gave to other guests during the round (`/proc/stat`): a round
//! with much stolen says more about the host than about the runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use config_provider::{ActiveConfigs, ConnectorConfig, RuntimeBehaviour};
use iggy::prelude::*;
use iggy_connectors_tests::{create_topic, iggy_client, plugin_path};
use plugin_host::PluginLoader;
use runtime_core::{IggyBus, IggySettings, PluginRegistry, Runtime, RuntimeContext, StateStore};

const BATCH: u32 = 1000;

fn id(name: &str) -> Result<Identifier, IggyError> {
    Identifier::named(name)
}

/// The raw client: one task produces, another consumes, until every message is back.
async fn raw(
    address: &str,
    stream: &str,
    payloads: Arc<Vec<Bytes>>,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let total = payloads.len() as u64;
    let producer = iggy_client(address).await?;
    create_topic(&producer, stream, "t", 1).await?;
    let consumer = iggy_client(address).await?;
    let started = Instant::now();
    let stream_name = stream.to_owned();
    let produce = tokio::spawn(async move {
        for batch in payloads.chunks(BATCH as usize) {
            let mut messages = batch
                .iter()
                .map(|payload| IggyMessage::builder().payload(payload.clone()).build())
                .collect::<Result<Vec<_>, _>>()?;
            producer
                .send_messages(
                    &id(&stream_name)?,
                    &id("t")?,
                    &Partitioning::partition_id(0),
                    &mut messages,
                )
                .await?;
        }
        Ok::<_, IggyError>(())
    });
    let mut offset = 0;
    while offset < total {
        let polled = consumer
            .poll_messages(
                &id(stream)?,
                &id("t")?,
                Some(0),
                &Consumer::new(id("raw")?),
                &PollingStrategy::offset(offset),
                BATCH,
                false,
            )
            .await?;
        offset += polled.messages.len() as u64;
        if polled.messages.is_empty() {
            tokio::task::yield_now().await;
        }
    }
    produce.await??;
    Ok(started.elapsed())
}

/// The generator's `plugin_config`: `total` messages in batches of [`BATCH`], no pause.
fn generator_config(total: u64, payload_size: usize) -> serde_json::Value {
    serde_json::json!({ "interval": "0ms", "max_count": total, "messages_range": [BATCH, BATCH], "payload_size": payload_size })
}

/// The generator plugin opened on its own, outside any runtime.
async fn open_generator(
    key: &str,
    total: u64,
    payload_size: usize,
) -> Result<plugin_host::SourceInstance, Box<dyn std::error::Error>> {
    let plugin = PluginLoader::new().load(&plugin_path("iggy_connector_random_source"))?;
    let config = generator_config(total, payload_size).to_string();
    Ok(plugin
        .open_source(key, &config, None, plugin_host::OpenOptions::default())
        .await?)
}

/// The messages the generator source makes, `total` of them, copied out of the plugin
/// into one buffer (untimed): what the raw client sends, so that both sides send the
/// same messages, read from memory rather than one payload the cache always holds.
async fn generated(
    total: u64,
    payload_size: usize,
) -> Result<Arc<Vec<Bytes>>, Box<dyn std::error::Error>> {
    let source = open_generator("raw-messages", total, payload_size).await?;
    let mut buffer = bytes::BytesMut::new();
    let mut lengths = Vec::new();
    while (lengths.len() as u64) < total {
        let batch = source.poll().await?;
        for message in batch.messages() {
            buffer.extend_from_slice(message.payload());
            lengths.push(message.payload().len());
        }
        batch.accept().await?;
    }
    source.close(Duration::from_secs(5)).await?;
    let mut buffer = buffer.freeze();
    Ok(Arc::new(
        lengths
            .into_iter()
            .map(|length| buffer.split_to(length))
            .collect(),
    ))
}

/// The generator alone (poll and accept through the plugin host, nothing else): the
/// ceiling the source side can reach.
async fn generator_alone(
    total: u64,
    payload_size: usize,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let source = open_generator("alone", total, payload_size).await?;
    let started = Instant::now();
    let mut produced = 0u64;
    while produced < total {
        let batch = source.poll().await?;
        produced += batch.messages().len() as u64;
        batch.accept().await?;
    }
    let elapsed = started.elapsed();
    source.close(Duration::from_secs(5)).await?;
    Ok(elapsed)
}

/// Clients that keep asking the API for `/stats` and `/metrics` (one request in flight
/// each, keep-alive, `pause` between requests) until told to stop; returns the requests
/// answered.
fn api_load(
    address: std::net::SocketAddr,
    clients: usize,
    pause: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let stop = stop.clone();
            tasks.spawn(async move {
                let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
                    return 0u64;
                };
                let Ok((mut sender, connection)) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                else {
                    return 0;
                };
                tokio::spawn(connection);
                let mut answered = 0;
                while !*stop.borrow() {
                    let path = if answered % 2 == 0 {
                        "/stats"
                    } else {
                        "/metrics"
                    };
                    let Ok(request) = hyper::Request::get(path)
                        .header("host", "localhost")
                        .body(http_body_util::Empty::<Bytes>::new())
                    else {
                        return answered;
                    };
                    let Ok(response) = sender.send_request(request).await else {
                        return answered;
                    };
                    if http_body_util::BodyExt::collect(response.into_body())
                        .await
                        .is_err()
                    {
                        return answered;
                    }
                    answered += 1;
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                answered
            });
        }
        let mut answered = 0;
        while let Some(Ok(count)) = tasks.join_next().await {
            answered += count;
        }
        answered
    })
}

/// Through the runtime: generator source -> Iggy -> null sink; with `api_clients` > 0,
/// the HTTP API is served meanwhile and that many clients keep asking it for figures.
/// Returns the elapsed time and the API requests answered.
async fn runtime(
    address: &str,
    stream: &str,
    total: u64,
    payload_size: usize,
    api_clients: usize,
) -> Result<(Duration, u64), Box<dyn std::error::Error>> {
    let source: ConnectorConfig = serde_json::from_value(serde_json::json!({
        "type": "source", "key": format!("gen-{stream}"), "enabled": true, "version": 0, "name": "Generator",
        "max_unsaved_sends": unsaved_sends(),
        "verified_resume": verified_resume(),
        "path": plugin_path("iggy_connector_random_source"),
        "streams": [{ "stream": stream, "topic": "t", "schema": "json" }],
        "plugin_config": generator_config(total, payload_size)
    }))?;
    let sink: ConnectorConfig = serde_json::from_value(serde_json::json!({
        "type": "sink", "key": format!("null-{stream}"), "enabled": true, "version": 0, "name": "Null",
        "path": plugin_path("iggy_connector_null_sink"),
        "streams": [{ "stream": stream, "topics": ["t"], "schema": "json", "batch_length": BATCH, "poll_interval": "1ms" }]
    }))?;
    let mut configs = ActiveConfigs::default();
    configs.sources.insert(source.common().key.clone(), source);
    configs.sinks.insert(sink.common().key.clone(), sink);
    if std::env::var_os(iggy_test_server::CREATE_TOPIC_COMMAND_ENV).is_some() {
        // The runtime would create the topic itself; that server's build refuses it.
        create_topic(&iggy_client(address).await?, stream, "t", 1).await?;
    }
    let bus = IggyBus::connect(&IggySettings {
        connect_retries: 3,
        reconnect_interval: Duration::from_millis(500),
        ..IggySettings::new(address.to_owned())
    })
    .await?;
    let state = std::path::PathBuf::from(
        std::env::var("BENCH_STATE_DIR")
            .unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
    )
    .join(format!("e2e-bench-{}", std::process::id()));
    let context = RuntimeContext::new(
        Arc::new(bus),
        StateStore::new(&state),
        &RuntimeBehaviour::default(),
    );
    let plugins = PluginRegistry::new(PluginLoader::new());
    let starting = Instant::now();
    let connectors = Runtime::start(configs, plugins, context).await;
    // The clock starts when both connectors run (plugins open, connections made, topic
    // created, group joined), as the raw client's starts once it is connected and its
    // topic exists. Checked without sleeping, so the start is not late by a tick.
    let ready_by = starting + Duration::from_secs(30);
    loop {
        let statuses = connectors.statuses();
        if statuses
            .iter()
            .any(|s| s.state == runtime_core::ConnectorState::Failed)
        {
            return Err(format!("a connector failed to start: {statuses:?}").into());
        }
        if statuses.len() == 2
            && statuses
                .iter()
                .all(|s| s.state == runtime_core::ConnectorState::Running)
        {
            break;
        }
        if Instant::now() > ready_by {
            return Err(format!("the connectors did not start: {statuses:?}").into());
        }
        tokio::task::yield_now().await;
    }
    let started = Instant::now();
    let startup = started - starting;
    let (stop_load, load_stopped) = tokio::sync::watch::channel(false);
    let mut api = None;
    if api_clients > 0 {
        let provider_dir = state.join("connectors");
        std::fs::create_dir_all(&provider_dir)?;
        let provider = Arc::new(config_provider::LocalProvider::open(
            &provider_dir,
            &Default::default(),
        )?);
        let mut http = config_provider::HttpConfig {
            enabled: true,
            address: "127.0.0.1:0".to_owned(),
            ..Default::default()
        };
        http.metrics.enabled = true;
        let server = http_api::serve(
            &http,
            http_api::ApiContext::new(connectors.clone(), provider, http.clone()),
        )
        .await?;
        let pause =
            Duration::from_millis(iggy_connectors_benches::env_or("BENCH_API_PAUSE_MS", 10));
        let load = api_load(server.local_addr(), api_clients, pause, load_stopped);
        api = Some((server, load));
    }
    let (mut first_sent, mut source_done) = (None, None);
    loop {
        let statuses = connectors.statuses();
        let out = |prefix: &str| -> u64 {
            statuses
                .iter()
                .filter(|s| s.key.starts_with(prefix))
                .map(|s| s.metrics.messages_out)
                .sum()
        };
        let (produced, delivered) = (out("gen-"), out("null-"));
        if produced > 0 && first_sent.is_none() {
            first_sent = Some(started.elapsed());
        }
        if produced >= total && source_done.is_none() {
            source_done = Some(started.elapsed());
        }
        if delivered >= total {
            break;
        }
        if statuses
            .iter()
            .any(|s| s.state == runtime_core::ConnectorState::Failed)
        {
            return Err(format!("a connector failed: {statuses:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        let batches = |prefix: &str| -> u64 {
            connectors
                .statuses()
                .iter()
                .filter(|s| s.key.starts_with(prefix))
                .map(|s| s.metrics.batch_latency.count)
                .sum()
        };
        eprintln!(
            "started in {startup:?}; then first batch stored after {first_sent:?}, source finished after {source_done:?}, sink after {elapsed:?}; batches: {} sourced, {} sunk",
            batches("gen-"),
            batches("null-")
        );
    }
    let _ = stop_load.send(true);
    let mut answered = 0;
    if let Some((server, load)) = api {
        answered = load.await?;
        server.shutdown().await;
    }
    connectors.shutdown(Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(&state);
    Ok((elapsed, answered))
}

/// The generator's `verified_resume`: `BENCH_VERIFIED_RESUME`, default true (the
/// connector default: the state is saved with each send before it goes).
fn verified_resume() -> bool {
    iggy_connectors_benches::env_or("BENCH_VERIFIED_RESUME", true)
}

/// The generator's `max_unsaved_sends`, which counts only without verified resume:
/// `BENCH_UNSAVED_SENDS`, default 1 (the connector default: the state is saved between
/// every two sends; 16 lets one state write cover several, and a crash may then make
/// the source produce up to 16 sends again).
fn unsaved_sends() -> u32 {
    iggy_connectors_benches::env_or("BENCH_UNSAVED_SENDS", 1)
}

/// Which cases `BENCH_ONLY` asks for (all when it is unset).
fn selected(case: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|c| c.trim() == case))
}

/// Deletes a case's stream, so the server's store does not grow from case to case.
async fn drop_stream(address: &str, stream: &str) -> Result<(), Box<dyn std::error::Error>> {
    iggy_client(address)
        .await?
        .delete_stream(&id(stream)?)
        .await?;
    Ok(())
}

/// A case's elapsed time and the process's CPU time over it, with what it returned.
async fn timed<T>(
    case: impl std::future::Future<Output = Result<(Duration, T), Box<dyn std::error::Error>>>,
) -> Result<(Duration, Duration, T), Box<dyn std::error::Error>> {
    let cpu = iggy_connectors_benches::process_cpu_time();
    let (elapsed, out) = case.await?;
    let cpu = iggy_connectors_benches::process_cpu_time().saturating_sub(cpu);
    Ok((elapsed, cpu, out))
}

/// One line of the table: a figure per column, `None` for a case that did not run.
type Row = [Option<f64>; 11];

/// Each column's width and decimals.
const COLUMNS: [(usize, usize); 11] = [
    (12, 0),
    (9, 1),
    (12, 0),
    (12, 0),
    (9, 1),
    (12, 0),
    (7, 2),
    (12, 0),
    (10, 0),
    (12, 0),
    (7, 0),
];

fn format_row(label: &str, row: &Row) -> String {
    let mut line = format!("{label:>9}");
    for (figure, (width, decimals)) in row.iter().zip(COLUMNS) {
        match figure {
            Some(figure) => line.push_str(&format!(" {figure:>width$.decimals$}")),
            None => line.push_str(&format!(" {:>width$}", "-")),
        }
    }
    line
}

/// Each column's median over the rounds (the ratio too: the median of the rounds'
/// ratios, each taken from a runtime case and a raw case run back to back).
fn median(rows: &[Row]) -> Row {
    let mut out: Row = [None; 11];
    for (column, slot) in out.iter_mut().enumerate() {
        let mut figures: Vec<f64> = rows.iter().filter_map(|row| row[column]).collect();
        figures.sort_by(f64::total_cmp);
        *slot = figures.get(figures.len() / 2).copied();
    }
    out
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let total: u64 = iggy_connectors_benches::env_or("BENCH_MESSAGES", 500_000);
    let total = total / u64::from(BATCH) * u64::from(BATCH);
    let sizes: Vec<usize> = match std::env::var("BENCH_SIZES") {
        Ok(sizes) => sizes
            .split(',')
            .map(|size| size.trim().parse())
            .collect::<Result<_, _>>()?,
        // The generator's JSON adds about 60 bytes of fields around its random text.
        Err(_) => vec![40, 964],
    };
    let rounds: usize = iggy_connectors_benches::env_or("BENCH_ROUNDS", 5);
    let target = iggy_test_server::TestTarget::from_env().await?;
    let (server, address) = (target.server, target.address);
    let target = if server.is_some() {
        "iggy-test-server"
    } else {
        "IGGY_TEST_ADDRESS"
    };
    println!("end to end against {target} at {address}: {total} messages per case");
    let pid = std::process::id();
    println!(
        "{:>9} {:>12} {:>9} {:>12} {:>12} {:>9} {:>12} {:>7} {:>12} {:>10} {:>12} {:>7}",
        "message",
        "runtime/s",
        "MB/s",
        "cpu ns/msg",
        "raw/s",
        "MB/s",
        "cpu ns/msg",
        "ratio",
        "+API/s",
        "API req/s",
        "generator/s",
        "steal %"
    );
    for payload_size in sizes {
        let probe = serde_json::to_vec(
            &serde_json::json!({"seq": 123456u64, "key": "gen-bench-xxxxxxxxxxxxxxxxxxxxxx", "text": "x".repeat(payload_size), "created_at": 1_795_837_697_485_153u64}),
        )?;
        let size = probe.len();
        let rate = |elapsed: Duration| total as f64 / elapsed.as_secs_f64();
        let per_message = |cpu: Duration| cpu.as_nanos() as f64 / total as f64;
        // Untimed, a full case of each side at this size first: the first plugin loads
        // and connections, and the process's heap growing to hold what the server
        // stores (else the first timed case pays it and the next one does not).
        if selected("runtime") || selected("api") {
            let stream = format!("e2e-warm-rt-{payload_size}-{pid}");
            runtime(&address, &stream, total, payload_size, 0).await?;
            drop_stream(&address, &stream).await?;
        }
        let mut messages = Arc::default();
        if selected("raw") {
            messages = generated(total, payload_size).await?;
            let stream = format!("e2e-warm-raw-{payload_size}-{pid}");
            raw(&address, &stream, messages.clone()).await?;
            drop_stream(&address, &stream).await?;
        }
        let mut rows = Vec::new();
        for round in 0..rounds {
            let suffix = format!("{payload_size}-{round}-{pid}");
            // The raw case goes first in every other round: this VM's speed drifts
            // within a round too, and whichever case runs first would always get the
            // same side of that drift.
            let raw_first = round % 2 == 1;
            let ticks = iggy_connectors_benches::machine_cpu_ticks();
            let raw_case = || async {
                if !selected("raw") {
                    return Ok::<_, Box<dyn std::error::Error>>(None);
                }
                let stream = format!("e2e-raw-{suffix}");
                let timed_raw = timed(async {
                    raw(&address, &stream, messages.clone())
                        .await
                        .map(|elapsed| (elapsed, ()))
                })
                .await?;
                drop_stream(&address, &stream).await?;
                Ok(Some(timed_raw))
            };
            let mut through_raw = None;
            if raw_first {
                through_raw = raw_case().await?;
            }
            let mut through_runtime = None;
            if selected("runtime") {
                let stream = format!("e2e-rt-{suffix}");
                through_runtime =
                    Some(timed(runtime(&address, &stream, total, payload_size, 0)).await?);
                drop_stream(&address, &stream).await?;
            }
            if !raw_first {
                through_raw = raw_case().await?;
            }
            let mut with_api = None;
            if selected("api") {
                let stream = format!("e2e-api-{suffix}");
                with_api = Some(timed(runtime(&address, &stream, total, payload_size, 2)).await?);
                drop_stream(&address, &stream).await?;
            }
            let mut generator = None;
            if selected("generator") {
                generator = Some(generator_alone(total, payload_size).await?);
            }
            let runtime_rate = through_runtime.map(|(elapsed, _, _)| rate(elapsed));
            let raw_rate = through_raw.map(|(elapsed, _, _)| rate(elapsed));
            let row: Row = [
                runtime_rate,
                runtime_rate.map(|r| r * size as f64 / 1e6),
                through_runtime.map(|(_, cpu, _)| per_message(cpu)),
                raw_rate,
                raw_rate.map(|r| r * size as f64 / 1e6),
                through_raw.map(|(_, cpu, _)| per_message(cpu)),
                runtime_rate.zip(raw_rate).map(|(rt, raw)| rt / raw),
                with_api.map(|(elapsed, _, _)| rate(elapsed)),
                with_api.map(|(elapsed, _, answered)| answered as f64 / elapsed.as_secs_f64()),
                generator.map(rate),
                iggy_connectors_benches::stolen_percent(
                    ticks,
                    iggy_connectors_benches::machine_cpu_ticks(),
                ),
            ];
            println!("{}", format_row(&format!("{size} B"), &row));
            rows.push(row);
        }
        if rows.len() > 1 {
            println!("{}", format_row("median", &median(&rows)));
        }
    }
    // One process holds the runtime, the test server (and what it stores of a case
    // until its stream is deleted) and the raw client: its peak is an upper bound.
    if let Some(peak) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
    {
        println!(
            "peak RSS of this process (runtime, server and raw client): {:.1} MiB",
            peak / 1024.0
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
