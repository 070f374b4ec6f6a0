//! Configuring the binary from the environment, as a user pastes it: what the README
//! shows works, every error caused by a variable names that variable and says what to
//! do, and a variable that matches nothing is reported instead of dropped.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use iggy_connectors_tests::{plugin_path, temp_dir};

mod support;

/// The binary with none of the test process's own `IGGY_CONNECTORS_*` variables (a
/// developer's shell may have some), `vars` set, and a fresh working directory, so that
/// nothing but what a test sets is configured.
fn binary(vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_iggy-connectors"));
    for (name, _) in std::env::vars() {
        if name.starts_with("IGGY_CONNECTORS_") {
            command.env_remove(name);
        }
    }
    command
        .envs(vars.iter().copied())
        .env("NO_COLOR", "1")
        .current_dir(temp_dir("env-cwd"));
    command
}

fn validate(config: Option<&Path>, vars: &[(&str, &str)]) -> Output {
    let mut command = binary(vars);
    if let Some(config) = config {
        command.args(["--config", config.to_str().unwrap()]);
    }
    command.arg("validate").output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The README's environment example (its "Configuration" section), as pasted: each
/// `NAME=value` line, quotes and trailing comments taken off as a shell would.
fn readme_example() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let block = readme
        .split("```sh\nIGGY_CONNECTORS_IGGY_ADDRESS=")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .map(|rest| format!("IGGY_CONNECTORS_IGGY_ADDRESS={rest}"))
        .expect("the README's environment example");
    block
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let line = line.split("  #").next().unwrap().trim();
            let (name, value) = line.split_once('=').unwrap();
            (name.to_owned(), value.trim_matches('\'').to_owned())
        })
        .collect()
}

fn pairs(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

/// A runtime config whose connectors come from `connectors` (holding one sink,
/// `stdout`, of the real plugin, so that `validate` finds nothing else wrong), with
/// Iggy where nothing listens and no HTTP API.
fn config_with_a_sink(dir: &Path) -> PathBuf {
    let connectors = dir.join("connectors");
    std::fs::create_dir_all(&connectors).unwrap();
    std::fs::write(
        connectors.join("stdout.toml"),
        format!(
            "type = \"sink\"\nkey = \"stdout\"\nenabled = true\nversion = 0\nname = \"S\"\npath = \"{}\"\n\
             [[streams]]\nstream = \"s\"\ntopics = [\"t\"]\nschema = \"json\"\n",
            plugin_path("iggy_connector_stdout_sink")
        ),
    )
    .unwrap();
    support::runtime_config(dir, "127.0.0.1:1", "[http]\nenabled = false\n")
}

/// Runs `run` and returns the first line of its log that contains `needle` (then stops
/// it), or its whole log if none does. The lines looked for come before it connects to
/// Iggy, which it never manages (nothing listens there), so it exits by itself too.
fn run_until_logged(config: &Path, vars: &[(&str, &str)], needle: &str) -> Result<String, String> {
    let mut child = binary(vars)
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut log = String::new();
    let mut found = None;
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if line.contains(needle) {
            found = Some(line);
            break;
        }
        log.push_str(&line);
        log.push('\n');
    }
    // It may have exited already; either way it is gone after this.
    let _ = child.kill();
    let _ = child.wait();
    found.ok_or(log)
}

#[test]
fn the_readme_environment_example_is_valid_as_pasted() {
    let vars = readme_example();
    assert!(
        vars.iter()
            .any(|(name, _)| name == "IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS"),
        "{vars:?}"
    );
    let output = validate(None, &pairs(&vars));
    assert!(output.status.success(), "{output:?}");
    assert!(
        text(&output.stdout).starts_with("configuration is valid"),
        "{output:?}"
    );
}

