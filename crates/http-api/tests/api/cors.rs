//! CORS: preflight requests allowed and refused, and the headers of actual requests.

use hyper::StatusCode;

use crate::support::{Fixture, KEY, Reply, call, fixture, with_key};

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

/// With an api key set, a browser's preflight (which never carries the key) is still
/// answered, so that an allowed page can go on to send the key; the request it then
/// sends needs the key (401 without). A page of another origin gets no preflight, and
/// its request is refused before it acts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_is_answered_with_an_api_key_set_and_the_request_still_needs_it() {
    let api = fixture(|config| {
        with_key(config);
        config.cors.enabled = true;
        config.cors.allowed_origins = vec!["https://ui.example".to_owned()];
        config.cors.allowed_methods = vec!["GET".to_owned(), "POST".to_owned()];
        config.cors.allowed_headers = vec!["content-type".to_owned(), "api-key".to_owned()];
    })
    .await;
    let ui = ("origin", "https://ui.example");
    let preflight = call(
        api.address,
        "OPTIONS",
        "/sinks/file/stop",
        &[
            ui,
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "api-key, content-type"),
        ],
        None,
    )
    .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    assert_eq!(
        preflight
            .headers
            .get("access-control-allow-headers")
            .map(|value| value.to_str().unwrap()),
        Some("content-type, api-key")
    );
    let json = ("content-type", "application/json");
    let key = ("api-key", KEY);
    assert_eq!(
        post(&api, "/sinks/file/stop", &[ui, json]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_ne!(state(&api).await, "stopped", "a refused request acted");
    assert_eq!(
        post(&api, "/sinks/file/stop", &[ui, key, json])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(state(&api).await, "stopped");

    let evil = ("origin", "https://evil.example");
    let refused = call(
        api.address,
        "OPTIONS",
        "/sinks/file/start",
        &[evil, ("access-control-request-method", "POST")],
        None,
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let sent_anyway = post(&api, "/sinks/file/start", &[evil, key, json]).await;
    assert_eq!(
        sent_anyway.status,
        StatusCode::FORBIDDEN,
        "{}",
        sent_anyway.text()
    );
    assert_eq!(state(&api).await, "stopped");
    api.stop().await;
}

/// With no key, a request that changes something must say it is JSON (or carry an
/// api-key header): the "simple" requests a web page may send anywhere without a
/// preflight (no content type, a form's, text/plain) are refused before they act,
/// bodiless lifecycle requests included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_a_web_page_could_send_unasked_changes_nothing() {
    let api = fixture(|_| {}).await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|value| ("content-type", value))
            .into_iter()
            .collect();
        let refused = post(&api, "/sinks/file/stop", &headers).await;
        assert_eq!(
            refused.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {}",
            refused.text()
        );
    }
    assert_ne!(state(&api).await, "stopped", "a refused request acted");
    let json = ("content-type", "application/json; charset=utf-8");
    assert_eq!(
        post(&api, "/sinks/file/stop", &[json]).await.status,
        StatusCode::OK
    );
    assert_eq!(state(&api).await, "stopped");
    let custom = ("api-key", "anything");
    assert_eq!(
        post(&api, "/sinks/file/start", &[custom]).await.status,
        StatusCode::OK,
        "a custom header needs a preflight too"
    );
    api.stop().await;
}

/// A bodiless POST to `path` with `headers`.
async fn post(api: &Fixture, path: &str, headers: &[(&str, &str)]) -> Reply {
    call(api.address, "POST", path, headers, None).await
}

/// The file sink's state, as the API reports it (through the fixture's keyed GET).
async fn state(api: &Fixture) -> String {
    api.get("/sinks/file").await.json()["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
