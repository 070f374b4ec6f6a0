//! The stdout sink through `connector_sdk::testing`. It writes to the process's real
//! standard output (which the test harness does not capture), so the lines are read
//! from a child process: this test binary run again for one test, which consumes a
//! batch when the environment says so.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use connector_sdk::ErrorKind;
use connector_sdk::testing::{SinkHarness, TestBatch, TestMessage};
use iggy_connector_stdout_sink::StdoutSink;

/// The child's `plugin_config`, set only for the child.
const CHILD_CONFIG: &str = "STDOUT_SINK_TEST_CHILD_CONFIG";

fn batch() -> TestBatch {
    TestBatch::new()
        .stream("orders")
        .topic("created")
        .partition_id(3)
        .first_offset(10)
        .message(TestMessage::new("hello world"))
        .message(TestMessage::new(vec![0xff, 0xfe]).id(7))
        .message(TestMessage::new("").id(u128::MAX))
}

/// In the child process: prints `batch()` with the config from the environment. Run
/// without that variable (as every test run does) it does nothing.
#[tokio::test]
async fn child_prints_the_batch() {
    let Ok(config) = std::env::var(CHILD_CONFIG) else {
        return;
    };
    let mut sink = SinkHarness::<StdoutSink>::open(config).await.unwrap();
    sink.consume(&batch()).await.unwrap();
    sink.close().await.unwrap();
}

/// The lines the sink prints for `batch()` with `config`, from a child process.
fn printed_lines(config: &str) -> Vec<String> {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["child_prints_the_batch", "--exact", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_CONFIG, config)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "the child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The test runner's own lines are around (and may start) the sink's.
    stdout
        .lines()
        .filter_map(|line| line.find("orders/").map(|at| line[at..].to_owned()))
        .collect()
}

#[test]
fn prints_one_line_of_metadata_per_message() {
    assert_eq!(
        printed_lines("{}"),
        [
            "orders/created/3 offset=10 id=11 size=11",
            "orders/created/3 offset=11 id=7 size=2",
            format!("orders/created/3 offset=12 id={} size=0", u128::MAX).as_str(),
        ]
    );
}

#[test]
fn print_payload_appends_text_payloads_and_the_size_of_others() {
    assert_eq!(
        printed_lines(r#"{"print_payload": true}"#),
        [
            "orders/created/3 offset=10 id=11 size=11 payload=hello world",
            "orders/created/3 offset=11 id=7 size=2 payload=<2 bytes>",
            format!(
                "orders/created/3 offset=12 id={} size=0 payload=",
                u128::MAX
            )
            .as_str(),
        ]
    );
}

#[tokio::test]
async fn config_errors_name_the_key() {
    let wrong_type = SinkHarness::<StdoutSink>::open(r#"{"print_payload": "yes"}"#)
        .await
        .unwrap_err();
    assert_eq!(wrong_type.kind(), ErrorKind::InvalidConfig);
    assert!(
        wrong_type
            .message()
            .starts_with("plugin_config.print_payload:"),
        "{wrong_type}"
    );
    let unknown = SinkHarness::<StdoutSink>::open(r#"{"print_payloads": true}"#)
        .await
        .unwrap_err();
    assert!(
        unknown.message().contains("unknown field `print_payloads`"),
        "{unknown}"
    );
}
