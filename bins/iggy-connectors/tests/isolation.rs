//! One connector whose config cannot run never stops the others, through the real
//! binary: upstream's five error-isolation cases (each a broken connector beside a
//! healthy one of its kind), the same from the HTTP provider, fixing a broken one
//! through the API, and `--strict` refusing to start instead.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use iggy_connectors_tests::{plugin_path, prepare_topic, temp_dir, unique};
use iggy_test_server::TestTarget;
use serde_json::Value;
use support::{
    Served, http_get, http_request, printed, runtime_command, runtime_config, serve_api,
};

/// A sink config for `key` on `stream`, with `poll_interval` and `path`.
fn sink(key: &str, stream: &str, poll_interval: &str, path: &str) -> String {
    format!(
        "type = \"sink\"\nkey = \"{key}\"\nenabled = true\nversion = 0\nname = \"{key}\"\npath = \"{path}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopics = [\"t\"]\nschema = \"json\"\npoll_interval = \"{poll_interval}\"\n\
         consumer_group = \"{key}\"\n[plugin_config]\nprint_payload = false\n"
    )
}

/// A source config for `key` on `stream`, with `linger_time` and `path`.
fn source(key: &str, stream: &str, linger_time: &str, path: &str) -> String {
    format!(
        "type = \"source\"\nkey = \"{key}\"\nenabled = true\nversion = 0\nname = \"{key}\"\npath = \"{path}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopic = \"t\"\nschema = \"json\"\nlinger_time = \"{linger_time}\"\n\
         [plugin_config]\ninterval = \"100ms\"\nmessages_range = [1, 5]\npayload_size = 20\n"
    )
}

fn stdout() -> String {
    plugin_path("iggy_connector_stdout_sink")
}

fn random() -> String {
    plugin_path("iggy_connector_random_source")
}

/// A runtime config under `dir` reading `files` (name, text) as its connectors.
fn setup(dir: &Path, iggy: &str, files: &[(&str, String)]) -> PathBuf {
    let config = runtime_config(dir, iggy, "");
    for (name, text) in files {
        std::fs::write(dir.join("connectors").join(name), text).unwrap();
    }
    config
}

/// `GET path` as JSON.
fn get_json(address: &str, path: &str) -> (u16, Value) {
    let (status, body) = http_get(address, path);
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {body}")),
    )
}

