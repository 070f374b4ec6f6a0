//! The attack SECURITY.md starts from, through the real binary: someone who can reach
//! the API (or write a connector config) names a library of their choosing for a
//! connector, so that the runtime loads it and runs its code. Every way in is refused,
//! and the library is never opened.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use iggy_connectors_tests::{plugin_library, plugin_path, prepare_topic, temp_dir, unique};
use iggy_test_server::TestTarget;
use support::{
    Served, http_get, http_request, printed, runtime_command, runtime_config, serve_api,
};

/// A real connector library copied to `dir/elsewhere`, outside every plugin
/// directory; a loader that opened it would load it fine.
fn library_elsewhere(dir: &Path) -> PathBuf {
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let library = plugin_library("iggy_connector_file_sink");
    let copy = elsewhere.join(library.file_name().unwrap());
    std::fs::copy(&library, &copy).unwrap();
    copy
}

/// The directory of the binary under test: the default plugin directory.
fn binary_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_iggy-connectors"))
        .parent()
        .unwrap()
        .canonicalize()
        .unwrap()
}

/// A sink config for `key` loading `path`, reading `stream`.
fn sink_toml(key: &str, path: &str, stream: &str, output: &Path) -> String {
    format!(
        "type = \"sink\"\nkey = \"{key}\"\nenabled = true\nversion = 0\nname = \"F\"\npath = \"{path}\"\n\
         [[streams]]\nstream = \"{stream}\"\ntopics = [\"t\"]\nschema = \"json\"\n\
         [plugin_config]\npath = \"{}\"\n",
        output.display()
    )
}

/// A runtime config under `dir` (Iggy at `iggy`) whose one connector, the sink
/// `evil`, names a library outside the plugin directories; returns the config and
/// that library.
fn evil_setup(dir: &Path, iggy: &str) -> (PathBuf, PathBuf) {
    let library = library_elsewhere(dir);
    let config = runtime_config(dir, iggy, "");
    std::fs::write(
        dir.join("connectors").join("evil.toml"),
        sink_toml("evil", library.to_str().unwrap(), "s", &dir.join("out")),
    )
    .unwrap();
    (config, library)
}

/// Whether the process `pid` has `library` mapped (it was opened).
fn has_mapped(pid: u32, library: &Path) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let name = library.canonicalize().unwrap();
    maps.contains(&name.display().to_string())
}

/// A connector config file naming a library outside the plugin directories: `validate`
/// names the path and the directories, and `run --strict` refuses to start (before
/// reaching Iggy) instead of running the rest; pointing `plugins.directories` at the
/// library's directory lets it through.
#[test]
fn a_config_file_naming_a_library_elsewhere_is_refused_by_validate_and_at_start_up() {
    let dir = temp_dir("security-start-up");
    // Nothing listens there: a refusal must come before connecting.
    let (config, library) = evil_setup(&dir, "127.0.0.1:1");
    let allowed = binary_dir().display().to_string();
    let resolved = library.canonicalize().unwrap().display().to_string();

    let validated = runtime_command(&config).arg("validate").output().unwrap();
    let report = printed(&validated);
    assert!(!validated.status.success(), "{report}");
    assert!(
        report.contains("sink evil")
            && report.contains(&resolved)
            && report.contains(&allowed)
            && report.contains("/usr/local/lib/iggy-connectors")
            && report.contains("IGGY_CONNECTORS_PLUGINS_DIRECTORIES"),
        "{report}"
    );

    let run = runtime_command(&config)
        .args(["--strict", "run"])
        .env("NO_COLOR", "1")
        .env("IGGY_CONNECTORS_HTTP_ENABLED", "false")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(
        stderr.contains("refusing to start")
            && stderr.contains("sink evil")
            && stderr.contains(&resolved)
            && stderr.contains(&allowed),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot connect to Iggy"), "{stderr}");

    // The directory allowed (from the environment, as every key can be): valid.
    let allowed = runtime_command(&config)
        .arg("validate")
        .env(
            "IGGY_CONNECTORS_PLUGINS_DIRECTORIES",
            library.parent().unwrap(),
        )
        .output()
        .unwrap();
    assert!(
        allowed.status.success(),
        "{}{}",
        String::from_utf8_lossy(&allowed.stdout),
        String::from_utf8_lossy(&allowed.stderr)
    );
}

/// Without `--strict` the same file makes its connector `error`, naming the library
/// and the directories, while the runtime serves; the library is never opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_strict_a_library_elsewhere_is_a_connector_in_error_never_opened() {
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("security-lenient");
    let (config, library) = evil_setup(&dir, &target.address);
    let Served {
        child,
        address,
        log: _log,
    } = serve_api(&config, &[]);
    let resolved = library.canonicalize().unwrap().display().to_string();
    let (status, sink) = http_get(&address, "/sinks/evil");
    assert_eq!(status, 200, "{sink}");
    assert!(
        sink.contains("\"status\":\"error\"") && sink.contains(&resolved),
        "{sink}"
    );
    let (status, _) = http_get(&address, "/ready");
    assert_eq!(status, 503);
    assert!(!has_mapped(child.id(), &library), "the library was opened");
}

