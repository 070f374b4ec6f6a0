//! The MQTT source through the binary, killed with SIGKILL mid-stream and started
//! again: every message a publisher sent with QoS 1 ends up in Iggy (a few twice).
//! Against a private Mosquitto (the machine's binary, persistent sessions, no queue
//! limit) and the shared one (`IGGY_TEST_MQTT_URL`, its queue limit of 1000 kept by
//! pacing the publisher), each with the Iggy test server or a real one
//! (`IGGY_TEST_ADDRESS`). A file sink in
//! the same runtime writes the topic out (what paces the publisher); the topic itself is
//! read back at the end, to tell the source's duplicates from the sink's.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use iggy_connectors_tests::services::{Service, ServiceAddress, service_url};
use iggy_connectors_tests::{iggy_client, plugin_path, prepare_topic, temp_dir, unique};
use iggy_test_server::TestTarget;

mod support;
use support::{Reaped, runtime_command, runtime_with_connectors};

#[path = "../../../crates/connectors/sinks/mqtt/tests/support/broker.rs"]
mod broker;
use broker::Broker;

/// What the file sink wrote: (lines, the numbers among them, distinct). The probes
/// are lines too, so the first line proves the source subscribed.
fn written(output: &std::path::Path) -> (usize, usize, BTreeSet<u64>) {
    let text = std::fs::read_to_string(output).unwrap_or_default();
    let numbers: Vec<u64> = text.lines().filter_map(|line| line.parse().ok()).collect();
    (
        text.lines().count(),
        numbers.len(),
        numbers.into_iter().collect(),
    )
}

/// The source's `batch_length`.
const SOURCE_BATCH: usize = 500;

/// Where the messages go and how fast: the broker's port, the topic prefix, and the
/// publisher's pace.
#[derive(Clone)]
struct Publishing {
    host: String,
    port: u16,
    /// Topics are `<prefix>/data` and `<prefix>/probe`; the source subscribes to
    /// `<prefix>/#`.
    prefix: String,
    /// Messages published, one per line (`mosquitto_pub -l`), each its own number.
    total: u64,
    /// Messages per `mosquitto_pub -l`.
    chunk: u64,
    /// Most messages published and not yet in the output. The broker queues what the
    /// runtime has not taken, and drops what is over its limit: Mosquitto's
    /// `max_queued_messages` (1000 by default, as the shared broker has it), and,
    /// with no limit set, a publisher's connection once some 34k messages queue for one
    /// subscriber (and `mosquitto_pub -l` still exits 0). The runtime is down for a
    /// moment only, so a backlog under the limit is enough.
    max_backlog: u64,
}

/// Publishes 0..total, one per line, with QoS 1, in chunks, each once the output is
/// within `max_backlog` of it.
fn publish_paced(to: Publishing, output: std::path::PathBuf) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        for start in (0..to.total).step_by(to.chunk as usize) {
            let end = (start + to.chunk).min(to.total);
            while (written(&output).2.len() as u64) + to.max_backlog < end {
                assert!(Instant::now() < deadline, "the output stopped growing");
                // Paces the look at the file; the condition is what is waited for.
                std::thread::sleep(Duration::from_millis(10));
            }
            let status = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "seq {start} {} | mosquitto_pub -h {} -p {} -q 1 -t {}/data -l",
                    end - 1,
                    to.host,
                    to.port,
                    to.prefix
                ))
                .status()
                .unwrap();
            assert!(status.success());
        }
    })
}

/// What the topic `t` of `stream` holds, read by offset from the start of its one
/// partition: how many messages carry a number, and the distinct numbers.
async fn numbers_in_iggy(address: &str, stream: &str) -> (usize, BTreeSet<u64>) {
    use iggy::prelude::*;
    let client = iggy_client(address).await.unwrap();
    let (stream, topic) = (
        Identifier::named(stream).unwrap(),
        Identifier::named("t").unwrap(),
    );
    let consumer = Consumer::new(Identifier::named("mqtt-kill-check").unwrap());
    let (mut offset, mut count, mut distinct) = (0, 0, BTreeSet::new());
    loop {
        let polled = client
            .poll_messages(
                &stream,
                &topic,
                Some(0),
                &consumer,
                &PollingStrategy::offset(offset),
                1_000,
                false,
            )
            .await
            .unwrap();
        let Some(last) = polled.messages.last() else {
            return (count, distinct);
        };
        offset = last.header.offset + 1;
        for message in &polled.messages {
            let number = std::str::from_utf8(&message.payload)
                .ok()
                .and_then(|text| text.parse().ok());
            if let Some(number) = number {
                count += 1;
                distinct.insert(number);
            }
        }
    }
}

/// True when `mosquitto_pub` can be run; under CI it must.
fn have_mosquitto_pub(test: &str) -> bool {
    if Command::new("mosquitto_pub").arg("--help").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no mosquitto_pub under CI"
    );
    println!("SKIPPED {test}: no mosquitto_pub");
    false
}

/// Ends the persistent session of `client_id` on the broker at `port` when dropped (a
/// clean-session connection under its id), so that the shared broker does not keep a
/// test's session, and its queue, for ever.
struct EndSession {
    host: String,
    port: u16,
    client_id: String,
}

