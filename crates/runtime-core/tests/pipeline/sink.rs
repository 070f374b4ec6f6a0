//! The sink side, end to end: a random source's messages delivered to a file sink, a
//! sink retrying a failing plugin, a sink of two topics, reading a backlog ahead over
//! partitions, a partition moving between two sinks of one group, and the lag of a
//! backlog on one partition.

use std::time::{Duration, Instant};

use config_provider::ConnectorConfig;
use connector_sdk::ConnectorKind;
use iggy_connectors_tests::{WAIT_LIMIT, eventually, plugin_path, target, temp_dir, unique};
use iggy_test_server::OffsetOwner;
use plugin_host::PluginLoader;
use runtime_core::{
    BusErrorKind, ConnectorState, PluginRegistry, Runtime, StallPolicy, StateStore,
};

use crate::support::{
    RecordingBus, active, client_with_topic, config, context, eventually_in, failed_with,
    file_sink, newest_state, plugins_for_test, produce, produce_to_partition, random_source,
    wait_for_group_offset,
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
    let seqs = || {
        lines()
            .iter()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                value["payload"]["seq"].as_u64().unwrap()
            })
            .collect::<Vec<u64>>()
    };
    eventually("300 messages in the file", || lines().len() >= 300).await;
    // One partition: the file holds each message once, in order (a duplicate shows).
    assert_eq!(
        seqs(),
        (0..300).collect::<Vec<u64>>(),
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
    // What each pipeline held, against the default budget: something, never more.
    for status in runtime.statuses() {
        let memory = &status.metrics;
        assert_eq!(
            memory.memory_budget_bytes,
            config_provider::DEFAULT_MEMORY_BUDGET,
            "{status:?}"
        );
        assert!(
            memory.memory_peak_bytes > 0 && memory.memory_peak_bytes <= memory.memory_budget_bytes,
            "{status:?}"
        );
        let peak = format!(
            "iggy_connectors_memory_peak_bytes{{kind=\"{}\",key=\"{}\"}} {}\n",
            status.kind, status.key, memory.memory_peak_bytes
        );
        assert!(metrics.contains(&peak), "{peak} in {metrics}");
    }
    if let Some(server) = &target.server {
        assert_eq!(server.messages(&stream, "t").unwrap().len(), 300);
        // The last batch's offset is stored after the file has it.
        let owner = OffsetOwner::Group("iggy-connect-sink-file".to_owned());
        eventually("the sink's offset stored", || {
            server.stored_offset(&stream, "t", &owner, 0) == Some(299)
        })
        .await;
    }
    runtime.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        seqs(),
        (0..300).collect::<Vec<u64>>(),
        "nothing came again later"
    );
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

