//! `iggy-connectors demo`: the bundled connectors end to end with nothing to set up.
//!
//! The random source produces into Iggy and the file sink writes what it consumes; the
//! HTTP API is up. The connectors are linked into this binary (no library paths to
//! fix), and without `IGGY_CONNECTORS_IGGY_ADDRESS` the in-memory test server is started
//! in-process and said to be so. Every other `IGGY_CONNECTORS_*` variable applies, e.g.
//! `IGGY_CONNECTORS_HTTP_ADDRESS`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use config_provider::{ConnectorsConfig, LocalProviderConfig};

const IGGY_ADDRESS_ENV: &str = "IGGY_CONNECTORS_IGGY_ADDRESS";

/// A directory of the demo's own under the temp dir: a fresh name nobody could have
/// made first (with connector configs planted in it), private to this user.
fn private_temp_dir() -> std::io::Result<PathBuf> {
    use std::hash::{BuildHasher, Hasher};
    // Seeded at random for each process: a name others cannot guess.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let dir = std::env::temp_dir().join(format!("iggy-connectors-demo-{}", hasher.finish()));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    // `create`, not `create_dir_all`: a directory that exists already is an error.
    builder.create(&dir)?;
    Ok(dir)
}

fn connector_files(dir: &Path, output: &Path) -> std::io::Result<()> {
    std::fs::create_dir(dir)?;
    std::fs::write(
        dir.join("random.toml"),
        r#"# The demo's source: random JSON records into stream "demo", topic "events".
type = "source"
key = "random"
enabled = true
version = 0
name = "Random source (demo)"
path = "random"
[[streams]]
stream = "demo"
topic = "events"
schema = "json"
[plugin_config]
interval = "200ms"
messages_range = [5, 20]
payload_size = 32
[transforms.add_fields]
enabled = true
fields = [{ key = "demo", value.static = true }]
"#,
    )?;
    std::fs::write(
        dir.join("file.toml"),
        format!(
            r#"# The demo's sink: every message of "demo"/"events" as a line of JSON.
type = "sink"
key = "file"
enabled = true
version = 0
name = "File sink (demo)"
path = "file"
[[streams]]
stream = "demo"
topics = ["events"]
schema = "json"
poll_interval = "50ms"
[plugin_config]
path = "{}"
fsync = false
"#,
            output.display()
        ),
    )
}

pub(crate) fn demo() -> ExitCode {
    crate::init_logging(config_provider::LogFormat::Text);
    crate::block_on(run())
}

async fn run() -> Result<(), String> {
    let mut config = config_provider::load(None)
        .map_err(|error| error.to_string())?
        .config;
    let dir = private_temp_dir()
        .map_err(|error| format!("cannot make the demo's directory under the temp dir: {error}"))?;
    let output = dir.join("output.jsonl");
    connector_files(&dir.join("connectors"), &output).map_err(|error| {
        format!(
            "cannot write the demo's files under {}: {error}",
            dir.display()
        )
    })?;
    // Kept alive until the demo ends.
    let mut server = None;
    let iggy = if std::env::var_os(IGGY_ADDRESS_ENV).is_some() {
        format!("{} (from {IGGY_ADDRESS_ENV})", config.iggy.address)
    } else {
        let started = iggy_test_server::TestServer::start()
            .await
            .map_err(|error| format!("cannot start the in-memory Iggy test server: {error}"))?;
        config.iggy.address = started.address().to_string();
        tracing::warn!(address = %config.iggy.address, "no Iggy server given ({IGGY_ADDRESS_ENV}): started the in-memory test server; its data is lost on exit");
        server = Some(started);
        format!(
            "{} (in-memory test server started for this demo; data is lost on exit; set {IGGY_ADDRESS_ENV} for a real one)",
            config.iggy.address
        )
    };
    config.connectors = ConnectorsConfig::Local(LocalProviderConfig {
        config_dir: dir.join("connectors").display().to_string(),
        // The demo writes its own configs: one that cannot run is a bug to see at once.
        strict: true,
    });
    config.state.path = dir.join("state").display().to_string();
    config.http.enabled = true;
    config.http.metrics.enabled = true;
    let plugins = crate::plugin_registry(&config.plugins)?;
    let result = crate::serve(config, plugins, |api| {
        let api = api.map_or_else(
            || "off".to_owned(),
            |address| format!("http://{address}  (try /sinks, /stats, /metrics, /openapi.json)"),
        );
        println!("iggy-connectors demo: random source -> Iggy -> file sink");
        println!("  Iggy:     {iggy}");
        println!("  HTTP API: {api}");
        println!("  Output:   {}  (tail -f it)", output.display());
        println!("  Configs:  {}", dir.join("connectors").display());
        println!("Press Ctrl-C to stop.");
    })
    .await;
    if let Some(server) = server {
        server.shutdown().await;
    }
    let lines = std::fs::read_to_string(&output).map_or(0, |text| text.lines().count());
    println!(
        "The file sink wrote {lines} messages to {}.",
        output.display()
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `path` of the demo's connector files is a bundled connector of its kind.
    #[test]
    fn the_demos_configs_name_linked_connectors() {
        let dir =
            std::env::temp_dir().join(format!("iggy-connectors-demo-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        connector_files(&dir.join("connectors"), &dir.join("out.jsonl")).unwrap();
        let plugins = crate::plugin_registry(&config_provider::PluginsConfig::default()).unwrap();
        let mut files = 0;
        for entry in std::fs::read_dir(dir.join("connectors")).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let config = config_provider::parse_connector_toml(&text).unwrap();
            let plugin = plugins.resolve(&config.common().path).unwrap();
            assert!(
                plugin.path().is_none(),
                "{} is not linked in",
                config.common().path
            );
            assert_eq!(plugin.kind(), config.kind());
            files += 1;
        }
        assert_eq!(files, 2, "the demo has a source and a sink");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
