//! The webhook source in-process (`connector_sdk::testing`): a client posts, the
//! harness polls and settles as the runtime would, and the answers follow the outcome.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use connector_sdk::testing::SourceHarness;
use connector_sdk::{ProducedBatch, Schema};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use iggy_connector_http_source::HttpSource;
use serde_json::{Value, json};
use std::net::SocketAddr;

/// An answer: status, headers, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

/// POSTs `body` to `path` on a connection of its own.
async fn post(address: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::post(path).header("host", address.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn open(extra: Value) -> (SourceHarness<HttpSource>, SocketAddr) {
    let mut config = json!({ "address": "127.0.0.1:0" });
    if let (Some(config), Value::Object(extra)) = (config.as_object_mut(), extra) {
        config.extend(extra);
    }
    let source = SourceHarness::<HttpSource>::open(config, None)
        .await
        .unwrap();
    let address = source.connector().local_addr();
    (source, address)
}

fn payloads(batch: &ProducedBatch) -> Vec<&[u8]> {
    batch.messages.iter().map(|m| &m.payload[..]).collect()
}

const JSON: (&str, &str) = ("content-type", "application/json");
const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

#[tokio::test]
async fn a_request_is_answered_200_only_once_its_batch_is_accepted() {
    let (mut source, address) = open(json!({})).await;
    let client = tokio::spawn(async move { post(address, "/", &[JSON], br#"{"a":1}"#).await });
    let batch = source.poll().await.unwrap();
    assert_eq!(batch.schema, Schema::Json);
    assert_eq!(payloads(&batch), [br#"{"a":1}"#]);
    // The message is with the runtime, not stored: the client has no answer yet. (Were
    // it answered on arrival, the rejected case below would get 200 too.)
    assert!(!client.is_finished());
    source.accept().await.unwrap();
    let answer = client.await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, r#"{"stored":1}"#);
}

#[tokio::test]
async fn a_rejected_batch_is_answered_503_with_retry_after() {
    let (mut source, address) = open(json!({"retry_after_secs": 7})).await;
    let client = tokio::spawn(async move { post(address, "/", &[JSON], b"{}").await });
    source.poll().await.unwrap();
    source.reject().await.unwrap();
    let answer = client.await.unwrap();
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.headers["retry-after"], "7");
}

#[tokio::test]
async fn ndjson_lines_become_messages_with_ids_from_the_idempotency_key() {
    let (mut source, address) = open(json!({"forward_headers": ["X-Tenant"]})).await;
    let body = b"{\"n\":1}\n\n{\"n\":2}\r\n";
    let headers = [NDJSON, ("idempotency-key", "req-42"), ("x-tenant", "acme")];
    let first = tokio::spawn(async move { post(address, "/", &headers, body).await });
    let batch = source.poll().await.unwrap();
    assert_eq!(payloads(&batch), [&b"{\"n\":1}"[..], b"{\"n\":2}"]);
    let ids: Vec<u128> = batch.messages.iter().map(|m| m.id.unwrap()).collect();
    assert_ne!(ids[0], ids[1], "each line its own id");
    let tenant = &batch.messages[1].headers[0];
    assert_eq!(
        (tenant.key.as_str(), &tenant.value[..]),
        ("x-tenant", &b"acme"[..])
    );
    source.reject().await.unwrap();
    assert_eq!(first.await.unwrap().status, 503);

    // The client retries the same request: the same ids.
    let again = tokio::spawn(async move { post(address, "/", &headers, body).await });
    let retried = source.poll().await.unwrap();
    let retried_ids: Vec<u128> = retried.messages.iter().map(|m| m.id.unwrap()).collect();
    assert_eq!(retried_ids, ids);
    source.accept().await.unwrap();
    assert_eq!(again.await.unwrap().body, r#"{"stored":2}"#);

    // No key: the runtime makes the ids up.
    let plain = tokio::spawn(async move { post(address, "/", &[NDJSON], b"{}\n").await });
    let batch = source.poll().await.unwrap();
    assert_eq!(batch.messages[0].id, None);
    source.accept().await.unwrap();
    assert_eq!(plain.await.unwrap().status, 200);
}

#[tokio::test]
async fn raw_bodies_are_one_message_and_bad_json_is_refused() {
    let (mut source, address) = open(json!({})).await;
    let raw = tokio::spawn(async move {
        post(
            address,
            "/",
            &[("content-type", "application/octet-stream")],
            &[0, 255],
        )
        .await
    });
    let batch = source.poll().await.unwrap();
    assert_eq!(batch.schema, Schema::Raw);
    assert_eq!(payloads(&batch), [&[0u8, 255][..]]);
    source.accept().await.unwrap();
    assert_eq!(raw.await.unwrap().status, 200);

    let answer = post(address, "/", &[JSON], b"{nope").await;
    assert_eq!(answer.status, 400, "{answer:?}");
    let answer = post(address, "/", &[NDJSON], b"{}\n{nope\n").await;
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("line 2"), "{answer:?}");
}

#[tokio::test]
async fn a_request_is_never_split_between_batches() {
    let (mut source, address) = open(json!({"max_batch_messages": 3})).await;
    let mut clients = Vec::new();
    for n in 0..3 {
        let body = format!("{{\"n\":{n}}}\n{{\"n\":{n}}}\n");
        clients.push(tokio::spawn(async move {
            post(address, "/", &[NDJSON], body.as_bytes()).await
        }));
    }
    // Three requests of two messages each, at most three messages a batch: each batch
    // takes whole requests, so three batches of two.
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let batch = source.poll().await.unwrap();
        sizes.push(batch.messages.len());
        source.accept().await.unwrap();
    }
    assert_eq!(sizes, [2, 2, 2]);
    for client in clients {
        assert_eq!(client.await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn a_wrong_or_missing_signature_is_401() {
    let secret = "It's a Secret to Everybody";
    let (mut source, address) = open(json!({"hmac_secret": secret})).await;
    let body = b"Hello, World!";
    // GitHub's documented example: this secret and body give this signature.
    let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let bad = "sha256=857107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    for headers in [vec![], vec![("x-hub-signature-256", bad)]] {
        let answer = post(address, "/", &headers, body).await;
        assert_eq!(answer.status, 401, "{headers:?}: {answer:?}");
    }
    let signed =
        tokio::spawn(
            async move { post(address, "/", &[("x-hub-signature-256", good)], body).await },
        );
    source.poll().await.unwrap();
    source.accept().await.unwrap();
    assert_eq!(signed.await.unwrap().status, 200);
}

#[tokio::test]
async fn bearer_tokens_and_shared_secrets_are_required_when_set() {
    let (mut source, address) = open(json!({
        "auth_token": "t0ken-value",
        "shared_secret_header": "X-Webhook-Secret",
        "shared_secret": "sh4red-value",
    }))
    .await;
    let both = [
        ("authorization", "Bearer t0ken-value"),
        ("x-webhook-secret", "sh4red-value"),
    ];
    for headers in [
        vec![both[1]],
        vec![both[0]],
        vec![("authorization", "Bearer t0ken-valuE"), both[1]],
        vec![both[0], ("x-webhook-secret", "sh4red-valu")],
    ] {
        let answer = post(address, "/", &headers, b"x").await;
        assert_eq!(answer.status, 401, "{headers:?}");
    }
    let allowed = tokio::spawn(async move { post(address, "/", &both, b"x").await });
    source.poll().await.unwrap();
    source.accept().await.unwrap();
    assert_eq!(allowed.await.unwrap().status, 200);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let (_source, address) = open(json!({"max_body_bytes": 16})).await;
    let answer = post(address, "/", &[], &[b'x'; 17]).await;
    assert_eq!(answer.status, 413, "{answer:?}");
}

#[tokio::test]
async fn only_posts_to_the_configured_paths_are_taken() {
    let (_source, address) = open(json!({"paths": ["/hooks/a"]})).await;
    assert_eq!(post(address, "/hooks/b", &[], b"x").await.status, 404);
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let get = hyper::Request::get("/hooks/a")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(sender.send_request(get).await.unwrap().status(), 405);
}

#[tokio::test]
async fn a_source_that_is_not_polled_answers_503_and_stores_nothing() {
    // A paused connector is not polled: the request is withdrawn after queue_timeout.
    let (mut source, address) = open(json!({"queue_timeout": "300ms"})).await;
    let answer = post(address, "/", &[JSON], b"{\"late\":true}").await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.headers["retry-after"], "1");
    // Withdrawn for good: the next poll does not see it.
    let next = tokio::spawn(async move { post(address, "/", &[JSON], b"{\"next\":1}").await });
    let batch = source.poll().await.unwrap();
    assert_eq!(payloads(&batch), [br#"{"next":1}"#]);
    source.accept().await.unwrap();
    assert_eq!(next.await.unwrap().status, 200);
}

#[tokio::test]
async fn a_full_queue_answers_503_at_once() {
    let (mut source, address) = open(json!({
        "max_body_bytes": 10, "max_queued_bytes": 10, "queue_timeout": "1m"
    }))
    .await;
    let mut a = tokio::spawn(async move { post(address, "/", &[JSON], b"[1,2,3,4]").await });
    let mut b = tokio::spawn(async move { post(address, "/", &[JSON], b"[5,6,7,8]").await });
    // Together they are over max_queued_bytes: whichever came second is refused at
    // once, while the first waits for the runtime (a minute, were it not polled).
    let (refused, waiting) = tokio::select! {
        refused = &mut a => (refused, b),
        refused = &mut b => (refused, a),
    };
    let refused = refused.unwrap();
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.headers["retry-after"], "1");
    let batch = source.poll().await.unwrap();
    assert_eq!(batch.messages.len(), 1);
    source.accept().await.unwrap();
    assert_eq!(waiting.await.unwrap().status, 200);
}

#[tokio::test]
async fn closing_answers_waiting_requests_503() {
    let (mut source, address) = open(json!({})).await;
    let client = tokio::spawn(async move { post(address, "/", &[JSON], b"{}").await });
    source.poll().await.unwrap();
    source.close().await.unwrap();
    assert_eq!(client.await.unwrap().status, 503);
}

#[tokio::test]
async fn configs_are_checked_naming_the_key() {
    let problems = SourceHarness::<HttpSource>::validate(json!({
        "address": "nowhere",
        "paths": ["hooks"],
        "shared_secret": "x",
        "tls_cert_file": "/tmp/c.pem",
    }));
    let all = problems.join("\n");
    for key in [
        "plugin_config.address",
        "plugin_config.paths",
        "plugin_config.shared_secret_header",
        "plugin_config.tls_key_file",
    ] {
        assert!(all.contains(key), "{key} missing from {all}");
    }
}

#[tokio::test]
async fn https_is_served_with_the_configured_certificate() {
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("http-source-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();
    let (mut source, address) =
        open(json!({"tls_cert_file": cert_file, "tls_key_file": key_file})).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let posting = tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::post("/")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"secure\":true}")))
            .unwrap();
        sender
            .send_request(request)
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    let batch = source.poll().await.unwrap();
    assert_eq!(payloads(&batch), [br#"{"secure":true}"#]);
    source.accept().await.unwrap();
    assert_eq!(posting.await.unwrap(), 200);
    // Plain HTTP to a TLS listener gets no answer.
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let handshake = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await;
    if let Ok((mut sender, connection)) = handshake {
        tokio::spawn(connection);
        let request = hyper::Request::post("/")
            .header("host", "x")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        assert!(sender.send_request(request).await.is_err());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client speaking HTTP/2 from the first byte (prior knowledge, h2c) is served in
/// HTTP/2, with the same rule: 200 only once the batch is accepted. An HTTP/1.1
/// client on the same listener is still served (the preface decides per connection).
#[tokio::test]
async fn an_http2_client_is_served_in_http2() {
    let (mut source, address) = open(json!({})).await;
    let client = tokio::spawn(async move {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::post(format!("http://{address}/"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"h2":true}"#)))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let version = response.version();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (version, status, body)
    });
    // Bounded: a server that did not speak HTTP/2 would never see the request.
    let batch = tokio::time::timeout(std::time::Duration::from_secs(10), source.poll())
        .await
        .expect("the HTTP/2 request reaches the source")
        .unwrap();
    assert_eq!(payloads(&batch), [br#"{"h2":true}"#]);
    assert!(
        !client.is_finished(),
        "answered before the batch was accepted"
    );
    source.accept().await.unwrap();
    let (version, status, body) = client.await.unwrap();
    assert_eq!(version, hyper::Version::HTTP_2);
    assert_eq!(status, 200);
    assert_eq!(&body[..], br#"{"stored":1}"#);

    let http1 = tokio::spawn(async move { post(address, "/", &[JSON], br#"{"h1":true}"#).await });
    source.poll().await.unwrap();
    source.accept().await.unwrap();
    assert_eq!(http1.await.unwrap().status, 200);
}
