//! Connector configs: one TOML file (or JSON document) per connector version, with the
//! fields of upstream's files, so those files load unchanged.

use std::collections::BTreeMap;
use std::fmt;

use connector_sdk::{ConnectorKind, Schema};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::runtime::{ConfigDuration, ConnectorRetry};
use crate::secrets::SecretPaths;

/// A connector config: a sink or a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConnectorConfig {
    /// A sink.
    Sink(SinkConfig),
    /// A source.
    Source(SourceConfig),
}

/// A sink config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The connector's id, unique among sinks: `[A-Za-z0-9_-]+`.
    pub key: String,
    /// `false` keeps the connector configured but not run.
    pub enabled: bool,
    /// The config version.
    pub version: u64,
    /// Display name.
    pub name: String,
    /// The plugin library.
    pub path: String,
    /// How `GET .../configs/plugin` renders `plugin_config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config_format: Option<PluginConfigFormat>,
    /// Log every batch at info level.
    #[serde(default)]
    pub verbose: bool,
    /// Emit per-batch timing events.
    #[serde(default)]
    pub benchmark: bool,
    /// What to consume: every entry counts.
    pub streams: Vec<SinkStream>,
    /// Transforms, in the order the file lists them.
    #[serde(default, skip_serializing_if = "Transforms::is_empty")]
    pub transforms: Transforms,
    /// How failed calls are retried; default `[runtime.retry]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<ConnectorRetry>,
    /// What happens to a message that still fails after the retries.
    #[serde(default, skip_serializing_if = "ErrorPolicy::is_default")]
    pub error_policy: ErrorPolicy,
    /// Where `error_policy = "dead_letter"` sends failed messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterTarget>,
    /// The plugin's own configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config: Option<serde_json::Value>,
    /// Keys whose values came from `${env:...}` or `${file:...}` (for redaction).
    #[serde(skip)]
    pub secrets: SecretPaths,
}

/// A source config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The connector's id, unique among sources: `[A-Za-z0-9_-]+`.
    pub key: String,
    /// `false` keeps the connector configured but not run.
    pub enabled: bool,
    /// The config version.
    pub version: u64,
    /// Display name.
    pub name: String,
    /// The plugin library.
    pub path: String,
    /// How `GET .../configs/plugin` renders `plugin_config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config_format: Option<PluginConfigFormat>,
    /// Log every batch at info level.
    #[serde(default)]
    pub verbose: bool,
    /// Emit per-batch timing events.
    #[serde(default)]
    pub benchmark: bool,
    /// Where to produce: every entry counts (upstream used only the last one).
    pub streams: Vec<SourceStream>,
    /// Without `verified_resume`: most sends Iggy may have stored beyond the saved
    /// source state, so the most a crash makes the source produce again. 1 (the
    /// default) saves the state between every two sends; more lets sends go on while
    /// the state is written, one write covering several (faster; the source's
    /// in-flight limit caps it too). A source batch larger than `batch_length`, cut
    /// into several requests, counts as one send.
    #[serde(default = "default_max_unsaved_sends")]
    pub max_unsaved_sends: u32,
    /// Save the state with each send before it goes, and on a restart ask Iggy which
    /// of the sends it stored (the last message of each carries the header
    /// `iggy_connectors_send`): a crash then makes the source produce again only
    /// what Iggy did not store (and the stored part of a batch the crash cut), and no
    /// send waits for a disk flush after it. `false` leaves
    /// messages unmarked and saves the state after sends, bounded by
    /// `max_unsaved_sends` (which is moot while this is on).
    #[serde(default = "default_verified_resume")]
    pub verified_resume: bool,
    /// Transforms, in the order the file lists them.
    #[serde(default, skip_serializing_if = "Transforms::is_empty")]
    pub transforms: Transforms,
    /// How failed calls are retried; default `[runtime.retry]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<ConnectorRetry>,
    /// What happens to a message that still fails after the retries.
    #[serde(default, skip_serializing_if = "ErrorPolicy::is_default")]
    pub error_policy: ErrorPolicy,
    /// Where `error_policy = "dead_letter"` sends failed messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterTarget>,
    /// The plugin's own configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config: Option<serde_json::Value>,
    /// Keys whose values came from `${env:...}` or `${file:...}` (for redaction).
    #[serde(skip)]
    pub secrets: SecretPaths,
}

