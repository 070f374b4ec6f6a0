//! The runtime config: what `config.toml` (and the environment) may say, with defaults.
//!
//! Every section has `#[serde(default)]`, so any subset of keys is a valid file; the
//! defaults are those of `configs/config.toml`, which documents every key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as in the config file: `"10s"`, `"1 s"`, `"500ms"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        ConfigDuration(Duration::from_secs(secs))
    }

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        ConfigDuration(Duration::from_millis(millis))
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if !self.0.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}us", self.0.as_micros())
        } else if !millis.is_multiple_of(1000) || millis == 0 {
            write!(f, "{millis}ms")
        } else {
            write!(f, "{}s", millis / 1000)
        }
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        connector_sdk::duration::deserialize(deserializer).map(ConfigDuration)
    }
}

/// The whole runtime config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// How to reach Iggy.
    pub iggy: IggyConfig,
    /// Where sources keep their state.
    pub state: StateConfig,
    /// Where connector configs come from.
    pub connectors: ConnectorsConfig,
    /// The HTTP management API.
    pub http: HttpConfig,
    /// Logs.
    pub logging: LoggingConfig,
    /// OpenTelemetry export (accepted for upstream compatibility; see `validate`).
    pub telemetry: TelemetryConfig,
    /// How connectors are retried, restarted and stopped.
    pub runtime: RuntimeBehaviour,
    /// Where connector libraries may be loaded from.
    pub plugins: PluginsConfig,
    /// How `${file:...}` secrets are checked.
    pub secrets: SecretsConfig,
    /// Several runtimes sharing one set of connectors (not in upstream's files).
    pub cluster: ClusterConfig,
}

/// `[cluster]`: runtimes that share one set of connector configs (through a provider
/// they all read) and split the sources between them through Iggy. Each runtime joins
/// the consumer group `name` on the coordination topic; a source runs on the member
/// the server assigns its partition to, and its state lives in `state_topic`. Sinks
/// share their topics' partitions through their own consumer groups, as without a
/// cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Run as a member of the cluster `name` (off: this runtime runs every source).
    pub enabled: bool,
    /// The cluster: its members' consumer group on the coordination topic, and the mark
    /// on its source state records (clusters may share the stream and topics).
    pub name: String,
    /// What this runtime is called in `GET /cluster`; empty: the host name.
    pub member_name: String,
    /// The stream of the coordination and state topics (created if missing).
    pub stream: String,
    /// The coordination topic: each source maps to one of its partitions, and the
    /// member the server assigns that partition to runs the source.
    pub topic: String,
    /// The topic that holds the sources' state (the newest record of a source wins).
    pub state_topic: String,
    /// How long Iggy keeps a state record, and a member's card on the coordination
    /// topic (both topics' message expiry, set when they are made); a member rewrites
    /// the state of each source it runs that saved none for a quarter of it, so an
    /// idle source keeps its state. 0s: records never expire, and the state topic
    /// grows by a record per source batch.
    pub state_retention: ConfigDuration,
    /// The partitions both topics are created with; sources beyond it share
    /// partitions (and so members).
    pub partitions: u32,
    /// How often a member asks the server for its partitions.
    pub sync_interval: ConfigDuration,
    /// A member that has not heard from the server for this long stops its sources;
    /// a member that gains a source waits this long before it starts it, so that the
    /// member that had it has stopped it by then.
    pub fence_timeout: ConfigDuration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            name: "iggy-connectors".to_owned(),
            member_name: String::new(),
            stream: "iggy_connectors".to_owned(),
            topic: "cluster".to_owned(),
            state_topic: "source_state".to_owned(),
            state_retention: ConfigDuration::from_secs(7 * 24 * 3600),
            partitions: 32,
            sync_interval: ConfigDuration::from_millis(500),
            fence_timeout: ConfigDuration::from_secs(3),
        }
    }
}

/// The directories a connector library may be loaded from when
/// [`PluginsConfig::directories`] is empty: the runtime binary's own directory (which
/// is not a fixed path, so it is not listed here) and this one, where the Dockerfile
/// installs the bundled connectors.
pub const STANDARD_PLUGIN_DIRECTORY: &str = "/usr/local/lib/iggy-connectors";

