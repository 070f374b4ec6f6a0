//! The `http` sink: sends messages to an HTTP endpoint.
//!
//! Upstream's `plugin_config` keys and defaults (see [`HttpSinkConfig`]); its config
//! files load unchanged. What differs is what happens to a message that does not get
//! through: upstream logs and drops it, this sink loses nothing.
//!
//! - `batch_mode`: `individual` (one request per message, the default), `ndjson` and
//!   `json_array` (one request per batch, split where `max_payload_size_bytes` says),
//!   `raw` (one request per message with the payload bytes as they are).
//! - `include_metadata` wraps each payload as `{"metadata": {...}, "payload": ...}`,
//!   upstream's envelope; a payload that is not JSON (nor text, for a `text` stream)
//!   becomes `{"data": "<base64>", "iggy_payload_encoding": "base64"}`.
//! - An answer in `success_status_codes` is delivery. A connection error, a timeout,
//!   408, 429 or 5xx is transient: retried up to `max_retries` times, waiting what a
//!   `Retry-After` says (429, 503) or else the growing backoff, then handed back to the
//!   runtime as a **retryable** error, so the runtime retries the batch under its
//!   `[retry]` policy and, when that runs out, applies the connector's `error_policy`
//!   (`fail`, the default, stops the connector without committing the batch: nothing
//!   is lost). Any other answer is the message's fault: a **permanent** error naming
//!   the offsets, the status and the start of the answer's body; under `skip` or
//!   `dead_letter` the runtime then retries a failed batch message by message, which
//!   isolates the bad messages of an `ndjson` or `json_array` request.
//! - `url` is a template: `{stream}`, `{topic}`, `{partition}`, `{header:<key>}` and
//!   `{field:<key>}` (a top-level field of a JSON payload), for fan-out to per-tenant
//!   endpoints; consecutive messages with the same URL share a request.
//! - `tls_ca_file` (not upstream's) trusts a private CA instead of the public roots.
//!
//! Connections come from hyper-util's pool (keep-alive, `max_connections` idle ones per
//! host), over rustls for `https`. HTTP/2 when a TLS server offers it by ALPN (one
//! connection per host, multiplexed), or from the first byte with
//! `http2_prior_knowledge` (h2c); HTTP/1.1 otherwise.
//!
//! `consume` returns only once every request of the batch was answered with success,
//! so a batch the runtime commits was accepted by the endpoint. Requests of a batch go
//! one after another, in offset order.

mod body;
mod client;
mod config;
mod url;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::{StatusCode, Uri};

pub use body::{Encoder, Request};
pub use config::{BatchMode, HttpMethod, HttpSinkConfig, redact_url};

/// How much of an error answer's body goes into the error (and so the log, the status
/// and a dead letter).
const EXCERPT_BYTES: usize = 500;

/// Sends messages to an HTTP endpoint.
pub struct HttpSink {
    config: HttpSinkConfig,
    key: String,
    client: client::HttpClient,
    encoder: Encoder,
    headers: HeaderMap,
    url: url::UrlTemplate,
    stats: Stats,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers may carry tokens: never printed.
        f.debug_struct("HttpSink")
            .field("key", &self.key)
            .field("url", &redact_url(&self.config.url))
            .field("batch_mode", &self.config.batch_mode)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Stats {
    requests: u64,
    retries: u64,
    delivered: u64,
}

/// What one request came to.
enum Attempt {
    Delivered,
    /// Worth trying again: the reason, and the pause the server asked for.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The endpoint refused the request for good.
    Refused {
        status: StatusCode,
        excerpt: String,
    },
}

impl HttpSink {
    /// Sends one request, retrying transient failures; the error says why it did not
    /// get through and whether the runtime may retry it.
    async fn send(&mut self, uri: &Uri, request: &Request) -> Result<(), Error> {
        let mut backoff = self.config.retry_delay;
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.stats.requests += 1;
            let (reason, retry_after) = match self.attempt(uri, request.body.clone()).await {
                Attempt::Delivered => {
                    self.stats.delivered += request.count as u64;
                    return Ok(());
                }
                Attempt::Refused { status, excerpt } => {
                    return Err(Error::permanent(format!(
                        "{} {} refused offsets {}..={} with HTTP {status}: {excerpt}",
                        self.config.method.as_hyper(),
                        redact_url(&uri.to_string()),
                        request.first,
                        request.last
                    )));
                }
                Attempt::Transient {
                    reason,
                    retry_after,
                } => (reason, retry_after),
            };
            if attempts > self.config.max_retries {
                return Err(Error::retryable(format!(
                    "offsets {}..={} not delivered after {attempts} attempts: {reason}",
                    request.first, request.last
                )));
            }
            // The server's own figure wins over the backoff, within max_retry_delay: a
            // longer wait is better spent by the runtime's retry (which sees the error).
            let pause = retry_after
                .unwrap_or(backoff)
                .min(self.config.max_retry_delay);
            tracing::warn!(
                connector = %self.key,
                first = request.first,
                last = request.last,
                attempt = attempts,
                error = %reason,
                pause_ms = pause.as_millis() as u64,
                "request failed; retrying"
            );
            self.stats.retries += 1;
            tokio::time::sleep(pause).await;
            backoff = backoff
                .saturating_mul(self.config.retry_backoff_multiplier)
                .min(self.config.max_retry_delay);
        }
    }