/// A `[[streams]]` entry of a sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkStream {
    /// Stream name.
    pub stream: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Payload schema.
    pub schema: Schema,
    /// Avro schema, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avro_schema_json: Option<String>,
    /// Avro schema, from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avro_schema_path: Option<String>,
    /// Protobuf: a compiled descriptor set file (`protoc --descriptor_set_out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto_descriptor_set: Option<String>,
    /// Protobuf: the full name of the message type in the descriptor set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto_message_type: Option<String>,
    /// Messages per poll.
    #[serde(default = "default_batch_length")]
    pub batch_length: u32,
    /// Pause between polls.
    #[serde(default = "default_interval")]
    pub poll_interval: ConfigDuration,
    /// Consumer group; default `iggy-connect-sink-{key}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
}

/// A `[[streams]]` entry of a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceStream {
    /// Stream name.
    pub stream: String,
    /// Topic to produce to.
    pub topic: String,
    /// Payload schema.
    pub schema: Schema,
    /// Avro schema, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avro_schema_json: Option<String>,
    /// Avro schema, from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avro_schema_path: Option<String>,
    /// Protobuf: a compiled descriptor set file (`protoc --descriptor_set_out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto_descriptor_set: Option<String>,
    /// Protobuf: the full name of the message type in the descriptor set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto_message_type: Option<String>,
    /// Messages per send.
    #[serde(default = "default_batch_length")]
    pub batch_length: u32,
    /// Most payload bytes per send (a larger message still goes, alone); none = no
    /// limit but `batch_length`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_send_bytes: Option<u64>,
    /// Longest wait to fill a batch.
    #[serde(default = "default_interval")]
    pub linger_time: ConfigDuration,
}

fn default_max_unsaved_sends() -> u32 {
    1
}

fn default_verified_resume() -> bool {
    true
}

fn default_batch_length() -> u32 {
    1000
}

fn default_interval() -> ConfigDuration {
    ConfigDuration::from_millis(5)
}

/// What happens to a message that fails (in the plugin, a decoder or a transform) after
/// the retries ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorPolicy {
    /// The connector stops with the error (`failed`); nothing after the message is
    /// committed, so it is delivered again after a restart.
    #[default]
    Fail,
    /// The message is logged, counted and passed over.
    Skip,
    /// The message goes to the `[dead_letter]` topic with headers naming the error and
    /// its origin; then it counts as handled.
    DeadLetter,
}

impl ErrorPolicy {
    fn is_default(&self) -> bool {
        *self == ErrorPolicy::Fail
    }
}

/// `[dead_letter]`: the Iggy topic that receives failed messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterTarget {
    /// Stream name.
    pub stream: String,
    /// Topic name (created if missing).
    pub topic: String,
}

/// How `plugin_config` is shown by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginConfigFormat {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// TOML.
    Toml,
    /// Plain text.
    Text,
}

/// The transforms of a connector, in the order the file lists them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transforms(pub Vec<(String, serde_json::Value)>);

impl Transforms {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Transforms {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, config)| (name, config)))
    }
}

