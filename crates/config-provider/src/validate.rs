//! Checks that need the whole config: values that are each well-formed but together
//! make no sense, and references to files.

use crate::load::{ConfigError, LoadedConfig, Problem};
use crate::runtime::ConnectorsConfig;

/// Validates and completes a loaded config (reads `iggy.token = "file:<path>"`).
pub(crate) fn validate(loaded: &mut LoadedConfig) -> Result<(), ConfigError> {
    let source = loaded.file.as_ref().map_or_else(
        || "configuration".to_owned(),
        |path| path.display().to_string(),
    );
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String| {
        problems.push(Problem {
            source: source.clone(),
            key: Some(key.to_owned()),
            message,
        });
    };
    let config = &mut loaded.config;

    if let Some(path) = config.iggy.token.strip_prefix("file:") {
        match std::fs::read_to_string(path) {
            Ok(token) if !token.trim().is_empty() => {
                config.iggy.token = token.trim().to_owned();
                loaded.secrets.insert("iggy.token".to_owned());
            }
            Ok(_) => problem("iggy.token", format!("the token file {path} is empty")),
            Err(error) => problem(
                "iggy.token",
                format!("cannot read the token file {path}: {error}"),
            ),
        }
    }
    let config = &loaded.config;
    if config.iggy.token.is_empty()
        && (config.iggy.username.is_empty() || config.iggy.password.is_empty())
    {
        problem(
            "iggy",
            "no credentials: set username and password, or token".to_owned(),
        );
    }
    if config.iggy.address.trim().is_empty() {
        problem("iggy.address", "is empty".to_owned());
    }
    if config.iggy.tls.enabled && config.iggy.tls.ca_file.is_empty() {
        problem(
            "iggy.tls.ca_file",
            "is required when iggy.tls.enabled is true".to_owned(),
        );
    }
    if config.http.tls.enabled {
        for (key, value) in [
            ("http.tls.cert_file", &config.http.tls.cert_file),
            ("http.tls.key_file", &config.http.tls.key_file),
        ] {
            if value.is_empty() {
                problem(key, "is required when http.tls.enabled is true".to_owned());
            }
        }
    }
    if config.telemetry.enabled {
        problem(
            "telemetry.enabled",
            "OpenTelemetry export is not supported by this runtime yet; set it to false".to_owned(),
        );
    }
    if let ConnectorsConfig::Http(http) = &config.connectors {
        if !(http.base_url.starts_with("http://") || http.base_url.starts_with("https://")) {
            problem(
                "connectors.base_url",
                format!(
                    "expected an http:// or https:// URL, got {:?}",
                    http.base_url
                ),
            );
        }
        if http.retry.max_attempts == 0 {
            problem(
                "connectors.retry.max_attempts",
                "must be at least 1".to_owned(),
            );
        }
        if http.retry.backoff_multiplier == 0 {
            problem(
                "connectors.retry.backoff_multiplier",
                "must be at least 1".to_owned(),
            );
        }
        if http.retry.initial_backoff > http.retry.max_backoff {
            problem(
                "connectors.retry.initial_backoff",
                format!(
                    "{} is longer than max_backoff ({})",
                    http.retry.initial_backoff, http.retry.max_backoff
                ),
            );
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { problems })
    }
}
