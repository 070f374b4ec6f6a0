//! The file sink through `connector_sdk::testing`: what lands in the file, in each
//! format, by the time `consume` returns.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use connector_sdk::testing::{SinkHarness, TestBatch, TestMessage};
use connector_sdk::{ErrorKind, HeaderKind, OwnedHeader, Schema};
use iggy_connector_file_sink::FileSink;
use serde_json::{Value, json};

/// A fresh directory of this test's own under `/tmp/sdk-testing-helper/`.
fn test_dir(test: &str) -> PathBuf {
    let dir = Path::new("/tmp/sdk-testing-helper/file-sink")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn json_lines(path: &Path) -> Vec<Value> {
    lines(path)
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn json_lines_carry_each_message_with_its_metadata() {
    let dir = test_dir("json-lines");
    // The directory does not exist yet: the sink makes it.
    let path = dir.join("nested/out.jsonl");
    let mut sink = SinkHarness::<FileSink>::open(json!({ "path": path, "fsync": false }))
        .await
        .unwrap();
    let batch = TestBatch::new()
        .stream("orders")
        .topic("created")
        .partition_id(2)
        .first_offset(40)
        .message(
            TestMessage::json(json!({"n": 1, "s": "é"}))
                .id(u128::MAX)
                .timestamp(1_000)
                .origin_timestamp(999)
                .checksum(7)
                .header(OwnedHeader::string("trace", "abc"))
                .header(OwnedHeader {
                    key: "flag".to_owned(),
                    kind: HeaderKind::Bool,
                    value: vec![1],
                }),
        )
        .message(TestMessage::new("not json"))
        .message(TestMessage::new(vec![0xff, 0x00, 0xfe]));
    sink.consume(&batch).await.unwrap();

    // In the file as soon as consume returned, before close.
    let written = json_lines(&path);
    assert_eq!(written.len(), 3, "{written:?}");
    assert_eq!(
        written[0],
        json!({
            "stream": "orders",
            "topic": "created",
            "partition_id": 2,
            "offset": 40,
            "id": u128::MAX.to_string(),
            "timestamp": 1_000,
            "origin_timestamp": 999,
            "checksum": 7,
            "headers": [
                {"key": "trace", "kind": HeaderKind::String as u32, "value": "abc"},
                {"key": "flag", "kind": HeaderKind::Bool as u32, "value_base64": "AQ=="},
            ],
            "payload": {"n": 1, "s": "é"},
        })
    );
    // A JSON stream's payload that is not JSON is kept as text, and bytes as base64.
    assert_eq!(written[1]["offset"], 41);
    assert_eq!(written[1]["payload_text"], "not json");
    assert!(written[1].get("payload").is_none());
    assert_eq!(written[2]["payload_base64"], "/wD+");
    assert!(written[2].get("payload_text").is_none());

    sink.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_json_payload_of_a_text_stream_is_written_as_text() {
    let dir = test_dir("text-stream");
    let path = dir.join("out.jsonl");
    let mut sink = SinkHarness::<FileSink>::open(json!({ "path": path }))
        .await
        .unwrap();
    let batch = TestBatch::of([r#"{"a":1}"#]).schema(Schema::Text);
    sink.consume(&batch).await.unwrap();
    let written = json_lines(&path);
    assert_eq!(written[0]["payload_text"], r#"{"a":1}"#);
    assert!(written[0].get("payload").is_none());
    sink.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn each_message_is_one_line_even_when_its_json_spans_lines() {
    let dir = test_dir("pretty-json");
    let path = dir.join("out.jsonl");
    let mut sink = SinkHarness::<FileSink>::open(json!({ "path": path }))
        .await
        .unwrap();
    sink.consume(&TestBatch::of(["{\n  \"a\": 1\n}", "[1,\r\n2]"]))
        .await
        .unwrap();
    let written = json_lines(&path);
    assert_eq!(written.len(), 2, "one line per message: {written:?}");
    assert_eq!(written[0]["payload"], json!({"a": 1}));
    assert_eq!(written[1]["payload"], json!([1, 2]));
    sink.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_payload_format_writes_raw_payloads_one_per_line() {
    let dir = test_dir("payload-format");
    let path = dir.join("out.txt");
    let mut sink = SinkHarness::<FileSink>::open(json!({ "path": path, "format": "payload" }))
        .await
        .unwrap();
    sink.consume(&TestBatch::of(["first", "second"]))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"first\nsecond\n");
    sink.consume(&TestBatch::of(["third"])).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"first\nsecond\nthird\n");
    // An empty batch writes nothing.
    sink.consume(&TestBatch::new()).await.unwrap();
    assert_eq!(lines(&path).len(), 3);
    sink.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_reopened_sink_appends_to_the_file() {
    let dir = test_dir("append");
    let path = dir.join("out.txt");
    let config = json!({ "path": path, "format": "payload" });
    for payload in ["one", "two"] {
        let mut sink = SinkHarness::<FileSink>::open(&config).await.unwrap();
        sink.consume(&TestBatch::of([payload])).await.unwrap();
        sink.close().await.unwrap();
    }
    assert_eq!(lines(&path), ["one", "two"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn config_errors_name_the_key() {
    let missing = SinkHarness::<FileSink>::open(json!({})).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::InvalidConfig);
    assert!(
        missing.message().contains("missing field `path`"),
        "{missing}"
    );

    let format = SinkHarness::<FileSink>::open(json!({"path": "/tmp/x", "format": "xml"}))
        .await
        .unwrap_err();
    assert!(
        format.message().starts_with("plugin_config.format:"),
        "{format}"
    );

    let unknown = SinkHarness::<FileSink>::open(json!({"path": "/tmp/x", "fsnyc": true}))
        .await
        .unwrap_err();
    assert!(
        unknown.message().contains("unknown field `fsnyc`"),
        "{unknown}"
    );
    assert_eq!(
        SinkHarness::<FileSink>::validate(json!({"path": "/tmp/x", "fsnyc": true})),
        [unknown.message()]
    );
    assert!(SinkHarness::<FileSink>::validate(json!({"path": "/tmp/x"})).is_empty());
}

#[tokio::test]
async fn a_path_that_cannot_be_opened_is_a_retryable_error() {
    let dir = test_dir("unopenable");
    std::fs::create_dir_all(&dir).unwrap();
    // The path is a directory.
    let error = SinkHarness::<FileSink>::open(json!({ "path": dir }))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Retryable);
    assert!(error.message().starts_with("cannot open"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}
