//! The plugin boundary, end to end: real connector libraries loaded as .so files (and
//! linked statically) and driven through plugin-host.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use connector_sdk::Schema;
use connector_sdk::abi::ABI_VERSION;
use iggy_connectors_tests::{eventually, json_batch, plugin_library, plugin_path, temp_dir};
use plugin_host::{
    BatchSource, CallErrorKind, ConnectorKind, LoadError, MessageMeta, OpenOptions, Plugin,
    PluginLoader, PluginOrigin, SinkBatchBuilder, SinkInstance, SourceInstance,
};
use serde_json::{Value, json};

const CLOSE: Duration = Duration::from_secs(5);

fn load(crate_name: &str) -> Plugin {
    PluginLoader::new()
        .load(&plugin_path(crate_name))
        .unwrap_or_else(|error| panic!("loading {crate_name}: {error}"))
}

async fn open_sink(plugin: &Plugin, key: &str, config: Value) -> SinkInstance {
    plugin
        .open_sink(key, &config.to_string(), OpenOptions::default())
        .await
        .unwrap_or_else(|error| panic!("opening sink {key}: {error}"))
}

async fn open_source(
    plugin: &Plugin,
    key: &str,
    config: Value,
    state: Option<&[u8]>,
) -> SourceInstance {
    plugin
        .open_source(key, &config.to_string(), state, OpenOptions::default())
        .await
        .unwrap_or_else(|error| panic!("opening source {key}: {error}"))
}

#[test]
fn every_bundled_connector_loads_as_a_library_with_its_descriptor() {
    let expected = [
        ("iggy_connector_stdout_sink", ConnectorKind::Sink, "stdout"),
        ("iggy_connector_file_sink", ConnectorKind::Sink, "file"),
        ("iggy_connector_null_sink", ConnectorKind::Sink, "null"),
        (
            "iggy_connector_random_source",
            ConnectorKind::Source,
            "random",
        ),
    ];
    for (crate_name, kind, name) in expected {
        let plugin = load(crate_name);
        assert_eq!(plugin.kind(), kind, "{crate_name}");
        assert_eq!(plugin.name(), name);
        assert_eq!(plugin.version(), env!("CARGO_PKG_VERSION"));
        assert_eq!(plugin.sdk_version(), env!("CARGO_PKG_VERSION"));
        assert_eq!(
            plugin.origin(),
            &PluginOrigin::Library(plugin_library(crate_name).canonicalize().unwrap())
        );
    }
}

#[test]
fn loading_a_library_twice_gives_the_same_plugin() {
    let loader = PluginLoader::new();
    let path = plugin_path("iggy_connector_null_sink");
    let first = loader.load(&path).unwrap();
    let without_extension = path.trim_end_matches(".so");
    let second = loader.load(without_extension).unwrap();
    assert_eq!(first.path(), second.path());
}

#[tokio::test]
async fn file_sink_writes_every_message_as_a_json_line() {
    let dir = temp_dir("file-sink-json");
    let path = dir.join("out/messages.jsonl");
    let plugin = load("iggy_connector_file_sink");
    let sink = open_sink(&plugin, "file", json!({ "path": path })).await;
    sink.consume(&json_batch(0, 3)).await.unwrap();
    sink.consume(&json_batch(3, 2)).await.unwrap();
    sink.close(CLOSE).await.unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for (offset, line) in lines.iter().enumerate() {
        let offset = offset as u64;
        assert_eq!(line["offset"], offset);
        assert_eq!(line["id"], (1_000 + offset).to_string());
        assert_eq!(line["stream"], "stream");
        assert_eq!(line["topic"], "topic");
        assert_eq!(line["partition_id"], 1);
        assert_eq!(line["timestamp"], 1_700_000_000_000_000 + offset);
        assert_eq!(line["origin_timestamp"], 1_600_000_000_000_000 + offset);
        assert_eq!(line["checksum"], offset * 7);
        assert_eq!(line["payload"], json!({ "n": offset }));
        assert_eq!(
            line["headers"],
            json!([{ "key": "trace", "kind": 2, "value": format!("t-{offset}") }])
        );
    }
}

