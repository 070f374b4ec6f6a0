//! Soak: the random source -> Iggy -> a sink writing every message to a file, for
//! minutes, while the Iggy server is killed and started again every so often, every
//! connection is dropped now and then (test server only), and the sink fails now and
//! then (a retryable error from every Nth batch). At the end the source stops, the
//! sink catches up, and the bench checks that every message the source produced
//! arrived, and prints the restarts survived, the duplicates and the longest delivery
//! gap (the longest time the sink delivered nothing while messages were waiting).
//! Not run in CI.
//!
//! Run: `cargo bench -p iggy-connectors-benches --bench soak`
//! - `SOAK_MINUTES` (default 10), `SOAK_RESTART_EVERY_SECS` (30), `SOAK_DOWNTIME_MS`
//!   (1000), `SOAK_DROP_EVERY_SECS` (17; 0 never), `SOAK_FAIL_EVERY` (the sink fails
//!   every Nth batch; default 40), `SOAK_PARTITIONS` (3), `SOAK_INTERVAL_MS` (the
//!   source's pause between batches, default 2), `SOAK_STALL_TIMEOUT_SECS` (the
//!   runtime's `stall_timeout`, default 30).
//! - Against a real server: `IGGY_TEST_ADDRESS=host:port` and
//!   `IGGY_TEST_RESTART_COMMAND` (e.g. `.ci/iggy-server restart {downtime_ms}`, see
//!   `.ci/iggy-server`); a real server cannot drop connections on request, so only
//!   restarts happen there.
//!
//! Exits non-zero when a message was lost.

use std::path::Path;
use std::time::{Duration, Instant};

use config_provider::{
    ActiveConfigs, ConfigDuration, ConnectorConfig, RuntimeBehaviour, parse_connector_toml,
};
use connector_sdk::ConnectorKind;
use iggy_connectors_benches::env_or;
use iggy_connectors_tests::{create_topic, iggy_client, plugin_path, temp_dir};
use iggy_test_server::TestTarget;
use plugin_host::PluginLoader;
use runtime_core::{IggyBus, IggySettings, PluginRegistry, Runtime, RuntimeContext, StateStore};

type Failure = Box<dyn std::error::Error>;

fn connectors(stream: &str, output: &Path, interval_ms: u64, fail_every: u64) -> ActiveConfigs {
    let source = format!(
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
batch_length = 1000
linger_time = "1ms"
[plugin_config]
interval = "{interval_ms}ms"
messages_range = [50, 100]
payload_size = 50
"#,
        path = plugin_path("iggy_connector_random_source"),
    );
    let sink = format!(
        r#"
type = "sink"
key = "file"
enabled = true
version = 0
name = "Recording sink"
path = "{path}"
[[streams]]
stream = "{stream}"
topics = ["t"]
schema = "json"
batch_length = 500
poll_interval = "5ms"
[plugin_config]
fail_every = {fail_every}
record_to = "{output}"
"#,
        path = plugin_path("faulty_sink_plugin"),
        output = output.display(),
    );
    let mut active = ActiveConfigs::default();
    for text in [source, sink] {
        match parse_connector_toml(&text) {
            Ok(ConnectorConfig::Source(config)) => {
                active
                    .sources
                    .insert(config.common.key.clone(), ConnectorConfig::Source(config));
            }
            Ok(ConnectorConfig::Sink(config)) => {
                active
                    .sinks
                    .insert(config.common.key.clone(), ConnectorConfig::Sink(config));
            }
            Err(error) => panic!("the soak's connector config does not parse: {error}"),
        }
    }
    active
}

/// What the sink wrote so far: every line, and which sequence numbers (a bit each).
#[derive(Debug, Default)]
struct Delivered {
    lines: u64,
    seen: Vec<u64>,
    distinct: u64,
    /// The lowest sequence number not delivered yet.
    first_missing: u64,
    /// Bytes of the file read so far.
    read: u64,
    /// A line cut short at the end of the last read.
    partial: Vec<u8>,
}

impl Delivered {
    fn contains(&self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        self.seen
            .get(word)
            .is_some_and(|bits| bits & (1 << bit) != 0)
    }