/// Waits (up to a minute) until the connector `key` in `GET /{kind}s` has `status`;
/// returns its entry.
fn wait_for_status(address: &str, kind: &str, key: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = get_json(address, &format!("/{kind}s"));
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["key"] == key)
            .cloned();
        if let Some(entry) = &entry
            && entry["status"] == status
        {
            return entry.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{kind} {key} never became {status}: {list}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What upstream's error-isolation tests assert, and that readiness names the broken
/// one: the runtime is healthy, both connectors are listed, the broken one is `error`
/// with a `last_error` containing `words`, the healthy one runs with no error.
fn assert_isolated(address: &str, kind: &str, broken: &str, healthy: &str, words: &[&str]) {
    let (status, health) = get_json(address, "/health");
    assert_eq!((status, &health["status"]), (200, &Value::from("healthy")));
    let running = wait_for_status(address, kind, healthy, "running");
    assert!(running.get("last_error").is_none(), "{running}");
    let (_, list) = get_json(address, &format!("/{kind}s"));
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let entry = wait_for_status(address, kind, broken, "error");
    let error = entry["last_error"]["message"].as_str().unwrap_or_default();
    for word in words {
        assert!(error.contains(word), "{word:?} not in {error:?}");
    }
    let (status, ready) = get_json(address, "/ready");
    assert_eq!(status, 503, "{ready}");
    let reasons = ready["reasons"].to_string();
    assert!(
        reasons.contains(&format!("{kind} {broken} did not start")),
        "{ready}"
    );
    let (_, stats) = get_json(address, "/stats");
    let listed = stats["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|entry| entry["key"] == broken && entry["status"] == "error");
    assert!(listed, "{stats}");
}

/// Runs the binary on `files` and checks [`assert_isolated`]; returns the Iggy it
/// talks to, the runtime and its directory.
async fn run_case(
    label: &str,
    kind: &str,
    broken: &str,
    healthy: &str,
    files: impl FnOnce(&str) -> Vec<(&'static str, String)>,
    words: &[&str],
) -> (TestTarget, Served, PathBuf) {
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir(label);
    let stream = unique(label);
    prepare_topic(&target.address, &stream, "t").await;
    let config = setup(&dir, &target.address, &files(&stream));
    let served = serve_api(&config, &[]);
    assert_isolated(&served.address, kind, broken, healthy, words);
    // The start-up log says which connector did not start, and why.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = served
            .log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the start-up log names the connector that did not start");
        if line.contains("did not start") {
            assert!(line.contains(&format!("{kind} {broken}")), "{line}");
            break;
        }
    }
    (target, served, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_with_an_invalid_duration_does_not_stop_its_sibling() {
    let (_target, served, dir) = run_case(
        "isolation-sink-config",
        "sink",
        "stdout_invalid",
        "stdout_valid",
        |stream| {
            vec![
                (
                    "stdout_invalid.toml",
                    sink("stdout_invalid", stream, "not-a-valid-duration", &stdout()),
                ),
                (
                    "stdout_valid.toml",
                    sink("stdout_valid", stream, "5ms", &stdout()),
                ),
            ]
        },
        &[
            "stdout_invalid.toml",
            "poll_interval",
            "not-a-valid-duration",
        ],
    )
    .await;

    // Fixed through the API: a new version, activated, runs without a restart of the
    // process.
    let address = &served.address;
    let (_, active) = get_json(address, "/sinks/stdout_valid/configs/active");
    let stream = active["streams"][0]["stream"].as_str().unwrap().to_owned();
    let fixed = format!(
        r#"{{"enabled": true, "name": "fixed", "path": "{}", "streams": [{{"stream": "{stream}", "topics": ["t"], "schema": "json", "poll_interval": "5ms", "consumer_group": "stdout_invalid"}}], "plugin_config": {{"print_payload": false}}}}"#,
        stdout()
    );
    let json = ("content-type", "application/json");
    let (status, created) = http_request(
        address,
        "POST",
        "/sinks/stdout_invalid/configs",
        &[json],
        &fixed,
    );
    assert_eq!(status, 200, "{created}");
    let created: Value = serde_json::from_str(&created).unwrap();
    // Above the broken file's version 0: both files stay in the directory.
    assert_eq!(created["version"], 1, "{created}");
    let (status, answer) = http_request(
        address,
        "PUT",
        "/sinks/stdout_invalid/configs/active",
        &[json],
        r#"{"version": 1}"#,
    );
    assert_eq!(status, 204, "{answer}");
    let fixed = wait_for_status(address, "sink", "stdout_invalid", "running");
    assert_eq!(fixed["config_version"], 1, "{fixed}");
    let (status, ready) = get_json(address, "/ready");
    assert_eq!(status, 200, "{ready}");
    assert!(dir.join("connectors").join("stdout_invalid.toml").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_with_an_invalid_duration_does_not_stop_its_sibling() {
    run_case(
        "isolation-source-config",
        "source",
        "random_invalid",
        "random_valid",
        |stream| {
            vec![
                (
                    "random_invalid.toml",
                    source("random_invalid", stream, "not-a-valid-duration", &random()),
                ),
                (
                    "random_valid.toml",
                    source("random_valid", stream, "5ms", &random()),
                ),
            ]
        },
        &["random_invalid.toml", "linger_time", "not-a-valid-duration"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_whose_key_cannot_name_a_state_file_does_not_stop_its_sibling() {
    run_case(
        "isolation-source-state",
        "source",
        "random_invalid/state_missing_parent",
        "random_valid",
        |stream| {
            vec![
                (
                    "random_invalid_state.toml",
                    source(
                        "random_invalid/state_missing_parent",
                        stream,
                        "5ms",
                        &random(),
                    ),
                ),
                (
                    "random_valid.toml",
                    source("random_valid", stream, "5ms", &random()),
                ),
            ]
        },
        &["random_invalid_state.toml", "key", "/"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_with_a_missing_plugin_does_not_stop_its_sibling() {
    run_case(
        "isolation-sink-plugin",
        "sink",
        "stdout_missing_plugin",
        "stdout_valid",
        |stream| {
            vec![
                (
                    "stdout_missing.toml",
                    sink(
                        "stdout_missing_plugin",
                        stream,
                        "5ms",
                        "/nonexistent/path/to/libiggy_connector_stdout_sink_does_not_exist.so",
                    ),
                ),
                (
                    "stdout_valid.toml",
                    sink("stdout_valid", stream, "5ms", &stdout()),
                ),
            ]
        },
        &["/nonexistent/path/to/libiggy_connector_stdout_sink_does_not_exist.so"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_with_a_missing_plugin_does_not_stop_its_sibling() {
    run_case(
        "isolation-source-plugin",
        "source",
        "random_missing_plugin",
        "random_valid",
        |stream| {
            vec![
                (
                    "random_missing.toml",
                    source(
                        "random_missing_plugin",
                        stream,
                        "5ms",
                        "/nonexistent/path/to/libiggy_connector_random_source_does_not_exist.so",
                    ),
                ),
                (
                    "random_valid.toml",
                    source("random_valid", stream, "5ms", &random()),
                ),
            ]
        },
        &["/nonexistent/path/to/libiggy_connector_random_source_does_not_exist.so"],
    )
    .await;
}

/// A config service that answers every request with `body` (200, JSON); returns its
/// base URL.
fn config_service(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{address}")
}

/// The same isolation when the configs come from the HTTP provider: the service sends
/// one sink config the runtime cannot use beside a good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_from_the_http_provider_does_not_stop_its_sibling() {
    let target = TestTarget::from_env().await.unwrap();
    let stream = unique("isolation-http");
    prepare_topic(&target.address, &stream, "t").await;
    let sink_json = |key: &str, poll_interval: &str| {
        serde_json::json!({
            "key": key, "enabled": true, "version": 0, "name": key, "path": stdout(),
            "streams": [{
                "stream": stream, "topics": ["t"], "schema": "json",
                "poll_interval": poll_interval, "consumer_group": key
            }],
            "plugin_config": { "print_payload": false }
        })
    };
    let body = serde_json::json!({
        "sinks": {
            "stdout_invalid": sink_json("stdout_invalid", "not-a-valid-duration"),
            "stdout_valid": sink_json("stdout_valid", "5ms"),
        }
    });
    let base_url = config_service(body.to_string());
    let dir = temp_dir("isolation-http");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[iggy]\naddress = \"{}\"\n[state]\npath = \"{}\"\n[connectors]\nconfig_type = \"http\"\nbase_url = \"{base_url}\"\n",
            target.address,
            dir.join("state").display()
        ),
    )
    .unwrap();
    let served = serve_api(&config, &[]);
    assert_isolated(
        &served.address,
        "sink",
        "stdout_invalid",
        "stdout_valid",
        &["sinks.stdout_invalid", "poll_interval"],
    );
}

/// `--strict` (and `[connectors] strict = true`) refuses to start on the same files,
/// naming the file and the problem, before reaching Iggy; `validate` fails on them.
#[test]
fn strict_refuses_to_start_and_validate_fails() {
    let dir = temp_dir("isolation-strict");
    // Nothing listens there: a refusal must come before connecting.
    let config = setup(
        &dir,
        "127.0.0.1:1",
        &[
            (
                "stdout_invalid.toml",
                sink("stdout_invalid", "s", "not-a-valid-duration", &stdout()),
            ),
            (
                "stdout_valid.toml",
                sink("stdout_valid", "s", "5ms", &stdout()),
            ),
        ],
    );
    let runs = [
        runtime_command(&config)
            .args(["--strict", "run"])
            .env("IGGY_CONNECTORS_HTTP_ENABLED", "false")
            .output()
            .unwrap(),
        runtime_command(&config)
            .env("IGGY_CONNECTORS_CONNECTORS_STRICT", "true")
            .env("IGGY_CONNECTORS_HTTP_ENABLED", "false")
            .output()
            .unwrap(),
        runtime_command(&config).arg("validate").output().unwrap(),
    ];
    for output in runs {
        let printed = printed(&output);
        assert!(!output.status.success(), "{printed}");
        assert!(
            printed.contains("stdout_invalid.toml")
                && printed.contains("poll_interval")
                && !printed.contains("cannot connect to Iggy"),
            "{printed}"
        );
    }
}
