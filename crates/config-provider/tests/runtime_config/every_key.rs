//! Every key, set to something other than its default, round-trips from the file and
//! from its environment variable.

use std::collections::BTreeMap;

use config_provider::{
    ConfigDuration, ConnectorsConfig, LogFormat, RuntimeConfig, environment_variables,
    load_with_env,
};

use crate::support::{env, no_env, temp_file};

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
strict = true

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
allow_unauthenticated = true
read_only = true
max_connections = 64
header_read_timeout = "3s"
request_timeout = "20s"

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
memory_budget = 1234567

[runtime.retry]
max_attempts = 9
initial_backoff = "20ms"
max_backoff = "2s"

[runtime.restart]
enabled = false
initial_backoff = "3s"
max_backoff = "90s"
max_restarts = 4

[plugins]
directories = ["/opt/connectors", "plugins"]

[secrets]
require_private_files = true

[cluster]
enabled = true
name = "east"
member_name = "east-1"
stream = "coordination"
topic = "members"
state_topic = "states"
state_retention = "2h"
partitions = 7
sync_interval = "250ms"
fence_timeout = "4s"
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
    assert!(http.strict);
    assert!(config.connectors.strict());
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
    assert!(config.http.allow_unauthenticated && config.http.read_only);
    assert_eq!(config.http.max_connections, 64);
    assert_eq!(
        config.http.header_read_timeout,
        ConfigDuration::from_secs(3)
    );
    assert_eq!(config.http.request_timeout, ConfigDuration::from_secs(20));
    assert_eq!(config.plugins.directories, ["/opt/connectors", "plugins"]);
    assert!(config.secrets.require_private_files);
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
    assert_eq!(runtime.memory_budget, 1_234_567);
    let cluster = &config.cluster;
    assert!(cluster.enabled);
    assert_eq!(cluster.name, "east");
    assert_eq!(cluster.member_name, "east-1");
    assert_eq!(cluster.stream, "coordination");
    assert_eq!(cluster.topic, "members");
    assert_eq!(cluster.state_topic, "states");
    assert_eq!(cluster.state_retention, ConfigDuration::from_secs(7200));
    assert_eq!(cluster.partitions, 7);
    assert_eq!(cluster.sync_interval, ConfigDuration::from_millis(250));
    assert_eq!(cluster.fence_timeout, ConfigDuration::from_secs(4));
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
        ("IGGY_CONNECTORS_CONNECTORS_STRICT", "true"),
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
        ("IGGY_CONNECTORS_HTTP_ALLOW_UNAUTHENTICATED", "true"),
        ("IGGY_CONNECTORS_HTTP_READ_ONLY", "true"),
        ("IGGY_CONNECTORS_HTTP_MAX_CONNECTIONS", "64"),
        ("IGGY_CONNECTORS_HTTP_HEADER_READ_TIMEOUT", "3s"),
        ("IGGY_CONNECTORS_HTTP_REQUEST_TIMEOUT", "20s"),
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
        ("IGGY_CONNECTORS_RUNTIME_MEMORY_BUDGET", "1234567"),
        ("IGGY_CONNECTORS_RUNTIME_RETRY_MAX_ATTEMPTS", "9"),
        ("IGGY_CONNECTORS_RUNTIME_RETRY_INITIAL_BACKOFF", "20ms"),
        ("IGGY_CONNECTORS_RUNTIME_RETRY_MAX_BACKOFF", "2s"),
        ("IGGY_CONNECTORS_RUNTIME_RESTART_ENABLED", "false"),
        ("IGGY_CONNECTORS_RUNTIME_RESTART_INITIAL_BACKOFF", "3s"),
        ("IGGY_CONNECTORS_RUNTIME_RESTART_MAX_BACKOFF", "90s"),
        ("IGGY_CONNECTORS_RUNTIME_RESTART_MAX_RESTARTS", "4"),
        (
            "IGGY_CONNECTORS_PLUGINS_DIRECTORIES",
            "/opt/connectors,plugins",
        ),
        ("IGGY_CONNECTORS_SECRETS_REQUIRE_PRIVATE_FILES", "true"),
        ("IGGY_CONNECTORS_CLUSTER_ENABLED", "true"),
        ("IGGY_CONNECTORS_CLUSTER_NAME", "east"),
        ("IGGY_CONNECTORS_CLUSTER_MEMBER_NAME", "east-1"),
        ("IGGY_CONNECTORS_CLUSTER_STREAM", "coordination"),
        ("IGGY_CONNECTORS_CLUSTER_TOPIC", "members"),
        ("IGGY_CONNECTORS_CLUSTER_STATE_TOPIC", "states"),
        ("IGGY_CONNECTORS_CLUSTER_STATE_RETENTION", "2h"),
        ("IGGY_CONNECTORS_CLUSTER_PARTITIONS", "7"),
        ("IGGY_CONNECTORS_CLUSTER_SYNC_INTERVAL", "250ms"),
        ("IGGY_CONNECTORS_CLUSTER_FENCE_TIMEOUT", "4s"),
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
