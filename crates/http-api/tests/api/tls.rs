//! Serving over TLS with a self-signed certificate, and bind and TLS failures reported as
//! errors.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use config_provider::{ConfigProvider, HttpConfig, LocalProvider};
use http_body_util::Full;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use iggy_connectors_tests::temp_dir;
use iggy_test_server::TestTarget;
use plugin_host::PluginLoader;
use runtime_core::{IggyBus, IggySettings, PluginRegistry, Runtime, RuntimeContext, StateStore};

use crate::support::{fixture, send};

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
