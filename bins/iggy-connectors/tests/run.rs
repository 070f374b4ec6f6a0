//! The binary runs connectors from a config, through the Iggy test server (or the real
//! server `IGGY_TEST_ADDRESS` names), and stops cleanly on SIGTERM.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use iggy_connectors_tests::{plugin_path, prepare_topic, temp_dir, unique};
use runtime_core::{Destination, IggyBus, IggySettings, MessageBus};

mod support;
use iggy_test_server::TestTarget;
use support::{Reaped, Served, api_address, http_get, lines_of, runtime_command, stored_messages};

/// Writes a runtime config and two connectors (random source -> file sink on `stream`)
/// under `dir`, and makes the topic ahead where a real server needs it
/// ([`prepare_topic`]); returns the config file and the sink's output file.
async fn write_setup(
    dir: &std::path::Path,
    iggy: &str,
    stream: &str,
    source_settings: &str,
    sink_settings: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    write_setup_with(dir, iggy, stream, "", source_settings, sink_settings).await
}

/// As `write_setup`, with `source_stream_settings` added to the source's stream.
async fn write_setup_with(
    dir: &std::path::Path,
    iggy: &str,
    stream: &str,
    source_stream_settings: &str,
    source_settings: &str,
    sink_settings: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let connectors = dir.join("connectors");
    std::fs::create_dir_all(&connectors).unwrap();
    let output = dir.join("out.jsonl");
    std::fs::write(
        connectors.join("random.toml"),
        format!(
            "type = \"source\"\nkey = \"random\"\nenabled = true\nversion = 0\nname = \"R\"\npath = \"{}\"\n\
             [[streams]]\nstream = \"{stream}\"\ntopic = \"t\"\nschema = \"json\"\n{source_stream_settings}\n\
             [plugin_config]\n{source_settings}\n",
            plugin_path("iggy_connector_random_source")
        ),
    )
    .unwrap();
    std::fs::write(
        connectors.join("file.toml"),
        format!(
            "type = \"sink\"\nkey = \"file\"\nenabled = true\nversion = 0\nname = \"F\"\npath = \"{}\"\n\
             [[streams]]\nstream = \"{stream}\"\ntopics = [\"t\"]\nschema = \"json\"\n{sink_settings}\n\
             [plugin_config]\npath = \"{}\"\n",
            plugin_path("iggy_connector_file_sink"),
            output.display()
        ),
    )
    .unwrap();
    let config = support::runtime_config(dir, iggy, "[http]\nenabled = false\n");
    prepare_topic(iggy, stream, "t").await;
    (config, output)
}

/// Replaces the setup's file sink with the faulty test sink (key `slow`) on `stream`,
/// its stream entry completed by `sink_settings` and its `plugin_config` by
/// `plugin_config` (TOML lines): a sink whose `consume` can be seen starting (its
/// `log_marker` line) and made slow (`consume_delay_ms`).
fn use_faulty_sink(dir: &std::path::Path, stream: &str, sink_settings: &str, plugin_config: &str) {
    let connectors = dir.join("connectors");
    std::fs::remove_file(connectors.join("file.toml")).unwrap();
    std::fs::write(
        connectors.join("slow.toml"),
        format!(
            "type = \"sink\"\nkey = \"slow\"\nenabled = true\nversion = 0\nname = \"S\"\npath = \"{}\"\n\
             [[streams]]\nstream = \"{stream}\"\ntopics = [\"t\"]\nschema = \"json\"\n{sink_settings}\n\
             [plugin_config]\n{plugin_config}\n",
            plugin_path("faulty_sink_plugin"),
        ),
    )
    .unwrap();
}

/// Reads the log `received` until a line contains `needle` (each line read is added to
/// `seen`).
///
/// # Panics
/// At `deadline`, or when the log ends first, showing what was seen.
fn wait_for_line(
    received: &Receiver<String>,
    needle: &str,
    deadline: Instant,
    seen: &mut Vec<String>,
) {
    loop {
        let Ok(line) = received.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        else {
            panic!(
                "no log line with {needle:?}; the log so far:\n{}",
                seen.join("\n")
            );
        };
        let found = line.contains(needle);
        seen.push(line);
        if found {
            return;
        }
    }
}