/// `[plugins]`: where connector libraries may come from. A config's `path` names code
/// the runtime will run, so only files inside these directories are loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// A connector's library must resolve, symlinks followed, to a file inside one of
    /// these. Empty: the runtime binary's directory and [`STANDARD_PLUGIN_DIRECTORY`].
    pub directories: Vec<String>,
}

/// `[secrets]`: how secrets read from files are checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    /// A `${file:...}` secret whose file other users can read is refused (true) or only
    /// warned about (false).
    pub require_private_files: bool,
}

/// `[runtime]`: how the runtime treats connectors (not in upstream's files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeBehaviour {
    /// How long shutdown (and stopping one connector) waits for batches in flight.
    pub shutdown_timeout: ConfigDuration,
    /// Retries of failed calls, for connectors whose config has no `[retry]`.
    pub retry: ConnectorRetry,
    /// Restarts of failed connectors.
    pub restart: RestartConfig,
    /// How long a sink with unread messages may deliver nothing before it is reported
    /// `stalled` (and `/ready` answers 503); it resets its consumer group after a third
    /// of it.
    pub stall_timeout: ConfigDuration,
    /// Bytes each connector's pipeline may hold (source batches in flight and the
    /// requests made of them; a sink's batches read, read ahead and built for its
    /// plugin) before it takes more: a source polls its plugin later, a sink reads
    /// ahead less. One batch always goes, whatever its size. A connector's own
    /// `memory_budget` overrides it; 0 sets no limit.
    pub memory_budget: u64,
}

/// The default [`RuntimeBehaviour::memory_budget`]: 4 MiB, enough to keep a source of
/// 5000-message batches and its sink at full speed (see `benches/README.md`).
pub const DEFAULT_MEMORY_BUDGET: u64 = 4 * 1024 * 1024;

impl Default for RuntimeBehaviour {
    fn default() -> Self {
        RuntimeBehaviour {
            shutdown_timeout: ConfigDuration::from_secs(30),
            retry: ConnectorRetry::default(),
            restart: RestartConfig::default(),
            stall_timeout: ConfigDuration::from_secs(30),
            memory_budget: DEFAULT_MEMORY_BUDGET,
        }
    }
}

/// `[runtime.retry]`, or a connector's `[retry]`: how a failed call (a plugin call, a
/// send to or poll from Iggy) is retried before the error policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectorRetry {
    /// Attempts in all, the first included (1: no retry).
    pub max_attempts: u32,
    /// Pause before the first retry; it doubles up to `max_backoff`.
    pub initial_backoff: ConfigDuration,
    /// Longest pause between attempts.
    pub max_backoff: ConfigDuration,
}

impl Default for ConnectorRetry {
    fn default() -> Self {
        ConnectorRetry {
            max_attempts: 5,
            initial_backoff: ConfigDuration::from_millis(100),
            max_backoff: ConfigDuration::from_secs(5),
        }
    }
}

/// `[runtime.restart]`: how a failed connector is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartConfig {
    /// Restart failed connectors at all.
    pub enabled: bool,
    /// Pause before the first restart; it doubles up to `max_backoff`.
    pub initial_backoff: ConfigDuration,
    /// Longest pause between restarts.
    pub max_backoff: ConfigDuration,
    /// Restarts in a row before the connector stays `failed`; 0: no limit.
    pub max_restarts: u32,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            enabled: true,
            initial_backoff: ConfigDuration::from_secs(1),
            max_backoff: ConfigDuration::from_secs(60),
            max_restarts: 0,
        }
    }
}

/// `[iggy]`: the Iggy server and credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IggyConfig {
    /// `host:port` of Iggy's TCP listener.
    pub address: String,
    /// User name (with `password`), unless `token` is set.
    pub username: String,
    /// Password (a secret).
    pub password: String,
    /// A personal access token instead of username and password; `file:<path>` reads it
    /// from a file (a secret).
    pub token: String,
    /// TLS to Iggy.
    pub tls: IggyTlsConfig,
}

impl Default for IggyConfig {
    fn default() -> Self {
        IggyConfig {
            address: "localhost:8090".to_owned(),
            username: "iggy".to_owned(),
            password: "iggy".to_owned(),
            token: String::new(),
            tls: IggyTlsConfig::default(),
        }
    }
}

