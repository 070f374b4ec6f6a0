//! Loading: the defaults, the environment over the file, the upstream runtime configs,
//! and the documented `configs/config.toml`.

use std::path::PathBuf;

use config_provider::{ConnectorsConfig, RuntimeConfig, config_keys, load_with_env};

use crate::support::{env, no_env, temp_file};

#[test]
fn defaults_without_file_or_environment() {
    let loaded = load_with_env(None, no_env()).unwrap();
    assert_eq!(loaded.config, RuntimeConfig::default());
    assert_eq!(loaded.config.http.address, "127.0.0.1:8081");
    assert_eq!(loaded.config.iggy.address, "localhost:8090");
}

#[test]
fn the_environment_wins_over_the_file_and_keeps_string_types() {
    let file = temp_file(
        "precedence.toml",
        "[iggy]\npassword = \"from-file\"\n[connectors]\nconfig_dir = \"a\"\n",
    );
    let vars = env(&[
        ("IGGY_CONNECTORS_IGGY_PASSWORD", "12345"),
        ("IGGY_CONNECTORS_CONNECTORS_CONFIG_DIR", "b"),
        ("IGGY_CONNECTORS_CONFIG_PATH", "ignored.toml"),
        ("IGGY_CONNECTORS_SINK_STDOUT_ENABLED", "false"),
        ("UNRELATED", "x"),
    ]);
    let loaded = load_with_env(Some(&file), vars).unwrap();
    assert_eq!(
        loaded.config.iggy.password, "12345",
        "a numeric-looking password stays a string"
    );
    let ConnectorsConfig::Local(local) = &loaded.config.connectors else {
        panic!("expected local");
    };
    assert_eq!(local.config_dir, "b");
}

#[path = "../../../../tests/support/fixtures.rs"]
mod fixtures;

#[test]
fn upstream_runtime_configs_load_unchanged() {
    let dir = fixtures::upstream_configs_dir();
    let example = load_with_env(Some(&dir.join("config.toml")), no_env()).unwrap();
    let ConnectorsConfig::Local(local) = &example.config.connectors else {
        panic!("expected local");
    };
    assert_eq!(
        local.config_dir,
        "core/connectors/runtime/example_config/connectors"
    );
    assert_eq!(
        example.config.iggy.tls.ca_file,
        "core/certs/iggy_ca_cert.pem"
    );
    let defaults = load_with_env(Some(&dir.join("runtime-defaults.toml")), no_env()).unwrap();
    assert_eq!(defaults.config.telemetry.service_name, "iggy-connectors");
    assert_eq!(
        defaults.config.http.cors,
        RuntimeConfig::default().http.cors
    );
    assert_eq!(
        defaults.config.http.tls.cert_file,
        "core/certs/iggy_cert.pem"
    );
    assert_eq!(defaults.config.http.metrics.endpoint, "/metrics");
    assert_eq!(defaults.config.iggy, {
        let mut iggy = RuntimeConfig::default().iggy;
        iggy.tls.ca_file = "core/certs/iggy_ca_cert.pem".to_owned();
        iggy
    });
}

/// `configs/config.toml` is the key reference: it must load, and name every key.
#[test]
fn the_documented_config_loads_and_names_every_key() {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/config.toml"
    ));
    load_with_env(Some(&path), no_env()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    for key in config_keys() {
        let (section, name) = key.rsplit_once('.').unwrap();
        // The section header (possibly commented out, for the http provider), then the
        // key (possibly commented out) before the next header.
        let header = if section == "connectors" {
            "[connectors]".to_owned()
        } else {
            format!("[{section}]")
        };
        let start = text
            .find(&header)
            .unwrap_or_else(|| panic!("no {header} for {key}"));
        let rest = &text[start + header.len()..];
        let end = rest
            .find("\n[")
            .into_iter()
            .chain(rest.find("\n# ["))
            .min()
            .unwrap_or(rest.len());
        let section_text = &rest[..end];
        // A table of the user's keys (request headers) is documented by its header.
        let documented = text.contains(&format!("[{key}]"))
            || section_text.lines().any(|line| {
                line.trim_start_matches(['#', ' '])
                    .starts_with(&format!("{name} ="))
            });
        assert!(documented, "{key} is not documented in configs/config.toml");
    }
}
