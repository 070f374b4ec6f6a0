//! The binary runs connectors from a config, through the Iggy test server, and stops
//! cleanly on SIGTERM.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iggy_connectors_tests::{plugin_path, temp_dir};
use iggy_test_server::TestServer;

/// Writes a runtime config and two connectors (random source -> file sink on `stream`)
/// under `dir`; returns the config file and the sink's output file.
fn write_setup(
    dir: &std::path::Path,
    iggy: std::net::SocketAddr,
    stream: &str,
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
             [[streams]]\nstream = \"{stream}\"\ntopic = \"t\"\nschema = \"json\"\n\
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
    (config, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_the_configured_connectors_and_stops_on_sigterm() {
    let server = TestServer::start().await.unwrap();
    let dir = temp_dir("binary-run");
    let (config, output) = write_setup(
        &dir,
        server.address(),
        "demo",
        "interval = \"1ms\"\nmax_count = 100\nmessages_range = [5, 10]",
        "poll_interval = \"5ms\"",
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_iggy-connectors"))
        .args(["--config", config.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
    assert_eq!(server.messages("demo", "t").unwrap().len(), 100);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
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
/// once; duplicates are at most one source batch and one sink batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runtime_resumes_without_losing_messages() {
    let server = TestServer::start().await.unwrap();
    let dir = temp_dir("binary-kill");
    let (config, output) = write_setup(
        &dir,
        server.address(),
        "kill",
        "interval = \"2ms\"\nmax_count = 2000\nmessages_range = [10, 20]",
        "batch_length = 50\npoll_interval = \"2ms\"",
    );
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_iggy-connectors"))
            .args(["--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
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
    let mut first = start();
    while seqs().len() < 300 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = start();
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
        duplicates <= 20 + 50,
        "{duplicates} duplicates: more than one source and one sink batch"
    );
    second.kill().unwrap();
    second.wait().unwrap();
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
fn http_get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// With `[http] enabled`, the binary serves the API (here on a port the OS picks, which
/// the startup log names) until it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_http_api_while_running() {
    use std::io::BufRead;
    let server = TestServer::start().await.unwrap();
    let dir = temp_dir("binary-http");
    let (config, _) = write_setup(
        &dir,
        server.address(),
        "http",
        "interval = \"5ms\"\nmessages_range = [5, 10]",
        "poll_interval = \"5ms\"",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_iggy-connectors"))
        .args(["--config", config.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .env("IGGY_CONNECTORS_HTTP_ENABLED", "true")
        .env("IGGY_CONNECTORS_HTTP_ADDRESS", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let address = loop {
        let line = received
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the runtime logs where the API listens");
        if line.contains("HTTP API listening")
            && let Some(address) = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("address="))
        {
            break address.to_owned();
        }
    };
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

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let finished = tokio::task::spawn_blocking(move || child.wait());
    let status = tokio::time::timeout(Duration::from_secs(30), finished)
        .await
        .expect("the runtime stops within its deadline")
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// An API address already in use is a clear startup error, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_address_in_use_is_a_startup_error() {
    let server = TestServer::start().await.unwrap();
    let dir = temp_dir("binary-http-taken");
    let (config, _) = write_setup(&dir, server.address(), "taken", "max_count = 1", "");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_iggy-connectors"))
            .args(["--config", config.to_str().unwrap()])
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
