//! Drop-in for upstream's API clients: every response upstream's runtime has decodes
//! into structs that mirror upstream's definitions field for field (apache/iggy,
//! `core/connectors/sdk/src/api.rs`: `HealthResponse`, `ConnectorRuntimeStats`,
//! `ConnectorStats`, `SinkInfoResponse`, `SourceInfoResponse`, `ConnectorStatus`,
//! `ConnectorError`; `core/connectors/runtime/src/api/models.rs`:
//! `SinkDetailsResponse`, `SourceDetailsResponse`; `configs/connectors.rs`:
//! `StreamConsumerConfig`, `StreamProducerConfig`), and upstream's API test assertions
//! (`core/integration/tests/connectors/api/endpoints.rs`: metric names, status
//! values, counts) hold. A field renamed or retyped on our side fails here.
//!
//! The structs are written here, from upstream's field lists; as upstream's are, they
//! ignore fields they do not know (ours).

use serde::Deserialize;

use crate::support::fixture;

/// Upstream's `ConnectorStatus`: lowercase, these five and no others.
#[derive(Debug, Deserialize, PartialEq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ConnectorStatus {
    Starting,
    Running,
    Stopping,
    Stopped,
    Error,
}

/// Upstream's `ConnectorError` (its `IggyTimestamp` is microseconds since the epoch).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct ConnectorError {
    message: String,
    timestamp: u64,
}

