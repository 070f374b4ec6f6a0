//! The interface the runtime uses to read and change connector configs.

use std::collections::BTreeMap;

use async_trait::async_trait;
use connector_sdk::ConnectorKind;
use serde::{Deserialize, Serialize};

use crate::connector::ConnectorConfig;
use crate::load::Problem;

/// The active config of every connector, by kind and key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ActiveConfigs {
    /// Sinks by key.
    #[serde(default)]
    pub sinks: BTreeMap<String, ConnectorConfig>,
    /// Sources by key.
    #[serde(default)]
    pub sources: BTreeMap<String, ConnectorConfig>,
    /// The connectors whose active config cannot be used, with what is wrong: the
    /// runtime lists them with state `error` (none of them is in `sinks` or
    /// `sources`).
    #[serde(skip)]
    pub broken: Vec<BrokenConfig>,
}

/// A connector config that cannot be used, with what could be read of it, so that
/// its connector can be listed (state `error`, the problem as its `last_error`) while
/// the others run.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokenConfig {
    /// Sink or source, when the config says which (a config that does not is listed
    /// by no kind: `/ready` and the log name it).
    pub kind: Option<ConnectorKind>,
    /// The connector's key as written, or, when none can be read, the config's file
    /// name (or what the provider knows it by).
    pub key: String,
    /// Its version, when it could be read.
    pub version: Option<u64>,
    /// Its display name, as written (empty when unreadable).
    pub name: String,
    /// Its plugin, as written (empty when unreadable).
    pub path: String,
    /// What is wrong, naming the file (or URL) and key: the words `validate` uses.
    pub problem: Problem,
}

impl BrokenConfig {
    /// What could be read of `table` (a connector config's raw fields), broken by
    /// `problem`; `fallback_key` when no key can be read.
    pub(crate) fn from_fields(
        fields: Option<&serde_json::Value>,
        fallback_key: &str,
        problem: Problem,
    ) -> Self {
        // Its problem (a parser's words) may quote a secret field's value.
        if let Some(plugin_config) = fields.and_then(|fields| fields.get("plugin_config")) {
            crate::secrets::remember_secret_fields(plugin_config);
        }
        let text = |name: &str| {
            fields
                .and_then(|fields| fields.get(name))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        BrokenConfig {
            kind: match text("type").as_deref() {
                Some("sink") => Some(ConnectorKind::Sink),
                Some("source") => Some(ConnectorKind::Source),
                _ => None,
            },
            key: text("key")
                .filter(|key| !key.is_empty())
                .unwrap_or_else(|| fallback_key.to_owned()),
            version: fields
                .and_then(|fields| fields.get("version"))
                .and_then(serde_json::Value::as_u64),
            name: text("name").unwrap_or_default(),
            path: text("path").unwrap_or_default(),
            problem,
        }
    }

    /// A config that lists the connector (kind, key, name, path, version) and runs
    /// nothing: no streams, no plugin config. `None` when the kind is unknown.
    pub fn placeholder(&self) -> Option<ConnectorConfig> {
        let common = crate::connector::ConnectorCommon {
            key: self.key.clone(),
            enabled: true,
            version: self.version.unwrap_or_default(),
            name: self.name.clone(),
            path: self.path.clone(),
            ..Default::default()
        };
        Some(match self.kind? {
            ConnectorKind::Sink => ConnectorConfig::Sink(crate::connector::SinkConfig {
                common,
                streams: Vec::new(),
            }),
            ConnectorKind::Source => ConnectorConfig::Source(crate::connector::SourceConfig {
                common,
                streams: Vec::new(),
                max_unsaved_sends: 1,
                verified_resume: true,
            }),
        })
    }
}

/// The active version of every connector, by kind and key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ActiveVersions {
    /// Sinks by key.
    #[serde(default)]
    pub sinks: BTreeMap<String, u64>,
    /// Sources by key.
    #[serde(default)]
    pub sources: BTreeMap<String, u64>,
}

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// No such connector, or no such version of it.
    #[error("{kind} {key:?} has no config{}", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    NotFound {
        /// Sink or source.
        kind: ConnectorKind,
        /// The key.
        key: String,
        /// The version asked for, if any.
        version: Option<u64>,
    },
    /// The request itself is wrong (a bad key, a config of the wrong kind...).
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing the store failed.
    #[error("{0}")]
    Storage(String),
    /// The remote service failed or answered something unusable.
    #[error("{0}")]
    Remote(String),
}

/// Reads and changes connector configs. Every config has a key, unique per kind, and
/// versions; one version per connector is active.
#[async_trait]
pub trait ConfigProvider: Send + Sync {
    /// The active config of every connector.
    async fn active_configs(&self) -> Result<ActiveConfigs, ProviderError>;

    /// The active version of every connector.
    async fn active_versions(&self) -> Result<ActiveVersions, ProviderError> {
        let configs = self.active_configs().await?;
        Ok(ActiveVersions {
            sinks: configs
                .sinks
                .iter()
                .map(|(key, config)| (key.clone(), config.common().version))
                .collect(),
            sources: configs
                .sources
                .iter()
                .map(|(key, config)| (key.clone(), config.common().version))
                .collect(),
        })
    }

    /// Every version of a connector, oldest first.
    async fn versions(
        &self,
        kind: ConnectorKind,
        key: &str,
    ) -> Result<Vec<ConnectorConfig>, ProviderError>;

    /// One version of a connector.
    async fn version(
        &self,
        kind: ConnectorKind,
        key: &str,
        version: u64,
    ) -> Result<ConnectorConfig, ProviderError>;

    /// The active version of a connector.
    async fn active(
        &self,
        kind: ConnectorKind,
        key: &str,
    ) -> Result<ConnectorConfig, ProviderError>;

    /// Stores `config` as the next version of `key` (its own key and version are
    /// replaced) and returns what was stored. It does not activate it.
    async fn create(
        &self,
        kind: ConnectorKind,
        key: &str,
        config: ConnectorConfig,
    ) -> Result<ConnectorConfig, ProviderError>;

    /// Makes `version` the active one.
    async fn set_active(
        &self,
        kind: ConnectorKind,
        key: &str,
        version: u64,
    ) -> Result<(), ProviderError>;

    /// Deletes a version (the active one when `None`).
    async fn delete(
        &self,
        kind: ConnectorKind,
        key: &str,
        version: Option<u64>,
    ) -> Result<(), ProviderError>;
}

/// Checks that a request's key and config fit each other.
pub(crate) fn check_request(
    kind: ConnectorKind,
    key: &str,
    config: Option<&ConnectorConfig>,
) -> Result<(), ProviderError> {
    crate::connector::validate_key(key).map_err(ProviderError::Invalid)?;
    if let Some(config) = config
        && config.kind() != kind
    {
        return Err(ProviderError::Invalid(format!(
            "a {} config was given for {kind} {key:?}",
            config.kind()
        )));
    }
    Ok(())
}
