//! The source's `plugin_config`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The HTTP (webhook) source's `plugin_config`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// The address to listen on, `host:port` (`0.0.0.0:8080` for every interface).
    pub address: String,
    /// The paths that take `POST`s (`/hooks/github`); empty: every path.
    #[serde(default)]
    pub paths: Vec<String>,
    /// The largest request body in bytes; a larger one is answered 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// A bearer token every request must carry (`Authorization: Bearer <token>`).
    #[serde(default)]
    #[schemars(extend("x-secret" = true))]
    pub auth_token: Option<String>,
    /// The header that carries `shared_secret` (`X-Webhook-Secret`, say).
    #[serde(default)]
    pub shared_secret_header: Option<String>,
    /// The value every request must carry in `shared_secret_header`.
    #[serde(default)]
    #[schemars(extend("x-secret" = true))]
    pub shared_secret: Option<String>,
    /// The key of HMAC-SHA256 body signatures; set, every request must be signed.
    #[serde(default)]
    #[schemars(extend("x-secret" = true))]
    pub hmac_secret: Option<String>,
    /// The header with the signature (GitHub's by default).
    #[serde(default = "default_hmac_header")]
    pub hmac_header: String,
    /// What precedes the signature's hex digits in `hmac_header`.
    #[serde(default = "default_hmac_prefix")]
    pub hmac_prefix: String,
    /// The request header whose value becomes the message id, so that a client
    /// retrying the same request makes the same message id; empty: none.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// Request headers copied onto every message of the request (as string headers).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Messages per batch the runtime sends to Iggy at most (a request is never split:
    /// one larger request makes a batch of its own).
    #[serde(default = "default_max_batch_messages")]
    pub max_batch_messages: usize,
    /// Bytes of request bodies waiting for the runtime at most; past it, requests are
    /// answered 503 with `Retry-After` (backpressure, bounded memory).
    #[serde(default = "default_max_queued_bytes")]
    pub max_queued_bytes: usize,
    /// How long a request may wait for the runtime to take it (it does not while the
    /// connector is paused or Iggy is slow); then 503 with `Retry-After`, and nothing
    /// of it is stored.
    #[serde(
        default = "default_queue_timeout",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub queue_timeout: Duration,
    /// How long a request taken by the runtime may wait for Iggy to store it; then 503
    /// (it may still be stored: a client that retries with the same idempotency key
    /// makes the same message id).
    #[serde(
        default = "default_ack_timeout",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub ack_timeout: Duration,
    /// The `Retry-After` of a 503, in whole seconds.
    #[serde(default = "default_retry_after_secs")]
    pub retry_after_secs: u32,
    /// A PEM certificate chain: serve HTTPS (with `tls_key_file`).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

fn default_max_body_bytes() -> usize {
    10 * 1024 * 1024
}

fn default_hmac_header() -> String {
    "X-Hub-Signature-256".to_owned()
}

fn default_hmac_prefix() -> String {
    "sha256=".to_owned()
}

fn default_idempotency_header() -> String {
    "Idempotency-Key".to_owned()
}

fn default_max_batch_messages() -> usize {
    1000
}

fn default_max_queued_bytes() -> usize {
    64 * 1024 * 1024
}

fn default_queue_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_ack_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_retry_after_secs() -> u32 {
    1
}

/// Every problem with `config` that needs no I/O, each naming its key.
pub fn check(config: &HttpSourceConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if config.address.parse::<std::net::SocketAddr>().is_err()
        && config
            .address
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        problems.push(format!(
            "plugin_config.address: expected host:port, got {:?}",
            config.address
        ));
    }
    for path in &config.paths {
        if !path.starts_with('/') {
            problems.push(format!("plugin_config.paths: {path:?} must start with '/'"));
        }
    }
    if config.shared_secret.is_some() != config.shared_secret_header.is_some() {
        problems.push(
            "plugin_config.shared_secret_header and plugin_config.shared_secret go together: set both or neither"
                .to_owned(),
        );
    }
    for (key, value) in [
        ("auth_token", &config.auth_token),
        ("shared_secret", &config.shared_secret),
        ("hmac_secret", &config.hmac_secret),
    ] {
        if value.as_deref().is_some_and(str::is_empty) {
            problems.push(format!(
                "plugin_config.{key}: empty (unset it to turn it off)"
            ));
        }
    }
    for (key, name) in [
        ("hmac_header", Some(&config.hmac_header)),
        ("shared_secret_header", config.shared_secret_header.as_ref()),
    ] {
        if let Some(name) = name
            && hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            problems.push(format!(
                "plugin_config.{key}: {name:?} is not a header name"
            ));
        }
    }
    for name in &config.forward_headers {
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(format!(
                "plugin_config.forward_headers: {name:?} is not a header name"
            ));
        }
    }
    if config.max_body_bytes == 0 {
        problems.push("plugin_config.max_body_bytes: must be at least 1".to_owned());
    }
    if config.max_batch_messages == 0 {
        problems.push("plugin_config.max_batch_messages: must be at least 1".to_owned());
    }
    if config.max_queued_bytes < config.max_body_bytes {
        problems.push(format!(
            "plugin_config.max_queued_bytes ({}) is smaller than plugin_config.max_body_bytes ({}): the largest request could never be queued",
            config.max_queued_bytes, config.max_body_bytes
        ));
    }
    if config.tls_cert_file.is_some() != config.tls_key_file.is_some() {
        problems.push(
            "plugin_config.tls_cert_file and plugin_config.tls_key_file go together: set both or neither"
                .to_owned(),
        );
    }
    problems
}