#[tokio::test]
async fn file_sink_keeps_non_json_payloads_as_text_or_base64() {
    let dir = temp_dir("file-sink-raw");
    let path = dir.join("raw.jsonl");
    let plugin = load("iggy_connector_file_sink");
    let sink = open_sink(&plugin, "file", json!({ "path": path, "fsync": false })).await;
    let mut builder = SinkBatchBuilder::with_capacity(
        BatchSource {
            stream: "s".into(),
            topic: "t".into(),
            partition_id: 3,
            schema: Schema::Json,
            current_offset: 2,
        },
        2,
    );
    for (offset, payload) in [(0u64, &b"not json"[..]), (1, &[0xff, 0x00, 0x01][..])] {
        let meta = MessageMeta {
            id: u128::from(offset),
            offset,
            ..MessageMeta::default()
        };
        builder.push(meta, vec![], Bytes::from_static(payload));
    }
    let batch = builder.build();
    sink.consume(&Arc::new(batch)).await.unwrap();
    sink.close(CLOSE).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["payload_text"], "not json");
    assert_eq!(lines[1]["payload_base64"], "/wAB");
    assert!(lines[0].get("payload").is_none());
}

#[tokio::test]
async fn file_sink_payload_format_writes_raw_payload_lines() {
    let dir = temp_dir("file-sink-payload");
    let path = dir.join("payloads.txt");
    let plugin = load("iggy_connector_file_sink");
    let sink = open_sink(
        &plugin,
        "file",
        json!({ "path": path, "format": "payload" }),
    )
    .await;
    sink.consume(&json_batch(0, 3)).await.unwrap();
    sink.close(CLOSE).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n"
    );
}

#[tokio::test]
async fn static_and_library_paths_give_the_same_results() {
    let dir = temp_dir("static-vs-library");
    let static_plugin = Plugin::from_static(iggy_connector_file_sink::descriptor()).unwrap();
    let library_plugin = load("iggy_connector_file_sink");
    assert_eq!(static_plugin.origin(), &PluginOrigin::Static);
    assert_eq!(static_plugin.name(), library_plugin.name());
    assert_eq!(static_plugin.version(), library_plugin.version());
    assert_eq!(static_plugin.kind(), library_plugin.kind());

    let mut outputs = Vec::new();
    for (label, plugin) in [("static", &static_plugin), ("library", &library_plugin)] {
        let path = dir.join(format!("{label}.jsonl"));
        let sink = open_sink(plugin, label, json!({ "path": path })).await;
        sink.consume(&json_batch(0, 10)).await.unwrap();
        sink.consume(&json_batch(10, 5)).await.unwrap();
        sink.close(CLOSE).await.unwrap();
        outputs.push(std::fs::read_to_string(&path).unwrap());
    }
    assert_eq!(outputs[0].lines().count(), 15);
    assert_eq!(outputs[0], outputs[1]);
}

/// Run by `stdout_sink_prints_one_line_per_message` in a child process whose standard
/// output it reads.
#[tokio::test]
#[ignore = "run by stdout_sink_prints_one_line_per_message in a child process"]
async fn stdout_sink_child() {
    let plugin = load("iggy_connector_stdout_sink");
    let sink = open_sink(&plugin, "stdout", json!({ "print_payload": true })).await;
    sink.consume(&json_batch(0, 3)).await.unwrap();
    let quiet = open_sink(&plugin, "stdout-quiet", json!({})).await;
    quiet.consume(&json_batch(3, 1)).await.unwrap();
    sink.close(CLOSE).await.unwrap();
    quiet.close(CLOSE).await.unwrap();
}

#[test]
fn stdout_sink_prints_one_line_per_message() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "stdout_sink_child", "--ignored", "--nocapture"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout
        .lines()
        // libtest may print "test stdout_sink_child ... " before the first line.
        .filter_map(|line| line.find("stream/topic/1 ").map(|start| &line[start..]))
        .collect();
    assert_eq!(
        lines,
        [
            "stream/topic/1 offset=0 id=1000 size=7 payload={\"n\":0}",
            "stream/topic/1 offset=1 id=1001 size=7 payload={\"n\":1}",
            "stream/topic/1 offset=2 id=1002 size=7 payload={\"n\":2}",
            "stream/topic/1 offset=3 id=1003 size=7",
        ],
        "{stdout}"
    );
}

fn batch_payloads(batch: &plugin_host::SourceBatch<'_>) -> Vec<Value> {
    batch
        .messages()
        .iter()
        .map(|message| serde_json::from_slice(message.payload()).unwrap())
        .collect()
}