/// A sink of two topics of a stream: each topic's messages are delivered once, in
/// order, and each topic's group stores its own offset, at that topic's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_of_two_topics_delivers_both_and_stores_each_ones_offset() {
    let target = target().await;
    let dir = temp_dir("e2e-two-topics");
    let stream = unique("e2e-two-topics");
    let client = client_with_topic(&target, &stream, 1).await;
    iggy_connectors_tests::create_topic(&client, &stream, "u", 1)
        .await
        .unwrap();
    // Different lengths, so that an offset stored on the wrong topic shows.
    let lengths = [("t", 30), ("u", 20)];
    for (topic, count) in lengths {
        produce(&client, &stream, topic, 0, count).await;
    }
    let output = dir.join("out.jsonl");
    let mut sink = file_sink("file", &stream, &output, 7);
    if let ConnectorConfig::Sink(sink) = &mut sink {
        sink.streams[0].topics = vec!["t".to_owned(), "u".to_owned()];
    }
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![sink]), plugins_for_test(), context).await;
    for (topic, count) in lengths {
        wait_for_group_offset(
            &client,
            (&stream, topic),
            "iggy-connect-sink-file",
            0,
            count - 1,
            || {},
        )
        .await;
    }
    runtime.shutdown(Duration::from_secs(10)).await;
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    for (topic, count) in lengths {
        let delivered: Vec<u64> = lines
            .iter()
            .filter(|line| line["topic"] == topic)
            .map(|line| line["payload"]["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(delivered, (0..count).collect::<Vec<_>>(), "topic {topic}");
    }
    assert_eq!(lines.len(), 50);
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
        wait_for_group_offset(
            &client,
            (&stream, "t"),
            group,
            partition,
            PER_PARTITION - 1,
            || {},
        )
        .await;
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

/// A sink stores a batch's offset while the next batch goes to the plugin, and starts
/// the next store only once that one is done: with the stores held back, the plugin has
/// exactly two batches beyond the stored offset (the duplicates a crash could cause)
/// and gets no third; each store let through lets one more batch go. Released, every
/// message arrives once, in order, and the offset reaches the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_delivers_at_most_two_batches_ahead_of_its_stored_offset() {
    const MESSAGES: u64 = 100;
    const BATCH: u64 = 10;
    let target = target().await;
    let dir = temp_dir("e2e-store-pipeline");
    let stream = unique("e2e-store-pipeline");
    let client = client_with_topic(&target, &stream, 1).await;
    produce_to_partition(&client, &stream, 0, MESSAGES).await;
    let output = dir.join("out.jsonl");
    let mut context = context(&target, &dir.join("state")).await;
    let recording = RecordingBus::around(&mut context);
    recording.hold_stores();
    let runtime = Runtime::start(
        active(vec![file_sink("file", &stream, &output, BATCH as u32)]),
        plugins_for_test(),
        context,
    )
    .await;
    let seqs = || -> Vec<u64> {
        std::fs::read_to_string(&output)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                value["payload"]["seq"].as_u64().unwrap()
            })
            .collect()
    };
    for let_through in 0..3 {
        let ahead = (let_through + 2) * BATCH;
        eventually_in(&runtime, &format!("{ahead} messages delivered"), || {
            seqs().len() as u64 == ahead && recording.stores_held() == 1
        })
        .await;
        // A negative cannot be waited for: a sink that ran ahead of its stores would
        // have delivered the whole backlog well within this window.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            seqs().len() as u64,
            ahead,
            "delivered with {let_through} stores let through"
        );
        recording.let_store_through();
    }
    recording.release_stores();
    wait_for_group_offset(
        &client,
        (&stream, "t"),
        "iggy-connect-sink-file",
        0,
        MESSAGES - 1,
        || {},
    )
    .await;
    assert_eq!(
        seqs(),
        (0..MESSAGES).collect::<Vec<_>>(),
        "once each, in order"
    );
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// Two runtimes run the same sink, so their sinks share a consumer group. The first
/// holds a batch of partition 1 (the only one with messages: its offset store waits)
/// when the second joins; the partition moves to the second, which delivers it, and a
/// store of the first's is refused (the partition is no longer its own). That is a
/// rebalance, not a failure: both stay running, no group is reset, and the group's
/// offset reaches the end (a batch may be delivered twice, nothing is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moving_to_another_member_fails_neither_sink() {
    const MESSAGES: u64 = 300;
    let target = target().await;
    let dir = temp_dir("e2e-rebalance");
    let stream = unique("e2e-rebalance");
    let group = "iggy-connect-sink-shared";
    let client = client_with_topic(&target, &stream, 2).await;
    produce_to_partition(&client, &stream, 1, MESSAGES).await;
    let sink = || {
        config(&format!(
            r#"
type = "sink"
key = "shared"
enabled = true
version = 0
name = "Shared"
path = "{path}"
[[streams]]
stream = "{stream}"
topics = ["t"]
schema = "json"
batch_length = 10
poll_interval = "2ms"
[plugin_config]
"#,
            path = plugin_path("faulty_sink_plugin"),
        ))
    };
    let mut first_context = context(&target, &dir.join("first")).await;
    let first_bus = RecordingBus::around(&mut first_context);
    first_bus.hold_stores();
    let first = Runtime::start(active(vec![sink()]), plugins_for_test(), first_context).await;
    let holding = || first_bus.stores_held() == 1;
    eventually_in(&first, "the first sink holding a batch", holding).await;
    let second = Runtime::start(
        active(vec![sink()]),
        plugins_for_test(),
        context(&target, &dir.join("second")).await,
    )
    .await;
    // The second joined.
    group_shares(&client, &stream, group, |shares| shares.len() == 2).await;
    // Ours moves the partition at once; a real server (cooperative) only once its owner
    // stored the offset of the batch it polled, and a moment later. So the first's
    // stores go one at a time until one is refused.
    let refused = loop {
        eventually_in(&first, "the first sink holding its next batch", holding).await;
        let answered = first_bus.stores().len();
        first_bus.let_store_through();
        eventually_in(&first, "the store answered", || {
            first_bus.stores().len() > answered
        })
        .await;
        let store = first_bus.stores()[answered];
        if store.outcome.is_err() {
            break store;
        }
    };
    first_bus.release_stores();
    assert_eq!(
        (refused.partition, refused.outcome),
        (1, Err(BusErrorKind::NotOwned)),
        "{:?}",
        first_bus.stores()
    );
    let delivered = |runtime: &Runtime| {
        runtime
            .status(ConnectorKind::Sink, "shared")
            .map_or(0, |status| status.metrics.messages_out)
    };
    eventually_in(&second, "the second sink delivering partition 1", || {
        delivered(&second) > 0
    })
    .await;
    let neither_failed = || {
        for runtime in [&first, &second] {
            let status = runtime.status(ConnectorKind::Sink, "shared").unwrap();
            assert_ne!(status.state, ConnectorState::Failed, "{status:?}");
        }
    };
    wait_for_group_offset(
        &client,
        (&stream, "t"),
        group,
        1,
        MESSAGES - 1,
        neither_failed,
    )
    .await;
    for runtime in [&first, &second] {
        let status = runtime.status(ConnectorKind::Sink, "shared").unwrap();
        assert_eq!(status.state, ConnectorState::Running, "{status:?}");
        assert_eq!(status.metrics.group_resets, 0, "{status:?}");
    }
    assert!(delivered(&first) + delivered(&second) >= MESSAGES);
    second.shutdown(Duration::from_secs(10)).await;
    first.shutdown(Duration::from_secs(10)).await;
}