#[test]
fn the_readme_example_without_its_ca_file_asks_for_it_naming_the_tls_variable() {
    let mut vars = readme_example();
    vars.retain(|(name, _)| name != "IGGY_CONNECTORS_IGGY_TLS_CA_FILE");
    let output = validate(None, &pairs(&vars));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = text(&output.stderr);
    // One problem, the variable that enabled TLS, and the key and variable to set.
    assert!(stderr.contains("invalid configuration: IGGY_CONNECTORS_IGGY_TLS_ENABLED: `iggy.tls.enabled`: TLS to Iggy needs the CA certificate that signed the server's: set iggy.tls.ca_file (IGGY_CONNECTORS_IGGY_TLS_CA_FILE) to its PEM file"), "{stderr}");
    assert!(!stderr.contains("REQUEST_HEADERS"), "{stderr}");
}

#[test]
fn request_headers_are_accepted_under_the_local_provider_with_or_without_a_file() {
    let headers = [(
        "IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS",
        r#"{ api-key = "k" }"#,
    )];
    let output = validate(None, &headers);
    assert!(output.status.success(), "{output:?}");

    let dir = temp_dir("env-local-file");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "[connectors]\nconfig_type = \"local\"\nconfig_dir = \"\"\n",
    )
    .unwrap();
    let output = validate(Some(&config), &headers);
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn errors_caused_by_a_variable_name_that_variable() {
    for (vars, expected) in [
        (
            &[("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http")][..],
            "IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE: `connectors.base_url`: is required with the http provider: set IGGY_CONNECTORS_CONNECTORS_BASE_URL",
        ),
        (
            &[
                ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
                ("IGGY_CONNECTORS_CONNECTORS_BASE_URL", "http://configs"),
                ("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS", "-1"),
            ][..],
            "IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS: `connectors.retry.max_attempts`: expected a whole number",
        ),
        (
            &[
                ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
                ("IGGY_CONNECTORS_CONNECTORS_BASE_URL", "configs.example"),
            ][..],
            "IGGY_CONNECTORS_CONNECTORS_BASE_URL: `connectors.base_url`: expected an http:// or https:// URL",
        ),
        (
            &[("IGGY_CONNECTORS_IGGY_PASSWORD", "")][..],
            "IGGY_CONNECTORS_IGGY_PASSWORD: `iggy.password`: is empty and no token is set",
        ),
    ] {
        let output = validate(None, vars);
        assert_eq!(output.status.code(), Some(1), "{vars:?}: {output:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(expected), "{vars:?}: {stderr}");
        // A table's name is no variable anybody set.
        assert!(!stderr.contains("IGGY_CONNECTORS_CONNECTORS:"), "{stderr}");
        assert!(!stderr.contains("configuration: `"), "{stderr}");
    }
}

#[test]
fn run_warns_about_an_override_that_matches_no_connector() {
    let dir = temp_dir("env-run-unmatched");
    let config = config_with_a_sink(&dir);
    let line = run_until_logged(
        &config,
        &[("IGGY_CONNECTORS_SINK_STDUOT_ENABLED", "false")],
        "IGGY_CONNECTORS_SINK_STDUOT_ENABLED",
    )
    .unwrap_or_else(|log| panic!("no warning about the variable in:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("matches no sink, so it is ignored: the sinks in"),
        "{line}"
    );
    assert!(
        line.contains("did you mean IGGY_CONNECTORS_SINK_STDOUT_ENABLED?"),
        "{line}"
    );
    // Structured, for log pipelines.
    assert!(
        line.contains("variable=IGGY_CONNECTORS_SINK_STDUOT_ENABLED"),
        "{line}"
    );
    assert!(line.contains(r#"known=["stdout"]"#), "{line}");
}

// What follows needs the binary to report what config-provider now returns; see
// `LoadedConfig::warnings`, `LoadedConfig::log_warnings` and
// `LocalProvider::unmatched_overrides`.

#[test]
fn validate_refuses_an_override_that_matches_no_connector() {
    let dir = temp_dir("env-validate-unmatched");
    let config = config_with_a_sink(&dir);
    let output = validate(Some(&config), &[]);
    assert!(output.status.success(), "{output:?}");
    let output = validate(
        Some(&config),
        &[("IGGY_CONNECTORS_SINK_NOSUCH_ENABLED", "false")],
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "IGGY_CONNECTORS_SINK_NOSUCH_ENABLED: matches no sink, so it is ignored: the sinks in {} are: stdout (IGGY_CONNECTORS_SINK_STDOUT_*)",
            dir.join("connectors").display()
        )),
        "{stderr}"
    );
}

#[test]
fn validate_shows_that_a_provider_key_of_the_other_kind_is_ignored() {
    let output = validate(
        None,
        &[(
            "IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS",
            r#"{ api-key = "k" }"#,
        )],
    );
    assert!(output.status.success(), "{output:?}");
    let stdout = text(&output.stdout);
    assert!(stdout.contains("warning: IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS: `connectors.request_headers`: only the http provider reads it, and connectors.config_type is \"local\" (the default), so it is ignored; set IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE=http to use it"), "{stdout}");
}

#[test]
fn run_warns_that_a_provider_key_of_the_other_kind_is_ignored() {
    let dir = temp_dir("env-run-inert");
    let config = config_with_a_sink(&dir);
    let line = run_until_logged(
        &config,
        &[(
            "IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS",
            r#"{ api-key = "k" }"#,
        )],
        "IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS",
    )
    .unwrap_or_else(|log| panic!("no warning about the variable in:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("only the http provider reads it"), "{line}");
    assert!(
        line.contains("source=IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS"),
        "{line}"
    );
}

/// A `plugin_config` entry from an environment variable takes its type from the
/// plugin's description of its config: digits for a string field stay a string (a
/// guess would make them a number, which the plugin refuses), and text that fits no
/// boolean is named as the field's problem.
#[test]
fn plugin_config_variables_take_the_type_the_plugin_describes() {
    let dir = temp_dir("env-typed-plugin-config");
    let config = config_with_a_sink(&dir);
    std::fs::write(
        dir.join("connectors").join("file.toml"),
        format!(
            "type = \"sink\"\nkey = \"file\"\nenabled = true\nversion = 0\nname = \"F\"\npath = \"{}\"\n\
             [[streams]]\nstream = \"s\"\ntopics = [\"t\"]\nschema = \"json\"\n\
             [plugin_config]\npath = \"out.jsonl\"\n",
            plugin_path("iggy_connector_file_sink")
        ),
    )
    .unwrap();
    let digits = [("IGGY_CONNECTORS_SINK_FILE_PLUGIN_CONFIG_PATH", "123456")];
    let output = validate(Some(&config), &digits);
    assert!(
        output.status.success(),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let unsure = [("IGGY_CONNECTORS_SINK_FILE_PLUGIN_CONFIG_FSYNC", "maybe")];
    let output = validate(Some(&config), &unsure);
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("sink file (version 0): plugin_config.fsync: expected boolean, got a string"),
        "{stderr}"
    );
}

/// A `plugin_config` variable holding a `${env:...}` reference is typed as what the
/// reference resolves to, never as the reference's own text.
#[test]
fn a_plugin_config_variables_reference_is_typed_as_what_it_resolves_to() {
    let dir = temp_dir("env-typed-reference");
    let config = config_with_a_sink(&dir);
    std::fs::write(
        dir.join("connectors").join("random.toml"),
        format!(
            "type = \"source\"\nkey = \"random\"\nenabled = true\nversion = 0\nname = \"R\"\npath = \"{}\"\n\
             [[streams]]\nstream = \"s\"\ntopic = \"t\"\nschema = \"json\"\n",
            plugin_path("iggy_connector_random_source")
        ),
    )
    .unwrap();
    let vars = [
        (
            "IGGY_CONNECTORS_SOURCE_RANDOM_PLUGIN_CONFIG_PAYLOAD_SIZE",
            "${env:TEST_RANDOM_PAYLOAD_SIZE}",
        ),
        ("TEST_RANDOM_PAYLOAD_SIZE", "64"),
    ];
    let output = validate(Some(&config), &vars);
    assert!(
        output.status.success(),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}
