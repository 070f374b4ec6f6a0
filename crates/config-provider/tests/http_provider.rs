//! The HTTP provider against an in-test hyper server: templates, headers, response
//! paths, retries, timeouts.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use config_provider::{
    ConfigDuration, ConfigProvider, ConnectorConfig, HttpProvider, HttpProviderConfig,
    ProviderError, ResponseConfig, RetryConfig, UrlTemplates, parse_connector_toml,
};
use connector_sdk::ConnectorKind;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
}

type Responder = dyn Fn(&Recorded, usize) -> (StatusCode, String, Duration) + Send + Sync;

struct MockService {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl MockService {
    async fn start(
        responder: impl Fn(&Recorded, usize) -> (StatusCode, String, Duration) + Send + Sync + 'static,
    ) -> Self {
        Self::start_with_tls(None, responder).await
    }

    async fn start_with_tls(
        tls: Option<tokio_rustls::TlsAcceptor>,
        responder: impl Fn(&Recorded, usize) -> (StatusCode, String, Duration) + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let responder: Arc<Responder> = Arc::new(responder);
        let recorded = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let recorded = recorded.clone();
                let responder = responder.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let recorded = recorded.clone();
                            let responder = responder.clone();
                            async move {
                                let method = request.method().to_string();
                                let path = request
                                    .uri()
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default();
                                let headers = request
                                    .headers()
                                    .iter()
                                    .map(|(name, value)| {
                                        (name.to_string(), value.to_str().unwrap_or("").to_owned())
                                    })
                                    .collect();
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                let entry = Recorded {
                                    method,
                                    path,
                                    headers,
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                };
                                let attempt = {
                                    let mut all = recorded.lock().unwrap();
                                    all.push(entry.clone());
                                    all.iter()
                                        .filter(|r| {
                                            r.path == entry.path && r.method == entry.method
                                        })
                                        .count()
                                };
                                let (status, body, delay) = responder(&entry, attempt);
                                tokio::time::sleep(delay).await;
                                let response = Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap();
                                Ok::<_, Infallible>(response)
                            }
                        },
                    );
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        MockService { address, requests }
    }

    fn base_url(&self) -> String {
        format!("http://{}/api", self.address)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn config(base_url: String) -> HttpProviderConfig {
    HttpProviderConfig {
        base_url,
        strict: false,
        timeout: ConfigDuration::from_secs(5),
        request_headers: BTreeMap::new(),
        retry: RetryConfig {
            enabled: true,
            max_attempts: 3,
            initial_backoff: ConfigDuration::from_millis(10),
            max_backoff: ConfigDuration::from_millis(20),
            backoff_multiplier: 2,
        },
        url_templates: UrlTemplates::default(),
        response: ResponseConfig::default(),
    }
}

fn sink_json(key: &str, version: u64) -> serde_json::Value {
    serde_json::json!({
        "key": key, "enabled": true, "version": version, "name": "Stdout",
        "path": "libiggy_connector_stdout_sink",
        "streams": [{ "stream": "s", "topics": ["t"], "schema": "json" }],
        "plugin_config": { "print_payload": true }
    })
}

fn sink_config() -> ConnectorConfig {
    parse_connector_toml(
        "type = \"sink\"\nkey = \"ignored\"\nenabled = true\nversion = 0\nname = \"n\"\npath = \"p\"\n[[streams]]\nstream = \"s\"\ntopics = [\"t\"]\nschema = \"json\"\n",
    )
    .unwrap()
}

fn ok(body: serde_json::Value) -> (StatusCode, String, Duration) {
    (StatusCode::OK, body.to_string(), Duration::ZERO)
}

fn config_json(kind: &str, key: &str, version: u64) -> serde_json::Value {
    if kind == "sink" {
        sink_json(key, version)
    } else {
        serde_json::json!({
            "key": key, "enabled": true, "version": version, "name": "R", "path": "p",
            "streams": [{ "stream": "s", "topic": "t", "schema": "json" }]
        })
    }
}

#[tokio::test]
async fn every_template_and_header_is_used() {
    let service = MockService::start(|request, _| {
        let path = request
            .path
            .strip_prefix("/api/v2/")
            .unwrap_or_default()
            .to_owned();
        let parts: Vec<&str> = path.split(['/', '?']).collect();
        match (request.method.as_str(), parts.as_slice()) {
            ("GET", ["active"]) => ok(serde_json::json!({
                "sinks": { "out": config_json("sink", "out", 3) },
                "sources": { "in": config_json("source", "in", 1) }
            })),
            ("GET", ["versions"]) => ok(serde_json::json!({
                "sinks": { "out": { "version": 3, "created_at": "2026-11-28T00:00:00Z" } },
                "sources": {}
            })),
            ("GET", [kind, key, "all"]) => ok(serde_json::json!([
                config_json(kind, key, 1),
                config_json(kind, key, 3)
            ])),
            ("GET", [kind, key, "v", version]) => {
                ok(config_json(kind, key, version.parse().unwrap()))
            }
            ("GET", [kind, key, "current"]) => ok(config_json(kind, key, 3)),
            ("POST", [kind, key, "new"]) => ok(config_json(kind, key, 4)),
            ("PUT", [_, _, "activate"]) => ok(serde_json::json!({})),
            ("DELETE", [_, _, "remove", "version=2"]) => {
                (StatusCode::NO_CONTENT, String::new(), Duration::ZERO)
            }
            _ => (StatusCode::NOT_FOUND, String::new(), Duration::ZERO),
        }
    })
    .await;
    let mut settings = config(service.base_url());
    settings
        .request_headers
        .insert("api-key".to_owned(), "secret-key".to_owned());
    settings
        .request_headers
        .insert("x-tenant".to_owned(), "t1".to_owned());
    let template = |path: &str| Some(format!("/v2{path}"));
    settings.url_templates = UrlTemplates {
        get_active_configs: template("/active"),
        get_active_versions: template("/versions"),
        get_sink_configs: template("/sink/{key}/all"),
        get_sink_config: template("/sink/{key}/v/{version}"),
        get_active_sink_config: template("/sink/{key}/current"),
        create_sink: template("/sink/{key}/new"),
        set_active_sink: template("/sink/{key}/activate"),
        delete_sink_config: template("/sink/{key}/remove"),
        get_source_configs: template("/source/{key}/all"),
        get_source_config: template("/source/{key}/v/{version}"),
        get_active_source_config: template("/source/{key}/current"),
        create_source: template("/source/{key}/new"),
        set_active_source: template("/source/{key}/activate"),
        delete_source_config: template("/source/{key}/remove"),
    };
    let provider = HttpProvider::new(settings);

    let active = provider.active_configs().await.unwrap();
    assert_eq!(active.sinks["out"].common().version, 3);
    assert_eq!(active.sources["in"].kind(), ConnectorKind::Source);
    let versions = provider.active_versions().await.unwrap();
    assert_eq!(versions.sinks["out"], 3);
    for (kind, key, name) in [
        (ConnectorKind::Sink, "out", "sink"),
        (ConnectorKind::Source, "in", "source"),
    ] {
        let all = provider.versions(kind, key).await.unwrap();
        assert_eq!(
            all.iter()
                .map(|config| config.common().version)
                .collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(
            provider
                .version(kind, key, 3)
                .await
                .unwrap()
                .common()
                .version,
            3
        );
        assert_eq!(provider.active(kind, key).await.unwrap().kind(), kind);
        let mut new = if kind == ConnectorKind::Sink {
            sink_config()
        } else {
            serde_json::from_value(serde_json::json!({
                "type": "source", "key": "x", "enabled": true, "version": 0, "name": "n", "path": "p",
                "streams": [{ "stream": "s", "topic": "t", "schema": "json" }]
            }))
            .unwrap()
        };
        let common = new.common_mut();
        common.key = "ignored".to_owned();
        common.version = 0;
        assert_eq!(
            provider
                .create(kind, key, new)
                .await
                .unwrap()
                .common()
                .version,
            4
        );
        provider.set_active(kind, key, 3).await.unwrap();
        provider.delete(kind, key, Some(2)).await.unwrap();
        let expected: Vec<(String, String)> = [
            ("GET", format!("/api/v2/{name}/{key}/all")),
            ("GET", format!("/api/v2/{name}/{key}/v/3")),
            ("GET", format!("/api/v2/{name}/{key}/current")),
            ("POST", format!("/api/v2/{name}/{key}/new")),
            ("PUT", format!("/api/v2/{name}/{key}/activate")),
            ("DELETE", format!("/api/v2/{name}/{key}/remove?version=2")),
        ]
        .into_iter()
        .map(|(method, path)| (method.to_owned(), path))
        .collect();
        let seen: Vec<(String, String)> = service
            .requests()
            .iter()
            .filter(|r| r.path.contains(&format!("/{name}/")))
            .map(|r| (r.method.clone(), r.path.clone()))
            .collect();
        assert_eq!(seen, expected);
    }

    let requests = service.requests();
    assert_eq!(requests.len(), 2 + 2 * 6);
    for request in &requests {
        assert_eq!(
            request.headers.get("api-key").map(String::as_str),
            Some("secret-key"),
            "{request:?}"
        );
        assert_eq!(
            request.headers.get("x-tenant").map(String::as_str),
            Some("t1"),
            "{request:?}"
        );
    }
    let created = requests.iter().find(|r| r.method == "POST").unwrap();
    let created: serde_json::Value = serde_json::from_str(&created.body).unwrap();
    assert!(
        created.get("key").is_none()
            && created.get("version").is_none()
            && created.get("type").is_none(),
        "{created}"
    );
    assert_eq!(created["streams"][0]["topics"], serde_json::json!(["t"]));
    let activated = requests.iter().find(|r| r.method == "PUT").unwrap();
    assert_eq!(activated.body, r#"{"version":3}"#);
}

#[test]
fn default_templates_are_the_readme_ones() {
    let readme = [
        ("create_sink", "/sinks/{key}/configs"),
        ("create_source", "/sources/{key}/configs"),
        ("get_active_configs", "/configs/active"),
        ("get_active_versions", "/configs/active/versions"),
        ("set_active_sink", "/sinks/{key}/configs/active"),
        ("set_active_source", "/sources/{key}/configs/active"),
        ("get_sink_configs", "/sinks/{key}/configs"),
        ("get_sink_config", "/sinks/{key}/configs/{version}"),
        ("get_active_sink_config", "/sinks/{key}/configs/active"),
        ("get_source_configs", "/sources/{key}/configs"),
        ("get_source_config", "/sources/{key}/configs/{version}"),
        ("get_active_source_config", "/sources/{key}/configs/active"),
        ("delete_sink_config", "/sinks/{key}/configs"),
        ("delete_source_config", "/sources/{key}/configs"),
    ];
    assert_eq!(UrlTemplates::DEFAULTS, readme);
}

#[tokio::test]
async fn default_templates_match_the_readme() {
    let service = MockService::start(|request, _| match request.path.as_str() {
        "/api/configs/active" => ok(serde_json::json!({})),
        "/api/sources/random/configs/active" => ok(serde_json::json!({
            "key": "random", "enabled": true, "version": 2, "name": "R", "path": "p", "type": "source",
            "streams": [{ "stream": "s", "topic": "t", "schema": "json" }]
        })),
        _ => (StatusCode::NOT_FOUND, String::new(), Duration::ZERO),
    })
    .await;
    let provider = HttpProvider::new(config(service.base_url()));
    let active = provider.active_configs().await.unwrap();
    assert!(active.sinks.is_empty() && active.sources.is_empty());
    let source = provider
        .active(ConnectorKind::Source, "random")
        .await
        .unwrap();
    assert_eq!(source.common().version, 2);
    let missing = provider
        .version(ConnectorKind::Sink, "random", 9)
        .await
        .unwrap_err();
    assert!(
        matches!(
            missing,
            ProviderError::NotFound {
                version: Some(9),
                ..
            }
        ),
        "{missing}"
    );
    let paths: Vec<String> = service.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/api/configs/active",
            "/api/sources/random/configs/active",
            "/api/sinks/random/configs/9"
        ]
    );
}

#[tokio::test]
async fn data_path_and_error_path() {
    let service = MockService::start(|request, _| match request.path.as_str() {
        "/api/sinks/good/configs/active" => {
            ok(serde_json::json!({ "data": { "config": sink_json("good", 5) }, "error": null }))
        }
        "/api/sinks/bad/configs/active" => {
            ok(serde_json::json!({ "data": null, "error": "tenant suspended" }))
        }
        "/api/sinks/odd/configs/active" => ok(serde_json::json!({ "payload": {}, "error": null })),
        _ => (StatusCode::NOT_FOUND, String::new(), Duration::ZERO),
    })
    .await;
    let mut settings = config(service.base_url());
    settings.response = ResponseConfig {
        data_path: Some("data.config".to_owned()),
        error_path: Some("error".to_owned()),
    };
    let provider = HttpProvider::new(settings);
    assert_eq!(
        provider
            .active(ConnectorKind::Sink, "good")
            .await
            .unwrap()
            .common()
            .version,
        5
    );
    let error = provider
        .active(ConnectorKind::Sink, "bad")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("API returned error: tenant suspended"),
        "{error}"
    );
    let error = provider
        .active(ConnectorKind::Sink, "odd")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("data_path `data.config` is not in the response"),
        "{error}"
    );
    assert!(error.contains("payload"), "{error}");
}

