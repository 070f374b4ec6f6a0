//! Bad requests get JSON errors: unknown routes, wrong methods, unknown connectors and
//! versions, invalid keys, malformed or oversized bodies.

use hyper::StatusCode;
use serde_json::json;

use crate::support::{Reply, call, fixture};

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
    // A body must say it is JSON (a web page's text/plain POST needs no preflight).
    for declared in [&[][..], &[("content-type", "text/plain")][..]] {
        let undeclared = call(
            api.address,
            "PUT",
            "/sinks/file/configs/active",
            declared,
            Some(b"{\"version\": 0}".to_vec()),
        )
        .await;
        check(
            undeclared,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
    }
    let json = [("content-type", "application/json; charset=utf-8")];
    let malformed = call(
        api.address,
        "PUT",
        "/sinks/file/configs/active",
        &json,
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
        &json,
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
