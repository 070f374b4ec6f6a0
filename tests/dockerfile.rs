//! No container engine runs on our machines, so the Dockerfile is checked by what it
//! relies on: the packages it builds exist, are the binary and exactly the bundled
//! connectors (the list in crates/connectors/bundled), and produce the files it
//! copies, its environment variables are real config keys that load, the port it
//! exposes is the one the API listens on, it runs as a non-root user, and its health
//! check is a command of the binary it copies.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
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

/// Whether the package name `name` matches cargo's `-p` pattern `pattern` (the glob
/// syntax cargo takes; `*` and `?` are all the Dockerfile may use).
fn matches(pattern: &str, name: &str) -> bool {
    assert!(
        !pattern.contains(['[', ']']),
        "this test reads only `*` and `?` in -p patterns, not {pattern:?}"
    );
    fn from(pattern: &[u8], name: &[u8]) -> bool {
        match (pattern.first(), name.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                from(&pattern[1..], name) || (!name.is_empty() && from(pattern, &name[1..]))
            }
            (Some(b'?'), Some(_)) => from(&pattern[1..], &name[1..]),
            (Some(p), Some(n)) if p == n => from(&pattern[1..], &name[1..]),
            _ => false,
        }
    }
    from(pattern.as_bytes(), name.as_bytes())
}

#[test]
fn package_patterns_match_as_cargo_globs() {
    assert!(matches("iggy_connector_*", "iggy_connector_file_sink"));
    assert!(matches("iggy-connectors", "iggy-connectors"));
    assert!(!matches("iggy_connector_*", "iggy-connectors"));
    assert!(!matches("iggy_connector_*", "connector-template"));
    assert!(matches("a?c*", "abcd"));
}

/// The image is the list: the build's `-p` patterns select the binary and exactly the
/// bundled connectors (crates/connectors/bundled/Cargo.toml), each building a shared
/// library, and the libraries are copied.
#[test]
fn the_dockerfile_builds_every_bundled_connector_and_copies_what_exists() {
    let instructions = instructions();
    let packages = iggy_connectors_tests::workspace_packages();
    let build = instructions
        .iter()
        .find(|(keyword, rest)| keyword == "RUN" && rest.starts_with("cargo build"))
        .unwrap();
    let patterns: Vec<&str> = build
        .1
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|pair| pair[0] == "-p")
        .map(|pair| pair[1].trim_matches(['\'', '"']))
        .collect();
    assert!(patterns.contains(&"iggy-connectors"), "{patterns:?}");
    for pattern in &patterns {
        assert!(
            packages.keys().any(|name| matches(pattern, name)),
            "-p {pattern} matches no workspace package"
        );
    }
    let built: BTreeSet<&str> = packages
        .keys()
        .map(String::as_str)
        .filter(|name| patterns.iter().any(|pattern| matches(pattern, name)))
        .collect();
    let mut expected: BTreeSet<&str> = bundled_connectors::BUNDLED
        .iter()
        .map(|connector| connector.crate_name)
        .collect();
    expected.insert("iggy-connectors");
    assert_eq!(
        built, expected,
        "the Dockerfile's -p patterns select other packages than the binary and the bundled \
         connectors"
    );
    for connector in bundled_connectors::BUNDLED {
        assert!(
            packages[connector.crate_name]
                .crate_types()
                .contains(&"cdylib"),
            "{} builds no shared library",
            connector.crate_name
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
    // The pattern cargo's output for every bundled connector matches.
    let copied = copies
        .iter()
        .find_map(|copy| {
            copy.split_whitespace()
                .find_map(|part| part.strip_prefix("/src/target/release/"))
                .filter(|file| file.starts_with("lib"))
        })
        .unwrap_or_else(|| panic!("no COPY of the connector libraries: {copies:?}"));
    for connector in bundled_connectors::BUNDLED {
        let file = format!("lib{}.so", connector.crate_name);
        assert!(matches(copied, &file), "COPY {copied} misses {file}");
    }
    let binary = &packages["iggy-connectors"];
    assert!(
        binary.manifest["bin"].as_array().is_some_and(|bins| bins
            .iter()
            .any(|bin| bin["name"].as_str() == Some("iggy-connectors"))),
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