/// The rest of the log of a runtime that exited (its stderr closes).
fn rest_of_log(received: &Receiver<String>, seen: &mut Vec<String>) {
    while let Ok(line) = received.recv_timeout(Duration::from_secs(10)) {
        seen.push(line);
    }
}

/// Sends `signal` (`TERM`, `INT`, ...) to the child.
fn signal(child: &Reaped, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal}");
}

/// Waits up to `within` for the child to exit by itself. Polled rather than waited on
/// a blocking thread, so that a child that does not exit is killed (by `Reaped`) when
/// the test fails, instead of keeping the test's runtime from shutting down.
async fn exit_within(child: &mut Reaped, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sequence numbers (`seq` of the random source's payloads) of `lines`, each a
/// JSON payload or a file sink line holding one; lines that are neither are left out.
fn seqs_of(lines: &str) -> Vec<u64> {
    lines
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|value| {
            value["seq"]
                .as_u64()
                .or_else(|| value["payload"]["seq"].as_u64())
        })
        .collect()
}

/// Sends the runtime SIGTERM and waits (up to 30 s, else panics with `expectation`)
/// for it to exit successfully.
async fn terminated_cleanly(child: Reaped, expectation: &str) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut child = child.take();
    let finished = tokio::task::spawn_blocking(move || child.wait());
    let status = tokio::time::timeout(Duration::from_secs(30), finished)
        .await
        .expect(expectation)
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// The values that occur more than once in a list, in brief (a failure shows this, not
/// thousands of values).
#[derive(Debug, Default, PartialEq, Eq)]
struct Repeats {
    /// How many values occur more than once.
    values: u64,
    /// The least and the greatest of them.
    range: Option<(u64, u64)>,
    /// The most times one occurs.
    most: usize,
}

fn repeats(values: impl IntoIterator<Item = u64>) -> Repeats {
    let mut counts = BTreeMap::new();
    for value in values {
        *counts.entry(value).or_insert(0) += 1;
    }
    counts.retain(|_, count| *count > 1);
    Repeats {
        values: counts.len() as u64,
        range: counts
            .keys()
            .next()
            .zip(counts.keys().next_back())
            .map(|(a, b)| (*a, *b)),
        most: counts.values().max().copied().unwrap_or(0),
    }
}

/// A connection to the Iggy server at `address`, as the runtime makes it.
async fn iggy_bus(address: &str) -> IggyBus {
    IggyBus::connect(&IggySettings::new(address))
        .await
        .unwrap_or_else(|error| panic!("connecting to Iggy at {address}: {error}"))
}

/// SIGTERM stops the runtime cleanly, and what it saved on the way covers everything
/// delivered: the signal comes while a sink batch is in flight (its `consume` takes a
/// while) and the source is still producing; shutdown finishes the batch and stores its
/// offset, and saves the source's state. Started again, the runtime goes on from there:
/// every message arrives, none twice, and Iggy holds each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_saves_what_was_delivered_and_a_restart_repeats_nothing() {
    // Our server, or a real one with IGGY_TEST_ADDRESS.
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("binary-run");
    let stream = unique("demo");
    const TOTAL: u64 = 3_000;
    let (config, _) = write_setup(
        &dir,
        &target.address,
        &stream,
        &format!("interval = \"10ms\"\nmax_count = {TOTAL}\nmessages_range = [10, 10]"),
        "",
    )
    .await;
    let record = dir.join("recorded.jsonl");
    let slow = format!(
        "consume_delay_ms = 500\nlog_marker = \"in-flight\"\nrecord_to = \"{}\"",
        record.display()
    );
    use_faulty_sink(
        &dir,
        &stream,
        "batch_length = 50\npoll_interval = \"5ms\"",
        &slow,
    );

    let mut child = Reaped::spawn(
        runtime_command(&config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let received = lines_of(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = Vec::new();
    // The third batch's `consume` has started and takes half a second: the signal
    // comes while it is in flight, two batches after the first offset was stored.
    for _ in 0..3 {
        wait_for_line(&received, "faulty sink consumed", deadline, &mut log);
    }
    signal(&child, "TERM");
    let status = exit_within(&mut child, Duration::from_secs(30))
        .await
        .expect("the runtime stops within its shutdown deadline");
    rest_of_log(&received, &mut log);
    let log = log.join("\n");
    assert!(status.success(), "{status:?}\n{log}");
    for connector in [
        "connector=random kind=source version=0 state=running",
        "connector=slow kind=sink version=0 state=running",
    ] {
        assert!(
            log.contains(connector),
            "missing startup line {connector:?} in:\n{log}"
        );
    }
    assert!(log.contains("stopped"), "{log}");
    // What the sink recorded before the signal, the batch in flight included: in
    // order, once each.
    let recorded = seqs_of(&std::fs::read_to_string(&record).unwrap());
    let before = recorded.len() as u64;
    assert_eq!(recorded, (0..before).collect::<Vec<_>>(), "{log}");
    // One partition, whose offsets are the sequence numbers: the group's stored offset
    // is the last message recorded.
    let bus = iggy_bus(&target.address).await;
    let from = Destination::new(&stream, "t");
    let group = "iggy-connect-sink-slow";
    let progress = bus.group_progress(&from, group).await.unwrap().unwrap();
    let stored: Vec<Option<u64>> = progress.partitions.iter().map(|p| p.stored).collect();
    assert_eq!(stored, [Some(before - 1)], "the sink's stored offset");

    // Again, now without the delay: a restart that re-delivered a batch or produced a
    // stored send again would write it before the messages not yet sent (one
    // partition, delivered in order), so once the last one is recorded every repeat
    // would be too.
    let connector = dir.join("connectors/slow.toml");
    let text = std::fs::read_to_string(&connector).unwrap();
    std::fs::write(
        &connector,
        text.replace("consume_delay_ms = 500", "consume_delay_ms = 0"),
    )
    .unwrap();
    let _again = Reaped::spawn(
        runtime_command(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let recorded = loop {
        let recorded = seqs_of(&std::fs::read_to_string(&record).unwrap());
        if recorded.iter().collect::<BTreeSet<_>>().len() as u64 == TOTAL {
            break recorded;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {TOTAL} arrived after the restart",
            recorded.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The source's repeats first: the sink would deliver those twice too.
    let stored: Vec<u64> = stored_messages(&bus, &stream, "t")
        .await
        .iter()
        .map(|message| seqs_of(&String::from_utf8_lossy(&message.payload))[0])
        .collect();
    assert_eq!(
        repeats(stored.iter().copied()),
        Repeats::default(),
        "sequence numbers sent to Iggy again after a SIGTERM"
    );
    assert_eq!(stored, (0..TOTAL).collect::<Vec<_>>());
    assert_eq!(
        repeats(recorded.iter().copied()),
        Repeats::default(),
        "sequence numbers delivered again after a SIGTERM"
    );
}

/// A second SIGINT or SIGTERM during shutdown exits at once, with 130, without waiting
/// for the batch in flight: here a `consume` that would take ten minutes, which the
/// first signal's shutdown waits for (up to a `shutdown_timeout` of five).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_during_a_slow_shutdown() {
    // Our server, or a real one with IGGY_TEST_ADDRESS.
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("binary-second-signal");
    let stream = unique("second-signal");
    let (config, _) = write_setup(
        &dir,
        &target.address,
        &stream,
        "interval = \"10ms\"\nmessages_range = [5, 5]",
        "",
    )
    .await;
    let hung = "consume_delay_ms = 600000\nlog_marker = \"hung\"";
    use_faulty_sink(&dir, &stream, "poll_interval = \"5ms\"", hung);
    let mut child = Reaped::spawn(
        runtime_command(&config)
            .env("NO_COLOR", "1")
            .env("IGGY_CONNECTORS_RUNTIME_SHUTDOWN_TIMEOUT", "300s")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let received = lines_of(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = Vec::new();
    wait_for_line(&received, "faulty sink consumed", deadline, &mut log);
    signal(&child, "TERM");
    // The first signal was taken: shutdown is under way, waiting for the hung batch.
    wait_for_line(
        &received,
        "a second signal exits at once",
        deadline,
        &mut log,
    );
    signal(&child, "INT");
    // A tenth of the shutdown_timeout: an exit by the second signal, not by shutdown
    // giving up on the batch.
    let status = exit_within(&mut child, Duration::from_secs(30)).await;
    if status.is_none() {
        // Its log ends only when it does.
        let _ = child.kill();
        let _ = child.wait();
    }
    rest_of_log(&received, &mut log);
    let log = log.join("\n");
    let status = status.unwrap_or_else(|| {
        panic!("still running 30 s after the second signal (shutdown_timeout 300 s):\n{log}")
    });
    assert_eq!(status.code(), Some(130), "{status:?}\n{log}");
    assert!(
        log.contains("second signal: exiting without waiting"),
        "{log}"
    );
}

/// Killed with SIGKILL mid-stream and started again: every message arrives at least
/// once. The source adds no duplicates: with verified resume (the default) the restart
/// finds which of its pending sends Iggy stored (searching far deeper than this topic
/// holds), and each send is one request (batches of exactly `batch_length`), so none is
/// stored in part; Iggy holds each message once, on our server and a real one (the
/// runtime is killed, not the server). The sink repeats at most the two batches whose
/// offsets it had not stored yet: a batch's offset is stored while the next batch of
/// the partition goes to the plugin, and that one's store waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runtime_resumes_without_losing_messages() {
    // Our server, or a real one with IGGY_TEST_ADDRESS.
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("binary-kill");
    let stream = unique("kill");
    const TOTAL: u64 = 2_000;
    const SINK_BATCH: u64 = 50;
    // Sends of one batch each: 20 messages fill the stream's `batch_length`, so ready
    // batches are never merged into one send.
    let (config, output) = write_setup_with(
        &dir,
        &target.address,
        &stream,
        "batch_length = 20",
        &format!("interval = \"2ms\"\nmax_count = {TOTAL}\nmessages_range = [20, 20]"),
        &format!("batch_length = {SINK_BATCH}\npoll_interval = \"2ms\""),
    )
    .await;
    let start = || {
        Reaped::spawn(
            runtime_command(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    };
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&output)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    };
    let seqs = || seqs_of(&std::fs::read_to_string(&output).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = start();
    while seqs().len() < 300 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Dropped: SIGKILL, then reaped.
    drop(first);

    let second = start();
    loop {
        let unique: BTreeSet<u64> = seqs().into_iter().collect();
        if unique.len() as u64 == TOTAL {
            assert_eq!(unique, (0..TOTAL).collect(), "every message arrived");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {TOTAL} arrived after the restart",
            unique.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The source: what Iggy stored, read back from the topic.
    let bus = iggy_bus(&target.address).await;
    let stored = stored_messages(&bus, &stream, "t").await;
    let stored_seqs: Vec<u64> = stored
        .iter()
        .map(|message| seqs_of(&String::from_utf8_lossy(&message.payload))[0])
        .collect();
    assert_eq!(
        repeats(stored_seqs.iter().copied()),
        Repeats::default(),
        "sequence numbers the source sent again after Iggy stored them"
    );
    assert_eq!(
        stored_seqs,
        (0..TOTAL).collect::<Vec<_>>(),
        "Iggy holds each message once, in order"
    );
    let ids: BTreeSet<u128> = stored.iter().map(|message| message.id).collect();
    assert_eq!(ids.len(), stored.len(), "message ids repeat");
    // The sink: offsets it wrote more than once, each twice at most, and together one
    // run of at most two batches.
    let again = repeats(lines().iter().map(|line| line["offset"].as_u64().unwrap()));
    let one_run = again
        .range
        .is_none_or(|(first, last)| last - first + 1 == again.values);
    assert!(
        again.most <= 2 && one_run && again.values <= 2 * SINK_BATCH,
        "offsets the sink delivered again, more than two batches of {SINK_BATCH}: {again:?}"
    );
    drop(second);
}

/// With `[http] enabled`, the binary serves the API (here on a port the OS picks, which
/// the startup log names) until it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_http_api_while_running() {
    // Our server, or a real one with IGGY_TEST_ADDRESS.
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("binary-http");
    let stream = unique("http");
    let (config, _) = write_setup(
        &dir,
        &target.address,
        &stream,
        "interval = \"5ms\"\nmessages_range = [5, 10]",
        "poll_interval = \"5ms\"",
    )
    .await;
    let Served {
        child,
        address,
        log: _log,
    } = support::serve_api(&config, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let (status, body) = http_get(&address, "/ready");
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "never ready: {status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(ready.contains("\"ready\":true"), "{ready}");
    let (status, sinks) = http_get(&address, "/sinks");
    assert_eq!(status, 200);
    assert!(sinks.contains("\"key\":\"file\""), "{sinks}");
    // The container health check asks the same API.
    // (With a key, as in the image: an address off loopback needs one to load.)
    let healthcheck = |address: &str| {
        Command::new(env!("CARGO_BIN_EXE_iggy-connectors"))
            .arg("healthcheck")
            .env("IGGY_CONNECTORS_HTTP_ENABLED", "true")
            .env("IGGY_CONNECTORS_HTTP_ADDRESS", address)
            .env("IGGY_CONNECTORS_HTTP_API_KEY", "k")
            .env_remove("IGGY_CONNECTORS_CONFIG_PATH")
            .output()
            .unwrap()
    };
    let healthy = healthcheck(&address);
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let port = address.rsplit(':').next().unwrap();
    assert!(
        healthcheck(&format!("0.0.0.0:{port}")).status.success(),
        "a wildcard address is asked on loopback"
    );

    terminated_cleanly(child, "the runtime stops within its deadline").await;
}

/// A sink that takes a second per batch, fed by a source at full speed: the backlog
/// waits in Iggy, not in the runtime. Sampled every 20 ms, the runtime's heap and stacks
/// (`RssAnon` in `/proc/<pid>/status`) stay within a bound the connectors' memory
/// budgets (4 MiB each here) keep, and every message arrives. (Seen: 20 MiB; with no
/// budget, 50 MiB: 16 source batches of 5000 in flight, each with its request.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_fed_by_a_fast_source_keeps_the_runtime_within_its_budget() {
    const TOTAL: u64 = 100_000;
    const SINK_BATCH: u64 = 10_000;
    /// What the runtime may hold besides the budgets: its code's heap, the plugins'
    /// own buffers, the client's.
    const BOUND_MIB: u64 = 40;
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("binary-memory");
    let stream = unique("memory");
    let (config, _) = write_setup_with(
        &dir,
        &target.address,
        &stream,
        "batch_length = 1000\nlinger_time = \"0ms\"",
        &format!(
            "interval = \"0ms\"\nmessages_range = [4999, 5000]\npayload_size = 100\nmax_count = {TOTAL}"
        ),
        "",
    )
    .await;
    let record = dir.join("record.jsonl");
    use_faulty_sink(
        &dir,
        &stream,
        &format!("batch_length = {SINK_BATCH}\npoll_interval = \"5ms\""),
        &format!(
            "consume_delay_ms = 1000\nrecord_to = \"{}\"",
            record.display()
        ),
    );
    let child = Reaped::spawn(
        runtime_command(&config)
            .env("IGGY_CONNECTORS_RUNTIME_MEMORY_BUDGET", "4194304")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let anon_kib = || -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
        let line = status.lines().find(|line| line.starts_with("RssAnon:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut peak = 0;
    loop {
        peak = peak.max(anon_kib().unwrap_or(0));
        let recorded = std::fs::read_to_string(&record).unwrap_or_default();
        let seqs: BTreeSet<u64> = seqs_of(&recorded).into_iter().collect();
        if seqs.len() as u64 == TOTAL {
            assert_eq!(seqs, (0..TOTAL).collect(), "every message arrived");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {TOTAL} arrived; peak RssAnon {peak} KiB",
            seqs.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("peak RssAnon {} KiB", peak);
    assert!(
        peak <= BOUND_MIB * 1024,
        "the runtime's heap reached {peak} KiB, beyond {BOUND_MIB} MiB"
    );
}

/// The API serves while the runtime signs in to Iggy (a real server takes tens of
/// milliseconds to check a password): `/health` answers at once, `/ready` says 503 "not
/// connected to Iggy" until the sign-in is done, and a SIGTERM meanwhile stops the
/// runtime cleanly. Here the "server" accepts connections and never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_while_iggy_is_still_signing_in() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let iggy = silent.local_addr().unwrap().to_string();
    // Holds every connection open, unanswered, for the test's life.
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    let dir = temp_dir("binary-signing-in");
    let config = support::runtime_config(&dir, &iggy, "");
    let source = format!(
        "type = \"source\"\nkey = \"random\"\nenabled = true\nversion = 0\nname = \"Random\"\npath = \"random\"\n[[streams]]\nstream = \"{}\"\ntopic = \"t\"\nschema = \"json\"\n[plugin_config]\ninterval = \"10ms\"\n",
        unique("signing-in")
    );
    std::fs::write(dir.join("connectors").join("random.toml"), source).unwrap();
    let Served {
        child,
        address,
        log: _log,
    } = support::serve_api(&config, &[]);
    let (status, body) = http_get(&address, "/health");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(&address, "/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not connected to Iggy"), "{body}");
    let (status, sources) = http_get(&address, "/sources");
    assert_eq!(status, 200, "{sources}");
    assert!(sources.contains("\"key\":\"random\""), "{sources}");

    terminated_cleanly(child, "the runtime stops while connecting").await;
}

/// With `[http.tls]`, `healthcheck` asks `/health` over TLS, trusting the API's own
/// certificate (made for `localhost`, asked on 127.0.0.1); with another certificate
/// configured it refuses the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_asks_health_over_tls() {
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("binary-health-tls");
    let stream = unique("health-tls");
    let (config, _) = write_setup(&dir, &target.address, &stream, "interval = \"10ms\"", "").await;
    let certificate = |name: &str| {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        (cert, key)
    };
    let (cert, key) = certificate("api");
    let tls = |command: &mut Command, address: &str, cert: &std::path::Path| {
        command
            .env("IGGY_CONNECTORS_HTTP_ENABLED", "true")
            .env("IGGY_CONNECTORS_HTTP_ADDRESS", address)
            .env("IGGY_CONNECTORS_HTTP_TLS_ENABLED", "true")
            .env("IGGY_CONNECTORS_HTTP_TLS_CERT_FILE", cert)
            .env("IGGY_CONNECTORS_HTTP_TLS_KEY_FILE", &key)
            .env_remove("IGGY_CONNECTORS_CONFIG_PATH");
    };
    let mut command = runtime_command(&config);
    tls(&mut command, "127.0.0.1:0", &cert);
    let mut child = Reaped::spawn(
        command
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let received = lines_of(child.stderr.take().unwrap());
    let address = api_address(&received, Instant::now() + Duration::from_secs(60));
    let healthcheck = |cert: &std::path::Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_iggy-connectors"));
        tls(command.arg("healthcheck"), &address, cert);
        command.output().unwrap()
    };
    let healthy = healthcheck(&cert);
    let said = String::from_utf8_lossy(&healthy.stdout);
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    assert!(
        said.contains(&format!("healthy: https://{address}/health")),
        "{said}"
    );
    let (other, _) = certificate("other");
    let refused = healthcheck(&other);
    let complaint = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(complaint.contains("another certificate"), "{complaint}");
    drop(child);
}

/// An API address already in use is a clear startup error, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_address_in_use_is_a_startup_error() {
    // Our server, or a real one with IGGY_TEST_ADDRESS.
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("binary-http-taken");
    let (config, _) =
        write_setup(&dir, &target.address, &unique("taken"), "max_count = 1", "").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = tokio::task::spawn_blocking(move || {
        runtime_command(&config)
            .env("IGGY_CONNECTORS_HTTP_ENABLED", "true")
            .env("IGGY_CONNECTORS_HTTP_ADDRESS", &address)
            .output()
    });
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("the runtime exits")
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(taken);
}

/// The README's first command, as a subprocess: the demo runs the bundled connectors
/// end to end and serves the API; Ctrl-C (SIGINT) stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_first_command_runs_the_demo() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let try_it = readme.split("## Try it").nth(1).unwrap();
    let block = try_it
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let first = block.lines().next().unwrap();
    let args: Vec<&str> = first
        .strip_prefix("cargo run -- ")
        .unwrap_or_else(|| panic!("the first command is not `cargo run -- ...`: {first}"))
        .split_whitespace()
        .collect();
    assert_eq!(block.lines().nth(1), Some("cargo test --workspace"));

    let mut command = Command::new(env!("CARGO_BIN_EXE_iggy-connectors"));
    command
        .args(&args)
        .env("NO_COLOR", "1")
        .env("IGGY_CONNECTORS_HTTP_ADDRESS", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // Against a real server when the suite runs against one.
    if let Ok(address) = std::env::var("IGGY_TEST_ADDRESS") {
        prepare_topic(&address, "demo", "events").await;
        command.env("IGGY_CONNECTORS_IGGY_ADDRESS", address);
    }
    let mut child = Reaped::spawn(&mut command);
    let received = lines_of(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut api, mut output) = (None, None);
    let mut printed = Vec::new();
    while printed
        .last()
        .is_none_or(|line| line != "Press Ctrl-C to stop.")
    {
        let line = received
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the demo says where to look");
        if let Some(rest) = line.trim().strip_prefix("HTTP API: http://") {
            api = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(rest) = line.trim().strip_prefix("Output:") {
            output = rest.split_whitespace().next().map(std::path::PathBuf::from);
        }
        printed.push(line);
    }
    // The README shows what the demo prints, but for addresses, ports and the pid in
    // the demo's directory (and the Iggy line, against a real server).
    let shown = readme
        .split("It prints where to look:\n\n```\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README shows the demo's first lines");
    let temp = std::env::temp_dir().display().to_string();
    let same_shape = |line: &str| {
        let line = line.replace(temp.trim_end_matches('/'), "/tmp");
        let mut shape = String::new();
        for c in line.chars() {
            if !c.is_ascii_digit() {
                shape.push(c);
            } else if !shape.ends_with('N') {
                shape.push('N');
            }
        }
        shape
    };
    let real_server = std::env::var_os("IGGY_TEST_ADDRESS").is_some();
    let compared = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .filter(|line| !(real_server && line.trim_start().starts_with("Iggy:")))
            .map(|line| same_shape(&line))
            .collect()
    };
    assert_eq!(
        compared(printed),
        compared(shown.lines().map(str::to_owned).collect()),
        "the README's demo output is not what the demo prints"
    );
    let (api, output) = (api.unwrap(), output.unwrap());
    let written = || std::fs::read_to_string(&output).map_or(0, |text| text.lines().count());
    while written() < 10 {
        assert!(
            Instant::now() < deadline,
            "the sink wrote only {}",
            written()
        );
        assert!(child.try_wait().unwrap().is_none(), "the demo exited early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        first_line["payload"]["demo"], true,
        "the demo's transform ran: {first_line}"
    );
    let (status, sinks) = http_get(&api, "/sinks");
    assert_eq!(status, 200);
    assert!(
        sinks.contains("\"key\":\"file\"") && sinks.contains("\"status\":\"running\""),
        "{sinks}"
    );
    assert_eq!(http_get(&api, "/stats").0, 200);

    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let mut child = child.take();
    let finished = tokio::task::spawn_blocking(move || child.wait());
    let status = tokio::time::timeout(Duration::from_secs(30), finished)
        .await
        .expect("the demo stops on Ctrl-C")
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    while let Ok(line) = received.recv_timeout(Duration::from_secs(5)) {
        rest.push(line);
    }
    assert!(
        rest.iter()
            .any(|line| line.starts_with("The file sink wrote")),
        "{rest:?}"
    );
}

/// `[logging] format = "json"`: every log line is a JSON object; the periodic summary
/// gives one line per connector with its state, throughput, errors and lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_periodic_summaries() {
    // Our server, or a real one with IGGY_TEST_ADDRESS.
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("binary-json-logs");
    let stream = unique("json");
    let (config, _) = write_setup(
        &dir,
        &target.address,
        &stream,
        "interval = \"5ms\"\nmessages_range = [5, 10]",
        "poll_interval = \"5ms\"",
    )
    .await;
    let mut child = Reaped::spawn(
        runtime_command(&config)
            .env("IGGY_CONNECTORS_LOGGING_FORMAT", "json")
            .env("IGGY_CONNECTORS_LOGGING_SUMMARY_INTERVAL", "200ms")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let received = lines_of(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut summarised = std::collections::BTreeSet::new();
    while summarised.len() < 2 {
        let line = received
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("summary lines for both connectors");
        let event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("not a JSON log line ({error}): {line}"));
        assert!(
            event["level"].is_string() && event["timestamp"].is_string(),
            "{event}"
        );
        // Per-batch lines only where a connector asks (`verbose`, `benchmark`).
        assert!(
            event["message"] != "batch delivered" && event["message"] != "batch stage timings",
            "{event}"
        );
        if event["message"] == "summary" {
            assert!(event["messages_per_second"].is_number(), "{event}");
            assert!(
                event["errors"].is_number() && event["lag"].is_number(),
                "{event}"
            );
            assert_eq!(event["state"], "running", "{event}");
            summarised.insert(event["connector"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(summarised, ["file".to_owned(), "random".to_owned()].into());
    drop(child);
}

/// `verbose = true` logs every batch at info level and `benchmark = true` its stage
/// timings, for a source and for a sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_and_benchmark_log_every_batch() {
    // Our server, or a real one with IGGY_TEST_ADDRESS.
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("binary-verbose");
    let stream = unique("verbose");
    write_setup(
        &dir,
        &target.address,
        &stream,
        "interval = \"5ms\"\nmessages_range = [5, 10]",
        "poll_interval = \"5ms\"",
    )
    .await;
    let connectors = dir.join("connectors");
    for (file, name) in [
        ("random.toml", "name = \"R\"\n"),
        ("file.toml", "name = \"F\"\n"),
    ] {
        let path = connectors.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let asked = format!("{name}verbose = true\nbenchmark = true\n");
        std::fs::write(&path, text.replacen(name, &asked, 1)).unwrap();
    }
    let mut child = Reaped::spawn(
        runtime_command(&dir.join("config.toml"))
            .env("IGGY_CONNECTORS_LOGGING_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let received = lines_of(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 4 {
        let line = received
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("per-batch lines of both connectors; saw {seen:?}"));
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        let connector = event["connector"].as_str().unwrap_or_default().to_owned();
        match event["message"].as_str() {
            Some("batch delivered") => {
                assert_eq!(event["level"], "INFO", "{event}");
                assert!(event["messages"].as_u64().unwrap() > 0, "{event}");
                assert!(event["bytes"].as_u64().unwrap() > 0, "{event}");
                seen.insert((connector, "verbose"));
            }
            Some("batch stage timings") => {
                for stage in ["poll_us", "transform_us", "send_us", "commit_us"] {
                    assert!(event[stage].is_u64(), "{stage} in {event}");
                }
                seen.insert((connector, "benchmark"));
            }
            _ => {}
        }
    }
    let expected: std::collections::BTreeSet<(String, &str)> = [
        ("file".to_owned(), "benchmark"),
        ("file".to_owned(), "verbose"),
        ("random".to_owned(), "benchmark"),
        ("random".to_owned(), "verbose"),
    ]
    .into();
    assert_eq!(seen, expected);
    drop(child);
}

/// An API on every address with no key would let anyone who reaches it load a library:
/// the binary refuses to start, naming the key to set and the way to accept the risk.
#[test]
fn an_open_api_off_loopback_refuses_to_start() {
    let dir = temp_dir("binary-open-api");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nenabled = true\naddress = \"0.0.0.0:0\"\n[state]\npath = \"{}\"\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    let output = runtime_command(&config)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("serves the HTTP API on 0.0.0.0:0 with no api key")
            && stderr.contains("IGGY_CONNECTORS_HTTP_API_KEY")
            && stderr.contains("IGGY_CONNECTORS_HTTP_ALLOW_UNAUTHENTICATED"),
        "{stderr}"
    );
}

/// A runtime whose stderr goes away (the reader of its log pipe exited) keeps serving:
/// a log line it cannot write is lost, not a panic in the task that logged it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_log_pipe_does_not_break_the_runtime() {
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("binary-closed-log");
    let stream = unique("closed-log");
    let (config, _) = write_setup(&dir, &target.address, &stream, "interval = \"50ms\"", "").await;
    let Served {
        child: _runtime,
        address,
        log,
    } = support::serve_api(&config, &[]);
    drop(log);
    // Refused requests log a warning each: written to the closed pipe.
    for _ in 0..3 {
        let (status, body) = support::http_request(
            &address,
            "GET",
            "/sinks",
            &[("host", "rebound.evil.example")],
            "",
        );
        assert_eq!(status, 403, "{body}");
    }
    let (status, _) = http_get(&address, "/health");
    assert_eq!(status, 200);
}