/// `[iggy.tls]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct IggyTlsConfig {
    /// Connect with TLS.
    pub enabled: bool,
    /// CA certificate (PEM) that signed the server's certificate; required with TLS.
    pub ca_file: String,
    /// Server name to verify, when it differs from the address's host.
    pub domain: String,
}

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Directory of the source state files.
    pub path: String,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            path: "local_state".to_owned(),
        }
    }
}

/// `[connectors]`: the config provider, chosen by `config_type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "config_type", rename_all = "snake_case")]
pub enum ConnectorsConfig {
    /// A directory of connector config files.
    Local(LocalProviderConfig),
    /// A remote configuration service.
    Http(Box<HttpProviderConfig>),
}

impl Default for ConnectorsConfig {
    fn default() -> Self {
        ConnectorsConfig::Local(LocalProviderConfig::default())
    }
}

/// `[connectors]` with `config_type = "local"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LocalProviderConfig {
    /// The directory; empty or missing means no connectors.
    pub config_dir: String,
    /// Refuse to start when any connector config cannot be used (see
    /// [`ConnectorsConfig::strict`]).
    pub strict: bool,
}

/// `[connectors]` with `config_type = "http"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProviderConfig {
    /// Base URL of the configuration API (required).
    pub base_url: String,
    /// Refuse to start when any connector config cannot be used (see
    /// [`ConnectorsConfig::strict`]).
    #[serde(default)]
    pub strict: bool,
    /// Timeout of each request.
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// Headers sent with every request (values are secrets).
    #[serde(default)]
    pub request_headers: BTreeMap<String, String>,
    /// Retries of failed requests.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Paths of the API's endpoints, relative to `base_url`.
    #[serde(default)]
    pub url_templates: UrlTemplates,
    /// Where data and errors sit in the response bodies.
    #[serde(default)]
    pub response: ResponseConfig,
}

fn default_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}

/// `[connectors.retry]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retry at all.
    pub enabled: bool,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Pause before the first retry.
    pub initial_backoff: ConfigDuration,
    /// Longest pause between attempts.
    pub max_backoff: ConfigDuration,
    /// Factor by which the pause grows.
    pub backoff_multiplier: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            max_attempts: 3,
            initial_backoff: ConfigDuration::from_secs(1),
            max_backoff: ConfigDuration::from_secs(30),
            backoff_multiplier: 2,
        }
    }
}

/// `[connectors.response]`: dot-paths into JSON response bodies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseConfig {
    /// Where the payload is (e.g. `data` or `data.config`); unset = the whole body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_path: Option<String>,
    /// Where an error is reported; a present, non-null value there fails the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_path: Option<String>,
}

macro_rules! url_templates {
    ($($field:ident = $default:literal: $doc:literal),* $(,)?) => {
        /// `[connectors.url_templates]`: endpoint paths with `{key}` and `{version}`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
        #[serde(default, deny_unknown_fields)]
        pub struct UrlTemplates {
            $(
                #[doc = $doc]
                #[doc = concat!(" Default: `", $default, "`.")]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<String>,
            )*
        }

        impl UrlTemplates {
            $(
                #[doc = $doc]
                pub fn $field(&self) -> &str {
                    self.$field.as_deref().unwrap_or($default)
                }
            )*

            /// Every template set to its default.
            pub fn all_defaults() -> Self {
                UrlTemplates { $($field: Some($default.to_owned())),* }
            }

            /// Every template name with its default.
            pub const DEFAULTS: &'static [(&'static str, &'static str)] =
                &[$((stringify!($field), $default)),*];
        }
    };
}

url_templates! {
    create_sink = "/sinks/{key}/configs": "Create a sink config version (POST).",
    create_source = "/sources/{key}/configs": "Create a source config version (POST).",
    get_active_configs = "/configs/active": "Every active config (GET).",
    get_active_versions = "/configs/active/versions": "Every active version (GET).",
    set_active_sink = "/sinks/{key}/configs/active": "Activate a sink version (PUT).",
    set_active_source = "/sources/{key}/configs/active": "Activate a source version (PUT).",
    get_sink_configs = "/sinks/{key}/configs": "Every version of a sink (GET).",
    get_sink_config = "/sinks/{key}/configs/{version}": "One version of a sink (GET).",
    get_active_sink_config = "/sinks/{key}/configs/active": "A sink's active config (GET).",
    get_source_configs = "/sources/{key}/configs": "Every version of a source (GET).",
    get_source_config = "/sources/{key}/configs/{version}": "One version of a source (GET).",
    get_active_source_config = "/sources/{key}/configs/active": "A source's active config (GET).",
    delete_sink_config = "/sinks/{key}/configs": "Delete a sink version (DELETE).",
    delete_source_config = "/sources/{key}/configs": "Delete a source version (DELETE).",
}

