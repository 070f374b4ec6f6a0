//! Secrets never show, through the real binary: a value that came from `${env:...}`,
//! `${file:...}` or a secret header, quoted by an error at any layer that can fail on a
//! value (runtime config, connector config, plugin `open`, transforms, the HTTP
//! provider's answers), reads `******` in the API's answers, `/stats`, the log and
//! what `validate` prints.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use iggy_connectors_tests::{plugin_path, prepare_topic, temp_dir, unique};
use iggy_test_server::TestTarget;
use support::{
    Served, http_get, http_request, printed, runtime_command, runtime_config, serve_api,
};

/// What the tests' secret variable holds: unique, so that no other text contains it.
fn secret() -> String {
    unique("hunter2-topsecret")
}

/// The variable the configs reference.
const VARIABLE: &str = "SECRETS_TEST_VALUE";

/// `text` must not quote the secret, and must show that something was redacted
/// (or quote the reference, which is no secret).
fn assert_scrubbed(secret: &str, what: &str, text: &str) {
    assert!(!text.contains(secret), "{what} quotes the secret: {text}");
    assert!(
        text.contains("******") || text.contains(&format!("${{env:{VARIABLE}}}")),
        "{what} redacts nothing: {text}"
    );
}

/// A random source on `stream` whose `interval` is the secret: its plugin's `open`
/// fails on it.
fn source_with_secret_interval(stream: &str) -> String {
    format!(
        "type = \"source\"\nkey = \"random\"\nenabled = true\nversion = 0\nname = \"R\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopic = \"t\"\nschema = \"json\"\n\
         [plugin_config]\ninterval = \"${{env:{VARIABLE}}}\"\n",
        plugin_path("iggy_connector_random_source")
    )
}

/// A file sink on `stream` with an `update_fields` transform whose `condition` is the
/// secret: building its transforms fails on it.
fn sink_with_secret_transform(stream: &str, output: &Path) -> String {
    format!(
        "type = \"sink\"\nkey = \"file\"\nenabled = true\nversion = 0\nname = \"F\"\npath = \"{}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopics = [\"t\"]\nschema = \"json\"\n\
         [plugin_config]\npath = \"{}\"\n\
         [transforms.update_fields]\n[[transforms.update_fields.fields]]\nkey = \"a\"\nvalue = 1\n\
         condition = \"${{env:{VARIABLE}}}\"\n",
        plugin_path("iggy_connector_file_sink"),
        output.display()
    )
}

/// Waits (up to a minute) until `path` answers a body containing `needle`.
fn wait_for_body(address: &str, path: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http_get(address, path);
        if body.contains(needle) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never said {needle:?}: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plugin's `open` and a transform fail on a secret value: the connectors' status,
/// `/stats`, the answer to a new config version that is invalid because of the secret,
/// and every log line show `******` instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_about_secret_values_show_them_redacted_in_the_api_and_the_log() {
    let target = TestTarget::from_env().await.unwrap();
    let secret = secret();
    let dir = temp_dir("secrets-run");
    let stream = unique("secrets");
    prepare_topic(&target.address, &stream, "t").await;
    let config = runtime_config(&dir, &target.address, "");
    let connectors = dir.join("connectors");
    std::fs::write(
        connectors.join("random.toml"),
        source_with_secret_interval(&stream),
    )
    .unwrap();
    std::fs::write(
        connectors.join("file.toml"),
        sink_with_secret_transform(&stream, &dir.join("out.jsonl")),
    )
    .unwrap();

    let Served {
        child: _child,
        address,
        log,
    } = serve_api(&config, &[(VARIABLE, &secret)]);
    // The plugin's own words, and the transform builder's.
    let source = wait_for_body(&address, "/sources/random", "invalid duration");
    assert_scrubbed(&secret, "GET /sources/random", &source);
    let sink = wait_for_body(&address, "/sinks/file", "condition");
    assert_scrubbed(&secret, "GET /sinks/file", &sink);
    let (_, stats) = http_get(&address, "/stats");
    assert_scrubbed(&secret, "GET /stats", &stats);

    // A new version that is invalid because of the secret: refused, without quoting it.
    let body = format!(
        r#"{{"enabled": true, "name": "R", "path": "{}", "streams": [{{"stream": "{stream}", "topic": "t", "schema": "json", "batch_length": "${{env:{VARIABLE}}}"}}]}}"#,
        plugin_path("iggy_connector_random_source")
    );
    let (status, answer) = http_request(
        &address,
        "POST",
        "/sources/random/configs",
        &[("content-type", "application/json")],
        &body,
    );
    assert_eq!(status, 400, "{answer}");
    assert_scrubbed(&secret, "the refused version's answer", &answer);

    // Every line logged so far (the runtime and the plugin log each failure, and its
    // restarts), read up to the restarts that follow the failure the API showed.
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines
        .iter()
        .filter(|line: &&String| line.contains("restarting"))
        .count()
        < 2
    {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the source's restarts are logged");
        lines.push(line);
    }
    let logged = lines.join("\n");
    assert_scrubbed(&secret, "the log", &logged);
    assert!(logged.contains("invalid duration"), "{logged}");
}

