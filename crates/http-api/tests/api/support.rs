//! Shared helpers: HTTP requests over plain TCP or any stream, and a running API over a
//! runtime with a random source and a file sink.

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
use serde_json::Value;

pub(crate) const DEADLINE: Duration = Duration::from_secs(60);
pub(crate) const KEY: &str = "s3cr3t-key";

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text()))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request over a fresh connection (plain TCP).
pub(crate) async fn call(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    send(TokioIo::new(stream), method, path, headers, body).await
}

pub(crate) async fn send<I>(
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
pub(crate) struct Fixture {
    pub(crate) address: std::net::SocketAddr,
    runtime: Runtime,
    server: http_api::ApiServer,
    pub(crate) dir: PathBuf,
    _target: TestTarget,
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

pub(crate) fn sink_toml(stream: &str, output: &Path) -> String {
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

pub(crate) async fn fixture(http: impl FnOnce(&mut HttpConfig)) -> Fixture {
    fixture_on(
        TestTarget::from_env().await.unwrap(),
        &unique("api"),
        StallPolicy::default(),
        http,
    )
    .await
}

/// [`fixture`] on `target` and `stream`, with sinks stalling as `stall` says.
pub(crate) async fn fixture_on(
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
        memory_budget: config_provider::DEFAULT_MEMORY_BUDGET,
        cluster: None,
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
    pub(crate) async fn get(&self, path: &str) -> Reply {
        call(self.address, "GET", path, &[("api-key", KEY)], None).await
    }

    pub(crate) async fn send(&self, method: &str, path: &str, body: Value) -> Reply {
        call(
            self.address,
            method,
            path,
            &[("api-key", KEY), ("content-type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub(crate) async fn eventually_json(
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

    pub(crate) async fn stop(self) {
        self.server.shutdown().await;
        self.runtime.shutdown(Duration::from_secs(10)).await;
    }
}

pub(crate) fn with_key(config: &mut HttpConfig) {
    config.api_key = KEY.to_owned();
}