/// `[http]`: the management API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve the API.
    pub enabled: bool,
    /// `host:port` to listen on.
    pub address: String,
    /// When non-empty, every route but `/` and `/health` needs this `api-key` header (a
    /// secret).
    pub api_key: String,
    /// Serve the API off loopback with an empty `api_key` anyway; without this, that is
    /// a start-up error (anyone reaching the API could load a library).
    pub allow_unauthenticated: bool,
    /// Refuse (403) every request that would change a config or a connector's state,
    /// leaving status, configs and metrics readable.
    pub read_only: bool,
    /// Connections served at once; one more is closed as soon as it is accepted.
    pub max_connections: u32,
    /// How long a connection may take to send a request's head (and how long an idle
    /// kept-alive connection stays open); a slower one is closed.
    pub header_read_timeout: ConfigDuration,
    /// How long a request may take to be answered; a slower one gets 503.
    pub request_timeout: ConfigDuration,
    /// CORS.
    pub cors: CorsConfig,
    /// Prometheus metrics route.
    pub metrics: MetricsConfig,
    /// TLS.
    pub tls: HttpTlsConfig,
}

impl HttpConfig {
    /// Whether `address` only accepts connections from this machine (a loopback IP or
    /// `localhost`).
    pub fn loopback_only(&self) -> bool {
        crate::validate::is_loopback(&self.address)
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            address: "127.0.0.1:8081".to_owned(),
            api_key: String::new(),
            allow_unauthenticated: false,
            read_only: false,
            max_connections: 512,
            header_read_timeout: ConfigDuration::from_secs(10),
            request_timeout: ConfigDuration::from_secs(60),
            cors: CorsConfig::default(),
            metrics: MetricsConfig::default(),
            tls: HttpTlsConfig::default(),
        }
    }
}

/// `[http.cors]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Answer CORS requests.
    pub enabled: bool,
    /// Allowed methods.
    pub allowed_methods: Vec<String>,
    /// Allowed origins; `"*"` allows any.
    pub allowed_origins: Vec<String>,
    /// Allowed request headers.
    pub allowed_headers: Vec<String>,
    /// Response headers exposed to scripts (empty strings are ignored).
    pub exposed_headers: Vec<String>,
    /// `Access-Control-Allow-Credentials`.
    pub allow_credentials: bool,
    /// `Access-Control-Allow-Private-Network`.
    pub allow_private_network: bool,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            enabled: false,
            allowed_methods: ["GET", "POST", "PUT", "DELETE"].map(String::from).to_vec(),
            allowed_origins: vec!["*".to_owned()],
            allowed_headers: vec!["content-type".to_owned()],
            exposed_headers: vec![String::new()],
            allow_credentials: false,
            allow_private_network: false,
        }
    }
}

/// `[http.metrics]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics.
    pub enabled: bool,
    /// The route.
    pub endpoint: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: false,
            endpoint: "/metrics".to_owned(),
        }
    }
}

/// `[http.tls]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct HttpTlsConfig {
    /// Serve HTTPS.
    pub enabled: bool,
    /// Certificate chain (PEM).
    pub cert_file: String,
    /// Private key (PEM).
    pub key_file: String,
}

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// How often to log one summary line per connector (state, messages/s, errors,
    /// lag); `"0s"` turns it off.
    pub summary_interval: ConfigDuration,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Text,
            summary_interval: ConfigDuration::from_secs(60),
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[telemetry]`: upstream's OpenTelemetry export, accepted so upstream configs load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Export logs and traces. Not supported yet: `true` is refused by validation.
    pub enabled: bool,
    /// Service name.
    pub service_name: String,
    /// Log export.
    pub logs: TelemetryExport,
    /// Trace export.
    pub traces: TelemetryExport,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: false,
            service_name: "iggy-connectors".to_owned(),
            logs: TelemetryExport::default(),
            traces: TelemetryExport::default(),
        }
    }
}

/// `[telemetry.logs]` / `[telemetry.traces]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryExport {
    /// `grpc` or `http`.
    pub transport: String,
    /// The collector's endpoint.
    pub endpoint: String,
}