impl Drop for EndSession {
    fn drop(&mut self) {
        let _ = Command::new("mosquitto_sub")
            .args(["-h", &self.host, "-p", &self.port.to_string()])
            .args(["-i", &self.client_id, "-t", "end/session", "-E"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_source_killed_mid_stream_loses_no_message() {
    const TEST: &str = "mqtt_source_killed_mid_stream_loses_no_message";
    // A private broker without a queue limit: the publisher may run far ahead.
    let Some(broker) = Broker::start(TEST) else {
        return;
    };
    if !have_mosquitto_pub(TEST) {
        return;
    }
    let publishing = Publishing {
        host: "127.0.0.1".to_owned(),
        port: broker.port,
        prefix: "kill".to_owned(),
        total: 100_000,
        chunk: 10_000,
        max_backlog: 20_000,
    };
    killed_mid_stream(&broker.url(), publishing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_source_killed_mid_stream_loses_no_message_on_the_shared_broker() {
    const TEST: &str = "mqtt_source_killed_mid_stream_loses_no_message_on_the_shared_broker";
    let Some(url) = service_url(Service::Mqtt) else {
        return;
    };
    if !have_mosquitto_pub(TEST) {
        return;
    }
    let address = ServiceAddress::parse(&url).unwrap();
    // The shared broker keeps at most 1000 messages queued for a client (Mosquitto's
    // default): the backlog stays under it, the runtime's downtime included. Fewer
    // messages than on the private broker: in chunks this small `mosquitto_pub` sends
    // about 1100 a second.
    let publishing = Publishing {
        host: address.host,
        port: address.port,
        prefix: unique("kill"),
        total: 20_000,
        chunk: 300,
        max_backlog: 900,
    };
    killed_mid_stream(&url, publishing).await;
}

/// A runtime with the MQTT source (QoS 1, a persistent session) and a file sink, killed
/// with SIGKILL once about a third of the messages are through and started again:
/// every message ends up in Iggy, and the repeats are within the source's bound.
async fn killed_mid_stream(url: &str, publishing: Publishing) {
    let total = publishing.total;
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("mqtt-source-kill");
    let stream = unique("mqttkill");
    prepare_topic(&target.address, &stream, "t").await;
    let output = dir.join("out.txt");
    let client_id = unique("kill-source");
    // Dropped last: after the runtimes are gone.
    let _end_session = EndSession {
        host: publishing.host.clone(),
        port: publishing.port,
        client_id: client_id.clone(),
    };
    let source = format!(
        r#"
type = "source"
key = "mqtt"
enabled = true
version = 0
name = "MQTT"
path = "{path}"
[[streams]]
stream = "{stream}"
topic = "t"
schema = "text"
[plugin_config]
url = "{url}"
client_id = "{client_id}"
topics = [{{ filter = "{prefix}/#", qos = 1 }}]
schema = "text"
batch_length = {SOURCE_BATCH}
linger_time = "5ms"
reconnect_delay = "50ms"
"#,
        path = plugin_path("iggy_connector_mqtt_source"),
        prefix = publishing.prefix,
    );
    let sink = format!(
        r#"
type = "sink"
key = "file"
enabled = true
version = 0
name = "File"
path = "{path}"
[[streams]]
stream = "{stream}"
topics = ["t"]
schema = "text"
batch_length = 1000
poll_interval = "5ms"
[plugin_config]
path = "{output}"
format = "payload"
fsync = false
"#,
        path = plugin_path("iggy_connector_file_sink"),
        output = output.display(),
    );
    let config = runtime_with_connectors(
        &dir,
        &target.address,
        &[("mqtt.toml", source), ("file.toml", sink)],
    );
    // Each run's log goes to a file in the test's directory, for a failure to show.
    let run = |n: u32| {
        let log = std::fs::File::create(dir.join(format!("run-{n}.log"))).unwrap();
        Reaped::spawn(
            runtime_command(&config)
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
    };
    let first = run(1);
    // The source subscribes once it runs; its session keeps what comes after that.
    let deadline = Instant::now() + Duration::from_secs(60);
    let publisher = loop {
        // A first message proves the subscription before the stream starts.
        let probe = Command::new("mosquitto_pub")
            .args([
                "-h",
                &publishing.host,
                "-p",
                &publishing.port.to_string(),
                "-q",
                "1",
            ])
            .args(["-t", &format!("{}/probe", publishing.prefix), "-m", "probe"])
            .status()
            .unwrap();
        assert!(probe.success());
        if written(&output).0 > 0 {
            break publish_paced(publishing.clone(), output.clone());
        }
        assert!(Instant::now() < deadline, "the source never subscribed");
        // Paces the probes; the condition above is what is waited for.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    // A third of the way: the publisher is ahead and messages are flowing.
    while (written(&output).2.len() as u64) < total / 3 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first); // SIGKILL, then reaped.
    let at_kill = written(&output).2.len();
    assert!((at_kill as u64) < total, "killed mid-stream: {at_kill}");
    let _second = run(2);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, lines, numbers) = written(&output);
        if numbers.len() as u64 == total {
            // The source's duplicates, read from Iggy itself: what Iggy stored and the
            // broker was not told of at the kill, the unsettled batches (8 of
            // `batch_length`) and acknowledgements not yet written (as many again at
            // most). The broker's `max_inflight_messages` is no bound: Mosquitto 2.0.11
            // was seen with thousands unacknowledged under a limit of 100.
            let (stored, distinct) = numbers_in_iggy(&target.address, &stream).await;
            assert_eq!(distinct.len() as u64, total, "every message is in Iggy");
            let source_duplicates = stored - distinct.len();
            // The file sink's: at most two batches (1000 each) written again after the kill.
            let sink_duplicates = lines.saturating_sub(stored);
            println!(
                "{total} messages, killed at {at_kill}: {source_duplicates} stored twice, {sink_duplicates} written twice by the sink"
            );
            assert!(
                source_duplicates <= 2 * 8 * SOURCE_BATCH,
                "{source_duplicates} messages stored twice; logs in {}",
                dir.display()
            );
            assert!(
                sink_duplicates <= 2_000,
                "{sink_duplicates} messages written twice; logs in {}",
                dir.display()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {total} distinct messages written; logs in {}",
            numbers.len(),
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publisher.join().unwrap();
}
