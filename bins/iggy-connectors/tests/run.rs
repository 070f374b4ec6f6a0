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
