//! The sink side, end to end: a random source's messages delivered to a file sink, a
//! sink retrying a failing plugin, reading a backlog ahead over partitions, and a
//! partition moving between two sinks of one group.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use connector_sdk::ConnectorKind;
use iggy_connectors_tests::{WAIT_LIMIT, eventually, plugin_path, target, temp_dir, unique};
use iggy_test_server::OffsetOwner;
use plugin_host::PluginLoader;
use runtime_core::{ConnectorState, PluginRegistry, Runtime, StateStore};

use crate::support::{
    active, client_with_topic, config, context, eventually_in, failed_with, file_sink,
    newest_state, plugins_for_test, produce_to_partition, random_source,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_source_to_file_sink_delivers_every_message() {
    let target = target().await;
    let dir = temp_dir("e2e");
    let stream = unique("e2e-random-file");
    let output = dir.join("out.jsonl");
    let sink = file_sink("file", &stream, &output, 37);
    let context = context(&target, &dir.join("state")).await;
    let plugins = PluginRegistry::new(PluginLoader::new());
    let runtime = Runtime::start(
        active(vec![random_source(&stream, 300), sink]),
        plugins,
        context,
    )
    .await;

    let lines = || {
        std::fs::read_to_string(&output)
            .map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    eventually("300 messages in the file", || lines().len() >= 300).await;
    let seqs: BTreeSet<u64> = lines()
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["payload"]["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        seqs,
        (0..300).collect::<BTreeSet<u64>>(),
        "every message, once each"
    );
    for status in runtime.statuses() {
        assert_eq!(status.state, ConnectorState::Running, "{status:?}");
    }
    // The source counts a batch just after Iggy stored it; the sink may be quicker.
    eventually("the source counted 300", || {
        runtime
            .status(ConnectorKind::Source, "random")
            .is_some_and(|status| status.metrics.messages_out == 300)
    })
    .await;
    // The source's saved record covers what Iggy accepted (as a send still pending, for
    // a restart to look for in Iggy, or as confirmed).
    let saved = StateStore::new(dir.join("state"))
        .read_saved("random")
        .await
        .unwrap();
    assert_eq!(newest_state(&saved), 300);
    let metrics = runtime.prometheus();
    assert!(
        metrics
            .contains("iggy_connectors_messages_out_total{kind=\"source\",key=\"random\"} 300\n"),
        "{metrics}"
    );
    if let Some(server) = &target.server {
        assert_eq!(server.messages(&stream, "t").unwrap().len(), 300);
        let owner = OffsetOwner::Group("iggy-connect-sink-file".to_owned());
        assert_eq!(server.stored_offset(&stream, "t", &owner, 0), Some(299));
    }
    runtime.shutdown(Duration::from_secs(10)).await;
    // Stopped, it saves the state as confirmed: nothing left to look for.
    let saved = StateStore::new(dir.join("state"))
        .read_saved("random")
        .await
        .unwrap();
    assert_eq!(
        (saved.state, saved.pending.len()),
        (Some(300u64.to_le_bytes().to_vec()), 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_fails_then_succeeds_loses_nothing_and_one_that_keeps_failing_commits_nothing()
{
    let target = target().await;
    let dir = temp_dir("e2e-flaky");
    let stream = unique("e2e-flaky");
    let sink = |key: &str, failures: u32| {
        config(&format!(
            r#"
type = "sink"
key = "{key}"
enabled = true
version = 0
name = "Faulty"
path = "{path}"
[[streams]]
stream = "{stream}"
topics = ["t"]
schema = "json"
batch_length = 1000
poll_interval = "5ms"
[plugin_config]
fail_consume_times = {failures}
"#,
            path = plugin_path("faulty_sink_plugin"),
        ))
    };
    let context = context(&target, &dir.join("state")).await;
    let plugins = PluginRegistry::new(PluginLoader::new());
    let configs = active(vec![
        random_source(&stream, 50),
        sink("flaky", 2),
        sink("broken", 1000),
    ]);
    let runtime = Runtime::start(configs, plugins, context).await;

    eventually("the flaky sink delivered everything", || {
        runtime
            .status(ConnectorKind::Sink, "flaky")
            .is_some_and(|status| status.metrics.messages_out == 50)
    })
    .await;
    let flaky = runtime.status(ConnectorKind::Sink, "flaky").unwrap();
    assert_eq!(flaky.state, ConnectorState::Running);
    assert!(flaky.metrics.retries >= 2, "{flaky:?}");
    let broken = failed_with(&runtime, ConnectorKind::Sink, "broken", "planned failure").await;
    assert_eq!(broken.metrics.messages_out, 0);
    if let Some(server) = &target.server {
        let owner = |group: &str| OffsetOwner::Group(group.to_owned());
        assert_eq!(
            server.stored_offset(&stream, "t", &owner("iggy-connect-sink-flaky"), 0),
            Some(49)
        );
        assert_eq!(
            server.stored_offset(&stream, "t", &owner("iggy-connect-sink-broken"), 0),
            None,
            "a failing sink stores no offset"
        );
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// Waits until group `group` has stored `expected` as its offset on `partition` of
/// `stream`/t, calling `meanwhile` on every look (for what must hold while waiting).
async fn wait_for_group_offset(
    client: &iggy::prelude::IggyClient,
    stream: &str,
    group: &str,
    partition: u32,
    expected: u64,
    mut meanwhile: impl FnMut(),
) {
    use iggy::prelude::*;
    let (stream_id, topic_id, group) = (
        Identifier::named(stream).unwrap(),
        Identifier::named("t").unwrap(),
        Consumer::group(Identifier::named(group).unwrap()),
    );
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let stored = client
            .get_consumer_offset(&group, &stream_id, &topic_id, Some(partition))
            .await
            .unwrap()
            .map(|offset| offset.stored_offset);
        if stored == Some(expected) {
            return;
        }
        meanwhile();
        assert!(
            Instant::now() < deadline,
            "partition {partition}: stored offset {stored:?}, {expected} expected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A backlog over three partitions, read in batches of 50: the sink reads each
/// partition's next batch ahead (by offset, on a second connection) and returns to the
/// group poll every so often, and still delivers every message once, in order within
/// its partition, with each partition's offset stored at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_reading_ahead_delivers_a_backlog_over_partitions_once_in_order() {
    const PARTITIONS: u32 = 3;
    const PER_PARTITION: u64 = 1000;
    let target = target().await;
    let dir = temp_dir("e2e-read-ahead");
    let stream = unique("e2e-read-ahead");
    let client = client_with_topic(&target, &stream, PARTITIONS).await;
    for partition in 0..PARTITIONS {
        produce_to_partition(&client, &stream, partition, PER_PARTITION).await;
    }
    let output = dir.join("out.jsonl");
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(
        active(vec![file_sink("file", &stream, &output, 50)]),
        plugins_for_test(),
        context,
    )
    .await;
    let total = (u64::from(PARTITIONS) * PER_PARTITION) as usize;
    let lines = || {
        std::fs::read_to_string(&output)
            .map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    eventually("every message in the file", || lines().len() >= total).await;
    for partition in 0..PARTITIONS {
        let group = "iggy-connect-sink-file";
        wait_for_group_offset(&client, &stream, group, partition, PER_PARTITION - 1, || {}).await;
    }
    let mut seen: Vec<Vec<u64>> = vec![Vec::new(); PARTITIONS as usize];
    for line in lines() {
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let partition = value["payload"]["partition"].as_u64().unwrap();
        assert_eq!(value["partition_id"].as_u64(), Some(partition), "{line}");
        seen[partition as usize].push(value["payload"]["seq"].as_u64().unwrap());
    }
    for (partition, seqs) in seen.iter().enumerate() {
        assert_eq!(
            *seqs,
            (0..PER_PARTITION).collect::<Vec<u64>>(),
            "partition {partition}: once each, in order"
        );
    }
    let status = runtime.status(ConnectorKind::Sink, "file").unwrap();
    assert_eq!(status.state, ConnectorState::Running, "{status:?}");
    assert_eq!(status.metrics.messages_out, total as u64);
    if let Some(server) = &target.server {
        // Each batch came from one poll with messages: the group's, or a read ahead.
        // A sink that stopped reading ahead would still deliver everything, only
        // slower, so the split is what shows it (about 1 group poll per 17 batches).
        use iggy_test_server::OffsetOwner;
        let polls = |owner: OffsetOwner| server.polls_with_messages(&stream, "t", &owner);
        let batches = total as u64 / 50;
        let group = polls(OffsetOwner::Group("iggy-connect-sink-file".to_owned()));
        let ahead = polls(OffsetOwner::Consumer(
            runtime_core::READ_AHEAD_CONSUMER.to_owned(),
        ));
        let (Some(group), Some(ahead)) = (group, ahead) else {
            panic!("no poll figures for {stream}/t");
        };
        assert_eq!(group + ahead, batches, "group {group}, read ahead {ahead}");
        assert!(
            ahead >= batches * 2 / 3,
            "only {ahead} of {batches} batches were read ahead"
        );
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// Two runtimes run the same sink, so their sinks share a consumer group: the second
/// joins while the first is busy with partition 1 (the only one with messages), the
/// partition moves to it, and the first's store of its batch in hand is refused. That
/// is a rebalance, not a failure: both stay running, and the group's offset reaches
/// the end (the moved batch may be delivered twice, nothing is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moving_to_another_member_fails_neither_sink() {
    const MESSAGES: u64 = 300;
    let target = target().await;
    let dir = temp_dir("e2e-rebalance");
    let stream = unique("e2e-rebalance");
    let client = client_with_topic(&target, &stream, 2).await;
    produce_to_partition(&client, &stream, 1, MESSAGES).await;
    let slow_sink = || {
        config(&format!(
            r#"
type = "sink"
key = "slow"
enabled = true
version = 0
name = "Slow"
path = "{path}"
[[streams]]
stream = "{stream}"
topics = ["t"]
schema = "json"
batch_length = 10
poll_interval = "2ms"
[plugin_config]
consume_delay_ms = 3
"#,
            path = plugin_path("faulty_sink_plugin"),
        ))
    };
    let first = Runtime::start(
        active(vec![slow_sink()]),
        plugins_for_test(),
        context(&target, &dir.join("first")).await,
    )
    .await;
    let delivered = |runtime: &Runtime| {
        runtime
            .status(ConnectorKind::Sink, "slow")
            .map_or(0, |status| status.metrics.messages_out)
    };
    eventually_in(&first, "the first sink delivering", || {
        delivered(&first) >= 20
    })
    .await;
    let second = Runtime::start(
        active(vec![slow_sink()]),
        plugins_for_test(),
        context(&target, &dir.join("second")).await,
    )
    .await;
    let neither_failed = || {
        for runtime in [&first, &second] {
            let status = runtime.status(ConnectorKind::Sink, "slow").unwrap();
            assert_ne!(status.state, ConnectorState::Failed, "{status:?}");
        }
    };
    wait_for_group_offset(
        &client,
        &stream,
        "iggy-connect-sink-slow",
        1,
        MESSAGES - 1,
        neither_failed,
    )
    .await;
    for runtime in [&first, &second] {
        let status = runtime.status(ConnectorKind::Sink, "slow").unwrap();
        assert_eq!(status.state, ConnectorState::Running, "{status:?}");
    }
    assert!(delivered(&first) + delivered(&second) >= MESSAGES);
    second.shutdown(Duration::from_secs(10)).await;
    first.shutdown(Duration::from_secs(10)).await;
}
