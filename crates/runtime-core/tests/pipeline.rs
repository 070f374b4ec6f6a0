//! End to end through Iggy (the test server, or `IGGY_TEST_ADDRESS`): real connector
//! libraries, the real client, at-least-once delivery.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config_provider::{ActiveConfigs, ConnectorConfig, parse_connector_toml};
use connector_sdk::ConnectorKind;
use iggy_connectors_tests::{plugin_path, temp_dir};
use iggy_test_server::{OffsetOwner, TestTarget};
use plugin_host::PluginLoader;
use runtime_core::{
    ConnectorState, IggyBus, IggySettings, PluginRegistry, RestartPolicy, RetryPolicy, Runtime,
    RuntimeContext, StateStore,
};

const DEADLINE: Duration = Duration::from_secs(60);

async fn target() -> TestTarget {
    TestTarget::from_env().await.unwrap()
}

fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("e2e-{label}-{}-{nanos}", std::process::id())
}

async fn context(target: &TestTarget, state_dir: &std::path::Path) -> RuntimeContext {
    let bus = IggyBus::connect(&IggySettings {
        address: target.address.clone(),
        username: "iggy".to_owned(),
        password: "iggy".to_owned(),
        token: String::new(),
        tls: None,
        connect_retries: 2,
        reconnect_interval: std::time::Duration::from_millis(50),
    })
    .await
    .unwrap();
    RuntimeContext {
        bus: Arc::new(bus),
        state: StateStore::new(state_dir),
        retry: RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        },
        restart: RestartPolicy {
            enabled: false,
            ..RestartPolicy::default()
        },
    }
}

fn config(text: &str) -> ConnectorConfig {
    parse_connector_toml(text).unwrap()
}

