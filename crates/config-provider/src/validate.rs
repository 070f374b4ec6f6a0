//! Checks that need the whole config: values that are each well-formed but together
//! make no sense, and references to files.
//!
//! Each problem is reported under what set the value at fault ([`Origins::blame`]):
//! the environment variable when one did, so that a problem caused by a variable names
//! exactly that variable, and says which key (and variable) to set to fix it.

use crate::load::{ConfigError, LoadedConfig, Origins, Problem, variable_of};
use crate::runtime::ConnectorsConfig;

/// `key` and its variable, as messages name a key to set: `iggy.tls.ca_file
/// (IGGY_CONNECTORS_IGGY_TLS_CA_FILE)`.
fn key_and_variable(key: &str) -> String {
    format!("{key} ({})", variable_of(key))
}

/// Validates and completes a loaded config (reads `iggy.token = "file:<path>"`).
pub(crate) fn validate(loaded: &mut LoadedConfig, origins: &Origins) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    // A problem about `keys`, reported under the one a variable (else the file) set.
    let mut problem = |keys: &[&str], message: String| {
        let (source, key) = origins.blame(keys);
        problems.push(Problem {
            source,
            key: Some(key.to_owned()),
            message,
        });
    };
    let config = &mut loaded.config;

    if let Some(path) = config.iggy.token.strip_prefix("file:") {
        let private = config.secrets.require_private_files;
        match crate::secrets::read_secret_file(path, "iggy.token", private) {
            Ok(token) if !token.value.trim().is_empty() => {
                if let Some(open) = token.open_file {
                    let (source, _) = origins.blame(&["iggy.token"]);
                    loaded.warnings.push(Problem {
                        source,
                        key: Some("iggy.token".to_owned()),
                        message: open.warning(),
                    });
                }
                config.iggy.token = token.value.trim().to_owned();
                loaded.secrets.insert("iggy.token".to_owned());
            }
            Ok(_) => problem(&["iggy.token"], format!("the token file {path} is empty")),
            Err(message) => problem(&["iggy.token"], message),
        }
    }
    let config = &loaded.config;
    if config.iggy.token.is_empty()
        && (config.iggy.username.is_empty() || config.iggy.password.is_empty())
    {
        // The defaults have both, so what emptied one of them is at fault.
        let emptied: Vec<&str> = [
            ("iggy.username", &config.iggy.username),
            ("iggy.password", &config.iggy.password),
        ]
        .into_iter()
        .filter(|(_, value)| value.is_empty())
        .map(|(key, _)| key)
        .collect();
        problem(
            &emptied,
            format!(
                "is empty and no token is set: no credentials; set {} and {}, or {}",
                key_and_variable("iggy.username"),
                key_and_variable("iggy.password"),
                key_and_variable("iggy.token"),
            ),
        );
    }
    if config.iggy.address.trim().is_empty() {
        problem(
            &["iggy.address"],
            "is empty: set it to Iggy's host:port".to_owned(),
        );
    }
    if config.iggy.tls.enabled && config.iggy.tls.ca_file.is_empty() {
        // Reported under what enabled TLS: that is what the user set, and the one
        // message says what else to set.
        problem(
            &["iggy.tls.enabled", "iggy.tls.ca_file"],
            format!(
                "TLS to Iggy needs the CA certificate that signed the server's: set {} to its PEM file",
                key_and_variable("iggy.tls.ca_file")
            ),
        );
    }
    if config.http.tls.enabled {
        let missing: Vec<String> = [
            ("http.tls.cert_file", &config.http.tls.cert_file),
            ("http.tls.key_file", &config.http.tls.key_file),
        ]
        .into_iter()
        .filter(|(_, value)| value.is_empty())
        .map(|(key, _)| key_and_variable(key))
        .collect();
        if !missing.is_empty() {
            problem(
                &["http.tls.enabled"],
                format!(
                    "serving the API over TLS needs a certificate chain and its private key (PEM): set {}",
                    missing.join(" and ")
                ),
            );
        }
    }
    let http = &config.http;
    if http.enabled
        && http.api_key.is_empty()
        && !http.allow_unauthenticated
        && !is_loopback(&http.address)
    {
        // Blamed on the address: moving the API off loopback is what opened it.
        problem(
            &["http.address", "http.enabled"],
            format!(
                "serves the HTTP API on {} with no api key: anyone who can reach it can make the runtime load any library (running its code) and point a sink at any file; set {} (from a secret, e.g. \"${{file:/run/secrets/api_key}}\"), or set {} = true to accept that knowingly",
                http.address,
                key_and_variable("http.api_key"),
                key_and_variable("http.allow_unauthenticated"),
            ),
        );
    }
    if http.enabled
        && http.cors.enabled
        && http.api_key.is_empty()
        && http.cors.allowed_origins.iter().any(|origin| origin == "*")
    {
        problem(
            &["http.cors.allowed_origins", "http.cors.enabled"],
            format!(
                "allows every origin with no api key: any web page its users open could change configs through the API; list the origins that may ({}), or set {}",
                key_and_variable("http.cors.allowed_origins"),
                key_and_variable("http.api_key"),
            ),
        );
    }
    if http.max_connections == 0 {
        problem(
            &["http.max_connections"],
            "must be at least 1: with 0 every connection is closed".to_owned(),
        );
    }
    for (key, value) in [
        ("http.header_read_timeout", http.header_read_timeout),
        ("http.request_timeout", http.request_timeout),
    ] {
        if value.get().is_zero() {
            problem(
                &[key],
                "must be longer than 0s: every request would time out".to_owned(),
            );
        }
    }
    let cluster = &config.cluster;
    if cluster.enabled {
        for (key, value) in [
            ("cluster.name", &cluster.name),
            ("cluster.stream", &cluster.stream),
            ("cluster.topic", &cluster.topic),
            ("cluster.state_topic", &cluster.state_topic),
        ] {
            if value.trim().is_empty() || value.len() > 255 {
                problem(
                    &[key],
                    format!("must be 1 to 255 characters, got {value:?}"),
                );
            }
        }
        if cluster.topic == cluster.state_topic {
            problem(
                &["cluster.state_topic", "cluster.topic"],
                format!(
                    "is the coordination topic too ({:?}): state records there would be read as nothing else, but the two need their own topics",
                    cluster.topic
                ),
            );
        }
        if !(1..=1000).contains(&cluster.partitions) {
            problem(
                &["cluster.partitions"],
                format!("must be 1 to 1000, got {}", cluster.partitions),
            );
        }
        let retention = cluster.state_retention.get();
        if !retention.is_zero() && retention < std::time::Duration::from_secs(60) {
            problem(
                &["cluster.state_retention"],
                format!(
                    "must be 0s (records never expire) or at least 1m, got {}: a source's state could expire between two of its batches",
                    cluster.state_retention
                ),
            );
        }
        if cluster.sync_interval.get().is_zero() {
            problem(
                &["cluster.sync_interval"],
                "must be longer than 0s".to_owned(),
            );
        }
        if cluster.fence_timeout.get() < cluster.sync_interval.get().saturating_mul(2) {
            problem(
                &["cluster.fence_timeout", "cluster.sync_interval"],
                format!(
                    "fence_timeout ({}) must be at least twice sync_interval ({}): a member that gains a source waits fence_timeout, long enough for the member that had it to hear it lost it",
                    cluster.fence_timeout, cluster.sync_interval
                ),
            );
        }
    }
    if config.telemetry.enabled {
        problem(
            &["telemetry.enabled"],
            "OpenTelemetry export is not supported by this runtime yet; set it to false".to_owned(),
        );
    }
    if let ConnectorsConfig::Http(http) = &config.connectors {
        if !(http.base_url.starts_with("http://") || http.base_url.starts_with("https://")) {
            problem(
                &["connectors.base_url"],
                format!(
                    "expected an http:// or https:// URL, got {:?}",
                    http.base_url
                ),
            );
        }
        if http.retry.max_attempts == 0 {
            problem(
                &["connectors.retry.max_attempts"],
                "must be at least 1".to_owned(),
            );
        }
        if http.retry.backoff_multiplier == 0 {
            problem(
                &["connectors.retry.backoff_multiplier"],
                "must be at least 1".to_owned(),
            );
        }
        if http.retry.initial_backoff > http.retry.max_backoff {
            problem(
                &[
                    "connectors.retry.initial_backoff",
                    "connectors.retry.max_backoff",
                ],
                format!(
                    "initial_backoff ({}) is longer than max_backoff ({}): lower the first or raise the second",
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

/// Whether `address` (`host:port`) only accepts connections from this machine: a
/// loopback IP or `localhost`. Anything else, a host name included, may not.
pub(crate) fn is_loopback(address: &str) -> bool {
    if let Ok(socket) = address.parse::<std::net::SocketAddr>() {
        return socket.ip().is_loopback();
    }
    address
        .rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn only_loopback_addresses_and_localhost_count_as_loopback() {
        for address in [
            "127.0.0.1:8081",
            "127.1.2.3:1",
            "[::1]:8081",
            "localhost:8081",
        ] {
            assert!(is_loopback(address), "{address}");
        }
        for address in [
            "0.0.0.0:8081",
            "[::]:8081",
            "10.0.0.5:8081",
            "api.example:8081",
            "8081",
        ] {
            assert!(!is_loopback(address), "{address}");
        }
    }
}
