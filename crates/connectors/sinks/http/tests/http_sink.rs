//! The HTTP sink against a receiver started in the test: the exact requests of each
//! batch mode, the retry rules (Retry-After, transient against refused), per-message
//! errors, size limits, TLS, and upstream's config file.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

#[path = "../../../../../tests/support/fixtures.rs"]
mod fixtures;
#[path = "support/receiver.rs"]
mod receiver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use connector_sdk::testing::{SinkHarness, TestBatch, TestMessage};
use connector_sdk::{ErrorKind, HeaderKind, OwnedHeader, Schema};
use iggy_connector_http_sink::{BatchMode, HttpMethod, HttpSink, HttpSinkConfig};
use receiver::{Receiver, Reply};
use serde_json::{Value, json};

fn config(url: &str, extra: Value) -> Value {
    let mut config = json!({ "url": url, "retry_delay": "10ms", "max_retry_delay": "100ms" });
    if let (Some(config), Value::Object(extra)) = (config.as_object_mut(), extra) {
        config.extend(extra);
    }
    config
}

fn two_json_messages() -> TestBatch {
    TestBatch::new()
        .stream("orders")
        .topic("created")
        .partition_id(3)
        .first_offset(10)
        .message(
            TestMessage::json(json!({"n": 1}))
                .id(0xab)
                .header(OwnedHeader::string("trace", "t-1")),
        )
        .message(TestMessage::json(json!({"n": 2})))
}

/// The envelope upstream sends for a message of `two_json_messages`.
fn envelope(offset: u64, id: &str, payload: Value, headers: Option<Value>) -> Value {
    let mut metadata = json!({
        "iggy_id": id,
        "iggy_offset": offset,
        "iggy_timestamp": connector_sdk::testing::BASE_TIMESTAMP + offset,
        "iggy_stream": "orders",
        "iggy_topic": "created",
        "iggy_partition_id": 3,
    });
    if let Some(headers) = headers {
        metadata["iggy_headers"] = headers;
    }
    json!({ "metadata": metadata, "payload": payload })
}

fn first_envelope() -> Value {
    envelope(
        10,
        "000000000000000000000000000000ab",
        json!({"n": 1}),
        Some(json!({"trace": "t-1"})),
    )
}

fn second_envelope() -> Value {
    // The harness gives a message with no id the id offset + 1.
    envelope(
        11,
        "0000000000000000000000000000000c",
        json!({"n": 2}),
        None,
    )
}

