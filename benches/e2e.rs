//! End to end: the random source (as a generator) -> Iggy -> the null sink, through the
//! runtime, against the raw `iggy` client producing and consuming the same messages in
//! the same run. Messages of about 100 B and 1 KiB, one partition, batches of 1000.
//! The runtime case runs twice: alone, and with the HTTP API served while two clients
//! keep asking it for `/stats` and `/metrics`, pausing `BENCH_API_PAUSE_MS` (default 10)
//! between requests; 0 makes it a closed loop (`+API/s`, `API req/s`).
//!
//! Run: `cargo bench -p iggy-connectors-benches --bench e2e`
//! (`BENCH_MESSAGES`, default 200000; `IGGY_TEST_ADDRESS=host:port` for a real server;
//! `BENCH_STATE_DIR` for the source state directory; `BENCH_VERBOSE=1` tells when the
//! source and the sink finished).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use config_provider::{ActiveConfigs, ConnectorConfig, RuntimeBehaviour};
use iggy::prelude::*;
use iggy_connectors_tests::plugin_path;
use plugin_host::PluginLoader;
use runtime_core::{IggyBus, IggySettings, PluginRegistry, Runtime, RuntimeContext, StateStore};

const BATCH: u32 = 1000;

fn id(name: &str) -> Result<Identifier, IggyError> {
    Identifier::named(name)
}

async fn client(address: &str) -> Result<IggyClient, IggyError> {
    let client = IggyClient::builder()
        .with_tcp()
        .with_server_address(address.to_owned())
        .with_auto_sign_in(AutoLogin::Enabled(Credentials::UsernamePassword(
            "iggy".to_owned(),
            "iggy".into(),
        )))
        .with_no_delay()
        .build()?;
    client.connect().await?;
    Ok(client)
}

