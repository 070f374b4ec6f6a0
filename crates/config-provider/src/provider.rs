//! The interface the runtime uses to read and change connector configs.

use std::collections::BTreeMap;

use async_trait::async_trait;
use connector_sdk::ConnectorKind;
use serde::{Deserialize, Serialize};

use crate::connector::ConnectorConfig;

/// The active config of every connector, by kind and key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ActiveConfigs {
    /// Sinks by key.
    #[serde(default)]
    pub sinks: BTreeMap<String, ConnectorConfig>,
    /// Sources by key.
    #[serde(default)]
    pub sources: BTreeMap<String, ConnectorConfig>,
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
