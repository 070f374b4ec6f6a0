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
    ConnectorState, ControlError, IggyBus, IggySettings, PluginRegistry, RestartPolicy,
    RetryPolicy, Runtime, RuntimeContext, SavedState, StallPolicy, StateStore,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// Shows the runtime's logs as `RUST_LOG` asks (none by default), in the test's output.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

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
    RuntimeContext {
        bus: bus(target).await,
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
        stop_timeout: Duration::from_secs(10),
        stall: StallPolicy::default(),
    }
}

/// Against a real server whose build refuses the 0.11 client's topic options (see
/// `ensure_topic` in the test server's conformance tests), topics are created by
/// `IGGY_TEST_CREATE_TOPIC_COMMAND` ([`TestTarget::create_topic_by_command`]) when the
/// client's create fails. Everything else goes to the bus.
struct TopicCommandBus {
    inner: Arc<dyn runtime_core::MessageBus>,
}

impl TopicCommandBus {
    /// `bus` as it is, unless `IGGY_TEST_CREATE_TOPIC_COMMAND` is set.
    fn wrap(bus: Arc<dyn runtime_core::MessageBus>) -> Arc<dyn runtime_core::MessageBus> {
        if std::env::var_os(iggy_test_server::CREATE_TOPIC_COMMAND_ENV).is_some() {
            Arc::new(TopicCommandBus { inner: bus })
        } else {
            bus
        }
    }
}

#[async_trait::async_trait]
impl runtime_core::MessageBus for TopicCommandBus {
    async fn ensure_topic(&self, stream: &str, topic: &str) -> Result<(), runtime_core::BusError> {
        if self.inner.ensure_topic(stream, topic).await.is_ok() {
            return Ok(());
        }
        // The client created the stream before its topic create was refused.
        if let Some(created) = TestTarget::create_topic_by_command(stream, topic, 1) {
            created.map_err(runtime_core::BusError::new)?;
        }
        self.inner.ensure_topic(stream, topic).await
    }

    async fn send(
        &self,
        stream: &str,
        topic: &str,
        messages: Vec<runtime_core::OutgoingMessage>,
    ) -> Result<(), runtime_core::BusError> {
        self.inner.send(stream, topic, messages).await
    }

    async fn prepare_send(
        &self,
        stream: &str,
        topic: &str,
        messages: Vec<runtime_core::OutgoingMessage>,
    ) -> Result<runtime_core::PreparedSend, runtime_core::BusError> {
        self.inner.prepare_send(stream, topic, messages).await
    }

    async fn send_prepared(
        &self,
        stream: &str,
        topic: &str,
        prepared: runtime_core::PreparedSend,
    ) -> Result<(), runtime_core::BusError> {
        self.inner.send_prepared(stream, topic, prepared).await
    }

    async fn join_group(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
    ) -> Result<(), runtime_core::BusError> {
        self.inner.join_group(stream, topic, group).await
    }

    async fn poll(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
        count: u32,
    ) -> Result<runtime_core::Polled, runtime_core::BusError> {
        self.inner.poll(stream, topic, group, count).await
    }

    async fn read(
        &self,
        stream: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        count: u32,
    ) -> Result<Option<runtime_core::Polled>, runtime_core::BusError> {
        self.inner
            .read(stream, topic, partition, offset, count)
            .await
    }

    async fn store_offset(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), runtime_core::BusError> {
        self.inner
            .store_offset(stream, topic, group, partition, offset)
            .await
    }

    async fn find_marker(
        &self,
        stream: &str,
        topic: &str,
        marker: u128,
    ) -> Result<Option<bool>, runtime_core::BusError> {
        self.inner.find_marker(stream, topic, marker).await
    }

    async fn group_progress(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
    ) -> Result<Option<runtime_core::GroupProgress>, runtime_core::BusError> {
        self.inner.group_progress(stream, topic, group).await
    }

    async fn reset_group(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
        seen: u32,
    ) -> Result<bool, runtime_core::BusError> {
        self.inner.reset_group(stream, topic, group, seen).await
    }

    fn connected(&self) -> bool {
        self.inner.connected()
    }

    async fn for_connector(
        &self,
        key: &str,
    ) -> Result<Option<Arc<dyn runtime_core::MessageBus>>, runtime_core::BusError> {
        let own = self.inner.for_connector(key).await?;
        Ok(own.map(|bus| {
            Arc::new(TopicCommandBus { inner: bus }) as Arc<dyn runtime_core::MessageBus>
        }))
    }

