//! Connector configs: one TOML file (or JSON document) per connector version, with the
//! fields of upstream's files, so those files load unchanged.
//!
//! A config is the part every connector has ([`ConnectorCommon`]) and its kind's own
//! fields ([`SinkConfig`], [`SourceConfig`]); in a file, and wherever a config is
//! written (the HTTP API's JSON, the local provider's TOML), both are one flat table,
//! read and written through [`crate::flat`].

use std::fmt;

use connector_sdk::ConnectorKind;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::flat::{self, FieldsInto, FlatError, Raw, Span, Table};
use crate::runtime::ConnectorRetry;
use crate::secrets::{OpenSecretFile, SecretPaths};
use crate::streams::{SinkStream, SourceStream};

/// A connector config: a sink or a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConnectorConfig {
    /// A sink.
    Sink(SinkConfig),
    /// A source.
    Source(SourceConfig),
}

/// What every connector config has, sink or source: which connector it is and which
/// plugin runs it, how it logs, how its messages are transformed, and what happens
/// when they fail. In a file these keys sit beside the kind's own in one table.
///
/// `Default` is a config to fill in: empty, disabled, version 0 (`validate` refuses it
/// until it has a key).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorCommon {
    /// The connector's id, unique among connectors of its kind: `[A-Za-z0-9_-]+`.
    pub key: String,
    /// `false` keeps the connector configured but not run.
    pub enabled: bool,
    /// The config version.
    pub version: u64,
    /// Display name.
    pub name: String,
    /// The plugin library (or the name a linked plugin is registered under).
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
    /// Bytes this connector's pipeline may hold before it takes more; default
    /// `[runtime] memory_budget`, 0 sets no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget: Option<u64>,
    /// The plugin's own configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config: Option<serde_json::Value>,
    /// Keys whose values came from `${env:...}` or `${file:...}` (for redaction).
    #[serde(skip)]
    pub secrets: SecretPaths,
    /// `plugin_config` entries set by an environment variable
    /// (`IGGY_CONNECTORS_SINK_<KEY>_PLUGIN_CONFIG_<ENTRY>`), as the variable's text, by
    /// entry: `plugin_config` holds a guess at its type, which the plugin's own
    /// description of its config corrects (`runtime_core::typed_plugin_config`).
    #[serde(skip)]
    pub plugin_config_env: std::collections::BTreeMap<String, String>,
}

/// A sink config.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// What every connector config has.
    pub common: ConnectorCommon,
    /// What to consume: every entry counts.
    pub streams: Vec<SinkStream>,
}

/// A source config.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// What every connector config has.
    pub common: ConnectorCommon,
    /// Where to produce: every entry counts (upstream used only the last one).
    pub streams: Vec<SourceStream>,
    /// Without `verified_resume`: most sends Iggy may have stored beyond the saved
    /// source state, so the most a crash makes the source produce again. 1 (the
    /// default) saves the state between every two sends; more lets sends go on while
    /// the state is written, one write covering several (faster; the source's
    /// in-flight limit caps it too). A source batch larger than `batch_length`, cut
    /// into several requests, counts as one send.
    pub max_unsaved_sends: u32,
    /// Save the state with each send before it goes, and on a restart ask Iggy which
    /// of the sends it stored (the last message of each carries the header
    /// `iggy_connectors_send`): a crash then makes the source produce again only
    /// what Iggy did not store (and the stored part of a batch the crash cut), and no
    /// send waits for a disk flush after it. `false` leaves
    /// messages unmarked and saves the state after sends, bounded by
    /// `max_unsaved_sends` (which is moot while this is on).
    pub verified_resume: bool,
}

fn default_max_unsaved_sends() -> u32 {
    1
}

fn default_verified_resume() -> bool {
    true
}

impl ConnectorCommon {
    /// In the flat form a kind's own fields come right after this one, where
    /// upstream's files have `streams`: the files the local provider writes keep that
    /// layout.
    const KIND_FIELDS_AFTER: &'static str = "benchmark";

