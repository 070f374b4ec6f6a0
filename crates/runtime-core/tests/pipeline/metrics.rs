//! Upstream's stage histogram (`iggy_connector_stage_duration_seconds`) as a real run
//! fills it, read back from `Runtime::prometheus` as a scrape would see it.

use std::time::Duration;

use config_provider::ConnectorConfig;
use connector_sdk::ConnectorKind;
use iggy_connectors_tests::{target, temp_dir, unique};
use runtime_core::Runtime;

use crate::support::{active, context, eventually_in, file_sink, plugins_for_test, random_source};

/// The value of the sample `series` (name and labels, exactly) in `text`.
fn sample(text: &str, series: &str) -> u64 {
    let values = text
        .lines()
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .collect::<Vec<_>>();
    assert_eq!(values.len(), 1, "one {series} in:\n{text}");
    values[0].parse().unwrap()
}

/// The stage histogram's sample count of `stage` for connector `key` of `kind`.
fn stage_count(text: &str, key: &str, kind: &str, stage: &str) -> u64 {
    sample(
        text,
        &format!(
            "iggy_connector_stage_duration_seconds_count{{connector_key=\"{key}\",connector_type=\"{kind}\",stage=\"{stage}\"}}"
        ),
    )
}

/// A random source's ten batches of ten messages to a file sink, with the source's
/// state saved before each send (`verified_resume`) and after it: every stage of each
/// connector has been timed, and (nothing filtered, every batch carrying a state) every
/// stage counts exactly the connector's delivered batches, which `total` counts by
/// definition: for the source the plugin's ten batches, for the sink as many as its
/// `batch_latency` counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_is_timed_once_per_delivered_batch() {
    for verified_resume in [true, false] {
        every_stage_timed(verified_resume).await;
    }
}

async fn every_stage_timed(verified_resume: bool) {
    let target = target().await;
    let dir = temp_dir("e2e-stages");
    let stream = unique("e2e-stages");
    let mut source = random_source(&stream, 100);
    if let ConnectorConfig::Source(source) = &mut source {
        source.verified_resume = verified_resume;
        if let Some(plugin) = source.common.plugin_config.as_mut() {
            plugin["messages_range"] = serde_json::json!([10, 10]);
        }
    }
    let sink = file_sink("file", &stream, &dir.join("out.jsonl"), 25);
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![source, sink]), plugins_for_test(), context).await;
    eventually_in(&runtime, "100 messages through both", || {
        runtime
            .statuses()
            .iter()
            .all(|status| status.metrics.messages_out == 100)
    })
    .await;
    let text = runtime.prometheus();
    let statuses = runtime.statuses();
    let batches = |kind: ConnectorKind| {
        let status = statuses.iter().find(|status| status.kind == kind).unwrap();
        status.metrics.batch_latency.count
    };
    let case = format!("verified_resume = {verified_resume}");

    assert_eq!(batches(ConnectorKind::Source), 10, "the plugin's batches");
    for stage in ["decode", "prepare", "iggy_send", "state_save", "total"] {
        assert_eq!(
            stage_count(&text, "random", "source", stage),
            10,
            "{case}: source {stage}:\n{text}"
        );
    }
    let delivered = batches(ConnectorKind::Sink);
    assert!(delivered > 0);
    for stage in ["decode", "prepare", "ffi", "total"] {
        assert_eq!(
            stage_count(&text, "file", "sink", stage),
            delivered,
            "{case}: sink {stage}:\n{text}"
        );
    }
    // Each kind has only its own stages.
    for (key, kind, stage) in [
        ("random", "source", "ffi"),
        ("file", "sink", "iggy_send"),
        ("file", "sink", "state_save"),
    ] {
        let series = format!("connector_key=\"{key}\",connector_type=\"{kind}\",stage=\"{stage}\"");
        assert!(!text.contains(&series), "{series}:\n{text}");
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}