#[tokio::test]
async fn random_source_produces_batches_in_range_and_commits_only_accepted_ones() {
    let plugin = load("iggy_connector_random_source");
    let config = json!({
        "interval": "1ms",
        "messages_range": [2, 4],
        "payload_size": 50,
    });
    let source = open_source(&plugin, "random", config.clone(), None).await;

    let batch = source.poll().await.unwrap();
    assert_eq!(batch.schema().unwrap(), Schema::Json);
    let first = batch_payloads(&batch);
    assert!((2..=4).contains(&first.len()), "{first:?}");
    for (seq, payload) in first.iter().enumerate() {
        assert_eq!(payload["seq"], seq as u64);
        assert_eq!(payload["key"], "random");
        assert_eq!(payload["text"].as_str().unwrap().len(), 50);
    }
    let ids: Vec<u128> = batch.messages().iter().map(|m| m.id()).collect();
    assert!(ids.windows(2).all(|pair| pair[1] == pair[0] + 1), "{ids:?}");
    let state = batch.state().unwrap().to_vec();
    assert_eq!(state, (first.len() as u64).to_le_bytes());
    batch.accept().await.unwrap();

    // A rejected batch is produced again from the same sequence number.
    let rejected = source.poll().await.unwrap();
    let rejected_first_seq = batch_payloads(&rejected)[0]["seq"].clone();
    assert_eq!(rejected_first_seq, first.len() as u64);
    rejected.reject().await.unwrap();
    let again = source.poll().await.unwrap();
    assert_eq!(batch_payloads(&again)[0]["seq"], rejected_first_seq);
    again.accept().await.unwrap();
    source.close(CLOSE).await.unwrap();

    // Reopened with the accepted state, it continues where it stopped.
    let reopened = open_source(&plugin, "random", config, Some(&state)).await;
    let next = reopened.poll().await.unwrap();
    assert_eq!(batch_payloads(&next)[0]["seq"], first.len() as u64);
    drop(next);
    reopened.close(CLOSE).await.unwrap();
}

#[tokio::test]
async fn random_source_stays_idle_after_max_count_and_closes_promptly() {
    let plugin = load("iggy_connector_random_source");
    let config = json!({ "interval": "1ms", "messages_range": [3, 3], "max_count": 5 });
    let source = open_source(&plugin, "random", config, None).await;
    let mut seen = 0;
    while seen < 5 {
        let batch = source.poll().await.unwrap();
        seen += batch.messages().len();
        batch.accept().await.unwrap();
    }
    assert_eq!(seen, 5, "max_count caps the last batch");
    tokio::select! {
        _ = source.poll() => panic!("the source produced past max_count"),
        () = tokio::time::sleep(Duration::from_millis(200)) => {}
    }
    // The idle poll is abandoned by close rather than waited for.
    tokio::time::timeout(Duration::from_secs(10), source.close(CLOSE))
        .await
        .expect("close returns while a poll is idle")
        .unwrap();
}

#[tokio::test]
async fn several_batches_may_be_unsettled_and_are_settled_in_order() {
    let plugin = load("iggy_connector_random_source");
    let limit = plugin.max_unsettled_batches();
    assert!(limit > 1, "the random source pipelines its batches");
    assert_eq!(load("faulty_source_plugin").max_unsettled_batches(), 2);
    let config = json!({ "interval": "0ms", "messages_range": [2, 2], "max_count": 100 });
    let source = open_source(&plugin, "pipelined", config, None).await;
    let first_seq = |batch: &plugin_host::SourceBatch<'_>| batch_payloads(batch)[0]["seq"].clone();

    // Up to the limit, each poll continues where the previous batch ended.
    let mut batches = Vec::new();
    for index in 0..limit {
        let batch = source.poll().await.unwrap();
        assert_eq!(first_seq(&batch), u64::from(index) * 2);
        batches.push(batch);
    }
    let refused = source.poll().await.unwrap_err();
    assert_eq!(refused.kind, CallErrorKind::InvalidCall, "{refused}");
    assert!(refused.to_string().contains("settle batch"), "{refused}");

    // The oldest is accepted; a reject of the next discards the later ones as well,
    // which can then only be rejected.
    let mut batches = batches.into_iter();
    batches.next().unwrap().accept().await.unwrap();
    batches.next().unwrap().reject().await.unwrap();
    let discarded = batches.next().unwrap();
    let refused = discarded.accept().await.unwrap_err();
    assert!(
        refused.to_string().contains("follows a rejected batch"),
        "{refused}"
    );
    for rest in batches {
        rest.reject().await.unwrap();
    }
    let again = source.poll().await.unwrap();
    assert_eq!(
        first_seq(&again),
        2,
        "produced again from the rejected batch"
    );
    again.accept().await.unwrap();
    source.close(CLOSE).await.unwrap();
}