#[tokio::test]
async fn upstream_config_file_passes_the_plugin_check_unchanged() {
    let path = fixtures::upstream_connectors_dir().join("http_sink.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap();
    let plugin_config = serde_json::to_value(&file["plugin_config"]).unwrap();
    assert_eq!(
        SinkHarness::<HttpSink>::validate(plugin_config.clone()),
        Vec::<String>::new()
    );
    let parsed: HttpSinkConfig = connector_sdk::parse_config(&plugin_config.to_string()).unwrap();
    assert_eq!(parsed.batch_mode, BatchMode::NdJson);
    assert_eq!(parsed.method, HttpMethod::Post);
    assert_eq!(parsed.timeout, Duration::from_secs(30));
    assert_eq!(parsed.max_retry_delay, Duration::from_secs(30));
    assert_eq!(parsed.headers["X-Custom-Header"], "custom-value");
}

#[tokio::test]
async fn defaults_are_upstreams() {
    let parsed: HttpSinkConfig =
        connector_sdk::parse_config(r#"{"url": "http://localhost/x"}"#).unwrap();
    assert_eq!(parsed.method, HttpMethod::Post);
    assert_eq!(parsed.batch_mode, BatchMode::Individual);
    assert_eq!(parsed.timeout, Duration::from_secs(30));
    assert_eq!(parsed.max_payload_size_bytes, 10 * 1024 * 1024);
    assert!(parsed.include_metadata);
    assert!(!parsed.include_checksum && !parsed.include_origin_timestamp);
    assert!(!parsed.health_check_enabled);
    assert_eq!(parsed.health_check_method, HttpMethod::Head);
    assert_eq!(parsed.max_retries, 3);
    assert_eq!(parsed.retry_delay, Duration::from_secs(1));
    assert_eq!(parsed.retry_backoff_multiplier, 2);
    assert_eq!(parsed.max_retry_delay, Duration::from_secs(30));
    assert_eq!(parsed.success_status_codes, [200, 201, 202, 204]);
    assert!(!parsed.tls_danger_accept_invalid_certs);
    assert_eq!(parsed.max_connections, 10);
    assert!(!parsed.verbose_logging);
}

#[tokio::test]
async fn bad_configs_are_refused_naming_the_key() {
    let problems = SinkHarness::<HttpSink>::validate(json!({
        "url": "ftp://host/x",
        "success_status_codes": [],
        "retry_delay": "1m",
        "max_retry_delay": "1s",
        "headers": {"bad header": "x"},
    }));
    let all = problems.join("\n");
    for key in [
        "plugin_config.url",
        "plugin_config.success_status_codes",
        "plugin_config.retry_delay",
        "plugin_config.headers",
    ] {
        assert!(all.contains(key), "{key} missing from {all}");
    }
    let typo = SinkHarness::<HttpSink>::validate(json!({"url": "http://h/", "batch_mod": "raw"}));
    assert!(typo.join("").contains("batch_mod"), "{typo:?}");
}

#[tokio::test]
async fn individual_mode_sends_one_envelope_per_message_with_the_headers() {
    let receiver = Receiver::start().await;
    let mut sink = SinkHarness::<HttpSink>::open(config(
        &receiver.url("/ingest"),
        json!({"method": "PUT", "headers": {"Authorization": "Bearer s3cret", "X-Custom": "v"}}),
    ))
    .await
    .unwrap();
    sink.consume(&two_json_messages()).await.unwrap();

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.method, "PUT");
        assert_eq!(request.path, "/ingest");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("authorization"), Some("Bearer s3cret"));
        assert_eq!(request.header("x-custom"), Some("v"));
    }
    let bodies: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(bodies, [first_envelope(), second_envelope()]);
    // Key order as upstream writes it: metadata first.
    assert!(requests[1].text().starts_with(r#"{"metadata":{"iggy_id":"#));
    sink.close().await.unwrap();
}

#[tokio::test]
async fn ndjson_mode_sends_the_batch_as_lines_in_one_request() {
    let receiver = Receiver::start().await;
    let mut sink = SinkHarness::<HttpSink>::open(config(
        &receiver.url("/bulk"),
        json!({"batch_mode": "ndjson"}),
    ))
    .await
    .unwrap();
    // A pretty-printed payload still takes one line.
    let batch = two_json_messages().message(TestMessage::new("{\n  \"n\": 3\n}"));
    sink.consume(&batch).await.unwrap();

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(
        requests[0].header("content-type"),
        Some("application/x-ndjson")
    );
    let text = requests[0].text();
    assert!(text.ends_with('\n'), "{text:?}");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let third = envelope(
        12,
        "0000000000000000000000000000000d",
        json!({"n": 3}),
        None,
    );
    assert_eq!(lines, [first_envelope(), second_envelope(), third]);
}

#[tokio::test]
async fn json_array_mode_sends_the_batch_as_one_array() {
    let receiver = Receiver::start().await;
    let mut sink = SinkHarness::<HttpSink>::open(config(
        &receiver.url("/bulk"),
        json!({"batch_mode": "json_array", "include_metadata": false}),
    ))
    .await
    .unwrap();
    sink.consume(&two_json_messages()).await.unwrap();

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    assert_eq!(requests[0].text(), r#"[{"n":1},{"n":2}]"#);
}

#[tokio::test]
async fn raw_mode_sends_each_payload_as_it_is() {
    let receiver = Receiver::start().await;
    let mut sink =
        SinkHarness::<HttpSink>::open(config(&receiver.url("/raw"), json!({"batch_mode": "raw"})))
            .await
            .unwrap();
    let batch = TestBatch::new()
        .schema(Schema::Raw)
        .message(TestMessage::new(vec![0u8, 159, 146, 150]))
        .message(TestMessage::new("plain"));
    sink.consume(&batch).await.unwrap();

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(&requests[0].body[..], [0u8, 159, 146, 150]);
    assert_eq!(&requests[1].body[..], b"plain");
}

#[tokio::test]
async fn payloads_that_are_not_json_go_as_base64_or_text_with_optional_metadata() {
    let receiver = Receiver::start().await;
    let mut sink = SinkHarness::<HttpSink>::open(config(
        &receiver.url("/x"),
        json!({"batch_mode": "ndjson", "include_checksum": true, "include_origin_timestamp": true}),
    ))
    .await
    .unwrap();
    let raw = TestBatch::new().schema(Schema::Raw).message(
        TestMessage::new(vec![0xffu8, 0x00])
            .checksum(42)
            .origin_timestamp(5)
            .header(OwnedHeader {
                key: "n".to_owned(),
                kind: HeaderKind::Uint32,
                value: 7u32.to_le_bytes().to_vec(),
            })
            .header(OwnedHeader {
                key: "bin".to_owned(),
                kind: HeaderKind::Raw,
                value: vec![1, 2],
            }),
    );
    sink.consume(&raw).await.unwrap();
    let text = TestBatch::new()
        .schema(Schema::Text)
        .message(TestMessage::new("héllo"));
    sink.consume(&text).await.unwrap();
    // A JSON stream whose payload does not parse is not sent as broken JSON.
    sink.consume(&TestBatch::of(["{not json"])).await.unwrap();

    let bodies: Vec<Value> = receiver
        .requests()
        .iter()
        .map(|r| serde_json::from_str(r.text().trim_end()).unwrap())
        .collect();
    assert_eq!(
        bodies[0]["payload"],
        json!({"data": "/wA=", "iggy_payload_encoding": "base64"})
    );
    assert_eq!(bodies[0]["metadata"]["iggy_checksum"], 42);
    assert_eq!(bodies[0]["metadata"]["iggy_origin_timestamp"], 5);
    assert_eq!(
        bodies[0]["metadata"]["iggy_headers"],
        json!({"n": "7", "bin": {"data": "AQI=", "iggy_header_encoding": "base64"}})
    );
    assert_eq!(bodies[1]["payload"], "héllo");
    assert_eq!(
        bodies[2]["payload"],
        json!({"data": "e25vdCBqc29u", "iggy_payload_encoding": "base64"})
    );
}

#[tokio::test]
async fn a_batch_over_the_size_limit_is_split_and_a_message_over_it_refused() {
    let receiver = Receiver::start().await;
    let mut sink = SinkHarness::<HttpSink>::open(config(
        &receiver.url("/x"),
        json!({"batch_mode": "json_array", "include_metadata": false, "max_payload_size_bytes": 40}),
    ))
    .await
    .unwrap();
    let payloads: Vec<String> = (0..10).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    sink.consume(&TestBatch::of(payloads.clone()))
        .await
        .unwrap();
    let requests = receiver.requests();
    assert!(requests.len() > 1, "split into {} requests", requests.len());
    let mut received = Vec::new();
    for request in &requests {
        assert!(request.body.len() <= 40, "{}", request.text());
        let values: Vec<Value> = serde_json::from_slice(&request.body).unwrap();
        received.extend(values);
    }
    let expected: Vec<Value> = payloads
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert_eq!(received, expected, "every message once, in order");

    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(100));
    let error = sink
        .consume(&TestBatch::of([r#"{"n":1}"#.to_owned(), big]).first_offset(7))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert!(error.message().contains("offset 8"), "{error}");
    assert_eq!(
        receiver.requests().len(),
        requests.len(),
        "nothing of a batch with a message too large is sent"
    );
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_delivered() {
    let receiver = Receiver::answering(|_, number| {
        if number == 1 {
            Reply::status(429, "slow down").header("retry-after", "1")
        } else {
            Reply::ok()
        }
    })
    .await;
    // The backoff alone would retry after 10 ms; the server asked for a second.
    let mut sink = SinkHarness::<HttpSink>::open(config(
        &receiver.url("/x"),
        json!({"batch_mode": "ndjson", "max_retry_delay": "5s"}),
    ))
    .await
    .unwrap();
    let started = Instant::now();
    sink.consume(&two_json_messages()).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After: 1 honoured, waited {waited:?}"
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body, "the same request again");
}

#[tokio::test]
async fn failures_that_outlast_the_retries_are_retryable_for_the_runtime() {
    // 503 forever, then a healthy endpoint: the batch is not lost, the runtime's retry
    // delivers it.
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    let receiver = Receiver::answering(move |_, _| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::ok()
        } else {
            Reply::status(503, "down")
        }
    })
    .await;
    let mut sink = SinkHarness::<HttpSink>::open(config(
        &receiver.url("/x"),
        json!({"batch_mode": "ndjson", "max_retries": 2}),
    ))
    .await
    .unwrap();
    let error = sink.consume(&two_json_messages()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Retryable, "{error}");
    assert!(error.message().contains("after 3 attempts"), "{error}");
    assert!(error.message().contains("503"), "{error}");
    assert_eq!(receiver.count(), 3, "one request and two retries");

    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    sink.consume(&two_json_messages()).await.unwrap();
    let last = receiver.requests().pop().unwrap();
    assert_eq!(last.text().lines().count(), 2);

    // Nobody listening: a connection error is transient too.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x", closed.local_addr().unwrap());
    drop(closed);
    let mut sink = SinkHarness::<HttpSink>::open(config(&url, json!({"max_retries": 1})))
        .await
        .unwrap();
    let error = sink.consume(&two_json_messages()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Retryable, "{error}");
    assert!(error.message().contains("cannot connect"), "{error}");
}

#[tokio::test]
async fn a_request_that_gets_no_answer_in_time_is_transient() {
    let receiver = Receiver::answering(|_, number| {
        let mut reply = Reply::ok();
        if number == 1 {
            reply.delay = Duration::from_secs(5);
        }
        reply
    })
    .await;
    let mut sink = SinkHarness::<HttpSink>::open(config(
        &receiver.url("/x"),
        json!({"timeout": "200ms", "batch_mode": "ndjson"}),
    ))
    .await
    .unwrap();
    sink.consume(&two_json_messages()).await.unwrap();
    assert_eq!(receiver.count(), 2, "timed out once, then delivered");
}

#[tokio::test]
async fn a_4xx_is_a_permanent_error_of_the_messages_it_names() {
    // The endpoint refuses any body with "bad" in it.
    let receiver = Receiver::answering(|request, _| {
        if request.text().contains("bad") {
            Reply::status(422, "field `bad` is not allowed")
        } else {
            Reply::status(201, "")
        }
    })
    .await;
    let mut sink =
        SinkHarness::<HttpSink>::open(config(&receiver.url("/x"), json!({"batch_mode": "ndjson"})))
            .await
            .unwrap();
    let batch = TestBatch::of([r#"{"ok":1}"#, r#"{"bad":2}"#, r#"{"ok":3}"#]).first_offset(20);
    let error = sink.consume(&batch).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent, "not retried: {error}");
    assert_eq!(receiver.count(), 1, "a 4xx is not retried");
    for part in ["offsets 20..=22", "422", "field `bad` is not allowed"] {
        assert!(error.message().contains(part), "{part} missing: {error}");
    }

    // What the runtime does next under `skip` or `dead_letter`: the batch's messages
    // one at a time. Only the bad one fails, and its error names it.
    let mut failed = Vec::new();
    for offset in 20..23 {
        let payload = [r#"{"ok":1}"#, r#"{"bad":2}"#, r#"{"ok":3}"#][(offset - 20) as usize];
        let single = TestBatch::of([payload]).first_offset(offset);
        if let Err(error) = sink.consume(&single).await {
            assert_eq!(error.kind(), ErrorKind::Permanent);
            assert!(
                error
                    .message()
                    .contains(&format!("offsets {offset}..={offset}"))
            );
            failed.push(offset);
        }
    }
    assert_eq!(failed, [21]);
}

#[tokio::test]
async fn url_placeholders_take_the_batch_s_stream_topic_and_partition() {
    let receiver = Receiver::start().await;
    let mut sink = SinkHarness::<HttpSink>::open(config(
        &receiver.url("/t/{stream}/{topic}/{partition}"),
        json!({"batch_mode": "ndjson"}),
    ))
    .await
    .unwrap();
    sink.consume(&two_json_messages().stream("a b"))
        .await
        .unwrap();
    assert_eq!(receiver.requests()[0].path, "/t/a%20b/created/3");
}

#[tokio::test]
async fn the_health_check_must_pass_for_the_sink_to_open() {
    let receiver = Receiver::answering(|request, _| {
        if request.method == "HEAD" {
            Reply::status(404, "")
        } else {
            Reply::ok()
        }
    })
    .await;
    let error = SinkHarness::<HttpSink>::open(config(
        &receiver.url("/x"),
        json!({"health_check_enabled": true}),
    ))
    .await
    .unwrap_err();
    assert!(error.message().contains("404"), "{error}");
    SinkHarness::<HttpSink>::open(config(
        &receiver.url("/x"),
        json!({"health_check_enabled": true, "health_check_method": "GET"}),
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn https_is_verified_against_the_configured_ca() {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("http-sink-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, certified.cert.pem()).unwrap();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let receiver = Receiver::start_with(Some(acceptor), true, |_, _| Reply::ok()).await;
    let url = format!("https://localhost:{}/secure", receiver.address.port());

    let mut trusting = SinkHarness::<HttpSink>::open(config(
        &url,
        json!({"tls_ca_file": ca_file, "batch_mode": "ndjson"}),
    ))
    .await
    .unwrap();
    trusting.consume(&two_json_messages()).await.unwrap();
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(receiver.requests()[0].text().lines().count(), 2);
    // A server that offers no ALPN protocol is spoken to as before.
    assert_eq!(receiver.requests()[0].version, "HTTP/1.1");

    // The public roots do not know the test CA: refused, as a transient error (a
    // certificate can be fixed without losing the batch).
    let mut strict = SinkHarness::<HttpSink>::open(config(&url, json!({"max_retries": 0})))
        .await
        .unwrap();
    let error = strict.consume(&two_json_messages()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Retryable);
    assert!(error.message().contains("TLS handshake"), "{error}");
    assert_eq!(receiver.requests().len(), 1, "nothing sent without trust");

    let mut careless = SinkHarness::<HttpSink>::open(config(
        &url,
        json!({"tls_danger_accept_invalid_certs": true}),
    ))
    .await
    .unwrap();
    careless.consume(&two_json_messages()).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A receiver over TLS with a certificate for `localhost` signed by a CA of the
/// test's own (rcgen), offering `h2` and `http/1.1` by ALPN when `offer_h2`; and the
/// CA's PEM file, in `dir`.
async fn tls_receiver(dir: &std::path::Path, offer_h2: bool) -> (Receiver, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use tokio_rustls::rustls;
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    if offer_h2 {
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let receiver = Receiver::start_with(Some(acceptor), true, |_, _| Reply::ok()).await;
    (receiver, ca_file)
}

/// A TLS server that offers `h2` by ALPN is spoken to in HTTP/2 (the receiver records
/// the version hyper's server saw), with the same bodies and headers as over HTTP/1.1;
/// one that offers only `http/1.1` keeps HTTP/1.1.
#[tokio::test]
async fn https_speaks_http2_when_the_server_offers_it() {
    let dir = std::env::temp_dir().join(format!("http-sink-h2-{}", std::process::id()));
    for (offer_h2, expected) in [(true, "HTTP/2.0"), (false, "HTTP/1.1")] {
        let (receiver, ca_file) = tls_receiver(&dir.join(expected), offer_h2).await;
        let url = format!("https://localhost:{}/h2", receiver.address.port());
        let mut sink = SinkHarness::<HttpSink>::open(config(
            &url,
            json!({"tls_ca_file": ca_file, "batch_mode": "ndjson", "headers": {"x-tenant": "t1"}}),
        ))
        .await
        .unwrap();
        for _ in 0..3 {
            sink.consume(&two_json_messages()).await.unwrap();
        }
        let requests = receiver.requests();
        assert_eq!(requests.len(), 3);
        for request in &requests {
            assert_eq!(request.version, expected);
            assert_eq!(request.path, "/h2");
            assert_eq!(request.header("x-tenant"), Some("t1"));
            assert_eq!(request.header("content-type"), Some("application/x-ndjson"));
            assert_eq!(request.text().lines().count(), 2);
        }
        sink.close().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `http2_prior_knowledge` speaks HTTP/2 to a plain `http://` endpoint (h2c) from the
/// first byte; without it, plain HTTP stays HTTP/1.1.
#[tokio::test]
async fn http2_prior_knowledge_speaks_h2c() {
    for (prior_knowledge, expected) in [(true, "HTTP/2.0"), (false, "HTTP/1.1")] {
        let receiver = Receiver::start().await;
        let mut sink = SinkHarness::<HttpSink>::open(config(
            &receiver.url("/h2c"),
            json!({"http2_prior_knowledge": prior_knowledge}),
        ))
        .await
        .unwrap();
        sink.consume(&two_json_messages()).await.unwrap();
        let requests = receiver.requests();
        assert_eq!(requests.len(), 2, "individual: one request per message");
        assert!(
            requests.iter().all(|request| request.version == expected),
            "{requests:?}"
        );
        sink.close().await.unwrap();
    }
}

#[tokio::test]
async fn per_message_placeholders_fan_out_in_order() {
    let receiver = Receiver::start().await;
    let mut sink = SinkHarness::<HttpSink>::open(config(
        &receiver.url("/t/{header:tenant}/{field:kind}"),
        json!({"batch_mode": "ndjson", "include_metadata": false}),
    ))
    .await
    .unwrap();
    let message = |tenant: &str, kind: &str, n: u32| {
        TestMessage::json(json!({"kind": kind, "n": n}))
            .header(OwnedHeader::string("tenant", tenant))
    };
    let batch = TestBatch::new().messages([
        message("a", "x", 1),
        message("a", "x", 2),
        message("b c", "x", 3),
        message("a", "x", 4),
    ]);
    sink.consume(&batch).await.unwrap();
    let sent: Vec<(String, usize)> = receiver
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.text().lines().count()))
        .collect();
    assert_eq!(
        sent,
        [
            ("/t/a/x".to_owned(), 2),
            ("/t/b%20c/x".to_owned(), 1),
            ("/t/a/x".to_owned(), 1)
        ]
    );

    // A message without the header is its own error, and nothing of its batch is sent.
    let missing = TestBatch::new()
        .first_offset(50)
        .message(message("a", "x", 5))
        .message(TestMessage::json(json!({"kind": "x"})));
    let error = sink.consume(&missing).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert!(error.message().contains("offset 51"), "{error}");
    assert!(error.message().contains("tenant"), "{error}");
    assert_eq!(receiver.requests().len(), 3);
}
