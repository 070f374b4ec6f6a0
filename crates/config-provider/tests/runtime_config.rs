//! The runtime config as a user writes it: files, environment variables, secrets, and
//! every kind of mistake.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config_provider::{
    ConfigDuration, ConnectorsConfig, LogFormat, REDACTED, RuntimeConfig, config_keys,
    environment_variables, load_with_env,
};

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("config-provider-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn error_text(file: Option<&Path>, vars: Vec<(String, String)>) -> String {
    load_with_env(file, vars).unwrap_err().to_string()
}

/// A file that sets every key to something other than its default.
const EVERY_KEY: &str = r#"
[iggy]
address = "iggy.example:9090"
username = "admin"
password = "hunter2"
token = "pat-123"

[iggy.tls]
enabled = true
ca_file = "ca.pem"
domain = "iggy.example"

[state]
path = "/var/lib/state"

[connectors]
config_type = "http"
base_url = "https://configs.example/api"
timeout = "1m 30s"

[connectors.request_headers]
api-key = "abc"
x-tenant = "t1"

[connectors.retry]
enabled = false
max_attempts = 7
initial_backoff = "250ms"
max_backoff = "10s"
backoff_multiplier = 3

[connectors.url_templates]
create_sink = "/a/{key}"
create_source = "/b/{key}"
get_active_configs = "/c"
get_active_versions = "/d"
set_active_sink = "/e/{key}"
set_active_source = "/f/{key}"
get_sink_configs = "/g/{key}"
get_sink_config = "/h/{key}/{version}"
get_active_sink_config = "/i/{key}"
get_source_configs = "/j/{key}"
get_source_config = "/k/{key}/{version}"
get_active_source_config = "/l/{key}"
delete_sink_config = "/m/{key}"
delete_source_config = "/n/{key}"

[connectors.response]
data_path = "data.config"
error_path = "error"

[http]
enabled = false
address = "0.0.0.0:9999"
api_key = "key-1"

[http.cors]
enabled = true
allowed_methods = ["GET"]
allowed_origins = ["https://a.example", "https://b.example"]
allowed_headers = ["x-one", "x-two"]
exposed_headers = ["x-three"]
allow_credentials = true
allow_private_network = true

[http.metrics]
enabled = true
endpoint = "/prom"

[http.tls]
enabled = true
cert_file = "cert.pem"
key_file = "key.pem"

[logging]
format = "json"
summary_interval = "15s"

[telemetry]
service_name = "svc"

[telemetry.logs]
transport = "http"
endpoint = "http://collector:4318"

[telemetry.traces]
transport = "http"
endpoint = "http://collector:4319"

[runtime]
shutdown_timeout = "45s"
stall_timeout = "12s"

[runtime.retry]
max_attempts = 9
initial_backoff = "20ms"
max_backoff = "2s"

[runtime.restart]
enabled = false
initial_backoff = "3s"
max_backoff = "90s"
max_restarts = 4
"#;