    async fn close(&self) {
        self.inner.close().await;
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

/// Waits until a connector failed, and checks that its error mentions `cause`.
async fn failed_with(
    runtime: &Runtime,
    kind: ConnectorKind,
    key: &str,
    cause: &str,
) -> runtime_core::ConnectorStatus {
    eventually_in(runtime, &format!("{kind} {key} failed"), || {
        runtime
            .status(kind, key)
            .is_some_and(|status| status.state == ConnectorState::Failed)
    })
    .await;
    let status = runtime.status(kind, key).unwrap();
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains(cause),
        "{status:?}"
    );
    status
}

/// [`eventually`], showing the runtime's statuses when it times out.
async fn eventually_in(runtime: &Runtime, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}; {:#?}",
            runtime.statuses()
        );
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

/// The random source's position in a saved record: the state of its newest pending
/// send, or the confirmed state.
fn newest_state(saved: &SavedState) -> u64 {
    position(
        saved
            .pending
            .iter()
            .rev()
            .find_map(|send| send.state.as_deref())
            .or(saved.state.as_deref()),
    )
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
        plugins,
        context,
    )
    .await;
    let failed = runtime.status(ConnectorKind::Source, "nowhere").unwrap();
    assert_eq!(failed.state, ConnectorState::Failed);
    assert!(failed.last_error.unwrap().contains("tried"));
    eventually("the other source ran", || {
        runtime
            .status(ConnectorKind::Source, "random")
            .is_some_and(|status| status.metrics.messages_out == 5)
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
        iggy_test_server::skip(
            "dropped_connections_lose_nothing",
            "needs the test server's fault injection",
        );
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
    let runtime = Runtime::start(active(vec![source, sink]), plugins_for_test(), context).await;
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
        iggy_test_server::skip(
            "rejected_batches_are_produced_again_and_do_not_advance_the_state",
            "needs the test server's fault injection",
        );
        return;
    };
    let dir = temp_dir("e2e-reject");
    let stream = unique("reject");
    let saved = || async {
        StateStore::new(dir.join("state"))
            .read("random")
            .await
            .unwrap()
            .unwrap()
    };

    server.fail_next_sends(2);
    let first = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(
        active(vec![random_source(&stream, 100)]),
        plugins_for_test(),
        first,
    )
    .await;
    eventually("100 messages produced", || {
        runtime
            .status(ConnectorKind::Source, "random")
            .is_some_and(|status| status.metrics.messages_out == 100)
    })
    .await;
    let status = runtime.status(ConnectorKind::Source, "random").unwrap();
    assert_eq!(status.metrics.retries, 2, "{status:?}");
    let seqs = stored_seqs(server, &stream);
    assert_eq!(
        seqs,
        (0..100).collect::<Vec<_>>(),
        "refused batches came again, in order, once"
    );
    runtime.shutdown(Duration::from_secs(10)).await;
    assert_eq!(saved().await, 100u64.to_le_bytes());

    // Refusals that outlast the budget (4 attempts): failed, state unchanged.
    server.fail_next_sends(1000);
    let second = context(&target, &dir.join("state")).await;
    let more = random_source(&stream, 200);
    let runtime = Runtime::start(active(vec![more]), plugins_for_test(), second).await;
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
    assert_eq!(saved().await, 100u64.to_le_bytes());
    assert_eq!(server.messages(&stream, "t").unwrap().len(), 100);
    runtime.shutdown(Duration::from_secs(10)).await;
    server.fail_next_sends(0);
}

/// A refused send while many batches are in flight: the later ones, whose payloads are
/// still read in place from the plugin, are rejected (never a settle left waiting for
/// them), produced again, and every message is stored once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_send_with_batches_in_flight_rejects_them_all_and_loses_nothing() {
    let target = target().await;
    let Some(server) = &target.server else {
        iggy_test_server::skip(
            "a_refused_send_with_batches_in_flight_rejects_them_all_and_loses_nothing",
            "needs the test server's fault injection",
        );
        return;
    };
    let dir = temp_dir("e2e-reject-in-flight");
    let stream = unique("reject-in-flight");
    let mut source = random_source(&stream, 2000);
    if let ConnectorConfig::Source(source) = &mut source {
        // Five 10-message batches a send: the poller has the rest of the 16 that may
        // be unsettled waiting behind the refused send.
        source.streams[0].batch_length = 50;
        source.streams[0].linger_time = config_provider::ConfigDuration::from_millis(100);
        source.plugin_config = Some(serde_json::json!({
            "interval": "0ms", "max_count": 2000, "messages_range": [10, 10], "payload_size": 20
        }));
    }
    server.fail_next_sends(2);
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![source]), plugins_for_test(), context).await;
    produced(&runtime, 2000).await;
    let status = runtime.status(ConnectorKind::Source, "random").unwrap();
    assert_eq!(status.metrics.retries, 2, "{status:?}");
    assert_eq!(status.state, ConnectorState::Running, "{status:?}");
    assert_eq!(
        stored_seqs(server, &stream),
        (0..2000).collect::<Vec<_>>(),
        "every message once, in order"
    );
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// Runs the source `random` for 400 messages in sends of one 20-message batch each, from
/// a plugin that never waits (so that sends would run ahead of the state if nothing held
/// them), and returns the record saved at each send with the send's marker.
async fn saved_at_each_send(label: &str, verified_resume: bool) -> Vec<(SavedState, Option<u128>)> {
    let target = target().await;
    let dir = temp_dir(&format!("e2e-{label}"));
    let stream = unique(label);
    let mut source = random_source(&stream, 400);
    if let ConnectorConfig::Source(source) = &mut source {
        assert_eq!(source.max_unsaved_sends, 1, "the default");
        assert!(source.verified_resume, "the default");
        source.verified_resume = verified_resume;
        source.streams[0].batch_length = 20;
        source.plugin_config = Some(serde_json::json!({
            "interval": "0ms", "max_count": 400, "messages_range": [20, 20], "payload_size": 10
        }));
    }
    let state = dir.join("state");
    let mut context = context(&target, &state).await;
    let recording = RecordingBus::watching(&mut context, Some(state));
    let runtime = Runtime::start(active(vec![source]), plugins_for_test(), context).await;
    produced(&runtime, 400).await;
    runtime.shutdown(Duration::from_secs(10)).await;
    let sends = recording.sends();
    assert_eq!(sends.len(), 20, "{sends:?}");
    assert!(sends.iter().all(|(count, _)| *count == 20), "{sends:?}");
    recording.saved_at_send()
}

/// The random source's state (the count of messages it has committed).
fn position(state: Option<&[u8]>) -> u64 {
    state.map_or(0, |state| u64::from_le_bytes(state.try_into().unwrap()))
}

/// Without verified resume, with the default `max_unsaved_sends` (1), no send starts
/// before the state covering every earlier send is on disk, so a crash makes the
/// source produce again at most the send in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_a_send_waits_for_the_state_of_the_ones_before() {
    for (index, (saved, marker)) in saved_at_each_send("unsaved", false)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            position(saved.state.as_deref()),
            20 * index as u64,
            "a send began before the state caught up"
        );
        assert!(
            saved.pending.is_empty() && marker.is_none(),
            "nothing marked"
        );
    }
}

/// With verified resume (the default), each send goes only once a record naming it is
/// on disk: the state it leads to and the marker its last message carries, after the
/// confirmed state of the sends before (or theirs, pending too). So a crash at any
/// moment leaves a record from which a restart finds what Iggy stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_each_send_is_saved_as_pending_before_it_goes() {
    for (index, (saved, marker)) in saved_at_each_send("pending", true)
        .await
        .into_iter()
        .enumerate()
    {
        // The builder may have saved the next send already: the record then names both.
        let this = saved
            .pending
            .iter()
            .find(|send| Some(send.marker) == marker)
            .expect("the send is saved as pending, with its marker");
        assert_eq!(
            position(this.state.as_deref()),
            20 * (index as u64 + 1),
            "the state it leads to"
        );
        assert_eq!(
            position(saved.state.as_deref()) + 20 * saved.pending.len() as u64,
            newest_state(&saved),
            "the pending sends follow the confirmed state: {saved:?}"
        );
    }
}

