//! Plugin `tracing` events reach the host's subscriber, tagged with the connector key,
//! whether the connector is a loaded library or linked statically.
//!
//! This is a test binary of its own because it installs the global subscriber.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iggy_connectors_tests::{json_batch, plugin_path};
use plugin_host::{OpenOptions, Plugin, PluginLoader};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test]
async fn plugin_events_reach_the_host_tagged_with_the_connector_key() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .init();

    let library = PluginLoader::new()
        .load(&plugin_path("faulty_sink_plugin"))
        .unwrap();
    let statically = Plugin::from_static(faulty_sink_plugin::descriptor()).unwrap();
    for (plugin, key, marker) in [
        (&library, "library-key", "library-marker"),
        (&statically, "static-key", "static-marker"),
    ] {
        let config = format!(r#"{{"log_marker": "{marker}"}}"#);
        let sink = plugin
            .open_sink(key, &config, OpenOptions::default())
            .await
            .unwrap();
        sink.consume(&json_batch(0, 4)).await.unwrap();
        sink.close(Duration::from_secs(5)).await.unwrap();

        // The event is emitted inside `consume`, before it answers.
        let lines = captured.lines_with(marker);
        assert_eq!(lines.len(), 1, "{key}: {lines:?}");
        let line = &lines[0];
        assert!(line.contains(key), "{key} missing: {line}");
        assert!(line.contains("faulty sink consumed"), "{line}");
        assert!(line.contains("messages=4"), "{line}");
        assert!(line.contains("INFO"), "{line}");
    }
}