fn check_every_key(config: &RuntimeConfig) {
    assert_eq!(config.iggy.address, "iggy.example:9090");
    assert_eq!(config.iggy.username, "admin");
    assert_eq!(config.iggy.password, "hunter2");
    assert_eq!(config.iggy.token, "pat-123");
    assert!(config.iggy.tls.enabled);
    assert_eq!(config.iggy.tls.ca_file, "ca.pem");
    assert_eq!(config.iggy.tls.domain, "iggy.example");
    assert_eq!(config.state.path, "/var/lib/state");
    let ConnectorsConfig::Http(http) = &config.connectors else {
        panic!("expected the http provider: {:?}", config.connectors);
    };
    assert_eq!(http.base_url, "https://configs.example/api");
    assert_eq!(http.timeout, ConfigDuration::from_secs(90));
    assert_eq!(
        http.request_headers,
        BTreeMap::from([
            ("api-key".to_owned(), "abc".to_owned()),
            ("x-tenant".to_owned(), "t1".to_owned())
        ])
    );
    assert!(!http.retry.enabled);
    assert_eq!(http.retry.max_attempts, 7);
    assert_eq!(http.retry.initial_backoff, ConfigDuration::from_millis(250));
    assert_eq!(http.retry.max_backoff, ConfigDuration::from_secs(10));
    assert_eq!(http.retry.backoff_multiplier, 3);
    let templates = &http.url_templates;
    let expected = [
        (templates.create_sink(), "/a/{key}"),
        (templates.create_source(), "/b/{key}"),
        (templates.get_active_configs(), "/c"),
        (templates.get_active_versions(), "/d"),
        (templates.set_active_sink(), "/e/{key}"),
        (templates.set_active_source(), "/f/{key}"),
        (templates.get_sink_configs(), "/g/{key}"),
        (templates.get_sink_config(), "/h/{key}/{version}"),
        (templates.get_active_sink_config(), "/i/{key}"),
        (templates.get_source_configs(), "/j/{key}"),
        (templates.get_source_config(), "/k/{key}/{version}"),
        (templates.get_active_source_config(), "/l/{key}"),
        (templates.delete_sink_config(), "/m/{key}"),
        (templates.delete_source_config(), "/n/{key}"),
    ];
    for (actual, wanted) in expected {
        assert_eq!(actual, wanted);
    }
    assert_eq!(http.response.data_path.as_deref(), Some("data.config"));
    assert_eq!(http.response.error_path.as_deref(), Some("error"));
    assert!(!config.http.enabled);
    assert_eq!(config.http.address, "0.0.0.0:9999");
    assert_eq!(config.http.api_key, "key-1");
    let cors = &config.http.cors;
    assert!(cors.enabled && cors.allow_credentials && cors.allow_private_network);
    assert_eq!(cors.allowed_methods, ["GET"]);
    assert_eq!(
        cors.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(cors.allowed_headers, ["x-one", "x-two"]);
    assert_eq!(cors.exposed_headers, ["x-three"]);
    assert!(config.http.metrics.enabled);
    assert_eq!(config.http.metrics.endpoint, "/prom");
    assert!(config.http.tls.enabled);
    assert_eq!(config.http.tls.cert_file, "cert.pem");
    assert_eq!(config.http.tls.key_file, "key.pem");
    assert_eq!(config.logging.format, LogFormat::Json);
    assert_eq!(
        config.logging.summary_interval,
        ConfigDuration::from_secs(15)
    );
    assert_eq!(config.telemetry.service_name, "svc");
    assert_eq!(config.telemetry.logs.transport, "http");
    assert_eq!(config.telemetry.logs.endpoint, "http://collector:4318");
    assert_eq!(config.telemetry.traces.endpoint, "http://collector:4319");
    let runtime = &config.runtime;
    assert_eq!(runtime.shutdown_timeout, ConfigDuration::from_secs(45));
    assert_eq!(runtime.stall_timeout, ConfigDuration::from_secs(12));
    assert_eq!(runtime.retry.max_attempts, 9);
    assert_eq!(
        runtime.retry.initial_backoff,
        ConfigDuration::from_millis(20)
    );
    assert_eq!(runtime.retry.max_backoff, ConfigDuration::from_secs(2));
    assert!(!runtime.restart.enabled);
    assert_eq!(
        runtime.restart.initial_backoff,
        ConfigDuration::from_secs(3)
    );
    assert_eq!(runtime.restart.max_backoff, ConfigDuration::from_secs(90));
    assert_eq!(runtime.restart.max_restarts, 4);
}

#[test]
fn every_key_round_trips_from_the_file() {
    let file = temp_file("every.toml", EVERY_KEY);
    let loaded = load_with_env(Some(&file), no_env()).unwrap();
    check_every_key(&loaded.config);
}

/// The same values, each from its environment variable, over an empty file.
#[test]
fn every_key_round_trips_from_the_environment() {
    let file = temp_file("from-env.toml", "");
    let vars = env(&[
        ("IGGY_CONNECTORS_IGGY_ADDRESS", "iggy.example:9090"),
        ("IGGY_CONNECTORS_IGGY_USERNAME", "admin"),
        ("IGGY_CONNECTORS_IGGY_PASSWORD", "hunter2"),
        ("IGGY_CONNECTORS_IGGY_TOKEN", "pat-123"),
        ("IGGY_CONNECTORS_IGGY_TLS_ENABLED", "true"),
        ("IGGY_CONNECTORS_IGGY_TLS_CA_FILE", "ca.pem"),
        ("IGGY_CONNECTORS_IGGY_TLS_DOMAIN", "iggy.example"),
        ("IGGY_CONNECTORS_STATE_PATH", "/var/lib/state"),
        ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
        (
            "IGGY_CONNECTORS_CONNECTORS_BASE_URL",
            "https://configs.example/api",
        ),
        ("IGGY_CONNECTORS_CONNECTORS_TIMEOUT", "1m 30s"),
        (
            "IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS",
            r#"{ api-key = "abc", x-tenant = "t1" }"#,
        ),
        ("IGGY_CONNECTORS_CONNECTORS_RETRY_ENABLED", "false"),
        ("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS", "7"),
        ("IGGY_CONNECTORS_CONNECTORS_RETRY_INITIAL_BACKOFF", "250ms"),
        ("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_BACKOFF", "10s"),
        ("IGGY_CONNECTORS_CONNECTORS_RETRY_BACKOFF_MULTIPLIER", "3"),
        (
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_CREATE_SINK",
            "/a/{key}",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_CREATE_SOURCE",
            "/b/{key}",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_GET_ACTIVE_CONFIGS",
            "/c",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_GET_ACTIVE_VERSIONS",
            "/d",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_SET_ACTIVE_SINK",
            "/e/{key}",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_SET_ACTIVE_SOURCE",
            "/f/{key}",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_GET_SINK_CONFIGS",
            "/g/{key}",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_GET_SINK_CONFIG",
            "/h/{key}/{version}",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_GET_ACTIVE_SINK_CONFIG",
            "/i/{key}",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_GET_SOURCE_CONFIGS",
            "/j/{key}",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_GET_SOURCE_CONFIG",
            "/k/{key}/{version}",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_GET_ACTIVE_SOURCE_CONFIG",
            "/l/{key}",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_DELETE_SINK_CONFIG",
            "/m/{key}",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_DELETE_SOURCE_CONFIG",
            "/n/{key}",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_RESPONSE_DATA_PATH",
            "data.config",
        ),
        ("IGGY_CONNECTORS_CONNECTORS_RESPONSE_ERROR_PATH", "error"),
        ("IGGY_CONNECTORS_HTTP_ENABLED", "false"),
        ("IGGY_CONNECTORS_HTTP_ADDRESS", "0.0.0.0:9999"),
        ("IGGY_CONNECTORS_HTTP_API_KEY", "key-1"),
        ("IGGY_CONNECTORS_HTTP_CORS_ENABLED", "TRUE"),
        ("IGGY_CONNECTORS_HTTP_CORS_ALLOWED_METHODS", "GET"),
        (
            "IGGY_CONNECTORS_HTTP_CORS_ALLOWED_ORIGINS",
            "[https://a.example, https://b.example]",
        ),
        (
            "IGGY_CONNECTORS_HTTP_CORS_ALLOWED_HEADERS",
            r#"["x-one", 'x-two']"#,
        ),
        ("IGGY_CONNECTORS_HTTP_CORS_EXPOSED_HEADERS", "x-three"),
        ("IGGY_CONNECTORS_HTTP_CORS_ALLOW_CREDENTIALS", "true"),
        ("IGGY_CONNECTORS_HTTP_CORS_ALLOW_PRIVATE_NETWORK", "true"),
        ("IGGY_CONNECTORS_HTTP_METRICS_ENABLED", "true"),
        ("IGGY_CONNECTORS_HTTP_METRICS_ENDPOINT", "/prom"),
        ("IGGY_CONNECTORS_HTTP_TLS_ENABLED", "true"),
        ("IGGY_CONNECTORS_HTTP_TLS_CERT_FILE", "cert.pem"),
        ("IGGY_CONNECTORS_HTTP_TLS_KEY_FILE", "key.pem"),
        ("IGGY_CONNECTORS_LOGGING_FORMAT", "json"),
        ("IGGY_CONNECTORS_LOGGING_SUMMARY_INTERVAL", "15s"),
        ("IGGY_CONNECTORS_TELEMETRY_ENABLED", "false"),
        ("IGGY_CONNECTORS_TELEMETRY_SERVICE_NAME", "svc"),
        ("IGGY_CONNECTORS_TELEMETRY_LOGS_TRANSPORT", "http"),
        (
            "IGGY_CONNECTORS_TELEMETRY_LOGS_ENDPOINT",
            "http://collector:4318",
        ),
        ("IGGY_CONNECTORS_TELEMETRY_TRACES_TRANSPORT", "http"),
        (
            "IGGY_CONNECTORS_TELEMETRY_TRACES_ENDPOINT",
            "http://collector:4319",
        ),
        ("IGGY_CONNECTORS_RUNTIME_SHUTDOWN_TIMEOUT", "45s"),
        ("IGGY_CONNECTORS_RUNTIME_STALL_TIMEOUT", "12s"),
        ("IGGY_CONNECTORS_RUNTIME_RETRY_MAX_ATTEMPTS", "9"),
        ("IGGY_CONNECTORS_RUNTIME_RETRY_INITIAL_BACKOFF", "20ms"),
        ("IGGY_CONNECTORS_RUNTIME_RETRY_MAX_BACKOFF", "2s"),
        ("IGGY_CONNECTORS_RUNTIME_RESTART_ENABLED", "false"),
        ("IGGY_CONNECTORS_RUNTIME_RESTART_INITIAL_BACKOFF", "3s"),
        ("IGGY_CONNECTORS_RUNTIME_RESTART_MAX_BACKOFF", "90s"),
        ("IGGY_CONNECTORS_RUNTIME_RESTART_MAX_RESTARTS", "4"),
    ]);
    let tested: Vec<&str> = vars.iter().map(|(name, _)| name.as_str()).collect();
    for name in environment_variables() {
        if name != "IGGY_CONNECTORS_CONNECTORS_CONFIG_DIR" {
            assert!(tested.contains(&name.as_str()), "{name} is not tested");
        }
    }
    let loaded = load_with_env(Some(&file), vars).unwrap();
    check_every_key(&loaded.config);
}

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

fn fixtures() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/upstream-configs"
    ));
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "fixtures missing at {}",
        dir.display()
    );
    eprintln!("skipped: no upstream fixtures at {}", dir.display());
    None
}