/// After a crash, a restart asks Iggy which of the pending sends it stored: it resumes
/// after the last one found (its marker is in the topic) and produces the first one not
/// found again, however far the record had got; the marker never reaches a sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_after_the_pending_sends_iggy_stored() {
    use runtime_core::{OutgoingMessage, PendingSend, SEND_MARKER_HEADER};
    let target = target().await;
    let dir = temp_dir("e2e-resume");
    let stream = unique("resume");
    let state = dir.join("state");
    let context = context(&target, &state).await;
    // What a crash leaves: confirmed at 50; a send up to 80 that Iggy stored (its
    // marked message is in the topic); a send up to 120 it did not store.
    let (stored, lost) = (0x5eed_0001_u128, 0x5eed_0002_u128);
    let marked = |marker: u128| connector_sdk::OwnedHeader {
        key: SEND_MARKER_HEADER.to_owned(),
        kind: connector_sdk::HeaderKind::Uint128,
        value: marker.to_le_bytes().to_vec(),
    };
    context.bus.ensure_topic(&stream, "t").await.unwrap();
    context
        .bus
        .send(
            &stream,
            "t",
            vec![OutgoingMessage {
                id: None,
                headers: vec![
                    marked(stored),
                    connector_sdk::OwnedHeader::string("kept", "yes"),
                ],
                payload: bytes::Bytes::from_static(b"{\"seq\":79}"),
            }],
        )
        .await
        .unwrap();
    let pending = |upto: u64, marker: u128| PendingSend {
        state: Some(upto.to_le_bytes().to_vec()),
        stream: stream.clone(),
        topic: "t".to_owned(),
        marker,
    };
    StateStore::new(&state)
        .write_saved(
            "random",
            SavedState {
                state: Some(50u64.to_le_bytes().to_vec()),
                pending: vec![pending(80, stored), pending(120, lost)],
            },
        )
        .await
        .unwrap();

    let runtime = Runtime::start(
        active(vec![random_source(&stream, 150)]),
        plugins_for_test(),
        context,
    )
    .await;
    produced(&runtime, 70).await;
    runtime.shutdown(Duration::from_secs(10)).await;

    let messages = read_topic(&target, &stream, "t", 71).await;
    let values: Vec<serde_json::Value> = messages
        .iter()
        .map(|message| serde_json::from_slice(&message.payload).unwrap())
        .collect();
    assert_eq!(
        seqs(&values),
        (79..150).collect::<Vec<_>>(),
        "resumed after the stored send (80), not after the lost one (120)"
    );
    let headers: Vec<&str> = messages[0]
        .headers
        .iter()
        .map(|header| header.key.as_str())
        .collect();
    assert_eq!(headers, ["kept"], "the marker is not handed on");
    let saved = StateStore::new(&state).read_saved("random").await.unwrap();
    assert_eq!(
        (saved.state, saved.pending.len()),
        (Some(150u64.to_le_bytes().to_vec()), 0)
    );
}

/// The marker search reads back from the topic's end: a marker behind other messages
/// is found, one that was never sent or lies beyond the search depth is not. (The depth
/// is per partition: the last check expects the topic as the runtime creates it, with
/// one partition.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_is_found_behind_other_messages_within_the_search_depth() {
    use runtime_core::{MARKER_SEARCH_DEPTH, OutgoingMessage, SEND_MARKER_HEADER};
    let target = target().await;
    let dir = temp_dir("e2e-marker");
    let stream = unique("marker");
    let bus = context(&target, &dir.join("state")).await.bus;
    let message = |marker: Option<u128>| OutgoingMessage {
        id: None,
        headers: marker
            .map(|marker| connector_sdk::OwnedHeader {
                key: SEND_MARKER_HEADER.to_owned(),
                kind: connector_sdk::HeaderKind::Uint128,
                value: marker.to_le_bytes().to_vec(),
            })
            .into_iter()
            .collect(),
        payload: bytes::Bytes::from_static(b"{}"),
    };
    let (bus, stream) = (&bus, stream.as_str());
    let others = |count: u32| async move {
        for _ in 0..count / 500 {
            bus.send(stream, "t", (0..500).map(|_| message(None)).collect())
                .await
                .unwrap();
        }
    };
    bus.ensure_topic(stream, "t").await.unwrap();
    assert_eq!(
        bus.find_marker(stream, "t", 1).await.unwrap(),
        Some(false),
        "empty topic"
    );
    bus.send(stream, "t", vec![message(Some(1))]).await.unwrap();
    others(2500).await;
    assert_eq!(
        bus.find_marker(stream, "t", 1).await.unwrap(),
        Some(true),
        "three pages back"
    );
    assert_eq!(
        bus.find_marker(stream, "t", 2).await.unwrap(),
        Some(false),
        "never sent"
    );
    others(MARKER_SEARCH_DEPTH).await;
    assert_eq!(
        bus.find_marker(stream, "t", 1).await.unwrap(),
        Some(false),
        "beyond the search depth"
    );
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

/// A faulty sink `key` on topic `t` of `stream` that fails permanently on any batch
/// holding one of `poison` (payload fragments), under `policy`.
fn poisoned_sink(key: &str, stream: &str, poison: &[&str], policy: &str) -> ConnectorConfig {
    let poison = poison
        .iter()
        .map(|fragment| format!("'{fragment}'"))
        .collect::<Vec<_>>()
        .join(", ");
    config(&format!(
        r#"
type = "sink"
key = "{key}"
enabled = true
version = 0
name = "Poisoned"
path = "{path}"
error_policy = "{policy}"
[dead_letter]
stream = "{stream}"
topic = "dead"
[[streams]]
stream = "{stream}"
topics = ["t"]
schema = "json"
batch_length = 20
poll_interval = "2ms"
[plugin_config]
fail_payloads_containing = [{poison}]
"#,
        path = plugin_path("faulty_sink_plugin"),
    ))
}

