//! Every route answers: status, readiness, stats, metrics, connectors, config versions
//! (create, activate, delete), the plugin config in every format with secrets redacted,
//! and the lifecycle of one connector.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::support::{DEADLINE, fixture, sink_toml, with_key};

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
        value["config_version"] == 1 && value["status"] == "running"
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

    // Lifecycle of one connector; the other keeps running. A start or restart is one
    // more run of the connector (`starts`), the others none.
    for (action, state, runs) in [
        ("pause", "paused", 0),
        ("resume", "running", 0),
        ("stop", "stopped", 0),
        ("start", "running", 1),
        ("restart", "running", 1),
    ] {
        let starts = |value: &Value| value["starts"].as_u64().unwrap();
        let before = starts(&api.get("/sinks/file").await.json());
        let reply = api
            .send("POST", &format!("/sinks/file/{action}"), json!(null))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{action}: {}", reply.text());
        // The new run counts itself as it begins, after the reply.
        let after = api
            .eventually_json("/sinks/file", action, |value| {
                value["state"] == state && starts(value) >= before + runs
            })
            .await;
        assert_eq!(starts(&after), before + runs, "{action}: {after}");
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

/// A connector config file's text as the JSON the API takes.
pub(crate) fn toml_to_json(text: &str) -> Value {
    let value: toml::Value = toml::from_str(text).unwrap();
    serde_json::to_value(value).unwrap()
}

/// Transforms run in the order a config lists them, whichever way it arrives: a config
/// version POSTed as JSON keeps the order of its `transforms` object (here not the
/// alphabetical one), and the API shows it back in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_configs_transforms_keep_their_order() {
    let api = fixture(with_key).await;
    let active = api.get("/sinks/file/configs/active").await.json();
    let stream = active["streams"][0]["stream"].as_str().unwrap().to_owned();
    let output = api.dir.join("ordered.jsonl");
    let body = format!(
        r#"{{"enabled": true, "name": "Ordered", "path": "{path}",
            "streams": [{{"stream": "{stream}", "topics": ["t"], "schema": "json"}}],
            "transforms": {{
                "update_fields": {{"enabled": true, "fields": [{{"key": "seq", "value": 0}}]}},
                "delete_fields": {{"enabled": true, "fields": ["text"]}}
            }},
            "plugin_config": {{"path": "{output}"}}}}"#,
        path = iggy_connectors_tests::plugin_path("iggy_connector_file_sink"),
        output = output.display(),
    );
    let created = crate::support::call(
        api.address,
        "POST",
        "/sinks/file/configs",
        &[
            ("api-key", "s3cr3t-key"),
            ("content-type", "application/json"),
        ],
        Some(body.into_bytes()),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let text = created.text();
    let (update, delete) = (
        text.find("update_fields").unwrap(),
        text.find("delete_fields").unwrap(),
    );
    assert!(update < delete, "the order was lost: {text}");
    let version = created.json()["version"].as_u64().unwrap();
    let activated = api
        .send(
            "PUT",
            "/sinks/file/configs/active",
            json!({ "version": version }),
        )
        .await;
    assert_eq!(
        activated.status,
        StatusCode::NO_CONTENT,
        "{}",
        activated.text()
    );
    let chain = api.get("/sinks/file/transforms").await.json();
    let types: Vec<&str> = chain
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["update_fields", "delete_fields"]);
    api.stop().await;
}