#[test]
fn upstream_runtime_configs_load_unchanged() {
    let Some(dir) = fixtures() else {
        return;
    };
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

#[test]
fn unknown_keys_are_errors_with_the_nearest_valid_key() {
    let file = temp_file(
        "typo.toml",
        "[iggy]\nadress = \"x\"\n[http.cors]\nallowed_origin = []\n[nonsense]\n",
    );
    let text = error_text(Some(&file), no_env());
    assert!(text.contains("3 problems"), "{text}");
    assert!(
        text.contains(&format!(
            "{}: `iggy.adress`: unknown key; did you mean `iggy.address`?",
            file.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "`http.cors.allowed_origin`: unknown key; did you mean `http.cors.allowed_origins`?"
        ),
        "{text}"
    );
    assert!(text.contains("`nonsense`: unknown key"), "{text}");

    let text = error_text(None, env(&[("IGGY_CONNECTORS_IGGY_USRNAME", "x")]));
    assert!(text.contains("IGGY_CONNECTORS_IGGY_USRNAME: unknown variable; did you mean IGGY_CONNECTORS_IGGY_USERNAME?"), "{text}");
}

#[test]
fn wrong_types_name_the_file_key_and_expected_type() {
    let file = temp_file(
        "types.toml",
        "[http]\nenabled = \"yes\"\n[connectors]\nconfig_type = \"local\"\nconfig_dir = 5\n",
    );
    let text = error_text(Some(&file), no_env());
    let source = file.display().to_string();
    assert!(
        text.contains(&format!(
            "{source}: `http.enabled`: expected a boolean (true or false), found the string \"yes\""
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{source}: `connectors.config_dir`: expected a string, found the integer 5"
        )),
        "{text}"
    );

    let text = error_text(None, env(&[("IGGY_CONNECTORS_HTTP_CORS_ENABLED", "maybe")]));
    assert!(
        text.contains("IGGY_CONNECTORS_HTTP_CORS_ENABLED: `http.cors.enabled`: expected a boolean"),
        "{text}"
    );

    let file = temp_file(
        "duration.toml",
        "[connectors]\nconfig_type = \"http\"\nbase_url = \"http://x\"\ntimeout = \"soon\"\n",
    );
    let text = error_text(Some(&file), no_env());
    assert!(
        text.contains("`connectors.timeout`: invalid duration \"soon\""),
        "{text}"
    );
    let text = error_text(
        None,
        env(&[("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_BACKOFF", "forever")]),
    );
    assert!(text.contains("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_BACKOFF: `connectors.retry.max_backoff`: invalid duration"), "{text}");

    let text = error_text(
        None,
        env(&[("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS", "lots")]),
    );
    assert!(
        text.contains("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS"),
        "{text}"
    );
    assert!(text.contains("expected an integer"), "{text}");
}

#[test]
fn missing_required_values_and_files_are_named() {
    let file = temp_file("no-url.toml", "[connectors]\nconfig_type = \"http\"\n");
    let text = error_text(Some(&file), no_env());
    assert!(text.contains("base_url"), "{text}");

    let missing = PathBuf::from("/nonexistent/dir/config.toml");
    let text = error_text(Some(&missing), no_env());
    assert!(text.contains("/nonexistent/dir/config.toml"), "{text}");
    assert!(text.contains("cannot read"), "{text}");

    let file = temp_file("no-creds.toml", "[iggy]\nusername = \"\"\n");
    let text = error_text(Some(&file), no_env());
    assert!(text.contains("no credentials"), "{text}");

    let file = temp_file("telemetry.toml", "[telemetry]\nenabled = true\n");
    assert!(error_text(Some(&file), no_env()).contains("telemetry.enabled"));

    let file = temp_file(
        "bad-url.toml",
        "[connectors]\nconfig_type = \"http\"\nbase_url = \"configs.example\"\n",
    );
    assert!(error_text(Some(&file), no_env()).contains("http:// or https://"));
}

#[test]
fn secrets_resolve_from_env_and_files_and_are_redacted() {
    let secret_file = temp_file("api-key", "file-secret\n");
    let token_file = temp_file("token", "  pat-from-file \n");
    // A variable cargo sets for every test process stands for the secret.
    let env_secret = std::env::var("CARGO_PKG_NAME").unwrap();
    let text = format!(
        "[iggy]\npassword = \"${{env:CARGO_PKG_NAME}}\"\ntoken = \"file:{}\"\n[http]\napi_key = \"${{file:{}}}\"\n[state]\npath = \"plain\"\n",
        token_file.display(),
        secret_file.display()
    );
    let file = temp_file("secrets.toml", &text);
    let loaded = load_with_env(Some(&file), no_env()).unwrap();
    assert_eq!(loaded.config.iggy.password, env_secret);
    assert_eq!(loaded.config.iggy.token, "pat-from-file");
    assert_eq!(loaded.config.http.api_key, "file-secret");
    let redacted = loaded.redacted();
    assert_eq!(redacted["iggy"]["password"], REDACTED);
    assert_eq!(redacted["iggy"]["token"], REDACTED);
    assert_eq!(redacted["http"]["api_key"], REDACTED);
    assert_eq!(redacted["state"]["path"], "plain");
    let shown = redacted.to_string();
    for secret in [env_secret.as_str(), "pat-from-file", "file-secret"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }

    let file = temp_file(
        "missing-secret.toml",
        "[iggy]\npassword = \"${env:CONFIG_PROVIDER_TEST_UNSET}\"\n",
    );
    let text = error_text(Some(&file), no_env());
    assert!(text.contains("`iggy.password`"), "{text}");
    assert!(text.contains("CONFIG_PROVIDER_TEST_UNSET"), "{text}");
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

/// The problems of a failed load, one string each (`source: \`key\`: message`).
fn problem_lines(file: Option<&Path>, vars: Vec<(String, String)>) -> Vec<String> {
    load_with_env(file, vars)
        .unwrap_err()
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn http_provider_variables_under_the_local_provider_are_accepted_with_a_warning() {
    // The README's example, pasted without choosing the http provider.
    let loaded = load_with_env(
        None,
        env(&[
            (
                "IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS",
                r#"{ api-key = "k" }"#,
            ),
            ("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS", "7"),
            ("IGGY_CONNECTORS_IGGY_ADDRESS", "iggy:8090"),
        ]),
    )
    .unwrap();
    assert_eq!(loaded.config.connectors, ConnectorsConfig::default());
    assert_eq!(loaded.config.iggy.address, "iggy:8090");
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS: `connectors.request_headers`: only the http provider reads it, and connectors.config_type is \"local\" (the default), so it is ignored; set IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE=http to use it",
            "IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS: `connectors.retry.max_attempts`: only the http provider reads it, and connectors.config_type is \"local\" (the default), so it is ignored; set IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE=http to use it",
        ]
    );

    // The same under a file that chose "local" itself: still only a warning, naming it.
    let file = temp_file(
        "local-kind.toml",
        "[connectors]\nconfig_type = \"local\"\nconfig_dir = \"c\"\n",
    );
    let loaded = load_with_env(
        Some(&file),
        env(&[("IGGY_CONNECTORS_CONNECTORS_TIMEOUT", "5s")]),
    )
    .unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(
        loaded.warnings[0].source,
        "IGGY_CONNECTORS_CONNECTORS_TIMEOUT"
    );
    assert!(
        loaded.warnings[0].message.contains(&format!(
            "{} sets connectors.config_type = \"local\"",
            file.display()
        )),
        "{}",
        loaded.warnings[0]
    );

    // And the other way round: the local provider's directory under the http provider.
    let loaded = load_with_env(
        None,
        env(&[
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
            ("IGGY_CONNECTORS_CONNECTORS_BASE_URL", "http://configs"),
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_DIR", "connectors"),
        ]),
    )
    .unwrap();
    assert!(matches!(
        loaded.config.connectors,
        ConnectorsConfig::Http(_)
    ));
    assert_eq!(
        loaded.warnings[0].to_string(),
        "IGGY_CONNECTORS_CONNECTORS_CONFIG_DIR: `connectors.config_dir`: only the local provider reads it, and IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE sets connectors.config_type to \"http\", so it is ignored; set IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE=local to use it"
    );
}

#[test]
fn a_file_key_of_the_other_provider_is_refused_unless_a_variable_switched_the_kind() {
    let file = temp_file(
        "headers-no-kind.toml",
        "[connectors]\nrequest_headers = { api-key = \"k\" }\n",
    );
    assert_eq!(
        problem_lines(Some(&file), no_env()),
        [format!(
            "{}: `connectors.request_headers`: only the http provider reads it, but connectors.config_type is \"local\" (the default): set config_type = \"http\" in [connectors] (or IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE=http), or remove the key",
            file.display()
        )]
    );

    let file = temp_file(
        "http-file.toml",
        "[connectors]\nconfig_type = \"http\"\nbase_url = \"http://configs\"\ntimeout = \"5s\"\n",
    );
    let loaded = load_with_env(
        Some(&file),
        env(&[
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "local"),
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_DIR", "c"),
        ]),
    )
    .unwrap();
    let ConnectorsConfig::Local(local) = &loaded.config.connectors else {
        panic!("the variable chose local");
    };
    assert_eq!(local.config_dir, "c");
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            format!(
                "{}: `connectors.base_url`: only the http provider reads it, and IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE sets connectors.config_type to \"local\", so it is ignored",
                file.display()
            ),
            format!(
                "{}: `connectors.timeout`: only the http provider reads it, and IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE sets connectors.config_type to \"local\", so it is ignored",
                file.display()
            ),
        ]
    );
}

