//! What the pipeline tests share: the runtime's context and bus, connector configs (a
//! random source, a file sink), waiting on a runtime, and reading back what Iggy
//! holds. Generic helpers (`target`, `unique`, `eventually`, `temp_dir`, `logs`) are in
//! the tests crate, `iggy_connectors_tests`.

mod buses;

use std::sync::Arc;
use std::time::{Duration, Instant};

use config_provider::{ActiveConfigs, ConnectorConfig, parse_connector_toml};
use connector_sdk::ConnectorKind;
use iggy_connectors_tests::{WAIT_LIMIT, eventually_showing, plugin_path};
use iggy_test_server::TestTarget;
use plugin_host::PluginLoader;
use runtime_core::{
    ConnectorState, Destination, IggyBus, IggySettings, PluginRegistry, RestartPolicy, RetryPolicy,
    Runtime, RuntimeContext, SavedState, StallPolicy, StateStore,
};

pub use buses::{RecordingBus, TopicCommandBus};

/// A context on `target`, with the state in `state_dir`: four quick attempts a call,
/// no restarts (a failed connector stays failed), default stall handling.
pub async fn context(target: &TestTarget, state_dir: &std::path::Path) -> RuntimeContext {
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
        memory_budget: config_provider::DEFAULT_MEMORY_BUDGET,
        cluster: None,
    }
}

/// A bus of `target` that gives up connecting soon (two retries, 50 ms apart).
pub async fn bus(target: &TestTarget) -> Arc<dyn runtime_core::MessageBus> {
    let bus = IggyBus::connect(&IggySettings {
        connect_retries: 2,
        reconnect_interval: Duration::from_millis(50),
        ..IggySettings::new(target.address.clone())
    })
    .await
    .unwrap();
    TopicCommandBus::wrap(Arc::new(bus))
}

/// A plugin registry that loads the libraries the configs name.
pub fn plugins_for_test() -> PluginRegistry {
    PluginRegistry::new(PluginLoader::new())
}

/// A connector config from its TOML.
pub fn config(text: &str) -> ConnectorConfig {
    parse_connector_toml(text).unwrap()
}

/// `configs` as a runtime's active configs.
pub fn active(configs: Vec<ConnectorConfig>) -> ActiveConfigs {
    let mut active = ActiveConfigs::default();
    for config in configs {
        let map = match config.kind() {
            ConnectorKind::Sink => &mut active.sinks,
            ConnectorKind::Source => &mut active.sources,
        };
        map.insert(config.common().key.to_owned(), config);
    }
    active
}

