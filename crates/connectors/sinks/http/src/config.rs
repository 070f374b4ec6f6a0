//! The sink's `plugin_config`: upstream's keys and defaults, plus `tls_ca_file`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An HTTP method the sink may use.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    #[default]
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
}

impl HttpMethod {
    /// The method as hyper takes it.
    pub fn as_hyper(self) -> hyper::Method {
        match self {
            HttpMethod::Get => hyper::Method::GET,
            HttpMethod::Head => hyper::Method::HEAD,
            HttpMethod::Post => hyper::Method::POST,
            HttpMethod::Put => hyper::Method::PUT,
            HttpMethod::Patch => hyper::Method::PATCH,
            HttpMethod::Delete => hyper::Method::DELETE,
        }
    }
}

/// How the messages of a batch become requests.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BatchMode {
    /// One request per message, its JSON (or envelope) as the body
    /// (`application/json`).
    #[default]
    Individual,
    /// One request per batch, one JSON value per line (`application/x-ndjson`).
    #[serde(rename = "ndjson")]
    NdJson,
    /// One request per batch, a JSON array of the values (`application/json`).
    JsonArray,
    /// One request per message, the payload bytes as they are
    /// (`application/octet-stream`); `include_metadata` does not apply.
    Raw,
}

impl BatchMode {
    /// The `content-type` of this mode's requests.
    pub fn content_type(self) -> &'static str {
        match self {
            BatchMode::Individual | BatchMode::JsonArray => "application/json",
            BatchMode::NdJson => "application/x-ndjson",
            BatchMode::Raw => "application/octet-stream",
        }
    }

    /// Whether one request carries many messages.
    pub fn is_batch(self) -> bool {
        matches!(self, BatchMode::NdJson | BatchMode::JsonArray)
    }
}

/// The HTTP sink's `plugin_config` (upstream's keys and defaults).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// The endpoint, `http://` or `https://`, a template: `{stream}`, `{topic}` and
    /// `{partition}` are replaced by the batch's, `{header:<key>}` by a message header's
    /// value and `{field:<key>}` by a top-level field of a JSON payload (a string,
    /// number or boolean), each percent-encoded; consecutive messages with the same URL
    /// share a request in the batch modes. A message without the header or field is
    /// an error of that message.
    pub url: String,
    /// The request method.
    #[serde(default)]
    pub method: HttpMethod,
    /// Headers sent with every request (an `Authorization` token, say). A
    /// `Content-Type` here is ignored: the batch mode sets it.
    #[serde(default)]
    #[schemars(extend("x-secret" = true))]
    pub headers: BTreeMap<String, String>,
    /// How long one request (sending it and reading the answer) may take.
    #[serde(
        default = "default_timeout",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// The largest request body in bytes; 0 for no limit. A batch mode's body over
    /// it is split into several requests; one message over it is refused (an error of
    /// that message, for the connector's `error_policy`).
    #[serde(default = "default_max_payload_size_bytes")]
    pub max_payload_size_bytes: u64,
    /// How messages become requests.
    #[serde(default)]
    pub batch_mode: BatchMode,
    /// Wrap each payload as `{"metadata": {...}, "payload": ...}` with the message's
    /// id, offset, timestamp, stream, topic, partition and headers.
    #[serde(default = "default_true")]
    pub include_metadata: bool,
    /// Add the message checksum to the metadata (`iggy_checksum`).
    #[serde(default)]
    pub include_checksum: bool,
    /// Add the producer's timestamp to the metadata (`iggy_origin_timestamp`).
    #[serde(default)]
    pub include_origin_timestamp: bool,
    /// Send one request with `health_check_method` when the connector opens; an
    /// answer outside `success_status_codes` fails the opening.
    #[serde(default)]
    pub health_check_enabled: bool,
    /// The method of the health check.
    #[serde(default = "default_health_check_method")]
    pub health_check_method: HttpMethod,
    /// Retries of a request after a transient failure (a connection error, a timeout,
    /// 408, 429 or 5xx), before the batch goes back to the runtime as a retryable
    /// error (which retries it again under its own `[retry]` policy).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The pause before the first retry; it grows by `retry_backoff_multiplier` each
    /// time. A `Retry-After` answer (429, 503) sets the pause instead.
    #[serde(
        default = "default_retry_delay",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub retry_delay: Duration,
    /// The factor between successive pauses.
    #[serde(default = "default_backoff_multiplier")]
    pub retry_backoff_multiplier: u32,
    /// The longest pause between retries, `Retry-After` included.
    #[serde(
        default = "default_max_retry_delay",
        deserialize_with = "connector_sdk::duration::deserialize",
        serialize_with = "connector_sdk::duration::serialize"
    )]
    #[schemars(with = "String")]
    pub max_retry_delay: Duration,
    /// The answers that mean delivered.
    #[serde(default = "default_success_status_codes")]
    pub success_status_codes: Vec<u16>,
    /// Accept any server certificate (no verification at all): for tests only.
    #[serde(default)]
    pub tls_danger_accept_invalid_certs: bool,
    /// A PEM file of CA certificates to trust for `https` instead of the public roots
    /// (a private CA).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Speak HTTP/2 from the first byte, without negotiating it (not upstream's):
    /// h2c for `http://` endpoints that take it; an `https://` endpoint must then
    /// choose `h2`. Without it, HTTP/2 is used when a TLS server offers it by ALPN, and
    /// HTTP/1.1 otherwise.
    #[serde(default)]
    pub http2_prior_knowledge: bool,
    /// Idle connections kept open for reuse per host.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Log every request and answer (at debug level).
    #[serde(default)]
    pub verbose_logging: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_payload_size_bytes() -> u64 {
    10 * 1024 * 1024
}

