//! CORS: preflight requests allowed and refused, and the headers of actual requests.

use hyper::StatusCode;

use crate::support::{Reply, call, fixture};

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