impl<'de> Deserialize<'de> for Transforms {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Transforms;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of transform name to its settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Transforms, A::Error> {
                let mut transforms = Vec::new();
                while let Some((name, config)) = map.next_entry::<String, serde_json::Value>()? {
                    transforms.push((name, config));
                }
                Ok(Transforms(transforms))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

/// A field both kinds of connector config have, read from either.
macro_rules! common {
    ($config:expr, $field:ident) => {
        match $config {
            ConnectorConfig::Sink(sink) => &sink.$field,
            ConnectorConfig::Source(source) => &source.$field,
        }
    };
}

impl ConnectorConfig {
    /// Sink or source.
    pub fn kind(&self) -> ConnectorKind {
        match self {
            ConnectorConfig::Sink(_) => ConnectorKind::Sink,
            ConnectorConfig::Source(_) => ConnectorKind::Source,
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        common!(self, key)
    }

    /// The version.
    pub fn version(&self) -> u64 {
        *common!(self, version)
    }

    /// Display name.
    pub fn name(&self) -> &str {
        common!(self, name)
    }

    /// The plugin library (or the name a linked plugin is registered under).
    pub fn path(&self) -> &str {
        common!(self, path)
    }

    /// Transforms, in file order.
    pub fn transforms(&self) -> &Transforms {
        common!(self, transforms)
    }

    /// How `GET .../configs/plugin` renders `plugin_config`, if set.
    pub fn plugin_config_format(&self) -> Option<PluginConfigFormat> {
        *common!(self, plugin_config_format)
    }

    /// The connector's own retry settings, if it has any.
    pub fn retry(&self) -> Option<ConnectorRetry> {
        *common!(self, retry)
    }

    /// What happens to a message that still fails after the retries.
    pub fn error_policy(&self) -> ErrorPolicy {
        *common!(self, error_policy)
    }

    /// Where `dead_letter` sends failed messages.
    pub fn dead_letter(&self) -> Option<&DeadLetterTarget> {
        common!(self, dead_letter).as_ref()
    }

    /// Sets key and version (when a provider stores a new version).
    pub fn set_identity(&mut self, key: &str, version: u64) {
        match self {
            ConnectorConfig::Sink(sink) => {
                sink.key = key.to_owned();
                sink.version = version;
            }
            ConnectorConfig::Source(source) => {
                source.key = key.to_owned();
                source.version = version;
            }
        }
    }

    /// Keys whose values came from `${env:...}` or `${file:...}`.
    pub fn secrets(&self) -> &SecretPaths {
        common!(self, secrets)
    }

    fn set_secrets(&mut self, secrets: SecretPaths) {
        match self {
            ConnectorConfig::Sink(sink) => sink.secrets = secrets,
            ConnectorConfig::Source(source) => source.secrets = secrets,
        }
    }

    /// The config as JSON with secret values replaced by `"******"`: values that came
    /// from `${env:...}` or `${file:...}`, and `plugin_config` fields (at any depth)
    /// whose names say they are secret (see [`is_secret_field`]).
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        for path in self.secrets() {
            crate::secrets::redact_path(&mut value, path);
        }
        if let Some(plugin) = value.get_mut("plugin_config") {
            redact_secret_fields(plugin);
        }
        value
    }

    /// Whether the connector should run.
    pub fn enabled(&self) -> bool {
        *common!(self, enabled)
    }

    /// The plugin config, `{}` when the file has none (never `null`).
    pub fn plugin_config(&self) -> serde_json::Value {
        common!(self, plugin_config)
            .clone()
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()))
    }

    /// Checks what the types cannot: the key's characters and at least one stream.
    pub fn validate(&self) -> Result<(), String> {
        validate_key(self.key())?;
        let streams = match self {
            ConnectorConfig::Sink(sink) => {
                if let Some(stream) = sink.streams.iter().find(|stream| stream.topics.is_empty()) {
                    return Err(format!(
                        "`streams`: stream {:?} lists no topics",
                        stream.stream
                    ));
                }
                sink.streams.len()
            }
            ConnectorConfig::Source(source) => source.streams.len(),
        };
        if streams == 0 {
            return Err("`streams`: at least one [[streams]] entry is needed".to_owned());
        }
        if self.error_policy() == ErrorPolicy::DeadLetter && self.dead_letter().is_none() {
            return Err(
                "`error_policy`: \"dead_letter\" needs a [dead_letter] table with `stream` and `topic`"
                    .to_owned(),
            );
        }
        if self.retry().is_some_and(|retry| retry.max_attempts == 0) {
            return Err("`retry.max_attempts`: must be at least 1".to_owned());
        }
        if let ConnectorConfig::Source(source) = self
            && source.max_unsaved_sends == 0
        {
            return Err("`max_unsaved_sends`: must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// Whether a plugin config field holds a secret, by its name: it contains `password`,
/// `passwd`, `secret`, `token`, `api_key`, `apikey`, `private_key`, `credential` or
/// `authorization` (case-insensitive, `-` read as `_`). Connector authors name fields so.
pub fn is_secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "private_key",
        "credential",
        "authorization",
    ]
    .iter()
    .any(|marker| name.contains(marker))
}

fn redact_secret_fields(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if is_secret_field(name) && !field.is_object() && !field.is_array() {
                    if !field.is_null() && field.as_str() != Some("") {
                        *field = serde_json::Value::String(crate::secrets::REDACTED.to_owned());
                    }
                } else {
                    redact_secret_fields(field);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_secret_fields),
        _ => {}
    }
}

/// Checks a connector key: `[A-Za-z0-9_-]+`. Keys name files and URL paths, so anything
/// else (`/`, `..`, spaces) is refused rather than turned into a path.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("`key` is empty".to_owned());
    }
    if let Some(bad) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "`key` {key:?} contains {bad:?}; keys may use only letters, digits, `_` and `-`"
        ));
    }
    Ok(())
}

