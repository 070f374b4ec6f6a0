//! `GET /plugins` and `POST /plugins/{name}/validate`: what each plugin takes, and a
//! check of a plugin config with nothing started.

use hyper::StatusCode;
use serde_json::json;

use crate::support::{fixture, with_key};

/// The plugins the runtime loaded for its connectors are listed with their config
/// description: fields with type, default, whether required or secret, and doc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_listed_with_their_config_description() {
    let api = fixture(with_key).await;
    let plugins = api.get("/plugins").await;
    assert_eq!(plugins.status, StatusCode::OK, "{}", plugins.text());
    let plugins = plugins.json();
    let file = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|plugin| plugin["name"] == "file")
        .unwrap_or_else(|| panic!("the file sink is not listed: {plugins}"));
    assert_eq!(file["kind"], "sink");
    let fields = file["config"]["fields"].as_array().unwrap();
    let field = |key: &str| {
        fields
            .iter()
            .find(|field| field["key"] == key)
            .unwrap_or_else(|| panic!("{key} not in {fields:?}"))
    };
    assert_eq!(field("path")["required"], true);
    assert_eq!(field("path")["type"], "string");
    assert_eq!(field("fsync")["default"], true);
    assert_eq!(field("format")["type"], r#""json" | "payload""#);
    assert!(
        field("path")["doc"].as_str().unwrap().contains("file"),
        "{fields:?}"
    );
    assert!(
        plugins
            .as_array()
            .unwrap()
            .iter()
            .any(|plugin| plugin["name"] == "random")
    );
    api.stop().await;
}

/// A plugin config is checked without starting anything: every problem, each naming
/// its key, a misspelt one with the nearest known key; a good one is valid; an unknown
/// plugin is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_config_is_checked_without_starting_anything() {
    let api = fixture(with_key).await;
    let checked = api
        .send(
            "POST",
            "/plugins/file/validate",
            json!({ "pth": "/tmp/x", "fsync": "yes" }),
        )
        .await;
    assert_eq!(checked.status, StatusCode::OK, "{}", checked.text());
    let checked = checked.json();
    assert_eq!(checked["valid"], false);
    let problems: Vec<&str> = checked["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|problem| problem.as_str().unwrap())
        .collect();
    for expected in [
        "plugin_config.path: required, and missing",
        "plugin_config.pth: unknown key; did you mean `path`?",
        "plugin_config.fsync: expected boolean, got a string",
    ] {
        assert!(
            problems.contains(&expected),
            "{expected} not in {problems:?}"
        );
    }
    // The plugin's own check runs too (the random source's range).
    let swapped = api
        .send(
            "POST",
            "/plugins/random/validate",
            json!({ "messages_range": [9, 2] }),
        )
        .await
        .json();
    assert_eq!(swapped["valid"], false, "{swapped}");
    assert!(
        swapped["problems"][0]
            .as_str()
            .unwrap()
            .contains("1 <= min <= max"),
        "{swapped}"
    );
    // Nothing is opened: a path nobody could write is still a valid config.
    let good = api
        .send(
            "POST",
            "/plugins/file/validate",
            json!({ "path": "/no/such/dir/out.jsonl" }),
        )
        .await
        .json();
    assert_eq!(good["valid"], true, "{good}");
    assert_eq!(good["problems"], json!([]));
    let unknown = api.send("POST", "/plugins/nope/validate", json!({})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["code"], "plugin_not_found");
    api.stop().await;
}