    /// One request and its answer, within `timeout`.
    async fn attempt(&self, uri: &Uri, body: Bytes) -> Attempt {
        let method = self.config.method.as_hyper();
        let mut builder = hyper::Request::builder()
            .method(method.clone())
            .uri(uri.clone());
        if let Some(headers) = builder.headers_mut() {
            headers.extend(self.headers.clone());
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(self.config.batch_mode.content_type()),
            );
        }
        let length = body.len();
        let request = match builder.body(Full::new(body)) {
            Ok(request) => request,
            Err(error) => {
                return Attempt::Refused {
                    status: StatusCode::BAD_REQUEST,
                    excerpt: format!("the request cannot be built: {error}"),
                };
            }
        };
        if self.config.verbose_logging {
            tracing::debug!(connector = %self.key, %method, url = %redact_url(&uri.to_string()), bytes = length, "sending");
        }
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let version = response.version();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(parse_retry_after);
            // Read the answer to its end: a connection goes back to the pool only then.
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, version, retry_after, body))
        };
        let (status, version, retry_after, body) =
            match tokio::time::timeout(self.config.timeout, exchange).await {
                Err(_) => {
                    return Attempt::Transient {
                        reason: format!(
                            "no answer within {}",
                            connector_sdk::duration::format_duration(self.config.timeout)
                        ),
                        retry_after: None,
                    };
                }
                Ok(Err(error)) => {
                    return Attempt::Transient {
                        reason: error_chain(error.as_ref()),
                        retry_after: None,
                    };
                }
                Ok(Ok(answer)) => answer,
            };
        if self.config.verbose_logging {
            tracing::debug!(connector = %self.key, status = status.as_u16(), version = ?version, bytes = body.len(), "answered");
        }
        if self.config.success_status_codes.contains(&status.as_u16()) {
            return Attempt::Delivered;
        }
        let excerpt = excerpt(&body);
        if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            return Attempt::Transient {
                reason: format!("HTTP {status}: {excerpt}"),
                retry_after,
            };
        }
        Attempt::Refused { status, excerpt }
    }
}

impl Sink for HttpSink {
    type Config = HttpSinkConfig;

    fn check_config(config: &HttpSinkConfig) -> Vec<String> {
        config::check(config)
    }