#[test]
fn problems_caused_by_a_variable_name_exactly_that_variable() {
    // TLS enabled alone: the variable that enabled it, and what else to set.
    assert_eq!(
        problem_lines(None, env(&[("IGGY_CONNECTORS_IGGY_TLS_ENABLED", "true")])),
        [
            "IGGY_CONNECTORS_IGGY_TLS_ENABLED: `iggy.tls.enabled`: TLS to Iggy needs the CA certificate that signed the server's: set iggy.tls.ca_file (IGGY_CONNECTORS_IGGY_TLS_CA_FILE) to its PEM file"
        ]
    );
    let loaded = load_with_env(
        None,
        env(&[
            ("IGGY_CONNECTORS_IGGY_TLS_ENABLED", "true"),
            ("IGGY_CONNECTORS_IGGY_TLS_CA_FILE", "ca.pem"),
        ]),
    )
    .unwrap();
    assert_eq!(loaded.config.iggy.tls.ca_file, "ca.pem");
    // Enabled in a file, the file is named.
    let file = temp_file("tls.toml", "[iggy.tls]\nenabled = true\n");
    let lines = problem_lines(Some(&file), no_env());
    assert!(
        lines[0].starts_with(&format!("{}: `iggy.tls.enabled`: ", file.display())),
        "{lines:?}"
    );

    // The http provider chosen without its URL: named by the variable that chose it.
    assert_eq!(
        problem_lines(
            None,
            env(&[("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http")])
        ),
        [
            "IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE: `connectors.base_url`: is required with the http provider: set IGGY_CONNECTORS_CONNECTORS_BASE_URL to the configuration service's URL (or base_url in [connectors])"
        ]
    );
    assert_eq!(
        problem_lines(
            None,
            env(&[("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "remote")])
        ),
        [
            "IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE: `connectors.config_type`: expected \"local\" or \"http\", got \"remote\""
        ]
    );

    // Values checked after the layers merge, and values serde refuses inside
    // `[connectors]` (a tagged enum, which used to lose the key).
    let http = [
        ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
        ("IGGY_CONNECTORS_CONNECTORS_BASE_URL", "http://configs"),
    ];
    for (name, value, expected) in [
        (
            "IGGY_CONNECTORS_CONNECTORS_BASE_URL",
            "configs.example",
            "IGGY_CONNECTORS_CONNECTORS_BASE_URL: `connectors.base_url`: expected an http:// or https:// URL",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS",
            "-1",
            "IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS: `connectors.retry.max_attempts`: expected a whole number from 0 to 4294967295",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS",
            "0",
            "IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS: `connectors.retry.max_attempts`: must be at least 1",
        ),
        (
            "IGGY_CONNECTORS_CONNECTORS_RETRY_INITIAL_BACKOFF",
            "1m",
            "IGGY_CONNECTORS_CONNECTORS_RETRY_INITIAL_BACKOFF: `connectors.retry.initial_backoff`: initial_backoff (60s) is longer than max_backoff (30s)",
        ),
        (
            "IGGY_CONNECTORS_IGGY_USERNAME",
            "",
            "IGGY_CONNECTORS_IGGY_USERNAME: `iggy.username`: is empty and no token is set: no credentials; set iggy.username (IGGY_CONNECTORS_IGGY_USERNAME) and iggy.password (IGGY_CONNECTORS_IGGY_PASSWORD), or iggy.token (IGGY_CONNECTORS_IGGY_TOKEN)",
        ),
        (
            "IGGY_CONNECTORS_IGGY_ADDRESS",
            " ",
            "IGGY_CONNECTORS_IGGY_ADDRESS: `iggy.address`: is empty",
        ),
        (
            "IGGY_CONNECTORS_HTTP_TLS_ENABLED",
            "true",
            "IGGY_CONNECTORS_HTTP_TLS_ENABLED: `http.tls.enabled`: serving the API over TLS needs a certificate chain and its private key (PEM): set http.tls.cert_file (IGGY_CONNECTORS_HTTP_TLS_CERT_FILE) and http.tls.key_file (IGGY_CONNECTORS_HTTP_TLS_KEY_FILE)",
        ),
        (
            "IGGY_CONNECTORS_TELEMETRY_ENABLED",
            "true",
            "IGGY_CONNECTORS_TELEMETRY_ENABLED: `telemetry.enabled`: ",
        ),
        (
            "IGGY_CONNECTORS_LOGGING_FORMAT",
            "xml",
            "IGGY_CONNECTORS_LOGGING_FORMAT: `logging.format`: expected \"text\" or \"json\", got \"xml\"",
        ),
    ] {
        let mut vars = env(&http);
        vars.retain(|(set, _)| set != name);
        vars.push((name.to_owned(), value.to_owned()));
        let lines = problem_lines(None, vars);
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert!(lines[0].starts_with(expected), "{name}: {lines:?}");
    }

    // A value of the file overridden by a variable is the variable's fault.
    let file = temp_file(
        "backoff.toml",
        "[connectors]\nconfig_type = \"http\"\nbase_url = \"http://configs\"\n[connectors.retry]\ninitial_backoff = \"5s\"\n",
    );
    let lines = problem_lines(
        Some(&file),
        env(&[("IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_BACKOFF", "1s")]),
    );
    assert!(
        lines[0].starts_with(
            "IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_BACKOFF: `connectors.retry.max_backoff`: "
        ),
        "{lines:?}"
    );
}

#[test]
fn no_problem_names_a_variable_nobody_set() {
    // Every problem a variable can cause is named by a variable from this list (or a
    // file); `IGGY_CONNECTORS_CONNECTORS`, a table's made-up name, never appears.
    let cases: &[&[(&str, &str)]] = &[
        &[("IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS", "nonsense")],
        &[("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http")],
        &[
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
            ("IGGY_CONNECTORS_CONNECTORS_BASE_URL", "http://x"),
            ("IGGY_CONNECTORS_CONNECTORS_RETRY_BACKOFF_MULTIPLIER", "-3"),
        ],
        &[("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "HTTP")],
    ];
    for vars in cases {
        let error = load_with_env(None, env(vars)).unwrap_err();
        for problem in &error.problems {
            assert!(
                vars.iter().any(|(name, _)| problem.source == *name),
                "{problem} is not named by one of {vars:?}"
            );
        }
    }
}

#[test]
fn per_connector_overrides_under_the_http_provider_are_warned_about() {
    let loaded = load_with_env(
        None,
        env(&[
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
            ("IGGY_CONNECTORS_CONNECTORS_BASE_URL", "http://configs"),
            ("IGGY_CONNECTORS_SINK_STDOUT_ENABLED", "false"),
        ]),
    )
    .unwrap();
    assert_eq!(
        loaded
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "IGGY_CONNECTORS_SINK_STDOUT_ENABLED: per-connector overrides apply only to the local provider's connectors, and IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE sets connectors.config_type to \"http\", so it is ignored; change the connector's config in the configuration service instead"
        ]
    );
    // Under the local provider they are the provider's business: no warning here.
    let loaded = load_with_env(
        None,
        env(&[("IGGY_CONNECTORS_SINK_STDOUT_ENABLED", "false")]),
    )
    .unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn a_problem_with_the_provider_kind_is_reported_with_every_other_one() {
    let lines = problem_lines(
        None,
        env(&[
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
            ("IGGY_CONNECTORS_IGGY_TLS_ENABLED", "true"),
            ("IGGY_CONNECTORS_LOGGING_FORMAT", "xml"),
        ]),
    );
    let sources: Vec<&str> = lines
        .iter()
        .map(|line| line.split(':').next().unwrap())
        .collect();
    assert_eq!(
        sources,
        [
            "IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE",
            "IGGY_CONNECTORS_LOGGING_FORMAT",
        ],
        "{lines:?}"
    );
    // Once the config extracts, the checks of the whole run too.
    let lines = problem_lines(
        None,
        env(&[
            ("IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE", "http"),
            ("IGGY_CONNECTORS_IGGY_TLS_ENABLED", "true"),
        ]),
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].starts_with("IGGY_CONNECTORS_IGGY_TLS_ENABLED: "),
        "{lines:?}"
    );
}