async fn bus(target: &TestTarget) -> Arc<dyn runtime_core::MessageBus> {
    let bus = IggyBus::connect(&IggySettings {
        connect_retries: 2,
        reconnect_interval: Duration::from_millis(50),
        ..IggySettings::new(target.address.clone())
    })
    .await
    .unwrap();
    TopicCommandBus::wrap(Arc::new(bus))
}

/// The first `count` messages of `stream`/`topic`, read as a consumer group of the
/// test's own (so nothing the runtime stores is touched).
async fn read_topic(
    target: &TestTarget,
    stream: &str,
    topic: &str,
    count: usize,
) -> Vec<runtime_core::IncomingMessage> {
    let reader = bus(target).await;
    reader.join_group(stream, topic, "check").await.unwrap();
    let mut messages = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while messages.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} messages",
            messages.len()
        );
        let polled = reader.poll(stream, topic, "check", 100).await.unwrap();
        match polled.messages.last() {
            Some(last) => reader
                .store_offset(stream, topic, "check", polled.partition_id, last.offset)
                .await
                .unwrap(),
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        messages.extend(polled.messages);
    }
    messages
}

/// A string header's value ("" when absent).
fn header(message: &runtime_core::IncomingMessage, key: &str) -> String {
    message
        .headers
        .iter()
        .find(|header| header.key == key)
        .map(|header| String::from_utf8_lossy(&header.value).into_owned())
        .unwrap_or_default()
}

/// A signed-in client of the target, with `stream` and its topic `t` of `partitions`
/// partitions made.
async fn client_with_topic(
    target: &TestTarget,
    stream: &str,
    partitions: u32,
) -> iggy::prelude::IggyClient {
    let client = iggy_connectors_tests::iggy_client(&target.address)
        .await
        .unwrap();
    iggy_connectors_tests::create_topic(&client, stream, "t", partitions)
        .await
        .unwrap();
    client
}

