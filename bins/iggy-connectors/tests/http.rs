//! The HTTP connectors through the binary, against the Iggy test server or a real one
//! (`IGGY_TEST_ADDRESS`): the sink with its endpoint failing and the runtime killed
//! with SIGKILL mid-stream (nothing lost, duplicates bounded), the webhook source with
//! the runtime killed mid-stream under 100 clients' requests (every message a client got
//! 2xx for is in Iggy, read back), and upstream's sink config file run unchanged.
//!
//! The endpoint and the clients are plain HTTP/1.1 over std sockets, written here: the
//! binary's test crate has no HTTP library, and these need only what the connectors
//! send (`content-length` bodies on keep-alive connections).

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iggy_connectors_tests::{plugin_path, prepare_topic, temp_dir, unique};
use iggy_test_server::TestTarget;

mod support;
use support::{Reaped, runtime_command, runtime_config};

/// What the endpoint has seen.
#[derive(Default)]
struct Seen {
    /// The bodies it answered 200, in arrival order.
    delivered: Vec<(Vec<(String, String)>, String)>,
    /// Requests it answered 503 (while down).
    refused: u64,
}

/// An HTTP/1.1 endpoint on a loopback port: answers 200 and records the request, or
/// 503 while [`Endpoint::set_down`] says so. A thread per connection, keep-alive.
#[derive(Clone)]
struct Endpoint {
    address: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    /// A pause before each 200, so that a stream takes long enough to be killed in.
    pace: Duration,
}