#[tokio::test]
async fn transient_failures_are_retried_and_others_are_not() {
    let service = MockService::start(|request, attempt| match request.path.as_str() {
        // Fails twice, then succeeds.
        "/api/sinks/flaky/configs/active" if attempt <= 2 => (
            StatusCode::SERVICE_UNAVAILABLE,
            "busy".to_owned(),
            Duration::ZERO,
        ),
        "/api/sinks/flaky/configs/active" => ok(sink_json("flaky", 1)),
        "/api/sinks/limited/configs/active" if attempt == 1 => {
            (StatusCode::TOO_MANY_REQUESTS, String::new(), Duration::ZERO)
        }
        "/api/sinks/limited/configs/active" => ok(sink_json("limited", 1)),
        "/api/sinks/down/configs/active" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failure {attempt}"),
            Duration::ZERO,
        ),
        "/api/sinks/refused/configs" => (
            StatusCode::BAD_REQUEST,
            "bad request".to_owned(),
            Duration::ZERO,
        ),
        _ => (StatusCode::NOT_FOUND, String::new(), Duration::ZERO),
    })
    .await;
    let provider = HttpProvider::new(config(service.base_url()));
    let sink = ConnectorKind::Sink;
    assert_eq!(
        provider
            .active(sink, "flaky")
            .await
            .unwrap()
            .common()
            .version,
        1
    );
    assert_eq!(
        provider
            .active(sink, "limited")
            .await
            .unwrap()
            .common()
            .version,
        1
    );
    let error = provider.active(sink, "down").await.unwrap_err().to_string();
    assert!(
        error.contains("HTTP 500 Internal Server Error - failure 3"),
        "the last error: {error}"
    );
    let missing = provider.active(sink, "absent").await.unwrap_err();
    assert!(
        matches!(missing, ProviderError::NotFound { .. }),
        "{missing}"
    );
    let error = provider
        .versions(sink, "refused")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("HTTP 400"), "{error}");

    let count = |path: &str| service.requests().iter().filter(|r| r.path == path).count();
    assert_eq!(count("/api/sinks/flaky/configs/active"), 3);
    assert_eq!(count("/api/sinks/limited/configs/active"), 2);
    assert_eq!(
        count("/api/sinks/down/configs/active"),
        3,
        "gives up after max_attempts"
    );
    assert_eq!(
        count("/api/sinks/absent/configs/active"),
        1,
        "a 404 is never retried"
    );
    assert_eq!(
        count("/api/sinks/refused/configs"),
        1,
        "a 400 is never retried"
    );
}