/// Produces `count` JSON messages `{"partition": p, "seq": n}` to one partition of
/// topic `t`, `seq` counting from 0.
async fn produce_to_partition(
    client: &iggy::prelude::IggyClient,
    stream: &str,
    partition: u32,
    count: u64,
) {
    use iggy::prelude::*;
    let mut messages: Vec<IggyMessage> = (0..count)
        .map(|seq| {
            let payload = serde_json::json!({ "partition": partition, "seq": seq });
            IggyMessage::builder()
                .payload(payload.to_string().into())
                .build()
                .unwrap()
        })
        .collect();
    client
        .send_messages(
            &Identifier::named(stream).unwrap(),
            &Identifier::named("t").unwrap(),
            &Partitioning::partition_id(partition),
            &mut messages,
        )
        .await
        .unwrap();
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
    let deadline = Instant::now() + DEADLINE;
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
    let stream = unique("read-ahead");
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
    let stream = unique("rebalance");
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

/// Two poison messages among 50: each goes to the dead letter topic with headers naming
/// the error and its origin; the rest reach the sink; the offset moves past all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_messages_go_to_the_dead_letter_topic_with_their_error() {
    use runtime_core::dead_letter;
    let target = target().await;
    let dir = temp_dir("e2e-dead-letter");
    let stream = unique("dead-letter");
    let sink = poisoned_sink(
        "poisoned",
        &stream,
        &["\"seq\":7,", "\"seq\":31,"],
        "dead_letter",
    );
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(
        active(vec![random_source(&stream, 50), sink]),
        plugins_for_test(),
        context,
    )
    .await;
    eventually_in(&runtime, "every message handled", || {
        runtime
            .status(ConnectorKind::Sink, "poisoned")
            .is_some_and(|status| status.metrics.messages_out + status.metrics.dead_letters == 50)
    })
    .await;
    let status = runtime.status(ConnectorKind::Sink, "poisoned").unwrap();
    assert_eq!(status.state, ConnectorState::Running, "{status:?}");
    assert_eq!(status.metrics.dead_letters, 2, "{status:?}");
    assert_eq!(status.metrics.messages_out, 48, "{status:?}");
    assert!(
        runtime
            .prometheus()
            .contains("iggy_connectors_dead_letters_total{kind=\"sink\",key=\"poisoned\"} 2\n")
    );

    let letters = read_topic(&target, &stream, "dead", 2).await;
    let mut seqs = Vec::new();
    for letter in &letters {
        let payload: serde_json::Value = serde_json::from_slice(&letter.payload).unwrap();
        let seq = payload["seq"].as_u64().unwrap();
        seqs.push(seq);
        assert!(
            header(letter, dead_letter::ERROR).contains("poison message"),
            "{letter:?}"
        );
        assert_eq!(header(letter, dead_letter::CONNECTOR), "poisoned");
        assert_eq!(header(letter, dead_letter::STREAM), stream);
        assert_eq!(header(letter, dead_letter::TOPIC), "t");
        assert!(!header(letter, dead_letter::PARTITION).is_empty());
        // The random source's seq n is offset n of its topic.
        assert_eq!(header(letter, dead_letter::OFFSET), seq.to_string());
    }
    assert_eq!(seqs, vec![7, 31]);
    if let Some(server) = &target.server {
        let owner = OffsetOwner::Group("iggy-connect-sink-poisoned".to_owned());
        eventually("the offset moved past the poison", || {
            server.stored_offset(&stream, "t", &owner, 0) == Some(49)
        })
        .await;
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// Under `skip`, poison messages are counted and passed over; under `fail` (the
/// default), the sink fails on the first one and stores no offset at or beyond it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_passes_over_poison_and_fail_stops_before_it() {
    let target = target().await;
    let dir = temp_dir("e2e-skip");
    let stream = unique("skip");
    let skipping = poisoned_sink("skipping", &stream, &["\"seq\":12,"], "skip");
    let failing = poisoned_sink("failing", &stream, &["\"seq\":12,"], "fail");
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(
        active(vec![random_source(&stream, 50), skipping, failing]),
        plugins_for_test(),
        context,
    )
    .await;
    eventually_in(&runtime, "the skipping sink handled everything", || {
        runtime
            .status(ConnectorKind::Sink, "skipping")
            .is_some_and(|status| status.metrics.messages_out == 49 && status.metrics.skipped == 1)
    })
    .await;
    let failing = failed_with(&runtime, ConnectorKind::Sink, "failing", "poison message").await;
    assert_eq!(failing.metrics.dead_letters + failing.metrics.skipped, 0);
    if let Some(server) = &target.server {
        let owner = |group: &str| OffsetOwner::Group(group.to_owned());
        eventually("the skipping sink committed everything", || {
            server.stored_offset(&stream, "t", &owner("iggy-connect-sink-skipping"), 0) == Some(49)
        })
        .await;
        let failed_at = server.stored_offset(&stream, "t", &owner("iggy-connect-sink-failing"), 0);
        assert!(failed_at.is_none_or(|offset| offset < 12), "{failed_at:?}");
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A paused sink consumes nothing while its source goes on; resumed, it catches up. A
/// stopped sink closes; started again, it goes on from its stored offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_stop_and_start_one_connector() {
    let target = target().await;
    let dir = temp_dir("e2e-pause");
    let stream = unique("pause");
    let output = dir.join("out.jsonl");
    let mut source = random_source(&stream, 3000);
    if let ConnectorConfig::Source(source) = &mut source
        && let Some(plugin) = source.plugin_config.as_mut()
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

/// Applying a new config version restarts just that connector, with the new config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_restarts_just_that_connector() {
    let target = target().await;
    let dir = temp_dir("e2e-version");
    let stream = unique("version");
    let (first, second) = (dir.join("v0.jsonl"), dir.join("v1.jsonl"));
    let mut source = random_source(&stream, 2000);
    if let ConnectorConfig::Source(source) = &mut source
        && let Some(plugin) = source.plugin_config.as_mut()
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
        sink.version = 1;
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
            .version(),
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

/// Source transforms run in order before producing: a field is added, messages are
/// filtered, and `route` picks the topic; a sink reads the routed topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_transforms_add_filter_and_route() {
    let target = target().await;
    let dir = temp_dir("e2e-transforms");
    let stream = unique("transforms");
    let output = dir.join("routed.jsonl");
    let mut source = random_source(&stream, 100);
    if let ConnectorConfig::Source(source) = &mut source {
        let transforms = config(
            r#"
type = "source"
key = "x"
enabled = true
version = 0
name = "x"
path = "x"
[[streams]]
stream = "s"
topic = "t"
schema = "json"
[transforms.add_fields]
enabled = true
fields = [{ key = "origin", value.static = "test" }]
[transforms.filter]
field = "seq"
matches.less_than = 10
[transforms.route]
field = "key"
topics = { random = "routed" }
"#,
        );
        if let ConnectorConfig::Source(with) = transforms {
            source.transforms = with.transforms;
        }
    }
    let mut sink = file_sink("file", &stream, &output, 20);
    if let ConnectorConfig::Sink(sink) = &mut sink {
        sink.streams[0].topics = vec!["routed".to_owned()];
    }
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![source, sink]), plugins_for_test(), context).await;
    let payloads = || {
        std::fs::read_to_string(&output)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|value| value["payload"].clone())
            .collect::<Vec<_>>()
    };
    eventually_in(&runtime, "90 routed messages", || payloads().len() >= 90).await;
    let payloads = payloads();
    let seqs: Vec<u64> = payloads
        .iter()
        .map(|p| p["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (10..100).collect::<Vec<_>>(),
        "filtered, in order, once"
    );
    assert!(
        payloads.iter().all(|p| p["origin"] == "test"),
        "{:?}",
        payloads[0]
    );
    let status = runtime.status(ConnectorKind::Source, "random").unwrap();
    assert_eq!(status.metrics.filtered, 10, "{status:?}");
    let names: Vec<&str> = status.transforms.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["add_fields", "filter", "route"]);
    assert_eq!(
        (
            status.transforms[1].messages_in,
            status.transforms[1].dropped
        ),
        (100, 10)
    );
    if let Some(server) = &target.server {
        assert_eq!(
            server.messages(&stream, "t").unwrap().len(),
            0,
            "nothing went to the stream's own topic"
        );
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A message a sink's transforms cannot handle (here: not JSON in a JSON stream)
/// follows the error policy: skipped, sent to the dead letter topic, or failing the
/// sink; the messages around it are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_transform_failures_follow_the_error_policy() {
    use runtime_core::{OutgoingMessage, dead_letter};
    let target = target().await;
    let dir = temp_dir("e2e-transform-policy");
    let stream = unique("transform-policy");
    let writer = bus(&target).await;
    writer.ensure_topic(&stream, "t").await.unwrap();
    let message = |payload: &'static [u8]| OutgoingMessage {
        id: None,
        headers: Vec::new(),
        payload: bytes::Bytes::from_static(payload),
    };
    writer
        .send(
            &stream,
            "t",
            vec![
                message(br#"{"n":1}"#),
                message(b"not json"),
                message(br#"{"n":3}"#),
            ],
        )
        .await
        .unwrap();
    let sink = |key: &str, policy: &str| {
        let output = dir.join(format!("{key}.jsonl"));
        let mut sink = file_sink(key, &stream, &output, 10);
        if let ConnectorConfig::Sink(sink) = &mut sink {
            sink.error_policy = match policy {
                "skip" => config_provider::ErrorPolicy::Skip,
                "dead_letter" => config_provider::ErrorPolicy::DeadLetter,
                _ => config_provider::ErrorPolicy::Fail,
            };
            sink.dead_letter = Some(config_provider::DeadLetterTarget {
                stream: stream.clone(),
                topic: format!("dead-{key}"),
            });
            sink.transforms = config_provider::Transforms(vec![(
                "add_fields".to_owned(),
                serde_json::json!({ "enabled": true, "fields": [{ "key": "seen", "value": { "static": true } }] }),
            )]);
        }
        (sink, output)
    };
    let (skipping, skipped_output) = sink("skipping", "skip");
    let (lettering, lettered_output) = sink("lettering", "dead_letter");
    let (failing, failed_output) = sink("failing", "fail");
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(
        active(vec![skipping, lettering, failing]),
        plugins_for_test(),
        context,
    )
    .await;
    let ns = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|value| {
                (
                    value["payload"]["n"].as_u64().unwrap_or(0),
                    value["payload"]["seen"] == true,
                )
            })
            .collect::<Vec<_>>()
    };
    eventually_in(
        &runtime,
        "skip and dead letter delivered both good messages",
        || ns(&skipped_output).len() == 2 && ns(&lettered_output).len() == 2,
    )
    .await;
    assert_eq!(ns(&skipped_output), [(1, true), (3, true)]);
    assert_eq!(ns(&lettered_output), [(1, true), (3, true)]);
    failed_with(&runtime, ConnectorKind::Sink, "failing", "cannot decode").await;
    assert!(
        ns(&failed_output).is_empty(),
        "nothing of the failing batch was delivered"
    );
    // A batch counts as delivered once its offset is stored, after the file has it.
    let counted = |key: &str| {
        let status = runtime.status(ConnectorKind::Sink, key).unwrap();
        (
            status.metrics.skipped,
            status.metrics.dead_letters,
            status.metrics.messages_out,
        )
    };
    eventually_in(&runtime, "both sinks counted their batch", || {
        counted("skipping").2 == 2 && counted("lettering").2 == 2
    })
    .await;
    assert_eq!(counted("skipping"), (1, 0, 2));
    assert_eq!(counted("lettering"), (0, 1, 2));

    let letter = read_topic(&target, &stream, "dead-lettering", 1)
        .await
        .remove(0);
    assert_eq!(&letter.payload[..], b"not json", "the original payload");
    let error = header(&letter, dead_letter::ERROR);
    assert!(error.contains("cannot decode"), "{error}");
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A source batch larger than the stream's `batch_length` goes out in several sends,
/// every message once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_source_batches_are_sent_in_stream_sized_chunks() {
    let target = target().await;
    let dir = temp_dir("e2e-chunks");
    let stream = unique("chunks");
    let output = dir.join("out.jsonl");
    let mut source = random_source(&stream, 100);
    if let ConnectorConfig::Source(source) = &mut source {
        source.streams[0].batch_length = 7;
        if let Some(plugin) = source.plugin_config.as_mut() {
            plugin["messages_range"] = serde_json::json!([25, 25]);
        }
    }
    let sink = file_sink("file", &stream, &output, 1000);
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![source, sink]), plugins_for_test(), context).await;
    let seqs = || {
        std::fs::read_to_string(&output)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|value| value["payload"]["seq"].as_u64())
            .collect::<Vec<_>>()
    };
    eventually_in(&runtime, "100 messages", || seqs().len() >= 100).await;
    assert_eq!(seqs(), (0..100).collect::<Vec<_>>());
    let source = runtime.status(ConnectorKind::Source, "random").unwrap();
    assert_eq!(source.metrics.messages_out, 100, "{source:?}");
    assert_eq!(
        source.metrics.batch_latency.count, 4,
        "four plugin batches of 25"
    );
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A source whose stream is Avro: the plugin's JSON is encoded with the stream's Avro
/// schema (inline here), after its transforms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_source_produces_avro_with_the_stream_schema() {
    let target = target().await;
    let dir = temp_dir("e2e-avro");
    let stream = unique("avro");
    let schema = r#"{"type":"record","name":"Event","fields":[{"name":"seq","type":"long"},{"name":"key","type":"string"},{"name":"origin","type":["null","string"]}]}"#;
    let mut source = random_source(&stream, 30);
    if let ConnectorConfig::Source(source) = &mut source {
        source.streams[0].schema = connector_sdk::Schema::Avro;
        source.streams[0].avro_schema_json = Some(schema.to_owned());
        source.transforms = config_provider::Transforms(vec![(
            "add_fields".to_owned(),
            serde_json::json!({ "fields": [{ "key": "origin", "value": { "static": "avro-test" } }] }),
        )]);
    }
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![source]), plugins_for_test(), context).await;
    produced(&runtime, 30).await;
    let avro = transforms::AvroSchema::parse(schema).unwrap();
    let decoded = decoded_topic(&target, &stream, 30, |payload| {
        avro.decode(payload).unwrap()
    })
    .await;
    assert_eq!(seqs(&decoded), (0..30).collect::<Vec<_>>());
    assert!(
        decoded
            .iter()
            .all(|value| value["key"] == "random" && value["origin"] == "avro-test")
    );
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A bus that records how many messages and payload bytes each send carried, passing
/// everything on; with a state directory, also the random source's saved position
/// (messages) as each send starts.
struct RecordingBus {
    inner: Arc<dyn runtime_core::MessageBus>,
    sends: std::sync::Mutex<Vec<(usize, usize)>>,
    state: Option<std::path::PathBuf>,
    saved_at_send: std::sync::Mutex<Vec<(SavedState, Option<u128>)>>,
}