impl Endpoint {
    fn start(pace: Duration) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = Endpoint {
            address: listener.local_addr().unwrap(),
            seen: Arc::default(),
            down: Arc::default(),
            pace,
        };
        let serving = endpoint.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let serving = serving.clone();
                std::thread::spawn(move || serving.serve(stream));
            }
        });
        endpoint
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Serves one connection until the peer closes it (or is killed).
    fn serve(&self, stream: TcpStream) {
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        while let Some((headers, body)) = read_request(&mut reader) {
            let answer: &[u8] = if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                self.seen.lock().unwrap().refused += 1;
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\ndown"
            } else {
                // The pause is the endpoint's speed under test, not a wait for anything.
                std::thread::sleep(self.pace);
                self.seen.lock().unwrap().delivered.push((headers, body));
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
            };
            if writer.write_all(answer).is_err() {
                return;
            }
        }
    }

    /// Every NDJSON line of the bodies answered 200, parsed.
    fn lines(&self) -> Vec<serde_json::Value> {
        self.seen
            .lock()
            .unwrap()
            .delivered
            .iter()
            .flat_map(|(_, body)| {
                body.lines()
                    .map(|line| serde_json::from_str(line).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn refused(&self) -> u64 {
        self.seen.lock().unwrap().refused
    }
}

/// One request from `reader`: its headers (names in lower case) and body; `None` at the
/// end of the connection or on anything unreadable.
fn read_request(reader: &mut impl BufRead) -> Option<(Vec<(String, String)>, String)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
        if name == "content-length" {
            length = value.parse().ok()?;
        }
        headers.push((name, value));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((headers, String::from_utf8(body).ok()?))
}

/// Runs the binary with `config` and `vars`, its log in `log` (a failure shows it).
fn start(config: &std::path::Path, log: &std::path::Path, vars: &[(&str, &str)]) -> Reaped {
    let file = std::fs::File::create(log).unwrap();
    Reaped::spawn(
        runtime_command(config)
            .env("NO_COLOR", "1")
            .envs(vars.iter().copied())
            .stdout(file.try_clone().unwrap())
            .stderr(file),
    )
}

/// Waits until `condition` holds, asking every few milliseconds, for at most `limit`;
/// a timeout names `what` and the directory with the runtimes' logs.
async fn wait_for(
    what: &str,
    logs: &std::path::Path,
    limit: Duration,
    mut condition: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; logs in {}",
            logs.display()
        );
        // Paces the look at the condition; the condition is what is waited for.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The random source, `total` JSON messages `{"seq": n, ...}` to topic `t` of
/// `stream`, about 10,000 a second.
fn random_source(stream: &str, topic: &str, total: u64) -> String {
    format!(
        "type = \"source\"\nkey = \"random\"\nenabled = true\nversion = 0\nname = \"R\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopic = \"{topic}\"\nschema = \"json\"\nbatch_length = 20\n\
         [plugin_config]\ninterval = \"2ms\"\nmax_count = {total}\nmessages_range = [20, 20]\npayload_size = 40\n",
        plugin_path("iggy_connector_random_source")
    )
}

/// Messages the random source produces in the sink test.
const SINK_TOTAL: u64 = 20_000;
/// The sink's batch length: one NDJSON request each.
const SINK_BATCH: u64 = 100;

/// The random source produces into Iggy and the HTTP sink posts NDJSON batches of 100
/// to an endpoint, in one runtime. The endpoint goes down (503) and the runtime is
/// killed (SIGKILL) while the sink is failing against it; it is started again against
/// the endpoint still down, which comes back; then the runtime is killed again while
/// delivering, and started again. In the end every message reached the endpoint, in
/// order, and at most two batches twice: see the bound below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_killed_while_its_endpoint_fails_loses_nothing() {
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("http-sink-kill");
    let stream = unique("httpkill");
    prepare_topic(&target.address, &stream, "t").await;
    // 5 ms per request of 100: at most 20,000 messages a second, so the stream lasts
    // long enough for a kill to land in it.
    let endpoint = Endpoint::start(Duration::from_millis(5));
    let sink = format!(
        "type = \"sink\"\nkey = \"http\"\nenabled = true\nversion = 0\nname = \"H\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopics = [\"t\"]\nschema = \"json\"\nbatch_length = {SINK_BATCH}\npoll_interval = \"2ms\"\n\
         [plugin_config]\nurl = \"{}\"\nbatch_mode = \"ndjson\"\ninclude_metadata = true\nmax_retries = 1\nretry_delay = \"10ms\"\ntimeout = \"5s\"\n",
        plugin_path("iggy_connector_http_sink"),
        endpoint.url("/ingest"),
    );
    let config = runtime_config(
        &dir,
        &target.address,
        // The connector fails after its retries run out (`error_policy` is `fail`) and
        // is restarted: quickly here, so the test does not wait on backoff.
        "[http]\nenabled = false\n[runtime.retry]\nmax_attempts = 2\ninitial_backoff = \"10ms\"\nmax_backoff = \"20ms\"\n\
         [runtime.restart]\ninitial_backoff = \"50ms\"\nmax_backoff = \"200ms\"\n",
    );
    let connectors = dir.join("connectors");
    std::fs::write(
        connectors.join("random.toml"),
        random_source(&stream, "t", SINK_TOTAL),
    )
    .unwrap();
    std::fs::write(connectors.join("http.toml"), sink).unwrap();
    let limit = Duration::from_secs(90);
    // (lines delivered, distinct offsets, distinct seqs)
    let counts = || {
        let lines = endpoint.lines();
        let offsets: BTreeSet<u64> = lines
            .iter()
            .map(|line| line["metadata"]["iggy_offset"].as_u64().unwrap())
            .collect();
        let seqs: BTreeSet<u64> = lines
            .iter()
            .map(|line| line["payload"]["seq"].as_u64().unwrap())
            .collect();
        (lines.len(), offsets.len(), seqs)
    };

    let first = start(&config, &dir.join("run-1.log"), &[]);
    wait_for("3,000 messages delivered", &dir, limit, || {
        counts().1 >= 3_000
    })
    .await;
    endpoint.set_down(true);
    // The sink has met the dead endpoint: its retry and the runtime's both refused.
    wait_for("requests refused", &dir, limit, || endpoint.refused() >= 3).await;
    drop(first); // SIGKILL, then reaped.
    let at_first_kill = counts().1;

    let second = start(&config, &dir.join("run-2.log"), &[]);
    let refused = endpoint.refused();
    // The restarted sink reads on from its stored offset, and fails against the
    // endpoint still down, before it comes back.
    wait_for("the restarted sink refused", &dir, limit, || {
        endpoint.refused() >= refused + 2
    })
    .await;
    endpoint.set_down(false);
    wait_for("delivery resumed", &dir, limit, || {
        counts().1 >= at_first_kill + 5_000
    })
    .await;
    drop(second); // SIGKILL mid-stream, while delivering.
    let at_second_kill = counts().1;
    assert!(
        (at_second_kill as u64) < SINK_TOTAL,
        "killed mid-stream: {at_second_kill} of {SINK_TOTAL} delivered"
    );

    let _third = start(&config, &dir.join("run-3.log"), &[]);
    wait_for("every message delivered", &dir, limit, || {
        counts().2.len() as u64 == SINK_TOTAL
    })
    .await;
    let (lines, offsets, seqs) = counts();
    assert_eq!(seqs, (0..SINK_TOTAL).collect::<BTreeSet<_>>());
    // The random source produced each seq once (it resumes verified): one offset each.
    assert_eq!(offsets as u64, SINK_TOTAL);
    // Every duplicate is the sink's: the same offset posted twice. A crash repeats at
    // most the two batches per partition whose offsets were not stored yet (a batch's
    // store runs while the next one is delivered), and only batches the endpoint took:
    // the first kill came while every request was refused, so it repeats none; the
    // second, at most two batches (one partition).
    let duplicates = lines - offsets;
    assert!(
        duplicates as u64 <= 2 * SINK_BATCH,
        "{duplicates} messages delivered twice; logs in {}",
        dir.display()
    );
    // Nothing out of order within a run: each request's offsets increase.
    for (_, body) in &endpoint.seen.lock().unwrap().delivered {
        let offsets: Vec<u64> = body
            .lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["metadata"]["iggy_offset"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert!(offsets.windows(2).all(|pair| pair[0] < pair[1]));
    }
    println!(
        "{SINK_TOTAL} messages, {duplicates} duplicates, {} refused, killed at {at_first_kill} and {at_second_kill}",
        endpoint.refused()
    );
}

/// One POST of `body` (NDJSON) with `Idempotency-Key: key` on a fresh connection; the
/// status, or `None` when the connection failed or was cut (the runtime is down or was
/// killed mid-request).
fn post(address: SocketAddr, key: &str, body: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    // Longer than the source's ack wait (30 s): a live runtime always answers first.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    write!(
        stream,
        "POST /events HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/x-ndjson\r\n\
         idempotency-key: {key}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line).ok()?;
    status_line.split(' ').nth(1)?.parse().ok()
}

/// Messages the clients post to the webhook source.
const SOURCE_TOTAL: u64 = 100_000;
/// Messages per request.
const PER_REQUEST: u64 = 1_000;
/// Clients posting at once, each its share of the requests in order.
const CLIENTS: u64 = 4;

/// 100,000 messages `{"n": ...}` in 100 NDJSON requests of 1000 from 4 clients to the
/// webhook source; the runtime is killed (SIGKILL) and started again in the middle, and
/// each client posts again what got no 2xx (a 503, or a connection refused or cut). A
/// file sink in a second runtime then reads the topic back from Iggy: every message
/// acknowledged with 2xx is there, and a message is there twice only when its request
/// was stored and then retried (at most the requests retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_acknowledged_before_a_kill_are_all_in_iggy() {
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("http-source-kill");
    let stream = unique("webhookkill");
    prepare_topic(&target.address, &stream, "t").await;
    // A free port when asked; each run of the runtime binds it (the same for both, as
    // a webhook's address is configured at the sender).
    let address = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let source = format!(
        "type = \"source\"\nkey = \"webhooks\"\nenabled = true\nversion = 0\nname = \"W\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopic = \"t\"\nschema = \"json\"\n\
         [plugin_config]\naddress = \"{address}\"\npaths = [\"/events\"]\n",
        plugin_path("iggy_connector_http_source"),
    );
    let config = runtime_config(&dir, &target.address, "[http]\nenabled = false\n");
    std::fs::write(dir.join("connectors").join("webhooks.toml"), source).unwrap();

    let first = start(&config, &dir.join("run-1.log"), &[]);
    // Requests acknowledged (2xx) and requests posted more than once, over all clients.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let retried = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (acknowledged, retried) = (acknowledged.clone(), retried.clone());
            std::thread::spawn(move || {
                let requests = SOURCE_TOTAL / PER_REQUEST / CLIENTS;
                let deadline = Instant::now() + Duration::from_secs(180);
                for request in client * requests..(client + 1) * requests {
                    let first = request * PER_REQUEST;
                    let body: String = (first..first + PER_REQUEST)
                        .map(|n| format!("{{\"n\":{n}}}\n"))
                        .collect();
                    let key = format!("request-{request}");
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        if post(address, &key, &body).is_some_and(|status| status / 100 == 2) {
                            break;
                        }
                        assert!(Instant::now() < deadline, "request {request} never stored");
                        // A sender's pause before it tries again (what a webhook sender
                        // does; the answer is what it waits for).
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    if attempts > 1 {
                        retried.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    acknowledged.lock().unwrap().insert(request);
                }
            })
        })
        .collect();
    let limit = Duration::from_secs(120);
    let requests = SOURCE_TOTAL / PER_REQUEST;
    wait_for("a third of the requests acknowledged", &dir, limit, || {
        acknowledged.lock().unwrap().len() as u64 >= requests / 3
    })
    .await;
    drop(first); // SIGKILL, then reaped.
    let at_kill = acknowledged.lock().unwrap().len() as u64;
    assert!(
        at_kill < requests,
        "killed mid-stream: {at_kill} acknowledged"
    );
    let _second = start(&config, &dir.join("run-2.log"), &[]);
    wait_for("every request acknowledged", &dir, limit, || {
        acknowledged.lock().unwrap().len() as u64 == requests
    })
    .await;
    for client in clients {
        client.join().unwrap();
    }

    // Read back from Iggy by a file sink of a runtime of its own.
    let reader_dir = dir.join("reader");
    let output = dir.join("read.ndjson");
    let reader_config = runtime_config(&reader_dir, &target.address, "[http]\nenabled = false\n");
    std::fs::write(
        reader_dir.join("connectors").join("file.toml"),
        format!(
            "type = \"sink\"\nkey = \"file\"\nenabled = true\nversion = 0\nname = \"F\"\npath = \"{}\"\n\
             [[streams]]\nstream = \"{stream}\"\ntopics = [\"t\"]\nschema = \"json\"\nbatch_length = 1000\npoll_interval = \"5ms\"\n\
             [plugin_config]\npath = \"{}\"\nformat = \"payload\"\nfsync = false\n",
            plugin_path("iggy_connector_file_sink"),
            output.display()
        ),
    )
    .unwrap();
    let _reader = start(&reader_config, &reader_dir.join("run.log"), &[]);
    let read = || -> (usize, BTreeSet<u64>) {
        let text = std::fs::read_to_string(&output).unwrap_or_default();
        // A line being written is complete only with its newline.
        let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        let numbers: Vec<u64> = complete
            .lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        let count = numbers.len();
        (count, numbers.into_iter().collect())
    };
    wait_for("every acknowledged message read back", &dir, limit, || {
        read().1.len() as u64 == SOURCE_TOTAL
    })
    .await;
    let (stored, distinct) = read();
    assert_eq!(distinct, (0..SOURCE_TOTAL).collect::<BTreeSet<_>>());
    // A request stored whole and then retried (its answer lost to the kill) is there
    // twice; nothing else is. Requests are never split between batches.
    let retried = retried.load(std::sync::atomic::Ordering::SeqCst);
    let duplicates = (stored - distinct.len()) as u64;
    assert!(
        duplicates <= retried * PER_REQUEST && duplicates.is_multiple_of(PER_REQUEST),
        "{duplicates} duplicates from {retried} retried requests; logs in {}",
        dir.display()
    );
    println!(
        "{SOURCE_TOTAL} messages, {at_kill} requests acknowledged at the kill, {retried} retried, {duplicates} stored twice"
    );
}

