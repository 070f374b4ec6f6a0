//! Parses and provides configuration; knows nothing of running connectors.
//!
//! - [`load`]: the runtime config, from built-in defaults, a TOML file and
//!   `IGGY_CONNECTORS_*` environment variables (in that order of precedence), validated
//!   before anything starts: every problem is reported at once with its file or
//!   variable and key.
//! - Secrets: any string may be `${env:NAME}` or `${file:/path}`; resolved at load and
//!   redacted by [`LoadedConfig::redacted`] and [`ConnectorConfig::redacted`].
//! - Connector configs ([`ConnectorConfig`]: a sink or a source, upstream's file format)
//!   come from a [`ConfigProvider`]: [`LocalProvider`] (a directory, with versions and a
//!   persisted active version) or [`HttpProvider`] (a remote configuration service).

mod connector;
mod flat;
mod http;
mod load;
mod local;
mod overrides;
mod provider;
mod runtime;
mod secrets;
mod streams;
mod suggest;
pub use suggest::nearest;
mod validate;

pub use connector::{
    ConnectorCommon, ConnectorConfig, DeadLetterTarget, ErrorPolicy, PluginConfigFormat,
    SinkConfig, SourceConfig, Transforms, parse_connector_toml, validate_key,
};
pub use http::{HttpProvider, dot_path};
pub use load::{
    CONFIG_PATH_ENV, ConfigError, ENV_PREFIX, LoadedConfig, Problem, config_keys,
    environment_variables, load, load_with_env,
};
pub use local::{ACTIVE_VERSIONS_FILE, LocalProvider};
pub use overrides::apply_env_overrides;
pub use provider::{ActiveConfigs, ActiveVersions, BrokenConfig, ConfigProvider, ProviderError};
pub use runtime::{
    ClusterConfig, ConfigDuration, ConnectorRetry, ConnectorsConfig, CorsConfig,
    DEFAULT_MEMORY_BUDGET, HttpConfig, HttpProviderConfig, HttpTlsConfig, IggyConfig,
    IggyTlsConfig, LocalProviderConfig, LogFormat, LoggingConfig, MetricsConfig, PluginsConfig,
    ResponseConfig, RestartConfig, RetryConfig, RuntimeBehaviour, RuntimeConfig,
    STANDARD_PLUGIN_DIRECTORY, SecretsConfig, StateConfig, TelemetryConfig, TelemetryExport,
    UrlTemplates,
};
pub use secrets::{
    MIN_SCRUBBED_CHARS, REDACTED, ScrubbingWriter, SecretPaths, is_secret_field, redact_path,
    remember_secret, scrub_secrets, visit_path,
};
pub use streams::{SinkStream, SourceStream};
/// The payload part of a `[[streams]]` entry ([`SinkStream::payload`],
/// [`SourceStream::payload`]), re-exported so that code building configs needs no
/// dependency on `transforms`.
pub use transforms::StreamPayload;
