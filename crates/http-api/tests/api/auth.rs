//! Access: the API key (every route needs it, but the root and `/health`) and the
//! read-only mode.

use hyper::StatusCode;

use crate::support::{call, fixture, with_key};

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
                .replace("{name}", "file")
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

/// `read_only = true`: every route that would change a config or a connector answers
/// 403 (before its handler runs); every GET still answers, and so does checking a
/// plugin config, which changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_api_refuses_every_change_and_answers_every_read() {
    let api = fixture(|http| http.read_only = true).await;
    for (path, method) in concrete_routes() {
        let json = [("content-type", "application/json")];
        let reply = call(api.address, method, &path, &json, Some(b"{}".to_vec())).await;
        if method == "GET" || path.ends_with("/validate") {
            assert_ne!(reply.status, StatusCode::FORBIDDEN, "{method} {path}");
        } else {
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}");
            assert_eq!(reply.json()["code"], "read_only", "{method} {path}");
        }
    }
    api.stop().await;
}
