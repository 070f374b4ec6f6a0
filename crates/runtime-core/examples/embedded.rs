//! A service that embeds the connectors runtime: its own tokio runtime, connectors linked
//! in statically (the random source and the null sink), configs built in code, no files.
//!
//! Run: `cargo run -p runtime-core --example embedded` (starts the in-memory Iggy test
//! server; set `IGGY_ADDRESS=host:port` to use a real server, user iggy/iggy).

use std::sync::Arc;
use std::time::{Duration, Instant};

use config_provider::{ActiveConfigs, ConnectorConfig, RuntimeBehaviour};
use plugin_host::{Plugin, PluginLoader};
use runtime_core::{IggyBus, IggySettings, PluginRegistry, Runtime, RuntimeContext, StateStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The embedding service owns its runtime; the connectors run on executors of their own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(service())
}

async fn service() -> Result<(), Box<dyn std::error::Error>> {
    let (_server, address) = match std::env::var("IGGY_ADDRESS") {
        Ok(address) => (None, address),
        Err(_) => {
            let server = iggy_test_server::TestServer::start().await?;
            let address = server.address().to_string();
            (Some(server), address)
        }
    };

    // Linked connectors are registered under the names the configs use as `path`.
    let mut plugins = PluginRegistry::new(PluginLoader::new());
    plugins
        .register(
            "random",
            Plugin::from_static(iggy_connector_random_source::descriptor())?,
        )
        .register(
            "null",
            Plugin::from_static(iggy_connector_null_sink::descriptor())?,
        );

    let source: ConnectorConfig = serde_json::from_value(serde_json::json!({
        "type": "source", "key": "generator", "enabled": true, "version": 0,
        "name": "Generator", "path": "random",
        "streams": [{ "stream": "embedded", "topic": "events", "schema": "json" }],
        "plugin_config": { "interval": "1ms", "max_count": 1000, "messages_range": [50, 100] }
    }))?;
    let sink: ConnectorConfig = serde_json::from_value(serde_json::json!({
        "type": "sink", "key": "counter", "enabled": true, "version": 0,
        "name": "Counter", "path": "null",
        "streams": [{ "stream": "embedded", "topics": ["events"], "schema": "json", "poll_interval": "1ms" }]
    }))?;
    let mut configs = ActiveConfigs::default();
    configs.sources.insert("generator".to_owned(), source);
    configs.sinks.insert("counter".to_owned(), sink);

    let bus = IggyBus::connect(&IggySettings {
        connect_retries: 3,
        ..IggySettings::new(address)
    })
    .await?;
    let state_dir = std::env::temp_dir().join(format!("embedded-example-{}", std::process::id()));
    let context = RuntimeContext::new(
        Arc::new(bus),
        StateStore::new(&state_dir),
        &RuntimeBehaviour::default(),
    );
    let connectors = Runtime::start(configs, plugins, context).await;

    // The service goes on with its own work; here it waits for the thousand messages.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered: u64 = connectors
            .statuses()
            .iter()
            .filter(|status| status.key == "counter")
            .map(|status| status.metrics.messages_out)
            .sum();
        if delivered >= 1000 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for status in connectors.statuses() {
        println!(
            "{} {}: {} after {} messages",
            status.kind, status.key, status.state, status.metrics.messages_out
        );
    }
    connectors.shutdown(Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(&state_dir);
    Ok(())
}
