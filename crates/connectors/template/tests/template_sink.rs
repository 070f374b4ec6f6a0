//! The template sink through `connector_sdk::testing`: what a connector's own tests
//! look like. A copy keeps these and adapts them to its external system.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use connector_sdk::ErrorKind;
use connector_sdk::testing::{SinkHarness, TestBatch, TestMessage};
use connector_template::TemplateSink;
use serde_json::json;

/// A fresh directory of this test's own under the temp dir.
fn test_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("connector-template-tests")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The files under `dir/stream/topic`, name and content, sorted by name.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn each_message_is_a_file_by_the_time_consume_returns() {
    let dir = test_dir("files");
    let mut sink = SinkHarness::<TemplateSink>::open(json!({ "directory": dir }))
        .await
        .unwrap();
    let batch = TestBatch::of(["a", "b"])
        .stream("orders")
        .topic("created")
        .partition_id(3)
        .first_offset(10);
    sink.consume(&batch).await.unwrap();
    assert_eq!(
        files(&dir.join("orders/created")),
        [
            ("3-10".to_owned(), "a".to_owned()),
            ("3-11".to_owned(), "b".to_owned())
        ]
    );
    sink.close().await.unwrap();
}

/// At least once: a batch may come again; the second delivery changes nothing.
#[tokio::test]
async fn a_batch_delivered_twice_is_written_once() {
    let dir = test_dir("twice");
    let mut sink = SinkHarness::<TemplateSink>::open(json!({ "directory": dir }))
        .await
        .unwrap();
    let batch = TestBatch::of(["x", "y", "z"]).stream("s").topic("t");
    sink.consume(&batch).await.unwrap();
    let first = files(&dir.join("s/t"));
    sink.consume(&batch).await.unwrap();
    assert_eq!(files(&dir.join("s/t")), first);
    assert_eq!(first.len(), 3);
}

/// A message the sink can never write is a permanent error that names it: the
/// runtime hands it to the connector's error policy instead of retrying.
#[tokio::test]
async fn an_oversized_payload_is_a_permanent_error_naming_its_offset() {
    let dir = test_dir("oversized");
    let mut sink = SinkHarness::<TemplateSink>::open(json!({
        "directory": dir,
        "max_payload_bytes": 3,
    }))
    .await
    .unwrap();
    let batch = TestBatch::new()
        .message(TestMessage::new("ok"))
        .message(TestMessage::new("too long"));
    let error = sink.consume(&batch).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert!(error.message().starts_with("offset 1:"), "{error}");
}

/// The plugin's own verdict on a config (what decides `iggy-connectors validate`),
/// without opening anything.
#[test]
fn configs_are_checked_offline() {
    assert!(SinkHarness::<TemplateSink>::validate(json!({ "directory": "/d" })).is_empty());
    assert_eq!(
        SinkHarness::<TemplateSink>::validate(json!({ "directory": "", "token": "" })),
        [
            "plugin_config.directory: empty; name a directory",
            "plugin_config.token: empty; leave it out instead"
        ]
    );
    let unknown = SinkHarness::<TemplateSink>::validate(json!({ "directry": "/d" }));
    assert!(
        unknown[0].contains("unknown field `directry`"),
        "{unknown:?}"
    );
}

/// The reference docs read the schema: the token is marked secret.
#[test]
fn the_token_is_a_secret_in_the_schema() {
    let schema = schemars::schema_for!(connector_template::TemplateSinkConfig);
    let token = &schema.as_value()["properties"]["token"];
    assert_eq!(token["x-secret"], json!(true), "{schema:?}");
}
