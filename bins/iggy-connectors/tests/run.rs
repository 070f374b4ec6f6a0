//! The binary runs connectors from a config, through the Iggy test server (or the real
//! server `IGGY_TEST_ADDRESS` names), and stops cleanly on SIGTERM.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iggy_connectors_tests::{plugin_path, prepare_topic, temp_dir, unique};

mod support;
use iggy_test_server::TestTarget;
use support::{Reaped, Served, api_address, http_get, lines_of, runtime_command};

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
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[iggy]\naddress = \"{iggy}\"\n[state]\npath = \"{}\"\n[connectors]\nconfig_dir = \"{}\"\n[http]\nenabled = false\n",
            dir.join("state").display(),
            connectors.display()
        ),
    )
    .unwrap();
    prepare_topic(iggy, stream, "t").await;
    (config, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_the_configured_connectors_and_stops_on_sigterm() {
    // Our server, or a real one with IGGY_TEST_ADDRESS.
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("binary-run");
    let stream = unique("demo");
    let (config, output) = write_setup(
        &dir,
        &target.address,
        &stream,
        "interval = \"1ms\"\nmax_count = 100\nmessages_range = [5, 10]",
        "poll_interval = \"5ms\"",
    )
    .await;

    let mut child = Reaped::spawn(
        runtime_command(&config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let lines = || {
        std::fs::read_to_string(&output)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    };
    while lines() < 100 {
        assert!(
            Instant::now() < deadline,
            "only {} messages arrived",
            lines()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the runtime exited early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(server) = &target.server {
        assert_eq!(server.messages(&stream, "t").unwrap().len(), 100);
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let child = child.take();
    let finished = tokio::task::spawn_blocking(move || child.wait_with_output());
    let result = tokio::time::timeout(Duration::from_secs(30), finished)
        .await
        .expect("the runtime stops within its deadline")
        .unwrap()
        .unwrap();
    assert!(result.status.success(), "{:?}", result.status);
    let log = String::from_utf8_lossy(&result.stderr);
    for connector in [
        "connector=random kind=source version=0 state=running",
        "connector=file kind=sink version=0 state=running",
    ] {
        assert!(
            log.contains(connector),
            "missing startup line {connector:?} in:\n{log}"
        );
    }
    assert!(log.contains("stopped"), "{log}");
}

/// Killed with SIGKILL mid-stream and started again: every message arrives at least
/// once; duplicates are at most one sink batch (its offset is stored after the file is
/// written). The source adds none: with verified resume (the default) the restart finds
/// which of its pending sends Iggy stored, and each send is one request (batches of
/// exactly `batch_length`), so none is stored in part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runtime_resumes_without_losing_messages() {
    // Our server, or a real one with IGGY_TEST_ADDRESS.
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("binary-kill");
    let stream = unique("kill");
    // Sends of one batch each: 20 messages fill the stream's `batch_length`, so ready
    // batches are never merged into one send.
    let (config, output) = write_setup_with(
        &dir,
        &target.address,
        &stream,
        "batch_length = 20",
        "interval = \"2ms\"\nmax_count = 2000\nmessages_range = [20, 20]",
        "batch_length = 50\npoll_interval = \"2ms\"",
    )
    .await;
    let start = || {
        Reaped::spawn(
            runtime_command(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    };
    let seqs = || -> Vec<u64> {
        std::fs::read_to_string(&output)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|value| value["payload"]["seq"].as_u64())
            .collect()
    };
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
        let unique: std::collections::BTreeSet<u64> = seqs().into_iter().collect();
        if unique.len() == 2000 {
            assert_eq!(unique, (0..2000).collect(), "every message arrived");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 2000 arrived after the restart",
            unique.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = seqs();
    let duplicates = all.len() - 2000;
    assert!(
        duplicates <= 50,
        "{duplicates} duplicates: more than one sink batch"
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

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut child = child.take();
    let finished = tokio::task::spawn_blocking(move || child.wait());
    let status = tokio::time::timeout(Duration::from_secs(30), finished)
        .await
        .expect("the runtime stops within its deadline")
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
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