/// The API with the default settings (loopback, no key): a new config version naming a
/// library elsewhere is refused with 400 naming the path and the allowed directories,
/// nothing is stored, and the library is never mapped into the process. A web page
/// cannot send the request instead: a `text/plain` body, another site's `Origin` and
/// a rebound `Host` are each refused. With a key the request needs it; read-only
/// refuses it even with the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_a_library_elsewhere_and_requests_from_web_pages() {
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("security-api");
    let library = library_elsewhere(&dir);
    let stream = unique("security");
    let connectors = dir.join("connectors");
    std::fs::create_dir_all(&connectors).unwrap();
    std::fs::write(
        connectors.join("file.toml"),
        sink_toml(
            "file",
            &plugin_path("iggy_connector_file_sink"),
            &stream,
            &dir.join("out.jsonl"),
        ),
    )
    .unwrap();
    prepare_topic(&target.address, &stream, "t").await;
    let config = runtime_config(&dir, &target.address, "");
    let body = format!(
        r#"{{"enabled": true, "name": "evil", "path": "{}", "streams": [{{"stream": "{stream}", "topics": ["t"], "schema": "json"}}]}}"#,
        library.display()
    );
    let json = ("content-type", "application/json");

    let Served {
        child,
        address,
        log: _log,
    } = serve_api(&config, &[]);
    let (status, answer) = http_request(&address, "POST", "/sinks/file/configs", &[json], &body);
    assert_eq!(status, 400, "{answer}");
    let resolved = library.canonicalize().unwrap().display().to_string();
    assert!(
        answer.contains("plugin_not_allowed")
            && answer.contains(&resolved)
            && answer.contains(&binary_dir().display().to_string()),
        "{answer}"
    );
    let (_, versions) = http_get(&address, "/sinks/file/configs");
    assert!(
        !versions.contains("evil"),
        "a refused version was stored: {versions}"
    );
    // Activating a version that names it cannot happen: none was stored.
    let (status, answer) = http_request(
        &address,
        "PUT",
        "/sinks/file/configs/active",
        &[json],
        r#"{"version": 1}"#,
    );
    assert_eq!(status, 404, "{answer}");
    assert!(!has_mapped(child.id(), &library), "the library was opened");

    // A web page's ways of sending the same request.
    let allowed_body = body.replace(
        library.to_str().unwrap(),
        &plugin_path("iggy_connector_null_sink"),
    );
    // Headers, expected status, expected code.
    type PageRequest<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
    let page_requests: [PageRequest<'_>; 3] = [
        (
            &[("content-type", "text/plain")],
            415,
            "unsupported_media_type",
        ),
        (
            &[json, ("origin", "https://evil.example")],
            403,
            "cross_origin_refused",
        ),
        (
            &[json, ("host", "rebound.evil.example")],
            403,
            "host_not_allowed",
        ),
    ];
    for (headers, expected, code) in page_requests {
        let (status, answer) = http_request(
            &address,
            "POST",
            "/sinks/file/configs",
            headers,
            &allowed_body,
        );
        assert_eq!(
            (status, answer.contains(code)),
            (expected, true),
            "{answer}"
        );
    }
    let (_, versions) = http_get(&address, "/sinks/file/configs");
    assert!(
        !versions.contains("evil"),
        "a refused version was stored: {versions}"
    );
    drop(child);

    let key = ("api-key", "k3y");
    let Served {
        child,
        address,
        log: _log,
    } = serve_api(
        &config,
        &[
            ("IGGY_CONNECTORS_HTTP_API_KEY", "k3y"),
            ("IGGY_CONNECTORS_HTTP_READ_ONLY", "true"),
        ],
    );
    let (status, answer) = http_request(
        &address,
        "POST",
        "/sinks/file/configs",
        &[json],
        &allowed_body,
    );
    assert_eq!(
        (status, answer.contains("unauthorized")),
        (401, true),
        "{answer}"
    );
    let (status, answer) = http_request(
        &address,
        "POST",
        "/sinks/file/configs",
        &[json, key],
        &allowed_body,
    );
    assert_eq!(
        (status, answer.contains("read_only")),
        (403, true),
        "{answer}"
    );
    let (status, _) = http_request(&address, "GET", "/sinks/file", &[key], "");
    assert_eq!(status, 200);
    drop(child);
}