impl RecordingBus {
    /// Records the sends made through `context`'s bus from now on.
    fn around(context: &mut RuntimeContext) -> Arc<RecordingBus> {
        Self::watching(context, None)
    }

    /// As `around`, reading the source `random`'s state in `state` at each send.
    fn watching(
        context: &mut RuntimeContext,
        state: Option<std::path::PathBuf>,
    ) -> Arc<RecordingBus> {
        let recording = Arc::new(RecordingBus {
            inner: context.bus.clone(),
            sends: std::sync::Mutex::new(Vec::new()),
            state,
            saved_at_send: std::sync::Mutex::new(Vec::new()),
        });
        context.bus = recording.clone();
        recording
    }

    fn sends(&self) -> Vec<(usize, usize)> {
        self.sends.lock().unwrap().clone()
    }

    /// The record saved at each send, with the marker of the send's last message.
    fn saved_at_send(&self) -> Vec<(SavedState, Option<u128>)> {
        self.saved_at_send.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl runtime_core::MessageBus for RecordingBus {
    async fn ensure_topic(&self, stream: &str, topic: &str) -> Result<(), runtime_core::BusError> {
        self.inner.ensure_topic(stream, topic).await
    }

    async fn send(
        &self,
        stream: &str,
        topic: &str,
        messages: Vec<runtime_core::OutgoingMessage>,
    ) -> Result<(), runtime_core::BusError> {
        let count = messages.len();
        let bytes = messages.iter().map(|message| message.payload.len()).sum();
        if let Some(dir) = &self.state {
            // The random source's state is the count of messages it has committed.
            let saved = StateStore::new(dir).read_saved("random").await.unwrap();
            let marker = messages.last().and_then(|message| {
                message
                    .headers
                    .iter()
                    .find(|header| header.key == runtime_core::SEND_MARKER_HEADER)
                    .map(|header| u128::from_le_bytes(header.value.clone().try_into().unwrap()))
            });
            self.saved_at_send.lock().unwrap().push((saved, marker));
        }
        self.inner.send(stream, topic, messages).await?;
        self.sends.lock().unwrap().push((count, bytes));
        Ok(())
    }

    async fn join_group(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
    ) -> Result<(), runtime_core::BusError> {
        self.inner.join_group(stream, topic, group).await
    }

    async fn poll(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
        count: u32,
    ) -> Result<runtime_core::Polled, runtime_core::BusError> {
        self.inner.poll(stream, topic, group, count).await
    }

    async fn store_offset(
        &self,
        stream: &str,
        topic: &str,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), runtime_core::BusError> {
        self.inner
            .store_offset(stream, topic, group, partition, offset)
            .await
    }

    async fn find_marker(
        &self,
        stream: &str,
        topic: &str,
        marker: u128,
    ) -> Result<Option<bool>, runtime_core::BusError> {
        self.inner.find_marker(stream, topic, marker).await
    }
}

/// Waits until the source `random` produced `count` messages.
async fn produced(runtime: &Runtime, count: u64) {
    eventually_in(runtime, &format!("{count} messages produced"), || {
        runtime
            .status(ConnectorKind::Source, "random")
            .is_some_and(|status| status.metrics.messages_out == count)
    })
    .await;
}

/// The first `count` messages in topic `t` of `stream`, decoded.
async fn decoded_topic(
    target: &TestTarget,
    stream: &str,
    count: usize,
    decode: impl Fn(&[u8]) -> serde_json::Value,
) -> Vec<serde_json::Value> {
    read_topic(target, stream, "t", count)
        .await
        .iter()
        .map(|message| decode(&message.payload))
        .collect()
}

/// The `seq` field of each value.
fn seqs(values: &[serde_json::Value]) -> Vec<u64> {
    values
        .iter()
        .map(|value| value["seq"].as_u64().unwrap())
        .collect()
}

/// The `seq` fields of the first `count` JSON messages in topic `t` of `stream`.
async fn json_seqs(target: &TestTarget, stream: &str, count: usize) -> Vec<u64> {
    seqs(
        &decoded_topic(target, stream, count, |payload| {
            serde_json::from_slice(payload).unwrap()
        })
        .await,
    )
}

/// Each connector has a connection to Iggy of its own (a sink two: its group member
/// and its reader), closed when it stops, so restarts do not leak connections.
/// (Counting connections needs our server.)
#[tokio::test]
async fn each_connector_has_its_own_connections_and_closes_them() {
    let target = target().await;
    let Some(server) = target.server.as_ref() else {
        return;
    };
    let dir = temp_dir("e2e-connections");
    let stream = unique("connections");
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
    let deadline = Instant::now() + DEADLINE;
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
        runtime
            .restart_connector(ConnectorKind::Source, "random")
            .await
            .unwrap();
        runtime
            .restart_connector(ConnectorKind::Sink, "file")
            .await
            .unwrap();
    }
    settles_at(shared + 3, "after restarts").await;
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

/// A source of one-message batches with `linger_time`: batches in flight go out
/// together, up to `batch_length` per send, and every message arrives once, in order.
#[tokio::test]
async fn small_source_batches_linger_and_go_out_together() {
    let target = target().await;
    let dir = temp_dir("e2e-linger");
    let stream = unique("linger");
    let mut source = random_source(&stream, 40);
    if let ConnectorConfig::Source(source) = &mut source {
        source.streams[0].batch_length = 3;
        source.streams[0].linger_time = config_provider::ConfigDuration::from_millis(200);
        source.plugin_config = Some(serde_json::json!({
            "interval": "0ms", "max_count": 40, "messages_range": [1, 1], "payload_size": 10
        }));
    }
    let mut context = context(&target, &dir.join("state")).await;
    let recording = RecordingBus::around(&mut context);
    let runtime = Runtime::start(active(vec![source]), plugins_for_test(), context).await;
    produced(&runtime, 40).await;
    runtime.shutdown(Duration::from_secs(10)).await;
    let sends: Vec<usize> = recording.sends().iter().map(|(count, _)| *count).collect();
    assert_eq!(sends.iter().sum::<usize>(), 40, "{sends:?}");
    assert!(
        sends.iter().all(|count| *count <= 3),
        "batch_length caps a send: {sends:?}"
    );
    assert!(
        sends.len() <= 20,
        "one-message batches were merged: {sends:?}"
    );
    assert_eq!(
        json_seqs(&target, &stream, 40).await,
        (0..40).collect::<Vec<_>>()
    );
}

/// A stream's `max_send_bytes` cuts sends by payload size as `batch_length` cuts them
/// by count; a message over the limit still goes, alone.
#[tokio::test]
async fn sends_are_cut_by_max_send_bytes() {
    let target = target().await;
    let dir = temp_dir("e2e-send-bytes");
    let stream = unique("send-bytes");
    let mut source = random_source(&stream, 50);
    if let ConnectorConfig::Source(source) = &mut source {
        source.streams[0].batch_length = 100;
        source.streams[0].max_send_bytes = Some(350);
        source.plugin_config = Some(serde_json::json!({
            "interval": "0ms", "max_count": 50, "messages_range": [25, 25], "payload_size": 100
        }));
    }
    let mut context = context(&target, &dir.join("state")).await;
    let recording = RecordingBus::around(&mut context);
    let runtime = Runtime::start(active(vec![source]), plugins_for_test(), context).await;
    produced(&runtime, 50).await;
    runtime.shutdown(Duration::from_secs(10)).await;
    let sends = recording.sends();
    assert_eq!(
        sends.iter().map(|(count, _)| count).sum::<usize>(),
        50,
        "{sends:?}"
    );
    // Each message is about 165 bytes: two fit in 350, three do not.
    assert!(
        sends
            .iter()
            .all(|(count, bytes)| *bytes <= 350 && *count <= 2),
        "{sends:?}"
    );
    assert!(
        sends.len() <= 26,
        "sends are filled up to the limit: {sends:?}"
    );
    assert_eq!(
        json_seqs(&target, &stream, 50).await,
        (0..50).collect::<Vec<_>>()
    );
}

/// `demo.Event { uint64 seq = 1; string key = 2; string origin = 3; }` as a descriptor
/// set file, as `protoc --descriptor_set_out` writes it.
fn event_descriptor_set(dir: &std::path::Path) -> String {
    use prost_reflect::prost::Message;
    use prost_reflect::prost_types::field_descriptor_proto::{Label, Type};
    use prost_reflect::prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    };
    let field = |name: &str, number: i32, kind: Type| FieldDescriptorProto {
        name: Some(name.to_owned()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(kind as i32),
        ..FieldDescriptorProto::default()
    };
    let set = FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("event.proto".to_owned()),
            package: Some("demo".to_owned()),
            syntax: Some("proto3".to_owned()),
            message_type: vec![DescriptorProto {
                name: Some("Event".to_owned()),
                field: vec![
                    field("seq", 1, Type::Uint64),
                    field("key", 2, Type::String),
                    field("origin", 3, Type::String),
                ],
                ..DescriptorProto::default()
            }],
            ..FileDescriptorProto::default()
        }],
    };
    let path = dir.join("event.pb");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, set.encode_to_vec()).unwrap();
    path.display().to_string()
}

