//! The `plugin_config` of our example connector configs, and of upstream's, opens our
//! connectors unchanged: existing configs keep working.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use iggy_connectors_tests::{plugin_path, temp_dir, upstream_connectors_dir};
use plugin_host::{OpenOptions, PluginLoader};

/// Reads a connector config file and returns its `type`, its library crate name (from
/// `path`) and its `plugin_config` as JSON.
fn read_config(file: &Path) -> (String, String, serde_json::Value) {
    let text = std::fs::read_to_string(file).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    let kind = value["type"].as_str().unwrap().to_owned();
    let library = value["path"].as_str().unwrap();
    let crate_name = library
        .rsplit('/')
        .next()
        .unwrap()
        .trim_start_matches("lib")
        .to_owned();
    let plugin_config = value
        .get("plugin_config")
        .map(|config| serde_json::to_value(config).unwrap())
        .unwrap_or_else(|| serde_json::json!({}));
    (kind, crate_name, plugin_config)
}

/// Checks offline and opens the connector `file` names with its `plugin_config`
/// (changed by `adjust`); returns the connector's crate name.
async fn open_with(file: &Path, adjust: impl Fn(&mut serde_json::Value)) -> String {
    let (kind, crate_name, mut plugin_config) = read_config(file);
    adjust(&mut plugin_config);
    let plugin = PluginLoader::new().load(&plugin_path(&crate_name)).unwrap();
    // What opens must also pass the offline check `validate` and the API run.
    let problems = runtime_core::check_plugin_config(&plugin, &plugin_config);
    assert!(problems.is_empty(), "{}: {problems:?}", file.display());
    let config = plugin_config.to_string();
    let result = match kind.as_str() {
        "sink" => match plugin
            .open_sink("example", &config, OpenOptions::default())
            .await
        {
            Ok(sink) => sink.close(Duration::from_secs(5)).await,
            Err(error) => Err(error),
        },
        "source" => {
            let opened = plugin
                .open_source("example", &config, None, OpenOptions::default())
                .await;
            match opened {
                Ok(source) => source.close(Duration::from_secs(5)).await,
                Err(error) => Err(error),
            }
        }
        other => panic!("{}: unknown type {other}", file.display()),
    };
    if let Err(error) = result {
        panic!("{} does not open {crate_name}: {error}", file.display());
    }
    crate_name
}

#[tokio::test]
async fn our_example_connector_configs_open_their_connectors() {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/connectors"
    ));
    let output = temp_dir("example-configs");
    let mut opened = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().path();
        if file
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            // Keep the file sink's output out of the source tree.
            let crate_name = open_with(&file, |config| {
                if config.get("path").is_some() {
                    config["path"] = output.join("out.jsonl").display().to_string().into();
                }
            })
            .await;
            // The examples show the connectors a user gets.
            assert!(
                bundled_connectors::BUNDLED
                    .iter()
                    .any(|connector| connector.crate_name == crate_name),
                "{} names {crate_name}, which is not a bundled connector",
                file.display()
            );
            opened.push(crate_name);
        }
    }
    assert!(
        !opened.is_empty(),
        "no example configs in {}",
        dir.display()
    );
}

#[tokio::test]
async fn upstream_random_and_stdout_configs_open_our_connectors() {
    let dir = upstream_connectors_dir();
    for name in [
        "random_source_v0.toml",
        "random_source_v1.toml",
        "stdout_sink.toml",
    ] {
        open_with(&dir.join(name), |_| {}).await;
    }
}

/// Every transform table in upstream's example configs builds a chain, in file order.
#[test]
fn upstream_transform_configs_build_chains() {
    let dir = upstream_connectors_dir();
    let mut chains = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let config = config_provider::parse_connector_toml(&text).unwrap();
        let chain = transforms::TransformChain::new(config.kind(), &config.common().transforms.0)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        if path.ends_with("quickwit_sink.toml") {
            assert_eq!(chain.names(), ["add_fields", "delete_fields"]);
        }
        chains += usize::from(!chain.is_empty());
    }
    assert_eq!(
        chains, 4,
        "quickwit, both random sources and stdout have transforms"
    );
}

/// Upstream's PostgreSQL configs, unchanged, pass our plugin's own offline check (what
/// `validate` and the API run); with the test PostgreSQL reachable they also open it,
/// only `connection_string` given (as the per-connector environment override does).
#[tokio::test]
async fn upstream_postgres_configs_pass_the_plugin_check_and_open() {
    let dir = upstream_connectors_dir();
    for name in ["postgres_sink.toml", "postgres_source.toml"] {
        let file = dir.join(name);
        let (_, crate_name, plugin_config) = read_config(&file);
        let plugin = PluginLoader::new().load(&plugin_path(&crate_name)).unwrap();
        let problems = runtime_core::check_plugin_config(&plugin, &plugin_config);
        assert!(problems.is_empty(), "{}: {problems:?}", file.display());
        let Some(url) = iggy_connectors_tests::services::service_url(
            iggy_connectors_tests::services::Service::Postgres,
        ) else {
            continue;
        };
        open_with(&file, |config| {
            config["connection_string"] = url.clone().into();
        })
        .await;
    }
}
