//! The webhook source through the runtime into Iggy: acknowledged messages per second
//! from a local load generator posting NDJSON bodies of 1000 messages (~200 B each),
//! `BENCH_CLIENTS` connections at once (default 4), each posting its next body as soon
//! as the last one was answered 200 (so every counted message was stored in Iggy).
//! Against the in-process test server, or a real one from `IGGY_TEST_ADDRESS`.
//!
//! Run: `cargo bench -p iggy-connectors-benches --bench http_source` (`BENCH_MESSAGES`,
//! default 500,000).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use config_provider::{ActiveConfigs, ConnectorConfig, RuntimeBehaviour};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use iggy_connectors_tests::{create_topic, iggy_client, plugin_path};
use plugin_host::PluginLoader;
use runtime_core::{IggyBus, IggySettings, PluginRegistry, Runtime, RuntimeContext, StateStore};

const PER_REQUEST: usize = 1000;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let total: usize = iggy_connectors_benches::env_or("BENCH_MESSAGES", 500_000);
    let clients: usize = iggy_connectors_benches::env_or("BENCH_CLIENTS", 4);
    let requests = total.div_ceil(PER_REQUEST);
    let target = iggy_test_server::TestTarget::from_env().await?;
    let stream = format!("http-source-bench-{}", std::process::id());
    let address: SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let source: ConnectorConfig = serde_json::from_value(serde_json::json!({
        "type": "source", "key": "webhooks", "enabled": true, "version": 0, "name": "Webhooks",
        "path": plugin_path("iggy_connector_http_source"),
        "streams": [{ "stream": stream, "topic": "t", "schema": "json" }],
        "plugin_config": { "address": address.to_string(), "max_batch_messages": 4000 }
    }))?;
    let mut configs = ActiveConfigs::default();
    configs.sources.insert("webhooks".to_owned(), source);
    if std::env::var_os(iggy_test_server::CREATE_TOPIC_COMMAND_ENV).is_some() {
        create_topic(&iggy_client(&target.address).await?, &stream, "t", 1).await?;
    }
    let bus = IggyBus::connect(&IggySettings::new(target.address.clone())).await?;
    let state = std::env::temp_dir().join(format!("http-source-bench-{}", std::process::id()));
    let context = RuntimeContext::new(
        Arc::new(bus),
        StateStore::new(&state),
        &RuntimeBehaviour::default(),
    );
    let runtime = Runtime::start(configs, PluginRegistry::new(PluginLoader::new()), context).await;
    let ready_by = Instant::now() + Duration::from_secs(30);
    while !runtime
        .statuses()
        .iter()
        .all(|s| s.state == runtime_core::ConnectorState::Running)
    {
        if Instant::now() > ready_by {
            return Err(format!("the source did not start: {:?}", runtime.statuses()).into());
        }
        tokio::task::yield_now().await;
    }
    // One body of 1000 lines of ~200 B JSON, posted again and again.
    let body: String = (0..PER_REQUEST)
        .map(|n| {
            format!(
                "{{\"order_id\":{n},\"customer\":\"customer-{n:06}\",\"status\":\"created\",\"amount\":1234.5,\"currency\":\"EUR\",\"items\":[{{\"sku\":\"SKU-0001\",\"qty\":2}},{{\"sku\":\"SKU-0002\",\"qty\":1}}],\"note\":\"{}\"}}\n",
                "x".repeat(48)
            )
        })
        .collect();
    let line_bytes = body.len() / PER_REQUEST;
    let body = Bytes::from(body);
    // Warm-up: the first connection, the topic's first messages.
    post_all(address, body.clone(), 2).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let share = requests / clients + usize::from(client < requests % clients);
        tasks.push(tokio::spawn(post_all(address, body.clone(), share)));
    }
    let mut refused = 0;
    for task in tasks {
        refused += task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stored = (requests - refused) * PER_REQUEST;
    println!(
        " clients  messages  refused(503)  acknowledged msg/s     MB/s   ({line_bytes} B messages)"
    );
    println!(
        " {clients:>7} {stored:>9} {refused:>13} {:>19.0} {:>8.1}",
        stored as f64 / elapsed,
        (stored * line_bytes) as f64 / elapsed / 1e6
    );
    runtime.shutdown(Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

/// Posts `body` `count` times on one keep-alive connection; how many got no 200.
async fn post_all(
    address: SocketAddr,
    body: Bytes,
    count: usize,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut refused = 0;
    for _ in 0..count {
        let request = hyper::Request::post("/")
            .header("host", address.to_string())
            .header("content-type", "application/x-ndjson")
            .body(Full::new(body.clone()))?;
        // The answer before was read whole; wait until the connection takes the next.
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        if status != hyper::StatusCode::OK {
            refused += 1;
        }
    }
    Ok(refused)
}