/// JSON from the plugin is transformed and encoded as the stream's Protobuf message
/// type; a misnamed message type fails the connector, naming the setting.
#[tokio::test]
async fn a_json_source_produces_protobuf_with_the_stream_message_type() {
    let target = target().await;
    let dir = temp_dir("e2e-proto");
    let descriptors = event_descriptor_set(&dir);
    let stream = unique("proto");
    let proto = |message_type: &str| {
        let mut source = random_source(&stream, 30);
        if let ConnectorConfig::Source(source) = &mut source {
            source.streams[0].schema = connector_sdk::Schema::Proto;
            source.streams[0].proto_descriptor_set = Some(descriptors.clone());
            source.streams[0].proto_message_type = Some(message_type.to_owned());
            source.transforms = config_provider::Transforms(vec![(
                "add_fields".to_owned(),
                serde_json::json!({ "fields": [{ "key": "origin", "value": { "static": "proto-test" } }] }),
            )]);
        }
        source
    };
    let first = context(&target, &dir.join("state")).await;
    let runtime =
        Runtime::start(active(vec![proto("demo.Event")]), plugins_for_test(), first).await;
    produced(&runtime, 30).await;
    let bytes = std::fs::read(&descriptors).unwrap();
    let schema = transforms::ProtoSchema::from_descriptor_set(&bytes, "demo.Event").unwrap();
    let decoded = decoded_topic(&target, &stream, 30, |payload| {
        schema.decode(payload).unwrap()
    })
    .await;
    assert_eq!(seqs(&decoded), (0..30).collect::<Vec<_>>());
    assert!(
        decoded
            .iter()
            .all(|value| value["key"] == "random" && value["origin"] == "proto-test"),
        "{decoded:?}"
    );
    runtime.shutdown(Duration::from_secs(10)).await;

    let second = context(&target, &dir.join("state-2")).await;
    let runtime =
        Runtime::start(active(vec![proto("demo.Nope")]), plugins_for_test(), second).await;
    failed_with(
        &runtime,
        ConnectorKind::Source,
        "random",
        "no message type \"demo.Nope\"",
    )
    .await;
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A stream declared Avro without an Avro schema cannot run: the source fails saying so.
#[tokio::test]
async fn an_avro_stream_without_a_schema_fails_clearly() {
    let target = target().await;
    let dir = temp_dir("e2e-avro-missing");
    let mut source = random_source(&unique("avro-missing"), 5);
    if let ConnectorConfig::Source(source) = &mut source {
        source.streams[0].schema = connector_sdk::Schema::Avro;
        source.streams[0].avro_schema_path = Some(dir.join("missing.avsc").display().to_string());
    }
    let context = context(&target, &dir.join("state")).await;
    let runtime = Runtime::start(active(vec![source]), plugins_for_test(), context).await;
    failed_with(
        &runtime,
        ConnectorKind::Source,
        "random",
        "avro_schema_path",
    )
    .await;
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
    let stream = unique("restart");
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
        && let Some(plugin) = source.plugin_config.as_mut()
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
    let stream = unique("reset");
    let client = client_with_topic(&target, &stream, 2).await;
    produce_to_partition(&client, &stream, 0, 5).await;
    produce_to_partition(&client, &stream, 1, 5).await;
    let (first, second) = (bus(&target).await, bus(&target).await);
    first.join_group(&stream, "t", "g").await.unwrap();
    first.store_offset(&stream, "t", "g", 0, 2).await.unwrap();
    let before = first
        .group_progress(&stream, "t", "g")
        .await
        .unwrap()
        .unwrap();

    assert!(
        first
            .reset_group(&stream, "t", "g", before.group_id)
            .await
            .unwrap()
    );
    let after = first
        .group_progress(&stream, "t", "g")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(after.group_id, before.group_id, "made again");
    let stored: Vec<Option<u64>> = after.partitions.iter().map(|p| p.stored).collect();
    assert_eq!(stored, [Some(2), None], "the offsets are kept");

    let reset_again = second
        .reset_group(&stream, "t", "g", before.group_id)
        .await
        .unwrap();
    assert!(!reset_again, "a reset that saw the old group only joins");
    let last = second
        .group_progress(&stream, "t", "g")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.group_id, after.group_id);
    first.close().await;
    second.close().await;
}