impl Default for TelemetryExport {
    fn default() -> Self {
        TelemetryExport {
            transport: "grpc".to_owned(),
            endpoint: "http://localhost:4317".to_owned(),
        }
    }
}

impl RuntimeConfig {
    /// A config in which every optional key is set, so that serialising it names every
    /// key the file may contain (both provider kinds included).
    pub(crate) fn every_key() -> Vec<toml::Value> {
        let http = HttpProviderConfig {
            base_url: String::new(),
            strict: false,
            timeout: default_timeout(),
            request_headers: BTreeMap::new(),
            retry: RetryConfig::default(),
            url_templates: UrlTemplates::all_defaults(),
            response: ResponseConfig {
                data_path: Some(String::new()),
                error_path: Some(String::new()),
            },
        };
        let local = RuntimeConfig::default();
        let remote = RuntimeConfig {
            connectors: ConnectorsConfig::Http(Box::new(http)),
            ..RuntimeConfig::default()
        };
        [local, remote]
            .iter()
            .filter_map(|config| toml::Value::try_from(config).ok())
            .collect()
    }
}

impl ConnectorsConfig {
    /// Whether a connector config that cannot be used (unreadable, invalid, its plugin
    /// or transforms cannot be had) stops start-up, as `validate` fails on it. By
    /// default (`false`) the runtime starts anyway: such a connector is listed with
    /// state `error` and the others run.
    pub fn strict(&self) -> bool {
        match self {
            ConnectorsConfig::Local(local) => local.strict,
            ConnectorsConfig::Http(http) => http.strict,
        }
    }

    /// Sets [`ConnectorsConfig::strict`] (the `--strict` option).
    pub fn set_strict(&mut self, strict: bool) {
        match self {
            ConnectorsConfig::Local(local) => local.strict = strict,
            ConnectorsConfig::Http(http) => http.strict = strict,
        }
    }

    /// Each provider kind (`"local"`, `"http"`) with the `[connectors]` keys it reads,
    /// `config_type` included. Derived from [`RuntimeConfig::every_key`], so a key added
    /// to a provider's struct is known here without a second list to keep in step.
    pub(crate) fn keys_by_kind() -> Vec<(String, BTreeSet<String>)> {
        RuntimeConfig::every_key()
            .iter()
            .filter_map(|config| config.get("connectors")?.as_table())
            .filter_map(|table| {
                let kind = table.get("config_type")?.as_str()?.to_owned();
                Some((kind, table.keys().cloned().collect()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_they_parse() {
        for text in ["10s", "500ms", "250us", "0ms", "90s"] {
            let parsed: ConfigDuration = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        let parsed: ConfigDuration = serde_json::from_value(serde_json::json!("1h 30m")).unwrap();
        assert_eq!(parsed.get(), Duration::from_secs(5400));
    }

    #[test]
    fn url_templates_default_and_override() {
        let templates = UrlTemplates {
            create_sink: Some("/custom/{key}".to_owned()),
            ..UrlTemplates::default()
        };
        assert_eq!(templates.create_sink(), "/custom/{key}");
        assert_eq!(
            templates.get_sink_config(),
            "/sinks/{key}/configs/{version}"
        );
        assert_eq!(UrlTemplates::DEFAULTS.len(), 14);
    }

    #[test]
    fn each_provider_kind_knows_its_own_keys() {
        let kinds = ConnectorsConfig::keys_by_kind();
        let keys = |kind: &str| {
            kinds
                .iter()
                .find(|(name, _)| name == kind)
                .map(|(_, keys)| keys.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            keys("local"),
            BTreeSet::from([
                "config_type".to_owned(),
                "config_dir".to_owned(),
                "strict".to_owned()
            ])
        );
        let http = keys("http");
        for key in [
            "config_type",
            "strict",
            "base_url",
            "timeout",
            "request_headers",
            "retry",
        ] {
            assert!(http.contains(key), "{key} missing from {http:?}");
        }
        assert!(!http.contains("config_dir"));
    }
}