/// The raw client: one task produces, another consumes, until every message is back.
async fn raw(
    address: &str,
    stream: &str,
    total: u64,
    payload: Bytes,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let producer = client(address).await?;
    producer.create_stream(stream).await?;
    let options = TopicCreateOptions {
        partitions_count: Some(1),
        ..TopicCreateOptions::default()
    };
    producer.create_topic(&id(stream)?, "t", &options).await?;
    let consumer = client(address).await?;
    let started = Instant::now();
    let stream_name = stream.to_owned();
    let produce = tokio::spawn(async move {
        for _ in 0..total / u64::from(BATCH) {
            let mut messages = (0..BATCH)
                .map(|_| IggyMessage::builder().payload(payload.clone()).build())
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

/// The generator alone (poll and accept through the plugin host, nothing else): the
/// ceiling the source side can reach.
async fn generator_alone(
    total: u64,
    payload_size: usize,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let plugin = PluginLoader::new().load(&plugin_path("iggy_connector_random_source"))?;
    let config = serde_json::json!({ "interval": "0ms", "max_count": total, "messages_range": [BATCH, BATCH], "payload_size": payload_size });
    let source = plugin
        .open_source(
            "alone",
            &config.to_string(),
            None,
            plugin_host::OpenOptions::default(),
        )
        .await?;
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
        "path": plugin_path("iggy_connector_random_source"),
        "streams": [{ "stream": stream, "topic": "t", "schema": "json" }],
        "plugin_config": { "interval": "0ms", "max_count": total, "messages_range": [BATCH, BATCH], "payload_size": payload_size }
    }))?;
    let sink: ConnectorConfig = serde_json::from_value(serde_json::json!({
        "type": "sink", "key": format!("null-{stream}"), "enabled": true, "version": 0, "name": "Null",
        "path": plugin_path("iggy_connector_null_sink"),
        "streams": [{ "stream": stream, "topics": ["t"], "schema": "json", "batch_length": BATCH, "poll_interval": "1ms" }]
    }))?;
    let mut configs = ActiveConfigs::default();
    configs.sources.insert(source.key().to_owned(), source);
    configs.sinks.insert(sink.key().to_owned(), sink);
    let bus = IggyBus::connect(&IggySettings {
        address: address.to_owned(),
        username: "iggy".to_owned(),
        password: "iggy".to_owned(),
        token: String::new(),
        tls: None,
        connect_retries: 3,
        reconnect_interval: Duration::from_millis(500),
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
    let started = Instant::now();
    let connectors = Runtime::start(configs, plugins, context).await;
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
        let pause = Duration::from_millis(
            std::env::var("BENCH_API_PAUSE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(10),
        );
        let load = api_load(server.local_addr(), api_clients, pause, load_stopped);
        api = Some((server, load));
    }
    let (mut first_sent, mut source_done) = (None, None);
    loop {
        let produced: u64 = connectors
            .statuses()
            .iter()
            .filter(|s| s.key.starts_with("gen-"))
            .map(|s| s.metrics.messages_out)
            .sum();
        if produced > 0 && first_sent.is_none() {
            first_sent = Some(started.elapsed());
        }
        if produced >= total && source_done.is_none() {
            source_done = Some(started.elapsed());
        }
        let delivered: u64 = connectors
            .statuses()
            .iter()
            .filter(|s| s.key.starts_with("null-"))
            .map(|s| s.metrics.messages_out)
            .sum();
        if delivered >= total {
            break;
        }
        if connectors
            .statuses()
            .iter()
            .any(|s| s.state == runtime_core::ConnectorState::Failed)
        {
            return Err(format!("a connector failed: {:?}", connectors.statuses()).into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!(
            "first batch stored after {first_sent:?}, source finished after {source_done:?}, sink after {elapsed:?}"
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

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let total: u64 = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let total = total / u64::from(BATCH) * u64::from(BATCH);
    let target = iggy_test_server::TestTarget::from_env().await?;
    let (server, address) = (target.server, target.address);
    let target = if server.is_some() {
        "iggy-test-server"
    } else {
        "IGGY_TEST_ADDRESS"
    };
    println!("end to end against {target} at {address}: {total} messages per case");
    println!(
        "{:>9} {:>12} {:>9} {:>12} {:>9} {:>7} {:>12} {:>10} {:>12}",
        "message",
        "runtime/s",
        "MB/s",
        "raw/s",
        "MB/s",
        "ratio",
        "+API/s",
        "API req/s",
        "generator/s"
    );
    // The generator's JSON adds about 60 bytes of fields around its random text.
    for (label, payload_size) in [("~100 B", 40usize), ("~1 KiB", 964)] {
        let probe = serde_json::to_vec(
            &serde_json::json!({"seq": 123456u64, "key": "gen-bench-xxxxxxxxxxxxxxxxxxxxxx", "text": "x".repeat(payload_size), "created_at": 1_795_837_697_485_153u64}),
        )?;
        let size = probe.len();
        let suffix = format!("{}-{}", payload_size, std::process::id());
        let (through_runtime, _) = runtime(
            &address,
            &format!("e2e-rt-{suffix}"),
            total,
            payload_size,
            0,
        )
        .await?;
        let (with_api, answered) = runtime(
            &address,
            &format!("e2e-api-{suffix}"),
            total,
            payload_size,
            2,
        )
        .await?;
        let through_raw = raw(
            &address,
            &format!("e2e-raw-{suffix}"),
            total,
            Bytes::from(probe),
        )
        .await?;
        let generator = generator_alone(total, payload_size).await?;
        let rate = |elapsed: Duration| total as f64 / elapsed.as_secs_f64();
        println!(
            "{label:>9} {:>12.0} {:>9.1} {:>12.0} {:>9.1} {:>7.2} {:>12.0} {:>10.0} {:>12.0}",
            rate(through_runtime),
            rate(through_runtime) * size as f64 / 1e6,
            rate(through_raw),
            rate(through_raw) * size as f64 / 1e6,
            through_raw.as_secs_f64() / through_runtime.as_secs_f64(),
            rate(with_api),
            answered as f64 / with_api.as_secs_f64(),
            rate(generator)
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
