//! The server misbehaving under a running pipeline: dropped connections, restarts of
//! the server mid-stream, and the consumer group reset a sink makes when it finds its
//! group stalled. The restart tests take the server alone
//! ([`TestTarget::restartable`](iggy_test_server::TestTarget::restartable)), so they
//! must stay in the same test binary as the others.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config_provider::ConnectorConfig;
use connector_sdk::ConnectorKind;
use iggy_connectors_tests::{WAIT_LIMIT, eventually, logs, target, temp_dir, unique};
use iggy_test_server::TestTarget;
use runtime_core::{
    ConnectorState, Destination, IggyBus, IggySettings, RestartPolicy, RetryPolicy, Runtime,
    RuntimeContext, StallPolicy, StateStore,
};

use crate::support::{
    TopicCommandBus, active, bus, client_with_topic, context, eventually_in, file_sink,
    plugins_for_test, produce_to_partition, random_source,
};

/// The test server drops every connection mid-stream (twice): the client reconnects,
/// failed calls are retried, and every message still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_lose_nothing() {
    let target = target().await;
    let Some(server) = &target.server else {
        iggy_test_server::skip(
            "dropped_connections_lose_nothing",
            "needs the test server's fault injection",
        );
        return;
    };
    let dir = temp_dir("e2e-drop");
    let stream = unique("e2e-drop");
    let output = dir.join("out.jsonl");
    let sink = file_sink("file", &stream, &output, 25);
    let mut source = random_source(&stream, 2000);
    if let ConnectorConfig::Source(source) = &mut source
        && let Some(plugin) = source.common.plugin_config.as_mut()
    {
        plugin["interval"] = serde_json::json!("2ms");
    }
    let mut context = context(&target, &dir.join("state")).await;
    context.retry = RetryPolicy {
        attempts: 50,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    let runtime = Runtime::start(active(vec![source, sink]), plugins_for_test(), context).await;
    let lines = || {
        std::fs::read_to_string(&output)
            .map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    for threshold in [300, 900] {
        let deadline = Instant::now() + WAIT_LIMIT;
        while lines().len() < threshold {
            assert!(
                Instant::now() < deadline,
                "stuck at {} lines: {:?}",
                lines().len(),
                runtime.statuses()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.drop_connections();
    }
    eventually("every message after the drops", || {
        let seqs: BTreeSet<u64> = lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|value| value["payload"]["seq"].as_u64())
            .collect();
        seqs.len() == 2000
    })
    .await;
    for status in runtime.statuses() {
        assert_ne!(status.state, ConnectorState::Failed, "{status:?}");
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// Why a test that restarts the server cannot run against a real one.
fn restart_needs() -> String {
    format!(
        "restarting a real server needs {}",
        iggy_test_server::RESTART_COMMAND_ENV
    )
}

/// A context as the binary makes it (retries and restarts by default, a client that
/// keeps reconnecting for a while), for tests that restart the server.
async fn restart_proof_context(target: &TestTarget, state_dir: &std::path::Path) -> RuntimeContext {
    let bus = IggyBus::connect(&IggySettings {
        connect_retries: 100,
        reconnect_interval: Duration::from_millis(100),
        ..IggySettings::new(target.address.clone())
    })
    .await
    .unwrap();
    RuntimeContext {
        bus: TopicCommandBus::wrap(Arc::new(bus)),
        state: StateStore::new(state_dir),
        retry: RetryPolicy::default(),
        restart: RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..RestartPolicy::default()
        },
        stop_timeout: Duration::from_secs(10),
        // Shorter than the default, so that a test does not wait long for a reset.
        stall: StallPolicy {
            report_after: Duration::from_secs(3),
            reset_group_after: Duration::from_secs(1),
        },
        memory_budget: config_provider::DEFAULT_MEMORY_BUDGET,
        cluster: None,
    }
}

/// The random source's sequence numbers in the file sinks' outputs, each once.
fn seqs_in(outputs: &[std::path::PathBuf]) -> BTreeSet<u64> {
    outputs
        .iter()
        .filter_map(|output| std::fs::read_to_string(output).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter_map(|value| value["payload"]["seq"].as_u64())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The server is restarted twice mid-stream (killed, down for a second, started on
/// its data): the source and both sinks of one group carry on by themselves, and
/// every message arrives.
async fn sinks_survive_server_restarts(test: &str, partitions: u32) {
    const MESSAGES: u64 = 20_000;
    logs();
    let target = TestTarget::restartable().await.unwrap();
    if !target.can_restart() {
        iggy_test_server::skip(test, &restart_needs());
        return;
    }
    let dir = temp_dir("e2e-restart");
    let stream = unique("e2e-restart");
    let _client = client_with_topic(&target, &stream, partitions).await;
    let outputs = [dir.join("a.jsonl"), dir.join("b.jsonl")];
    // Two sinks of one group.
    let sink = |key: &str, output: &std::path::Path| {
        let mut sink = file_sink(key, &stream, output, 100);
        if let ConnectorConfig::Sink(config) = &mut sink {
            config.streams[0].consumer_group = Some("restarted".to_owned());
        }
        sink
    };
    let mut source = random_source(&stream, MESSAGES);
    if let ConnectorConfig::Source(source) = &mut source
        && let Some(plugin) = source.common.plugin_config.as_mut()
    {
        plugin["messages_range"] = serde_json::json!([50, 100]);
    }
    let runtime = Runtime::start(
        active(vec![source, sink("a", &outputs[0]), sink("b", &outputs[1])]),
        plugins_for_test(),
        restart_proof_context(&target, &dir.join("state")).await,
    )
    .await;
    for threshold in [2_000, 8_000] {
        eventually_in(&runtime, &format!("{threshold} messages delivered"), || {
            seqs_in(&outputs).len() >= threshold
        })
        .await;
        target.restart(Duration::from_secs(1)).await.unwrap();
    }
    eventually_in(&runtime, "every message after the restarts", || {
        seqs_in(&outputs).len() as u64 == MESSAGES
    })
    .await;
    assert_eq!(seqs_in(&outputs), (0..MESSAGES).collect::<BTreeSet<u64>>());
    // One reset per restart at most, shared by the group's two sinks: the second to
    // find a stall joins the group the first made again instead of resetting it too.
    let resets: u64 = ["a", "b"]
        .iter()
        .filter_map(|key| runtime.status(ConnectorKind::Sink, key))
        .map(|status| status.metrics.group_resets)
        .sum();
    assert!(resets <= 2, "{resets} group resets for 2 restarts");
    runtime.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_survive_server_restarts_with_one_partition() {
    sinks_survive_server_restarts("sinks_survive_server_restarts_with_one_partition", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_survive_server_restarts_with_three_partitions() {
    sinks_survive_server_restarts("sinks_survive_server_restarts_with_three_partitions", 3).await;
}

/// A reset names the group id its caller found stuck: the first reset makes the group
/// again with its offsets, and a second one that saw the old id only joins the new
/// group, so two sinks finding one stall do not reset it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_reset_keeps_the_offsets_and_a_stale_second_reset_only_joins() {
    let target = target().await;
    let stream = unique("e2e-reset");
    let client = client_with_topic(&target, &stream, 2).await;
    produce_to_partition(&client, &stream, 0, 5).await;
    produce_to_partition(&client, &stream, 1, 5).await;
    let (first, second) = (bus(&target).await, bus(&target).await);
    first
        .join_group(&Destination::new(&stream, "t"), "g")
        .await
        .unwrap();
    first
        .store_offset(&Destination::new(&stream, "t"), "g", 0, 2)
        .await
        .unwrap();
    let before = first
        .group_progress(&Destination::new(&stream, "t"), "g")
        .await
        .unwrap()
        .unwrap();

    assert!(
        first
            .reset_group(&Destination::new(&stream, "t"), "g", before.group_id)
            .await
            .unwrap()
    );
    let after = first
        .group_progress(&Destination::new(&stream, "t"), "g")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(after.group_id, before.group_id, "made again");
    let stored: Vec<Option<u64>> = after.partitions.iter().map(|p| p.stored).collect();
    assert_eq!(stored, [Some(2), None], "the offsets are kept");

    let reset_again = second
        .reset_group(&Destination::new(&stream, "t"), "g", before.group_id)
        .await
        .unwrap();
    assert!(!reset_again, "a reset that saw the old group only joins");
    let last = second
        .group_progress(&Destination::new(&stream, "t"), "g")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.group_id, after.group_id);
    first.close().await;
    second.close().await;
}