#[tokio::test]
async fn settle_all_hands_over_several_outcomes_in_order() {
    let plugin = load("iggy_connector_random_source");
    let limit = plugin.max_unsettled_batches() as usize;
    assert!(
        limit >= 4,
        "the random source allows {limit} unsettled batches"
    );
    let config = json!({ "interval": "0ms", "messages_range": [3, 3], "max_count": 1000 });
    let source = open_source(&plugin, "settle-all", config, None).await;
    let first_seq = |batch: &plugin_host::SourceBatch<'_>| batch_payloads(batch)[0]["seq"].clone();
    let mut batches = Vec::new();
    for _ in 0..4 {
        batches.push(source.poll().await.unwrap());
    }
    // Two accepted, then a reject, then an accept the source must refuse: it follows
    // the rejected batch. Each answer comes back in its place.
    let outcomes = batches.into_iter().zip([true, true, false, true]).collect();
    let answers = source.settle_all(outcomes).await;
    assert_eq!(answers.len(), 4);
    assert!(
        answers[0].is_ok() && answers[1].is_ok() && answers[2].is_ok(),
        "{answers:?}"
    );
    let refused = answers[3].as_ref().unwrap_err();
    assert!(
        refused.to_string().contains("follows a rejected batch"),
        "{refused}"
    );
    // The source goes on from the rejected batch: the two accepted ones stay accepted.
    let again = source.poll().await.unwrap();
    assert_eq!(
        first_seq(&again),
        6,
        "produced again from the rejected batch"
    );
    let answers = source.settle_all(vec![(again, true)]).await;
    assert!(answers[0].is_ok(), "{answers:?}");
    source.close(CLOSE).await.unwrap();
}

#[tokio::test]
async fn lent_payloads_are_read_in_place_and_hold_the_settle_until_dropped() {
    let plugin = load("iggy_connector_random_source");
    let config = json!({ "interval": "0ms", "messages_range": [16, 16], "max_count": 1000 });
    let source = open_source(&plugin, "lent", config, None).await;
    let batch = source.poll().await.unwrap();
    let payloads = batch.payloads();
    assert_eq!(payloads.len(), 16);
    for (payload, message) in payloads.iter().zip(batch.messages()) {
        assert_eq!(payload.as_ref(), message.payload());
        // The SDK wrote the batch in one buffer: lent, not copied.
        assert_eq!(payload.as_ptr(), message.payload().as_ptr());
    }
    let kept = payloads[15].clone();
    drop(payloads);
    let mut accept = Box::pin(batch.accept());
    // The plugin answers an accept within a millisecond; held back, it has no answer
    // however long it is given (this cannot fail when the hold works).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut accept)
            .await
            .is_err(),
        "a payload still lent holds the accept back"
    );
    let text = String::from_utf8(kept.to_vec()).unwrap();
    drop(kept);
    tokio::time::timeout(Duration::from_secs(10), accept)
        .await
        .expect("the accept goes ahead once the payloads are dropped")
        .unwrap();
    assert!(text.contains("\"seq\":15"), "{text}");

    // Closing while a payload is in use leaves the instance open rather than free it.
    let batch = source.poll().await.unwrap();
    let kept = batch.payloads().swap_remove(0);
    drop(batch);
    let error = source.close(CLOSE).await.unwrap_err();
    assert!(error.to_string().contains("still in use"), "{error}");
    let value: Value = serde_json::from_slice(&kept).unwrap();
    assert_eq!(value["seq"], 16, "still readable after the refused close");
}

#[tokio::test]
async fn scattered_payloads_are_copied_out() {
    let plugin = load("faulty_source_plugin");
    let source = open_source(&plugin, "scattered", json!({}), None).await;
    let batch = source.poll().await.unwrap();
    let payloads = batch.payloads();
    let message = &batch.messages()[0];
    assert_eq!(payloads[0].as_ref(), message.payload());
    assert_ne!(payloads[0].as_ptr(), message.payload().as_ptr());
    // A copy lends nothing: the accept does not wait for it.
    tokio::time::timeout(Duration::from_secs(10), batch.accept())
        .await
        .expect("not held back by a copy")
        .unwrap();
    assert!(!payloads[0].is_empty());
    source.close(CLOSE).await.unwrap();
}

