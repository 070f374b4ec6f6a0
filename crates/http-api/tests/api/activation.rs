//! Activating a config version that cannot start leaves the version that ran running:
//! the runtime rolls back, the API answers 409 with the error, and the provider keeps
//! the running version as the active one.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::routes::toml_to_json;
use crate::support::{DEADLINE, Fixture, fixture, sink_toml};

/// Lines the sink has written to `file` so far.
fn lines(file: &std::path::Path) -> usize {
    std::fs::read_to_string(file).map_or(0, |text| text.lines().count())
}

/// A new version of the file sink, valid to every check made before it runs (the
/// plugin's config check included), whose plugin's open fails: its file would be
/// inside a file.
async fn unopenable_version(api: &Fixture) -> Value {
    let active = api.get("/sinks/file/configs/active").await.json();
    let mut next: Value = toml_to_json(&sink_toml(
        active["streams"][0]["stream"].as_str().unwrap(),
        &api.dir.join("out-1.jsonl"),
    ));
    let not_a_directory = api.dir.join("not-a-directory");
    std::fs::write(&not_a_directory, "").unwrap();
    next["plugin_config"]["path"] = json!(not_a_directory.join("out.jsonl"));
    let fields = next.as_object_mut().unwrap();
    for reserved in ["type", "key", "version"] {
        fields.remove(reserved);
    }
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_cannot_open_is_rolled_back_and_the_old_one_runs_on() {
    let api = fixture(|_| {}).await;
    let running = api
        .eventually_json("/sinks/file", "version 0 runs", |value| {
            value["status"] == "running"
        })
        .await;
    let starts = running["starts"].as_u64().unwrap();
    let next = unopenable_version(&api).await;
    let created = api.send("POST", "/sinks/file/configs", next).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    assert_eq!(created.json()["version"], 1);

    let refused = api
        .send("PUT", "/sinks/file/configs/active", json!({ "version": 1 }))
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text());
    let error = refused.json();
    assert_eq!(error["code"], "activation_failed", "{error}");
    let reason = error["reason"].as_str().unwrap();
    assert!(
        reason.contains("version 1 did not start")
            && reason.contains("not-a-directory")
            && reason.contains("version 0 is back and runs again"),
        "{reason}"
    );

    // The provider still names version 0, and the runtime runs it again: one start
    // for the version that failed, one for the version that came back.
    assert_eq!(
        api.get("/sinks/file/configs/active").await.json()["version"],
        0
    );
    let versions = api.get("/sinks/file/configs").await.json();
    let flags: Vec<(u64, bool)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["active"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(flags, [(0, true), (1, false)]);
    let back = api
        .eventually_json("/sinks/file", "version 0 runs again", |value| {
            value["config_version"] == 0 && value["status"] == "running"
        })
        .await;
    assert_eq!(back["starts"].as_u64().unwrap(), starts + 2, "{back}");
    // And moves data: its file grows again.
    let output = api.dir.join("out-0.jsonl");
    let before = lines(&output);
    let deadline = Instant::now() + DEADLINE;
    while lines(&output) <= before {
        assert!(Instant::now() < deadline, "version 0 stopped writing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.stop().await;
}

/// A stopped connector whose new version cannot start stays stopped with its old
/// version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_connector_keeps_its_version_when_the_new_one_cannot_start() {
    let api = fixture(|_| {}).await;
    let stopped = api.send("POST", "/sinks/file/stop", json!({})).await;
    assert_eq!(stopped.status, StatusCode::OK, "{}", stopped.text());
    let next = unopenable_version(&api).await;
    assert_eq!(
        api.send("POST", "/sinks/file/configs", next).await.status,
        StatusCode::OK
    );
    let refused = api
        .send("PUT", "/sinks/file/configs/active", json!({ "version": 1 }))
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains("version 0 is back (stopped, as it was)"),
        "{}",
        refused.text()
    );
    let sink = api.get("/sinks/file").await.json();
    assert_eq!(
        (sink["config_version"].as_u64(), sink["status"].as_str()),
        (Some(0), Some("stopped")),
        "{sink}"
    );
    api.stop().await;
}