    fn insert(&mut self, seq: u64) {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) == 0 {
            self.seen[word] |= 1 << bit;
            self.distinct += 1;
        }
        while self.contains(self.first_missing) {
            self.first_missing += 1;
        }
    }

    /// Reads what was appended since the last look.
    fn update(&mut self, output: &Path) {
        use std::io::{Read, Seek};
        let Ok(mut file) = std::fs::File::open(output) else {
            return;
        };
        let mut text = std::mem::take(&mut self.partial);
        let start = text.len();
        if file.seek(std::io::SeekFrom::Start(self.read)).is_err() {
            self.partial = text;
            return;
        }
        let Ok(read) = file.read_to_end(&mut text) else {
            self.partial = text;
            return;
        };
        self.read += read as u64;
        // Only whole lines; the rest waits for the next look.
        let end = text[start..]
            .iter()
            .rposition(|byte| *byte == b'\n')
            .map_or(0, |at| start + at + 1);
        for line in text[..end].split(|byte| *byte == b'\n') {
            if line.is_empty() {
                continue;
            }
            self.lines += 1;
            if let Some(seq) = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|value| value["seq"].as_u64())
            {
                self.insert(seq);
            }
        }
        self.partial = text[end..].to_vec();
    }
}

/// Watches the sink's output, and notes the longest a message waited: how long ago
/// the source had produced the lowest sequence number not yet delivered (the source
/// produces them in order), to within a look (100 ms).
struct Watch {
    delivered: Delivered,
    /// (when, messages the source had produced by then), one per look.
    produced: std::collections::VecDeque<(Instant, u64)>,
    longest_gap: Duration,
}

impl Watch {
    fn new() -> Self {
        Watch {
            delivered: Delivered::default(),
            produced: std::collections::VecDeque::new(),
            longest_gap: Duration::ZERO,
        }
    }

    fn look(&mut self, output: &Path, runtime: &Runtime) {
        self.delivered.update(output);
        let now = Instant::now();
        let produced = status(runtime, ConnectorKind::Source, "random")
            .metrics
            .messages_out;
        self.produced.push_back((now, produced));
        // Looks at which the lowest missing message was not produced yet tell nothing.
        let missing = self.delivered.first_missing;
        while self.produced.len() > 1 && self.produced[0].1 <= missing {
            self.produced.pop_front();
        }
        if let Some((since, produced)) = self.produced.front()
            && *produced > missing
        {
            self.longest_gap = self.longest_gap.max(now - *since);
        }
    }
}

fn status(runtime: &Runtime, kind: ConnectorKind, key: &str) -> runtime_core::ConnectorStatus {
    runtime
        .status(kind, key)
        .unwrap_or_else(|| runtime_core::ConnectorStatus::new(kind, key, 0))
}