/// A settle made while a poll waits inside the plugin is served at once: the driver
/// abandons the poll (polls are cancel-safe), settles, and polls again. The poll here
/// can only end after the settle, so a driver that served calls strictly in turn would
/// never answer either.
#[tokio::test]
async fn a_waiting_poll_does_not_hold_up_settling_earlier_batches() {
    let dir = temp_dir("waiting-poll");
    let marker = dir.join("waiting");
    let plugin = load("faulty_source_plugin");
    let config = json!({ "wait_until_settled": true, "waiting_marker": marker });
    let source = open_source(&plugin, "waiting", config, None).await;
    let first = source.poll().await.unwrap();
    assert_eq!(batch_payloads(&first)[0]["batch"], 1);
    let mut waiting = Box::pin(source.poll());
    // Driven until the plugin says the poll waits in it, so the settle below is made
    // after the poll reached the plugin, not queued ahead of it.
    tokio::select! {
        biased;
        _ = &mut waiting => panic!("the poll answered while its predecessor was unsettled"),
        () = eventually("the second poll waits inside the plugin", || marker.exists()) => {}
    }
    tokio::time::timeout(Duration::from_secs(10), first.accept())
        .await
        .expect("the accept overtakes the waiting poll")
        .unwrap();
    // Polled again after the settle, the source saw the accept before making batch 2.
    let next = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the abandoned poll starts again after the settle")
        .unwrap();
    assert_eq!(
        batch_payloads(&next),
        [json!({ "batch": 2, "accepted": 1, "rejected": 0 })]
    );
    next.accept().await.unwrap();
    source.close(CLOSE).await.unwrap();
}

