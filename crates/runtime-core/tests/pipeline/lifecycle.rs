//! Connectors' lifecycle in a runtime: a missing plugin or a stuck sink holds up no
//! other connector, a failed one is restarted, pause/resume/stop/start and a new config
//! version act on one connector, and each connector's connections close with it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use config_provider::ConnectorConfig;
use connector_sdk::ConnectorKind;
use iggy_connectors_tests::{WAIT_LIMIT, eventually, plugin_path, target, temp_dir, unique};
use plugin_host::PluginLoader;
use runtime_core::{ConnectorState, ControlError, PluginRegistry, RestartPolicy, Runtime};

use crate::support::{
    active, config, context, file_sink, plugins_for_test, random_source, restart_once, stored_seqs,
};

#[tokio::test]
async fn a_missing_plugin_is_its_connectors_error_only() {
    let target = target().await;
    let dir = temp_dir("e2e-missing");
    let stream = unique("e2e-missing");
    let mut broken = random_source(&stream, 5);
    if let ConnectorConfig::Source(source) = &mut broken {
        source.common.key = "nowhere".to_owned();
        source.common.path = "no/such/libplugin".to_owned();
    }
    let context = context(&target, &dir.join("state")).await;
    let plugins = PluginRegistry::new(PluginLoader::new());
    let runtime = Runtime::start(
        active(vec![broken, random_source(&stream, 5)]),
        plugins,
        context,
    )
    .await;
    let failed = runtime.status(ConnectorKind::Source, "nowhere").unwrap();
    assert_eq!(failed.state, ConnectorState::Error);
    assert!(failed.last_error.unwrap().contains("tried"));
    eventually("the other source ran", || {
        runtime
            .status(ConnectorKind::Source, "random")
            .is_some_and(|status| status.metrics.messages_out == 5)
    })
    .await;
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A connector that fails is restarted after a backoff and carries on from its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connector_is_restarted() {
    let target = target().await;
    let Some(server) = &target.server else {
        iggy_test_server::skip(
            "a_failed_connector_is_restarted",
            "needs the test server's fault injection",
        );
        return;
    };
    let dir = temp_dir("e2e-restart");
    let stream = unique("e2e-restart");
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
        plugins_for_test(),
        restarting,
    )
    .await;
    eventually("every message after the restart", || {
        runtime
            .status(ConnectorKind::Source, "random")
            .is_some_and(|status| {
                status.metrics.messages_out == 50 && status.state == ConnectorState::Running
            })
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
    let (fast_stream, slow_stream) = (unique("e2e-fast"), unique("e2e-slow"));
    let output = dir.join("fast.jsonl");
    let mut fast_source = random_source(&fast_stream, 1000);
    let mut slow_source = random_source(&slow_stream, 1000);
    for (source, key) in [
        (&mut fast_source, "fast-source"),
        (&mut slow_source, "slow-source"),
    ] {
        if let ConnectorConfig::Source(source) = source {
            source.common.key = key.to_owned();
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
        plugins_for_test(),
        context,
    )
    .await;
    eventually("the fast pipeline delivered everything", || {
        std::fs::read_to_string(&output).map_or(0, |text| text.lines().count()) >= 1000
    })
    .await;
    let stuck = runtime.status(ConnectorKind::Sink, "stuck").unwrap();
    assert_eq!(stuck.metrics.messages_out, 0, "{stuck:?}");
    // The stuck sink's own source is not held up either.
    eventually("the slow stream's source produced everything", || {
        runtime
            .status(ConnectorKind::Source, "slow-source")
            .is_some_and(|status| status.metrics.messages_out == 1000)
    })
    .await;
    assert_eq!(
        runtime
            .status(ConnectorKind::Sink, "stuck")
            .unwrap()
            .metrics
            .messages_out,
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

/// A paused sink consumes nothing while its source goes on; resumed, it catches up. A
/// stopped sink closes; started again, it goes on from its stored offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_stop_and_start_one_connector() {
    let target = target().await;
    let dir = temp_dir("e2e-pause");
    let stream = unique("e2e-pause");
    let output = dir.join("out.jsonl");
    let mut source = random_source(&stream, 3000);
    if let ConnectorConfig::Source(source) = &mut source
        && let Some(plugin) = source.common.plugin_config.as_mut()
    {
        plugin["interval"] = serde_json::json!("2ms");
    }
    let sink = file_sink("file", &stream, &output, 10);
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![source, sink]), plugins_for_test(), context).await;
    let produced = || {
        runtime
            .status(ConnectorKind::Source, "random")
            .map_or(0, |status| status.metrics.messages_out)
    };
    let consumed = || {
        runtime
            .status(ConnectorKind::Sink, "file")
            .map_or(0, |status| status.metrics.messages_out)
    };
    eventually("the sink consumed some", || consumed() > 50).await;

    runtime
        .pause_connector(ConnectorKind::Sink, "file")
        .await
        .unwrap();
    eventually("paused", || {
        runtime
            .status(ConnectorKind::Sink, "file")
            .is_some_and(|status| status.state == ConnectorState::Paused)
    })
    .await;
    let at_pause = consumed();
    let target_produced = produced() + 300;
    eventually("the source went on", || produced() >= target_produced).await;
    assert_eq!(consumed(), at_pause, "a paused sink consumes nothing");
    assert_eq!(
        runtime
            .status(ConnectorKind::Source, "random")
            .unwrap()
            .state,
        ConnectorState::Running,
        "pausing one connector leaves the others alone"
    );

    runtime
        .resume_connector(ConnectorKind::Sink, "file")
        .await
        .unwrap();
    eventually("resumed and caught up", || consumed() >= target_produced).await;

    runtime
        .stop_connector(ConnectorKind::Sink, "file")
        .await
        .unwrap();
    let stopped = runtime.status(ConnectorKind::Sink, "file").unwrap();
    assert_eq!(stopped.state, ConnectorState::Stopped);
    assert!(matches!(
        runtime.pause_connector(ConnectorKind::Sink, "file").await,
        Err(ControlError::NotRunning { .. })
    ));
    runtime
        .start_connector(ConnectorKind::Sink, "file")
        .await
        .unwrap();
    eventually("every message in the file", || {
        let seqs: BTreeSet<u64> = std::fs::read_to_string(&output)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|value| value["payload"]["seq"].as_u64())
            .collect();
        seqs.len() == 3000
    })
    .await;
    assert!(matches!(
        runtime.stop_connector(ConnectorKind::Sink, "nope").await,
        Err(ControlError::UnknownConnector { .. })
    ));
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A pause asked for while the source's plugin is in a poll holds the batch that poll
/// returns: nothing is stored after the pause was asked for, and the batch is stored
/// at resume (none lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_paused_mid_poll_stores_nothing_until_resumed() {
    let target = target().await;
    let dir = temp_dir("e2e-pause-poll");
    let stream = unique("e2e-pause-poll");
    // Batches of 10 a second apart: the plugin spends its time in `poll`, waiting.
    let mut source = random_source(&stream, 50);
    if let ConnectorConfig::Source(source) = &mut source
        && let Some(plugin) = source.common.plugin_config.as_mut()
    {
        plugin["interval"] = serde_json::json!("1s");
        plugin["messages_range"] = serde_json::json!([10, 10]);
    }
    // Another source, never paused, for time to pass by.
    let mut clock = random_source(&unique("e2e-pause-clock"), 1_000_000);
    if let ConnectorConfig::Source(clock) = &mut clock {
        clock.common.key = "clock".to_owned();
    }
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![source, clock]), plugins_for_test(), context).await;
    let produced = |key: &str| {
        runtime
            .status(ConnectorKind::Source, key)
            .map_or(0, |status| status.metrics.messages_out)
    };
    // Just after a batch was stored the next poll has begun its wait.
    eventually("a first batch stored", || produced("random") >= 10).await;
    runtime
        .pause_connector(ConnectorKind::Source, "random")
        .await
        .unwrap();
    let at_pause = produced("random");
    eventually("paused", || {
        runtime
            .status(ConnectorKind::Source, "random")
            .is_some_and(|status| status.state == ConnectorState::Paused)
    })
    .await;
    // Paused shows once the poll returned; its batch, were it sent on, would be
    // stored within the clock's next 20 batches.
    let later = produced("clock") + 300;
    eventually("the clock went on", || produced("clock") >= later).await;
    assert_eq!(
        produced("random"),
        at_pause,
        "the poll's batch waits for the resume"
    );
    runtime
        .resume_connector(ConnectorKind::Source, "random")
        .await
        .unwrap();
    eventually("every message stored after the resume", || {
        produced("random") == 50
    })
    .await;
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// Applying a new config version restarts just that connector, with the new config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_restarts_just_that_connector() {
    let target = target().await;
    let dir = temp_dir("e2e-version");
    let stream = unique("e2e-version");
    let (first, second) = (dir.join("v0.jsonl"), dir.join("v1.jsonl"));
    let mut source = random_source(&stream, 2000);
    if let ConnectorConfig::Source(source) = &mut source
        && let Some(plugin) = source.common.plugin_config.as_mut()
    {
        plugin["interval"] = serde_json::json!("2ms");
    }
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(
        active(vec![source, file_sink("file", &stream, &first, 10)]),
        plugins_for_test(),
        context,
    )
    .await;
    let lines = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|value| value["payload"]["seq"].as_u64())
            .collect::<Vec<_>>()
    };
    eventually("version 0 wrote some", || lines(&first).len() > 100).await;

    let mut next = file_sink("file", &stream, &second, 10);
    if let ConnectorConfig::Sink(sink) = &mut next {
        sink.common.version = 1;
    }
    runtime.apply_config(next).await.unwrap();
    let status = runtime.status(ConnectorKind::Sink, "file").unwrap();
    assert_eq!(status.version, 1);
    eventually("version 1 writes to its own file", || {
        lines(&second).len() > 100
    })
    .await;
    assert_eq!(
        runtime
            .config(ConnectorKind::Sink, "file")
            .await
            .unwrap()
            .common()
            .version,
        1
    );
    eventually("both files hold every message", || {
        let all: BTreeSet<u64> = lines(&first).into_iter().chain(lines(&second)).collect();
        all.len() == 2000
    })
    .await;
    let source_now = runtime.status(ConnectorKind::Source, "random").unwrap();
    assert_eq!(source_now.state, ConnectorState::Running);
    assert_eq!(source_now.restarts, 0);
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// Each connector has a connection to Iggy of its own (a sink two: its group member
/// and its reader), closed when it stops, so restarts (each one more run of the
/// connector) do not leak connections. (Counting connections needs our server.)
#[tokio::test]
async fn each_connector_has_its_own_connections_and_closes_them() {
    let target = target().await;
    let Some(server) = target.server.as_ref() else {
        iggy_test_server::skip(
            "each_connector_has_its_own_connections_and_closes_them",
            "counts the test server's connections",
        );
        return;
    };
    let dir = temp_dir("e2e-connections");
    let stream = unique("e2e-connections");
    let before = server.open_connections();
    let context = context(&target, &dir.join("state")).await;
    let shared = server.open_connections();
    assert_eq!(shared, before + 1, "the runtime's own connection");
    let runtime = Runtime::start(
        active(vec![
            random_source(&stream, 1_000_000),
            file_sink("file", &stream, &dir.join("out.jsonl"), 100),
        ]),
        plugins_for_test(),
        context,
    )
    .await;
    let deadline = Instant::now() + WAIT_LIMIT;
    let settles_at = async |expected: u32, what: &str| {
        while server.open_connections() != expected {
            assert!(
                Instant::now() < deadline,
                "{what}: {} connections open, {expected} expected",
                server.open_connections()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    settles_at(shared + 3, "one for the source, two for the sink").await;
    for _ in 0..3 {
        restart_once(&runtime, ConnectorKind::Source, "random").await;
        restart_once(&runtime, ConnectorKind::Sink, "file").await;
    }
    settles_at(shared + 3, "after restarts").await;
    for status in runtime.statuses() {
        assert_eq!(status.starts, 4, "a start and three restarts: {status:?}");
    }
    runtime
        .stop_connector(ConnectorKind::Source, "random")
        .await
        .unwrap();
    runtime
        .stop_connector(ConnectorKind::Sink, "file")
        .await
        .unwrap();
    settles_at(shared, "after the stops").await;
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A `plugin_config` field the plugin's description marks secret is redacted where the
/// runtime shows a config, though its name is no secret's.
#[tokio::test]
async fn fields_the_plugin_marks_secret_are_redacted() {
    let target = target().await;
    let dir = temp_dir("e2e-x-secret");
    let stream = unique("e2e-x-secret");
    let sink = crate::support::config(&format!(
        "type = \"sink\"\nkey = \"marked\"\nenabled = true\nversion = 0\nname = \"M\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopics = [\"t\"]\nschema = \"json\"\n\
         [plugin_config]\ndsn = \"postgres://app:hunter2@db/app\"\nlog_marker = \"shown\"\n",
        plugin_path("faulty_sink_plugin")
    ));
    iggy_connectors_tests::prepare_topic(&target.address, &stream, "t").await;
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(
        active(vec![sink.clone()]),
        PluginRegistry::new(PluginLoader::new()),
        context,
    )
    .await;
    let shown = runtime.redacted(&sink);
    assert_eq!(
        shown["plugin_config"]["dsn"],
        config_provider::REDACTED,
        "{shown}"
    );
    assert_eq!(shown["plugin_config"]["log_marker"], "shown", "{shown}");
    // What the connector runs with is the secret itself.
    assert_eq!(sink.plugin_config()["dsn"], "postgres://app:hunter2@db/app");
    runtime.shutdown(Duration::from_secs(10)).await;
}