/// Parses a connector config file's text; errors name the key (`streams[0].topics`).
pub fn parse_connector_toml(text: &str) -> Result<ConnectorConfig, String> {
    let value: toml::Value =
        toml::from_str(text).map_err(|error| format!("not valid TOML: {error}"))?;
    from_toml_value(value)
}

pub(crate) fn from_toml_value(mut value: toml::Value) -> Result<ConnectorConfig, String> {
    let mut secrets = SecretPaths::new();
    crate::secrets::resolve_toml(&mut value, "", &mut secrets)?;
    let toml::Value::Table(mut table) = value else {
        return Err("expected a table".to_owned());
    };
    // Deserialise the variant's struct directly: going through the tagged enum would
    // buffer the input and lose the path of a bad field.
    let kind = table.remove("type");
    let mut config = match kind.as_ref().and_then(toml::Value::as_str) {
        Some("sink") => deserialize_at::<SinkConfig>(table).map(ConnectorConfig::Sink),
        Some("source") => deserialize_at::<SourceConfig>(table).map(ConnectorConfig::Source),
        Some(other) => Err(format!(
            "`type`: {}",
            crate::suggest::with_suggestion(&format!(
                "unknown variant `{other}`, expected `sink` or `source`"
            ))
        )),
        None if kind.is_some() => Err("`type`: expected \"sink\" or \"source\"".to_owned()),
        None => Err("`type` is missing: expected \"sink\" or \"source\"".to_owned()),
    }?;
    config.validate()?;
    config.set_secrets(secrets);
    Ok(config)
}

fn deserialize_at<T: serde::de::DeserializeOwned>(table: toml::Table) -> Result<T, String> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|error| {
        let path = error.path().to_string();
        // toml appends "\nin `a.b`" to its messages; the path says it better.
        let inner = error.inner().to_string();
        let first_line = inner.lines().next().unwrap_or_default().trim().to_owned();
        let message = crate::suggest::with_suggestion(&first_line);
        if path == "." {
            message
        } else {
            format!("`{path}`: {message}")
        }
    })
}

/// The fields an override may set directly, besides `STREAMS_<i>_<FIELD>` and
/// `PLUGIN_CONFIG_<FIELD>`.
const OVERRIDE_FIELDS: &[&str] = &[
    "ENABLED",
    "VERSION",
    "NAME",
    "PATH",
    "PLUGIN_CONFIG_FORMAT",
    "VERBOSE",
    "BENCHMARK",
    "ERROR_POLICY",
    "MAX_UNSAVED_SENDS",
    "VERIFIED_RESUME",
];

/// Whether `field` (what follows `IGGY_CONNECTORS_{SINK|SOURCE}_{KEY}_`) is one an
/// override may set: used to tell where the key ends in a variable that matches no
/// connector, to suggest the one meant.
pub(crate) fn is_override_field(field: &str) -> bool {
    OVERRIDE_FIELDS.contains(&field)
        || field
            .strip_prefix("PLUGIN_CONFIG_")
            .is_some_and(|rest| !rest.is_empty())
        || field
            .strip_prefix("STREAMS_")
            .and_then(|rest| rest.split_once('_'))
            .is_some_and(|(index, rest)| index.parse::<usize>().is_ok() && !rest.is_empty())
}