#[tokio::test]
async fn bad_plugin_config_is_an_error_that_names_the_field() {
    let file = load("iggy_connector_file_sink");
    let error = file
        .open_sink("file", "{}", OpenOptions::default())
        .await
        .unwrap_err();
    assert_eq!(error.kind, CallErrorKind::InvalidConfig);
    assert!(error.message.contains("missing field `path`"), "{error}");

    let random = load("iggy_connector_random_source");
    let error = random
        .open_source("r", r#"{"interval": "soon"}"#, None, OpenOptions::default())
        .await
        .unwrap_err();
    assert_eq!(error.kind, CallErrorKind::InvalidConfig);
    assert!(
        error.message.starts_with("plugin_config.interval:"),
        "{error}"
    );

    let error = random
        .open_source(
            "r",
            r#"{"messages_range": [5, 1]}"#,
            None,
            OpenOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(error.message.contains("messages_range"), "{error}");

    let error = random
        .open_sink("r", "{}", OpenOptions::default())
        .await
        .unwrap_err();
    assert_eq!(error.kind, CallErrorKind::InvalidCall);
    assert!(error.message.contains("is a source, not a sink"), "{error}");
}

#[tokio::test]
async fn a_panic_in_every_sink_entry_point_comes_back_as_an_error() {
    let plugin = load("faulty_sink_plugin");
    for stage in ["config", "open"] {
        let config = json!({ "panic_in": stage }).to_string();
        let error = plugin
            .open_sink(stage, &config, OpenOptions::default())
            .await
            .unwrap_err();
        assert_eq!(error.kind, CallErrorKind::Panic, "{stage}: {error}");
        assert!(
            error.message.contains(&format!("boom in {stage}")),
            "{error}"
        );
    }

    let sink = open_sink(&plugin, "consume", json!({ "panic_in": "consume" })).await;
    let error = sink.consume(&json_batch(0, 1)).await.unwrap_err();
    assert_eq!(error.kind, CallErrorKind::Panic);
    assert!(error.message.contains("boom in consume"), "{error}");
    // The instance refuses further work until it is reopened...
    let again = sink.consume(&json_batch(1, 1)).await.unwrap_err();
    assert_eq!(again.kind, CallErrorKind::Panic);
    assert!(
        again.message.contains("unusable after an earlier panic"),
        "{again}"
    );
    sink.close(CLOSE).await.unwrap();

    let sink = open_sink(&plugin, "close", json!({ "panic_in": "close" })).await;
    sink.consume(&json_batch(0, 1)).await.unwrap();
    let error = sink.close(CLOSE).await.unwrap_err();
    assert_eq!(error.kind, CallErrorKind::Panic);
    assert!(error.message.contains("boom in close"), "{error}");

    // ...and the host, and other instances of the same plugin, keep working.
    let healthy = open_sink(&plugin, "healthy", json!({})).await;
    healthy.consume(&json_batch(0, 5)).await.unwrap();
    healthy.close(CLOSE).await.unwrap();
}

#[tokio::test]
async fn a_panic_in_every_source_entry_point_comes_back_as_an_error() {
    let plugin = load("faulty_source_plugin");
    let error = plugin
        .open_source(
            "open",
            r#"{"panic_in": "open"}"#,
            None,
            OpenOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind, CallErrorKind::Panic);
    assert!(error.message.contains("boom in open"), "{error}");

    let source = open_source(&plugin, "poll", json!({ "panic_in": "poll" }), None).await;
    let error = source.poll().await.unwrap_err();
    assert_eq!(error.kind, CallErrorKind::Panic);
    assert!(error.message.contains("boom in poll"), "{error}");
    source.close(CLOSE).await.unwrap();

    let source = open_source(
        &plugin,
        "result",
        json!({ "panic_in": "batch_result" }),
        None,
    )
    .await;
    let batch = source.poll().await.unwrap();
    let error = batch.accept().await.unwrap_err();
    assert_eq!(error.kind, CallErrorKind::Panic);
    assert!(error.message.contains("boom in batch_result"), "{error}");
    source.close(CLOSE).await.unwrap();

    let source = open_source(&plugin, "close", json!({ "panic_in": "close" }), None).await;
    let error = source.close(CLOSE).await.unwrap_err();
    assert_eq!(error.kind, CallErrorKind::Panic);
    assert!(error.message.contains("boom in close"), "{error}");
}

#[tokio::test]
async fn connector_errors_keep_their_kind_and_message() {
    let plugin = load("faulty_sink_plugin");
    let sink = open_sink(&plugin, "flaky", json!({ "fail_consume_times": 2 })).await;
    let batch = json_batch(0, 3);
    for left in [1, 0] {
        let error = sink.consume(&batch).await.unwrap_err();
        assert_eq!(error.kind, CallErrorKind::Retryable);
        assert!(error.is_retryable());
        assert_eq!(error.message, format!("planned failure, {left} left"));
    }
    sink.consume(&batch).await.unwrap();
    sink.close(CLOSE).await.unwrap();

    let source_plugin = load("faulty_source_plugin");
    let source = open_source(
        &source_plugin,
        "flaky",
        json!({ "fail_poll_times": 1 }),
        None,
    )
    .await;
    let error = source.poll().await.unwrap_err();
    assert_eq!(error.kind, CallErrorKind::Retryable);
    let batch = source.poll().await.unwrap();
    assert_eq!(batch_payloads(&batch)[0]["batch"], 1);
    drop(batch);
    source.close(CLOSE).await.unwrap();
}

#[tokio::test]
async fn batch_results_reach_the_source_and_an_unsettled_batch_is_rejected() {
    let plugin = load("faulty_source_plugin");
    let source = open_source(&plugin, "acks", json!({}), None).await;
    let seen = |batch: &plugin_host::SourceBatch<'_>| {
        let payload = &batch_payloads(batch)[0];
        (
            payload["accepted"].as_u64().unwrap(),
            payload["rejected"].as_u64().unwrap(),
        )
    };
    let batch = source.poll().await.unwrap();
    assert_eq!(seen(&batch), (0, 0));
    batch.accept().await.unwrap();
    let batch = source.poll().await.unwrap();
    assert_eq!(seen(&batch), (1, 0));
    batch.reject().await.unwrap();
    let batch = source.poll().await.unwrap();
    assert_eq!(seen(&batch), (1, 1));
    drop(batch); // neither accepted nor rejected
    let batch = source.poll().await.unwrap();
    assert_eq!(seen(&batch), (1, 2), "the dropped batch was rejected first");
    batch.accept().await.unwrap();
    source.close(CLOSE).await.unwrap();
}

#[test]
fn a_wrong_abi_version_is_refused_naming_both_versions() {
    let error = PluginLoader::new()
        .load(&plugin_path("wrong_abi_plugin"))
        .unwrap_err();
    let LoadError::AbiMismatch {
        plugin_abi,
        host_abi,
        ..
    } = &error
    else {
        panic!("expected an ABI mismatch, got {error}");
    };
    assert_eq!(*plugin_abi, wrong_abi_plugin::DECLARED_ABI_VERSION);
    assert_eq!(*host_abi, ABI_VERSION);
    let message = error.to_string();
    assert!(message.contains("version 999"), "{message}");
    assert!(
        message.contains(&format!("version {ABI_VERSION}")),
        "{message}"
    );
    assert!(message.contains("wrong_abi_plugin"), "{message}");
}

#[test]
fn a_library_without_a_descriptor_is_a_clear_error() {
    let error = PluginLoader::new()
        .load(&plugin_path("no_descriptor_plugin"))
        .unwrap_err();
    assert!(matches!(error, LoadError::MissingSymbol { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("iggy_connector_descriptor_no_descriptor_plugin"),
        "{message}"
    );
    assert!(message.contains("is not a connector plugin"), "{message}");
}

#[test]
fn a_missing_library_lists_every_path_tried() {
    let extra = temp_dir("search-dir");
    let error = PluginLoader::new()
        .with_search_dir(&extra)
        .load("plugins/libnothing_here")
        .unwrap_err();
    let LoadError::NotFound { tried, requested } = &error else {
        panic!("expected NotFound, got {error}");
    };
    assert_eq!(requested, "plugins/libnothing_here");
    let cwd = std::env::current_dir().unwrap();
    let so = std::env::consts::DLL_EXTENSION;
    assert_eq!(tried[0], cwd.join(format!("plugins/libnothing_here.{so}")));
    assert_eq!(
        tried.last().unwrap(),
        &extra.join(format!("plugins/libnothing_here.{so}"))
    );
    let message = error.to_string();
    for path in tried {
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
}

/// The host's async worker must stay free while a sink works: on a single-threaded
/// runtime, another task makes progress while a 2-second `consume` is pending.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_sink_does_not_stall_other_tasks_on_the_host_runtime() {
    let plugin = load("faulty_sink_plugin");
    let sink = open_sink(&plugin, "slow", json!({ "consume_delay_ms": 2000 })).await;
    let batch = json_batch(0, 10);
    let other_task = tokio::spawn(async {
        for _ in 0..1_000 {
            tokio::task::yield_now().await;
        }
    });
    {
        let consume = sink.consume(&batch);
        tokio::pin!(consume);
        tokio::select! {
            biased;
            result = &mut consume => panic!("consume finished before the other task ran: {result:?}"),
            joined = other_task => joined.unwrap(),
        }
        consume.await.unwrap();
    }
    sink.close(CLOSE).await.unwrap();
}

#[tokio::test]
async fn closing_a_sink_with_a_hung_call_gives_up_after_the_timeout() {
    let plugin = load("faulty_sink_plugin");
    let sink = open_sink(&plugin, "hung", json!({ "consume_delay_ms": 600_000 })).await;
    let batch = json_batch(0, 3);
    // Start the call, then stop waiting for it: the batch must stay valid for the plugin.
    let started = tokio::time::timeout(Duration::from_millis(50), sink.consume(&batch)).await;
    assert!(started.is_err(), "the hung consume returned: {started:?}");
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        sink.close(Duration::from_millis(200)),
    )
    .await
    .expect("close honours its timeout")
    .unwrap_err();
    assert_eq!(error.kind, CallErrorKind::Retryable);
    assert!(error.message.contains("close within 200 ms"), "{error}");
    // The abandoned call released its reference to the batch once the plugin let go.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Arc::strong_count(&batch) > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batch was never released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn calls_kept_in_flight_are_served_in_the_order_they_were_made() {
    let dir = temp_dir("ordered");
    let path = dir.join("ordered.txt");
    let plugin = load("iggy_connector_file_sink");
    let options = OpenOptions { worker_threads: 4 };
    let config = json!({ "path": path, "format": "payload", "fsync": false }).to_string();
    let sink = plugin.open_sink("ordered", &config, options).await.unwrap();
    let batches: Vec<_> = (0..50).map(|i| json_batch(i * 2, 2)).collect();
    // Every call is made before any answer is awaited.
    let answers: Vec<_> = batches.iter().map(|batch| sink.consume(batch)).collect();
    for answer in answers {
        answer.await.unwrap();
    }
    sink.close(CLOSE).await.unwrap();
    let expected: String = (0..100).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
}