/// Upstream's HTTP sink config file, unchanged (read from the fixtures; copied only to
/// a directory of the test's own, as the provider reads a whole directory and writes
/// its active versions there), run by the binary with the plugin path, the URL and the
/// stream set by the per-connector environment overrides: the sink posts the random
/// source's messages as NDJSON envelopes with the file's headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_http_sink_file_runs_unchanged_through_the_binary() {
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("http-sink-upstream-binary");
    let stream = unique("httpupstream");
    prepare_topic(&target.address, &stream, "my_topic").await;
    let endpoint = Endpoint::start(Duration::ZERO);
    let config = runtime_config(&dir, &target.address, "[http]\nenabled = false\n");
    let fixture = iggy_connectors_tests::upstream_connectors_dir().join("http_sink.toml");
    std::fs::copy(&fixture, dir.join("connectors").join("http_sink.toml")).unwrap();
    std::fs::write(
        dir.join("connectors").join("random.toml"),
        random_source(&stream, "my_topic", 120),
    )
    .unwrap();
    let plugin = plugin_path("iggy_connector_http_sink");
    let url = endpoint.url("/ingest");
    let _runtime = start(
        &config,
        &dir.join("run.log"),
        &[
            ("IGGY_CONNECTORS_SINK_HTTP_PATH", plugin.as_str()),
            ("IGGY_CONNECTORS_SINK_HTTP_PLUGIN_CONFIG_URL", url.as_str()),
            (
                "IGGY_CONNECTORS_SINK_HTTP_STREAMS_0_STREAM",
                stream.as_str(),
            ),
        ],
    );
    let seqs = || -> BTreeSet<u64> {
        endpoint
            .lines()
            .iter()
            .map(|line| line["payload"]["seq"].as_u64().unwrap())
            .collect()
    };
    wait_for(
        "120 messages delivered",
        &dir,
        Duration::from_secs(60),
        || seqs().len() == 120,
    )
    .await;
    assert_eq!(seqs(), (0..120).collect::<BTreeSet<_>>());
    let seen = endpoint.seen.lock().unwrap();
    let header = |headers: &[(String, String)], name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    for (headers, body) in &seen.delivered {
        assert_eq!(
            header(headers, "content-type").as_deref(),
            Some("application/x-ndjson")
        );
        assert_eq!(
            header(headers, "authorization").as_deref(),
            Some("Bearer <YOUR_TOKEN_HERE>")
        );
        assert_eq!(
            header(headers, "x-custom-header").as_deref(),
            Some("custom-value")
        );
        // The file's `batch_length = 50`: never more in one request.
        assert!(body.lines().count() <= 50, "{body}");
        for line in body.lines() {
            let envelope: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(envelope["metadata"]["iggy_stream"], stream.as_str());
            assert_eq!(envelope["metadata"]["iggy_topic"], "my_topic");
        }
    }
}
