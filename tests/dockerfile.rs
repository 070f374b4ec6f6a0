//! No container engine runs on our machines, so the Dockerfile is checked by what it
//! relies on: the packages it builds exist and produce the files it copies, its
//! environment variables are real config keys that load, the port it exposes is the
//! one the API listens on, it runs as a non-root user, and its health check is a
//! command of the binary it copies.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The Dockerfile's instructions, continuation lines joined.
fn instructions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    joined.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    joined
        .into_iter()
        .map(|line| {
            let (keyword, rest) = line.trim().split_once(' ').unwrap();
            (keyword.to_owned(), rest.trim().to_owned())
        })
        .collect()
}

/// Every package name in the workspace, with its manifest text.
fn packages() -> BTreeMap<String, String> {
    let mut packages = BTreeMap::new();
    let root = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let workspace: toml::Value = toml::from_str(&root).unwrap();
    for member in workspace["workspace"]["members"].as_array().unwrap() {
        let manifest =
            std::fs::read_to_string(repo().join(member.as_str().unwrap()).join("Cargo.toml"))
                .unwrap();
        let parsed: toml::Value = toml::from_str(&manifest).unwrap();
        packages.insert(
            parsed["package"]["name"].as_str().unwrap().to_owned(),
            manifest,
        );
    }
    packages
}

#[test]
fn the_dockerfile_builds_and_copies_what_exists() {
    let instructions = instructions();
    let packages = packages();
    let build = instructions
        .iter()
        .find(|(keyword, rest)| keyword == "RUN" && rest.starts_with("cargo build"))
        .unwrap();
    let built: Vec<&str> = build
        .1
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|pair| pair[0] == "-p")
        .map(|pair| pair[1])
        .collect();
    assert!(built.contains(&"iggy-connectors"));
    for package in &built {
        let manifest = packages
            .get(*package)
            .unwrap_or_else(|| panic!("no package {package}"));
        if package.starts_with("iggy_connector_") {
            assert!(
                manifest.contains("\"cdylib\""),
                "{package} builds no shared library"
            );
        }
    }
    // Every bundled connector is in the image.
    for package in packages
        .keys()
        .filter(|name| name.starts_with("iggy_connector_"))
    {
        assert!(
            built.contains(&package.as_str()),
            "{package} is not built into the image"
        );
    }
    let copies: Vec<&String> = instructions
        .iter()
        .filter(|(keyword, _)| keyword == "COPY")
        .map(|(_, rest)| rest)
        .collect();
    assert!(copies.iter().any(|copy| {
        copy.contains("target/release/iggy-connectors /usr/local/bin/iggy-connectors")
    }));
    assert!(
        copies
            .iter()
            .any(|copy| copy.contains("target/release/libiggy_connector_*.so"))
    );
    let binary = packages["iggy-connectors"].clone();
    assert!(
        binary.contains("name = \"iggy-connectors\""),
        "the binary is named iggy-connectors"
    );
}

#[test]
fn the_dockerfile_environment_is_real_config_and_matches_the_port() {
    let instructions = instructions();
    let mut env = BTreeMap::new();
    for (_, rest) in instructions.iter().filter(|(keyword, _)| keyword == "ENV") {
        for pair in rest.split_whitespace() {
            let (name, value) = pair.split_once('=').unwrap();
            env.insert(name.to_owned(), value.to_owned());
        }
    }
    let known = config_provider::environment_variables();
    for name in env.keys() {
        assert!(known.contains(name), "{name} is not a config variable");
    }
    // The API listens off loopback, so its key comes from a mounted secret (`\$` is
    // Docker's escape, the runtime reads `${file:...}`); without it the runtime refuses
    // to start.
    let key = env
        .remove("IGGY_CONNECTORS_HTTP_API_KEY")
        .unwrap_or_default();
    let secret = key
        .strip_prefix("\\${file:")
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("the api key comes from a secret file, not {key:?}"));
    assert!(secret.starts_with("/run/secrets/"), "{secret}");
    let refused = config_provider::load_with_env(None, env.clone()).unwrap_err();
    assert!(refused.to_string().contains("with no api key"), "{refused}");
    let mounted = iggy_connectors_tests::temp_dir("dockerfile-secret").join("api_key");
    std::fs::write(&mounted, "k3y\n").unwrap();
    env.insert(
        "IGGY_CONNECTORS_HTTP_API_KEY".to_owned(),
        format!("${{file:{}}}", mounted.display()),
    );
    let loaded = config_provider::load_with_env(None, env.clone()).unwrap();
    assert!(loaded.config.http.enabled);
    assert!(!loaded.config.http.api_key.is_empty());
    let port = loaded
        .config
        .http
        .address
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let exposed = instructions
        .iter()
        .find(|(keyword, _)| keyword == "EXPOSE")
        .map(|(_, rest)| rest.clone())
        .unwrap();
    assert_eq!(exposed, port, "EXPOSE and the API address agree");
    let user = instructions
        .iter()
        .find(|(keyword, _)| keyword == "USER")
        .map(|(_, rest)| rest.clone())
        .unwrap();
    assert!(user != "root" && user != "0", "runs as {user}");
}

#[test]
fn the_health_check_is_a_command_of_the_copied_binary() {
    let instructions = instructions();
    let check = instructions
        .iter()
        .find(|(keyword, _)| keyword == "HEALTHCHECK")
        .map(|(_, rest)| rest.clone())
        .unwrap();
    let command = check.split("CMD").nth(1).unwrap();
    let argv: Vec<String> = serde_json::from_str(command.trim()).unwrap();
    assert_eq!(argv, ["/usr/local/bin/iggy-connectors", "healthcheck"]);
    let entrypoint = instructions
        .iter()
        .find(|(keyword, _)| keyword == "ENTRYPOINT")
        .map(|(_, rest)| rest.clone())
        .unwrap();
    let entrypoint: Vec<String> = serde_json::from_str(&entrypoint).unwrap();
    assert_eq!(entrypoint, ["/usr/local/bin/iggy-connectors"]);
    // The binary's usage lists the command (its behaviour is tested with the binary).
    let usage = std::fs::read_to_string(repo().join("bins/iggy-connectors/src/cli.rs")).unwrap();
    assert!(usage.contains("iggy-connectors [--config PATH] healthcheck"));
}

/// The bundled libraries land in the default plugin directory, so the image's configs
/// load them without setting `[plugins] directories`.
#[test]
fn the_connector_libraries_go_to_the_default_plugin_directory() {
    let copies: Vec<String> = instructions()
        .into_iter()
        .filter(|(keyword, rest)| keyword == "COPY" && rest.contains("libiggy_connector_"))
        .map(|(_, rest)| rest)
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let destination = copies[0].split_whitespace().last().unwrap();
    assert_eq!(
        destination.trim_end_matches('/'),
        config_provider::STANDARD_PLUGIN_DIRECTORY
    );
}
