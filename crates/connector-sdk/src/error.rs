//! The error a connector returns, and how it crosses the ABI.

use serde::de::DeserializeOwned;

use crate::abi;

/// What kind of failure a connector reports; the runtime's retry policy depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A passing failure (a lost connection, a timeout): the call is worth retrying.
    Retryable,
    /// Retrying will not help (bad data, a rejected request).
    Permanent,
    /// The connector's configuration is invalid.
    InvalidConfig,
}

/// An error reported by a connector.
///
/// ```
/// use connector_sdk::{Error, ErrorKind};
/// let error = Error::retryable("database connection lost");
/// assert_eq!(error.kind(), ErrorKind::Retryable);
/// assert_eq!(error.to_string(), "database connection lost");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Retryable, message)
    }

    /// A failure that retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Permanent, message)
    }

    /// An invalid configuration.
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidConfig, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The ABI status code for this error.
    pub fn status(&self) -> i32 {
        match self.kind {
            ErrorKind::Retryable => abi::STATUS_RETRYABLE,
            ErrorKind::Permanent => abi::STATUS_PERMANENT,
            ErrorKind::InvalidConfig => abi::STATUS_INVALID_CONFIG,
        }
    }
}

impl From<std::io::Error> for Error {
    /// I/O errors are treated as passing: the runtime retries them.
    fn from(error: std::io::Error) -> Self {
        Error::retryable(error.to_string())
    }
}

/// Deserialises a connector's `plugin_config` JSON into its config type.
///
/// The error names the offending field with its path from `plugin_config`.
///
/// ```
/// #[derive(serde::Deserialize, Debug)]
/// struct Config { interval: u64 }
/// let error = connector_sdk::parse_config::<Config>(r#"{"interval": "fast"}"#).unwrap_err();
/// assert!(error.to_string().contains("plugin_config.interval"), "{error}");
/// ```
pub fn parse_config<C: DeserializeOwned>(json: &str) -> Result<C, Error> {
    let deserializer = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let location = if path == "." {
            "plugin_config".to_owned()
        } else {
            format!("plugin_config.{path}")
        };
        Error::invalid_config(format!("{location}: {}", error.inner()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        path: String,
        range: [u32; 2],
    }

    #[test]
    fn config_errors_name_the_field() {
        let missing = parse_config::<Config>(r#"{"range": [1, 2]}"#).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::InvalidConfig);
        assert!(
            missing.message().contains("missing field `path`"),
            "{missing}"
        );

        let wrong_type = parse_config::<Config>(r#"{"path": "x", "range": [1, "y"]}"#).unwrap_err();
        assert!(
            wrong_type.message().starts_with("plugin_config.range[1]:"),
            "{wrong_type}"
        );

        let unknown =
            parse_config::<Config>(r#"{"path": "x", "range": [1, 2], "pth": 1}"#).unwrap_err();
        assert!(
            unknown.message().contains("unknown field `pth`"),
            "{unknown}"
        );

        let null = parse_config::<Config>("null").unwrap_err();
        assert!(null.message().starts_with("plugin_config:"), "{null}");
    }

    #[test]
    fn kinds_map_to_distinct_statuses() {
        assert_eq!(Error::retryable("x").status(), abi::STATUS_RETRYABLE);
        assert_eq!(Error::permanent("x").status(), abi::STATUS_PERMANENT);
        assert_eq!(
            Error::invalid_config("x").status(),
            abi::STATUS_INVALID_CONFIG
        );
    }
}