#[tokio::test]
async fn slow_answers_time_out() {
    let service =
        MockService::start(|_, _| (StatusCode::OK, "{}".to_owned(), Duration::from_secs(5))).await;
    let mut settings = config(service.base_url());
    settings.timeout = ConfigDuration::from_millis(200);
    settings.retry.enabled = false;
    let provider = HttpProvider::new(settings);
    let error = tokio::time::timeout(Duration::from_secs(10), provider.active_configs())
        .await
        .expect("the provider's own timeout fires first")
        .unwrap_err()
        .to_string();
    assert!(error.contains("no answer within 200ms"), "{error}");
    assert_eq!(service.requests().len(), 1);

    let unreachable = HttpProvider::new(config("http://127.0.0.1:9/api".to_owned()));
    let error = unreachable.active_configs().await.unwrap_err().to_string();
    assert!(error.contains("cannot connect"), "{error}");
}

#[tokio::test]
async fn https_with_a_private_ca() {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let service =
        MockService::start_with_tls(Some(acceptor), |_, _| ok(serde_json::json!({}))).await;
    let base_url = format!("https://localhost:{}/api", service.address.port());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let trusting = HttpProvider::with_roots(config(base_url.clone()), roots);
    trusting.active_configs().await.unwrap();
    assert_eq!(service.requests().len(), 1);

    let mut strict_config = config(base_url);
    strict_config.retry.enabled = false;
    let error = HttpProvider::new(strict_config)
        .active_configs()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("TLS handshake failed"),
        "an unknown CA is refused: {error}"
    );
}