/// The environment overrides of one connector (upstream's naming):
/// `IGGY_CONNECTORS_{SINK|SOURCE}_{KEY}_{FIELD}`, with the key in upper case and `-` as
/// `_`. Fields: `ENABLED`, `VERSION`, `NAME`, `PATH`, `PLUGIN_CONFIG_FORMAT`, `VERBOSE`,
/// `BENCHMARK`, `ERROR_POLICY`, `MAX_UNSAVED_SENDS` and `VERIFIED_RESUME` (sources),
/// `STREAMS_<i>_<FIELD>` and
/// `PLUGIN_CONFIG_<FIELD>` (one level, lower-cased).
pub fn apply_env_overrides(
    table: &mut toml::Table,
    kind: ConnectorKind,
    key: &str,
    env: &BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    let prefix = format!(
        "IGGY_CONNECTORS_{}_{}_",
        kind.as_str().to_uppercase(),
        key.to_uppercase().replace('-', "_")
    );
    let mut applied = Vec::new();
    for (name, raw) in env.range(prefix.clone()..) {
        let Some(field) = name.strip_prefix(&prefix) else {
            break;
        };
        let value = |expected: ValueKind| {
            parse_override(raw, expected).map_err(|message| format!("{name}: {message}"))
        };
        match field {
            "ENABLED" | "VERBOSE" | "BENCHMARK" | "VERIFIED_RESUME" => {
                table.insert(field.to_lowercase(), value(ValueKind::Bool)?);
            }
            "VERSION" | "MAX_UNSAVED_SENDS" => {
                table.insert(field.to_lowercase(), value(ValueKind::Integer)?);
            }
            "NAME" | "PATH" | "PLUGIN_CONFIG_FORMAT" | "ERROR_POLICY" => {
                table.insert(field.to_lowercase(), value(ValueKind::String)?);
            }
            _ => {
                if let Some(plugin_field) = field.strip_prefix("PLUGIN_CONFIG_") {
                    let plugin = table
                        .entry("plugin_config")
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    let toml::Value::Table(plugin) = plugin else {
                        return Err(format!("{name}: plugin_config is not a table"));
                    };
                    plugin.insert(plugin_field.to_lowercase(), value(ValueKind::Guess)?);
                } else if let Some(rest) = field.strip_prefix("STREAMS_") {
                    let (index, stream_field) = rest
                        .split_once('_')
                        .and_then(|(index, stream_field)| {
                            Some((index.parse::<usize>().ok()?, stream_field))
                        })
                        .ok_or_else(|| format!("{name}: expected STREAMS_<index>_<FIELD>"))?;
                    let kind = match stream_field {
                        "BATCH_LENGTH" | "MAX_SEND_BYTES" => ValueKind::Integer,
                        "TOPICS" => ValueKind::List,
                        "STREAM"
                        | "TOPIC"
                        | "SCHEMA"
                        | "AVRO_SCHEMA_JSON"
                        | "AVRO_SCHEMA_PATH"
                        | "PROTO_DESCRIPTOR_SET"
                        | "PROTO_MESSAGE_TYPE"
                        | "POLL_INTERVAL"
                        | "LINGER_TIME"
                        | "CONSUMER_GROUP" => ValueKind::String,
                        other => return Err(format!("{name}: unknown stream field {other}")),
                    };
                    let streams = table
                        .entry("streams")
                        .or_insert_with(|| toml::Value::Array(Vec::new()));
                    let toml::Value::Array(streams) = streams else {
                        return Err(format!("{name}: streams is not a list"));
                    };
                    while streams.len() <= index {
                        streams.push(toml::Value::Table(toml::Table::new()));
                    }
                    let toml::Value::Table(stream) = &mut streams[index] else {
                        return Err(format!("{name}: streams[{index}] is not a table"));
                    };
                    stream.insert(stream_field.to_lowercase(), value(kind)?);
                } else {
                    let hint = crate::suggest::nearest(field, OVERRIDE_FIELDS.iter().copied())
                        .map(|near| format!("; did you mean {prefix}{near}?"))
                        .unwrap_or_default();
                    return Err(format!("{name}: unknown connector field{hint}"));
                }
            }
        }
        applied.push(name.clone());
    }
    Ok(applied)
}