fn default_true() -> bool {
    true
}

fn default_health_check_method() -> HttpMethod {
    HttpMethod::Head
}

fn default_max_retries() -> u32 {
    3
}

fn default_retry_delay() -> Duration {
    Duration::from_secs(1)
}

fn default_backoff_multiplier() -> u32 {
    2
}

fn default_max_retry_delay() -> Duration {
    Duration::from_secs(30)
}

fn default_success_status_codes() -> Vec<u16> {
    vec![200, 201, 202, 204]
}

fn default_max_connections() -> usize {
    10
}

/// Every problem with `config` that needs no I/O, each naming its key.
pub fn check(config: &HttpSinkConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(problem) = crate::url::UrlTemplate::parse(&config.url) {
        problems.push(format!("plugin_config.url: {problem}"));
    }
    for (name, value) in &config.headers {
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(format!(
                "plugin_config.headers: {name:?} is not a valid header name"
            ));
        }
        // The value is a secret: say what is wrong, not what it is.
        if hyper::header::HeaderValue::from_str(value).is_err() {
            problems.push(format!(
                "plugin_config.headers.{name}: the value has characters a header cannot carry"
            ));
        }
    }
    if config.success_status_codes.is_empty() {
        problems.push(
            "plugin_config.success_status_codes: must not be empty (nothing could succeed)"
                .to_owned(),
        );
    }
    for code in &config.success_status_codes {
        if !(100..=599).contains(code) {
            problems.push(format!(
                "plugin_config.success_status_codes: {code} is not an HTTP status (100 to 599)"
            ));
        }
    }
    if config.retry_backoff_multiplier == 0 {
        problems.push("plugin_config.retry_backoff_multiplier: must be at least 1".to_owned());
    }
    if config.retry_delay > config.max_retry_delay {
        problems.push(format!(
            "plugin_config.retry_delay ({}) is longer than plugin_config.max_retry_delay ({})",
            connector_sdk::duration::format_duration(config.retry_delay),
            connector_sdk::duration::format_duration(config.max_retry_delay)
        ));
    }
    if config.timeout.is_zero() {
        problems.push("plugin_config.timeout: must be longer than zero".to_owned());
    }
    if config.max_connections == 0 {
        problems.push("plugin_config.max_connections: must be at least 1".to_owned());
    }
    if config.tls_danger_accept_invalid_certs && config.tls_ca_file.is_some() {
        problems.push(
            "plugin_config.tls_ca_file: has no effect with tls_danger_accept_invalid_certs = true; set one of them"
                .to_owned(),
        );
    }
    problems
}

/// The URL without its user info (`user:password@`), for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..scheme_end + 3], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn user_info_is_hidden_in_urls() {
        assert_eq!(
            redact_url("https://user:pw@host:8/p?q=a@b"),
            "https://***@host:8/p?q=a@b"
        );
        assert_eq!(redact_url("http://host/a@b"), "http://host/a@b");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