    /// Writes the flat form of a config: these fields, with the kind's own (written by
    /// `own`) after [`ConnectorCommon::KIND_FIELDS_AFTER`].
    fn serialize_around<S: Serializer>(
        &self,
        serializer: S,
        own: impl FnOnce(&mut S::SerializeMap) -> Result<(), S::Error>,
    ) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.serialize(FieldsInto::new(
            &mut map,
            Span::Through(Self::KIND_FIELDS_AFTER),
        ))?;
        own(&mut map)?;
        self.serialize(FieldsInto::new(
            &mut map,
            Span::After(Self::KIND_FIELDS_AFTER),
        ))?;
        map.end()
    }

    /// Takes this part's keys from a flat config table.
    fn read(table: &mut Table) -> Result<Self, FlatError> {
        table.part(flat::struct_fields::<ConnectorCommon>())
    }
}

impl SinkConfig {
    /// Reads a flat sink table (without `type`).
    pub(crate) fn read(table: &mut Table) -> Result<Self, FlatError> {
        let common = ConnectorCommon::read(table);
        let streams = table.tables("streams", "struct SinkStream", SinkStream::read);
        table.finish()?;
        Ok(SinkConfig {
            common: common?,
            streams: streams?,
        })
    }
}

impl SourceConfig {
    /// Reads a flat source table (without `type`).
    pub(crate) fn read(table: &mut Table) -> Result<Self, FlatError> {
        let common = ConnectorCommon::read(table);
        let streams = table.tables("streams", "struct SourceStream", SourceStream::read);
        let max_unsaved_sends = table.or_else("max_unsaved_sends", default_max_unsaved_sends);
        let verified_resume = table.or_else("verified_resume", default_verified_resume);
        table.finish()?;
        Ok(SourceConfig {
            common: common?,
            streams: streams?,
            max_unsaved_sends: max_unsaved_sends?,
            verified_resume: verified_resume?,
        })
    }
}

impl Serialize for SinkConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.common.serialize_around(serializer, |map| {
            map.serialize_entry("streams", &self.streams)
        })
    }
}

impl Serialize for SourceConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.common.serialize_around(serializer, |map| {
            map.serialize_entry("streams", &self.streams)?;
            map.serialize_entry("max_unsaved_sends", &self.max_unsaved_sends)?;
            map.serialize_entry("verified_resume", &self.verified_resume)
        })
    }
}

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        flat::deserialize(deserializer, "struct SinkConfig", SinkConfig::read)
    }
}

impl<'de> Deserialize<'de> for SourceConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        flat::deserialize(deserializer, "struct SourceConfig", SourceConfig::read)
    }
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

impl ConnectorConfig {
    /// Sink or source.
    pub fn kind(&self) -> ConnectorKind {
        match self {
            ConnectorConfig::Sink(_) => ConnectorKind::Sink,
            ConnectorConfig::Source(_) => ConnectorKind::Source,
        }
    }

    /// What every connector config has: key, version, plugin, transforms, error policy...
    pub fn common(&self) -> &ConnectorCommon {
        match self {
            ConnectorConfig::Sink(sink) => &sink.common,
            ConnectorConfig::Source(source) => &source.common,
        }
    }

    /// [`ConnectorConfig::common`], to change (a provider sets key and version when it
    /// stores a new version).
    pub fn common_mut(&mut self) -> &mut ConnectorCommon {
        match self {
            ConnectorConfig::Sink(sink) => &mut sink.common,
            ConnectorConfig::Source(source) => &mut source.common,
        }
    }