#[derive(Debug, Clone, Copy)]
enum ValueKind {
    Bool,
    Integer,
    String,
    List,
    /// A plugin field, whose type the runtime does not know: booleans, integers, floats
    /// and `[lists]` are recognised, anything else is a string.
    Guess,
}

fn parse_override(raw: &str, kind: ValueKind) -> Result<toml::Value, String> {
    let trimmed = raw.trim();
    match kind {
        ValueKind::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "true" => Ok(toml::Value::Boolean(true)),
            "false" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        ValueKind::Integer => trimmed
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected an integer, got {raw:?}")),
        ValueKind::String => Ok(toml::Value::String(raw.to_owned())),
        ValueKind::List => Ok(toml::Value::Array(
            crate::load::parse_list(trimmed)?
                .into_iter()
                .map(toml::Value::String)
                .collect(),
        )),
        ValueKind::Guess => {
            if trimmed.starts_with('[') {
                let items = crate::load::parse_list(trimmed)?;
                return Ok(toml::Value::Array(
                    items
                        .iter()
                        .map(|item| parse_override(item, ValueKind::Guess))
                        .collect::<Result<_, _>>()?,
                ));
            }
            Ok(match trimmed.to_ascii_lowercase().as_str() {
                "true" => toml::Value::Boolean(true),
                "false" => toml::Value::Boolean(false),
                _ => trimmed
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .or_else(|_| trimmed.parse::<f64>().map(toml::Value::Float))
                    .unwrap_or_else(|_| toml::Value::String(raw.to_owned())),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINK: &str = r#"
type = "sink"
key = "s"
enabled = true
version = 1
name = "S"
path = "p"
[[streams]]
stream = "a"
topics = ["t"]
schema = "json"
"#;

    #[test]
    fn error_policy_defaults_to_fail_and_dead_letter_needs_a_target() {
        let ConnectorConfig::Sink(sink) = parse_connector_toml(SINK).unwrap() else {
            panic!("a sink");
        };
        assert_eq!(sink.error_policy, ErrorPolicy::Fail);
        assert_eq!(sink.retry, None);

        let error =
            parse_connector_toml(&format!("error_policy = \"dead_letter\"\n{SINK}")).unwrap_err();
        assert!(
            error.contains("`error_policy`") && error.contains("[dead_letter]"),
            "{error}"
        );

        let with_target = format!(
            "error_policy = \"dead_letter\"\n{SINK}[dead_letter]\nstream = \"e\"\ntopic = \"d\"\n[retry]\nmax_attempts = 2\ninitial_backoff = \"5ms\"\n"
        );
        let ConnectorConfig::Sink(sink) = parse_connector_toml(&with_target).unwrap() else {
            panic!("a sink");
        };
        assert_eq!(sink.error_policy, ErrorPolicy::DeadLetter);
        assert_eq!(sink.dead_letter.unwrap().topic, "d");
        let retry = sink.retry.unwrap();
        assert_eq!(retry.max_attempts, 2);
        assert_eq!(retry.initial_backoff, ConfigDuration::from_millis(5));
        assert_eq!(retry.max_backoff, ConnectorRetry::default().max_backoff);

        let error = parse_connector_toml(&format!("error_policy = \"drop\"\n{SINK}")).unwrap_err();
        assert!(error.contains("error_policy"), "{error}");
        let error =
            parse_connector_toml(&format!("{SINK}[retry]\nmax_attempts = 0\n")).unwrap_err();
        assert!(error.contains("retry.max_attempts"), "{error}");
    }

    #[test]
    fn max_unsaved_sends_defaults_to_one_and_comes_from_file_or_environment() {
        let source = "type = \"source\"\nkey = \"r\"\nenabled = true\nversion = 1\nname = \"R\"\npath = \"p\"\n[[streams]]\nstream = \"a\"\ntopic = \"t\"\nschema = \"json\"\n";
        let ConnectorConfig::Source(parsed) = parse_connector_toml(source).unwrap() else {
            panic!("a source");
        };
        assert_eq!(parsed.max_unsaved_sends, 1);
        let ConnectorConfig::Source(parsed) =
            parse_connector_toml(&format!("max_unsaved_sends = 8\n{source}")).unwrap()
        else {
            panic!("a source");
        };
        assert_eq!(parsed.max_unsaved_sends, 8);
        let error = parse_connector_toml(&format!("max_unsaved_sends = 0\n{source}")).unwrap_err();
        assert!(
            error.contains("`max_unsaved_sends`: must be at least 1"),
            "{error}"
        );

        let mut table: toml::Table = toml::from_str(source).unwrap();
        let env = BTreeMap::from([(
            "IGGY_CONNECTORS_SOURCE_R_MAX_UNSAVED_SENDS".to_owned(),
            "4".to_owned(),
        )]);
        apply_env_overrides(&mut table, ConnectorKind::Source, "r", &env).unwrap();
        assert_eq!(table["max_unsaved_sends"].as_integer(), Some(4));
    }

    #[test]
    fn verified_resume_is_on_by_default_and_comes_from_file_or_environment() {
        let source = "type = \"source\"\nkey = \"r\"\nenabled = true\nversion = 1\nname = \"R\"\npath = \"p\"\n[[streams]]\nstream = \"a\"\ntopic = \"t\"\nschema = \"json\"\n";
        let ConnectorConfig::Source(parsed) = parse_connector_toml(source).unwrap() else {
            panic!("a source");
        };
        assert!(parsed.verified_resume);
        let ConnectorConfig::Source(parsed) =
            parse_connector_toml(&format!("verified_resume = false\n{source}")).unwrap()
        else {
            panic!("a source");
        };
        assert!(!parsed.verified_resume);

        let mut table: toml::Table = toml::from_str(source).unwrap();
        let env = BTreeMap::from([(
            "IGGY_CONNECTORS_SOURCE_R_VERIFIED_RESUME".to_owned(),
            "false".to_owned(),
        )]);
        apply_env_overrides(&mut table, ConnectorKind::Source, "r", &env).unwrap();
        assert_eq!(table["verified_resume"].as_bool(), Some(false));
        let error = parse_connector_toml(&format!("verified_resume = 1\n{source}")).unwrap_err();
        assert!(error.contains("verified_resume"), "{error}");
    }

    #[test]
    fn secret_named_plugin_fields_are_redacted_at_any_depth() {
        let config = parse_connector_toml(&format!(
            "{SINK}[plugin_config]\nurl = \"u\"\nPassword = \"p\"\nempty_token = \"\"\n[plugin_config.auth_settings]\napi-key = \"k\"\nuser = \"x\"\n"
        ))
        .unwrap();
        let redacted = config.redacted();
        let plugin = &redacted["plugin_config"];
        assert_eq!(plugin["url"], "u");
        assert_eq!(plugin["Password"], crate::secrets::REDACTED);
        assert_eq!(plugin["empty_token"], "", "empty values stay empty");
        assert_eq!(plugin["auth_settings"]["api-key"], crate::secrets::REDACTED);
        assert_eq!(plugin["auth_settings"]["user"], "x");
    }

    #[test]
    fn keys_are_refused_unless_safe() {
        assert!(validate_key("stdout-1_a").is_ok());
        for bad in ["", "../etc", "a/b", "a b", "ключ"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn transforms_keep_file_order_and_every_stream_counts() {
        let config = parse_connector_toml(
            r#"
type = "source"
key = "r"
enabled = true
version = 1
name = "R"
path = "p"
[[streams]]
stream = "a"
topic = "t1"
schema = "json"
[[streams]]
stream = "b"
topic = "t2"
schema = "raw"
linger_time = "1s"
[transforms.zeta]
enabled = true
[transforms.alpha]
enabled = true
[transforms.mid]
enabled = false
"#,
        )
        .unwrap();
        let ConnectorConfig::Source(source) = config else {
            panic!("source expected");
        };
        let names: Vec<&str> = source
            .transforms
            .0
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
        assert_eq!(source.streams.len(), 2);
        assert_eq!(source.streams[1].linger_time, ConfigDuration::from_secs(1));
        assert_eq!(source.streams[0].batch_length, 1000);
    }
}