#[derive(Debug, Deserialize)]
struct HealthResponse {
    status: String,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct ConnectorRuntimeStats {
    connectors_runtime_version: String,
    connectors_runtime_version_semver: Option<u32>,
    process_id: u32,
    cpu_usage: f32,
    total_cpu_usage: f32,
    memory_usage: u64,
    total_memory: u64,
    available_memory: u64,
    run_time: u64,
    start_time: u64,
    sources_total: u32,
    sources_running: u32,
    sinks_total: u32,
    sinks_running: u32,
    connectors: Vec<ConnectorStats>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct ConnectorStats {
    key: String,
    name: String,
    connector_type: String,
    version: String,
    version_semver: Option<u32>,
    status: ConnectorStatus,
    enabled: bool,
    messages_produced: Option<u64>,
    messages_sent: Option<u64>,
    messages_consumed: Option<u64>,
    messages_processed: Option<u64>,
    messages_filtered: Option<u64>,
    #[serde(default)]
    errors: u64,
}

/// Upstream's `SinkInfoResponse` and `SourceInfoResponse` (the same fields).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct InfoResponse {
    id: u32,
    key: String,
    name: String,
    path: String,
    enabled: bool,
    status: ConnectorStatus,
    last_error: Option<ConnectorError>,
    plugin_config_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct StreamConsumerConfig {
    stream: String,
    topics: Vec<String>,
    schema: String,
    avro_schema_json: Option<String>,
    avro_schema_path: Option<String>,
    batch_length: Option<u32>,
    poll_interval: Option<String>,
    consumer_group: Option<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct StreamProducerConfig {
    stream: String,
    topic: String,
    schema: String,
    avro_schema_json: Option<String>,
    avro_schema_path: Option<String>,
    batch_length: Option<u32>,
    linger_time: Option<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct SinkDetailsResponse {
    #[serde(flatten)]
    info: InfoResponse,
    streams: Vec<StreamConsumerConfig>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct SourceDetailsResponse {
    #[serde(flatten)]
    info: InfoResponse,
    streams: Vec<StreamProducerConfig>,
}

/// Decodes `body` as `T`, naming the route when it cannot.
fn decode<T: serde::de::DeserializeOwned>(route: &str, body: &str) -> T {
    serde_json::from_str(body)
        .unwrap_or_else(|error| panic!("{route}: upstream's type cannot read it: {error}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_api_types_read_every_response() {
    let api = fixture(|_| {}).await;
    // Both connectors running, as the issue tried it.
    let both = api
        .eventually_json("/stats", "both connectors running", |stats| {
            stats["sources_running"] == 1 && stats["sinks_running"] == 1
        })
        .await;
    assert_eq!(both["connectors"].as_array().map(Vec::len), Some(2));

    let health: HealthResponse = decode("/health", &api.get("/health").await.text());
    assert_eq!(health.status, "healthy");

    let stats: ConnectorRuntimeStats = decode("/stats", &api.get("/stats").await.text());
    assert!(stats.process_id > 0);
    assert_eq!(
        (
            stats.sources_total,
            stats.sources_running,
            stats.sinks_total,
            stats.sinks_running
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(stats.connectors_runtime_version_semver, Some(1000), "0.1.0");
    assert!(stats.memory_usage > 0 && stats.total_memory >= stats.available_memory);
    for connector in &stats.connectors {
        assert_eq!(connector.status, ConnectorStatus::Running, "{connector:?}");
        assert!(connector.enabled);
        assert!(
            connector.version_semver.is_some(),
            "the plugin's version: {connector:?}"
        );
        match connector.connector_type.as_str() {
            "source" => assert!(
                connector.messages_produced.is_some() && connector.messages_sent.is_some(),
                "{connector:?}"
            ),
            "sink" => assert!(
                connector.messages_consumed.is_some() && connector.messages_processed.is_some(),
                "{connector:?}"
            ),
            other => panic!("connector_type {other}"),
        }
    }

    let sinks: Vec<InfoResponse> = decode("/sinks", &api.get("/sinks").await.text());
    let sources: Vec<InfoResponse> = decode("/sources", &api.get("/sources").await.text());
    assert_eq!((sinks.len(), sources.len()), (1, 1));
    assert_ne!(sinks[0].id, sources[0].id, "ids are unique");
    let sink: SinkDetailsResponse = decode("/sinks/file", &api.get("/sinks/file").await.text());
    assert_eq!(sink.info.id, sinks[0].id, "an id stays the connector's");
    assert_eq!(sink.streams[0].topics, ["t"]);
    let source: SourceDetailsResponse =
        decode("/sources/random", &api.get("/sources/random").await.text());
    assert_eq!(source.streams[0].topic, "t");

    // A stopped connector is upstream's `stopped`.
    api.send("POST", "/sinks/file/stop", serde_json::json!({}))
        .await;
    let stopped: InfoResponse = decode("/sinks/file", &api.get("/sinks/file").await.text());
    assert_eq!(stopped.status, ConnectorStatus::Stopped);

    // Upstream's metric families, with their labels, beside ours.
    let metrics = api.get("/metrics").await.text();
    for name in [
        "iggy_connectors_sources_total",
        "iggy_connectors_sources_running",
        "iggy_connectors_sinks_total",
        "iggy_connectors_sinks_running",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} gauge")),
            "{name}: {metrics}"
        );
    }
    for (name, kind) in [
        ("iggy_connector_messages_produced_total", "source"),
        ("iggy_connector_messages_sent_total", "source"),
        ("iggy_connector_messages_consumed_total", "sink"),
        ("iggy_connector_messages_processed_total", "sink"),
        ("iggy_connector_messages_filtered_total", "sink"),
        ("iggy_connector_errors_total", "source"),
    ] {
        let key = if kind == "sink" { "file" } else { "random" };
        let series = format!("{name}{{connector_key=\"{key}\",connector_type=\"{kind}\"}}");
        assert!(metrics.contains(&series), "{series}: {metrics}");
    }
    for stage in ["decode", "prepare", "ffi", "total"] {
        let series = format!(
            "iggy_connector_stage_duration_seconds_bucket{{connector_key=\"file\",connector_type=\"sink\",stage=\"{stage}\",le=\"0.00005\"}}"
        );
        assert!(metrics.contains(&series), "{series}: {metrics}");
    }
    for stage in ["decode", "prepare", "iggy_send", "state_save", "total"] {
        let series = format!(
            "iggy_connector_stage_duration_seconds_count{{connector_key=\"random\",connector_type=\"source\",stage=\"{stage}\"}}"
        );
        assert!(metrics.contains(&series), "{series}: {metrics}");
    }
    api.stop().await;
}

/// A connector's last error reads as upstream's `ConnectorError`: its message and a
/// timestamp of when it happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_error_is_upstreams_timestamped_connector_error() {
    let api = fixture(|_| {}).await;
    // A new version whose plugin cannot open: the activation is refused, and the
    // connector's last error is that version's.
    let active = api.get("/sinks/file/configs/active").await.json();
    let mut next = active.clone();
    let not_a_directory = api.dir.join("not-a-directory");
    std::fs::write(&not_a_directory, "").unwrap();
    next["plugin_config"]["path"] = serde_json::json!(not_a_directory.join("out.jsonl"));
    next["plugin_config"]
        .as_object_mut()
        .unwrap()
        .remove("format");
    let fields = next.as_object_mut().unwrap();
    for reserved in ["type", "key", "version", "active"] {
        fields.remove(reserved);
    }
    let created = api.send("POST", "/sinks/file/configs", next).await;
    assert!(created.status.is_success(), "{}", created.text());
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    api.send(
        "PUT",
        "/sinks/file/configs/active",
        serde_json::json!({ "version": 1 }),
    )
    .await;
    let sink: InfoResponse = decode("/sinks/file", &api.get("/sinks/file").await.text());
    let error = sink.last_error.expect("the failed version's error");
    assert!(error.message.contains("not-a-directory"), "{error:?}");
    assert!(error.timestamp >= before, "{error:?} before {before}");
    api.stop().await;
}