/// Waits until the members of group `group` of `stream`/t share its partitions as
/// `shared` wants, and gives each member's partitions.
async fn group_shares(
    client: &iggy::prelude::IggyClient,
    stream: &str,
    group: &str,
    shared: impl Fn(&[Vec<u32>]) -> bool,
) -> Vec<Vec<u32>> {
    use iggy::prelude::*;
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let shares: Vec<Vec<u32>> = client
            .get_consumer_group(
                &Identifier::named(stream).unwrap(),
                &Identifier::named("t").unwrap(),
                &Identifier::named(group).unwrap(),
            )
            .await
            .unwrap()
            .map_or_else(Vec::new, |details| {
                details
                    .members
                    .into_iter()
                    .map(|member| member.partitions)
                    .collect()
            });
        if shared(&shares) {
            return shares;
        }
        assert!(Instant::now() < deadline, "group {group}: {shares:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A sink's lag is what its group has not read, over every partition of its topic.
/// Another member of the group, which never reads, holds a partition with a backlog:
/// that backlog is the sink's lag, exactly, and stays so while the sink polls its own
/// partitions, read to their end (their polls come back empty, and say nothing of the
/// group's lag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_on_one_partition_is_the_sinks_lag() {
    use iggy::prelude::*;
    const PARTITIONS: u32 = 3;
    const BACKLOG: u64 = 7;
    let target = target().await;
    let dir = temp_dir("e2e-lag");
    let stream = unique("e2e-lag");
    let group = "iggy-connect-sink-file";
    let id = |name: &str| Identifier::named(name).unwrap();
    let client = client_with_topic(&target, &stream, PARTITIONS).await;
    let mut context = context(&target, &dir.join("state")).await;
    // The backlog stands still on purpose: no stall to reset the group over.
    context.stall = StallPolicy::new(Duration::from_secs(3600));
    let recording = RecordingBus::around(&mut context);
    let sink = file_sink("file", &stream, &dir.join("out.jsonl"), 10);
    let runtime = Runtime::start(active(vec![sink]), plugins_for_test(), context).await;
    let status = || runtime.status(ConnectorKind::Sink, "file").unwrap();
    eventually_in(&runtime, "the sink running", || {
        status().state == ConnectorState::Running
    })
    .await;
    let idle = iggy_connectors_tests::iggy_client(&target.address)
        .await
        .unwrap();
    idle.join_consumer_group(&id(&stream), &id("t"), &id(group))
        .await
        .unwrap();
    let shares = group_shares(&client, &stream, group, |shares| {
        shares.len() == 2 && shares.iter().all(|partitions| !partitions.is_empty())
    })
    .await;
    // The idle member's partition: the one its poll comes back from (empty yet).
    let held = idle
        .poll_messages(
            &id(&stream),
            &id("t"),
            None,
            &Consumer::group(id(group)),
            &PollingStrategy::next(),
            1,
            false,
        )
        .await
        .unwrap()
        .partition_id;
    let own = shares
        .into_iter()
        .find(|partitions| !partitions.contains(&held))
        .unwrap();
    for partition in &own {
        produce_to_partition(&client, &stream, *partition, 5).await;
    }
    let read = 5 * own.len() as u64;
    eventually_in(&runtime, "the sink read its own partitions", || {
        status().metrics.messages_out == read
    })
    .await;
    produce_to_partition(&client, &stream, held, BACKLOG).await;
    eventually_in(&runtime, "the backlog as the lag", || {
        status().metrics.lag == BACKLOG
    })
    .await;
    // Looked at after each of the sink's next polls: once the second of two is back,
    // the sink is done with the first.
    for _ in 0..5 {
        let polled = recording.polls().len();
        eventually_in(&runtime, "two more polls", || {
            recording.polls().len() >= polled + 2
        })
        .await;
        assert_eq!(status().metrics.lag, BACKLOG, "{:?}", status());
    }
    let polls = recording.polls();
    assert!(
        polls
            .iter()
            .all(|poll| poll.partition != held || poll.messages == 0),
        "the sink read the idle member's partition (held {held}): {polls:?}"
    );
    runtime.shutdown(Duration::from_secs(10)).await;
}