/// The random source `random`: `max_count` JSON messages in batches of 10 to 20, one
/// batch a millisecond, to topic `t` of `stream`.
pub fn random_source(stream: &str, max_count: u64) -> ConnectorConfig {
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

/// A file sink `key` reading topic `t` of `stream` into `output`.
pub fn file_sink(
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

/// Waits until a connector failed, and checks that its error mentions `cause`.
pub async fn failed_with(
    runtime: &Runtime,
    kind: ConnectorKind,
    key: &str,
    cause: &str,
) -> runtime_core::ConnectorStatus {
    in_state_with(runtime, kind, key, ConnectorState::Failed, cause).await
}

/// Waits until a connector is in `state`, and checks that its error mentions `cause`.
pub async fn in_state_with(
    runtime: &Runtime,
    kind: ConnectorKind,
    key: &str,
    state: ConnectorState,
    cause: &str,
) -> runtime_core::ConnectorStatus {
    eventually_in(runtime, &format!("{kind} {key} {state}"), || {
        runtime
            .status(kind, key)
            .is_some_and(|status| status.state == state)
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

/// Restarts a connector by hand and checks that it ran again, once: running, with one
/// more run counted in its `starts`.
pub async fn restart_once(runtime: &Runtime, kind: ConnectorKind, key: &str) {
    let before = runtime.status(kind, key).unwrap().starts;
    runtime.restart_connector(kind, key).await.unwrap();
    // The new run counts itself as it begins, after `restart_connector` returned.
    eventually_in(runtime, &format!("{kind} {key} running again"), || {
        runtime
            .status(kind, key)
            .is_some_and(|status| status.starts > before && status.state == ConnectorState::Running)
    })
    .await;
    let status = runtime.status(kind, key).unwrap();
    assert_eq!(
        status.starts,
        before + 1,
        "one restart, one run: {status:?}"
    );
}

/// [`eventually`](iggy_connectors_tests::eventually), showing the runtime's statuses
/// when it times out.
pub async fn eventually_in(runtime: &Runtime, what: &str, condition: impl FnMut() -> bool) {
    eventually_showing(what, condition, || format!("{:#?}", runtime.statuses())).await;
}

/// Waits until the source `random` produced `count` messages.
pub async fn produced(runtime: &Runtime, count: u64) {
    eventually_in(runtime, &format!("{count} messages produced"), || {
        runtime
            .status(ConnectorKind::Source, "random")
            .is_some_and(|status| status.metrics.messages_out == count)
    })
    .await;
}

/// The random source's sequence numbers stored in topic `t` of `stream`, in order.
pub fn stored_seqs(server: &iggy_test_server::TestServer, stream: &str) -> Vec<u64> {
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

/// The first `count` messages of `stream`/`topic`, read as a consumer group of the
/// test's own (so nothing the runtime stores is touched).
pub async fn read_topic(
    target: &TestTarget,
    stream: &str,
    topic: &str,
    count: usize,
) -> Vec<runtime_core::IncomingMessage> {
    let reader = bus(target).await;
    let from = Destination::new(stream, topic);
    reader.join_group(&from, "check").await.unwrap();
    let mut messages = Vec::new();
    let deadline = Instant::now() + WAIT_LIMIT;
    while messages.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} messages",
            messages.len()
        );
        let polled = reader.poll(&from, "check", 100).await.unwrap();
        match polled.messages.last() {
            Some(last) => reader
                .store_offset(&from, "check", polled.partition_id, last.offset)
                .await
                .unwrap(),
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        messages.extend(polled.messages);
    }
    messages
}

/// A signed-in client of the target, with `stream` and its topic `t` of `partitions`
/// partitions made.
pub async fn client_with_topic(
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
pub async fn produce_to_partition(
    client: &iggy::prelude::IggyClient,
    stream: &str,
    partition: u32,
    count: u64,
) {
    produce(client, stream, "t", partition, count).await;
}

/// [`produce_to_partition`] to any topic of `stream`.
pub async fn produce(
    client: &iggy::prelude::IggyClient,
    stream: &str,
    topic: &str,
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
            &Identifier::named(topic).unwrap(),
            &Partitioning::partition_id(partition),
            &mut messages,
        )
        .await
        .unwrap();
}

/// The offset group `group` stored on `partition` of `stream`/`topic` (any client may
/// read it, on our server or a real one); `None` too while there is no such group.
pub async fn group_offset(
    client: &iggy::prelude::IggyClient,
    stream: &str,
    topic: &str,
    group: &str,
    partition: u32,
) -> Option<u64> {
    use iggy::prelude::*;
    let read = client
        .get_consumer_offset(
            &Consumer::group(Identifier::named(group).unwrap()),
            &Identifier::named(stream).unwrap(),
            &Identifier::named(topic).unwrap(),
            Some(partition),
        )
        .await;
    match read {
        Ok(offset) => offset.map(|offset| offset.stored_offset),
        Err(
            IggyError::ConsumerGroupIdNotFound(..)
            | IggyError::ConsumerGroupNameNotFound(..)
            | IggyError::ResourceNotFound(_),
        ) => None,
        Err(error) => panic!("reading group {group}'s offset on {stream}/{topic}: {error}"),
    }
}

/// Waits until group `group` has stored `expected` as its offset on `partition` of
/// `stream`/`topic`, calling `meanwhile` on every look (for what must hold while
/// waiting).
pub async fn wait_for_group_offset(
    client: &iggy::prelude::IggyClient,
    (stream, topic): (&str, &str),
    group: &str,
    partition: u32,
    expected: u64,
    mut meanwhile: impl FnMut(),
) {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let stored = group_offset(client, stream, topic, group, partition).await;
        if stored == Some(expected) {
            return;
        }
        meanwhile();
        assert!(
            Instant::now() < deadline,
            "{stream}/{topic} partition {partition}: stored offset {stored:?}, {expected} expected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `seq` field of each value.
pub fn seqs(values: &[serde_json::Value]) -> Vec<u64> {
    values
        .iter()
        .map(|value| value["seq"].as_u64().unwrap())
        .collect()
}

/// The random source's position in a saved record: the state of its newest pending
/// send, or the confirmed state.
pub fn newest_state(saved: &SavedState) -> u64 {
    position(
        saved
            .pending
            .iter()
            .rev()
            .find_map(|send| send.state.as_deref())
            .or(saved.state.as_deref()),
    )
}

/// The random source's state (the count of messages it has committed).
pub fn position(state: Option<&[u8]>) -> u64 {
    state.map_or(0, |state| u64::from_le_bytes(state.try_into().unwrap()))
}
