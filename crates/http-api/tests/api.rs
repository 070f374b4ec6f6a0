//! The HTTP API end to end: a runtime with a random source and a file sink (through the
//! test server or `IGGY_TEST_ADDRESS`), the local config provider, real HTTP requests.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use config_provider::{ConfigProvider, HttpConfig, LocalProvider};
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use iggy_connectors_tests::{plugin_path, prepare_topic, temp_dir, unique};
use iggy_test_server::TestTarget;
use plugin_host::PluginLoader;
use runtime_core::{
    IggyBus, IggySettings, PluginRegistry, RestartPolicy, RetryPolicy, Runtime, RuntimeContext,
    StallPolicy, StateStore,
};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);
const KEY: &str = "s3cr3t-key";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request over a fresh connection (plain TCP).
async fn call(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    send(TokioIo::new(stream), method, path, headers, body).await
}

async fn send<I>(
    io: I,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: body.to_vec(),
    }
}

/// A running API over a runtime with a random source and a file sink.
struct Fixture {
    address: std::net::SocketAddr,
    runtime: Runtime,
    server: http_api::ApiServer,
    dir: PathBuf,
    _target: TestTarget,
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn sink_toml(stream: &str, output: &Path) -> String {
    format!(
        r#"type = "sink"
key = "file"
enabled = true
version = 0
name = "File sink"
path = "{path}"
[[streams]]
stream = "{stream}"
topics = ["t"]
schema = "json"
batch_length = 50
poll_interval = "2ms"
[plugin_config]
path = "{output}"
format = "${{file:{secret}}}"
"#,
        path = plugin_path("iggy_connector_file_sink"),
        output = output.display(),
        secret = output.with_file_name("format.secret").display(),
    )
}

async fn fixture(http: impl FnOnce(&mut HttpConfig)) -> Fixture {
    fixture_on(
        TestTarget::from_env().await.unwrap(),
        &unique("api"),
        StallPolicy::default(),
        http,
    )
    .await
}

/// [`fixture`] on `target` and `stream`, with sinks stalling as `stall` says.
async fn fixture_on(
    target: TestTarget,
    stream: &str,
    stall: StallPolicy,
    http: impl FnOnce(&mut HttpConfig),
) -> Fixture {
    let dir = temp_dir("http-api");
    let configs = dir.join("connectors");
    std::fs::create_dir_all(&configs).unwrap();
    write(
        &configs,
        "source.toml",
        &format!(
            r#"type = "source"
key = "random"
enabled = true
version = 0
name = "Random"
path = "{path}"
[[streams]]
stream = "{stream}"
topic = "t"
schema = "json"
[plugin_config]
interval = "5ms"
messages_range = [5, 10]
payload_size = 20
"#,
            path = plugin_path("iggy_connector_random_source")
        ),
    );
    // A secret the config reads from a file: it must never be shown.
    write(&dir, "format.secret", "json");
    write(
        &configs,
        "sink.toml",
        &sink_toml(stream, &dir.join("out-0.jsonl")),
    );
    let provider: Arc<dyn ConfigProvider> =
        Arc::new(LocalProvider::open(&configs, &Default::default()).unwrap());
    prepare_topic(&target.address, stream, "t").await;
    let bus = IggyBus::connect(&IggySettings {
        // Long enough to ride out a restart of a real server.
        connect_retries: 100,
        reconnect_interval: Duration::from_millis(100),
        ..IggySettings::new(target.address.clone())
    })
    .await
    .unwrap();
    let context = RuntimeContext {
        bus: Arc::new(bus),
        state: StateStore::new(dir.join("state")),
        retry: RetryPolicy::default(),
        restart: RestartPolicy::default(),
        stop_timeout: Duration::from_secs(10),
        stall,
    };
    let runtime = Runtime::start(
        provider.active_configs().await.unwrap(),
        PluginRegistry::new(PluginLoader::new()),
        context,
    )
    .await;
    let mut config = HttpConfig {
        enabled: true,
        address: "127.0.0.1:0".to_owned(),
        ..HttpConfig::default()
    };
    config.metrics.enabled = true;
    http(&mut config);
    let api = http_api::ApiContext::new(runtime.clone(), provider, config.clone());
    let server = http_api::serve(&config, api).await.unwrap();
    Fixture {
        address: server.local_addr(),
        runtime,
        server,
        dir,
        _target: target,
    }
}

impl Fixture {
    async fn get(&self, path: &str) -> Reply {
        call(self.address, "GET", path, &[("api-key", KEY)], None).await
    }