    async fn open(config: HttpSinkConfig, context: ConnectorContext) -> Result<Self, Error> {
        if let Some(problem) = config::check(&config).into_iter().next() {
            return Err(Error::invalid_config(problem));
        }
        let client = client::build(&config).map_err(Error::invalid_config)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            if name.eq_ignore_ascii_case("content-type") {
                tracing::warn!(connector = %context.key, content_type = config.batch_mode.content_type(), "a Content-Type in plugin_config.headers is ignored: the batch mode sets it");
                continue;
            }
            // check_config vetted both; these cannot fail.
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                return Err(Error::invalid_config(format!(
                    "plugin_config.headers.{name}: not a valid header"
                )));
            };
            headers.append(name, value);
        }
        if config.tls_danger_accept_invalid_certs {
            tracing::warn!(connector = %context.key, "tls_danger_accept_invalid_certs: TLS certificates are NOT verified");
        }
        let url = url::UrlTemplate::parse(&config.url)
            .map_err(|problem| Error::invalid_config(format!("plugin_config.url: {problem}")))?;
        let sink = HttpSink {
            encoder: Encoder::new(&config),
            key: context.key,
            client,
            headers,
            url,
            stats: Stats::default(),
            config,
        };
        if sink.config.health_check_enabled {
            sink.health_check().await?;
        }
        tracing::info!(
            connector = %sink.key,
            url = %redact_url(&sink.config.url),
            method = %sink.config.method.as_hyper(),
            batch_mode = ?sink.config.batch_mode,
            "http sink opened"
        );
        Ok(sink)
    }

    async fn consume(&mut self, batch: MessageBatch<'_>) -> Result<(), Error> {
        if batch.messages.is_empty() {
            return Ok(());
        }
        // Everything is encoded before anything is sent: a message that cannot go (no
        // value for the URL, too large) fails the batch before any of it was sent.
        let mut plan = Vec::new();
        for (uri, run) in self.url.runs(&batch)? {
            for request in self.encoder.requests(&run)? {
                plan.push((uri.clone(), request));
            }
        }
        for (uri, request) in &plan {
            self.send(uri, request).await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), Error> {
        tracing::info!(
            connector = %self.key,
            requests = self.stats.requests,
            retries = self.stats.retries,
            delivered = self.stats.delivered,
            "http sink closed"
        );
        Ok(())
    }
}

impl HttpSink {
    /// `health_check_enabled`: one request with no body, which must succeed.
    async fn health_check(&self) -> Result<(), Error> {
        let url::UrlTemplate::Fixed(uri) = &self.url else {
            // A templated URL names no one endpoint to check.
            tracing::warn!(connector = %self.key, "health check skipped: the URL has placeholders");
            return Ok(());
        };
        let mut builder = hyper::Request::builder()
            .method(self.config.health_check_method.as_hyper())
            .uri(uri.clone());
        if let Some(headers) = builder.headers_mut() {
            headers.extend(self.headers.clone());
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|error| Error::invalid_config(format!("health check request: {error}")))?;
        let answer = tokio::time::timeout(self.config.timeout, async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
        })
        .await;
        let url = redact_url(&self.config.url);
        match answer {
            Err(_) => Err(Error::retryable(format!(
                "health check of {url}: no answer within {}",
                connector_sdk::duration::format_duration(self.config.timeout)
            ))),
            Ok(Err(error)) => Err(Error::retryable(format!(
                "health check of {url}: {}",
                error_chain(error.as_ref())
            ))),
            Ok(Ok((status, _))) if self.config.success_status_codes.contains(&status.as_u16()) => {
                tracing::info!(connector = %self.key, status = status.as_u16(), "health check passed");
                Ok(())
            }
            Ok(Ok((status, body))) => Err(Error::retryable(format!(
                "health check of {url}: HTTP {status}: {}",
                excerpt(&body)
            ))),
        }
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The start of an answer's body, as text, for errors.
fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(EXCERPT_BYTES)];
    let text = String::from_utf8_lossy(cut);
    let mut text = text.trim().replace(['\n', '\r'], " ");
    if body.len() > EXCERPT_BYTES {
        text.push_str("...");
    }
    if text.is_empty() {
        text.push_str("(empty body)");
    }
    text
}

/// An error and its sources, on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

connector_sdk::export_sink!(HttpSink, "http");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH);
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let pause = parse_retry_after(&later).unwrap_or_default();
        assert!(pause > Duration::from_secs(100), "{pause:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn excerpts_are_short_single_lines() {
        assert_eq!(excerpt(b"bad\nthing"), "bad thing");
        assert_eq!(excerpt(b""), "(empty body)");
        assert!(excerpt(&[b'x'; 900]).ends_with("..."));
    }
}