/// A request that outlives `http.request_timeout` is answered 503 while its work goes
/// on: stopping a sink whose `consume` takes a minute waits for the stop deadline, the
/// client hears back after the request timeout, and the sink is stopped in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_is_answered_503_while_its_work_goes_on() {
    let target = TestTarget::from_env().await.unwrap();
    let dir = temp_dir("security-request-timeout");
    let stream = unique("slow");
    let connectors = dir.join("connectors");
    std::fs::create_dir_all(&connectors).unwrap();
    std::fs::write(
        connectors.join("random.toml"),
        format!(
            "type = \"source\"\nkey = \"random\"\nenabled = true\nversion = 0\nname = \"R\"\npath = \"{}\"\n\
             [[streams]]\nstream = \"{stream}\"\ntopic = \"t\"\nschema = \"json\"\n\
             [plugin_config]\ninterval = \"10ms\"\n",
            plugin_path("iggy_connector_random_source")
        ),
    )
    .unwrap();
    std::fs::write(
        connectors.join("slow.toml"),
        format!(
            "type = \"sink\"\nkey = \"slow\"\nenabled = true\nversion = 0\nname = \"S\"\npath = \"{}\"\n\
             [[streams]]\nstream = \"{stream}\"\ntopics = [\"t\"]\nschema = \"json\"\n\
             [plugin_config]\nconsume_delay_ms = 60000\nlog_marker = \"slow-consume\"\n",
            plugin_path("faulty_sink_plugin")
        ),
    )
    .unwrap();
    prepare_topic(&target.address, &stream, "t").await;
    let config = runtime_config(&dir, &target.address, "");
    let Served {
        child,
        address,
        log: received,
    } = serve_api(
        &config,
        &[
            ("IGGY_CONNECTORS_HTTP_REQUEST_TIMEOUT", "1s"),
            ("IGGY_CONNECTORS_RUNTIME_SHUTDOWN_TIMEOUT", "4s"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    // The sink is inside a consume that lasts a minute.
    loop {
        let line = received
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the slow sink consumes a batch");
        if line.contains("slow-consume") {
            break;
        }
    }
    let json = ("content-type", "application/json");
    let (status, answer) = http_request(&address, "POST", "/sinks/slow/stop", &[json], "");
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.contains("request_timeout") && answer.contains("http.request_timeout"),
        "{answer}"
    );
    // The stop went on: it gives up on the batch at the stop deadline.
    loop {
        let (_, sink) = http_get(&address, "/sinks/slow");
        if sink.contains("\"status\":\"stopped\"") {
            break;
        }
        assert!(Instant::now() < deadline, "the sink never stopped: {sink}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(child);
}