    async fn send(&self, method: &str, path: &str, body: Value) -> Reply {
        call(
            self.address,
            method,
            path,
            &[("api-key", KEY), ("content-type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    async fn eventually_json(
        &self,
        path: &str,
        what: &str,
        mut condition: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let reply = self.get(path).await;
            let value = reply.json();
            if condition(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {value}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.server.shutdown().await;
        self.runtime.shutdown(Duration::from_secs(10)).await;
    }
}

fn with_key(config: &mut HttpConfig) {
    config.api_key = KEY.to_owned();
}

/// Every route in the table, `{kind}`, `{key}` and `{version}` filled in.
fn concrete_routes() -> Vec<(String, &'static str)> {
    let mut routes = Vec::new();
    for spec in &http_api::ROUTES {
        for kind in ["sinks", "sources"] {
            let key = if kind == "sinks" { "file" } else { "random" };
            let path = spec
                .path
                .replace("{kind}", kind)
                .replace("{key}", key)
                .replace("{version}", "0");
            for method in spec.methods {
                if !routes.contains(&(path.clone(), *method)) {
                    routes.push((path.clone(), *method));
                }
            }
        }
    }
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_the_api_key_but_root_and_health() {
    let api = fixture(with_key).await;
    for (path, method) in concrete_routes() {
        let without = call(api.address, method, &path, &[], None).await;
        let wrong = call(
            api.address,
            method,
            &path,
            &[("api-key", "s3cr3t-kex")],
            None,
        )
        .await;
        if path == "/" || path == "/health" {
            assert_eq!(without.status, StatusCode::OK, "{method} {path}");
        } else {
            for reply in [without, wrong] {
                assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
                assert_eq!(reply.json()["code"], "unauthorized", "{method} {path}");
            }
        }
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers() {
    let api = fixture(with_key).await;
    let root = api.get("/").await;
    assert_eq!(
        (root.status, root.text().as_str()),
        (StatusCode::OK, "Connector Runtime API")
    );
    assert_eq!(api.get("/health").await.json()["status"], "healthy");
    let ready = api
        .eventually_json("/ready", "ready", |value| value["ready"] == true)
        .await;
    assert_eq!(ready["reasons"], json!([]));
    api.eventually_json("/sinks/file", "the sink delivered", |value| {
        value["metrics"]["messages_out"].as_u64() > Some(20)
    })
    .await;

    let stats = api.get("/stats").await.json();
    assert_eq!(
        (
            stats["sinks_total"].as_u64(),
            stats["sources_total"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(stats["sinks_running"], 1);
    assert_eq!(stats["process_id"], std::process::id());
    assert_eq!(stats["connectors"].as_array().unwrap().len(), 2);
    let metrics = api.get("/metrics").await;
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(
        metrics
            .text()
            .contains("iggy_connectors_messages_out_total{kind=\"sink\",key=\"file\"}")
    );
    assert!(metrics.text().contains("iggy_connectors_iggy_connected 1"));
    let openapi = api.get("/openapi.json").await.json();
    assert_eq!(openapi["openapi"], "3.0.3");

    let sinks = api.get("/sinks").await.json();
    assert_eq!(sinks.as_array().unwrap().len(), 1);
    assert_eq!(sinks[0]["key"], "file");
    assert_eq!(sinks[0]["status"], "running");
    let sources = api.get("/sources").await.json();
    assert_eq!(sources[0]["key"], "random");
    let details = api.get("/sources/random").await.json();
    assert_eq!(details["streams"][0]["topic"], "t");
    assert!(
        details["metrics"]["bytes_out"].as_u64() > Some(0),
        "{details}"
    );
    assert_eq!(
        api.get("/sources/random/transforms").await.json(),
        json!([])
    );
    assert_eq!(api.get("/sinks/file/transforms").await.json(), json!([]));

    // Config versions: create version 1, read it, activate it live.
    let versions = api.get("/sinks/file/configs").await.json();
    assert_eq!(versions.as_array().unwrap().len(), 1);
    assert_eq!(
        (
            versions[0]["version"].as_u64(),
            versions[0]["active"].as_bool()
        ),
        (Some(0), Some(true))
    );
    let active = api.get("/sinks/file/configs/active").await.json();
    assert_eq!(
        (active["version"].as_u64(), active["active"].as_bool()),
        (Some(0), Some(true))
    );
    assert_eq!(
        api.get("/sinks/file/configs/0").await.json()["active"],
        true
    );
    let mut next: Value = toml_to_json(&sink_toml(
        active["streams"][0]["stream"].as_str().unwrap(),
        &api.dir.join("out-1.jsonl"),
    ));
    let fields = next.as_object_mut().unwrap();
    for reserved in ["type", "key", "version"] {
        fields.remove(reserved);
    }
    let created = api.send("POST", "/sinks/file/configs", next).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let created = created.json();
    assert_eq!(
        (created["version"].as_u64(), created["active"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(
        api.get("/sinks/file/configs/1").await.json()["active"],
        false
    );
    let activated = api
        .send("PUT", "/sinks/file/configs/active", json!({ "version": 1 }))
        .await;
    assert_eq!(
        activated.status,
        StatusCode::NO_CONTENT,
        "{}",
        activated.text()
    );
    assert_eq!(
        api.get("/sinks/file/configs/active").await.json()["version"],
        1
    );
    api.eventually_json("/sinks/file", "version 1 runs", |value| {
        value["version"] == 1 && value["status"] == "running"
    })
    .await;
    let deadline = Instant::now() + DEADLINE;
    while std::fs::read_to_string(api.dir.join("out-1.jsonl"))
        .map_or(0, |text| text.lines().count())
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "version 1 never wrote to its file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The activation was persisted by the provider.
    let on_disk =
        std::fs::read_to_string(api.dir.join("connectors/.active_versions.toml")).unwrap();
    assert!(on_disk.contains("file = 1"), "{on_disk}");
    let running_delete = api
        .send("DELETE", "/sinks/file/configs?version=1", json!(null))
        .await;
    assert_eq!(
        running_delete.status,
        StatusCode::CONFLICT,
        "{}",
        running_delete.text()
    );
    let deleted = api
        .send("DELETE", "/sinks/file/configs?version=0", json!(null))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text());
    assert_eq!(
        api.get("/sinks/file/configs/0").await.status,
        StatusCode::NOT_FOUND
    );

    // The plugin config in every format, secrets redacted.
    for (format, content_type, marker) in [
        ("json", "application/json", "\"format\": \"******\""),
        ("yaml", "application/yaml", "\"format\": \"******\""),
        ("toml", "application/toml", "format = \"******\""),
        ("text", "text/plain", "format = ******"),
    ] {
        let reply = api
            .get(&format!("/sinks/file/configs/plugin?format={format}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{format}");
        assert!(
            reply.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type)
        );
        assert!(reply.text().contains(marker), "{format}: {}", reply.text());
        assert!(
            reply.text().contains("out-1.jsonl"),
            "{format}: {}",
            reply.text()
        );
    }
    // The default is TOML (no plugin_config_format given).
    let default = api.get("/sinks/file/configs/plugin").await;
    assert!(
        default.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/toml")
    );
    for path in [
        "/sinks/file/configs",
        "/sinks/file/configs/active",
        "/sinks/file/configs/1",
    ] {
        let text = api.get(path).await.text();
        assert!(text.contains("\"format\":\"******\""), "{path}: {text}");
        assert!(!text.contains("format.secret"), "{path}: {text}");
    }

    // Lifecycle of one connector; the other keeps running.
    for (action, state) in [
        ("pause", "paused"),
        ("resume", "running"),
        ("stop", "stopped"),
        ("start", "running"),
        ("restart", "running"),
    ] {
        let reply = api
            .send("POST", &format!("/sinks/file/{action}"), json!(null))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{action}: {}", reply.text());
        api.eventually_json("/sinks/file", action, |value| value["status"] == state)
            .await;
        assert_eq!(
            api.get("/sources/random").await.json()["status"],
            "running",
            "{action}"
        );
    }
    let stopped = api.send("POST", "/sources/random/stop", json!(null)).await;
    assert_eq!(stopped.json()["status"], "stopped");
    let not_ready = api.get("/ready").await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        not_ready.json()["reasons"][0]
            .as_str()
            .unwrap()
            .contains("source random is stopped")
    );
    let refused = api.send("POST", "/sources/random/pause", json!(null)).await;
    assert_eq!(
        (refused.status, refused.json()["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_running"))
    );
    api.stop().await;
}

fn toml_to_json(text: &str) -> Value {
    let value: toml::Value = toml::from_str(text).unwrap();
    serde_json::to_value(value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors() {
    let api = fixture(|_| {}).await;
    let check = |reply: Reply, status: StatusCode, code: &str| {
        assert_eq!(reply.status, status, "{}", reply.text());
        assert_eq!(reply.json()["code"], code, "{}", reply.text());
        reply
    };
    check(api.get("/nope").await, StatusCode::NOT_FOUND, "not_found");
    check(
        api.get("/widgets/x").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let wrong_method = check(
        api.send("DELETE", "/sinks", json!(null)).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert_eq!(wrong_method.headers["allow"], "GET");
    let wrong_method = check(
        api.send("PATCH", "/sinks/file/configs", json!(null)).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert_eq!(wrong_method.headers["allow"], "GET, POST, DELETE");
    check(
        api.get("/sinks/nope").await,
        StatusCode::NOT_FOUND,
        "sink_not_found",
    );
    check(
        api.get("/sources/nope/configs/active").await,
        StatusCode::NOT_FOUND,
        "source_not_found",
    );
    check(
        api.get("/sinks/file/configs/9").await,
        StatusCode::NOT_FOUND,
        "sink_config_not_found",
    );
    check(
        api.get("/sinks/file/configs/x").await,
        StatusCode::BAD_REQUEST,
        "invalid_version",
    );
    check(
        api.get("/sinks/file/configs/plugin?format=xml").await,
        StatusCode::BAD_REQUEST,
        "invalid_format",
    );
    check(
        api.send("POST", "/sinks/nope/start", json!(null)).await,
        StatusCode::NOT_FOUND,
        "sink_not_found",
    );
    // Keys that are not `[A-Za-z0-9_-]+`, however they are spelled.
    for path in [
        "/sinks/..",
        "/sinks/..%2F..%2Fetc",
        "/sinks/a%2Fb/configs",
        "/sinks/a%20b",
    ] {
        check(api.get(path).await, StatusCode::BAD_REQUEST, "invalid_key");
    }
    // Malformed JSON and wrong types carry serde's message.
    let malformed = call(
        api.address,
        "PUT",
        "/sinks/file/configs/active",
        &[],
        Some(b"{\"version\": ".to_vec()),
    )
    .await;
    let malformed = check(malformed, StatusCode::BAD_REQUEST, "invalid_json");
    assert!(
        malformed.json()["reason"].as_str().unwrap().contains("EOF"),
        "{}",
        malformed.text()
    );
    check(
        api.send(
            "PUT",
            "/sinks/file/configs/active",
            json!({ "version": "one" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    let wrong_type = api
        .send(
            "POST",
            "/sinks/file/configs",
            json!({ "enabled": "yes", "name": "n", "path": "p", "streams": [] }),
        )
        .await;
    let wrong_type = check(wrong_type, StatusCode::BAD_REQUEST, "invalid_configuration");
    assert!(
        wrong_type.json()["reason"]
            .as_str()
            .unwrap()
            .contains("invalid type"),
        "{}",
        wrong_type.text()
    );
    let unknown_field = api
        .send(
            "POST",
            "/sinks/file/configs",
            json!({ "enabled": true, "name": "n", "path": "p", "streams": [], "colour": 1 }),
        )
        .await;
    let unknown_field = check(
        unknown_field,
        StatusCode::BAD_REQUEST,
        "invalid_configuration",
    );
    assert!(
        unknown_field.json()["reason"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
    check(
        api.send("POST", "/sinks/file/configs", json!({ "key": "x" }))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_configuration",
    );
    let oversize = call(
        api.address,
        "POST",
        "/sinks/file/configs",
        &[],
        Some(vec![b' '; http_api::BODY_LIMIT + 1]),
    )
    .await;
    check(oversize, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Nothing was stored by the refused requests.
    assert_eq!(
        api.get("/sinks/file/configs")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_actual_requests() {
    let api = fixture(|config| {
        config.cors.enabled = true;
        config.cors.allowed_origins = vec!["https://ui.example".to_owned()];
        config.cors.allowed_methods = vec!["GET".to_owned(), "POST".to_owned()];
        config.cors.allowed_headers = vec!["content-type".to_owned(), "api-key".to_owned()];
        config.cors.exposed_headers = vec!["x-total".to_owned(), String::new()];
        config.cors.allow_credentials = true;
        config.cors.allow_private_network = true;
    })
    .await;
    let preflight = call(
        api.address,
        "OPTIONS",
        "/sinks",
        &[
            ("origin", "https://ui.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "API-Key, content-type"),
            ("access-control-request-private-network", "true"),
        ],
        None,
    )
    .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    let header = |reply: &Reply, name: &str| {
        reply
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header(&preflight, "access-control-allow-origin").as_deref(),
        Some("https://ui.example")
    );
    assert_eq!(
        header(&preflight, "access-control-allow-methods").as_deref(),
        Some("GET, POST")
    );
    assert_eq!(
        header(&preflight, "access-control-allow-headers").as_deref(),
        Some("content-type, api-key")
    );
    assert_eq!(
        header(&preflight, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(
        header(&preflight, "access-control-allow-private-network").as_deref(),
        Some("true")
    );
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("access-control-request-method", "DELETE"),
        ("access-control-request-headers", "x-other"),
    ] {
        let mut headers = vec![
            ("origin", "https://ui.example"),
            ("access-control-request-method", "GET"),
        ];
        headers.retain(|(existing, _)| *existing != name);
        headers.push((name, value));
        let refused = call(api.address, "OPTIONS", "/sinks", &headers, None).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{name}");
        assert!(header(&refused, "access-control-allow-origin").is_none());
    }
    let actual = call(
        api.address,
        "GET",
        "/sinks",
        &[("origin", "https://ui.example")],
        None,
    )
    .await;
    assert_eq!(actual.status, StatusCode::OK);
    assert_eq!(
        header(&actual, "access-control-allow-origin").as_deref(),
        Some("https://ui.example")
    );
    assert_eq!(
        header(&actual, "access-control-expose-headers").as_deref(),
        Some("x-total")
    );
    assert_eq!(header(&actual, "vary").as_deref(), Some("origin"));
    let foreign = call(
        api.address,
        "GET",
        "/sinks",
        &[("origin", "https://evil.example")],
        None,
    )
    .await;
    assert!(header(&foreign, "access-control-allow-origin").is_none());
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_self_signed_certificate() {
    use tokio_rustls::rustls;
    let dir = temp_dir("http-api-tls");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let api = fixture(|config| {
        config.tls.enabled = true;
        config.tls.cert_file = cert.display().to_string();
        config.tls.key_file = key.display().to_string();
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(api.address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let reply = send(TokioIo::new(tls), "GET", "/health", &[], None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["status"], "healthy");
    // Plain HTTP to the TLS port gets no answer.
    let plain = tokio::net::TcpStream::connect(api.address).await.unwrap();
    let handshake =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(plain)).await;
    if let Ok((mut sender, connection)) = handshake {
        tokio::spawn(connection);
        let request = Request::get("/health")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert!(sender.send_request(request).await.is_err());
    }
    api.stop().await;
}

#[tokio::test]
async fn bind_and_tls_failures_are_errors_not_panics() {
    let runtime_target = TestTarget::from_env().await.unwrap();
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bus = IggyBus::connect(&IggySettings {
        connect_retries: 1,
        reconnect_interval: Duration::from_millis(50),
        ..IggySettings::new(runtime_target.address.clone())
    })
    .await
    .unwrap();
    let dir = temp_dir("http-api-bind");
    let runtime = Runtime::start(
        Default::default(),
        PluginRegistry::new(PluginLoader::new()),
        RuntimeContext::new(Arc::new(bus), StateStore::new(&dir), &Default::default()),
    )
    .await;
    let provider: Arc<dyn ConfigProvider> =
        Arc::new(LocalProvider::open(&dir, &Default::default()).unwrap());
    let mut config = HttpConfig {
        address: taken.local_addr().unwrap().to_string(),
        ..HttpConfig::default()
    };
    let api = || http_api::ApiContext::new(runtime.clone(), provider.clone(), config.clone());
    let error = http_api::serve(&config, api()).await.unwrap_err();
    assert!(
        matches!(error, http_api::ServeError::Bind { .. }),
        "{error}"
    );
    assert!(error.to_string().contains(&config.address), "{error}");

    config.address = "127.0.0.1:0".to_owned();
    config.tls.enabled = true;
    config.tls.cert_file = dir.join("missing.pem").display().to_string();
    config.tls.key_file = dir.join("missing-key.pem").display().to_string();
    let api = http_api::ApiContext::new(runtime.clone(), provider.clone(), config.clone());
    let error = http_api::serve(&config, api).await.unwrap_err();
    assert!(matches!(error, http_api::ServeError::Tls(_)), "{error}");
    assert!(error.to_string().contains("missing.pem"), "{error}");
    runtime.shutdown(Duration::from_secs(5)).await;
}

/// The OpenAPI document lists exactly the routes the router serves, with their methods.
#[test]
fn openapi_document_matches_the_routes() {
    let document: Value = serde_json::from_str(http_api::OPENAPI).unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| *m != "parameters")
        {
            documented.insert((path.clone(), method.to_uppercase()));
        }
    }
    let mut served = std::collections::BTreeSet::new();
    for spec in &http_api::ROUTES {
        for kind in ["sinks", "sources"] {
            for method in spec.methods {
                served.insert((spec.path.replace("{kind}", kind), method.to_string()));
            }
        }
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented routes nobody serves: {unserved:?}"
    );
}

/// The sink's partition belongs to a group member that reads nothing (a client that
/// joined first and hangs; after a killed server, a member nobody is behind): the sink
/// has unread messages and delivers nothing, so `/ready` answers 503 naming it and
/// `/sinks/file` says `stalled`; then the sink resets its group by itself, delivers,
/// and the runtime is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_makes_the_runtime_unready_until_it_recovers_by_itself() {
    use iggy::prelude::{ConsumerGroupClient, Identifier};
    let target = TestTarget::from_env().await.unwrap();
    let stream = unique("api");
    let squatter = iggy_connectors_tests::iggy_client(&target.address)
        .await
        .unwrap();
    iggy_connectors_tests::create_topic(&squatter, &stream, "t", 1)
        .await
        .unwrap();
    let (stream_id, topic_id, group) = (
        Identifier::named(&stream).unwrap(),
        Identifier::named("t").unwrap(),
        "iggy-connect-sink-file",
    );
    squatter
        .create_consumer_group(&stream_id, &topic_id, group)
        .await
        .unwrap();
    squatter
        .join_consumer_group(&stream_id, &topic_id, &Identifier::named(group).unwrap())
        .await
        .unwrap();
    // Reported before it is reset, so that the test sees both.
    let stall = StallPolicy {
        report_after: Duration::from_secs(1),
        reset_group_after: Duration::from_secs(4),
    };
    let fixture = fixture_on(target, &stream, stall, with_key).await;
    let delivered = |value: &Value| value["metrics"]["messages_out"].as_u64().unwrap_or(0);
    let unready = fixture
        .eventually_json("/ready", "the runtime unready", |ready| {
            ready["reasons"].as_array().is_some_and(|reasons| {
                reasons.iter().any(|reason| {
                    reason
                        .as_str()
                        .is_some_and(|reason| reason.starts_with("sink file is stalled"))
                })
            })
        })
        .await;
    assert_eq!(unready["ready"], false, "{unready}");
    assert_eq!(
        fixture.get("/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let stalled = fixture.get("/sinks/file").await.json();
    assert_eq!(stalled["status"], "stalled", "{stalled}");
    assert_eq!(delivered(&stalled), 0, "{stalled}");
    assert!(
        stalled["metrics"]["lag"].as_u64().unwrap_or(0) > 0,
        "{stalled}"
    );
    let recovered = fixture
        .eventually_json("/sinks/file", "the sink delivering", |sink| {
            sink["status"] == "running" && delivered(sink) > 0
        })
        .await;
    assert!(
        recovered["metrics"]["group_resets"].as_u64().unwrap_or(0) >= 1,
        "{recovered}"
    );
    fixture
        .eventually_json("/ready", "the runtime ready again", |ready| {
            ready["ready"] == true
        })
        .await;
    fixture.stop().await;
    drop(squatter);
}