fn active(configs: Vec<ConnectorConfig>) -> ActiveConfigs {
    let mut active = ActiveConfigs::default();
    for config in configs {
        let map = match config.kind() {
            ConnectorKind::Sink => &mut active.sinks,
            ConnectorKind::Source => &mut active.sources,
        };
        map.insert(config.key().to_owned(), config);
    }
    active
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn random_source(stream: &str, max_count: u64) -> ConnectorConfig {
    config(&format!(
        r#"
type = "source"
key = "random"
enabled = true
version = 0
name = "Random"
path = "{path}"
[[streams]]
stream = "{stream}"
topic = "t"
schema = "json"
[plugin_config]
interval = "1ms"
max_count = {max_count}
messages_range = [10, 20]
payload_size = 20
"#,
        path = plugin_path("iggy_connector_random_source"),
    ))
}

/// The random source's sequence numbers stored in topic `t` of `stream`, in order.
fn stored_seqs(server: &iggy_test_server::TestServer, stream: &str) -> Vec<u64> {
    server
        .messages(stream, "t")
        .unwrap()
        .iter()
        .map(|message| {
            serde_json::from_slice::<serde_json::Value>(&message.payload).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// A file sink `key` reading topic `t` of `stream` into `output`.
fn file_sink(
    key: &str,
    stream: &str,
    output: &std::path::Path,
    batch_length: u32,
) -> ConnectorConfig {
    config(&format!(
        r#"
type = "sink"
key = "{key}"
enabled = true
version = 0
name = "File"
path = "{path}"
[[streams]]
stream = "{stream}"
topics = ["t"]
schema = "json"
batch_length = {batch_length}
poll_interval = "2ms"
[plugin_config]
path = "{output}"
"#,
        path = plugin_path("iggy_connector_file_sink"),
        output = output.display(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_source_to_file_sink_delivers_every_message() {
    let target = target().await;
    let dir = temp_dir("e2e");
    let stream = unique("random-file");
    let output = dir.join("out.jsonl");
    let sink = file_sink("file", &stream, &output, 37);
    let context = context(&target, &dir.join("state")).await;
    let plugins = PluginRegistry::new(PluginLoader::new());
    let runtime = Runtime::start(
        active(vec![random_source(&stream, 300), sink]),
        &plugins,
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
            .is_some_and(|status| status.messages == 300)
    })
    .await;
    // The source's state records what Iggy accepted.
    let state = std::fs::read(dir.join("state/source_random.state")).unwrap();
    assert_eq!(state, 300u64.to_le_bytes());
    let metrics = runtime.prometheus();
    assert!(
        metrics.contains("iggy_connectors_messages_total{kind=\"source\",key=\"random\"} 300\n"),
        "{metrics}"
    );
    if let Some(server) = &target.server {
        assert_eq!(server.messages(&stream, "t").unwrap().len(), 300);
        let owner = OffsetOwner::Group("iggy-connect-sink-file".to_owned());
        assert_eq!(server.stored_offset(&stream, "t", &owner, 0), Some(299));
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_fails_then_succeeds_loses_nothing_and_one_that_keeps_failing_commits_nothing()
{
    let target = target().await;
    let dir = temp_dir("e2e-flaky");
    let stream = unique("flaky");
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
    let runtime = Runtime::start(configs, &plugins, context).await;

    eventually("the flaky sink delivered everything", || {
        runtime
            .status(ConnectorKind::Sink, "flaky")
            .is_some_and(|status| status.messages == 50)
    })
    .await;
    let flaky = runtime.status(ConnectorKind::Sink, "flaky").unwrap();
    assert_eq!(flaky.state, ConnectorState::Running);
    assert!(flaky.retries >= 2, "{flaky:?}");
    eventually("the broken sink failed", || {
        runtime
            .status(ConnectorKind::Sink, "broken")
            .is_some_and(|status| status.state == ConnectorState::Failed)
    })
    .await;
    let broken = runtime.status(ConnectorKind::Sink, "broken").unwrap();
    assert!(
        broken
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("planned failure"),
        "{broken:?}"
    );
    assert_eq!(broken.messages, 0);
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

#[tokio::test]
async fn a_missing_plugin_fails_its_connector_only() {
    let target = target().await;
    let dir = temp_dir("e2e-missing");
    let stream = unique("missing");
    let mut broken = random_source(&stream, 5);
    if let ConnectorConfig::Source(source) = &mut broken {
        source.key = "nowhere".to_owned();
        source.path = "no/such/libplugin".to_owned();
    }
    let context = context(&target, &dir.join("state")).await;
    let plugins = PluginRegistry::new(PluginLoader::new());
    let runtime = Runtime::start(
        active(vec![broken, random_source(&stream, 5)]),
        &plugins,
        context,
    )
    .await;
    let failed = runtime.status(ConnectorKind::Source, "nowhere").unwrap();
    assert_eq!(failed.state, ConnectorState::Failed);
    assert!(failed.last_error.unwrap().contains("tried"));
    eventually("the other source ran", || {
        runtime
            .status(ConnectorKind::Source, "random")
            .is_some_and(|status| status.messages == 5)
    })
    .await;
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// The test server drops every connection mid-stream (twice): the client reconnects,
/// failed calls are retried, and every message still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_lose_nothing() {
    let target = target().await;
    let Some(server) = &target.server else {
        eprintln!("skipped: needs the test server's fault injection");
        return;
    };
    let dir = temp_dir("e2e-drop");
    let stream = unique("drop");
    let output = dir.join("out.jsonl");
    let sink = file_sink("file", &stream, &output, 25);
    let mut source = random_source(&stream, 2000);
    if let ConnectorConfig::Source(source) = &mut source
        && let Some(plugin) = source.plugin_config.as_mut()
    {
        plugin["interval"] = serde_json::json!("2ms");
    }
    let mut context = context(&target, &dir.join("state")).await;
    context.retry = RetryPolicy {
        attempts: 50,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    let runtime = Runtime::start(active(vec![source, sink]), &plugins_for_test(), context).await;
    let lines = || {
        std::fs::read_to_string(&output)
            .map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    for threshold in [300, 900] {
        let deadline = Instant::now() + DEADLINE;
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

fn plugins_for_test() -> PluginRegistry {
    PluginRegistry::new(PluginLoader::new())
}

/// Iggy refuses a source's sends: the batch is rejected (the source rewinds), produced
/// again after a pause, and the state advances only with accepted batches. When the
/// refusals outlast the retry budget, the source fails with the error and its state
/// stays where the last accepted batch left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_batches_are_produced_again_and_do_not_advance_the_state() {
    let target = target().await;
    let Some(server) = &target.server else {
        eprintln!("skipped: needs the test server's fault injection");
        return;
    };
    let dir = temp_dir("e2e-reject");
    let stream = unique("reject");
    let state_file = dir.join("state/source_random.state");

    server.fail_next_sends(2);
    let first = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(
        active(vec![random_source(&stream, 100)]),
        &plugins_for_test(),
        first,
    )
    .await;
    eventually("100 messages produced", || {
        runtime
            .status(ConnectorKind::Source, "random")
            .is_some_and(|status| status.messages == 100)
    })
    .await;
    let status = runtime.status(ConnectorKind::Source, "random").unwrap();
    assert_eq!(status.retries, 2, "{status:?}");
    let seqs = stored_seqs(server, &stream);
    assert_eq!(
        seqs,
        (0..100).collect::<Vec<_>>(),
        "refused batches came again, in order, once"
    );
    assert_eq!(std::fs::read(&state_file).unwrap(), 100u64.to_le_bytes());
    runtime.shutdown(Duration::from_secs(10)).await;

    // Refusals that outlast the budget (4 attempts): failed, state unchanged.
    server.fail_next_sends(1000);
    let second = context(&target, &dir.join("state")).await;
    let more = random_source(&stream, 200);
    let runtime = Runtime::start(active(vec![more]), &plugins_for_test(), second).await;
    eventually("the source failed", || {
        runtime
            .status(ConnectorKind::Source, "random")
            .is_some_and(|status| status.state == ConnectorState::Failed)
    })
    .await;
    let status = runtime.status(ConnectorKind::Source, "random").unwrap();
    assert!(
        status.last_error.as_deref().unwrap().contains("4 attempts"),
        "{status:?}"
    );
    assert_eq!(std::fs::read(&state_file).unwrap(), 100u64.to_le_bytes());
    assert_eq!(server.messages(&stream, "t").unwrap().len(), 100);
    runtime.shutdown(Duration::from_secs(10)).await;
    server.fail_next_sends(0);
}

/// A connector that fails is restarted after a backoff and carries on from its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connector_is_restarted() {
    let target = target().await;
    let Some(server) = &target.server else {
        eprintln!("skipped: needs the test server's fault injection");
        return;
    };
    let dir = temp_dir("e2e-restart");
    let stream = unique("restart");
    // Four refused sends exhaust the retry budget (4 attempts); the fifth refusal meets
    // the restarted source, whose next attempt succeeds.
    server.fail_next_sends(5);
    let mut restarting = context(&target, &dir.join("state")).await;
    restarting.restart = RestartPolicy {
        enabled: true,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_restarts: Some(3),
    };
    let runtime = Runtime::start(
        active(vec![random_source(&stream, 50)]),
        &plugins_for_test(),
        restarting,
    )
    .await;
    eventually("every message after the restart", || {
        runtime
            .status(ConnectorKind::Source, "random")
            .is_some_and(|status| status.messages == 50 && status.state == ConnectorState::Running)
    })
    .await;
    let status = runtime.status(ConnectorKind::Source, "random").unwrap();
    assert_eq!(status.restarts, 1, "{status:?}");
    let seqs = stored_seqs(server, &stream);
    assert_eq!(seqs, (0..50).collect::<Vec<_>>());
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// Two sources and two sinks at once, one sink stuck in its plugin: the other pipeline
/// delivers everything meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_sink_does_not_hold_up_the_others() {
    let target = target().await;
    let dir = temp_dir("e2e-isolation");
    let (fast_stream, slow_stream) = (unique("fast"), unique("slow"));
    let output = dir.join("fast.jsonl");
    let mut fast_source = random_source(&fast_stream, 1000);
    let mut slow_source = random_source(&slow_stream, 1000);
    for (source, key) in [
        (&mut fast_source, "fast-source"),
        (&mut slow_source, "slow-source"),
    ] {
        if let ConnectorConfig::Source(source) = source {
            source.key = key.to_owned();
        }
    }
    let fast_sink = config(&format!(
        "type = \"sink\"\nkey = \"fast\"\nenabled = true\nversion = 0\nname = \"F\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{fast_stream}\"\ntopics = [\"t\"]\nschema = \"json\"\npoll_interval = \"2ms\"\n\
         [plugin_config]\npath = \"{}\"\nfsync = false\n",
        plugin_path("iggy_connector_file_sink"),
        output.display()
    ));
    // Every consume of this one takes ten minutes.
    let stuck_sink = config(&format!(
        "type = \"sink\"\nkey = \"stuck\"\nenabled = true\nversion = 0\nname = \"S\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{slow_stream}\"\ntopics = [\"t\"]\nschema = \"json\"\n\
         [plugin_config]\nconsume_delay_ms = 600000\n",
        plugin_path("faulty_sink_plugin"),
    ));
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(
        active(vec![fast_source, slow_source, fast_sink, stuck_sink]),
        &plugins_for_test(),
        context,
    )
    .await;
    eventually("the fast pipeline delivered everything", || {
        std::fs::read_to_string(&output).map_or(0, |text| text.lines().count()) >= 1000
    })
    .await;
    let stuck = runtime.status(ConnectorKind::Sink, "stuck").unwrap();
    assert_eq!(stuck.messages, 0, "{stuck:?}");
    // The stuck sink's own source is not held up either.
    eventually("the slow stream's source produced everything", || {
        runtime
            .status(ConnectorKind::Source, "slow-source")
            .is_some_and(|status| status.messages == 1000)
    })
    .await;
    assert_eq!(
        runtime
            .status(ConnectorKind::Sink, "stuck")
            .unwrap()
            .messages,
        0
    );
    // Shutting down abandons the stuck call after the deadline instead of hanging.
    tokio::time::timeout(
        Duration::from_secs(30),
        runtime.shutdown(Duration::from_secs(2)),
    )
    .await
    .expect("shutdown honours its deadline");
}