    /// The config as JSON with secret values replaced by `"******"`: values that came
    /// from `${env:...}` or `${file:...}`, and `plugin_config` fields (at any depth)
    /// whose names say they are secret (see [`crate::is_secret_field`]).
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        for path in &self.common().secrets {
            crate::secrets::redact_path(&mut value, path);
        }
        if let Some(plugin) = value.get_mut("plugin_config") {
            crate::secrets::redact_secret_fields(plugin);
        }
        value
    }

    /// Remembers the values of the `plugin_config` fields whose names say they are
    /// secret ([`crate::is_secret_field`]) for [`crate::scrub_secrets`], so that an error
    /// quoting one (a plugin's, say) shows `******`. Values from references were
    /// remembered when they were resolved.
    pub fn remember_secrets(&self) {
        if let Some(plugin) = &self.common().plugin_config {
            crate::secrets::remember_secret_fields(plugin);
        }
    }

    /// The plugin config, `{}` when the file has none (never `null`): what the plugin
    /// is opened with.
    pub fn plugin_config(&self) -> serde_json::Value {
        self.common()
            .plugin_config
            .clone()
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()))
    }

    /// Checks what the types cannot: the key's characters and at least one stream.
    pub fn validate(&self) -> Result<(), String> {
        let common = self.common();
        validate_key(&common.key)?;
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
        if common.error_policy == ErrorPolicy::DeadLetter && common.dead_letter.is_none() {
            return Err(
                "`error_policy`: \"dead_letter\" needs a [dead_letter] table with `stream` and `topic`"
                    .to_owned(),
            );
        }
        if common.retry.is_some_and(|retry| retry.max_attempts == 0) {
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
/// A `${file:...}` secret whose file others may access is logged as a warning.
pub fn parse_connector_toml(text: &str) -> Result<ConnectorConfig, String> {
    let value: toml::Value =
        toml::from_str(text).map_err(|error| format!("not valid TOML: {error}"))?;
    let (config, open_files) = from_toml_value(value, false)?;
    for open in &open_files {
        open.log(&config.common().key, config.common().version);
    }
    Ok(config)
}

/// A connector config from its flat table, its references resolved: a `${file:...}`
/// secret whose file its group or other users may access is an error when
/// `require_private_files`, and is returned, for the caller to warn about, otherwise.
pub(crate) fn from_toml_value(
    mut value: toml::Value,
    require_private_files: bool,
) -> Result<(ConnectorConfig, Vec<OpenSecretFile>), String> {
    let mut secrets = SecretPaths::new();
    let mut open_files = Vec::new();
    crate::secrets::resolve_toml(
        &mut value,
        "",
        require_private_files,
        &mut secrets,
        &mut open_files,
    )?;
    let toml::Value::Table(mut table) = value else {
        return Err("expected a table".to_owned());
    };
    // `type` is read here rather than through the tagged enum, which would report a
    // wrong one without naming the key.
    let kind = table.remove("type");
    let read = |expected: &str| {
        let raw = Raw::deserialize(toml::Value::Table(table))
            .map_err(|error| format!("not a config table: {error}"))?;
        Table::new(raw, "", expected).map_err(|error| error.to_string())
    };
    let mut config = match kind.as_ref().and_then(toml::Value::as_str) {
        Some("sink") => SinkConfig::read(&mut read("struct SinkConfig")?)
            .map(ConnectorConfig::Sink)
            .map_err(|error| error.to_string()),
        Some("source") => SourceConfig::read(&mut read("struct SourceConfig")?)
            .map(ConnectorConfig::Source)
            .map_err(|error| error.to_string()),
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
    config.common_mut().secrets = secrets;
    config.remember_secrets();
    Ok((config, open_files))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::overrides::apply_env_overrides;
    use crate::runtime::ConfigDuration;

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

    const SOURCE: &str = "type = \"source\"\nkey = \"r\"\nenabled = true\nversion = 1\nname = \"R\"\npath = \"p\"\n[[streams]]\nstream = \"a\"\ntopic = \"t\"\nschema = \"json\"\n";

    #[test]
    fn error_policy_defaults_to_fail_and_dead_letter_needs_a_target() {
        let ConnectorConfig::Sink(sink) = parse_connector_toml(SINK).unwrap() else {
            panic!("a sink");
        };
        assert_eq!(sink.common.error_policy, ErrorPolicy::Fail);
        assert_eq!(sink.common.retry, None);

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
        assert_eq!(sink.common.error_policy, ErrorPolicy::DeadLetter);
        assert_eq!(sink.common.dead_letter.unwrap().topic, "d");
        let retry = sink.common.retry.unwrap();
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
        let ConnectorConfig::Source(parsed) = parse_connector_toml(SOURCE).unwrap() else {
            panic!("a source");
        };
        assert_eq!(parsed.max_unsaved_sends, 1);
        let ConnectorConfig::Source(parsed) =
            parse_connector_toml(&format!("max_unsaved_sends = 8\n{SOURCE}")).unwrap()
        else {
            panic!("a source");
        };
        assert_eq!(parsed.max_unsaved_sends, 8);
        let error = parse_connector_toml(&format!("max_unsaved_sends = 0\n{SOURCE}")).unwrap_err();
        assert!(
            error.contains("`max_unsaved_sends`: must be at least 1"),
            "{error}"
        );

        let mut table: toml::Table = toml::from_str(SOURCE).unwrap();
        let env = BTreeMap::from([(
            "IGGY_CONNECTORS_SOURCE_R_MAX_UNSAVED_SENDS".to_owned(),
            "4".to_owned(),
        )]);
        apply_env_overrides(&mut table, ConnectorKind::Source, "r", &env).unwrap();
        assert_eq!(table["max_unsaved_sends"].as_integer(), Some(4));
    }

    #[test]
    fn verified_resume_is_on_by_default_and_comes_from_file_or_environment() {
        let ConnectorConfig::Source(parsed) = parse_connector_toml(SOURCE).unwrap() else {
            panic!("a source");
        };
        assert!(parsed.verified_resume);
        let ConnectorConfig::Source(parsed) =
            parse_connector_toml(&format!("verified_resume = false\n{SOURCE}")).unwrap()
        else {
            panic!("a source");
        };
        assert!(!parsed.verified_resume);

        let mut table: toml::Table = toml::from_str(SOURCE).unwrap();
        let env = BTreeMap::from([(
            "IGGY_CONNECTORS_SOURCE_R_VERIFIED_RESUME".to_owned(),
            "false".to_owned(),
        )]);
        apply_env_overrides(&mut table, ConnectorKind::Source, "r", &env).unwrap();
        assert_eq!(table["verified_resume"].as_bool(), Some(false));
        let error = parse_connector_toml(&format!("verified_resume = 1\n{SOURCE}")).unwrap_err();
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
            .common
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

    #[test]
    fn every_key_is_read_from_the_flat_table_and_unknown_ones_named_with_the_nearest() {
        for (text, kind_keys) in [
            (SINK, &["streams"][..]),
            (
                SOURCE,
                &["streams", "max_unsaved_sends", "verified_resume"][..],
            ),
        ] {
            // The fields every connector has and the kind's own, no other.
            let known: Vec<&str> = flat::struct_fields::<ConnectorCommon>()
                .iter()
                .chain(kind_keys)
                .copied()
                .collect();
            let error = parse_connector_toml(&format!("verbos = true\n{text}")).unwrap_err();
            let list: Vec<String> = known.iter().map(|key| format!("`{key}`")).collect();
            assert_eq!(
                error,
                format!(
                    "`verbos`: unknown field `verbos`, expected one of {}; did you mean `verbose`?",
                    list.join(", ")
                )
            );
        }
        let error = parse_connector_toml(&SINK.replace(
            "schema = \"json\"",
            "schema = \"json\"\navro_schema_jsn = \"x\"",
        ))
        .unwrap_err();
        assert!(
            error.starts_with("`streams[0].avro_schema_jsn`: unknown field `avro_schema_jsn`, expected one of `stream`, `topics`, `schema`, `avro_schema_json`")
                && error.ends_with("did you mean `avro_schema_json`?"),
            "{error}"
        );
        // A misspelt key is reported as such, not as the field it stands for missing.
        let error = parse_connector_toml(&SINK.replace("name =", "nam =")).unwrap_err();
        assert!(error.contains("did you mean `name`?"), "{error}");
        let error =
            parse_connector_toml(&SINK.replace("enabled = true", "enabled = \"yes\"")).unwrap_err();
        assert_eq!(
            error,
            "`enabled`: invalid type: string \"yes\", expected a boolean"
        );
    }

    #[test]
    fn the_flat_form_puts_the_kind_fields_where_upstream_files_have_them() {
        assert!(
            flat::struct_fields::<ConnectorCommon>().contains(&ConnectorCommon::KIND_FIELDS_AFTER),
            "the marker must be a field, or every common field lands before the streams"
        );
        let config = parse_connector_toml(&format!(
            "error_policy = \"skip\"\nmax_unsaved_sends = 3\nverified_resume = false\n{SOURCE}[plugin_config]\nx = 1\n"
        ))
        .unwrap();
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(
            json,
            r#"{"type":"source","key":"r","enabled":true,"version":1,"name":"R","path":"p","verbose":false,"benchmark":false,"streams":[{"stream":"a","topic":"t","schema":"json","batch_length":1000,"linger_time":"5ms"}],"max_unsaved_sends":3,"verified_resume":false,"error_policy":"skip","plugin_config":{"x":1}}"#
        );
        // Every field, the kind's own too, reads back as it was written.
        let text = toml::to_string(&config).unwrap();
        assert_eq!(parse_connector_toml(&text).unwrap(), config);
        let back: ConnectorConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }
}