async fn soak() -> Result<bool, Failure> {
    let minutes: f64 = env_or("SOAK_MINUTES", 10.0);
    let restart_every = Duration::from_secs(env_or("SOAK_RESTART_EVERY_SECS", 30));
    let downtime = Duration::from_millis(env_or("SOAK_DOWNTIME_MS", 1000));
    let drop_every = Duration::from_secs(env_or("SOAK_DROP_EVERY_SECS", 17));
    let fail_every: u64 = env_or("SOAK_FAIL_EVERY", 40);
    let partitions: u32 = env_or("SOAK_PARTITIONS", 3);
    let interval_ms: u64 = env_or("SOAK_INTERVAL_MS", 2);
    let stall_timeout = Duration::from_secs(env_or("SOAK_STALL_TIMEOUT_SECS", 30));

    let target = TestTarget::restartable().await?;
    let restarts_possible = target.can_restart();
    let dir = temp_dir("soak");
    let stream = format!("soak-{}", std::process::id());
    let output = dir.join("delivered.jsonl");
    create_topic(
        &iggy_client(&target.address).await?,
        &stream,
        "t",
        partitions,
    )
    .await?;
    let bus = IggyBus::connect(&IggySettings {
        // As the binary, but patient enough for a real server's restart.
        connect_retries: 100,
        reconnect_interval: Duration::from_millis(500),
        ..IggySettings::new(target.address.clone())
    })
    .await?;
    let behaviour = RuntimeBehaviour {
        stall_timeout: ConfigDuration(stall_timeout),
        ..RuntimeBehaviour::default()
    };
    let context = RuntimeContext::new(
        std::sync::Arc::new(bus),
        StateStore::new(dir.join("state")),
        &behaviour,
    );
    let drop_plan = if target.server.is_some() {
        format!("drop connections every {drop_every:?}")
    } else {
        "no connection drops (a real server cannot be asked)".to_owned()
    };
    println!(
        "soak: {minutes} min against {} ({}), {partitions} partitions; restart every {:?} \
         (down {downtime:?}){}, {drop_plan}, the sink fails every {fail_every}th batch",
        target.address,
        if target.server.is_some() {
            "test server"
        } else {
            "real server"
        },
        restart_every,
        if restarts_possible {
            ""
        } else {
            ": not possible, no restart command"
        },
    );
    let runtime = Runtime::start(
        connectors(&stream, &output, interval_ms, fail_every),
        PluginRegistry::new(PluginLoader::new()),
        context,
    )
    .await;

    let started = Instant::now();
    let until = started + Duration::from_secs_f64(minutes * 60.0);
    let (mut restarts, mut drops) = (0u32, 0u32);
    let mut next_restart = started + restart_every;
    let mut next_drop = started + drop_every;
    let mut watch = Watch::new();
    let mut next_report = started + Duration::from_secs(60);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        watch.look(&output, &runtime);
        let now = Instant::now();
        if restarts_possible && !restart_every.is_zero() && now >= next_restart {
            target.restart(downtime).await?;
            restarts += 1;
            next_restart = Instant::now() + restart_every;
        }
        if let Some(server) = &target.server
            && !drop_every.is_zero()
            && now >= next_drop
        {
            server.drop_connections();
            drops += 1;
            next_drop = now + drop_every;
        }
        if now >= next_report {
            println!(
                "  {:>4} s: {} delivered, {restarts} restarts, {drops} drops, longest gap {:.1} s",
                started.elapsed().as_secs(),
                watch.delivered.distinct,
                watch.longest_gap.as_secs_f64()
            );
            next_report += Duration::from_secs(60);
        }
    }

    // The source stops (saving its state as confirmed); the sink catches up.
    runtime
        .stop_connector(ConnectorKind::Source, "random")
        .await?;
    let saved = StateStore::new(dir.join("state"))
        .read_saved("random")
        .await?;
    let produced = saved
        .state
        .as_deref()
        .and_then(|state| state.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    let catch_up = Instant::now();
    while watch.delivered.distinct < produced && catch_up.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        watch.look(&output, &runtime);
    }
    let Watch {
        delivered,
        longest_gap,
        ..
    } = watch;
    let sink = status(&runtime, ConnectorKind::Sink, "file");
    runtime.shutdown(Duration::from_secs(10)).await;

    let lost: Vec<u64> = (0..produced)
        .filter(|seq| !delivered.contains(*seq))
        .collect();
    let unexpected = (produced..delivered.seen.len() as u64 * 64)
        .filter(|seq| delivered.contains(*seq))
        .count();
    println!(
        "soak: {:.1} min, {produced} messages produced, {} delivered ({} distinct), \
         {} duplicates, {} lost, {unexpected} beyond the source's state",
        started.elapsed().as_secs_f64() / 60.0,
        delivered.lines,
        delivered.distinct,
        delivered.lines - delivered.distinct,
        lost.len(),
    );
    println!(
        "soak: {restarts} server restarts and {drops} connection drops survived; the sink \
         retried {} times, reset its group {} times, restarted {} times; longest delivery \
         gap {:.1} s; caught up {:.1} s after the source stopped",
        sink.metrics.retries,
        sink.metrics.group_resets,
        sink.restarts,
        longest_gap.as_secs_f64(),
        catch_up.elapsed().as_secs_f64(),
    );
    if !lost.is_empty() {
        println!(
            "soak: LOST {} messages, the first: {:?}",
            lost.len(),
            &lost[..lost.len().min(20)]
        );
    }
    Ok(lost.is_empty())
}

fn main() -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if runtime.block_on(soak())? {
        Ok(())
    } else {
        Err("messages were lost".into())
    }
}