/// The runtime config and a connector config hold invalid secret values: `validate`
/// and a refused start-up name the key and say what is wrong without quoting them.
#[test]
fn validate_and_start_up_do_not_quote_secret_values() {
    let secret = secret();
    // Runtime config: a duration that is the secret. Nothing listens at the address:
    // the refusal comes first.
    let dir = temp_dir("secrets-runtime-config");
    let config = runtime_config(
        &dir,
        "127.0.0.1:1",
        &format!("[http]\nenabled = false\nheader_read_timeout = \"${{env:{VARIABLE}}}\"\n"),
    );
    for args in [&["validate"][..], &[][..]] {
        let output = runtime_command(&config)
            .args(args)
            .env(VARIABLE, &secret)
            .output()
            .unwrap();
        let printed = printed(&output);
        assert!(!output.status.success(), "{args:?}: {printed}");
        assert!(printed.contains("header_read_timeout"), "{printed}");
        assert_scrubbed(&secret, &format!("{args:?}"), &printed);
    }

    // Connector configs: a stream setting, a plugin setting and a transform setting.
    let dir = temp_dir("secrets-connector-config");
    let config = runtime_config(&dir, "127.0.0.1:1", "[http]\nenabled = false\n");
    let connectors = dir.join("connectors");
    std::fs::write(
        connectors.join("random.toml"),
        source_with_secret_interval("s"),
    )
    .unwrap();
    std::fs::write(
        connectors.join("file.toml"),
        sink_with_secret_transform("s", &dir.join("out.jsonl")),
    )
    .unwrap();
    std::fs::write(
        connectors.join("other.toml"),
        source_with_secret_interval("s")
            .replace("key = \"random\"", "key = \"other\"")
            .replace(
                "schema = \"json\"",
                &format!("schema = \"json\"\nbatch_length = \"${{env:{VARIABLE}}}\""),
            ),
    )
    .unwrap();
    let output = runtime_command(&config)
        .arg("validate")
        .env(VARIABLE, &secret)
        .output()
        .unwrap();
    let printed = printed(&output);
    assert!(!output.status.success(), "{printed}");
    for key in ["interval", "condition", "batch_length"] {
        assert!(printed.contains(key), "{key}: {printed}");
    }
    assert_scrubbed(&secret, "validate", &printed);
}

/// A config service that answers every request 401 with a body quoting the `api-key`
/// header it was sent, as some services do; returns its base URL.
fn echoing_config_service() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut key = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("api-key")
                {
                    key = value.trim().to_owned();
                }
            }
            let body = format!("{{\"error\": \"api key {key} is not valid\"}}");
            let _ = write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{address}")
}

/// The HTTP provider's service quotes the secret header in its error answer: start-up
/// and `validate` report the failure without it.
#[test]
fn an_http_provider_answer_quoting_a_secret_header_is_scrubbed() {
    let secret = secret();
    let base_url = echoing_config_service();
    let dir = temp_dir("secrets-http-provider");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[iggy]\naddress = \"127.0.0.1:1\"\n[http]\nenabled = false\n\
             [connectors]\nconfig_type = \"http\"\nbase_url = \"{base_url}\"\n\
             [connectors.retry]\nenabled = false\n\
             [connectors.request_headers]\napi-key = \"{secret}\"\n"
        ),
    )
    .unwrap();
    for args in [&["validate"][..], &[][..]] {
        let output = runtime_command(&config).args(args).output().unwrap();
        let printed = printed(&output);
        assert!(!output.status.success(), "{args:?}: {printed}");
        assert!(printed.contains("is not valid"), "{args:?}: {printed}");
        assert_scrubbed(&secret, &format!("{args:?}"), &printed);
    }
}
